"""test_balancer_prefetch.py — a job sent behind the running one
(--prefetch-ms): with a busy backend about to free up, the balancer sends the
next job at once and the backend's own queue holds it, so no round trip is
lost between jobs. What must hold around it:
- the job behind starts when the one before ends, and both are done, with
  the second's times counted from its real start (not from when it was sent);
- cancelling the job behind never interrupts the running one, and the
  backend does not run the cancelled one;
- cancelling the running job takes the job behind back to the queue (it must
  not meet the interrupt meant for the other): it is then done, attempt 1;
- the backend killed with both on it: both are done once it is back.
Contract: ../../balancer/README.md "Routing" (--prefetch-ms)."""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sdtest as t  # noqa: E402

PACE_MS = 100
STEPS = 12  # 1.2 s a job: long enough to act while both are on the backend


def backend_queued(be):
    r = t.request("GET", be.url + "/sdgate/v1/info", timeout=10)
    return r.json.get("queued") if r.status == 200 and isinstance(r.json, dict) else None


def submit(bal, seed, steps=STEPS):
    r = t.submit_job(bal.url, t.small_job(prompt="prefetch %d" % seed, seed=seed, steps=steps))
    return r.json.get("id") if r.status == 202 and isinstance(r.json, dict) else None


def two_on_the_backend(bal, be, wait_s=3):
    """Job A running, job B sent behind it (the backend's queue holds B)."""
    a = submit(bal, 1)
    da = t.wait_job(bal.url, a, statuses=("running",) + t.FINAL_STATES, timeout=30) if a else None
    b = submit(bal, 2)
    queued = t.wait_until(lambda: backend_queued(be) == 1, wait_s)
    db = t.get_job(bal.url, b) if b else None
    return a, b, da, db, queued


def cancel(bal, jid):
    return t.request("DELETE", bal.url + "/v1/jobs/%s" % jid, timeout=10)


def main():
    be = t.start_backend("--pace-ms-per-step", PACE_MS, "--provider", "solo", name="backend")
    # --prefetch-ms as long as a job: the second job goes behind at once
    bal = t.start_balancer("--prefetch-ms", 5000, "--health-interval-ms", 200, "--progress-interval-ms", 100,
                           "--backend", t.static_backend_arg(be.url, provider="solo", gpu_class="h100"), name="balancer")
    t.check("the backend comes up idle", t.wait_idle_backends(bal.url, 1), t.board(bal.url))
    # Only a backend whose speed was measured gets a job behind its running one.
    a, b, da, db, queued = two_on_the_backend(bal, be)
    with open(bal.log_path, "rb") as f:
        behind = f.read().count(b"(behind its running job)")
    t.check("a backend not measured yet gets no job behind its first one (the balancer sent none behind)",
            behind == 0, (behind, da, db))
    for jid in (a, b):
        t.wait_job(bal.url, jid, timeout=60)

    # 1. Both done, one after the other.
    a, b, da, db, queued = two_on_the_backend(bal, be)
    t.check("job B is sent behind the running job A: the backend's own queue holds it (queued 1)", queued,
            (da, db, backend_queued(be)))
    t.check("B shows as dispatched (running, on the same backend)",
            db is not None and db.get("status") == "running" and db.get("backend") == (da or {}).get("backend"), db)
    fa, fb = t.wait_job(bal.url, a, timeout=60), t.wait_job(bal.url, b, timeout=60)
    t.check("A and B are both done", (fa or {}).get("status") == "done" and (fb or {}).get("status") == "done",
            (fa, fb))
    ia, ib = (fa or {}).get("inference_ms"), (fb or {}).get("inference_ms")
    print("# A inference %s ms, B inference %s ms, B queue %s ms" % (ia, ib, (fb or {}).get("queue_ms")))
    t.check("B's inference time counts from its real start (under 1.7x A's: not A's time plus its own)",
            t.is_int(ia) and t.is_int(ib) and ib < 1.7 * ia, (ia, ib))

    # 2. Cancel the job behind: the running one goes on.
    a, b, da, db, queued = two_on_the_backend(bal, be)
    t.check("again: B waits behind A on the backend", queued, (da, db))
    r = cancel(bal, b)
    t.check("DELETE of the job behind answers 200 cancelled", r.status == 200 and (r.json or {}).get("status") ==
            "cancelled", t.describe(r))
    fa = t.wait_job(bal.url, a, timeout=60)
    t.check("the running job A is not interrupted: it is done", (fa or {}).get("status") == "done", fa)
    t.check("the backend does not run the cancelled job: it is idle right after A (queue 0, idle)",
            t.wait_until(lambda: backend_queued(be) == 0 and t.backend_idle(be), 3), backend_queued(be))

    # 3. Cancel the running job: the one behind goes back to the queue, then runs.
    a, b, da, db, queued = two_on_the_backend(bal, be)
    t.check("again: B waits behind A on the backend", queued, (da, db))
    r = cancel(bal, a)
    t.check("DELETE of the running job A answers 200 cancelled", r.status == 200, t.describe(r))
    fb = t.wait_job(bal.url, b, timeout=60)
    t.check("B, taken back from behind A, is done, attempt 1 (its first try did not count)",
            (fb or {}).get("status") == "done" and (fb or {}).get("attempt") == 1, fb)

    # 4. The backend dies with two jobs on it: both are done once it is back.
    a, b, da, db, queued = two_on_the_backend(bal, be)
    t.check("again: B waits behind A on the backend", queued, (da, db))
    port = be.port
    be.kill()
    time.sleep(0.5)
    be = t.start_backend("--pace-ms-per-step", PACE_MS, "--provider", "solo", name="backend-again", port=port)
    fa, fb = t.wait_job(bal.url, a, timeout=60), t.wait_job(bal.url, b, timeout=60)
    print("# after the kill: A %s attempt %s, B %s attempt %s" % ((fa or {}).get("status"), (fa or {}).get("attempt"),
                                                                 (fb or {}).get("status"), (fb or {}).get("attempt")))
    t.check("the backend killed with A running and B behind: both are done once it is back",
            (fa or {}).get("status") == "done" and (fb or {}).get("status") == "done", (fa, fb))
    bal.stop()
    be.stop()


if __name__ == "__main__":
    t.run(main)
