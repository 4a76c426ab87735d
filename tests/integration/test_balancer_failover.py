"""test_balancer_failover.py — a backend killed with SIGKILL in the middle of
a job: the balancer marks it down, queues the job again and finishes it on
the other backend with the same (balancer-fixed) seed, so the image is
byte-identical to the same request run directly on a backend. The job's
seed and subseed are sent as the strings "-1" (as some clients send them):
the balancer fixes them once from the parsed values (issue 12), and the
result reports the concrete seed. The job's
events show the second assignment; metrics count the retry and the failure.
Then a backend that answers 500 to every txt2img: with --max-attempts 2 the
job fails with backend_failed after two attempts, never hangs. A backend that
answers 401 (it does not take this balancer's jobs: e.g. one that registered
a moment ago and has not stored its token yet) costs the job an attempt, not
the job itself: it runs on the other backend.
Contract: ../../balancer/README.md "Routing", ../../docs/jobs-api.md "Jobs"."""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sdtest as t  # noqa: E402

PACE_MS = 100
STEPS = 25


def check_kill_mid_job():
    bes = {}
    args = []
    for name in ("a", "b"):
        be = t.start_backend("--pace-ms-per-step", PACE_MS, "--provider", "real-" + name, name="backend-" + name)
        bes[name] = be
        args += ["--backend", t.static_backend_arg(be.url, provider="prov-" + name, location="Loc " + name,
                                                   gpu_class="rtx3090")]
    bal = t.start_balancer("--health-interval-ms", 200, "--progress-interval-ms", 100, *args, name="balancer")
    t.check("both backends come up idle", t.wait_idle_backends(bal.url, 2), t.board(bal.url))

    body = t.small_job(prompt="a red house by a lake", seed="-1", subseed="-1", steps=STEPS, sampler_name="Euler a")
    r = t.submit_job(bal.url, body)
    ok = t.check("POST /v1/jobs (seed and subseed \"-1\" as strings) answers 202 with an id",
                 r.status == 202 and isinstance(r.json, dict) and t.is_hex_id(r.json.get("id")), t.describe(r))
    if not ok:
        return
    jid = r.json["id"]
    ev = t.EventStream(bal.url + "/v1/jobs/%s/events" % jid)
    d = t.wait_job(bal.url, jid, statuses=("running",) + t.FINAL_STATES, timeout=30)
    ok = t.check("the job starts running", d is not None and d.get("status") == "running", d)
    if not ok:
        return
    seed = d.get("seed")
    t.check("GET /v1/jobs/{id} shows a concrete seed before the first dispatch (not -1)",
            t.is_int(seed) and seed >= 0, seed)
    first = {"prov-a": "a", "prov-b": "b"}.get(d.get("provider"))
    ok = t.check("the running job names its provider (prov-a or prov-b)", first is not None, d)
    if not ok:
        return
    other = "b" if first == "a" else "a"
    victim = bes[first]
    step = t.wait_until(lambda: t.backend_step(victim) >= 3 and t.backend_step(victim), 30)
    t.check("backend %s reaches step 3 of %d" % (first, STEPS), step, step)
    victim.kill()
    print("# killed backend %s (SIGKILL) at step %s" % (first, step))

    d = t.wait_job(bal.url, jid, timeout=60)
    ok = t.check("the job still finishes: status done after the backend was killed",
                 d is not None and d.get("status") == "done", d and {k: v for k, v in d.items() if k != "result"})
    if not ok:
        return
    t.check("it finished on the other backend (provider prov-%s), attempt 2" % other,
            d.get("provider") == "prov-" + other and d.get("attempt") == 2,
            (d.get("provider"), d.get("attempt")))
    t.check("the job's seed is unchanged by the retry", d.get("seed") == seed, (seed, d.get("seed")))
    info = t.job_info(d)
    print("# seed \"-1\" fixed to %s at intake; info.seed %s, info.subseed %s" %
          (seed, info and info.get("seed"), info and info.get("subseed")))
    t.check("the result's info reports the concrete seed (not -1) and a concrete subseed",
            isinstance(info, dict) and t.is_int(info.get("seed")) and info.get("seed") >= 0
            and t.is_int(info.get("subseed")) and info.get("subseed") >= 0, info and info.get("subseed"))
    t.check("the result's info has the same seed and names the second backend (sdgate.attempt 2)",
            isinstance(info, dict) and info.get("seed") == seed
            and isinstance(info.get("sdgate"), dict) and info["sdgate"].get("provider") == "prov-" + other
            and info["sdgate"].get("attempt") == 2, info and {k: info.get(k) for k in ("seed", "sdgate")})
    got = t.job_images(bal.url, d)

    # The same request, run directly on the surviving backend.
    direct = dict(body)
    direct["seed"] = seed
    if isinstance(info, dict) and t.is_int(info.get("subseed")):
        direct["subseed"] = info["subseed"]
    rr, _ = t.txt2img(bes[other].url, direct)
    ref = t.images_of(rr)
    t.check("the direct run on a backend answers 200 with one image", rr.status == 200 and ref and len(ref) == 1,
            t.describe(rr))
    t.check("the failed-over job's PNG is byte-identical to the direct run with the same seed",
            got is not None and ref is not None and got == ref,
            "sizes %s vs %s" % ([len(x) for x in got or []], [len(x) for x in ref or []]))
    if got and ref and got != ref:
        a, b = t.try_decode_png(got[0])[0], t.try_decode_png(ref[0])[0]
        print("# pixels equal: %s" % (a is not None and b is not None and a.pixels == b.pixels))

    ev.wait_end(15)
    names = ev.names()
    assigned = [e[1] for e in ev.events if e[0] == "assigned"]
    t.check("the events show two assignments, attempt 1 then attempt 2 on the other backend, then done",
            len(assigned) == 2 and isinstance(assigned[0], dict) and isinstance(assigned[1], dict)
            and assigned[0].get("attempt") == 1 and assigned[1].get("attempt") == 2
            and assigned[0].get("provider") == "prov-" + first and assigned[1].get("provider") == "prov-" + other
            and names and names[-1] == "done", (names, assigned))
    idx = [i for i, n in enumerate(names) if n == "assigned"]
    t.check("between the two assignments the job was queued again (a queued event)",
            len(idx) >= 2 and "queued" in names[idx[0] + 1:idx[1]], names)

    brd = t.board(bal.url) or []
    e = t.board_entry(brd, provider="prov-" + first)
    t.check("the killed backend shows as down on GET /v1/backends", e is not None and e.get("state") == "down", brd)
    m = t.metrics(bal.url)
    t.check("sdgate_job_retries_total >= 1 and sdgate_backend_failures_total >= 1 after the kill",
            t.metric(m, "sdgate_job_retries_total", 0) >= 1 and t.metric(m, "sdgate_backend_failures_total", 0) >= 1,
            (t.metric(m, "sdgate_job_retries_total"), t.metric(m, "sdgate_backend_failures_total")))
    t.check("sdgate_backends{state=\"down\"} is 1", t.metric(m, "sdgate_backends", state="down") == 1,
            t.metric(m, "sdgate_backends", state="down"))

    # A job after the failover runs on the survivor.
    r = t.submit_job(bal.url, t.small_job(seed=3))
    d2 = t.wait_job(bal.url, r.json["id"], timeout=60) if r.status == 202 and isinstance(r.json, dict) else None
    t.check("a new job after the failover is done on the surviving backend",
            d2 is not None and d2.get("status") == "done" and d2.get("provider") == "prov-" + other,
            d2 and (d2.get("status"), d2.get("provider"), d2.get("error")))

    # The killed backend comes back on its port: an active health check
    # (GET /internal/ping every --health-interval-ms) brings it back up.
    t.start_backend("--pace-ms-per-step", PACE_MS, "--provider", "real-" + first, name="backend-%s-again" % first,
                    port=victim.port)
    brd = t.wait_board(bal.url, lambda bs: (t.board_entry(bs, provider="prov-" + first) or {}).get("state") == "idle",
                       20)
    t.check("the killed backend, started again on its port, is brought back to idle by a health check",
            (t.board_entry(brd, provider="prov-" + first) or {}).get("state") == "idle", brd)
    r = t.submit_job(bal.url, t.small_job(seed=4, steps=3))
    r2 = t.submit_job(bal.url, t.small_job(seed=5, steps=3))
    ds = [t.wait_job(bal.url, x.json["id"], timeout=60) if x.status == 202 and isinstance(x.json, dict) else None
          for x in (r, r2)]
    t.check("two jobs at once afterwards are both done", all(d and d.get("status") == "done" for d in ds),
            [d and (d.get("status"), d.get("provider")) for d in ds])
    bal.stop()


