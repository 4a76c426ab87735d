"""test_balancer_limits.py — the queue is bounded: past --max-queue queued
jobs a new one gets 429 queue_full (the façade 429 {"detail"}); past
--max-queue-per-client queued+running jobs of one client, 429
client_queue_full, while other clients (named with X-Sdgate-Client by a
caller holding --admin-token) still get in; X-Sdgate-Client without the
admin token names nobody; a cancelled job frees its place.
Contract: ../../balancer/README.md "Flags" and "Clients" (per-client
fairness)."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sdtest as t  # noqa: E402

PACE_MS = 200
STEPS = 100  # 20 s per job: nothing finishes while the limits are probed
ADMIN = "admin-secret-0123456"


def long_job(i):
    return t.small_job(prompt="long job %d" % i, seed=i, steps=STEPS)


def cancel_all(bal, ids):
    """Newest first: the queued ones go before the running one, so that no
    job is dispatched in between (that race is test_balancer_busy's)."""
    for jid in reversed(ids):
        t.request("DELETE", bal.url + "/v1/jobs/%s" % jid, timeout=10)


def check_max_queue(be):
    bal = t.start_balancer("--max-queue", 3, "--backend", be.url, name="balancer-maxq")
    t.check("[max-queue 3] the backend comes up idle", t.wait_idle_backends(bal.url, 1), t.board(bal.url))
    ids = []
    r = t.submit_job(bal.url, long_job(0))
    if r.status == 202 and isinstance(r.json, dict):
        ids.append(r.json["id"])
    d = t.wait_job(bal.url, ids[0], statuses=("running",), timeout=30) if ids else None
    t.check("[max-queue 3] the first job runs", d is not None and d.get("status") == "running", d)
    statuses = []
    for i in range(1, 4):
        r = t.submit_job(bal.url, long_job(i))
        statuses.append((r.status, (r.json or {}).get("position") if isinstance(r.json, dict) else None))
        if r.status == 202 and isinstance(r.json, dict):
            ids.append(r.json["id"])
    t.check("[max-queue 3] three more are accepted and queued at positions 1, 2, 3",
            statuses == [(202, 1), (202, 2), (202, 3)], statuses)
    r = t.submit_job(bal.url, long_job(4))
    t.check("[max-queue 3] the next POST /v1/jobs: 429 queue_full", t.is_sdgate_error(r, 429, "queue_full"),
            t.describe(r))
    r = t.request("POST", bal.url + "/sdapi/v1/txt2img", json_body=long_job(5), timeout=15)
    t.check("[max-queue 3] the façade while full: 429 {\"detail\": str} at once",
            r.status == 429 and isinstance(r.json, dict) and isinstance(r.json.get("detail"), str), t.describe(r))
    h = t.request("GET", bal.url + "/healthz", timeout=10)
    m = t.metrics(bal.url)
    t.check("[max-queue 3] /healthz queue 3 and sdgate_queue_depth 3 (the refused ones are not queued)",
            isinstance(h.json, dict) and h.json.get("queue") == 3 and t.metric(m, "sdgate_queue_depth") == 3,
            (t.describe(h), t.metric(m, "sdgate_queue_depth")))
    t.check("[max-queue 3] sdgate_jobs_accepted_total is 4", t.metric(m, "sdgate_jobs_accepted_total") == 4,
            t.metric(m, "sdgate_jobs_accepted_total"))
    r = t.request("DELETE", bal.url + "/v1/jobs/%s" % ids[-1], timeout=10)
    t.check("[max-queue 3] cancelling a queued job: 200", r.status == 200, t.describe(r))
    r = t.submit_job(bal.url, long_job(6))
    ok = r.status == 202 and isinstance(r.json, dict)
    t.check("[max-queue 3] then a new job is accepted again (202, position 3)",
            ok and r.json.get("position") == 3, t.describe(r))
    if ok:
        ids.append(r.json["id"])
    cancel_all(bal, ids)
    t.check("[max-queue 3] after cancelling every job the backend goes idle (no cancelled job runs on)",
            t.wait_until(lambda: t.backend_idle(be), 10, 0.1), t.backend_progress(be))
    m = t.metrics(bal.url)
    t.check("[max-queue 3] after cancelling everything: queue depth 0, running 0",
            t.metric(m, "sdgate_queue_depth") == 0 and t.metric(m, "sdgate_jobs_running") == 0,
            (t.metric(m, "sdgate_queue_depth"), t.metric(m, "sdgate_jobs_running")))
    bal.stop()


def check_per_client(be):
    bal = t.start_balancer("--max-queue-per-client", 2, "--admin-token", ADMIN, "--backend", be.url,
                           name="balancer-perclient")
    t.check("[per-client 2] the backend comes up idle", t.wait_idle_backends(bal.url, 1), t.board(bal.url))
    ids = []

    def submit(i, client=None, token=ADMIN):
        hdrs = {}
        if client:
            hdrs["X-Sdgate-Client"] = client
        if token and client:
            hdrs["Authorization"] = "Bearer " + token
        r = t.submit_job(bal.url, long_job(i), headers=hdrs)
        if r.status == 202 and isinstance(r.json, dict):
            ids.append(r.json["id"])
        return r

    got = [submit(i).status for i in range(2)]
    t.check("[per-client 2] the plain caller's first 2 jobs (1 running + 1 queued): 202", got == [202, 202], got)
    r = submit(2)
    t.check("[per-client 2] its 3rd: 429 client_queue_full", t.is_sdgate_error(r, 429, "client_queue_full"),
            t.describe(r))
    r = t.request("POST", bal.url + "/sdapi/v1/txt2img", json_body=long_job(3), timeout=15)
    t.check("[per-client 2] the same caller on the façade: 429 {\"detail\"}",
            r.status == 429 and isinstance(r.json, dict) and isinstance(r.json.get("detail"), str), t.describe(r))
    got = [submit(10 + i, "alice").status for i in range(2)]
    t.check("[per-client 2] alice (X-Sdgate-Client with the admin token) gets 2 jobs in: 202, 202", got == [202, 202],
            got)
    r = submit(12, "alice")
    t.check("[per-client 2] alice's 3rd: 429 client_queue_full", t.is_sdgate_error(r, 429, "client_queue_full"),
            t.describe(r))
    r = submit(20, "bob")
    t.check("[per-client 2] bob still gets in: 202", r.status == 202, t.describe(r))
    r = submit(30, "carol", token="not-the-admin-token")
    t.check("[per-client 2] X-Sdgate-Client: carol with a wrong admin token does not name a new client "
            "(refused: 429 client_queue_full as the plain caller, or 401)",
            t.is_sdgate_error(r, 429, "client_queue_full") or r.status == 401, t.describe(r))
    r = submit(31, "carol", token=None)
    t.check("[per-client 2] X-Sdgate-Client: carol without any token is the plain caller: 429",
            t.is_sdgate_error(r, 429, "client_queue_full"), t.describe(r))
    # A cancelled job frees the plain caller's place.
    r = t.request("DELETE", bal.url + "/v1/jobs/%s" % ids[1], timeout=10)
    t.check("[per-client 2] cancelling one of the plain caller's jobs: 200", r.status == 200, t.describe(r))
    r = submit(4)
    t.check("[per-client 2] then the plain caller gets a job in again: 202", r.status == 202, t.describe(r))
    cancel_all(bal, ids)
    t.check("[per-client 2] after cancelling every job the backend goes idle (no cancelled job runs on)",
            t.wait_until(lambda: t.backend_idle(be), 10, 0.1), t.backend_progress(be))
    m = t.metrics(bal.url)
    t.check("[per-client 2] after cancelling everything: queue depth 0, running 0",
            t.metric(m, "sdgate_queue_depth") == 0 and t.metric(m, "sdgate_jobs_running") == 0,
            (t.metric(m, "sdgate_queue_depth"), t.metric(m, "sdgate_jobs_running")))
    bal.stop()


def main():
    be = t.start_backend("--pace-ms-per-step", PACE_MS, "--provider", "limits-prov", "--gpu-class", "a100")
    check_max_queue(be)
    check_per_client(be)


if __name__ == "__main__":
    t.run(main)
