"""test_provider_auth.py — providers cannot touch each other's backends, and
outsiders cannot touch a provider's backend (issue 10, findings 8-10):
- each registration has its own secret: provider B cannot heartbeat or
  deregister A's backend (403; 401 without a token), cannot take A's URL or a
  static backend's URL (409 url_taken), nor A's name under the shared token
  (409 name_taken), and registers under its own name with its own token
  (--provider-tokens); a named token registers only under its name (403);
- registration URLs with userinfo, query, fragment, a private address (without
  --allow-private-backends) or the balancer's own address are refused (422,
  field url); a DNS name that resolves to a private address is dropped at its
  first probe; registering the balancer under another name for itself, or
  another balancer, is dropped at its first probe and cannot multiply a job;
- a registered backend (native and --upstream) answers txt2img, progress,
  interrupt, skip and POST options only to its balancer (401 for others) while
  the balancer's jobs run on it;
- a static backend's self-reported price never shows, a static URL's
  userinfo never shows on the board; registrations past 16 KiB get 413;
- tokens: CHANGE_ME and short ones are refused at start; a token from a file
  or the environment works and is not in /proc/<pid>/cmdline; one on the
  command line works with a warning.
Contract: ../../docs/security.md, ../../docs/jobs-api.md "Providers"."""

import os
import socket
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sdtest as t  # noqa: E402

SHARED = "shared-provider-token-0123456789"
ALICE = "alice-token-0123456789abcdef"
BOB = "bob-token-0123456789abcdef0123"


def reg(bal, body, token):
    hdrs = {"Authorization": "Bearer " + token} if token else {}
    return t.request("POST", bal.url + "/v1/backends", json_body=body, headers=hdrs, timeout=10)


def call(bal, method, bid, token):
    hdrs = {"Authorization": "Bearer " + token} if token else {}
    path = "/v1/backends/%s%s" % (bid, "/heartbeat" if method == "POST" else "")
    return t.request(method, bal.url + path, headers=hdrs, timeout=10)


def field_of(r):
    return r.json.get("error", {}).get("field") if isinstance(r.json, dict) else None


def ids_on_board(bal):
    return [x.get("id") for x in t.board(bal.url) or []]


def write_file(text):
    path = os.path.join(t.tmpdir("tokens"), "token")
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, 0o600)
    return path


def cmdline(prog):
    with open("/proc/%d/cmdline" % prog.proc.pid, "rb") as f:
        return f.read().decode("utf-8", "replace")


