#!/usr/bin/env python3
"""The gateway against hostile pages and clients (issue 10, findings 6 and 7):

- a websocket upgrade from a page of another origin is refused with 403
  (counted in /metrics, not against the per-address cap); no Origin (a
  program), the gateway's own origin, an --allowed-origin, and the public
  origin a trusted proxy names in X-Forwarded-Proto/Host are let in;
- 64 sockets that send ~11 MB of hello and never read grow the gateway by
  less than 64 MiB (they grew it by ~450 MiB before the bounded queue);
- a socket that never reads is closed after --send-timeout-s, or at once
  when its waiting output passes its bound or the gateway's
  (--max-output-bytes);
- every HTTP answer carries the UI's CSP, X-Frame-Options, nosniff and
  Referrer-Policy; /healthz and /metrics name no balancer URL."""

import json
import os
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sdtest as t  # noqa: E402
from wsclient import HandshakeError, WSClient, frame, raw_upgrade, OP_TEXT  # noqa: E402

FLOOD_SOCKETS = 64
FLOOD_BYTES = 11 * 1000 * 1000  # in all, as the probe sent
HELLO = frame(OP_TEXT, b'{"type":"hello"}')


def upgrade_status(gw, origin=None, headers=None):
    """The HTTP status of a websocket upgrade (101 when accepted)."""
    try:
        ws = WSClient("127.0.0.1", gw.port, "/ws", timeout=10, origin=origin, headers=headers)
    except HandshakeError as e:
        return e.status
    ws.close()
    return 101


def check_origins(gw):
    own = "http://127.0.0.1:%d" % gw.port
    cases = [
        ("no Origin (a program, not a page) → 101", None, None, 101),
        ("the gateway's own origin → 101", own, None, 101),
        ("a page of another site → 403", "http://evil.example", None, 403),
        ("another port of the same host (another origin) → 403", "http://127.0.0.1:%d" % (gw.port + 1), None, 403),
        ("https:// of the same host:port (another origin) → 403", "https://127.0.0.1:%d" % gw.port, None, 403),
        ("Origin: null (a sandboxed frame, a file) → 403", "null", None, 403),
        ("an --allowed-origin → 101", "https://sd.example.org", None, 101),
        ("X-Forwarded-Proto/Host from a peer that is no --trusted-proxy are ignored → 403",
         "https://public.example", {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "public.example"}, 403),
    ]
    for name, origin, headers, want in cases:
        got = upgrade_status(gw, origin, headers)
        t.check("upgrade: %s (got %s)" % (name, got), got == want, got)
    # the Host header decides what "own" is
    s = socket.create_connection(("127.0.0.1", gw.port), timeout=10)
    s.sendall(("GET /ws HTTP/1.1\r\nHost: LOCALHOST:%d\r\nOrigin: http://localhost:%d\r\nUpgrade: websocket\r\n"
               "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
               "Sec-WebSocket-Version: 13\r\n\r\n" % (gw.port, gw.port)).encode())
    head = s.recv(4096)
    s.close()
    t.check("upgrade: Origin equal to the request's Host, any case → 101", head.startswith(b"HTTP/1.1 101"), head[:80])

    # A refused page reads why, and costs its visitor nothing.
    try:
        WSClient("127.0.0.1", gw.port, "/ws", timeout=10, origin="http://evil.example").close()
        body = b""
    except HandshakeError as e:
        body = e.body
    t.check("the 403 says why", b"own pages" in body, body[:300])


