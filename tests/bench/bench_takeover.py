#!/usr/bin/env python3
"""bench_takeover.py — how long the jobs of a balancer killed with -9 wait
before another balancer on the same PostgreSQL database runs them
(docs/cluster.md "Takeover"), printed as a markdown table.

    python3 tests/bench/bench_takeover.py --bin build-bench [--trials 10] [--lease-s 4,2]

Per trial: a fresh database on one throwaway PostgreSQL server, balancers A
and B sharing it, two paced backends; A takes 4 jobs (2 running, 2
queued), then A is killed with -9. Measured from the kill: when every
unfinished job of A is owned by B (the database's rows), and when the last
of them is running again on B. The bound the docs state is --lease-s +
--lease-s / 4 (+ one store round trip); the reference is that bound, and
the lease itself (no takeover can beat it without risking a live owner).
Not a ctest: a benchmark."""

import argparse
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
import sdtest as t  # noqa: E402


def trial(pg, bes, lease):
    url = pg.url(pg.create_database())
    common = ["--lease-s", lease, "--log-level", "warn"]
    for be in bes:
        common += ["--backend", t.static_backend_arg(be.url, provider=be.name, gpu_class="l40")]
    a = t.start_balancer(*common, name="A", db=url)
    b = t.start_balancer(*common, name="B", db=url)
    t.wait_idle_backends(a.url, len(bes), 30)
    t.wait_idle_backends(b.url, len(bes), 30)
    body = {"prompt": "takeover", "steps": 40, "width": 64, "height": 64, "sampler_name": "Euler"}
    jobs = [(t.submit_job(a.url, dict(body, seed=i)).json or {}).get("id") for i in range(4)]
    t.wait_until(lambda: t.metric(t.metrics(a.url), "sdgate_jobs_running", 0) >= len(bes), 10, 0.01)
    a_id = t.db_query(url, "SELECT owner FROM jobs WHERE id = ?", (jobs[0],))[0][0]
    a.kill()
    t0 = time.monotonic()
    owned = running = None
    deadline = t0 + 4 * lease + 10
    while time.monotonic() < deadline and running is None:
        rows = t.db_query(url, "SELECT owner, status FROM jobs WHERE id IN (%s)" % ",".join("'%s'" % j for j in jobs))
        left = [r for r in rows if r[1] in ("queued", "running")]
        if owned is None and all(r[0] != a_id for r in left):
            owned = time.monotonic() - t0
        if owned is not None and any(r[1] == "running" and r[0] != a_id for r in rows):
            running = time.monotonic() - t0
        time.sleep(0.02)
    done = [t.wait_job(b.url, j, timeout=60) for j in jobs]
    ok = all((d or {}).get("status") == "done" for d in done)
    b.stop()
    return owned, running, ok


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", default="build-bench")
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--lease-s", default="4,2", help="comma-separated --lease-s values (default 4,2)")
    args = ap.parse_args()
    bin_dir = args.bin if os.path.isdir(args.bin) else os.path.join(ROOT, args.bin)
    t.BIN_DIR = os.path.abspath(bin_dir)
    t0 = time.monotonic()
    pg = t.start_postgres()
    bes = [t.start_backend("--pace-ms-per-step", 50, "--provider", "p%d" % i, "--gpu-class", "l40", name="be%d" % i)
           for i in range(2)]
    print("# Takeover after kill -9 (docs/cluster.md)\n")
    print("Host: %d CPUs; PostgreSQL 15 on loopback (one server, a fresh database per trial); 2 balancers, "
          "2 backends (2 s jobs); A holds 2 running + 2 queued jobs when it is killed.\n" % os.cpu_count())
    print("| --lease-s | trials | all owned by B: p50 s | max s | running on B again: p50 s | max s | "
          "stated bound s | all done once |")
    print("|---:|---:|---:|---:|---:|---:|---:|---|")
    for lease in (float(x) for x in args.lease_s.split(",")):
        res = [trial(pg, bes, lease) for _ in range(args.trials)]
        owned = [r[0] for r in res if r[0] is not None]
        running = [r[1] for r in res if r[1] is not None]
        print("| %.1f | %d | %s | %s | %s | %s | %.2f | %d of %d |" % (
            lease, len(res),
            "%.2f" % statistics.median(owned) if owned else "–", "%.2f" % max(owned) if owned else "–",
            "%.2f" % statistics.median(running) if running else "–", "%.2f" % max(running) if running else "–",
            lease + lease / 4, sum(r[2] for r in res), len(res)))
    print("\n_took %.0f s_" % (time.monotonic() - t0))


if __name__ == "__main__":
    main()