def check_providers(bal, na, static_url):
    """Findings 8: ids, names and URLs belong to their registration."""
    ra = reg(bal, {"url": na.url, "gpu_class": "a100"}, ALICE)
    t.check("alice registers a backend with her named token: 201, provider alice",
            ra.status == 201 and ra.json.get("provider") == "alice", t.describe(ra))
    if ra.status != 201 or not isinstance(ra.json, dict):
        return
    a_id, a_secret = ra.json.get("id"), ra.json.get("secret") or "none"
    r = reg(bal, {"url": "http://127.0.0.1:9", "gpu_class": "a100", "provider": "mallory"}, ALICE)
    t.check("alice's token under another name: 403 forbidden (field provider)",
            t.is_sdgate_error(r, 403, "forbidden") and field_of(r) == "provider", t.describe(r))
    for who, tok in (("bob's provider token", BOB), ("the shared token", SHARED), ("alice's provider token", ALICE)):
        r = call(bal, "POST", a_id, tok)
        t.check("heartbeat of alice's backend with %s: 403 forbidden" % who, t.is_sdgate_error(r, 403, "forbidden"),
                t.describe(r))
        r = call(bal, "DELETE", a_id, tok)
        t.check("DELETE of alice's backend with %s: 403 forbidden" % who, t.is_sdgate_error(r, 403, "forbidden"),
                t.describe(r))
    r = call(bal, "DELETE", a_id, None)
    t.check("DELETE of alice's backend without a token: 401", t.is_sdgate_error(r, 401, "unauthorized"),
            t.describe(r))
    t.check("alice's backend is still on the board", a_id in ids_on_board(bal), ids_on_board(bal))
    r = reg(bal, {"url": na.url + "/", "gpu_class": "h100"}, BOB)
    t.check("bob registers alice's URL: 409 url_taken (field url)",
            t.is_sdgate_error(r, 409, "url_taken") and field_of(r) == "url", t.describe(r))
    r = reg(bal, {"url": static_url, "gpu_class": "h100"}, BOB)
    t.check("bob registers a static backend's URL: 409 url_taken", t.is_sdgate_error(r, 409, "url_taken"),
            t.describe(r))
    r = reg(bal, {"url": "http://127.0.0.1:11", "gpu_class": "h100", "provider": "carol"}, SHARED)
    t.check("carol registers under the shared token: 201", r.status == 201, t.describe(r))
    r = reg(bal, {"url": "http://127.0.0.1:12", "gpu_class": "h100", "provider": "carol"}, SHARED)
    t.check("another shared-token registration named carol: 409 name_taken (field provider)",
            t.is_sdgate_error(r, 409, "name_taken") and field_of(r) == "provider", t.describe(r))
    r = reg(bal, {"url": "http://127.0.0.1:13", "gpu_class": "h100", "provider": "alice"}, SHARED)
    t.check("a shared-token registration named alice (a named provider): 409 name_taken",
            t.is_sdgate_error(r, 409, "name_taken"), t.describe(r))
    r = reg(bal, {"url": "http://127.0.0.1:14", "gpu_class": "h100"}, BOB)
    t.check("bob registers his own backend under his name: 201, provider bob",
            r.status == 201 and r.json.get("provider") == "bob", t.describe(r))
    r = reg(bal, {"url": "http://127.0.0.1:15", "gpu_class": "h100"}, ALICE)
    t.check("alice registers a second backend under her name: 201", r.status == 201, t.describe(r))
    r = reg(bal, {"url": na.url, "gpu_class": "a100", "location": "moved"}, ALICE)
    t.check("alice registers her first URL again: 201, a new id replaces the old one",
            r.status == 201 and r.json.get("id") != a_id and a_id not in ids_on_board(bal), t.describe(r))
    new_id = r.json.get("id") if isinstance(r.json, dict) else None
    new_secret = (r.json.get("secret") if isinstance(r.json, dict) else None) or "none"
    r = call(bal, "POST", a_id, a_secret)
    t.check("the replaced registration's secret no longer heartbeats (404)", r.status == 404, t.describe(r))
    r = call(bal, "POST", new_id, new_secret)
    t.check("the new registration's secret heartbeats: 200", r.status == 200, t.describe(r))
    r = call(bal, "DELETE", new_id, new_secret)
    t.check("alice deregisters with her registration's secret: 200, gone from the board",
            r.status == 200 and new_id not in ids_on_board(bal), t.describe(r))

    big = {"url": "http://127.0.0.1:16", "gpu_class": "h100", "location": "x" * 200, "junk": "y" * 20000}
    r = reg(bal, big, SHARED)
    t.check("a 20 KB registration: 413 body_too_large", t.is_sdgate_error(r, 413), t.describe(r))
    r = reg(bal, {"url": "http://127.0.0.1:17", "gpu_class": "h100", "provider": "dave", "models": [1, 2]}, SHARED)
    t.check("a registration with non-string models: 422 (field models)",
            t.is_sdgate_error(r, 422) and field_of(r) == "models", t.describe(r))


