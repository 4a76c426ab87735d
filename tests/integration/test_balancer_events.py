"""test_balancer_events.py — GET /v1/jobs/{id}/events (Server-Sent Events):
a job that waits behind another shows queued {position} → assigned {backend,
provider, location, gpu, attempt} → progress {step, steps, progress,
preview?} (rising) → done {images, info, seed, inference_ms, queue_ms,
total_ms, provider, location, gpu}, in that order, and the stream ends; a
late subscriber gets the final event at once and the stream ends; a failed
job ends with failed {error}; an unknown id is 404.
Contract: ../../docs/jobs-api.md "Jobs"."""

import base64
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sdtest as t  # noqa: E402

PACE_MS = 100
STEPS = 20


def order_ok(names):
    """queued* assigned progress+ done, nothing after done."""
    i = 0
    while i < len(names) and names[i] == "queued":
        i += 1
    if i >= len(names) or names[i] != "assigned":
        return False
    i += 1
    start = i
    while i < len(names) and names[i] == "progress":
        i += 1
    return i > start and i == len(names) - 1 and names[i] == "done"


def start_quiet_stream():
    """A stream with nothing to say gets a ": keep-alive" comment every 15
    s: a job queued behind one that a hung backend holds (its own balancer,
    so that the rest of the test runs meanwhile). The stream and when it
    was opened."""
    hung = t.FakeBackend(gpu_class="hunggpu", provider="hung", txt2img_status=200, txt2img_delay=60)
    bal = t.start_balancer("--backend", t.static_backend_arg(hung.url, gpu_class="hunggpu"), name="balancer-quiet")
    t.wait_idle_backends(bal.url, 1)
    held = t.submit_job(bal.url, t.small_job(prompt="hangs", seed=5))
    hid = held.json.get("id") if held.status == 202 and isinstance(held.json, dict) else None
    t.wait_job(bal.url, hid, statuses=("running",) + t.FINAL_STATES, timeout=30)
    rq = t.submit_job(bal.url, t.small_job(prompt="waits quietly", seed=7, steps=2))
    qid = rq.json.get("id") if rq.status == 202 and isinstance(rq.json, dict) else None
    return t.EventStream(bal.url + "/v1/jobs/%s/events" % qid), time.monotonic()


