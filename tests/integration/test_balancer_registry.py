"""test_balancer_registry.py — providers joining and leaving: POST
/v1/backends needs the provider token (401 without or with a wrong one, 403
when the balancer has none, 422 on a bad body); a registration with the right
token shows on the public board GET /v1/backends with its identity; heartbeats
keep it; a backend that stops heartbeating (SIGSTOP, SIGKILL, or a manual
registration that never heartbeats) is dropped after about three
--heartbeat-interval; sdgate-backend --balancer --token registers itself,
runs jobs, and registers again after it was dropped. Heartbeats and DELETE
need the registration's own secret (401 without, 403 with another token);
the same URL cannot be registered twice (409). Ctrl-C of the whole
marketplace at once (SIGINT to the balancer and its registered backends while
jobs run: the backends deregister while the balancer shuts down) ends every
program with code 0.
Contract: ../../docs/jobs-api.md "Providers"."""

import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sdtest as t  # noqa: E402

TOKEN = "provider-secret-1"
HB = 1  # --heartbeat-interval seconds: dropped after ~3 s without heartbeats
DROP_TIMEOUT = 25  # generous: 3 intervals + scheduling under sanitizers


def reg(bal, body, token=TOKEN, auth=None):
    hdrs = {}
    if auth is not None:
        hdrs["Authorization"] = auth
    elif token is not None:
        hdrs["Authorization"] = "Bearer " + token
    return t.request("POST", bal.url + "/v1/backends", json_body=body, headers=hdrs, timeout=10)


def ids_on_board(bal):
    return [x.get("id") for x in t.board(bal.url) or []]


