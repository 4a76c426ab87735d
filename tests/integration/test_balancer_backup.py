#!/usr/bin/env python3
"""test_balancer_backup.py — docs/operators.md "Running several balancers
(PostgreSQL)", Backups, as written there: `pg_dump -Fc` of the database
while two balancers run, `pg_restore --no-owner` into an empty database, and
a new balancer on the restored one. Checked:
  - a job done before the dump is done after the restore, with the same
    image bytes, and its Idempotency-Key still replays it;
  - a job running at the time of the dump is taken over by the new balancer
    (the dump's members are dead by then) and runs again to done;
  - a job accepted after the dump is lost (404 not_found), and its key is
    forgotten (a retry makes a new job)."""

import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sdtest as t  # noqa: E402

LEASE_S = 2.0


def body(i, steps=2):
    return {"prompt": "backup job %d" % i, "steps": steps, "width": 64, "height": 64, "seed": 900 + i,
            "sampler_name": "Euler"}


def pg_tool(pg, prog, *args):
    r = subprocess.run([os.path.join(pg.bin, prog)] + list(args), capture_output=True, text=True, timeout=120,
                       stdin=subprocess.DEVNULL)
    return r.returncode == 0, r.stdout[-500:] + r.stderr[-500:]


def main():
    pg = t.start_postgres()
    url = pg.url(pg.create_database())
    # 50 ms a step: the 60-step job runs about 3 s, long enough to be running in the dump.
    be = t.start_backend("--pace-ms-per-step", 50, "--provider", "bk", "--gpu-class", "l40", name="backend")
    args = ["--lease-s", LEASE_S, "--backend", t.static_backend_arg(be.url, provider="bk", gpu_class="l40")]
    A = t.start_balancer(*args, name="balancer-A", db=url)
    B = t.start_balancer(*args, name="balancer-B", db=url)
    t.check("both balancers see the backend", t.wait_idle_backends(A.url, 1, 30) and
            t.wait_idle_backends(B.url, 1, 30))

    r1 = t.submit_job(A.url, body(1), headers={"Idempotency-Key": "before-dump"})
    id1 = (r1.json or {}).get("id")
    d1 = t.wait_job(A.url, id1) if id1 else None
    images1 = t.job_images(A.url, d1) if d1 else None
    t.check("a job before the dump is done, with its image", (d1 or {}).get("status") == "done" and images1,
            (t.describe(r1), d1))
    r2 = t.submit_job(B.url, body(2, steps=60))
    id2 = (r2.json or {}).get("id")
    t.check("a long job runs on B when the dump is taken", id2 and t.wait_job(B.url, id2, ("running",), 30), r2)

    dump = os.path.join(t.tmpdir("dump"), "sdgate.dump")
    ok, out = pg_tool(pg, "pg_dump", "-Fc", "-f", dump, url)
    t.check("pg_dump -Fc while the balancers run", ok and os.path.getsize(dump) > 0, out)

    r3 = t.submit_job(A.url, body(3), headers={"Idempotency-Key": "after-dump"})
    id3 = (r3.json or {}).get("id")
    t.check("a job after the dump is done", id3 and (t.wait_job(A.url, id3) or {}).get("status") == "done", r3)
    A.stop()
    B.stop()

    restored = pg.create_database("restored")
    ok, out = pg_tool(pg, "pg_restore", "--no-owner", "-d", pg.url(restored), dump)
    t.check("pg_restore --no-owner into an empty database", ok, out)
    C = t.start_balancer(*args, name="balancer-C", db=pg.url(restored))

    d1 = t.wait_job(C.url, id1, timeout=10)
    t.check("after the restore, the job done before the dump is done with the same image bytes",
            (d1 or {}).get("status") == "done" and t.job_images(C.url, d1) == images1, d1)
    again = t.submit_job(C.url, body(1), headers={"Idempotency-Key": "before-dump"})
    t.check("…and its Idempotency-Key replays it (200, same id)",
            again.status == 200 and (again.json or {}).get("id") == id1, t.describe(again))
    d2 = t.wait_job(C.url, id2, timeout=LEASE_S * 2 + 30)
    t.check("the job that was running at the dump is taken over and runs to done",
            (d2 or {}).get("status") == "done" and t.job_images(C.url, d2), d2)
    gone = t.request("GET", C.url + "/v1/jobs/" + id3, timeout=10)
    t.check("the job accepted after the dump is lost (404 not_found)",
            gone.status == 404 and ((gone.json or {}).get("error") or {}).get("code") == "not_found", t.describe(gone))
    retry = t.submit_job(C.url, body(3), headers={"Idempotency-Key": "after-dump"})
    t.check("…and its key is forgotten: a retry makes a new job (202, another id)",
            retry.status == 202 and (retry.json or {}).get("id") not in (None, id3), t.describe(retry))


if __name__ == "__main__":
    t.run(main)
