#!/usr/bin/env python3
"""deploy/nginx/sdgate.conf for real: Debian's nginx on loopback in front of
two sdgate-gateways and two sdgate-balancers (sharing one backend). A
balancer's own 503 reaches the client as the balancer sent it and does not
take that balancer out: a POST's no_backend from the first balancer, and
GETs that a stand-in first balancer answers 503 shutting_down (with the
backup behind it); NGINX keeps idle connections to a balancer for less time
than the balancer does (it would otherwise reuse one the balancer is
closing). Requests keep succeeding when one balancer and
then one gateway stop: the A1111 façade and /healthz through the balancer
port, the web UI and a websocket job (upgrade through NGINX) through the
gateway port.

Then deploy/nginx/sdgate-postgresql.conf, the active-active variant, in front
of two balancers on one PostgreSQL database and a stand-in that reads each
request and closes the connection without an answer (a balancer that died
holding it): a POST /v1/jobs with an Idempotency-Key that met the stand-in
is passed on and accepted once; one without a key is not (502, no job); a
key replayed through NGINX finds its job; every job is readable and done
through NGINX, also after one balancer is killed (-9)."""

import json
import os
import re
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sdtest as t  # noqa: E402
from wsclient import HandshakeError, WSClient  # noqa: E402

JOB = {"prompt": "a red circle", "steps": 2, "width": 64, "height": 64, "seed": 5}


def facade_ok(url):
    r = t.request("POST", url + "/sdapi/v1/txt2img", json_body=JOB, timeout=60)
    return r.status == 200 and r.is_json and len(r.json.get("images", [])) == 1, t.describe(r)


def ws_job(port, id):
    ws = WSClient("127.0.0.1", port, "/ws", timeout=30)
    try:
        ws.send_json({"type": "hello"})
        if not ws.wait_type("welcome", 20):
            return None
        start = ws.count()
        ws.send_json(dict(JOB, type="generate", id=id, sampler_name="Euler", cfg_scale=7, negative_prompt="",
                          gpus=[]))
        return ws.wait_for(lambda m: m.get("id") == id and m.get("type") in ("done", "error"), 60, start=start)
    finally:
        ws.close()


