#!/usr/bin/env python3
"""test_balancer_abuse.py — abuse of the balancer's HTTP front and slow
readers (issue 6 §3).

1. Request smuggling, straight at the balancer (h2o 2.2.5): malformed or
   conflicting framing (Content-Length lists, signs, unknown or stacked
   Transfer-Encodings, a space before the colon, NUL bytes, lines without a
   colon, chunk sizes that overflow, too many or too large headers, the
   HTTP/2 preface) gets one 400 and the connection is closed, so nothing
   after it is read; Upgrade: h2c is ignored (no HTTP/2 on cleartext).
2. The same through the shipped NGINX config in front (deploy/nginx): every
   request whose framing two parsers could read differently (Content-Length
   with Transfer-Encoding, two Content-Lengths, odd whitespace) is refused
   by NGINX, and the job hidden inside it never reaches the balancer.
3. Connections: with a descriptor limit of 320, the balancer lowers its
   connection cap to fit; 300 idle sockets and 20 slowloris trickles neither
   make it spin (the old behaviour at EMFILE: 100% CPU and no answers) nor
   push it past the limit; it answers again as soon as they go, and closes
   the trickles after h2o's request timeout.
4. Slow readers: 12 clients that ask for a finished 1024x1024 job's document
   (images inside) and never read hold only their own answers: others are
   served at once and memory stays bounded.
5. The gateway's slow but honest websocket reader (4 KiB every 20 ms) gets
   its whole done message, while another client's job is not delayed."""

import json
import os
import resource
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sdtest as t  # noqa: E402
from wsclient import OP_TEXT, WSClient, frame, raw_upgrade  # noqa: E402

JOB = b'{"prompt": "a smuggled job", "steps": 1, "width": 64, "height": 64}'
SMUGGLED = (b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
            % (len(JOB), JOB))