def main():
    be = t.start_backend("--pace-ms-per-step", PACE_MS, "--provider", "sse-prov", "--location", "Turin, IT",
                         "--gpu-class", "a6000", name="backend-sse")
    bal = t.start_balancer("--progress-interval-ms", 100, "--backend", be.url)
    t.check("the backend comes up idle", t.wait_idle_backends(bal.url, 1), t.board(bal.url))
    quiet, quiet_opened = start_quiet_stream()

    # Job A occupies the backend; job B waits behind it.
    ra = t.submit_job(bal.url, t.small_job(prompt="first in line", seed=1, steps=STEPS))
    a = ra.json.get("id") if ra.status == 202 and isinstance(ra.json, dict) else None
    t.wait_job(bal.url, a, statuses=("running",) + t.FINAL_STATES, timeout=30)
    rb = t.submit_job(bal.url, t.small_job(prompt="second in line", seed=2, steps=STEPS))
    ok = t.check("job B is accepted while A runs: 202 {id, status queued, position 1}",
                 rb.status == 202 and isinstance(rb.json, dict) and rb.json.get("status") == "queued"
                 and rb.json.get("position") == 1, t.describe(rb))
    if not ok or not a:
        return
    b = rb.json["id"]
    ev = t.EventStream(bal.url + "/v1/jobs/%s/events" % b)
    t.check("GET /v1/jobs/{id}/events: 200 text/event-stream",
            ev.wait_headers() == 200 and ev.headers.get("content-type", "").startswith("text/event-stream"),
            (ev.status, ev.headers))
    ended = ev.wait_end(60)
    t.check("the stream ends after the final event", ended, ev.names())
    names = ev.names()
    t.check("events in order: queued → assigned → progress (at least one) → done, nothing after",
            order_ok(names), names)
    evs = ev.events
    q = [d for n, d, _ in evs if n == "queued"]
    t.check("the first event is queued {position: 1}", q and isinstance(q[0], dict) and q[0].get("position") == 1, q)
    asg = [d for n, d, _ in evs if n == "assigned"]
    ad = asg[0] if asg and isinstance(asg[0], dict) else {}
    t.check("assigned has backend (32 hex), provider sse-prov, location Turin, IT, gpu a6000, attempt 1",
            t.is_hex_id(ad.get("backend")) and ad.get("provider") == "sse-prov" and ad.get("location") == "Turin, IT"
            and ad.get("gpu") == "a6000" and ad.get("attempt") == 1, ad)
    prog = [d for n, d, _ in evs if n == "progress" and isinstance(d, dict)]
    t.check("progress events carry step, steps %d, progress in [0, 1]" % STEPS,
            prog and all(t.is_int(p.get("step")) and p.get("steps") == STEPS and t.is_number(p.get("progress"))
                         and 0 <= p["progress"] <= 1 for p in prog), [{k: v for k, v in p.items() if k != "preview"}
                                                                      for p in prog][:5])
    steps = [p.get("step") for p in prog]
    t.check("progress steps never go down and at least two distinct steps are seen",
            all(y >= x for x, y in zip(steps, steps[1:])) and len(set(steps)) >= 2, steps)
    previews = [p["preview"] for p in prog if isinstance(p.get("preview"), str)]
    bad = [e for e in (t.try_decode_png(base64.b64decode(s))[1] for s in previews) if e]
    t.check("progress previews, when present, are decodable PNGs", not bad, bad[:3])
    done = [d for n, d, _ in evs if n == "done"]
    dd = done[0] if done and isinstance(done[0], dict) else {}
    keys = ["images", "info", "seed", "inference_ms", "queue_ms", "total_ms", "provider", "location", "gpu"]
    t.check("done has %s" % ", ".join(keys), all(k in dd for k in keys), sorted(dd))
    imgs = dd.get("images") if isinstance(dd.get("images"), list) else []
    pngs = t.job_images(bal.url, dd) or []
    img = t.try_decode_png(pngs[0])[0] if len(pngs) == 1 else None
    t.check("done.images lists one 64x64 PNG ({url, type, bytes, width, height}) whose URL serves it",
            img is not None and img.width == 64 and img.height == 64 and len(imgs) == 1
            and {k: imgs[0].get(k) for k in ("type", "bytes", "width", "height")}
            == {"type": "image/png", "bytes": len(pngs[0]), "width": 64, "height": 64}, imgs)
    t.check("done: seed 2, provider sse-prov, gpu a6000, queue_ms > 0 (it waited behind A), "
            "total_ms >= inference_ms + queue_ms - 5",
            dd.get("seed") == 2 and dd.get("provider") == "sse-prov" and dd.get("gpu") == "a6000"
            and t.is_number(dd.get("queue_ms")) and dd["queue_ms"] > 0
            and t.is_number(dd.get("total_ms")) and t.is_number(dd.get("inference_ms"))
            and dd["total_ms"] >= dd["inference_ms"] + dd["queue_ms"] - 5,
            {k: dd.get(k) for k in keys if k != "images"})
    doc = t.get_job(bal.url, b)
    t.check("done's images equal GET /v1/jobs/{id}'s result images",
            doc is not None and (doc.get("result") or {}).get("images") == imgs and imgs, "differ")

    # A late subscriber on a finished job: the final event, then the end.
    late = t.EventStream(bal.url + "/v1/jobs/%s/events" % b)
    t.check("a late subscriber's stream ends promptly", late.wait_end(15), late.names())
    t.check("a late subscriber gets exactly the final event (done) with the images",
            late.names() == ["done"] and isinstance(late.events[0][1], dict)
            and late.events[0][1].get("images") == imgs, late.names())
    late_a = t.EventStream(bal.url + "/v1/jobs/%s/events" % a)
    late_a.wait_end(15)
    t.check("job A's late stream also ends with done", late_a.names()[-1:] == ["done"], late_a.names())

    # A subscriber joining a running job first gets its current state.
    rc = t.submit_job(bal.url, t.small_job(prompt="joined while running", seed=3, steps=STEPS))
    c = rc.json.get("id") if rc.status == 202 and isinstance(rc.json, dict) else None
    t.wait_until(lambda: t.backend_step(be) >= 3, 30)
    mid = t.EventStream(bal.url + "/v1/jobs/%s/events" % c)
    mid.wait_end(60)
    names = mid.names()
    t.check("a subscriber joining mid-job first gets assigned (or progress), never queued, and the stream ends "
            "with done", names and names[0] in ("assigned", "progress") and "queued" not in names
            and names[-1] == "done", names)

    # A failed job's stream.
    fake = t.FakeBackend(gpu_class="brokengpu", provider="fake-500", txt2img_status=500)
    bal2 = t.start_balancer("--max-attempts", 1, "--backend", t.static_backend_arg(fake.url, gpu_class="brokengpu"),
                            name="balancer-fail")
    t.wait_idle_backends(bal2.url, 1)
    r = t.submit_job(bal2.url, t.small_job(seed=4))
    fid = r.json.get("id") if r.status == 202 and isinstance(r.json, dict) else None
    fev = t.EventStream(bal2.url + "/v1/jobs/%s/events" % fid)
    fev.wait_end(30)
    last = fev.events[-1] if fev.events else (None, None, 0)
    t.check("a failed job's stream ends with failed {error: {code backend_failed, message}}",
            last[0] == "failed" and isinstance(last[1], dict) and isinstance(last[1].get("error"), dict)
            and last[1]["error"].get("code") == "backend_failed" and isinstance(last[1]["error"].get("message"), str),
            fev.events)

    r = t.request("GET", bal.url + "/v1/jobs/%s/events" % ("a" * 32), timeout=10)
    t.check("events of an unknown job id: 404 not_found", t.is_sdgate_error(r, 404, "not_found"), t.describe(r))

    # The quiet stream opened at the start: a ": keep-alive" comment by now.
    t.check("a stream with nothing new (a job queued behind a hung one) gets a \": keep-alive\" comment "
            "within 20 s", t.wait_until(lambda: any(c.startswith(": keep-alive") for c in quiet.comments),
                                        max(0.0, quiet_opened + 20 - time.monotonic()), 0.2),
            (quiet.names(), quiet.comments))
    t.check("... and its only events so far are queued ones", quiet.names() and set(quiet.names()) == {"queued"},
            quiet.events)
    if len(quiet.names()) > 1:
        print("# note: the queued job's stream repeated queued: %s" % [e[1] for e in quiet.events])

    rl = t.submit_job(bal.url, t.small_job(prompt="running at shutdown", seed=6, steps=150, n_iter=2))
    lid = rl.json.get("id") if rl.status == 202 and isinstance(rl.json, dict) else None
    t.check("a long job (2 x 150 steps) is accepted", lid is not None, t.describe(rl))
    t.wait_until(lambda: t.backend_step(be) >= 2, 30)

    # SIGTERM with a running job and open event streams.
    open_ev = t.EventStream(bal.url + "/v1/jobs/%s/events" % lid)
    t.check("the long job's stream shows it running (assigned or progress first)",
            open_ev.wait_for(lambda evs: evs and evs[0][0] in ("assigned", "progress"), 15), open_ev.names())
    rq = t.submit_job(bal.url, t.small_job(prompt="queued at shutdown", seed=8, steps=2))
    queued_ev = t.EventStream(bal.url + "/v1/jobs/%s/events" % (rq.json or {}).get("id"))
    t.check("a job queued behind it: its stream shows it queued",
            queued_ev.wait_for(lambda evs: evs and evs[0][0] == "queued", 15), queued_ev.names())
    bal.stop(label="the balancer exits 0 on SIGTERM within 10 s with a running job and open event streams")
    t.check("the open event streams are closed by the shutdown", open_ev.wait_end(10) and queued_ev.wait_end(10),
            (open_ev.names()[-3:], queued_ev.names()))


if __name__ == "__main__":
    t.run(main)
