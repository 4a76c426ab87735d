#!/usr/bin/env python3
"""test_balancer_cluster.py — several balancers on one PostgreSQL database
(issue 13; docs/operators.md "Several balancers on one database").

Three balancers (A, B, C) share one database and the same two paced
backends. Checked:
  - an Idempotency-Key sent to A and then to B makes one job: B replays A's
    (200, Idempotency-Replayed), another body under that key is refused on
    B, and two balancers racing with one key answer the same job;
  - a provider registered (and beating) through B is routed to by A and C,
    and gone from all once it deregisters;
  - a job A runs is readable on B: GET (its saved state), DELETE answers 503
    running_elsewhere, its event stream on B ends with the job's `done`, and
    once done its document and image bytes on B equal A's;
  - kill -9 of A with jobs running and queued: B or C takes every one over
    within --lease-s + a beat (the bound printed), each is done once, with
    one outcome;
  - a balancer frozen (SIGSTOP) past the lease loses its jobs to the others
    and, thawed, stops with exit code 3 instead of running them too; its job
    has one outcome, written by the balancer that took it over."""

import os
import signal
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sdtest as t  # noqa: E402

LEASE_S = 2.0
TOKEN = "cluster-provider-token-0123"
PACE_MS = 60
STEPS = 12  # about 0.75 s a job


def body(i, steps=STEPS):
    return {"prompt": "cluster job %d" % i, "steps": steps, "width": 64, "height": 64, "seed": 500 + i,
            "sampler_name": "Euler"}