def check_always_failing():
    fake = t.FakeBackend(gpu_class="brokengpu", provider="fake-500", txt2img_status=500)
    bal = t.start_balancer("--max-attempts", 2, "--health-interval-ms", 100, "--backend",
                           t.static_backend_arg(fake.url, provider="fake-500", gpu_class="brokengpu"),
                           name="balancer-500")
    t.check("the fake backend comes up idle", t.wait_idle_backends(bal.url, 1), t.board(bal.url))
    r = t.submit_job(bal.url, t.small_job(seed=4))
    ok = t.check("POST /v1/jobs to a balancer whose only backend fails answers 202",
                 r.status == 202 and isinstance(r.json, dict), t.describe(r))
    if not ok:
        return
    d = t.wait_job(bal.url, r.json["id"], timeout=60)
    err = (d or {}).get("error")
    t.check("the job fails with error.code backend_failed (every attempt failed), not a hang",
            d is not None and d.get("status") == "failed" and isinstance(err, dict)
            and err.get("code") == "backend_failed" and isinstance(err.get("message"), str), d)
    t.check("it was tried exactly --max-attempts 2 times (attempt 2, 2 calls reached the backend)",
            d is not None and d.get("attempt") == 2 and fake.txt2img_calls == 2,
            ((d or {}).get("attempt"), fake.txt2img_calls))
    m = t.metrics(bal.url)
    t.check("metrics: jobs_total{outcome=failed} 1, retries 1, backend failures 2, queue depth 0",
            t.metric(m, "sdgate_jobs_total", outcome="failed") == 1 and t.metric(m, "sdgate_job_retries_total") == 1
            and t.metric(m, "sdgate_backend_failures_total") == 2 and t.metric(m, "sdgate_queue_depth") == 0,
            {k: v for k, v in m.items() if "jobs" in k[0] or "fail" in k[0] or "retr" in k[0] or "queue" in k[0]})
    bal.stop()


