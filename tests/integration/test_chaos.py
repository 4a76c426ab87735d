#!/usr/bin/env python3
"""test_chaos.py — the local marketplace under load while it is being broken
(issue 6 §2): nothing accepted is lost, nothing reaches a client twice.

The marketplace: one balancer (fixed port; its store a SQLite file, or with
SDGATE_TEST_STORE=postgresql a PostgreSQL database), five native
backends that register with it, one fake backend that answers garbage, and
the gateway. At least 48 jobs arrive over about 11 s: 32 through the
gateway's websocket (4 connections, going on, up to 200 jobs, as long as
the schedule below runs) and 16 through the balancer's jobs API (a client
that retries its POST, under one Idempotency-Key, whatever went wrong on the
way). Meanwhile:

  victim-a,  kill -9 in the middle of a job, restarted, three times: each
  victim-b   time whichever of the two is seen mid-job first (the router,
             not the test, decides who runs what; both are fast, so both
             draw work)
  frozen     SIGSTOP in the middle of a job for 10 s (past the 4 s job
             timeout and its heartbeats), then SIGCONT
  slow       200 ms per step, always up: slow is not dead
  garbage    answers every txt2img with 200 and garbage (HTML, truncated
             JSON, text that is not base64 of an image, ...)
  balancer   kill -9 once while jobs run, restarted on the same port and
             store

The native backends keep their registration in a --registration-file (each
its own folder), as operators run them: a victim restarted after kill -9
takes its registration up again at once instead of waiting for the old one
to expire (docs/operators.md "Restarts"). Their job routes answer only their
balancer, so the test reads the balancer's token from that file to watch a
victim's own progress.

"In the middle of a job" is asserted, not hoped for: each signal is sent
right after the victim's own /sdapi/v1/progress showed a job at step 1..6 of
8 (so at least two steps, 60-80 ms, were left), and the balancer is killed
right after its /metrics showed a running job; the step and the wait are
printed.

At the end every job has exactly one outcome at its client: done, with an
image whose pixels equal a direct render of the same request (README: every
job done once). None fails: --max-attempts is 8, above the 3 attempts the
worst-hit job needs in practice (the figures print the spread), so a failure
here is a lost retry, not bad luck. The gateway holds a job that no balancer
would take while the balancer restarts (and the jobs API client retries), so
every job is accepted. Accepted jobs agree with the balancer's record, and
the balancer's own counts agree: its store's job table holds exactly the
accepted jobs, all done, and its /metrics shows nothing queued or running and nothing
failed or cancelled since its restart. The garbage backend gets few jobs, and
every backend is back on the board afterwards. The figures are printed."""

import base64
import collections
import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sdtest as t  # noqa: E402
from wsclient import WSClient  # noqa: E402

PROVIDER = "chaos-provider-token"
ADMIN = "chaos-admin-token"
MAX_ATTEMPTS = 8   # never reached: see the docstring
JOB_TIMEOUT_S = 4
STEPS, SIZE = 8, 64
N_WS, N_API, N_CONNS = 32, 16, 4
N_WS_MAX = 200  # the websocket clients go on past N_WS (to this) while the chaos schedule still runs
WS_EVERY_S, API_EVERY_S = 0.35, 0.7
FREEZE_S = 10
GARBAGE_CALLS_MAX = 16   # its health checks back off (test_balancer_failover checks how)
KILL_WAIT_S = 10.0       # bound on waiting for a victim to be mid-job (generous: a loaded machine can miss a few jobs)
RETRY_AFTER_S = 2        # --retry-after-s: a backend unused this long (or never measured) is tried again, so the
                         # garbage one and a restarted victim draw jobs even on a machine fast enough that the
                         # measured backends alone keep up (the default, 30 s, is longer than the schedule)

NATIVE = [  # name, GPU class, ms per step
    ("steady", "a100", 40),
    ("victim-a", "h100", 30),
    ("victim-b", "h100", 30),
    ("frozen", "rtx3090", 40),
    ("slow", "rtx3090", 200),
]
PROMPTS = ["a red circle on a blue square", "green triangles over a yellow field", "a purple star, night sky",
           "orange squares and white circles", "a blue house by a red lake"]
