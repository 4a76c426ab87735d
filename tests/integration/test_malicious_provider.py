#!/usr/bin/env python3
"""test_malicious_provider.py — what a malicious provider sends back cannot
hurt the balancer or its clients (issue 10, findings 3 and 4 and the low
ones). One balancer, one honest native backend (price 5) and one
evil_backend.py per attack (price 0.1, so that the router tries it first:
ties go to the cheaper), each job accepting only its evil backend's GPU class
and the honest one's:

  gzip-bomb     a 200 KB gzip answer that inflates to 200 MiB: the balancer's
                peak RSS grows by less than 64 MiB, the job is done by the
                honest backend (attempt 2)
  huge          a 200 MiB plain answer for a 64x64 job, with its Content-Length
                and then chunked: cut at the job's cap, RSS as above, done by
                the honest backend
  html-png      an "image" that is HTML behind PNG magic, as data:text/html:
                never delivered, done by the honest backend
  evil-preview  previews alternating HTML-behind-PNG-magic and a real PNG: the
                SSE progress events carry only the real one, with
                preview_type image/png
  utf8-cut      a 400 error cut inside a UTF-8 character: the job fails
                (rejected) with its error and a final event
  escapes       terminal escapes in identity and error text: no ESC or C1 CSI
                byte reaches the balancer's log
  slow          a job whose computed timeout is ~1573 s on a backend not yet
                measured: capped at --max-job-timeout-s 4 (the logged timeout
                is printed), it fails after 2 attempts in seconds

Each runs against the same balancer; the figures are printed."""

import base64
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import evil_backend  # noqa: E402
import sdtest as t  # noqa: E402

CAP_S = 4
MAX_ATTEMPTS = 2
RSS_GROWTH_MAX_MIB = 64
SLOW_JOB = {"steps": 50, "width": 512, "height": 512, "batch_size": 4}  # 10 x 3e-6 x work = 1573 s uncapped


def submit(bal, gpus, **over):
    r = t.submit_job(bal.url, dict(t.small_job(seed=11, **over), gpus=gpus))
    ok = r.status == 202 and isinstance(r.json, dict) and t.is_hex_id(r.json.get("id"))
    return r.json["id"] if ok else None


def png_ok(b64):
    try:
        return t.try_decode_png(base64.b64decode(b64, validate=True))[1] is None
    except ValueError:
        return False


def honest_done(bal, jid, what, evil):
    """The job ended done on the honest backend, after the evil one had it."""
    doc = t.wait_job(bal.url, jid, timeout=60) if jid else None
    images = t.job_images(bal.url, doc) if doc else None
    t.check("%s: the job is done by the honest backend (attempt 2), after %d call(s) to the evil one"
            % (what, evil.txt2img_calls),
            doc and doc.get("status") == "done" and doc.get("provider") == "Honest" and doc.get("attempt") == 2
            and evil.txt2img_calls >= 1,
            doc and {k: doc.get(k) for k in ("status", "provider", "attempt", "error")})
    t.check("%s: what the client gets is PNG images only" % what,
            images and all(i.startswith(t.PNG_SIGNATURE) and t.try_decode_png(i)[1] is None for i in images),
            images and [i[:16] for i in images])


def memory_attack(bal, mode, evil):
    pid = bal.proc.pid
    before, peak_before = t.proc_rss_mib(pid), t.proc_peak_rss_mib(pid, reset=True)
    t0 = time.monotonic()
    jid = submit(bal, [mode, "honest"])
    honest_done(bal, jid, mode, evil)
    peak, after = t.proc_peak_rss_mib(pid), t.proc_rss_mib(pid)
    with open(bal.log_path, "rb") as f:
        log = f.read().decode("utf-8", "replace")
    cap = re.findall(r"job %s: attempt 1 on \w+, timeout [0-9.]+ s, answer up to (\d+) bytes" % jid, log)
    why = re.findall(r"job %s: attempt 1 failed \(([^)]*)\)" % jid, log)
    print("# %s: balancer RSS before %.1f MiB (peak reset to %.1f), peak %.1f, after %.1f; job took %.1f s;"
          " answer cap %s bytes; attempt 1 failed: %s"
          % (mode, before, peak_before, peak, after, time.monotonic() - t0, cap[:1], why[:1]))
    t.check("%s: the balancer's peak RSS grows by less than %d MiB (grew %.1f)"
            % (mode, RSS_GROWTH_MAX_MIB, peak - peak_before), peak - peak_before < RSS_GROWTH_MAX_MIB)


def slow_job(bal, slow, out):
    t0 = time.monotonic()
    jid = submit(bal, ["slow"], **SLOW_JOB)
    doc = t.wait_job(bal.url, jid, timeout=MAX_ATTEMPTS * CAP_S + 60) if jid else None
    out.update(jid=jid, doc=doc, took=time.monotonic() - t0)


