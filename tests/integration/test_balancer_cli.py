"""test_balancer_cli.py — sdgate-balancer's command line: --help lists every
documented flag, --version, refusals (unknown flag, bad number, bad
--listen, unusable --db, bad --config) exit non-zero with a message and no
crash; --config FILE (JSON, '-' or '_' keys) with flags overriding it;
--log-level; a clean exit on SIGINT.
Contract: ../../balancer/README.md "Flags", ../../docs/architecture.md "The
programs" (flags, logs, shutdown every program shares)."""

import json
import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sdtest as t  # noqa: E402

FLAGS = ["--listen", "--db", "--backend", "--provider-token", "--provider-tokens", "--allow-private-backends",
         "--admin-token", "--api-auth", "--max-queue",
         "--max-queue-per-client", "--max-attempts", "--heartbeat-interval", "--health-interval-ms",
         "--job-timeout-factor", "--min-job-timeout-s", "--progress-interval-ms", "--result-ttl", "--log-level",
         "--config", "--help", "--version"]


def no_crash(code, err):
    return code is not None and code > 0 and "Sanitizer" not in err and "Assertion" not in err


def main():
    exe = t.balancer_path()
    code, out, err = t.run_tool([exe, "--help"])
    t.check("--help exits 0", code == 0, (code, err[-300:]))
    missing = [f for f in FLAGS if f not in out]
    t.check("--help lists every documented flag", not missing, missing)
    code, out, err = t.run_tool([exe, "--version"])
    t.check("--version exits 0 and prints a version", code == 0 and any(c.isdigit() for c in out), (code, out))

    d = t.tmpdir("cli")
    db = os.path.join(d, "x.db")
    for what, args in [("an unknown flag", ["--no-such-flag"]),
                       ("--max-queue abc", ["--max-queue", "abc"]),
                       ("--max-queue -5", ["--max-queue", "-5"]),
                       ("--listen nonsense", ["--listen", "not a listen spec"]),
                       ("--db in a missing directory", ["--db", "/nonexistent-sdgate-dir/sub/x.db"]),
                       ("--config of a missing file", ["--config", os.path.join(d, "missing.json")])]:
        full = [exe] + args
        if "--listen" not in args:
            full += ["--listen", "127.0.0.1:%d" % t.free_port()]
        if "--db" not in args:
            full += ["--db", db]
        try:
            code, out, err = t.run_tool(full, timeout=30)
        except Exception as e:  # noqa: BLE001 - a timeout means it started instead of refusing
            code, out, err = None, "", repr(e)
        t.check("%s: refused with a non-zero exit and a message, no crash" % what,
                no_crash(code, err) and (err.strip() or out.strip()), (code, err[-300:]))
    bad = os.path.join(d, "bad.json")
    with open(bad, "w") as f:
        f.write('{"max-queue": ')
    code, out, err = t.run_tool([exe, "--config", bad, "--listen", "127.0.0.1:%d" % t.free_port(), "--db", db],
                                timeout=30)
    t.check("--config with malformed JSON: refused, no crash", no_crash(code, err), (code, err[-300:]))

    # A config file, with a flag overriding one of its keys.
    be = t.start_backend("--provider", "cli-real", "--gpu-class", "a100")
    cfg = os.path.join(d, "balancer.json")
    with open(cfg, "w") as f:
        json.dump({"backend": [t.static_backend_arg(be.url, provider="cfg-prov", gpu_class="a6000")],
                   "provider-token": "from-config-token-1", "admin_token": "adm-from-config-token", "max_queue": 50,
                   "log-level": "warn"}, f)
    bal = t.start_balancer("--config", cfg, "--provider-token", "from-flag-token-12", name="balancer-config")
    brd = t.wait_board(bal.url, lambda bs: any(x.get("provider") == "cfg-prov" and x.get("state") == "idle"
                                               for x in bs), 20)
    t.check("--config FILE: its backend list (with fragment identity) is used",
            t.board_entry(brd, provider="cfg-prov", gpu_class="a6000") is not None, brd)
    body = {"url": "http://127.0.0.1:9", "gpu_class": "a100"}
    r = t.request("POST", bal.url + "/v1/backends", json_body=body, headers={"Authorization": "Bearer from-config-token-1"},
                  timeout=10)
    t.check("a flag overrides the config file: the config's provider token is refused (401)", r.status == 401,
            t.describe(r))
    r = t.request("POST", bal.url + "/v1/backends", json_body=body, headers={"Authorization": "Bearer from-flag-token-12"},
                  timeout=10)
    t.check("... and the flag's token is accepted (201)", r.status == 201, t.describe(r))
    r = t.submit_job(bal.url, t.small_job())
    dd = t.wait_job(bal.url, r.json["id"], timeout=30) if r.status == 202 and isinstance(r.json, dict) else None
    t.check("a job runs on the configured backend", dd is not None and dd.get("status") == "done"
            and dd.get("provider") == "cfg-prov", dd and dd.get("status"))
    t.check("log-level warn from the config: no INFO lines in the log", " INFO " not in bal.log_tail(200),
            bal.log_tail(5))

    # --result-ttl: a finished job is forgotten after it.
    bal_ttl = t.start_balancer("--result-ttl", 1, "--backend", be.url, name="balancer-ttl")
    t.wait_idle_backends(bal_ttl.url, 1)
    r = t.submit_job(bal_ttl.url, t.small_job(seed=3))
    jid = r.json.get("id") if r.status == 202 and isinstance(r.json, dict) else None
    dd = t.wait_job(bal_ttl.url, jid, timeout=30) if jid else None
    t.check("[result-ttl 1] the job is done", dd is not None and dd.get("status") == "done", dd and dd.get("status"))
    # The balancer sweeps expired results now and then (every 60 s at the
    # time of writing, too slow to wait for here) and at start: let the TTL
    # pass, then restart on the same --db.
    time.sleep(1.5)
    bal_ttl.stop()
    bal_ttl = t.start_balancer("--result-ttl", 1, "--backend", be.url, name="balancer-ttl-2", db=bal_ttl.db)
    gone = t.wait_until(lambda: t.request("GET", bal_ttl.url + "/v1/jobs/" + jid, timeout=10).status == 404, 10, 0.2)
    t.check("[result-ttl 1] a job finished more than its result TTL ago is gone (404) after a restart",
            gone and jid, t.describe(t.request("GET", bal_ttl.url + "/v1/jobs/%s" % jid, timeout=10)))
    bal_ttl.stop()

    # SIGINT is a clean shutdown too.
    bal.signal(signal.SIGINT)
    try:
        rc = bal.proc.wait(10)
    except Exception:  # noqa: BLE001
        rc = None
    bal.kill()
    t.check("SIGINT: exit code 0 within 10 s", rc == 0, (rc, bal.log_tail(10)))


if __name__ == "__main__":
    t.run(main)