SAMPLERS = ["Euler a", "DPM++ 2M Karras", "Euler", "DDIM"]
GPU_HINTS = [[], ["a100"], [], ["rtx3090"]]
VICTIMS = ("victim-a", "victim-b")


def garbage(n):
    """The n-th garbage answer (HTTP 200 each time)."""
    png_start = base64.b64encode(b"\x89PNG\r\n\x1a\n").decode()
    variants = [
        b"<html><body>502 Bad Gateway</body></html>",
        b'{"images": ["iVBORw0KGgoAAAANSUhEUgAA',                       # cut off
        b'{"images": ["this is not base64 of an image at all!"], "info": "{}"}',
        b'{"images": 42, "info": "{}"}',
        b'{"images": [], "parameters": {}, "info": "{}"}',
        ('{"images": ["%s%s"], "info": "{}"}' % (png_start, "A" * 7)).encode(),  # not padded
        b"\x00\xff\xfe" * 4000,
    ]
    return variants[(n - 1) % len(variants)]


def job_body(i):
    return {"prompt": PROMPTS[i % len(PROMPTS)], "negative_prompt": "", "sampler_name": SAMPLERS[i % len(SAMPLERS)],
            "steps": STEPS, "cfg_scale": 7, "width": SIZE, "height": SIZE, "seed": 1000 + i,
            "gpus": GPU_HINTS[i % len(GPU_HINTS)]}


class Marketplace:
    """The programs, with what it takes to kill and restart each one."""

    def __init__(self):
        self.bal_port = t.free_port()
        self.bal_url = "http://127.0.0.1:%d" % self.bal_port
        self.db = t.fresh_db("chaos")
        self.fake = t.FakeBackend(gpu_class="a100", provider="Garbage Inc", txt2img_status=200, txt2img_body=garbage)
        self.bal_args = ["--provider-token", PROVIDER, "--admin-token", ADMIN, "--health-interval-ms", 200,
                         "--progress-interval-ms", 100, "--min-job-timeout-s", JOB_TIMEOUT_S,
                         "--job-timeout-factor", 8, "--max-attempts", MAX_ATTEMPTS, "--heartbeat-interval", 2,
                         "--retry-after-s", RETRY_AFTER_S,
                         "--backend", t.static_backend_arg(self.fake.url, provider="Garbage Inc",
                                                           location="Nowhere", gpu_class="a100")]
        self.bal = self.start_balancer("balancer")
        self.backends = {}
        self.ports = {}
        self.reg_files = {}  # name → its --registration-file, kept across restarts
        for name, cls, pace in NATIVE:
            self.ports[name] = t.free_port()
            self.backends[name] = self.start_backend(name, name)
        self.reference = t.start_backend("--provider", "reference", name="reference")
        self.gw = t.start_gateway("--balancer", self.bal_url, "--admin-token", ADMIN,
                                  "--max-jobs-per-connection", 16, wait_board=True)

    def start_balancer(self, label):
        return t.start_balancer(*self.bal_args, name=label, port=self.bal_port, db=self.db)

    def start_backend(self, name, label):
        cls, pace = next((c, p) for n, c, p in NATIVE if n == name)
        if name not in self.reg_files:
            self.reg_files[name] = os.path.join(t.tmpdir("chaos-reg-" + name), "registration.json")
        return t.start_backend("--provider", "Chaos " + name, "--location", "Lab " + name, "--gpu-class", cls,
                               "--pace-ms-per-step", pace, "--balancer", self.bal_url, "--token", PROVIDER,
                               "--registration-file", self.reg_files[name], name=label, port=self.ports[name])


