#!/usr/bin/env python3
"""deploy/nginx/sdgate.conf for real: Debian's nginx on loopback in front of
two sdgate-gateways and two sdgate-balancers (sharing one backend). Requests
keep succeeding when one balancer and then one gateway stop: the A1111 façade
and /healthz through the balancer port, the web UI and a websocket job
(upgrade through NGINX) through the gateway port."""

import os
import sys

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
    ngx = t.Nginx(t.render_nginx_conf(t.NGINX_CONF, [g1.port, g2.port], [b1.port, b2.port], web_port, api_port))
    api, web = "http://127.0.0.1:%d" % api_port, "http://127.0.0.1:%d" % web_port
    try:
        up = t.wait_until(lambda: t.request("GET", api + "/healthz", timeout=5).status == 200, 20)
        t.check("nginx serves the shipped config (balancer port answers /healthz)", up, ngx.log())

        ok, detail = facade_ok(api)
        t.check("the A1111 façade through NGINX answers 200 with one image", ok, detail)
        board = t.request("GET", api + "/v1/backends", timeout=10)
        t.check("the board through NGINX lists the backend", board.status == 200 and
                len(board.json.get("backends", [])) == 1, t.describe(board))
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
    finally:
        ngx.stop()


if __name__ == "__main__":
    t.run(main)