def check_auth(bal, be):
    body = {"url": be.url, "provider": "manual-prov", "location": "Oslo, NO", "gpu_class": "A100",
            "price_per_hour": 1.25, "country": "NO", "lat": 59.9, "lon": 10.7}
    r = reg(bal, body, token=None)
    t.check("POST /v1/backends without Authorization: 401 unauthorized (sdgate error shape)",
            t.is_sdgate_error(r, 401, "unauthorized"), t.describe(r))
    r = reg(bal, body, token="wrong-token")
    t.check("POST /v1/backends with a wrong token: 401 unauthorized", t.is_sdgate_error(r, 401, "unauthorized"),
            t.describe(r))
    r = reg(bal, body, auth="Basic " + TOKEN)
    t.check("POST /v1/backends with the token but not as Bearer: 401", t.is_sdgate_error(r, 401, "unauthorized"),
            t.describe(r))
    r = reg(bal, body, token=TOKEN + "x")
    t.check("POST /v1/backends with the token plus a suffix: 401", t.is_sdgate_error(r, 401, "unauthorized"),
            t.describe(r))
    t.check("after the refused registrations the board is empty", ids_on_board(bal) == [], t.board(bal.url))

    r = t.request("POST", bal.url + "/v1/backends", raw_body=b"{not json", timeout=10,
                  headers={"Authorization": "Bearer " + TOKEN})
    t.check("registration with malformed JSON: 422 (sdgate shape)", t.is_sdgate_error(r, 422), t.describe(r))
    for what, bad in [("no url", {"provider": "x", "gpu_class": "a100"}),
                      ("a non-http url", {"url": "ftp://127.0.0.1:1", "gpu_class": "a100"}),
                      ("no gpu_class", {"url": be.url, "provider": "x"}),
                      ("a negative price", {"url": be.url, "gpu_class": "a100", "price_per_hour": -1}),
                      ("provider not a string", {"url": be.url, "gpu_class": "a100", "provider": 5}),
                      ("slots 0", {"url": be.url, "gpu_class": "a100", "slots": 0})]:
        r = reg(bal, bad)
        t.check("registration with %s: 422" % what, t.is_sdgate_error(r, 422), t.describe(r))
    t.check("after the bad registrations the board is still empty", ids_on_board(bal) == [], t.board(bal.url))

    r = reg(bal, body)
    ok = t.check("registration with the right token: 201 {id (32 hex), heartbeat_interval_s %d}" % HB,
                 r.status == 201 and isinstance(r.json, dict) and t.is_hex_id(r.json.get("id"))
                 and r.json.get("heartbeat_interval_s") == HB, t.describe(r))
    if not ok:
        return None
    bid = r.json["id"]
    answer = r.json
    brd = t.wait_board(bal.url, lambda bs: any(x.get("id") == bid and x.get("state") == "idle" for x in bs), 20)
    e = t.board_entry(brd, id=bid)
    t.check("the registered backend shows on GET /v1/backends, idle", e is not None and e.get("state") == "idle", brd)
    if e:
        t.check("its board entry carries the registered identity (provider, location, country, lat, lon, "
                "gpu_class lower-cased, price, source registered)",
                e.get("provider") == "manual-prov" and e.get("location") == "Oslo, NO" and e.get("country") == "NO"
                and e.get("gpu_class") == "a100" and e.get("price_per_hour") == 1.25
                and e.get("source") == "registered" and abs((e.get("lat") or 0) - 59.9) < 1e-6
                and abs((e.get("lon") or 0) - 10.7) < 1e-6, e)
        keys = ["id", "provider", "location", "country", "lat", "lon", "gpu", "gpu_class", "simulated", "state",
                "jobs_done", "jobs_failed", "mean_inference_s", "price_per_hour", "models", "slots", "running",
                "source"]
        t.check("the board entry has every documented key", all(k in e for k in keys),
                [k for k in keys if k not in e])
        t.check("the board entry lists the backend's checkpoints (models) and slots 1",
                isinstance(e.get("models"), list) and len(e["models"]) >= 1 and e.get("slots") == 1, e)
    r = t.request("GET", bal.url + "/v1/backends", timeout=10)
    g = r.json.get("gpus") if isinstance(r.json, dict) else None
    t.check("GET /v1/backends has gpus: [{class a100, idle 1, busy 0, down 0}]",
            isinstance(g, list) and {"class": "a100", "idle": 1, "busy": 0, "down": 0} in
            [{k: x.get(k) for k in ("class", "idle", "busy", "down")} for x in g], g)

    secret = answer.get("secret") or ""
    t.check("the registration answer carries its secret and the backend's token (64 hex each, different)",
            t.is_hex_id(secret, 64) and t.is_hex_id(answer.get("backend_token"), 64)
            and secret != answer.get("backend_token"), answer)

    def beat(token):
        hdrs = {"Authorization": "Bearer " + token} if token else {}
        return t.request("POST", bal.url + "/v1/backends/%s/heartbeat" % bid, headers=hdrs, timeout=10)
    hb = beat(secret)
    t.check("heartbeat with the registration's secret: 200 {id}", hb.status == 200 and isinstance(hb.json, dict)
            and hb.json.get("id") == bid, t.describe(hb))
    hb = beat("nope")
    t.check("heartbeat with a wrong secret: 403 forbidden", t.is_sdgate_error(hb, 403, "forbidden"), t.describe(hb))
    hb = beat(TOKEN)
    t.check("heartbeat with the provider token (not the registration's secret): 403 forbidden",
            t.is_sdgate_error(hb, 403, "forbidden"), t.describe(hb))
    hb = beat(None)
    t.check("heartbeat without Authorization: 401 unauthorized", t.is_sdgate_error(hb, 401, "unauthorized"),
            t.describe(hb))
    hb = t.request("POST", bal.url + "/v1/backends/%s/heartbeat" % ("f" * 32),
                   headers={"Authorization": "Bearer " + secret}, timeout=10)
    t.check("heartbeat for an unknown id: 404", t.is_sdgate_error(hb, 404), t.describe(hb))
    d = t.request("DELETE", bal.url + "/v1/backends/%s" % bid, timeout=10)
    t.check("DELETE /v1/backends/{id} without the secret: 401", t.is_sdgate_error(d, 401), t.describe(d))
    d = t.request("DELETE", bal.url + "/v1/backends/%s" % bid, headers={"Authorization": "Bearer " + TOKEN},
                  timeout=10)
    t.check("DELETE /v1/backends/{id} with the provider token: 403", t.is_sdgate_error(d, 403, "forbidden"),
            t.describe(d))
    t.check("... and the backend is still on the board", bid in ids_on_board(bal), ids_on_board(bal))

    # The same URL cannot be registered again while the registration lives.
    r2 = reg(bal, dict(body, provider="manual-prov-2"))
    t.check("registering the same URL again under another name: 409 url_taken (field url)",
            t.is_sdgate_error(r2, 409, "url_taken") and r2.json["error"].get("field") == "url", t.describe(r2))
    r2 = reg(bal, dict(body, url=body["url"] + "/"))
    t.check("... and under the same name (shared token: names are not proof): 409",
            r2.status == 409, t.describe(r2))
    brd = t.board(bal.url) or []
    t.check("the board still has the first registration only", [x.get("id") for x in brd] == [bid], brd)
    return bid


