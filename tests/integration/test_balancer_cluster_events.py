#!/usr/bin/env python3
"""test_balancer_cluster_events.py — a job's events, its stream resumed and
its cancel, on a balancer that does not run it (issue 13; docs/cluster.md
"Events, streams and cancels across balancers").

Three balancers (A, B, C) share one PostgreSQL database and one paced
backend, so that a second job waits in A's queue. Checked:
  - GET on C of a job A runs: its live queue position, then its progress;
  - a stream on B of a job A runs is live: B's reader gets the job's queue
    position, `assigned` and its `progress` while the job runs (the first
    progress event on B comes well before the job is done, not with it),
    then `done`; each event under the id A gives it (A's own stream of the
    job has the same ids for the same state events);
  - SSE resumed on another balancer: a reader that had A's events up to
    `assigned` resumes on C with Last-Event-ID and gets neither `queued` nor
    `assigned` again, but what followed; one that had only `queued` gets
    `assigned` on C; one that had the final event gets 204 on C;
  - DELETE on B of a job queued on A and of one running on A: 200
    cancelled, the job is cancelled on A (its row, A's GET, and B's stream
    ends with `cancelled`), and the backend is free again for the next job;
  - a DELETE on B of a job A finished: 409 already_finished."""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sdtest as t  # noqa: E402

LEASE_S = 2.0
PACE_MS = 100
STEPS = 20  # about 2 s a job


def body(i, steps=STEPS):
    return {"prompt": "events job %d" % i, "steps": steps, "width": 64, "height": 64, "seed": 900 + i,
            "sampler_name": "Euler"}


def event(es, name, timeout):
    """The first `name` event (name, data, arrival time) the stream got within timeout, or None."""
    es.wait_event(name, timeout)
    return next((e for e in list(es.events) if e[0] == name), None)


def state_ids(es):
    """(name, id) of each state event a stream got (progress and position updates left out)."""
    out = []
    for (name, data, _), eid in zip(list(es.events), list(es.ids)):
        if name in ("assigned", "done", "failed", "cancelled") or (name == "queued" and not out):
            out.append((name, eid))
    return out