def check_self_loop(bal, other):
    """Finding 9: the balancer as its own backend (or another balancer)."""
    r = reg(bal, {"url": other.url, "gpu_class": "chain"}, BOB)
    oid = r.json.get("id") if r.status == 201 and isinstance(r.json, dict) else None
    gone = oid is None or t.wait_until(lambda: oid not in ids_on_board(bal), 15, 0.1)
    t.check("registering another sdgate balancer as a backend: dropped at its first probe (never up)",
            gone and not any(x.get("gpu_class") == "chain" for x in t.board(bal.url) or []),
            (t.describe(r), t.board(bal.url)))
    r = reg(bal, {"url": bal.url, "gpu_class": "loop"}, BOB)
    t.check("registering the balancer's own listen address: 422 (field url)",
            t.is_sdgate_error(r, 422) and field_of(r) == "url", t.describe(r))
    before = t.metric(t.metrics(bal.url), "sdgate_jobs_accepted_total", 0)
    r = reg(bal, {"url": "http://localhost:%d" % bal.port, "gpu_class": "loop"}, BOB)
    t.check("registering the balancer as http://localhost:<port> is accepted at first (201)", r.status == 201,
            t.describe(r))
    lid = r.json.get("id") if isinstance(r.json, dict) else None
    gone = t.wait_until(lambda: lid not in ids_on_board(bal), 15, 0.1)
    t.check("... and dropped at its first probe (the answer carries our X-Sdgate-Instance)", gone, t.board(bal.url))
    j = t.submit_job(bal.url, t.small_job(seed=5, gpus=["loop"]))
    t.wait_until(lambda: False, 2, 0.5)
    after = t.metric(t.metrics(bal.url), "sdgate_jobs_accepted_total", 0)
    print("    jobs accepted by the balancer for one submitted job: %d (status %d)" % (after - before, j.status))
    t.check("one job for the looped class is accepted at most once (no multiplication)", after - before <= 1,
            (before, after, t.describe(j)))


def check_url_rules(bal_strict, na):
    """Finding 9: the URL's shape and its address."""
    host = "127.0.0.1:%d" % na.port
    for what, url in (("userinfo", "http://user:pw@" + host), ("a query", "http://%s/?x=1" % host),
                      ("a fragment", "http://%s/#f" % host), ("loopback", "http://" + host),
                      ("10.0.0.0/8", "http://10.1.2.3:7861"), ("link-local (metadata)", "http://169.254.169.254"),
                      ("IPv6 loopback", "http://[::1]:7861"), ("localhost", "http://localhost:%d" % na.port),
                      ("0.0.0.0", "http://0.0.0.0:7861"), ("an ftp URL", "ftp://example.org/"),
                      ("a short IPv4 loopback (127.1)", "http://127.1:7861"),
                      ("a decimal IPv4 loopback", "http://2130706433:7861"),
                      ("an IPv4-mapped IPv6 loopback", "http://[::ffff:127.0.0.1]:7861"),
                      ("the balancer itself", bal_strict.url)):
        r = reg(bal_strict, {"url": url, "gpu_class": "a100", "provider": "p-" + what}, SHARED)
        t.check("without --allow-private-backends, a URL with %s: 422 (field url)" % what,
                t.is_sdgate_error(r, 422) and field_of(r) == "url", t.describe(r))
    # A DNS name that resolves to a private address passes the literal check;
    # the connection's address does not.
    names = [n for n in (socket.gethostname(), "localhost.localdomain", "ip6-localhost") if n and n != "localhost"]
    private = None
    for n in names:
        try:
            addrs = {a[4][0] for a in socket.getaddrinfo(n, na.port, proto=socket.IPPROTO_TCP)}
        except OSError:
            continue
        if addrs and all(a.startswith("127.") or a == "::1" for a in addrs):
            private = n
            break
    if private is None:
        print("    (no local name resolving to loopback here: the DNS check is skipped)")
        return
    r = reg(bal_strict, {"url": "http://%s:%d" % (private, na.port), "gpu_class": "a100", "provider": "dns"}, SHARED)
    bid = r.json.get("id") if r.status == 201 and isinstance(r.json, dict) else None
    gone = bid is None or t.wait_until(lambda: bid not in ids_on_board(bal_strict), 15, 0.1)
    t.check("a name (%s) resolving to loopback: never up, dropped when the connection's address is seen" % private,
            gone and not any(x.get("state") == "idle" for x in t.board(bal_strict.url) or []),
            (t.describe(r), t.board(bal_strict.url)))


