"""test_balancer_sched.py — scheduling rules beyond plain routing:
no head-of-line blocking (a queued job that only a busy backend can serve
does not hold back a later one that an idle backend can); a dispatch
timeout that scales with the backend's learned speed (a slow backend's long
job is not cut off by --min-job-timeout-s), while a backend that never
answers times out, is marked down, and the job fails with backend_failed
after --max-attempts instead of hanging; the façade answers 502 then.
Contract: ../../balancer/README.md "Routing" and "Flags"
(--job-timeout-factor, --min-job-timeout-s)."""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sdtest as t  # noqa: E402

SLOW_PACE_MS = 200
MIN_TIMEOUT_S = 2
FACTOR = 4


def submit(bal, body, headers=None):
    r = t.submit_job(bal.url, body, headers=headers)
    return r.json.get("id") if r.status == 202 and isinstance(r.json, dict) else None


def check_no_head_of_line(slow, bal):
    # The a100 (slow) is busy; a job for it waits; a job for any GPU behind it
    # must go to the idle l40 at once.
    x = submit(bal, t.small_job(prompt="keeps the a100 busy", seed=1, steps=30, gpus=["a100"]))
    t.wait_job(bal.url, x, statuses=("running",), timeout=30)
    q1 = submit(bal, t.small_job(prompt="waits for the a100", seed=2, steps=3, gpus=["a100"]))
    q2 = submit(bal, t.small_job(prompt="any GPU, behind it", seed=3, steps=3, gpus=["l40"]))
    d2 = t.wait_job(bal.url, q2, timeout=30) if q2 else None
    d1 = t.get_job(bal.url, q1) if q1 else None
    t.check("no head-of-line blocking: the later l40 job is done while the earlier a100 job still waits",
            d2 is not None and d2.get("status") == "done" and d2.get("gpu") == "l40"
            and d1 is not None and d1.get("status") == "queued",
            ((d2 or {}).get("status"), (d1 or {}).get("status")))
    d1 = t.wait_job(bal.url, q1, timeout=60) if q1 else None
    t.check("... and the a100 job runs on the a100 once it is free", d1 is not None and d1.get("status") == "done"
            and d1.get("gpu") == "a100", d1 and {k: v for k, v in d1.items() if k != "result"})
    t.wait_job(bal.url, x, timeout=60)


def learn_speed(bal):
    """A short job on the slow a100 (within --min-job-timeout-s even with no
    speed known yet), so that the balancer learns its speed."""
    a = submit(bal, t.small_job(prompt="learn the speed", seed=4, steps=4, gpus=["a100"]))
    d = t.wait_job(bal.url, a, timeout=30)
    t.check("a short job on the slow a100 is done", d is not None and d.get("status") == "done", d and d.get("status"))


def check_scaled_timeout(bal):
    # A long job that takes well past --min-job-timeout-s.
    steps = 25  # 25 x 200 ms = 5 s > --min-job-timeout-s 2
    b = submit(bal, t.small_job(prompt="long on a slow GPU", seed=5, steps=steps, gpus=["a100"]))
    d = t.wait_job(bal.url, b, timeout=60)
    t.check("a %d-step job on the slow a100 (%.0f s, past --min-job-timeout-s %d) is done at attempt 1: the "
            "timeout scales with the learned speed" % (steps, steps * SLOW_PACE_MS / 1000.0, MIN_TIMEOUT_S),
            d is not None and d.get("status") == "done" and d.get("attempt") == 1,
            d and {k: v for k, v in d.items() if k != "result"})


def check_hung_backend(bal, hung):
    t0 = time.monotonic()
    j = submit(bal, t.small_job(prompt="to the hung backend", seed=6, gpus=["hunggpu"]))
    d = t.wait_job(bal.url, j, timeout=60) if j else None
    took = time.monotonic() - t0
    t.check("a job on a backend that never answers fails with backend_failed after 2 attempts (%.1f s), no hang"
            % took, d is not None and d.get("status") == "failed"
            and (d.get("error") or {}).get("code") == "backend_failed" and d.get("attempt") == 2, d)
    t.check("both attempts reached the hung backend", hung.txt2img_calls == 2, hung.txt2img_calls)
    # Its ping still answers: a health check brings it back up.
    back = t.wait_board(bal.url, lambda bs: (t.board_entry(bs, gpu_class="hunggpu") or {}).get("state") == "idle", 20)
    t.check("the hung backend (whose ping answers) is brought back by a health check",
            (t.board_entry(back, gpu_class="hunggpu") or {}).get("state") == "idle", back)
    t0 = time.monotonic()
    r = t.request("POST", bal.url + "/sdapi/v1/txt2img", json_body=t.small_job(seed=7, gpus=["hunggpu"]), timeout=60)
    t.check("the façade answers 502 {\"detail\"} when every attempt failed (%.1f s)" % (time.monotonic() - t0),
            r.status == 502 and isinstance(r.json, dict) and isinstance(r.json.get("detail"), str), t.describe(r))
    m = t.metrics(bal.url)
    t.check("metrics count the timeouts as backend failures (>= 4) and retries (>= 2)",
            t.metric(m, "sdgate_backend_failures_total", 0) >= 4 and t.metric(m, "sdgate_job_retries_total", 0) >= 2,
            (t.metric(m, "sdgate_backend_failures_total"), t.metric(m, "sdgate_job_retries_total")))


def main():
    slow = t.start_backend("--pace-ms-per-step", SLOW_PACE_MS, "--provider", "slow-a100", "--gpu-class", "a100",
                           name="backend-slow")
    fast = t.start_backend("--provider", "fast-l40", "--gpu-class", "l40", name="backend-fast")
    hung = t.FakeBackend(gpu_class="hunggpu", provider="hung", txt2img_status=500, txt2img_delay=45)
    bal = t.start_balancer("--min-job-timeout-s", MIN_TIMEOUT_S, "--job-timeout-factor", FACTOR,
                           "--max-attempts", 2, "--health-interval-ms", 200,
                           "--backend", slow.url, "--backend", fast.url,
                           "--backend", t.static_backend_arg(hung.url, gpu_class="hunggpu"))
    t.check("three backends come up idle", t.wait_idle_backends(bal.url, 3), t.board(bal.url))
    learn_speed(bal)
    check_no_head_of_line(slow, bal)
    check_scaled_timeout(bal)
    check_hung_backend(bal, hung)


if __name__ == "__main__":
    t.run(main)
