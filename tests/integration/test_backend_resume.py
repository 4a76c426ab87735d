#!/usr/bin/env python3
"""test_backend_resume.py — a registered backend restarted after a crash is
back at once (sdgate-backend --registration-file, docs/operators.md
"Restarts"):
- after registering, the backend keeps {balancer, id, secret, backend_token,
  heartbeat_interval_s, registered_as (SHA-256 of its registration)} in the
  file, mode 0600;
- killed with -9 and restarted on the same file, it takes its registration up
  again: the board shows the same id, idle, and a job sent right away is done
  on it (the balancer's calls carry the old backend_token); the time is
  printed. Without the file the old registration holds the provider's name
  for 3 heartbeat intervals, the restarted backend refuses the balancer's
  calls (401) and comes back under a new id only after that;
- its heartbeats keep that registration past the expiry window (no "registering
  again" in its log);
- restarted with another identity (here --location), it ends the file's
  registration with its secret and registers anew at once;
- a clean stop deregisters and removes the file;
- a file the balancer no longer knows (404 to the heartbeat), a damaged one
  (not JSON, over 4096 bytes, an id that is not an id, a secret too short)
  and one for another balancer are not used: the backend registers anew (a
  new id), rewrites the file and logs why.
Contract: ../../docs/operators.md, ../../docs/security.md, ../../README.md."""

import json
import os
import stat
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sdtest as t  # noqa: E402

TOKEN = "resume-provider-token-0123456789"
HB = 3  # --heartbeat-interval: a registration expires after 3 missed ones (9 s)
PROVIDER = "Resume Co"
JOB = {"prompt": "a red circle", "steps": 4, "width": 64, "height": 64, "seed": 7}
KEYS = {"balancer", "id", "secret", "backend_token", "heartbeat_interval_s", "registered_as"}


def start(bal, port, path, label, *extra):
    return t.start_backend("--provider", PROVIDER, "--gpu-class", "a100", "--balancer", bal.url,
                           "--registration-file", path, *extra, name=label, port=port, env={"SDGATE_TOKEN": TOKEN})


def mine(bal):
    """This provider's board entries."""
    return [x for x in t.board(bal.url) or [] if x.get("provider") == PROVIDER]


def registered(bal, path):
    """The board entry, idle, whose id the file names (None if not yet)."""
    reg = t.read_registration(path) or {}
    es = mine(bal)
    return es[0] if len(es) == 1 and es[0].get("id") == reg.get("id") and es[0].get("state") == "idle" else None


def run_job(bal):
    r = t.submit_job(bal.url, JOB, timeout=10)
    doc = t.wait_job(bal.url, r.json.get("id"), timeout=30) if r.status == 202 and isinstance(r.json, dict) else None
    return doc or {"status": "not accepted: %s" % t.describe(r)}


def write(path, data):
    with open(path, "wb") as f:
        f.write(data)
    os.chmod(path, 0o600)


def check_file(path, bal, label):
    reg = t.read_registration(path)
    mode = stat.S_IMODE(os.stat(path).st_mode) if os.path.exists(path) else None
    t.check("%s: the registration file is mode 0600 and holds %s for this balancer" % (label, sorted(KEYS)),
            mode == 0o600 and reg is not None and set(reg) == KEYS and reg.get("balancer") == bal.url
            and reg.get("heartbeat_interval_s") == HB, (oct(mode or 0), reg))
    return reg or {}


