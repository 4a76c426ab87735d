#!/usr/bin/env python3
"""test_balancer_cluster.py — several balancers on one PostgreSQL database
(issue 13; docs/operators.md "Several balancers on one database").

Three balancers (A, B, C) share one database and the same two paced
backends. Checked:
  - an Idempotency-Key sent to A and then to B makes one job: B replays A's
    (200, Idempotency-Replayed), another body under that key is refused on
    B, and two balancers racing with one key answer the same job;
  - one backend slot that A and B both send jobs to never gets two at
    once (slot leases), and every lease is given back;
  - the gateway, whose balancer D is killed mid-job, resubmits the job to
    B under the same Idempotency-Key: one job, done once;
  - a provider registered (and beating) through B is routed to by A and C,
    and gone from all once it deregisters;
  - a job A runs is readable on B: GET (its saved state), its event stream
    on B ends with the job's `done`, and once done its document and image
    bytes on B equal A's (live events, resumed streams and DELETE across
    balancers: test_balancer_cluster_events.py);
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
from wsclient import WSClient  # noqa: E402

LEASE_S = 2.0
TOKEN = "cluster-provider-token-0123"
PACE_MS = 60
STEPS = 12  # about 0.75 s a job


def body(i, steps=STEPS):
    return {"prompt": "cluster job %d" % i, "steps": steps, "width": 64, "height": 64, "seed": 500 + i,
            "sampler_name": "Euler"}


def main():
    pg = t.postgres()  # ctest's shared server (fixture pg_server), else one of its own
    url = pg.url(pg.create_database())
    bes = [t.start_backend("--pace-ms-per-step", PACE_MS, "--provider", "p%d" % i, "--gpu-class", "l40",
                           name="backend-%d" % i) for i in range(2)]
    solo = t.start_backend("--pace-ms-per-step", PACE_MS, "--provider", "solo", "--gpu-class", "a10", name="solo")
    proxy = t.RecordingProxy(solo.url)  # counts the txt2img calls it has open at once
    # --prefetch-ms 0: no job sent behind another (one balancer may queue its own second job on a backend)
    common = ["--lease-s", LEASE_S, "--provider-token", TOKEN, "--heartbeat-interval", 2, "--prefetch-ms", 0,
              "--backend", t.static_backend_arg(proxy.url, provider="solo", gpu_class="a10")]
    for be in bes:
        common += ["--backend", t.static_backend_arg(be.url, provider=be.name, gpu_class="l40")]
    bals = {n: t.start_balancer(*common, name="balancer-" + n, db=url) for n in "ABC"}
    A, B, C = bals["A"], bals["B"], bals["C"]
    for b in bals.values():
        t.check("%s sees the three backends" % b.name, t.wait_idle_backends(b.url, 3, 30))
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
    es = t.EventStream(B.url + "/v1/jobs/%s/events" % jid, timeout=60)
    done_a = t.wait_job(A.url, jid, timeout=60)
    t.check("the job is done on A", (done_a or {}).get("status") == "done", done_a)
    t.check("its event stream on B ends with its done event", es.wait_event("done", 15) and es.wait_end(10),
            es.names())
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

    # ---- one backend slot, two balancers sending it jobs at once: leased, never two at once
    subs = []

    def send(name, i):
        subs.append((name, t.submit_job(bals[name].url, dict(body(60 + i), gpus=["a10"]))))
    ths = [threading.Thread(target=send, args=(n, i)) for i in range(3) for n in "AB"]
    for th in ths:
        th.start()
    for th in ths:
        th.join(30)
    docs = [t.wait_job(bals[n].url, (r.json or {}).get("id") or "", timeout=60) for n, r in subs]
    t.check("six jobs for one backend slot through A and B at once are all done",
            len(docs) == 6 and all((d or {}).get("status") == "done" for d in docs),
            [(d or {}).get("status") for d in docs])
    t.check("…one at a time: the backend never had two of them (slot leases)", proxy.max_inflight == 1,
            proxy.max_inflight)
    t.check("…and every lease was given back",
            t.wait_until(lambda: int(t.db_query(url, "SELECT count(*) FROM slot_leases WHERE holder IS NOT NULL")
                                     [0][0]) == 0, 5), t.db_query(url, "SELECT * FROM slot_leases"))

    # ---- the gateway: its balancer dies mid-job; resubmitted to another under the same key, it is one job
    D = t.start_balancer(*common, name="balancer-D", db=url)
    t.wait_idle_backends(D.url, 3, 30)
    gw = t.start_gateway("--balancer", D.url, "--balancer", B.url, "--stream-patience-s", 1, wait_board=True)
    ws = WSClient("127.0.0.1", gw.port, "/ws", timeout=30)
    ws.send_json({"type": "hello"})
    ws.wait_type("welcome", 20)
    ws.send_json({"type": "generate", "id": "g1", "prompt": "the gateway's job survives", "negative_prompt": "",
                  "sampler_name": "Euler", "steps": 30, "cfg_scale": 7, "width": 64, "height": 64, "seed": 77,
                  "gpus": ["l40"]})
    t.check("gateway: its job is assigned by D", ws.wait_type("assigned", 30, id="g1") is not None, ws.of_job("g1"))
    D.kill()
    m = ws.wait_for(lambda m: isinstance(m, dict) and m.get("id") == "g1" and m.get("type") in ("done", "error"), 60)
    accs = {x.get("job") for x in ws.of_job("g1") if x.get("type") == "accepted"}
    rows = t.db_query(url, "SELECT status FROM jobs WHERE doc->'request'->>'prompt' = ?",
                      ("the gateway's job survives",))
    t.check("gateway: D killed mid-job, the job is done once: one job id on both balancers, one row",
            isinstance(m, dict) and m.get("type") == "done" and len(accs) == 1 and rows == [("done",)],
            (m and m.get("type"), accs, rows))
    ws.close()
    gw.stop()

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