def outsider_refused(be, label):
    calls = [("POST", "/sdapi/v1/txt2img", t.small_job(seed=1)), ("GET", "/sdapi/v1/progress", None),
             ("POST", "/sdapi/v1/interrupt", None), ("POST", "/sdapi/v1/skip", None),
             ("POST", "/sdapi/v1/options", {"sd_model_checkpoint": "x"})]
    for auth in (None, "Bearer " + SHARED):
        for method, path, body in calls:
            hdrs = {"Authorization": auth} if auth else {}
            r = t.request(method, be.url + path, json_body=body, headers=hdrs, timeout=30)
            t.check("%s: an outsider's %s %s (%s): 401 {detail}" % (label, method, path,
                                                                  "with the provider token" if auth else "no token"),
                    r.status == 401 and isinstance(r.json, dict) and isinstance(r.json.get("detail"), str),
                    t.describe(r))
    for path in ("/sdapi/v1/options", "/sdapi/v1/sd-models", "/sdgate/v1/info"):
        r = t.request("GET", be.url + path, timeout=30)
        t.check("%s: GET %s stays open (200)" % (label, path), r.status == 200, t.describe(r))


def check_backend_auth(bal):
    """Finding 10: a registered backend serves its balancer only."""
    token_file = write_file(SHARED + "\n")
    rb = t.start_backend("--provider", "rb", "--gpu-class", "l4", "--balancer", bal.url, "--token-file", token_file,
                         name="backend-registered")
    a = t.start_backend("--provider", "upstream-a1111", name="backend-a1111")
    ub = t.start_backend("--upstream", a.url, "--provider", "ub", "--gpu-class", "t4", "--balancer", bal.url,
                         name="backend-upstream", env={"SDGATE_TOKEN": SHARED})
    up = t.wait_board(bal.url, lambda bs: sum(1 for x in bs if x.get("provider") in ("rb", "ub")
                                              and x.get("state") == "idle") == 2, 30)
    t.check("a native backend (--token-file) and an upstream one (SDGATE_TOKEN) register and are idle",
            sum(1 for x in up if x.get("provider") in ("rb", "ub") and x.get("state") == "idle") == 2, up)
    t.check("the tokens are not in their command lines (/proc/<pid>/cmdline)",
            SHARED not in cmdline(rb) and SHARED not in cmdline(ub), (cmdline(rb), cmdline(ub)))
    outsider_refused(rb, "native")
    outsider_refused(ub, "upstream")
    for cls, prov in (("l4", "rb"), ("t4", "ub")):
        r = t.submit_job(bal.url, t.small_job(seed=7, gpus=[cls]))
        d = t.wait_job(bal.url, r.json["id"], timeout=60) if r.status == 202 and isinstance(r.json, dict) else None
        t.check("the balancer's job runs on %s (%s): done" % (prov, cls),
                d is not None and d.get("status") == "done" and d.get("provider") == prov,
                d and {k: v for k, v in d.items() if k != "result"})
    return rb, ub, a


def check_static_identity(bal, static_be, fake):
    """Low findings: self-reported price, userinfo on the board."""
    brd = t.wait_board(bal.url, lambda bs: any(x.get("provider") == "static-prov" for x in bs), 20)
    e = t.board_entry(brd, provider="static-prov")
    t.check("a static backend's self-reported display fields show (location Static Town)",
            e is not None and e.get("location") == "Static Town", e)
    t.check("a static backend's self-reported price (9.5) does not: price_per_hour 0 on the board",
            e is not None and e.get("price_per_hour") == 0, e)
    text = str(t.board(bal.url))
    e = t.board_entry(t.board(bal.url), provider="127.0.0.1:%d" % fake.port)
    t.check("a static URL's userinfo never shows on the board (provider named host:port)",
            "hunter2" not in text and e is not None, text)