def main():
    bal = t.start_balancer("--provider-token", TOKEN, "--heartbeat-interval", HB, "--health-interval-ms", 200)
    path = os.path.join(t.tmpdir("resume"), "registration.json")
    port = t.free_port()

    be = start(bal, port, path, "backend")
    entry = t.wait_until(lambda: registered(bal, path), 20)
    t.check("the backend registers and its file names its board entry", entry, mine(bal))
    reg = check_file(path, bal, "registered")
    old = dict(reg)
    with open(path, "rb") as f:
        old_bytes = f.read()
    r = t.request("GET", be.url + "/sdapi/v1/progress?skip_current_image=true", timeout=10)
    t.check("its progress answers 401 without the balancer's token and 200 with the file's backend_token",
            r.status == 401 and t.backend_progress(be) is not None, t.describe(r))

    # kill -9 and restart on the same file: back under the same id at once.
    be.kill()
    t_kill = time.monotonic()
    t0 = time.monotonic()
    be = start(bal, port, path, "backend-2")
    t_up = time.monotonic() - t0
    doc = run_job(bal)
    t_back = time.monotonic() - t0
    es = mine(bal)
    print("# restarted after kill -9: answering after %.2f s, first job done after %.2f s (heartbeat interval %d s; "
          "without the file: about %d s)" % (t_up, t_back, HB, 3 * HB))
    t.check("after kill -9 and a restart the board shows the same id, and a job sent at once is done on it",
            doc.get("status") == "done" and [e.get("id") for e in es] == [old.get("id")],
            (doc.get("status"), doc.get("error"), es))
    t.check("back within %d s (%.2f s), before the old registration could expire (%d s)" % (2 * HB, t_back, 3 * HB),
            doc.get("status") == "done" and t_back < 2 * HB, (doc.get("status"), t_back))
    t.check("the file is unchanged after the restart", t.read_registration(path) == old, t.read_registration(path))

    # Past the expiry window its heartbeats still hold the registration.
    time.sleep(max(0.0, t_kill + 3 * HB + 1.5 - time.monotonic()))
    es = mine(bal)
    t.check("%d s after the kill the same registration is on the board, idle, kept by heartbeats"
            % (3 * HB + 1.5), [(e.get("id"), e.get("state")) for e in es] == [(old.get("id"), "idle")], es)
    t.check("the resumed backend never had to register again", "registering again" not in be.log_tail(200)
            and "registered with" not in be.log_tail(200), be.log_tail(20))

    # Restarted with another identity: the old registration is ended with
    # its secret and a new one made at once (no 409 name_taken wait).
    be.kill()
    t0 = time.monotonic()
    be = start(bal, port, path, "backend-moved", "--location", "Elsewhere")
    entry = t.wait_until(lambda: registered(bal, path), 20)
    took = time.monotonic() - t0
    print("# restarted with another --location: registered anew after %.2f s" % took)
    t.check("restarted with another identity: the old registration is ended and a new one shows it at once (%.2f s)"
            % took, entry and entry.get("id") != old.get("id") and entry.get("location") == "Elsewhere"
            and took < 2 * HB and "ending it and registering anew" in be.log_tail(200), (mine(bal), be.log_tail(8)))
    check_file(path, bal, "re-registered")

    # A clean stop deregisters and removes the file.
    be.stop()
    t.check("a clean stop deregisters (off the board) and removes the file",
            not mine(bal) and not os.path.exists(path), (mine(bal), os.path.exists(path)))

    # Files that cannot be taken up: the backend registers anew.
    bad = [
        ("a registration the balancer forgot (404 to the heartbeat)", old_bytes, "HTTP 404, registering again"),
        ("not JSON", b'{"balancer": "' + bal.url.encode() + b'", "id": "ab', "ignored: not a JSON object"),
        ("over 4096 bytes", json.dumps(old).encode() + b" " * 4096, "ignored: bigger than 4096 bytes"),
        ("an id that is not an id", json.dumps(dict(old, id="../../v1/jobs")).encode(), 'ignored: no valid "id"'),
        ("a secret too short", json.dumps(dict(old, secret="short")).encode(), 'ignored: no valid "secret"'),
        ("another balancer's", json.dumps(dict(old, balancer="http://127.0.0.1:9")).encode(), "registering anew"),
    ]
    ids = {old.get("id")}
    for i, (what, data, logged) in enumerate(bad):
        write(path, data)
        t0 = time.monotonic()
        be = start(bal, port, path, "backend-bad-%d" % i)
        entry = t.wait_until(lambda: registered(bal, path), 20)
        took = time.monotonic() - t0
        reg = check_file(path, bal, what)
        print("# %s: registered anew after %.2f s" % (what, took))
        t.check("%s: the backend registers anew (a new id) and rewrites the file; its log says why (%r)"
                % (what, logged), entry and reg.get("id") not in ids and logged in be.log_tail(200),
                (mine(bal), reg.get("id"), be.log_tail(8)))
        ids.add(reg.get("id"))
        be.stop()


t.run(main)