def converse(port, data, wait=2.0):
    """Sends data on one connection and reads until the server closes or is
    quiet for `wait` s. Returns (statuses of the responses, closed by server)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    got, closed = b"", False
    try:
        s.sendall(data)
        s.settimeout(wait)
        while True:
            b = s.recv(65536)
            if not b:
                closed = True
                break
            got += b
    except socket.timeout:
        pass
    except OSError:
        closed = True
    finally:
        s.close()
    statuses = []
    while got.startswith(b"HTTP/1."):
        head, sep, rest = got.partition(b"\r\n\r\n")
        if not sep:
            break
        lines = head.decode("latin-1").split("\r\n")
        statuses.append(int(lines[0].split()[1]))
        length = next((int(v) for k, _, v in (ln.partition(":") for ln in lines[1:])
                       if k.strip().lower() == "content-length"), 0)
        got = rest[length:]
    return statuses, closed


def post(headers, body):
    return b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" + headers + b"\r\n" + body


def accepted(bal):
    return t.metric(t.metrics(bal.url), "sdgate_jobs_accepted_total", 0)


def check_direct(bal):
    """Part 1: framing attacks straight at the balancer."""
    ok_three, _ = converse(bal.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n" * 3, wait=1.0)
    t.check("baseline: three pipelined GETs on one connection get three 200s", ok_three == [200, 200, 200],
            ok_three)
    rejected = {
        "Content-Length list": post(b"Content-Length: 2, 2\r\n", b"{}" + SMUGGLED),
        "negative Content-Length": post(b"Content-Length: -1\r\n", b"{}" + SMUGGLED),
        "signed Content-Length": post(b"Content-Length: +2\r\n", b"{}" + SMUGGLED),
        "unknown Transfer-Encoding": post(b"Transfer-Encoding: xchunked\r\nContent-Length: 2\r\n", b"{}" + SMUGGLED),
        "stacked Transfer-Encoding": post(b"Transfer-Encoding: chunked, identity\r\n", b"0\r\n\r\n" + SMUGGLED),
        "space before the colon": post(b"Transfer-Encoding : chunked\r\nContent-Length: 2\r\n", b"{}" + SMUGGLED),
        "NUL in a header": b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n" + SMUGGLED,
        "header without a colon": b"GET /healthz HTTP/1.1\r\nHost: x\r\nBroken\r\n\r\n" + SMUGGLED,
        "chunk size overflow": post(b"Transfer-Encoding: chunked\r\n", b"ffffffffffffffffff2\r\n{}\r\n0\r\n\r\n" + SMUGGLED),
        "101 headers": b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"X-A: b\r\n" * 101 + b"\r\n" + SMUGGLED,
        "a 600 KB header": b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: " + b"a" * 600000 + b"\r\n\r\n" + SMUGGLED,
        "HTTP/2 preface (h2c prior knowledge)": b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + SMUGGLED,
    }
    before = accepted(bal)
    for name, data in rejected.items():
        statuses, closed = converse(bal.port, data)
        t.check("direct, %s: one 400, then the connection is closed (%s, closed %s)" % (name, statuses, closed),
                statuses == [400] and closed, (statuses, closed))
    t.check("direct: none of the requests hidden behind bad framing was run (jobs accepted unchanged)",
            accepted(bal) == before, (before, accepted(bal)))
    statuses, _ = converse(bal.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\n"
                           b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n", wait=1.0)
    t.check("direct, Upgrade: h2c is ignored: a plain HTTP/1.1 200, no 101", statuses == [200], statuses)
    # RFC 9112 §6.3: Transfer-Encoding overrides Content-Length. The empty
    # chunked body is what the balancer reads (422), not the 4 bytes.
    statuses, _ = converse(bal.port, post(b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\n"),
                           wait=1.0)
    t.check("direct, Content-Length with Transfer-Encoding: the body is read as chunked (422 for an empty body)",
            statuses[:1] == [422], statuses)


def check_through_nginx(bal):
    """Part 2: the same attacks through the shipped NGINX front."""
    if not t.nginx_path():
        t.check("nginx is installed (deploy/install-deps.sh installs nginx-light)", False)
        return
    web, api = t.free_port(), t.free_port()
    ngx = t.Nginx(t.render_nginx_conf(t.NGINX_CONF, [t.free_port()], [bal.port], web, api))
    try:
        up = t.wait_until(lambda: t.request("GET", "http://127.0.0.1:%d/healthz" % api, timeout=2).status == 200, 10)
        t.check("NGINX with deploy/nginx/sdgate.conf forwards to the balancer", up, ngx.log())
        hidden = len(b"0\r\n\r\n") + len(SMUGGLED)
        attacks = {
            "Content-Length with Transfer-Encoding":
                post(b"Content-Length: %d\r\nTransfer-Encoding: chunked\r\n" % hidden, b"0\r\n\r\n" + SMUGGLED),
            "two different Content-Lengths":
                post(b"Content-Length: 2\r\nContent-Length: %d\r\n" % (2 + len(SMUGGLED)), b"{}" + SMUGGLED),
            "Transfer-Encoding with a tab":
                post(b"Transfer-Encoding:\tchunked\r\nContent-Length: %d\r\n" % hidden, b"0\r\n\r\n" + SMUGGLED),
            "Transfer-Encoding folded onto the next line":
                post(b"Transfer-Encoding:\r\n chunked\r\nContent-Length: %d\r\n" % hidden, b"0\r\n\r\n" + SMUGGLED),
            "Transfer-Encoding: chunked, identity":
                post(b"Transfer-Encoding: chunked, identity\r\nContent-Length: %d\r\n" % hidden,
                     b"0\r\n\r\n" + SMUGGLED),
        }
        before = accepted(bal)
        for name, data in attacks.items():
            statuses, _ = converse(api, data)
            t.check("via NGINX, %s: refused by NGINX with one 4xx/5xx (%s)" % (name, statuses),
                    len(statuses) == 1 and statuses[0] in (400, 501), statuses)
        t.check("via NGINX: no hidden job reached the balancer", accepted(bal) == before, (before, accepted(bal)))
        r = t.submit_job("http://127.0.0.1:%d" % api, json.loads(JOB))
        t.check("via NGINX, the next honest client gets its own answer (202 for its job)",
                r.status == 202 and isinstance(r.json, dict) and t.is_hex_id(r.json.get("id")), t.describe(r))
        t.check("…and the balancer counts exactly that one job", accepted(bal) == before + 1, accepted(bal))
    finally:
        ngx.stop()


def trickle(port, stop, out):
    """Slowloris: a request line one byte a second; records when the server closed."""
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    t0 = time.monotonic()
    data = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100
    try:
        for c in data:
            if stop.is_set():
                break
            s.send(bytes([c]))
            s.settimeout(1.0)
            try:
                if s.recv(1) == b"":
                    out.append(time.monotonic() - t0)
                    return
            except socket.timeout:
                pass
    except OSError:
        out.append(time.monotonic() - t0)
    finally:
        s.close()


def check_connections(be):
    """Part 3: a descriptor limit of 320; 300 idle sockets and 20 trickles."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (320, hard))  # inherited by the balancer
    try:
        bal = t.start_balancer("--backend", be.url, name="balancer-fdlimit")
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    m = t.metrics(bal.url)
    cap = t.metric(m, "sdgate_http_max_connections")
    t.check("with 320 descriptors the balancer lowers its connection cap to fit (%s) and says so" % cap,
            cap is not None and cap <= 320 - 200 and "lowered" in bal.log_tail(50), (cap, bal.log_tail(10)))
    pid = bal.proc.pid
    stop, closed_after = threading.Event(), []
    slow = [threading.Thread(target=trickle, args=(bal.port, stop, closed_after), daemon=True) for _ in range(20)]
    for th in slow:
        th.start()
    socks = []
    for _ in range(300):
        try:
            socks.append(socket.create_connection(("127.0.0.1", bal.port), timeout=5))
        except OSError:
            break
    time.sleep(1.0)
    c0 = t.proc_cpu_s(pid)
    time.sleep(2.0)
    spent = t.proc_cpu_s(pid) - c0
    n_fds = t.proc_fds(pid)
    t.check("300 idle connections + 20 trickles: the balancer does not spin (%.2f s CPU in 2 s)" % spent,
            spent < 0.5, spent)
    t.check("…and stays inside its descriptor limit (%d open)" % n_fds, n_fds < 320, n_fds)
    for s in socks:
        s.close()
    t0 = time.monotonic()
    r = t.wait_until(lambda: t.request("GET", bal.url + "/healthz", timeout=2).status == 200, 10)
    t.check("once they close it answers again (%.2f s)" % (time.monotonic() - t0), r)
    for th in slow:
        th.join(20)
    stop.set()
    t.check("every slowloris trickle was closed by the balancer within 15 s (%s)"
            % ", ".join("%.0f" % x for x in sorted(closed_after)[:3]),
            len(closed_after) == 20 and max(closed_after) < 15, closed_after)
    bal.stop()