def check_tokens():
    """Low findings: tokens at start."""
    cases = [(t.balancer_path(), ["--provider-token", "CHANGE_ME"], {}, "balancer --provider-token CHANGE_ME"),
             (t.balancer_path(), ["--admin-token", "short-token"], {}, "balancer --admin-token of 11 bytes"),
             (t.balancer_path(), [], {"SDGATE_PROVIDER_TOKEN": "CHANGE_ME"}, "balancer SDGATE_PROVIDER_TOKEN=CHANGE_ME"),
             (t.backend_path(), ["--token", "CHANGE_ME"], {}, "backend --token CHANGE_ME"),
             (t.gateway_path(), ["--admin-token", "CHANGE_ME"], {}, "gateway --admin-token CHANGE_ME")]
    for exe, args, env, label in cases:
        if not os.access(exe, os.X_OK):
            continue
        db = os.path.join(t.tmpdir("tok"), "x.db")
        extra = ["--db", db] if exe == t.balancer_path() else []
        old = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            code, out, err = t.run_tool([exe, "--listen", "127.0.0.1:%d" % t.free_port()] + extra + args, timeout=30)
        finally:
            for k, v in old.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        t.check("%s: refused at start (exit 2, says why)" % label, code == 2 and "refused" in err, (code, err[-300:]))

    for what, text in (("a line without a tab", "alice %s\n" % ALICE), ("a short token", "alice\tshort\n"),
                       ("a name given twice", "alice\t%s\nalice\t%s\n" % (ALICE, BOB))):
        code, out, err = t.run_tool([t.balancer_path(), "--listen", "127.0.0.1:%d" % t.free_port(), "--db",
                                     os.path.join(t.tmpdir("tok"), "x.db"), "--provider-tokens", write_file(text)])
        t.check("a --provider-tokens file with %s: refused at start (exit 2, names the line)" % what,
                code == 2 and "--provider-tokens" in err + out, (code, (err + out)[-300:]))
    bal = t.start_balancer("--allow-private-backends=false", name="balancer-env", env={"SDGATE_PROVIDER_TOKEN": SHARED})
    r = reg(bal, {"url": "http://198.51.100.7:7861", "gpu_class": "a100"}, SHARED)
    t.check("SDGATE_PROVIDER_TOKEN is the provider token (its registration gets past the token: 422 on the "
            "documentation address, not 401)", t.is_sdgate_error(r, 422) and field_of(r) == "url", t.describe(r))
    t.check("... and it is not in the balancer's command line", SHARED not in cmdline(bal), cmdline(bal))
    bal.stop()
    f = write_file(ALICE + "\n")
    bal = t.start_balancer("--provider-token-file", f, "--admin-token", "admin-token-0123456789", name="balancer-file")
    r = reg(bal, {"url": "http://127.0.0.1:9", "gpu_class": "a100"}, ALICE)
    t.check("--provider-token-file FILE: its token registers (201)", r.status == 201, t.describe(r))
    t.check("... and a token on the command line logs a warning (visible in ps)",
            t.wait_until(lambda: "visible" in bal.log_tail(50), 5), bal.log_tail(10))
    bal.stop()


def main():
    check_tokens()
    tokens = write_file("# name<TAB>token\nalice\t%s\nbob\t%s\n" % (ALICE, BOB))
    na = t.start_backend("--provider", "plain", name="backend-plain")
    static_be = t.start_backend("--provider", "static-prov", "--location", "Static Town", "--price-per-hour", "9.5",
                                "--gpu-class", "a6000", name="backend-static")
    fake = t.FakeBackend(provider=None, gpu_class="fakegpu")
    fake_url = "http://user:hunter2@127.0.0.1:%d" % fake.port
    bal = t.start_balancer("--provider-token", SHARED, "--provider-tokens", tokens, "--heartbeat-interval", 5,
                           "--health-interval-ms", 200, "--backend", static_be.url, "--backend", fake_url,
                           name="balancer-providers")
    strict = t.start_balancer("--provider-token", SHARED, "--allow-private-backends=false",
                              "--health-interval-ms", 200, name="balancer-strict")
    check_static_identity(bal, static_be, fake)
    check_providers(bal, na, static_be.url)
    check_url_rules(strict, na)
    check_self_loop(bal, strict)
    check_backend_auth(bal)


if __name__ == "__main__":
    t.run(main)
