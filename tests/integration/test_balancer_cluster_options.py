#!/usr/bin/env python3
"""test_balancer_cluster_options.py — the façade's client defaults (POST
/sdapi/v1/options: a client's default checkpoint) on every balancer of one
database, and across a restart (issue 13; docs/cluster.md, docs/a1111-facade.md).

A native backend and the stand-in plain A1111 (a1111_standin.py), each
offering its own checkpoints; balancers A, B, C on one PostgreSQL database.
Checked:
  - a client's choice posted on A is seen on B and C (GET /options) within a
    notice's time, and its txt2img naming no checkpoint, sent to B and to C,
    runs on the A1111 that offers the choice and reaches it as
    override_settings.sd_model_checkpoint; another client's choice stays its
    own; the choice is a row of client_options;
  - a balancer D started after the POST knows it at once (loaded), and its
    txt2img runs there too;
  - a new choice posted on C replaces it on A, B and D; two balancers taking
    one client's choices at once end with the same one, the row's;
  - a choice posted while every balancer's listener is cut (its notice lost)
    reaches B, C and D once their listeners are back (the rows read again);
  - options notices past the bounds (a client key of 200 bytes, a name of
    300 bytes, wrong types, not JSON), published straight into the channel,
    change nothing and stop nobody;
  - SQLite: a lone balancer restarted on its file keeps the choices."""

import json
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import a1111_standin  # noqa: E402
import sdtest as t  # noqa: E402

NATIVE_MODEL = "sdgate-procedural-base-v1.builtin [9917535daf]"
SDXL = "sd_xl_base_1.0.safetensors [31e35c80fc]"
KEY_A = {"Authorization": "Bearer cluster-options-client-a-51c0"}
KEY_B = {"Authorization": "Bearer cluster-options-client-b-7d2e"}
NOTICE_S = 5.0  # an options notice is applied on every balancer well within this


def shown(bal, key):
    r = t.request("GET", bal.url + "/sdapi/v1/options", headers=key, timeout=10)
    return (r.json or {}).get("sd_model_checkpoint") if r.status == 200 else None


def shows(bal, key, title, timeout=NOTICE_S):
    return t.wait_until(lambda: shown(bal, key) == title, timeout)


def provider_of(r):
    return ((t.info_of(r) or {}).get("sdgate") or {}).get("provider")


def txt2img_reached(bal, key, record, seed):
    """A txt2img naming no checkpoint: (reply, provider, the checkpoint the A1111 got or None)."""
    n = len(txt2img_records(record))
    body = t.small_job(prompt="options across balancers", seed=seed, steps=2, sampler_name="Euler")
    r = t.request("POST", bal.url + "/sdapi/v1/txt2img", json_body=body, headers=key, timeout=60)
    sent = txt2img_records(record)[n:]
    got = ((sent[-1]["body"] or {}).get("override_settings") or {}).get("sd_model_checkpoint") if sent else None
    return r, provider_of(r), got


def txt2img_records(record):
    return [x for x in a1111_standin.read_records(record) if x["path"] == "/sdapi/v1/txt2img"]


def post_options(bal, key, name):
    return t.request("POST", bal.url + "/sdapi/v1/options", json_body={"sd_model_checkpoint": name}, headers=key,
                     timeout=10)