def check_slow_readers(bal):
    """Part 4: clients that ask for a large answer and never read it."""
    r = t.submit_job(bal.url, {"prompt": "a big noisy picture", "steps": 3, "width": 1024, "height": 1024,
                               "sampler_name": "Euler a"})
    d = t.wait_job(bal.url, r.json["id"], timeout=60) if r.status == 202 else None
    t.check("a 1024x1024 job is done", d is not None and d.get("status") == "done", d and d.get("status"))
    if not d or d.get("status") != "done":
        return
    size = len(json.dumps(d))
    pid = bal.proc.pid
    rss0 = t.proc_rss_mib(pid)
    readers = []
    for _ in range(12):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect(("127.0.0.1", bal.port))
        s.sendall(("GET /v1/jobs/%s HTTP/1.1\r\nHost: x\r\n\r\n" % d["id"]).encode())
        readers.append(s)
    time.sleep(1.0)
    t0 = time.monotonic()
    h = t.request("GET", bal.url + "/healthz", timeout=5)
    lat = time.monotonic() - t0
    full = t.get_job(bal.url, d["id"])
    t.check("12 clients not reading a %.1f MB answer: /healthz still answers at once (%.3f s)" % (size / 1e6, lat),
            h.status == 200 and lat < 1.0, (h.status, lat))
    t.check("…and a reader that does read gets the whole document", full is not None and full.get("status") == "done")
    grown = t.proc_rss_mib(pid) - rss0
    t.check("…memory held for them is bounded (%.1f MiB more, under 12 answers' worth + 64)" % grown,
            grown < 12 * size / 2 ** 20 + 64, grown)
    for s in readers:
        s.close()