def main():
    pg = t.start_postgres()
    url = pg.url(pg.create_database())
    bes = [t.start_backend("--pace-ms-per-step", PACE_MS, "--provider", "p%d" % i, "--gpu-class", "l40",
                           name="backend-%d" % i) for i in range(2)]
    common = ["--lease-s", LEASE_S, "--provider-token", TOKEN, "--heartbeat-interval", 2]
    for be in bes:
        common += ["--backend", t.static_backend_arg(be.url, provider=be.name, gpu_class="l40")]
    bals = {n: t.start_balancer(*common, name="balancer-" + n, db=url) for n in "ABC"}
    A, B, C = bals["A"], bals["B"], bals["C"]
    for b in bals.values():
        t.check("%s sees both backends" % b.name, t.wait_idle_backends(b.url, 2, 30))
    rows = t.db_query(url, "SELECT count(*) FROM balancers")
    t.check("the three are members of the database", t.wait_until(
        lambda: int(t.db_query(url, "SELECT count(*) FROM balancers")[0][0]) == 3, 10), rows)

    # ---- Idempotency-Keys cross balancers
    r1 = t.submit_job(A.url, body(1), headers={"Idempotency-Key": "k-1"})
    t.check("A accepts a job under a key (202)", r1.status == 202 and t.is_hex_id((r1.json or {}).get("id")),
            t.describe(r1))
    jid = (r1.json or {}).get("id")
    r2 = t.submit_job(B.url, body(1), headers={"Idempotency-Key": "k-1"})
    t.check("the same request and key on B: 200, the same job (a replay)",
            r2.status == 200 and (r2.json or {}).get("id") == jid
            and (r2.headers.get("idempotent-replayed") or "") == "true", t.describe(r2))
    r3 = t.submit_job(B.url, body(2), headers={"Idempotency-Key": "k-1"})
    t.check("another body under that key on B: 422 idempotency_key_reused",
            t.is_sdgate_error(r3, 422, "idempotency_key_reused"),
            t.describe(r3))

    # ---- A job A runs, seen from B
    doc_b = t.get_job(B.url, jid)
    t.check("GET on B of A's unfinished job: its saved state",
            isinstance(doc_b, dict) and doc_b.get("id") == jid and doc_b.get("status") in ("queued", "running"), doc_b)
    rd = t.request("DELETE", B.url + "/v1/jobs/" + jid)
    t.check("DELETE on B of A's unfinished job: 503 running_elsewhere", t.is_sdgate_error(rd, 503, "running_elsewhere"),
            t.describe(rd))
    es = t.EventStream(B.url + "/v1/jobs/%s/events" % jid, timeout=60)
    done_a = t.wait_job(A.url, jid, timeout=60)
    t.check("the job is done on A", (done_a or {}).get("status") == "done", done_a)
    ev = es.wait_event("done", 15)
    t.check("its event stream on B ends with its done event", ev is not None, es.names())
    es.close()
    doc_b = t.get_job(B.url, jid)
    t.check("GET on B once done: done, the same result as on A",
            (doc_b or {}).get("status") == "done" and (doc_b or {}).get("result") == (done_a or {}).get("result"),
            (doc_b, done_a))
    img_a, img_b = t.job_images(A.url, done_a or {}), t.job_images(B.url, doc_b or {})
    t.check("its image bytes on B equal A's", img_a and img_a == img_b, (len(img_a or []), len(img_b or [])))

    # ---- Two balancers racing with one key
    answers = {}

    def post(name):
        answers[name] = t.submit_job(bals[name].url, body(3), headers={"Idempotency-Key": "k-race"})
    ths = [threading.Thread(target=post, args=(n,)) for n in "BC"]
    for th in ths:
        th.start()
    for th in ths:
        th.join(30)
    ids = {(a.json or {}).get("id") for a in answers.values()}
    sts = sorted(a.status for a in answers.values())
    t.check("one key sent to B and C at once: one job, answered on both", len(ids) == 1 and None not in ids
            and sts in ([200, 202], [202, 202]) and
            int(t.db_query(url, "SELECT count(*) FROM jobs WHERE doc->>'idempotency_key' = 'k-race'")[0][0]) == 1,
            (sts, ids))
    for a in answers.values():
        t.wait_job(B.url, (a.json or {}).get("id") or "", timeout=60)

    # ---- a provider registers through B: every balancer routes to it; it leaves through B: gone everywhere
    reg = t.start_backend("--provider", "Registered Inc", "--gpu-class", "h100", "--balancer", B.url, "--token", TOKEN,
                          name="backend-registered")
    on_all = t.wait_until(lambda: all(t.board_entry(t.board(b.url) or [], provider="Registered Inc")
                                      for b in (A, B, C)), 10, 0.1)
    t.check("a backend registered through B is on A's and C's boards too", on_all,
            [len(t.board(b.url) or []) for b in (A, B, C)])
    r = t.submit_job(A.url, dict(body(40), gpus=["h100"]))
    d = t.wait_job(A.url, (r.json or {}).get("id") or "", timeout=30)
    t.check("…and A runs a job on it", (d or {}).get("status") == "done"
            and (d or {}).get("provider") == "Registered Inc", d)
    time.sleep(4 * 2)  # past its heartbeats' expiry (3 x 2 s) on A and C, which it never calls
    t.check("its heartbeats through B keep it on A's board (shared heartbeats)",
            t.board_entry(t.board(A.url) or [], provider="Registered Inc") is not None)
    reg.stop()
    gone = t.wait_until(lambda: not any(t.board_entry(t.board(b.url) or [], provider="Registered Inc")
                                        for b in (A, B, C)), 10, 0.1)
    t.check("deregistered through B (it stopped): gone from every board", gone)

    # ---- kill -9 of A with jobs running and queued
    jobs = []
    for i in range(5):
        r = t.submit_job(A.url, body(10 + i))
        jobs.append((r.json or {}).get("id"))
    t.check("A accepted five more jobs", all(t.is_hex_id(j) for j in jobs), jobs)
    t.wait_until(lambda: t.metric(t.metrics(A.url), "sdgate_jobs_running", 0) >= 1, 10, 0.02)
    A.kill()
    killed_at = time.monotonic()
    a_id = t.db_query(url, "SELECT owner FROM jobs WHERE id = ?", (jobs[0],))[0][0]
    finished_before = {j for j in jobs if t.db_query(url, "SELECT status FROM jobs WHERE id = ?", (j,))[0][0]
                       in ("done", "failed", "cancelled")}
    took = {}

    def taken():
        for j in jobs:
            if j not in took and j not in finished_before and \
                    t.db_query(url, "SELECT owner FROM jobs WHERE id = ?", (j,))[0][0] != a_id:
                took[j] = time.monotonic() - killed_at
        return len(took) + len(finished_before) == len(jobs)
    t.wait_until(taken, 20, 0.05)
    bound = LEASE_S + LEASE_S / 4 + 1.5
    worst = max(took.values()) if took else None
    print("# takeover after kill -9: %d job(s) taken over (%d had finished), the last after %s s (bound %.2f s: "
          "--lease-s %.1f + a beat + 1.5 s)" % (len(took), len(finished_before),
                                                "–" if worst is None else "%.2f" % worst, bound, LEASE_S))
    t.check("every unfinished job of A is taken over by B or C within --lease-s + a beat",
            took and len(took) + len(finished_before) == len(jobs) and worst <= bound, (took, finished_before))
    docs = [t.wait_job(B.url, j, timeout=60) for j in jobs]
    t.check("…and each is done, once", all((d or {}).get("status") == "done" for d in docs),
            [(d or {}).get("status") for d in docs])

    # ---- a frozen balancer loses its jobs and stops when thawed
    r = t.submit_job(C.url, body(30, steps=40))
    cj = (r.json or {}).get("id")
    t.wait_until(lambda: (t.get_job(C.url, cj) or {}).get("status") == "running", 10, 0.02)
    C.signal(signal.SIGSTOP)
    stopped_at = time.monotonic()
    d = t.wait_job(B.url, cj, timeout=60)
    t.check("a job of a frozen balancer is taken over and done by another", (d or {}).get("status") == "done", d)
    time.sleep(max(0.0, stopped_at + LEASE_S * 1.5 - time.monotonic()))
    C.signal(signal.SIGCONT)
    gone = t.wait_until(lambda: not C.running(), 10, 0.1)
    rc = C.proc.returncode if gone else None
    t.check("thawed, it finds its membership ended and stops: exit code 3 (a leak or a crash would change it)",
            rc == 3, (rc, C.log_tail(10)))
    C.stopped = True  # its exit is checked above
    t.check("…and the job's one outcome stands (done, written by its successor)",
            (t.get_job(B.url, cj) or {}).get("status") == "done"
            and t.db_query(url, "SELECT status FROM jobs WHERE id = ?", (cj,))[0][0] == "done")


t.run(main)