def on_one_database(pg, common, record):
    url = pg.url(pg.create_database())
    bals = {n: t.start_balancer(*common, name="balancer-" + n, db=url) for n in "ABC"}
    A, B, C = bals["A"], bals["B"], bals["C"]
    for b in bals.values():
        t.check("%s sees both backends" % b.name, t.wait_idle_backends(b.url, 2, 30), t.board(b.url))
        t.check("%s: client B has no choice yet (the first live title, not the native one)" % b.name,
                shown(b, KEY_B) == SDXL, shown(b, KEY_B))

    r = post_options(A, KEY_A, "sd_xl_base_1.0")
    t.check("client A posts sd_xl_base_1.0 on A: 200 null", r.status == 200 and r.raw.strip() == b"null",
            t.describe(r))
    r = post_options(A, KEY_B, NATIVE_MODEL)
    t.check("client B posts the native checkpoint on A: 200", r.status == 200, t.describe(r))
    # Client A's choice is the first live title, which GET /options shows anyway: client B's,
    # published after it, tells when both have come.
    t0 = time.monotonic()
    for b in (B, C):
        t.check("%s shows client B its choice within %.0f s" % (b.name, NOTICE_S), shows(b, KEY_B, NATIVE_MODEL),
                shown(b, KEY_B))
    print("# client B's choice seen on B and C after %.3f s" % (time.monotonic() - t0))
    for b in (A, B, C):
        t.check("%s shows client A its own choice" % b.name, shown(b, KEY_A) == SDXL, shown(b, KEY_A))
    rows = t.db_query(url, "SELECT client, doc->>'sd_model_checkpoint' FROM client_options")
    t.check("both choices are rows of client_options",
            sorted(r[1] for r in rows) == sorted([NATIVE_MODEL, "sd_xl_base_1.0"]), rows)
    client_a = ([r[0] for r in rows if r[1] == "sd_xl_base_1.0"] or [None])[0]

    for i, b in enumerate((B, C)):
        r, prov, got = txt2img_reached(b, KEY_A, record, 40 + i)
        t.check("client A's txt2img naming no checkpoint, on %s: runs on the A1111 (its choice's)" % b.name,
                r.status == 200 and prov == "a1111", (t.describe(r), prov))
        t.check("... and reaches it as override_settings.sd_model_checkpoint", got == "sd_xl_base_1.0", got)
        r, prov, got = txt2img_reached(b, KEY_B, record, 50 + i)
        t.check("client B's on %s runs on the native backend it chose" % b.name,
                r.status == 200 and prov == "native" and got is None, (t.describe(r), prov, got))

    # ---- a balancer started after the POST
    D = t.start_balancer(*common, name="balancer-D", db=url)
    bals["D"] = D
    t.check("D sees both backends", t.wait_idle_backends(D.url, 2, 30), t.board(D.url))
    t.check("D, started after the POSTs, shows client B its choice (loaded at start)",
            shown(D, KEY_B) == NATIVE_MODEL, (shown(D, KEY_B), D.log_tail(20)))
    r, prov, got = txt2img_reached(D, KEY_A, record, 60)
    t.check("client A's txt2img on D runs on the A1111 with its choice",
            r.status == 200 and prov == "a1111" and got == "sd_xl_base_1.0", (t.describe(r), prov, got))

    # ---- a new choice replaces it everywhere
    r = post_options(C, KEY_A, NATIVE_MODEL)
    t.check("client A posts the native checkpoint on C: 200", r.status == 200, t.describe(r))
    for b in (A, B, D):
        t.check("%s shows client A its new choice" % b.name, shows(b, KEY_A, NATIVE_MODEL), shown(b, KEY_A))
    r, prov, got = txt2img_reached(A, KEY_A, record, 70)
    t.check("client A's txt2img on A now runs on the native backend", r.status == 200 and prov == "native",
            (t.describe(r), prov, got))

    # ---- one client's choices taken by two balancers at once: all end with the row's
    for round_ in range(3):
        names = {"B": "sd_xl_base_1.0", "D": NATIVE_MODEL}
        if round_ % 2:
            names = {"B": NATIVE_MODEL, "D": "sd_xl_base_1.0"}
        ths = [threading.Thread(target=post_options, args=(bals[n], KEY_A, names[n])) for n in names]
        for th in ths:
            th.start()
        for th in ths:
            th.join(20)
        row = t.db_query(url, "SELECT doc->>'sd_model_checkpoint' FROM client_options WHERE client = ?",
                         (client_a,))
        want = SDXL if row == [("sd_xl_base_1.0",)] else NATIVE_MODEL
        agree = t.wait_until(lambda: all(shown(b, KEY_A) == want for b in bals.values()), NOTICE_S)
        t.check("round %d: B and D take client A's choices at once: all four show the row's (%s)"
                % (round_ + 1, want), agree, (row, {n: shown(b, KEY_A) for n, b in bals.items()}))

    # ---- a notice missed while the listeners reconnect: the rows are read again
    sql = "FROM pg_stat_activity WHERE datname = current_database() AND query = 'LISTEN sdgate'"
    listeners = int(pg.query(url, "SELECT count(*) " + sql)[0][0])
    pg.query(url, "SELECT pg_terminate_backend(pid) " + sql)
    r = post_options(A, KEY_B, "sd_xl_base_1.0")
    t.check("the %d listeners cut; client B posts sd_xl_base_1.0 on A at once: 200" % listeners,
            listeners == 4 and r.status == 200, (listeners, t.describe(r)))
    t0 = time.monotonic()
    for b in (B, C, D):
        t.check("%s shows client B its new choice once its listener is back (its notice was lost)" % b.name,
                shows(b, KEY_B, SDXL, 15), (shown(b, KEY_B), b.log_tail(6)))
    print("# the choice whose notice was lost seen on B, C and D after %.3f s" % (time.monotonic() - t0))

    # ---- hostile notices, straight into the channel
    before = {n: shown(b, KEY_A) for n, b in bals.items()}
    bad = [
        {"k": "options", "from": "x", "client": "c" * 200, "checkpoint": "sd_xl_base_1.0"},
        {"k": "options", "from": "x", "client": "key:short", "checkpoint": "n" * 300},
        {"k": "options", "from": "x", "client": 7, "checkpoint": ["sd_xl_base_1.0"]},
        {"k": "options", "from": "x"},
    ]
    for n in bad:
        pg.query(url, "SELECT pg_notify('sdgate', '%s')" % json.dumps(n).replace("'", "''"))
    pg.query(url, "SELECT pg_notify('sdgate', 'not json at all {')")
    time.sleep(1.0)
    t.check("options notices past the bounds or of the wrong types stop no balancer",
            all(b.running() for b in bals.values()), {n: b.running() for n, b in bals.items()})
    t.check("... and change no client's choice", {n: shown(b, KEY_A) for n, b in bals.items()} == before, before)
    for b in bals.values():
        b.stop()


