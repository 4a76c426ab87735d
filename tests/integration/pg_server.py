"""pg_server.py — ctest's fixture pg_server: one throwaway PostgreSQL server
shared by every test that runs on PostgreSQL (integration_pg_*,
test_balancer_store_pg), each test in databases of its own (CREATE DATABASE
takes milliseconds, initdb and a start take seconds).

    pg_server.py start FILE   starts the server (sdtest.Postgres) and writes
                              FILE: its URL (database "postgres"), its
                              folder, its version (server_version_num)
    pg_server.py stop FILE    stops it, removes its folder and FILE

The tests find FILE through $SDGATE_TEST_PG_FILE (sdtest.postgres(), the
unit test's pg_url()). The server outlives "start": a watchdog stops it once
ctest (this script's parent) is gone, also when ctest is killed before
"stop" runs.
"""

import os
import subprocess
import sys

import sdtest as t

# A test's balancers hold one connection each, psql one while it runs;
# ctest -j runs several pg tests at once, with several balancers each. No
# WAL beyond crash recovery (nothing replicates this server): CREATE
# DATABASE ... STRATEGY FILE_COPY then writes only the new database's
# files, not 7 MB of WAL each as well.
SETTINGS = ("max_connections=400", "wal_level=minimal", "max_wal_senders=0")


def start(path):
    if os.path.exists(path):
        stop(path)  # a previous run's, its ctest killed before its stop
    pg = t.Postgres(owner_pid=os.getppid(), settings=SETTINGS)
    version = int(pg.query("postgres", "SHOW server_version_num")[0][0])
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write("%s\n%s\n%d\n" % (pg.url(), pg.dir, version))
    os.replace(tmp, path)
    print("# shared PostgreSQL server: %s (%s)" % (pg.url(), path))


def stop(path):
    with open(path) as f:
        lines = f.read().split("\n")
    os.unlink(path)
    data = os.path.join(lines[1], "data")
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    p = subprocess.run(as_user + [os.path.join(t.pg_bin_dir(), "pg_ctl"), "-D", data, "-m", "immediate", "-w",
                                  "stop"], capture_output=True, timeout=60, stdin=subprocess.DEVNULL)
    print("# stopped %s: pg_ctl exit %d %s" % (lines[0], p.returncode, p.stderr.decode(errors="replace").strip()))
    # Its folder holds a database per balancer the tests started (hundreds of MB): removed in the
    # background, so that ctest need not wait for it.
    subprocess.Popen(["rm", "-rf", lines[1]], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL, start_new_session=True, close_fds=True)


def main():
    if len(sys.argv) != 3 or sys.argv[1] not in ("start", "stop"):
        sys.exit("usage: pg_server.py start|stop FILE")
    (start if sys.argv[1] == "start" else stop)(sys.argv[2])


if __name__ == "__main__":
    main()
