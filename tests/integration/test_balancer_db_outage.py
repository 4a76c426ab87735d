#!/usr/bin/env python3
"""test_balancer_db_outage.py — a job that finishes while the balancer's
PostgreSQL server is down is written once the server is back
(balancer/jobs.c jobs_save_again; docs/operators.md "The balancer's
database"): its row says done, not running, so a restarted balancer (or
another one sharing the database) does not run it a second time. Its
images, which could not be stored, are not served."""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sdtest as t  # noqa: E402


def row_status(url, jid):
    rows = t.db_query(url, "SELECT status FROM jobs WHERE id = ?", (jid,))
    return rows[0][0] if rows else None


def main():
    pg = t.start_postgres()
    url = pg.url(pg.create_database())
    be = t.start_backend("--pace-ms-per-step", 100, "--provider", "outage-prov", "--gpu-class", "l40")
    arg = ["--backend", t.static_backend_arg(be.url, provider="outage-prov", gpu_class="l40")]
    bal = t.start_balancer(*arg, name="balancer", db=url)
    t.check("the backend is up", t.wait_idle_backends(bal.url, 1, 30))
    r = t.submit_job(bal.url, t.small_job(prompt="across an outage", steps=30, seed=3))
    jid = (r.json or {}).get("id") if r.status == 202 else None
    t.check("a 3 s job is accepted", jid is not None, t.describe(r))
    t.check("…and runs", t.wait_until(lambda: row_status(url, jid) == "running", 10, 0.05), row_status(url, jid))
    pg.stop("fast")
    d = t.wait_job(bal.url, jid, timeout=30)
    t.check("the server down, the job still finishes on its balancer", (d or {}).get("status") == "done", d)
    pg.start()
    saved = t.wait_until(lambda: row_status(url, jid) == "done", 10, 0.1)
    t.check("the server back, its row says done within 10 s (written again), not running", saved,
            row_status(url, jid))
    img = t.request("GET", bal.url + "/v1/jobs/%s/images/0" % jid)
    t.check("its images, never stored, are not served (404 or 410, the error shape)",
            t.is_sdgate_error(img, 404) or t.is_sdgate_error(img, 410), t.describe(img))
    bal.stop()
    bal2 = t.start_balancer(*arg, name="balancer-2", db=url)
    t.wait_idle_backends(bal2.url, 1, 30)
    time.sleep(5)  # past --lease-s (4 s): the first balancer's unfinished jobs would be taken over by now
    d2 = t.get_job(bal2.url, jid)
    t.check("a balancer started on the database later does not run it again (done, attempt 1)",
            (d2 or {}).get("status") == "done" and (d2 or {}).get("attempt") == 1, d2)
    bal2.stop()


t.run(main)