def slow_read_messages(s, until_id, timeout=90):
    """Reads websocket frames 4 KiB every 20 ms; returns the text messages
    (fragments joined, as the gateway sends long ones in pieces) until the
    done/error of until_id (or the end)."""
    buf, msgs, parts = b"", [], []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = s.recv(4096)
        except socket.timeout:
            break
        if not chunk:
            break
        buf += chunk
        while len(buf) >= 2:
            fin, n, off = buf[0] & 0x80, buf[1] & 0x7F, 2
            if n == 126:
                n, off = int.from_bytes(buf[2:4], "big"), 4
            elif n == 127:
                n, off = int.from_bytes(buf[2:10], "big"), 10
            if len(buf) < off + n:
                break
            payload, buf = buf[off:off + n], buf[off + n:]
            parts.append(payload)
            if not fin:
                continue
            message, parts = b"".join(parts), []
            try:
                msgs.append(json.loads(message.decode("utf-8")))
            except ValueError:
                msgs.append(None)
            if isinstance(msgs[-1], dict) and msgs[-1].get("id") == until_id \
                    and msgs[-1].get("type") in ("done", "error"):
                return msgs
        time.sleep(0.02)
    return msgs


def check_gateway_slow_reader(bal):
    """Part 5: a slow websocket reader beside a normal one."""
    gw = t.start_gateway("--balancer", bal.url, wait_board=True)
    s, status = raw_upgrade("127.0.0.1", gw.port, timeout=30, rcvbuf=4096)
    t.check("the slow reader's websocket is upgraded", status == 101, status)
    gen = {"type": "generate", "id": "slow", "prompt": "a detailed red and blue pattern", "negative_prompt": "",
           "sampler_name": "Euler a", "steps": 6, "cfg_scale": 7, "width": 512, "height": 512, "seed": 9, "gpus": []}
    s.sendall(frame(OP_TEXT, json.dumps({"type": "hello"})) + frame(OP_TEXT, json.dumps(gen)))
    reader = t.Background(slow_read_messages, s, "slow")
    time.sleep(0.5)
    fast = WSClient("127.0.0.1", gw.port, "/ws", timeout=30)
    fast.send_json({"type": "hello"})
    t0 = time.monotonic()
    fast.send_json(dict(gen, id="fast", width=64, height=64, steps=2))
    m = fast.wait_for(lambda x: isinstance(x, dict) and x.get("id") == "fast" and x.get("type") in ("done", "error"),
                      30)
    took = time.monotonic() - t0
    t.check("a normal client beside the slow reader gets its job done promptly (%.2f s)" % took,
            isinstance(m, dict) and m.get("type") == "done" and took < 10, m)
    msgs, err, _ = reader.join(120)
    done = [x for x in msgs or [] if isinstance(x, dict) and x.get("type") == "done" and x.get("id") == "slow"]
    img = t.decode_png_b64(done[0].get("image")) if done else None
    t.check("the slow reader (4 KiB every 20 ms) gets its whole done message with a 512x512 PNG",
            img is not None and img.width == 512 and None not in msgs, (err, [x and x.get("type") for x in msgs or []]))
    s.close()
    fast.close()


def main():
    be = t.start_backend("--provider", "abuse-prov", "--gpu-class", "a100")
    bal = t.start_balancer("--backend", be.url)
    t.check("the balancer sees its backend", t.wait_idle_backends(bal.url, 1))
    check_direct(bal)
    check_through_nginx(bal)
    check_connections(be)
    check_slow_readers(bal)
    check_gateway_slow_reader(bal)
    t.check("after all of it the balancer is healthy", t.request("GET", bal.url + "/healthz").status == 200)


t.run(main)