def check_http_headers(gw):
    want = {
        "content-security-policy": lambda v: all(d in v for d in (
            "default-src 'self'", "script-src 'self'", "style-src 'self'", "img-src 'self' blob: data:",
            "object-src 'none'", "base-uri 'none'", "frame-ancestors 'none'", "form-action 'self'")),
        "x-frame-options": lambda v: v.upper() == "DENY",
        "x-content-type-options": lambda v: v == "nosniff",
        "referrer-policy": lambda v: v == "no-referrer",
    }
    for path, status in (("/", 200), ("/app.js", 200), ("/app.css", 200), ("/no-such-file", 404),
                         ("/healthz", 200), ("/metrics", 200)):
        r = t.request("GET", gw.url + path, timeout=10)
        bad = [k for k, ok in want.items() if not ok(r.headers.get(k, ""))]
        t.check("GET %s (%d) carries CSP, X-Frame-Options, nosniff, Referrer-Policy" % (path, r.status),
                r.status == status and not bad, (r.status, bad, r.headers))
    st, hdrs, body, _ = t.raw_exchange("127.0.0.1", gw.port, (
        "GET /ws HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nOrigin: http://evil.example\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        % gw.port).encode(), timeout=10)
    t.check("the refused upgrade (403) carries them too",
            st == 403 and hdrs.get("x-content-type-options") == "nosniff", (st, hdrs))


def check_no_urls(gw, bal):
    hidden = ["127.0.0.1:%d" % bal.port, "http://"]
    h = t.request("GET", gw.url + "/healthz", timeout=10)
    m = t.request("GET", gw.url + "/metrics", timeout=10)
    print("# /healthz: %s" % h.raw.decode())
    t.check("/healthz names no balancer URL (an index and up)",
            h.status == 200 and not any(x.encode() in h.raw for x in hidden)
            and h.json["balancers"] == [{"index": 1, "up": True}], h.raw)
    t.check("/metrics names no balancer URL", m.status == 200 and not any(x.encode() in m.raw for x in hidden)
            and b'sdgate_gateway_balancer_up{balancer="1"} 1' in m.raw, m.raw[-400:])


def flood(gw):
    """64 upgraded sockets that never read send FLOOD_BYTES of hello in all;
    returns (RSS before, peak RSS, seconds)."""
    pid = gw.proc.pid
    socks = []
    for _ in range(FLOOD_SOCKETS):
        s, status = raw_upgrade("127.0.0.1", gw.port)
        if status != 101:
            t.check("flood socket upgraded", False, status)
            return None
        socks.append(s)
    rss0 = peak = t.proc_rss_mib(pid)
    handled0 = t.metric(t.metrics(gw.url), "sdgate_gateway_messages_total", 0)
    batch = HELLO * 1000
    per_sock = FLOOD_BYTES // FLOOD_SOCKETS
    sent = [0]
    lock = threading.Lock()

    def send(part):
        for s in part:
            n = 0
            try:
                while n < per_sock:
                    s.sendall(batch)
                    n += len(batch)
            except OSError:
                pass
            with lock:
                sent[0] += n

    t0 = time.monotonic()
    threads = [threading.Thread(target=send, args=(socks[i::4],), daemon=True) for i in range(4)]
    for th in threads:
        th.start()
    while any(th.is_alive() for th in threads):
        peak = max(peak, t.proc_rss_mib(pid))
        time.sleep(0.2)
    sent_in = time.monotonic() - t0
    # let the gateway answer what it has read (all of it, or for 20 s)
    want = handled0 + sent[0] // len(HELLO)
    deadline = time.monotonic() + 20
    handled = handled0
    while handled < want and time.monotonic() < deadline:
        peak = max(peak, t.proc_rss_mib(pid))
        time.sleep(0.5)
        handled = t.metric(t.metrics(gw.url), "sdgate_gateway_messages_total", 0)
    took = time.monotonic() - t0
    peak = max(peak, t.proc_rss_mib(pid))
    print("# flood: %d sockets sent %.1f MB of hello (%d messages) in %.1f s; the gateway handled %d of them in "
          "%.1f s (a welcome and a board wait at most per socket): RSS %.1f -> peak %.1f MiB (+%.1f)"
          % (FLOOD_SOCKETS, sent[0] / 1e6, sent[0] // len(HELLO), sent_in, handled - handled0, took, rss0, peak,
             peak - rss0))
    for s in socks:
        s.close()
    return rss0, peak, sent[0]


def closes_within(gw, timeout):
    """Seconds until the gateway has no websocket open (None: not within timeout)."""
    t0 = time.monotonic()
    ok = t.wait_until(lambda: t.metric(t.metrics(gw.url), "sdgate_gateway_connections", 1) == 0, timeout, 0.1)
    return time.monotonic() - t0 if ok else None


def big_job(id, seed):
    return {"type": "generate", "id": id, "prompt": "noise", "negative_prompt": "", "sampler_name": "Euler a",
            "steps": 1, "cfg_scale": 7, "width": 2048, "height": 2048, "seed": seed, "gpus": []}


def check_output_cap(gw):
    """--max-output-bytes 1 MiB: a client that asks for four 2048x2048
    images and reads none is closed when its waiting output fills the
    gateway's, long before --send-timeout-s (60); a reading client beside it
    gets its image."""
    s, status = raw_upgrade("127.0.0.1", gw.port, rcvbuf=4096)
    t0 = time.monotonic()
    for i in range(4):
        s.sendall(frame(OP_TEXT, json.dumps(big_job("cap%d" % i, 7 + i)).encode()))
    reader = WSClient("127.0.0.1", gw.port, "/ws", timeout=10)
    reader.send_json(big_job("fine", 3))
    done = reader.wait_for(lambda m: m.get("id") == "fine" and m.get("type") in ("done", "error"), 60)
    closed = t.wait_until(lambda: t.metric(t.metrics(gw.url), "sdgate_gateway_connections", 2) <= 1, 30, 0.1)
    took = time.monotonic() - t0
    slow = t.metric(t.metrics(gw.url), "sdgate_gateway_slow_clients_total", 0)
    print("# --max-output-bytes 1 MiB: the non-reader was %s after %.1f s (slow clients %s); the reader got %s (%d "
          "bytes)" % ("closed" if closed else "still open", took, slow, (done or {}).get("type"),
                      len(json.dumps(done or {}))))
    t.check("past --max-output-bytes the connection with the most waiting is closed (not after --send-timeout-s)",
            closed and slow == 1 and took < 40 and "the gateway's output is full" in gw.log_tail(100),
            (closed, slow, took, gw.log_tail(10)))
    t.check("…and a reading client beside it gets its 2048x2048 image", (done or {}).get("type") == "done", done)
    reader.close()
    s.close()


def check_never_reads(gw, timeout_s):
    """A client that asks for two 2048x2048 images and never reads them (a
    4 KiB receive buffer): the gateway writes what the kernel takes, then the
    output is stuck and the connection is closed --send-timeout-s later. One
    that sends bad messages faster than it reads the errors is closed at
    once (64 KiB of replies may wait)."""
    s, status = raw_upgrade("127.0.0.1", gw.port, rcvbuf=4096)
    t.check("a non-reading socket is upgraded", status == 101, status)
    for i in range(2):
        s.sendall(frame(OP_TEXT, json.dumps(big_job("big%d" % i, 42 + i)).encode()))
    took = closes_within(gw, 40)
    s.close()
    print("# a client that does not read its images: closed after %s s (--send-timeout-s %d)"
          % ("%.1f" % took if took is not None else "never (40 s)", timeout_s))
    t.check("a client that does not read its images is closed (--send-timeout-s %d)" % timeout_s,
            took is not None, took)

    s, status = raw_upgrade("127.0.0.1", gw.port, rcvbuf=4096)
    s.sendall(frame(OP_TEXT, b'{"type":"nope"}') * 3000)
    took = closes_within(gw, 20)
    s.close()
    print("# a client sending 3,000 bad messages without reading the errors: closed after %s s"
          % ("%.1f" % took if took is not None else "never (20 s)"))
    t.check("a client that sends bad messages faster than it reads the errors is closed at once (< 2 s)",
            took is not None and took < 2, took)


def check_ipv6_prefix(gw):
    """Clients named by the trusted proxy (X-Real-IP): IPv6 addresses of one
    /64 share the per-address cap (4 here); another /64 does not."""
    socks, statuses = [], []
    for i in range(5):
        try:
            socks.append(WSClient("127.0.0.1", gw.port, "/ws", timeout=10,
                                  headers={"X-Real-IP": "2001:db8:1:2::%x" % (0xa + i * 0x1111)}))
            statuses.append(101)
        except HandshakeError as e:
            statuses.append(e.status)
    try:
        socks.append(WSClient("127.0.0.1", gw.port, "/ws", timeout=10, headers={"X-Real-IP": "2001:db8:1:3::1"}))
        other = 101
    except HandshakeError as e:
        other = e.status
    print("# five addresses of 2001:db8:1:2::/64: %s; one of 2001:db8:1:3::/64: %s" % (statuses, other))
    t.check("IPv6 clients count by their /64: the 5th address of one /64 is refused (429), another /64 is not",
            statuses == [101, 101, 101, 101, 429] and other == 101, (statuses, other))
    for ws in socks:
        ws.close()


def main():
    be = t.start_backend("--provider", "p", "--gpu-class", "a100")
    bal = t.start_balancer("--backend", be.url)
    t.wait_idle_backends(bal.url, 1, 30)
    # Under ASan, freed memory waits in a quarantine (256 MiB by default)
    # that RSS would count: keep it small, so RSS shows what is held.
    asan = os.environ.get("ASAN_OPTIONS")
    os.environ["ASAN_OPTIONS"] = (asan + ":" if asan else "") + "quarantine_size_mb=8"
    try:
        gw = t.start_gateway("--balancer", bal.url, "--allowed-origin", "https://sd.example.org",
                             "--send-timeout-s", "120", wait_board=True)
    finally:
        if asan is None:
            del os.environ["ASAN_OPTIONS"]
        else:
            os.environ["ASAN_OPTIONS"] = asan
    check_origins(gw)
    m = t.metrics(gw.url)
    refused = t.metric(m, "sdgate_gateway_origin_refused_total", 0)
    print("# origin refusals counted: %s" % refused)
    t.check("/metrics counts the refused origins (6 here)", refused == 6, refused)
    check_http_headers(gw)
    check_no_urls(gw, bal)

    # ---- 64 non-reading sockets flooding hello
    t.wait_until(lambda: t.metric(t.metrics(gw.url), "sdgate_gateway_connections", 1) == 0, 10)
    r = flood(gw)
    if r:
        rss0, peak, sent = r
        t.check("%d non-reading sockets sending %.0f MB of hello grow the gateway by < 64 MiB (+%.1f MiB)"
                % (FLOOD_SOCKETS, sent / 1e6, peak - rss0), peak - rss0 < 64, (rss0, peak))
    h = t.request("GET", gw.url + "/healthz", timeout=10)
    t.check("the gateway still answers afterwards", h.status == 200, t.describe(h))
    ws = WSClient("127.0.0.1", gw.port, "/ws", timeout=10)
    ws.send_json({"type": "hello"})
    t.check("…and welcomes a new client", ws.wait_type("welcome", 20) is not None)
    ws.close()

    # ---- behind a trusted proxy; a socket that never reads; the cap is not spent by refused pages
    gw2 = t.start_gateway("--balancer", bal.url, "--trusted-proxy", "127.0.0.1", "--send-timeout-s", "3",
                          "--max-connections-per-address", "4", name="gateway-proxied")
    fwd = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "public.example", "X-Real-IP": "198.51.100.7"}
    got = upgrade_status(gw2, "https://public.example", fwd)
    t.check("behind a --trusted-proxy, the public origin it forwards (X-Forwarded-Proto/Host) → 101 (got %s)" % got,
            got == 101, got)
    got = upgrade_status(gw2, "http://public.example", fwd)
    t.check("…and http:// of that name is another origin → 403 (got %s)" % got, got == 403, got)
    statuses = [upgrade_status(gw2, "http://evil.example") for _ in range(20)]
    keep = []
    for _ in range(4):
        try:
            keep.append(WSClient("127.0.0.1", gw2.port, "/ws", timeout=10))
        except HandshakeError as e:
            keep.append(e.status)
    ok = [k for k in keep if isinstance(k, WSClient)]
    print("# 20 cross-origin upgrades: %s; then the address's own 4: %d upgraded" % (sorted(set(statuses)), len(ok)))
    t.check("20 cross-origin upgrades are all 403 and spend none of the address's 4 connections",
            set(statuses) == {403} and len(ok) == 4, (statuses, keep))
    for k in ok:
        k.close()
    t.wait_until(lambda: t.metric(t.metrics(gw2.url), "sdgate_gateway_connections", 1) == 0, 10)
    check_ipv6_prefix(gw2)
    t.wait_until(lambda: t.metric(t.metrics(gw2.url), "sdgate_gateway_connections", 1) == 0, 10)
    check_never_reads(gw2, 3)
    slow = t.metric(t.metrics(gw2.url), "sdgate_gateway_slow_clients_total", 0)
    t.check("/metrics counts both as slow clients (%s)" % slow, slow == 2, slow)

    gw3 = t.start_gateway("--balancer", bal.url, "--max-output-bytes", 1 << 20, "--send-timeout-s", "60",
                          name="gateway-capped", wait_board=True)
    check_output_cap(gw3)


if __name__ == "__main__":
    t.run(main)