class Chaos:
    """Breaks things on a schedule, in a thread; .events is the timeline."""

    def __init__(self, mp, t0):
        self.mp, self.t0 = mp, t0
        self.events = []
        self.restarts = collections.Counter()
        self.kills = []   # (what, landed mid-job, where)
        self.thread = t.Background(self.run)

    def log(self, what):
        self.events.append((time.monotonic() - self.t0, what))
        print("# chaos %5.1f s: %s" % (time.monotonic() - self.t0, what), flush=True)

    def at(self, s):
        time.sleep(max(0.0, self.t0 + s - time.monotonic()))

    def mid_job(self, progs, extra=lambda: True, timeout=KILL_WAIT_S):
        """Waits (bounded) until one of progs (name → Program) shows, on its
        own /sdapi/v1/progress, a job at step 1..STEPS-2, so that at least
        two steps are left when the signal that follows lands. Returns
        (name, step, seconds waited); step None when no job came in time
        (name is then the first of progs)."""
        t0, seen = time.monotonic(), {}

        def busy():
            for name, prog in progs.items():
                step = t.backend_step(prog)
                if 1 <= step <= STEPS - 2 and extra():
                    seen.update(name=name, step=step)
                    return True
            return False
        ok = t.wait_until(busy, timeout, 0.02)
        return seen.get("name", next(iter(progs))), (seen.get("step") if ok else None), time.monotonic() - t0

    def landed(self, what, step, waited):
        """Records where a signal landed (step None: not mid-job)."""
        where = "at step %d of %d" % (step, STEPS) if step else "NOT mid-job: no job came"
        self.kills.append((what, bool(step), where))
        self.log("%s (%s, after waiting %.2f s)" % (what, where, waited))

    def restart_backend(self, name):
        self.restarts[name] += 1
        self.mp.backends[name] = self.mp.start_backend(name, "%s-%d" % (name, self.restarts[name]))
        self.log("%s restarted" % name)

    def kill_backend(self, names, down_s):
        name, step, waited = self.mid_job({n: self.mp.backends[n] for n in names})
        self.mp.backends[name].kill()
        self.landed("kill -9 " + name, step, waited)
        time.sleep(down_s)
        self.restart_backend(name)

    def run(self):
        mp = self.mp
        self.at(2.5)
        self.kill_backend(VICTIMS, 1.5)

        self.at(4.5)
        frozen = mp.backends["frozen"]
        _, step, waited = self.mid_job({"frozen": frozen}, lambda: self.learned("Chaos frozen"))
        frozen.signal(signal.SIGSTOP)
        self.landed("SIGSTOP frozen for %d s" % FREEZE_S, step, waited)
        thaw_at = time.monotonic() + FREEZE_S

        self.at(5.5)
        self.kill_backend(VICTIMS, 1.0)

        self.at(7.0)
        t0 = time.monotonic()
        running = t.wait_until(lambda: t.metric(t.metrics(mp.bal_url), "sdgate_jobs_running", 0), KILL_WAIT_S, 0.02)
        mp.bal.kill()
        where = "with %d job(s) running" % running if running else "NOT mid-job: none running"
        self.kills.append(("kill -9 balancer", bool(running), where))
        self.log("kill -9 balancer (%s, after waiting %.2f s)" % (where, time.monotonic() - t0))
        time.sleep(1.0)
        mp.bal = mp.start_balancer("balancer-2")
        self.log("balancer restarted on the same port and store")

        self.at(9.5)
        self.kill_backend(VICTIMS, 2.0)

        time.sleep(max(0.0, thaw_at - time.monotonic()))
        frozen.signal(signal.SIGCONT)
        self.log("SIGCONT frozen")

    def learned(self, provider):
        """The balancer has seen this backend finish a job (so its timeout is learned)."""
        e = t.board_entry(t.board(self.mp.bal_url) or [], provider=provider)
        return e is not None and (e.get("jobs_done") or 0) >= 1


def ws_load(mp, t0, record, schedule_running):
    """N_WS generate messages over N_CONNS connections, one every WS_EVERY_S,
    and more (up to N_WS_MAX) while the chaos schedule still runs: a schedule
    that waited long for a victim's job must still find jobs to hit."""
    conns = [WSClient("127.0.0.1", mp.gw.port, "/ws", timeout=60) for _ in range(N_CONNS)]
    for c in conns:
        c.send_json({"type": "hello"})
    i = 0
    while i < N_WS or (i < N_WS_MAX and schedule_running()):
        time.sleep(max(0.0, t0 + i * WS_EVERY_S - time.monotonic()))
        m = dict(job_body(i), type="generate", id="ws-%d" % i)
        conns[i % N_CONNS].send_json(m)
        record["ws-%d" % i] = {"via": "ws", "conn": conns[i % N_CONNS], "body": job_body(i)}
        i += 1
    return conns