def main():
    pg = t.postgres()  # ctest's shared server (fixture pg_server), else one of its own
    url = pg.url(pg.create_database())
    be = t.start_backend("--pace-ms-per-step", PACE_MS, "--provider", "p0", "--gpu-class", "l40", name="backend")
    common = ["--lease-s", LEASE_S, "--prefetch-ms", 0,
              "--backend", t.static_backend_arg(be.url, provider="p0", gpu_class="l40")]
    bals = {n: t.start_balancer(*common, name="balancer-" + n, db=url) for n in "ABC"}
    A, B, C = bals["A"], bals["B"], bals["C"]
    for b in bals.values():
        t.check("%s sees the backend" % b.name, t.wait_idle_backends(b.url, 1, 30))

    # ---- live events on B of a job A runs, queued behind another
    first = t.submit_job(A.url, body(1))
    t.check("A accepts a first job", first.status == 202, t.describe(first))
    fid = (first.json or {}).get("id") or ""
    t.wait_until(lambda: (t.get_job(A.url, fid) or {}).get("status") == "running", 10)
    r = t.submit_job(A.url, body(2))
    jid = (r.json or {}).get("id") or ""
    es_a = t.EventStream(A.url + "/v1/jobs/%s/events" % jid, timeout=60)
    es_b = t.EventStream(B.url + "/v1/jobs/%s/events" % jid, timeout=60)
    ev = event(es_b, "queued", 10)
    t.check("B's stream of A's queued job: `queued` with its position",
            ev is not None and isinstance(ev[1], dict) and ev[1].get("position") == 1, es_b.names())
    doc = t.get_job(C.url, jid)
    t.check("GET on C of A's queued job: queued, its live position (1)",
            (doc or {}).get("status") == "queued" and (doc or {}).get("position") == 1, doc)
    t.check("B's stream gets `assigned` once A starts it", es_b.wait_event("assigned", 15), es_b.names())
    prog = event(es_b, "progress", 10)
    t.check("…and its progress while it runs", prog is not None, es_b.names())
    seen_steps = []
    t.wait_until(lambda: seen_steps.append(((t.get_job(C.url, jid) or {}).get("progress") or {}).get("step", 0))
                 or seen_steps[-1] > 0, 5, 0.1)
    doc = t.get_job(C.url, jid)
    t.check("GET on C of it while it runs: running on A's backend, its live progress",
            (doc or {}).get("status") == "running" and (doc or {}).get("provider") == "p0"
            and seen_steps and seen_steps[-1] > 0, (doc, seen_steps[-5:]))
    done = t.wait_job(A.url, jid, timeout=60)
    t_done = event(es_a, "done", 10)
    t_prog, t_done = (prog[2] if prog else 0), (t_done[2] if t_done else 0)
    t.check("the job is done on A", (done or {}).get("status") == "done", done)
    t.check("…the first progress event reached B's reader well before the job was done (live, not at the end)",
            prog is not None and t_done - t_prog > 0.5, round(t_done - t_prog, 2))
    t.check("B's stream ends with `done`", es_b.wait_event("done", 15) and es_b.wait_end(10),
            es_b.names())
    es_a.wait_end(10)
    n_prog = sum(1 for n, _, _ in es_b.events if n == "progress")
    t.check("…having had several progress events", n_prog >= 3, n_prog)
    t.check("B's state events carry the ids A gave them (A's own stream: the same)",
            state_ids(es_b) and state_ids(es_b) == state_ids(es_a), (state_ids(es_b), state_ids(es_a)))
    t.check("…and ids only grow on B", all(int(x) < int(y) for x, y in zip(es_b.ids, es_b.ids[1:])), es_b.ids)
    es_a.close()
    es_b.close()

    # ---- SSE resumed on another balancer with Last-Event-ID
    t.wait_until(lambda: (t.get_job(A.url, fid) or {}).get("status") == "done", 30)
    blocker = (t.submit_job(A.url, body(3)).json or {}).get("id") or ""
    t.wait_until(lambda: (t.get_job(A.url, blocker) or {}).get("status") == "running", 10)
    jid = (t.submit_job(A.url, body(4)).json or {}).get("id") or ""
    es_a = t.EventStream(A.url + "/v1/jobs/%s/events" % jid, timeout=60)
    es_a.wait_event("queued", 10)
    queued_id = es_a.ids[0] if es_a.ids else None
    es_a.wait_event("assigned", 20)
    names = [n for n, _, _ in es_a.events]
    assigned_id = es_a.ids[names.index("assigned")] if "assigned" in names else None
    es_a.close()
    es_c = t.EventStream(C.url + "/v1/jobs/%s/events" % jid, timeout=60,
                         headers={"Last-Event-ID": assigned_id or "0"})
    es_q = t.EventStream(C.url + "/v1/jobs/%s/events" % jid, timeout=60,
                         headers={"Last-Event-ID": queued_id or "0"})
    t.check("resumed on C after `assigned`: the rest, up to `done`", es_c.wait_event("done", 30),
            es_c.names())
    t.check("…without `queued` or `assigned` again", "queued" not in es_c.names() and
            "assigned" not in es_c.names(), es_c.names())
    t.check("…ids above the one it resumed from",
            assigned_id and all(int(i) > int(assigned_id) for i in es_c.ids if i), (assigned_id, es_c.ids))
    t.check("resumed on C after `queued`: `assigned` first, no `queued` again",
            es_q.wait_event("done", 30) and es_q.names()[:1] == ["assigned"]
            and "queued" not in es_q.names(), es_q.names())
    final_id = es_c.ids[-1] if es_c.ids else "0"
    r = t.request("GET", C.url + "/v1/jobs/%s/events" % jid, headers={"Last-Event-ID": final_id})
    t.check("resumed on C with the final event's id: 204", r.status == 204, t.describe(r))
    es_c.close()
    es_q.close()

    # ---- DELETE across balancers
    t.wait_until(lambda: (t.get_job(A.url, blocker) or {}).get("status") == "done", 30)
    running = (t.submit_job(A.url, body(5, steps=60)).json or {}).get("id") or ""
    t.wait_until(lambda: (t.get_job(A.url, running) or {}).get("status") == "running", 10)
    queued = (t.submit_job(A.url, body(6)).json or {}).get("id") or ""
    es_b = t.EventStream(B.url + "/v1/jobs/%s/events" % running, timeout=60)
    es_b.wait_event("assigned", 10)
    rq = t.request("DELETE", B.url + "/v1/jobs/" + queued)
    t.check("DELETE on B of a job queued on A: 200 cancelled",
            rq.status == 200 and (rq.json or {}).get("status") == "cancelled", t.describe(rq))
    t.check("…and it is cancelled on A", (t.get_job(A.url, queued) or {}).get("status") == "cancelled",
            t.get_job(A.url, queued))
    t0 = time.monotonic()
    rr = t.request("DELETE", B.url + "/v1/jobs/" + running)
    took = time.monotonic() - t0
    t.check("DELETE on B of a job running on A: 200 cancelled, within a second or two",
            rr.status == 200 and (rr.json or {}).get("status") == "cancelled" and took < 3, (t.describe(rr), took))
    t.check("…cancelled on A, and in the database",
            (t.get_job(A.url, running) or {}).get("status") == "cancelled"
            and t.db_query(url, "SELECT status FROM jobs WHERE id = ?", (running,))[0][0] == "cancelled",
            t.get_job(A.url, running))
    t.check("…B's stream of it ends with `cancelled`", es_b.wait_event("cancelled", 10)
            and es_b.wait_end(10), es_b.names())
    es_b.close()
    nxt = t.submit_job(B.url, body(7, steps=4))
    d = t.wait_job(B.url, (nxt.json or {}).get("id") or "", timeout=30)
    t.check("the backend is free again: B's next job is done", (d or {}).get("status") == "done", d)
    rf = t.request("DELETE", C.url + "/v1/jobs/" + jid)
    t.check("DELETE on C of a job A finished: 409 already_finished", t.is_sdgate_error(rf, 409, "already_finished"),
            t.describe(rf))


t.run(main)