class Dropper:
    """The stand-in upstream: reads a whole request, notes (method, has an
    Idempotency-Key), and closes the connection without answering."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.seen = []
        self.lock = threading.Lock()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._drop, args=(conn,), daemon=True).start()

    def _drop(self, conn):
        conn.settimeout(10)
        data = b""
        try:
            while b"\r\n\r\n" not in data and len(data) < 65536:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                data += chunk
            head, body = data.split(b"\r\n\r\n", 1)
            m = re.search(rb"(?im)^content-length:\s*(\d+)", head)
            while m and len(body) < int(m.group(1)):
                chunk = conn.recv(65536)
                if not chunk:
                    return
                body += chunk
            with self.lock:
                self.seen.append((head.split(b" ", 1)[0].decode(), bool(re.search(rb"(?im)^idempotency-key:", head))))
        except (OSError, ValueError):
            pass
        finally:
            conn.close()

    def count(self, method, keyed):
        with self.lock:
            return self.seen.count((method, keyed))

    def close(self):
        self.sock.close()


class Unavailable:
    """A stand-in balancer that is up and answers every request with a
    balancer's own 503 (shutting_down, as one that stops does on a kept-alive
    connection): sdgate's error JSON, keep-alive, X-Sdgate-Instance
    "unavailable". .requests counts what reached it."""

    def __init__(self):
        owner = self
        self.requests = 0
        self.lock = threading.Lock()

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_GET(self):
                with owner.lock:
                    owner.requests += 1
                body = json.dumps({"detail": "Shutting down", "error": {"code": "shutting_down",
                                                                        "message": "Shutting down"}}).encode()
                self.send_response(503)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("X-Sdgate-Instance", "unavailable")
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()

    def count(self):
        with self.lock:
            return self.requests

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def answers_are_not_failures(gateway_ports, backup):
    """sdgate.conf with a first balancer that answers GETs 503 (Unavailable)
    and a real backup: the 503 reaches the client, and the first balancer
    is not left out for it."""
    standin = Unavailable()
    web_port, api_port = t.free_port(), t.free_port()
    ngx = t.Nginx(t.render_nginx_conf(t.NGINX_CONF, gateway_ports, [standin.port, backup.port], web_port, api_port))
    api = "http://127.0.0.1:%d" % api_port
    try:
        t.wait_until(lambda: t.request("GET", api + "/healthz", timeout=5).status, 20)
        got = [t.request("GET", api + "/v1/jobs/" + "0" * 32, timeout=10) for _ in range(3)]
        t.check("a GET that the first balancer answers 503 (shutting_down) gets that answer, not the backup's "
                "(%d reached it)" % standin.count(),
                all(t.is_sdgate_error(r, 503, "shutting_down") and r.headers.get("x-sdgate-instance") == "unavailable"
                    for r in got), [t.describe(r) for r in got])
        t.check("…and the first balancer is not taken for down: every later request still reaches it",
                standin.count() >= 4, standin.count())
    finally:
        ngx.stop()
        standin.close()


def idle_close(port, out, timeout=30):
    """Measures how long the server on port keeps an idle keep-alive
    connection open after answering one request: out["s"] (None when it did
    not close within timeout)."""
    out["s"] = None
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            last = None
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                last = time.monotonic()
            out["s"] = time.monotonic() - last if last else None
    except OSError:
        pass


def upstream_keepalive_s(conf_text, upstream):
    """The keepalive_timeout (seconds) of an upstream block: NGINX's default
    60 s when it has none."""
    block = re.search(r"upstream %s \{([^}]*)\}" % upstream, conf_text)
    m = re.search(r"keepalive_timeout\s+(\d+)s?;", block.group(1) if block else "")
    return int(m.group(1)) if m else 60


def pg_job(i):
    return dict(JOB, prompt="active-active %d" % i, seed=700 + i)


def active_active(be, gateway_ports):
    pg = t.start_postgres()
    url = pg.url(pg.create_database())
    args = ["--lease-s", 2, "--trusted-proxy", "127.0.0.1", "--backend", be.url]
    A = t.start_balancer(*args, name="pg-balancer-A", db=url)
    B = t.start_balancer(*args, name="pg-balancer-B", db=url)
    drop = Dropper()
    web_port, api_port = t.free_port(), t.free_port()
    text = t.render_nginx_conf(t.NGINX_PG_CONF, gateway_ports, [A.port, B.port, drop.port], web_port, api_port)
    # The stand-in is never left out (max_fails=0 on its line only), so that
    # each kind of request meets it within a few tries (least_conn takes the
    # three in turn while none is busy).
    text = text.replace("server 127.0.0.1:%d max_fails=2 " % drop.port, "server 127.0.0.1:%d max_fails=0 " % drop.port)
    ngx = t.Nginx(text)
    api = "http://127.0.0.1:%d" % api_port
    try:
        up = t.wait_until(lambda: t.request("GET", api + "/healthz", timeout=5).status == 200, 20)
        t.check("active-active: nginx serves sdgate-postgresql.conf (/healthz answers 200)", up, ngx.log())
        gets = [t.request("GET", api + "/healthz", timeout=10).status for _ in range(6)]
        t.check("active-active: GETs that meet the stand-in are passed on (6 × 200; it saw %d)"
                % drop.count("GET", False), gets == [200] * 6 and drop.count("GET", False) >= 1, gets)

        keyed, met = {}, []
        for i in range(9):
            before = drop.count("POST", True)
            r = t.submit_job(api, pg_job(i), headers={"Idempotency-Key": "aa-%d" % i})
            keyed[i] = r
            if drop.count("POST", True) > before:
                met.append(r.status)
        t.check("active-active: every POST /v1/jobs with an Idempotency-Key is accepted (202), those the "
                "stand-in dropped (%d) too: passed on to a balancer" % len(met),
                all(r.status == 202 for r in keyed.values()) and met and set(met) == {202},
                {i: r.status for i, r in keyed.items()})
        again = t.submit_job(api, pg_job(0), headers={"Idempotency-Key": "aa-0"})
        t.check("active-active: the key replayed through NGINX finds its job (200, Idempotent-Replayed)",
                again.status == 200 and (again.json or {}).get("id") == (keyed[0].json or {}).get("id") and
                again.headers.get("idempotent-replayed") == "true", t.describe(again))

        plain, dropped = [], 0
        for i in range(9):
            before = drop.count("POST", False)
            r = t.submit_job(api, pg_job(100 + i))
            hit = drop.count("POST", False) > before
            dropped += hit
            plain.append((r.status, hit))
        t.check("active-active: a POST without a key that the stand-in dropped is not sent again (502), the "
                "others are accepted (202)", dropped >= 1 and all(st == (502 if hit else 202) for st, hit in plain),
                plain)
        n_jobs = int(t.db_query(url, "SELECT count(*) FROM jobs")[0][0])
        t.check("active-active: one job per accepted POST in the database (%d), none for the dropped ones" % n_jobs,
                n_jobs == 9 + sum(1 for st, _ in plain if st == 202), (n_jobs, plain))

        ids = [(r.json or {}).get("id") for r in keyed.values()]

        def all_done():
            return all((t.get_job(api, i, timeout=10) or {}).get("status") == "done" for i in ids)
        t.check("active-active: every keyed job is done, read through NGINX from either balancer",
                t.wait_until(all_done, 60), [t.get_job(api, i) for i in ids[:2]])

        A.kill()
        t.check("active-active: balancer A is killed (-9)", not A.running())
        after = [t.submit_job(api, pg_job(200 + i), headers={"Idempotency-Key": "bb-%d" % i}) for i in range(4)]
        t.check("active-active: with A dead, keyed POSTs through NGINX are still accepted (202)",
                all(r.status == 202 for r in after), [t.describe(r) for r in after])
        ids += [(r.json or {}).get("id") for r in after]
        t.check("active-active: with A dead, every job is read through NGINX and done",
                t.wait_until(all_done, 60), [t.get_job(api, i) for i in ids[-2:]])
    finally:
        ngx.stop()
        drop.close()


def main():
    if not t.nginx_path():
        t.check("nginx is installed (deploy/install-deps.sh installs nginx-light)", False)
        return
    be = t.start_backend("--provider", "nginx-prov", "--gpu-class", "a100")
    b1 = t.start_balancer("--backend", be.url, name="balancer-1")
    b2 = t.start_balancer("--backend", be.url, name="balancer-2")
    g1 = t.start_gateway("--balancer", b1.url, "--balancer", b2.url, "--trusted-proxy", "127.0.0.1",
                       name="gateway-1")
    g2 = t.start_gateway("--balancer", b1.url, "--balancer", b2.url, "--trusted-proxy", "127.0.0.1",
                       name="gateway-2")
    web_port, api_port = t.free_port(), t.free_port()
    conf = t.render_nginx_conf(t.NGINX_CONF, [g1.port, g2.port], [b1.port, b2.port], web_port, api_port)
    ngx = t.Nginx(conf)
    api, web = "http://127.0.0.1:%d" % api_port, "http://127.0.0.1:%d" % web_port
    # Measured meanwhile, on the backup (it runs throughout): the balancer's idle close.
    idle = {}
    idle_thread = threading.Thread(target=idle_close, args=(b2.port, idle), daemon=True)
    idle_thread.start()
    try:
        up = t.wait_until(lambda: t.request("GET", api + "/healthz", timeout=5).status == 200, 20)
        t.check("nginx serves the shipped config (balancer port answers /healthz)", up, ngx.log())

        ok, detail = facade_ok(api)
        t.check("the A1111 façade through NGINX answers 200 with one image", ok, detail)
        board = t.request("GET", api + "/v1/backends", timeout=10)
        t.check("the board through NGINX lists the backend", board.status == 200 and
                len(board.json.get("backends", [])) == 1, t.describe(board))
        # A balancer's 503 is its answer, not its failure.
        first = t.request("GET", b1.url + "/healthz", timeout=10).headers.get("x-sdgate-instance")
        r = t.submit_job(api, dict(JOB, gpus=["h100"]))
        t.check("a job no backend can run, through NGINX: the balancer's own 503 no_backend (its JSON error)",
                t.is_sdgate_error(r, 503, "no_backend"), t.describe(r))
        t.check("…from the first balancer", first and r.headers.get("x-sdgate-instance") == first,
                (first, r.headers.get("x-sdgate-instance")))
        nxt = [t.request("GET", api + "/healthz", timeout=10).headers.get("x-sdgate-instance") for _ in range(3)]
        t.check("…which is not taken for down: the next requests still go to it, not to the backup",
                nxt == [first] * 3, (first, nxt))
        page = t.request("GET", web + "/", timeout=10)
        t.check("the web UI through NGINX answers 200 HTML", page.status == 200 and b"<html" in page.raw.lower(),
                t.describe(page))
        m = ws_job(web_port, "n1")
        t.check("a websocket job through NGINX (upgrade) ends in done", isinstance(m, dict) and
                m.get("type") == "done", m)
        # A browser's upgrade carries the page's origin, as the browser saw it:
        # NGINX forwards that address (X-Forwarded-Proto/Host), or it would be refused.
        for origin, want in (("http://127.0.0.1:%d" % web_port, 101), ("http://evil.example", 403)):
            try:
                WSClient("127.0.0.1", web_port, "/ws", timeout=10, origin=origin).close()
                got = 101
            except HandshakeError as e:
                got = e.status
            t.check("an upgrade through NGINX from a page of %s → %d (got %s)" % (origin, want, got), got == want, got)

        b1.stop()
        t.check("balancer-1 is stopped", not b1.running())
        ok, detail = facade_ok(api)
        t.check("with balancer-1 down, the façade through NGINX still answers 200 (backup balancer)", ok, detail)
        h = t.request("GET", api + "/healthz", timeout=10)
        t.check("with balancer-1 down, /healthz through NGINX answers 200", h.status == 200, t.describe(h))
        m = ws_job(web_port, "n2")
        t.check("with balancer-1 down, a websocket job through NGINX still ends in done (gateway failover)",
                isinstance(m, dict) and m.get("type") == "done", m)

        g1.stop()
        t.check("gateway-1 is stopped", not g1.running())
        results = [ws_job(web_port, "n%d" % i) for i in range(3, 6)]
        t.check("with gateway-1 down too, three websocket jobs through NGINX all end in done",
                all(isinstance(m, dict) and m.get("type") == "done" for m in results), results)
        page = t.request("GET", web + "/", timeout=10)
        t.check("with gateway-1 down, the web UI through NGINX answers 200", page.status == 200, t.describe(page))
        idle_thread.join(40)
        keep = upstream_keepalive_s(conf, "sdgate_balancers")
        t.check("NGINX keeps an idle balancer connection %d s, less than the balancer (it closed one after %s s)"
                % (keep, "%.1f" % idle["s"] if idle.get("s") else "?"), idle.get("s") and keep < idle["s"] - 1,
                idle)
    finally:
        ngx.stop()
    answers_are_not_failures([g1.port, g2.port], b2)
    active_active(be, [g1.port, g2.port])


if __name__ == "__main__":
    t.run(main)