def main():
    honest = t.start_backend("--provider", "Honest", "--gpu-class", "honest", name="honest")
    evil = {m: evil_backend.start(m, gpu_class=m) for m in evil_backend.MODES}
    args = ["--max-attempts", MAX_ATTEMPTS, "--health-interval-ms", 200, "--progress-interval-ms", 100,
            "--max-job-timeout-s", CAP_S, "--backend", t.static_backend_arg(honest.url, price_per_hour=5)]
    for m, be in evil.items():
        args += ["--backend", t.static_backend_arg(be.url, price_per_hour=0.1)]
    bal = t.start_balancer(*args)
    ok = t.check("every backend is up on the board",
                 t.wait_idle_backends(bal.url, len(evil) + 1), t.board(bal.url))
    if not ok:
        return

    slow = {}
    slow_thread = t.Background(slow_job, bal, evil["slow"], slow)

    # Finding 3: memory.
    memory_attack(bal, "gzip-bomb", evil["gzip-bomb"])
    memory_attack(bal, "huge", evil["huge"])
    memory_attack(bal, "huge-chunked", evil["huge-chunked"])

    # Finding 4: an HTML page typed by the provider as an image.
    honest_done(bal, submit(bal, ["html-png", "honest"]), "html-png", evil["html-png"])

    # Finding 4: previews.
    jid = submit(bal, ["evil-preview"])
    ev = t.EventStream(bal.url + "/v1/jobs/%s/events" % jid) if jid else None
    ended = ev.wait_end(60) if ev else False
    prog = [d for n, d, _ in (ev.events if ev else []) if n == "progress" and isinstance(d, dict)]
    previews = [(p.get("preview"), p.get("preview_type")) for p in prog if "preview" in p]
    bad = [(s[:40], ty) for s, ty in previews if not (isinstance(s, str) and png_ok(s) and ty == "image/png")]
    print("# evil-preview: %d progress polls answered, %d progress events, %d with a preview, %d bad"
          % (evil["evil-preview"].progress_calls, len(prog), len(previews), len(bad)))
    t.check("evil-preview: the stream ends done", ended and ev.names()[-1:] == ["done"], ev and ev.names())
    t.check("evil-preview: no HTML preview is forwarded; each one forwarded is a PNG with preview_type image/png",
            not bad, bad[:3])
    t.check("evil-preview: the valid previews are forwarded (bare base64 + preview_type)", previews, len(prog))

    # A 400 whose text is cut inside a UTF-8 character.
    jid = submit(bal, ["utf8-cut"])
    ev = t.EventStream(bal.url + "/v1/jobs/%s/events" % jid) if jid else None
    ended = ev.wait_end(30) if ev else False
    last = ev.events[-1] if ev and ev.events else (None, None, 0)
    err = last[1].get("error") if isinstance(last[1], dict) else None
    print("# utf8-cut: final event %r, error %s" % (last[0], t.short(err, 200)))
    t.check("utf8-cut: the stream ends with a failed event carrying {code rejected, message}",
            ended and last[0] == "failed" and isinstance(err, dict) and err.get("code") == "rejected"
            and isinstance(err.get("message"), str) and "HTTP 400" in err["message"], ev and ev.names())
    doc = t.get_job(bal.url, jid) if jid else None
    t.check("utf8-cut: GET /v1/jobs/{id} shows failed with the same error",
            doc and doc.get("status") == "failed" and isinstance(err, dict) and doc.get("error") == err,
            doc and doc.get("error"))

    # Escapes in identity and error text.
    jid = submit(bal, ["escapes"])
    doc = t.wait_job(bal.url, jid, timeout=30) if jid else None
    t.check("escapes: the job fails (rejected) with the text JSON-escaped in its error",
            doc and doc.get("status") == "failed" and "\x1b" in (doc.get("error") or {}).get("message", ""),
            doc and doc.get("error"))

    slow_thread.join(MAX_ATTEMPTS * CAP_S + 90)
    doc = slow.get("doc")
    with open(bal.log_path, "rb") as f:
        log = f.read()
    timeouts = [float(x) for x in re.findall(
        rb"job %s: attempt \d+ on \w+, timeout ([0-9.]+) s" % (slow.get("jid") or "-").encode(), log)]
    uncapped = 10 * 3e-6 * SLOW_JOB["steps"] * SLOW_JOB["width"] * SLOW_JOB["height"] * SLOW_JOB["batch_size"]
    print("# slow: timeout uncapped %.0f s, logged %s, job ended %s after %.1f s"
          % (uncapped, timeouts, doc and doc.get("status"), slow.get("took", 0)))
    t.check("slow: every dispatch's timeout is capped at --max-job-timeout-s %d" % CAP_S,
            len(timeouts) == MAX_ATTEMPTS and all(x == CAP_S for x in timeouts), timeouts)
    t.check("slow: the job fails (backend_failed) after %d attempts, well before the uncapped timeout" % MAX_ATTEMPTS,
            doc and doc.get("status") == "failed" and (doc.get("error") or {}).get("code") == "backend_failed",
            doc and doc.get("error"))

    esc = [line[:160] for line in log.splitlines() if b"\x1b" in line or b"\xc2\x9b" in line or b"\x07" in line]
    shown = [line[:160] for line in log.splitlines() if b"\\x1b" in line]
    print("# escapes: %d log line(s) with the escapes written as \\xNN, e.g. %s"
          % (len(shown), shown[:1]))
    t.check("escapes: no ESC, BEL or C1 CSI byte in the balancer's log", not esc, esc[:3])
    t.check("escapes: the provider's identity and error text were logged, escaped", len(shown) >= 2, shown[:3])
    bomb = [line[:200] for line in log.splitlines() if b"Content-Encoding" in line]
    t.check("gzip-bomb: the balancer says why the call failed (Content-Encoding refused)", bomb, bomb[:2])
    print("# gzip-bomb: %s" % (bomb[:1],))


t.run(main)