def check_unauthorized():
    fake = t.FakeBackend(gpu_class="h100", provider="fake-401", txt2img_status=401,
                         txt2img_body={"detail": "Not authenticated: this backend takes jobs only from its balancer"})
    real = t.start_backend("--provider", "real-t4", name="backend-t4")
    bal = t.start_balancer("--health-interval-ms", 100, "--backend",
                           t.static_backend_arg(fake.url, provider="fake-401", gpu_class="h100"), "--backend",
                           t.static_backend_arg(real.url, provider="real-t4", gpu_class="t4"), name="balancer-401")
    t.check("both backends come up idle", t.wait_idle_backends(bal.url, 2), t.board(bal.url))
    r = t.submit_job(bal.url, t.small_job(seed=5))
    d = t.wait_job(bal.url, r.json["id"], timeout=60) if r.status == 202 else None
    t.check("a job first sent to a backend answering 401 (the h100, the fastest class) is done on the other one, "
            "attempt 2, not failed as rejected",
            d is not None and d.get("status") == "done" and d.get("provider") == "real-t4" and d.get("attempt") == 2
            and fake.txt2img_calls == 1,
            d and ({k: v for k, v in d.items() if k != "result"}, fake.txt2img_calls))
    bal.stop()
    real.stop()


def check_backoff():
    """A backend that answers its pings but fails every job (here: 200 with an
    HTML page): each failure in a row doubles the wait before its next health
    check (100 ms, 200, 400, ...), so over 6 s of jobs it gets about 6 of
    them, not one per health interval (60)."""
    fake = t.FakeBackend(gpu_class="junkgpu", provider="fake-junk", txt2img_status=200,
                         txt2img_body=b"<html><body>502 Bad Gateway</body></html>")
    bal = t.start_balancer("--max-attempts", 1, "--health-interval-ms", 100, "--backend",
                           t.static_backend_arg(fake.url, provider="fake-junk", gpu_class="junkgpu"),
                           name="balancer-backoff")
    t.check("the junk backend comes up idle", t.wait_idle_backends(bal.url, 1), t.board(bal.url))
    outcomes = {}
    t0 = time.monotonic()
    while time.monotonic() - t0 < 6.0:
        r = t.submit_job(bal.url, t.small_job(seed=len(outcomes) + 1))
        key = t.error_code(r) or r.status
        outcomes[key] = outcomes.get(key, 0) + 1
        time.sleep(0.05)
    calls = fake.txt2img_calls
    print("# backoff: %d txt2img calls reached the junk backend in 6 s; submissions %s" % (calls, outcomes))
    t.check("a backend failing every job gets few of them in 6 s (%d calls: its health checks back off)" % calls,
            3 <= calls <= 10, (calls, outcomes))
    brd = t.board(bal.url) or []
    t.check("…and it shows as down on the board", brd and brd[0].get("state") == "down", brd)
    bal.stop()


def main():
    check_kill_mid_job()
    check_always_failing()
    check_unauthorized()
    check_backoff()


if __name__ == "__main__":
    t.run(main)
