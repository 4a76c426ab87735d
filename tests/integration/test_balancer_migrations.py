"""test_balancer_migrations.py — the balancer's store has versioned schema
migrations on both engines (issue 13), whatever SDGATE_TEST_STORE says:
- SQLite: a fresh file is at the last version (schema_migrations); a file
  written before schema versions (the same tables, no schema_migrations) is
  recognised as version 1 and keeps its jobs and images; a file of a newer
  version is refused with a clear message.
- PostgreSQL (a server of the test's own): three balancers starting together
  on one empty database all come up and the schema is migrated once (the
  advisory lock); a newer version is refused; a password in the URL is never
  logged; a server down at start is waited for (--db-wait-s) and one that
  stays down ends the start with a clear error, fast when it answers but
  refuses (an unknown database); a server restarted under a running balancer
  costs at most the tasks that met the lost connection (logged once), then
  the balancer reconnects and goes on.
Contract: ../../docs/operators.md "The balancer's database"."""

import os
import sqlite3
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sdtest as t  # noqa: E402

SQLITE_VERSION = 2  # store_sqlite.c's migrations today: 2 added client_options
PG_VERSION = 3      # store_pg.c's: 2 made it shareable by several balancers (store.h), 3 added client_options

# The SQLite schema as sdgate wrote it before schema versions (balancer/store.c up to
# e5f65ec), verbatim but for its PRAGMAs and the client_bytes rebuild.
OLD_SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (id TEXT PRIMARY KEY, status TEXT NOT NULL,
 finished REAL NOT NULL DEFAULT 0, created INTEGER NOT NULL, doc TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS jobs_finished ON jobs(status, finished);
CREATE INDEX IF NOT EXISTS jobs_created ON jobs(created);
CREATE TABLE IF NOT EXISTS backends (id TEXT PRIMARY KEY, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS images (job_id TEXT NOT NULL, n INTEGER NOT NULL, mime TEXT NOT NULL,
 bytes INTEGER NOT NULL, client TEXT NOT NULL, finished REAL NOT NULL, data BLOB NOT NULL,
 PRIMARY KEY (job_id, n));
CREATE INDEX IF NOT EXISTS images_finished ON images(finished);
CREATE INDEX IF NOT EXISTS images_client ON images(client, finished, bytes);
CREATE TABLE IF NOT EXISTS client_bytes (client TEXT PRIMARY KEY, bytes INTEGER NOT NULL);
CREATE TRIGGER IF NOT EXISTS images_add AFTER INSERT ON images BEGIN
 INSERT INTO client_bytes (client, bytes) VALUES (new.client, new.bytes)
 ON CONFLICT(client) DO UPDATE SET bytes = bytes + excluded.bytes; END;
CREATE TRIGGER IF NOT EXISTS images_drop AFTER DELETE ON images BEGIN
 UPDATE client_bytes SET bytes = bytes - old.bytes WHERE client = old.client;
 DELETE FROM client_bytes WHERE client = old.client AND bytes <= 0; END;
"""


def layout(path):
    con = sqlite3.connect(path)
    try:
        return sorted(con.execute("SELECT type, name, tbl_name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'"))
    finally:
        con.close()


def versions(db):
    return [int(r[0]) for r in t.db_query(db, "SELECT version FROM schema_migrations ORDER BY version")]


def one_job(bal, prompt):
    """A job done on bal: (id, its images)."""
    r = t.submit_job(bal.url, t.small_job(prompt=prompt, seed=11))
    jid = r.json.get("id") if r.status == 202 and isinstance(r.json, dict) else None
    d = t.wait_job(bal.url, jid, timeout=60) if jid else None
    ok = d is not None and d.get("status") == "done"
    t.check("%s: a job is done" % bal.name, ok, d or t.describe(r))
    return jid, t.job_images(bal.url, d) if ok else None


def refused(db, *more):
    """Runs a balancer on db that must not start: (exit code, its log, seconds)."""
    t0 = time.monotonic()
    code, out, err = t.run_tool([t.balancer_path(), "--listen", "127.0.0.1:%d" % t.free_port(), "--db", db]
                                + [str(a) for a in more], timeout=60)
    return code, out + err, time.monotonic() - t0


def sqlite_part(be_arg):
    print("# SQLite")
    db = os.path.join(t.tmpdir("mig-sqlite"), "balancer.db")
    bal = t.start_balancer("--backend", be_arg, name="sqlite-fresh", db=db)
    jid, images = one_job(bal, "kept across the migration")
    bal.stop()
    t.check("a fresh file is at version %d (schema_migrations)" % SQLITE_VERSION,
            versions(db) == list(range(1, SQLITE_VERSION + 1)), versions(db))

    # The layout of a file from before schema versions: that file, less schema_migrations and
    # what later versions added.
    old = os.path.join(t.tmpdir("mig-old"), "old.db")
    con = sqlite3.connect(old)
    con.executescript(OLD_SQLITE_SCHEMA)
    con.close()
    con = sqlite3.connect(db)
    con.execute("DROP TABLE schema_migrations")
    con.execute("DROP TABLE client_options")  # version 2's
    con.commit()
    con.close()
    t.check("without schema_migrations the file has exactly the old layout", layout(db) == layout(old),
            (layout(db), layout(old)))
    bal = t.start_balancer("--backend", be_arg, name="sqlite-old", db=db)
    t.check("a file from before schema versions: recorded as version 1 (logged)",
            "recorded as version 1" in bal.log_tail(200), bal.log_tail(10))
    d = t.get_job(bal.url, jid) if jid else None
    t.check("…and its job is still done with the same images", d is not None and d.get("status") == "done"
            and images and t.job_images(bal.url, d) == images, d)
    one_job(bal, "a new job on the migrated file")
    bal.stop()
    t.check("…and it is at version %d now" % SQLITE_VERSION, versions(db) == list(range(1, SQLITE_VERSION + 1)),
            versions(db))

    con = sqlite3.connect(db)
    con.execute("INSERT INTO schema_migrations (version) VALUES (99)")
    con.commit()
    con.close()
    code, log, _ = refused(db)
    t.check("a file of a newer schema version (99) is refused: exit code != 0, a clear message",
            code != 0 and "schema version 99 is newer than this sdgate-balancer knows" in log, (code, log[-600:]))


def start_together(n, url, be_arg):
    """Starts n balancers on one empty database, all held at their
    migration at once: a session of the test's own creates schema_migrations
    in a transaction left open, so that the first CREATE of any migration
    waits for it (and the others wait on the migrations' lock); once all n
    wait, the test rolls back. Without the lock they would all run the
    migration together, and all but one fail. [(Program, error, s)]."""
    psql = os.path.join(t.pg_bin_dir(), "psql")
    hold = subprocess.Popen([psql, "-X", "-q", "-d", url], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    hold.stdin.write(b"BEGIN; CREATE TABLE schema_migrations (version integer);\n")
    hold.stdin.flush()
    # Only once the hold is in place (psql is slow to start on a loaded machine: balancers started
    # before it would migrate unhindered and never wait).
    t.check("the test's session holds schema_migrations in an open transaction", t.wait_until(
        lambda: int(t.db_query(url, "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'psql'"
                                    " AND state = 'idle in transaction'")[0][0]) >= 1, timeout=30))
    runs = [t.Background(t.start_balancer, "--backend", be_arg, name="pg-together-%d" % i, db=url)
            for i in range(n)]
    waiting = t.wait_until(lambda: int(t.db_query(url, "SELECT count(*) FROM pg_stat_activity WHERE"
                                                       " application_name = 'sdgate-balancer' AND"
                                                       " wait_event_type = 'Lock'")[0][0]) >= n, timeout=60)
    t.check("all %d balancers wait at the migration together" % n, waiting)
    hold.stdin.write(b"ROLLBACK;\n")
    hold.stdin.close()
    hold.wait(30)
    return [r.join(90) for r in runs]


def pg_part(be_arg):
    print("# PostgreSQL")
    pg = t.start_postgres()
    name = pg.create_database()
    url = pg.url(name)
    started = start_together(3, url, be_arg)
    bals = [b for b, err, _ in started if b is not None]
    t.check("three balancers started together on one empty database all come up", len(bals) == 3,
            [str(err)[-400:] for _, err, _ in started if err])
    t.check("…and the schema was migrated once: schema_migrations = %s" % list(range(1, PG_VERSION + 1)),
            versions(url) == list(range(1, PG_VERSION + 1)), versions(url))
    migrated = sum("schema migrated to version" in b.log_tail(200) for b in bals)
    t.check("exactly one of them applied the migration", migrated == 1, migrated)
    for b in bals:
        b.stop()

    pg.query(name, "INSERT INTO schema_migrations (version) VALUES (99)")
    code, log, _ = refused(url)
    t.check("a database of a newer schema version (99) is refused: exit code != 0, a clear message",
            code != 0 and "schema version 99 is newer than this sdgate-balancer knows" in log, (code, log[-600:]))
    pg.query(name, "DELETE FROM schema_migrations WHERE version = 99")

    secret = "pw-never-logged-7f3a"
    bal = t.start_balancer("--backend", be_arg, name="pg-password", db=pg.url(name, password=secret))
    jid, images = one_job(bal, "on postgresql")
    log = bal.log_tail(500)
    t.check("a password in the URL is never logged (the URL is, with ***)",
            secret not in log and "sdgate:***@127.0.0.1" in log, log[-400:])

    # The server restarted under the running balancer.
    pg.stop("fast")
    t0 = time.monotonic()
    r = t.submit_job(bal.url, t.small_job(prompt="while the server is down"))
    took = time.monotonic() - t0
    t.check("while the server is down a job is refused at once (503 storage_failed in %.1f s), no hang" % took,
            t.is_sdgate_error(r, 503, "storage_failed") and took < 10, t.describe(r))
    pg.start()
    r = t.submit_job(bal.url, t.small_job(prompt="after the server came back", seed=12))
    jid2 = r.json.get("id") if r.status == 202 and isinstance(r.json, dict) else None
    t.check("once it is back, the next job is accepted (202: reconnected)", jid2 is not None, t.describe(r))
    d = t.wait_job(bal.url, jid2, timeout=60) if jid2 else None
    t.check("…and done", d is not None and d.get("status") == "done", d)
    d = t.get_job(bal.url, jid) if jid else None
    t.check("the job from before the restart still serves its images (read from the server)",
            d is not None and images and t.job_images(bal.url, d) == images, d)
    log = bal.log_tail(500)
    t.check("the lost connection is logged once, the reconnection too",
            log.count("connection lost") == 1 and log.count("reconnected") == 1,
            [line for line in log.splitlines() if "db " in line][-8:])
    t.check("the balancer still runs", bal.running())

    # The connection cut by the server while jobs are being written (a batch may meet it).
    accepted = []
    for i in range(6):
        if i == 3:
            cut = t.db_query(url, "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                                  " WHERE application_name = 'sdgate-balancer'")[0][0]
        r = t.submit_job(bal.url, t.small_job(prompt="around a cut connection", seed=40 + i))
        if r.status == 202 and isinstance(r.json, dict):
            accepted.append(r.json["id"])
    done = [(t.wait_job(bal.url, j, timeout=60) or {}).get("status") for j in accepted]
    t.check("a connection cut mid-work (%s session(s) ended by the server): at most one job refused, every accepted one done (%d of 6)"
            % (cut, len(accepted)), len(accepted) >= 5 and done == ["done"] * len(accepted), done)
    t.check("the balancer still runs after the cut", bal.running())
    bal.stop()

    # Down at start: waited for, within --db-wait-s.
    pg.stop("fast")
    code, log, took = refused(url, "--db-wait-s", 1)
    t.check("a server that stays down: the start fails after --db-wait-s 1 (%.1f s), clear message" % took,
            code != 0 and took < 15 and "cannot connect within --db-wait-s" in log and "not answering" in log,
            (code, log[-600:]))
    later = t.Background(t.start_balancer, "--backend", be_arg, "--db-wait-s", 30, name="pg-waits", db=url)
    time.sleep(1.5)
    pg.start()
    bal, err, took = later.join(60)
    t.check("a server that comes up within --db-wait-s: the balancer starts (%s s)" % (took and "%.1f" % took),
            bal is not None and "not answering" in bal.log_tail(200), err)
    if bal:
        d = t.get_job(bal.url, jid) if jid else None
        t.check("…on the same state (the earlier job is there)", d is not None and d.get("status") == "done", d)
        bal.stop()
    secret2 = "pw-in-the-query-9c1d"
    code, log, took = refused(pg.url("no_such_db") + "?password=" + secret2, "--db-wait-s", 30)
    t.check("a server that answers but refuses (unknown database): fails at once (%.1f s), says why" % took,
            code != 0 and took < 10 and "no_such_db" in log and "does not exist" in log, (code, log[-600:]))
    t.check("…naming the server without the password given as ?password=",
            secret2 not in log and "?password=***" in log, log[-600:])


def main():
    be = t.start_backend("--provider", "mig-prov")
    be_arg = t.static_backend_arg(be.url, provider="mig-prov")
    sqlite_part(be_arg)
    pg_part(be_arg)


if __name__ == "__main__":
    t.run(main)