def check_expiry_manual(bal, bid):
    """A manual registration that never heartbeats is dropped."""
    gone = t.wait_until(lambda: bid not in ids_on_board(bal), DROP_TIMEOUT, 0.2)
    t.check("a registration that never heartbeats is dropped from the board (~3 x %d s)" % HB, gone,
            t.board(bal.url))
    hb = t.request("POST", bal.url + "/v1/backends/%s/heartbeat" % bid, headers={"Authorization": "Bearer " + TOKEN},
                   timeout=10)
    t.check("a heartbeat after the drop: 404 (the backend must register again)", hb.status == 404, t.describe(hb))


def check_self_registration(bal):
    be = t.start_backend("--provider", "self-prov", "--location", "Lyon, FR", "--gpu-class", "l40s",
                         "--price-per-hour", "0.9", "--balancer", bal.url, "--token", TOKEN, name="backend-self")
    brd = t.wait_board(bal.url, lambda bs: any(x.get("provider") == "self-prov" and x.get("state") == "idle"
                                               for x in bs), 20)
    e = t.board_entry(brd, provider="self-prov")
    ok = t.check("sdgate-backend --balancer --token registers itself and shows idle on the board",
                 e is not None and e.get("state") == "idle", brd)
    if not ok:
        return
    t.check("its entry: location Lyon, FR, gpu_class l40s, price 0.9, source registered",
            e.get("location") == "Lyon, FR" and e.get("gpu_class") == "l40s" and e.get("price_per_hour") == 0.9
            and e.get("source") == "registered", e)
    r = t.submit_job(bal.url, t.small_job(seed=12))
    d = t.wait_job(bal.url, r.json["id"], timeout=30) if r.status == 202 and isinstance(r.json, dict) else None
    t.check("a job runs on the self-registered backend (done, provider self-prov, gpu l40s)",
            d is not None and d.get("status") == "done" and d.get("provider") == "self-prov" and d.get("gpu") == "l40s",
            d and {k: v for k, v in d.items() if k != "result"})
    first_id = e.get("id")

    # SIGSTOP: no heartbeats → dropped; SIGCONT: it registers again.
    be.signal(signal.SIGSTOP)
    try:
        gone = t.wait_until(lambda: first_id not in ids_on_board(bal), DROP_TIMEOUT, 0.2)
        t.check("a SIGSTOPped backend disappears from GET /v1/backends (missed heartbeats)", gone, t.board(bal.url))
        r = t.submit_job(bal.url, t.small_job(seed=13, gpus=["l40s"]))
        t.check("with it gone, a job for gpus [l40s] fails at once: 503 no_backend",
                t.is_sdgate_error(r, 503, "no_backend"), t.describe(r))
    finally:
        be.signal(signal.SIGCONT)
    back = t.wait_board(bal.url, lambda bs: any(x.get("provider") == "self-prov" and x.get("state") == "idle"
                                                for x in bs), DROP_TIMEOUT)
    t.check("after SIGCONT it registers again (heartbeat 404 → register) and shows idle",
            t.board_entry(back, provider="self-prov") is not None, back)

    # SIGKILL: dropped too.
    e = t.board_entry(t.board(bal.url), provider="self-prov")
    be.kill()
    gone = t.wait_until(lambda: not any(x.get("provider") == "self-prov" for x in t.board(bal.url) or []),
                        DROP_TIMEOUT, 0.2)
    t.check("a SIGKILLed registered backend disappears from the board", gone, t.board(bal.url))

    # A clean stop deregisters at once (DELETE): the board loses it.
    be2 = t.start_backend("--provider", "clean-prov", "--gpu-class", "v100", "--balancer", bal.url, "--token",
                          TOKEN, name="backend-clean")
    seen = t.wait_board(bal.url, lambda bs: any(x.get("provider") == "clean-prov" for x in bs), 20)
    t.check("a second self-registering backend shows on the board", t.board_entry(seen, provider="clean-prov"), seen)
    # Also a check on sdgate-backend: a clean exit while the balancer holds
    # keep-alive connections to it (from its probes), as in every deployment.
    be2.stop(label="a registered backend exits 0 on SIGTERM while the balancer holds keep-alive connections to it")
    gone = t.wait_until(lambda: not any(x.get("provider") == "clean-prov" for x in t.board(bal.url) or []), 10, 0.1)
    t.check("after its SIGTERM (which sends DELETE /v1/backends/{id}) it is gone from the board", gone,
            t.board(bal.url))


