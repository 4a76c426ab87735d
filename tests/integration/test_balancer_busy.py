"""test_balancer_busy.py — a backend stays busy until its job has really
ended there. A1111's /sdapi/v1/interrupt only asks the running job to stop:
the backend still finishes the current step, encodes the image so far and
answers its txt2img call. Cancelling a running job must therefore not let
the balancer send the next job while the backend is still busy with the
cancelled one (that would queue a second job on a busy instance), and a job
cancelled right after its dispatch must not run on in full.
Seen from the backend's side through a recording proxy (see
test_balancer_routing.py). A 1024x1024 job makes the interrupted job's
tail (last step, PNG encoding) last long enough to see.
Contract: ../../balancer/README.md "Routing" (never a second job on a busy
instance), ../../docs/jobs-api.md "Jobs" (DELETE interrupts)."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sdtest as t  # noqa: E402

PACE_MS = 100
BIG = dict(width=1024, height=1024, steps=150)
IDLE_WITHIN_S = 8  # a 150-step job at 100 ms per step would need 15 s


def submit(bal, body):
    r = t.submit_job(bal.url, body)
    return r.json.get("id") if r.status == 202 and isinstance(r.json, dict) else None


def check_cancel_running():
    """1. Cancel a running big job while a small one waits."""
    be = t.start_backend("--pace-ms-per-step", PACE_MS, "--provider", "busy-prov", "--gpu-class", "a100")
    px = t.RecordingProxy(be.url)
    bal = t.start_balancer("--backend", t.static_backend_arg(px.url, provider="busy-prov", gpu_class="a100"))
    t.check("the backend (behind the proxy) comes up idle", t.wait_idle_backends(bal.url, 1), t.board(bal.url))

    a = submit(bal, t.small_job(prompt="big job to cancel", seed=1, **BIG))
    t.wait_job(bal.url, a, statuses=("running",), timeout=30)
    ok = t.check("the big job runs on the backend (step >= 2)", t.wait_until(lambda: t.backend_step(be) >= 2, 60),
                 t.backend_progress(be))
    b = submit(bal, t.small_job(prompt="small job waiting", seed=2, steps=3))
    d = t.get_job(bal.url, b) if b else None
    t.check("a small job waits queued behind it", d is not None and d.get("status") == "queued", d)
    r = t.request("DELETE", bal.url + "/v1/jobs/%s" % a, timeout=10)
    t.check("DELETE of the big running job: 200", r.status == 200, t.describe(r))
    d = t.wait_job(bal.url, b, timeout=60)
    t.check("the small job then runs and is done", d is not None and d.get("status") == "done", d and d.get("status"))
    ov = px.overlaps()
    t.check("the small job's txt2img reached the backend only after the cancelled job's call had ended there "
            "(no overlap; %d calls)" % len(px.calls), ok and not ov and px.max_inflight <= 1,
            [("A %.3f-%s" % (x["start"], "%.3f" % x["end"] if x["end"] else "open"), "B starts %.3f" % y["start"])
             for x, y in ov[:2]])

    c = submit(bal, t.small_job(prompt="after the cancel", seed=5, steps=3))
    d = t.wait_job(bal.url, c, timeout=60)
    t.check("a job after the cancel is done", d is not None and d.get("status") == "done", d and d.get("status"))
    bal.stop()


def check_cancel_after_dispatch():
    """2. Cancel a job right after it was dispatched, while the backend still
    finishes the previous (cancelled) one. No proxy here: the backend sees the
    balancer's own connections (and their hang-ups) directly."""
    be = t.start_backend("--pace-ms-per-step", PACE_MS, "--provider", "busy-prov-2", "--gpu-class", "a100",
                         name="backend-2")
    bal = t.start_balancer("--backend", be.url, name="balancer-2")
    t.check("[direct] the backend comes up idle", t.wait_idle_backends(bal.url, 1), t.board(bal.url))
    a = submit(bal, t.small_job(prompt="big job to cancel 2", seed=3, **BIG))
    t.wait_job(bal.url, a, statuses=("running",), timeout=30)
    t.check("[direct] the big job runs on the backend (step >= 2)", t.wait_until(lambda: t.backend_step(be) >= 2, 60),
            t.backend_progress(be))
    b = submit(bal, t.small_job(prompt="long small job cancelled at once", seed=4, steps=150))
    r = t.request("DELETE", bal.url + "/v1/jobs/%s" % a, timeout=10)
    t.check("[direct] DELETE of the big job: 200", r.status == 200, t.describe(r))
    d = t.wait_job(bal.url, b, statuses=("running",) + t.FINAL_STATES, timeout=30, interval=0.005)
    r = t.request("DELETE", bal.url + "/v1/jobs/%s" % b, timeout=10)
    t.check("[direct] the next job is dispatched and cancelled at once: 200",
            d is not None and d.get("status") == "running" and r.status == 200, (d and d.get("status"), t.describe(r)))
    idle = t.wait_until(lambda: t.backend_idle(be), IDLE_WITHIN_S, 0.05)
    t.check("[direct] the backend goes idle within %d s: the job cancelled right after its dispatch does not run on"
            % IDLE_WITHIN_S, idle, t.backend_progress(be))
    c = submit(bal, t.small_job(prompt="after the cancels", seed=5, steps=3))
    d = t.wait_job(bal.url, c, timeout=60)
    t.check("[direct] a job after the cancels is done", d is not None and d.get("status") == "done",
            d and d.get("status"))


def main():
    check_cancel_running()
    check_cancel_after_dispatch()


if __name__ == "__main__":
    t.run(main)