def on_sqlite(common, record):
    db = os.path.join(t.tmpdir("options-sqlite"), "balancer.db")
    bal = t.start_balancer(*common, name="sqlite", db=db)
    t.check("the SQLite balancer sees both backends", t.wait_idle_backends(bal.url, 2, 30), t.board(bal.url))
    r = post_options(bal, KEY_A, "sd_xl_base_1.0")
    t.check("SQLite: client A posts sd_xl_base_1.0: 200", r.status == 200, t.describe(r))
    r = post_options(bal, KEY_B, NATIVE_MODEL)
    t.check("SQLite: client B posts the native checkpoint: 200", r.status == 200, t.describe(r))
    t.check("... their rows are in the file", t.wait_until(
        lambda: t.db_query(db, "SELECT count(*) FROM client_options")[0][0] == 2, 5))
    bal.stop()
    bal = t.start_balancer(*common, name="sqlite-again", db=db)
    t.check("the restarted balancer sees both backends", t.wait_idle_backends(bal.url, 2, 30), t.board(bal.url))
    t.check("SQLite, restarted: client B's choice is kept", shown(bal, KEY_B) == NATIVE_MODEL, shown(bal, KEY_B))
    r, prov, got = txt2img_reached(bal, KEY_A, record, 80)
    t.check("... and its txt2img runs on the A1111 with it",
            r.status == 200 and prov == "a1111" and got == "sd_xl_base_1.0", (t.describe(r), prov, got))
    bal.stop()


def main():
    record = os.path.join(t.tmpdir("cluster-options"), "a1111.jsonl")
    a1111 = a1111_standin.serve(0, step_ms=5, load_ms=20, record=record)
    a_url = "http://127.0.0.1:%d" % a1111.server_address[1]
    be = t.start_backend("--pace-ms-per-step", 20, "--provider", "native", "--gpu-class", "a100")
    common = ["--backend", be.url + "#provider=native&gpu_class=a100",
              "--backend", a_url + "#provider=a1111&gpu_class=rtx4090"]
    pg = t.start_postgres()
    try:
        on_one_database(pg, common, record)
    finally:
        pg.close()
    on_sqlite(common, record)
    be.stop()
    a1111.shutdown()


if __name__ == "__main__":
    t.run(main)