def check_wrong_token_backend(bal):
    be = t.start_backend("--provider", "intruder", "--gpu-class", "h100", "--balancer", bal.url, "--token",
                         "not-the-token-0123456", name="backend-intruder")
    refused = t.wait_until(lambda: "401" in be.log_tail(100), 20, 0.1)
    t.check("a backend with a wrong --token is refused (its log shows HTTP 401)", refused, be.log_tail(10))
    t.check("... and never shows on the board", not any(x.get("provider") == "intruder"
                                                        for x in t.board(bal.url) or []), t.board(bal.url))
    be.stop()


def check_registration_disabled(be):
    bal = t.start_balancer(name="balancer-notoken")
    r = reg(bal, {"url": be.url, "gpu_class": "a100"})
    t.check("a balancer without --provider-token refuses registrations: 403 registration_disabled",
            t.is_sdgate_error(r, 403, "registration_disabled"), t.describe(r))
    r = reg(bal, {"url": be.url, "gpu_class": "a100"}, token=None)
    t.check("... also without Authorization (403 or 401, never 201)", r.status in (401, 403), t.describe(r))
    t.check("... and its board stays empty", ids_on_board(bal) == [], t.board(bal.url))
    bal.stop()


def check_ctrl_c_together():
    """SIGINT to everything at once, as a terminal's Ctrl-C does to run-local.sh's
    processes: the backends' deregistrations reach a balancer that is shutting
    down (it once used its freed HTTP client then and crashed)."""
    bal = t.start_balancer("--provider-token", TOKEN, "--heartbeat-interval", 5, name="balancer-ctrl-c")
    bes = [t.start_backend("--pace-ms-per-step", 40, "--balancer", bal.url, "--token", TOKEN, "--provider",
                           "ctrl-c-%d" % i, name="backend-ctrl-c-%d" % i) for i in range(2)]
    t.check("two backends registered for the Ctrl-C check", t.wait_idle_backends(bal.url, 2, 30), t.board(bal.url))
    for i in range(12):
        t.submit_job(bal.url, t.small_job(steps=10, width=128, height=128, seed=i))
    facades = [t.Background(t.txt2img, bal.url, t.small_job(steps=10, width=128, height=128), 30) for _ in range(3)]
    t.wait_until(lambda: t.metric(t.metrics(bal.url), "sdgate_jobs_running", 0) >= 2, 10)
    for p in [bal] + bes:
        p.signal(signal.SIGINT)
    for p in [bal] + bes:
        try:
            rc = p.proc.wait(15)
        except Exception:  # noqa: BLE001 - reported below
            rc = None
        p.stopped = True
        t.check("Ctrl-C of all at once: %s exits with code 0" % p.name, rc == 0, "exit code %r; log:\n%s"
                % (rc, p.log_tail(20)))
    for f in facades:
        f.join(30)


def main():
    check_ctrl_c_together()
    target = t.start_backend("--provider", "target", name="backend-target")
    bal = t.start_balancer("--provider-token", TOKEN, "--heartbeat-interval", HB, "--health-interval-ms", 200)
    bid = check_auth(bal, target)
    if bid:
        check_expiry_manual(bal, bid)
    check_wrong_token_backend(bal)
    check_self_registration(bal)
    check_registration_disabled(target)


if __name__ == "__main__":
    t.run(main)