def api_submit(mp, i, record):
    """POST /v1/jobs as a careful client: every try carries the same
    Idempotency-Key, so it may retry whatever went wrong on the way (the
    balancer restarting, an answer lost with a killed balancer) without
    making a second job; it takes any answer it gets as final."""
    key = "api-%d" % i
    rec = record[key] = {"via": "api", "body": job_body(100 + i), "posts": 0}
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        rec["posts"] += 1
        try:
            r = t.submit_job(mp.bal_url, rec["body"], headers={"Idempotency-Key": "chaos-" + key}, timeout=10)
        except (OSError, t.httpclient.HTTPException) as e:
            rec["last_error"] = str(e)
            time.sleep(0.3)
            continue
        rec["status"] = r.status
        if r.status in (200, 202) and isinstance(r.json, dict):
            rec["job"] = r.json.get("id")
            rec["replayed"] = r.status == 200
        else:
            rec["refused"] = t.error_code(r) or "HTTP %d" % r.status
        return
    rec["refused"] = "unreachable for 30 s"


def api_load(mp, t0, record):
    threads = []
    for i in range(N_API):
        time.sleep(max(0.0, t0 + i * API_EVERY_S - time.monotonic()))
        threads.append(t.Background(api_submit, mp, i, record))
    for th in threads:
        th.join(60)


def ws_outcomes(rec):
    """(terminal messages, messages after the first terminal, accepted job ids) of a ws job."""
    msgs = rec["conn"].of_job(rec["id"])
    terminal = [m for m in msgs if m.get("type") in ("done", "error")]
    after = msgs[msgs.index(terminal[0]) + 1:] if terminal else []
    accepted = [m.get("job") for m in msgs if m.get("type") == "accepted"]
    return terminal, after, accepted


def reference_pixels(mp, body, doc):
    """The pixels of the same request rendered directly on the reference backend."""
    direct = {k: v for k, v in body.items() if k != "gpus"}
    direct["seed"] = doc.get("seed")
    info = t.job_info(doc) or {}
    if t.is_int(info.get("subseed")):
        direct["subseed"] = info["subseed"]
    r, _ = t.txt2img(mp.reference.url, direct)
    imgs = t.images_of(r) or []
    img = t.try_decode_png(imgs[0])[0] if imgs else None
    return img.pixels if img else None


def balancer_counts(mp, job_ids):
    """The balancer's own record: its store's job table (the durable job list,
    read directly) holds exactly the accepted jobs, all done; its /metrics shows
    nothing queued or running and, since its restart, nothing failed or
    cancelled (its counters start again at a restart)."""
    rows = dict(t.db_query(mp.db, "SELECT id, status FROM jobs"))
    by_status = collections.Counter(rows.values())
    t.check("the balancer's job table holds exactly the %d accepted jobs, all done (%s)"
            % (len(job_ids), dict(by_status)),
            set(rows) == job_ids and by_status == {"done": len(job_ids)},
            {"unknown to the clients": sorted(set(rows) - job_ids),
             "missing": sorted(job_ids - set(rows)), "by status": dict(by_status)})
    m = t.metrics(mp.bal_url)
    got = {}
    for name, labels in (("sdgate_queue_depth", {}), ("sdgate_jobs_running", {}),
                         ("sdgate_jobs_total", {"outcome": "failed"}),
                         ("sdgate_jobs_total", {"outcome": "cancelled"})):
        got[name + "".join('{%s="%s"}' % kv for kv in labels.items())] = t.metric(m, name, **labels)
    print("# balancer /metrics at the end: %s, accepted since its restart %s, done since its restart %s"
          % (got, t.metric(m, "sdgate_jobs_accepted_total"), t.metric(m, "sdgate_jobs_total", outcome="done")))
    t.check("the balancer's /metrics: nothing queued or running, nothing failed or cancelled",
            all(v == 0 for v in got.values()), got)


