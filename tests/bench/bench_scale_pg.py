#!/usr/bin/env python3
"""bench_scale_pg.py — bench_scale's store half on a throwaway PostgreSQL.

Starts Debian's PostgreSQL server in a temp dir (initdb, pg_ctl on a free
loopback port; as root it runs as the "postgres" user, which the package
creates), runs `bench_scale store` with SDGATE_BENCH_PG pointing at it, twice:
with the server's defaults (synchronous_commit=on: each commit waits for its
WAL flush, durable through a power loss) and with synchronous_commit=off (a
crash may lose the last commits, like SQLite's synchronous=NORMAL on a power
loss), then stops the server and removes the dir.

Usage: python3 tests/bench/bench_scale_pg.py --bin build-bench [--quick]
[--store-jobs N] [--store-writers 1,4]. Standard library only; not a test.
"""

import argparse
import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def pg_bin():
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(p.split("/")[4]))
    if not found:
        sys.exit("no /usr/lib/postgresql/*/bin/pg_ctl: install postgresql (deploy/install-deps.sh)")
    return os.path.dirname(found[-1])


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", default=os.path.join(ROOT, "build-bench"), help="CMake build dir (release)")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--store-jobs", type=int)
    ap.add_argument("--store-writers", default="1,4")
    a = ap.parse_args()
    bench = os.path.join(a.bin, "balancer", "bench_scale")
    if not os.access(bench, os.X_OK):
        sys.exit("no %s: build the bench_scale target first" % bench)
    bindir = pg_bin()
    tmp = tempfile.mkdtemp(prefix="sdgate-bench-pg-")
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_user:
        shutil.chown(tmp, "postgres")
    data, port = os.path.join(tmp, "data"), free_port()
    ctl = as_user + [os.path.join(bindir, "pg_ctl"), "-D", data, "-w"]
    try:
        subprocess.run(as_user + [os.path.join(bindir, "initdb"), "-D", data, "-A", "trust", "-U", "sdgate",
                                  "-E", "UTF8", "--locale=C"], check=True, capture_output=True, cwd=tmp)
        subprocess.run(ctl + ["-l", os.path.join(tmp, "log"), "-o",
                              "-p %d -k %s -c listen_addresses=127.0.0.1" % (port, tmp), "start"],
                       check=True, capture_output=True, cwd=tmp)
        args = [bench, "store", "--store-writers", a.store_writers, "--store-dir", tempfile.gettempdir()]
        if a.quick:
            args.append("--quick")
        if a.store_jobs:
            args += ["--store-jobs", str(a.store_jobs)]
        rc = 0
        for label, opts in (("synchronous_commit=on (default)", ""),
                            ("synchronous_commit=off", "?options=-csynchronous_commit%3Doff")):
            print("### PostgreSQL %s, server %s\n" % (label, bindir), flush=True)
            url = "postgresql://sdgate@127.0.0.1:%d/postgres%s" % (port, opts)
            rc |= subprocess.run(args, env=dict(os.environ, SDGATE_BENCH_PG=url)).returncode
        return rc
    finally:
        subprocess.run(ctl + ["-m", "fast", "stop"], capture_output=True, cwd=tmp)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