def main():
    t0_all = time.monotonic()
    mp = Marketplace()
    brd = t.wait_board(mp.bal_url, lambda bs: len(bs) == 6 and sum(b.get("state") == "idle" for b in bs) == 6, 30)
    t.check("five native backends and the garbage one are on the board, idle",
            len(brd) == 6 and all(b.get("state") == "idle" for b in brd), brd)

    record = {}
    t0 = time.monotonic() + 0.5
    chaos = Chaos(mp, t0)
    api = t.Background(api_load, mp, t0, record)
    conns = ws_load(mp, t0, record, lambda: not chaos.thread.done())
    _, err, _ = chaos.thread.join(60)
    t.check("the chaos schedule ran to its end", err is None, repr(err))
    _, err, _ = api.join(90)
    t.check("the jobs API client ran to its end", err is None, repr(err))
    for key, rec in record.items():
        rec["id"] = key

    # Every websocket job ends at its client; every accepted job at the balancer.
    deadline = time.monotonic() + 150
    for key, rec in record.items():
        if rec["via"] == "ws":
            left = max(1.0, deadline - time.monotonic())
            rec["conn"].wait_for(lambda m, k=key: isinstance(m, dict) and m.get("id") == k
                                 and m.get("type") in ("done", "error"), left)
    docs = {}
    for key, rec in record.items():
        job = rec.get("job")
        if rec["via"] == "ws":
            terminal, after, accepted = ws_outcomes(rec)
            rec.update(terminal=terminal, after=after, accepted=accepted)
            job = accepted[-1] if accepted else None
            rec["job"] = job
        if job:
            docs[key] = t.wait_job(mp.bal_url, job, timeout=max(1.0, deadline - time.monotonic())) or {}
    time.sleep(0.5)  # anything a client would still receive after its result

    # ------------------------------------------------------------ checks
    figures = collections.defaultdict(collections.Counter)
    lost, twice, disagree, failed, bad_images, unmatched = [], [], [], [], [], []
    pixels_checked = 0
    for key, rec in sorted(record.items()):
        via = rec["via"]
        doc = docs.get(key, {})
        figures[via]["submitted"] += 1
        if via == "ws":
            terminal, after, accepted = ws_outcomes(rec)
            if len(terminal) != 1 or after or len(accepted) > 1:
                twice.append((key, [m.get("type") for m in rec["conn"].of_job(key)]))
            if not terminal:
                lost.append((key, "no result at the client", [m.get("type") for m in rec["conn"].of_job(key)]))
                continue
            outcome = terminal[0]
            if not accepted:
                figures[via]["refused: " + str(outcome.get("code"))] += 1
                if outcome.get("type") != "error" or not outcome.get("message"):
                    lost.append((key, "refused without a clear error", outcome))
                continue
            figures[via]["accepted"] += 1
            client_status = "done" if outcome.get("type") == "done" else "failed"
            if doc.get("status") not in ("done", "failed") or doc.get("status") != client_status:
                disagree.append((key, client_status, doc.get("status")))
            if outcome.get("type") == "done":
                img = t.decode_png_b64(outcome.get("image"))
                provider = outcome.get("provider")
            else:
                img, provider = None, None
                failed.append((key, outcome.get("code"), outcome.get("message"), doc.get("attempt")))
        else:
            if not rec.get("job"):
                figures[via]["refused: " + str(rec.get("refused"))] += 1
                continue
            figures[via]["accepted"] += 1
            if doc.get("status") not in ("done", "failed"):
                lost.append((key, "not finished at the balancer", doc.get("status")))
                continue
            img = None
            provider = doc.get("provider")
            if doc.get("status") == "done":
                imgs = t.job_images(mp.bal_url, doc) or []
                img = t.try_decode_png(imgs[0])[0] if len(imgs) == 1 else None
            else:
                failed.append((key, doc.get("status"), doc.get("error"), doc.get("attempt")))
        status = doc.get("status")
        figures[via][status or "unknown"] += 1
        figures["attempts"][doc.get("attempt")] += 1
        if status == "done":
            figures["provider"][provider] += 1
            if img is None or img.width != SIZE or img.height != SIZE or provider == "Garbage Inc":
                bad_images.append((key, provider))
            else:
                ref = reference_pixels(mp, rec["body"], doc)
                pixels_checked += 1
                if ref != img.pixels:
                    unmatched.append((key, provider, doc.get("attempt")))

    accepted = sum(figures[v]["accepted"] for v in ("ws", "api"))
    done = sum(figures[v]["done"] for v in ("ws", "api"))
    t.check("every one of the %d jobs was accepted under the chaos (%d)" % (len(record), accepted),
            accepted == len(record) >= 40, dict(figures))
    t.check("no job is lost: every one has an outcome at its client and, once accepted, at the balancer",
            not lost, lost)
    t.check("no job reaches its client twice: one result, nothing after it, accepted once", not twice, twice)
    t.check("the client's outcome and the balancer's record agree", not disagree, disagree)
    t.check("no accepted job failed (%d failed; --max-attempts %d)" % (len(failed), MAX_ATTEMPTS), not failed,
            failed)
    t.check("every done job has a %dx%d PNG from a real backend, never the garbage one" % (SIZE, SIZE),
            not bad_images, bad_images)
    t.check("every done image equals a direct render of the same request and seed (%d compared)" % pixels_checked,
            pixels_checked == done and not unmatched, unmatched)
    t.check("every accepted job was done, exactly once (%d of %d)" % (done, accepted),
            accepted == done == len(record) and not twice, dict(figures))
    balancer_counts(mp, {rec.get("job") for rec in record.values() if rec.get("job")})
    not_mid = [(what, where) for what, mid, where in chaos.kills if not mid]
    t.check("every kill and the freeze landed mid-job (%d of %d: %s)"
            % (len(chaos.kills) - len(not_mid), len(chaos.kills),
               "; ".join("%s %s" % (w, where) for w, _, where in chaos.kills)),
            len(chaos.kills) == 5 and not not_mid, not_mid)
    refused = {k: v for k, v in figures["ws"].items() if k.startswith("refused")}
    t.check("no websocket job was refused: the gateway held those sent while the balancer restarted",
            not refused, refused)
    t.check("the garbage backend was tried and got few jobs (%d calls, at most %d)"
            % (mp.fake.txt2img_calls, GARBAGE_CALLS_MAX),
            1 <= mp.fake.txt2img_calls <= GARBAGE_CALLS_MAX, mp.fake.txt2img_calls)
    natives = {"Chaos " + n for n, _, _ in NATIVE}
    brd = t.wait_board(mp.bal_url, lambda bs: {b.get("provider") for b in bs if b.get("state") == "idle"} >= natives,
                       30)
    t.check("afterwards every native backend is back on the board, idle (killed ones restarted, frozen one thawed)",
            {b.get("provider") for b in brd if b.get("state") == "idle"} >= natives,
            [(b.get("provider"), b.get("state")) for b in brd])

    # ------------------------------------------------------------ figures
    print("# chaos timeline:")
    for s, what in chaos.events:
        print("#   %5.1f s  %s" % (s, what))
    print("# | entry point | submitted | accepted | done | failed | refused |")
    print("# |---|---:|---:|---:|---:|---|")
    for via in ("ws", "api"):
        f = figures[via]
        ref = ", ".join("%s %d" % (k[len("refused: "):], v) for k, v in f.items() if k.startswith("refused")) or "0"
        print("# | %s | %d | %d | %d | %d | %s |" % ("gateway websocket" if via == "ws" else "jobs API",
                                                   f["submitted"], f["accepted"], f["done"], f["failed"], ref))
    print("# attempts per accepted job: %s" % dict(sorted(figures["attempts"].items(), key=lambda kv: str(kv[0]))))
    print("# done by provider: %s" % dict(figures["provider"].most_common()))
    print("# garbage backend txt2img calls: %d; jobs API POSTs retried while the balancer was down: %d "
          "(answered as a replay of a stored job: %d)"
          % (mp.fake.txt2img_calls, sum(r.get("posts", 1) - 1 for r in record.values() if r["via"] == "api"),
             sum(1 for r in record.values() if r.get("replayed"))))
    print("# wall time %.1f s" % (time.monotonic() - t0_all))
    for c in conns:
        c.close()


t.run(main)
