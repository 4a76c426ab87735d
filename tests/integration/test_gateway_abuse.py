#!/usr/bin/env python3
"""Abuse of the front (issue 6 §3): 1,000 websocket connections from one
address. The gateway upgrades only --max-connections-per-address of them,
refuses the rest at the upgrade with HTTP 429, keeps its file descriptors and memory
bounded, keeps answering, and gives everything back once they close."""

import base64
import os
import resource
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sdtest as t  # noqa: E402
from wsclient import WSClient  # noqa: E402

N = 1000
CAP = 64


def fds(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def rss_mib(pid):
    with open("/proc/%d/status" % pid) as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024.0


def upgrade(port):
    """Opens a socket and asks for a websocket upgrade; returns (socket, status)
    where status is 101, another HTTP status, or 0 when the gateway closed
    without an answer."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall(("GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n" % key).encode())
    buf = b""
    try:
        while b"\r\n\r\n" not in buf:
            chunk = s.recv(4096)
            if not chunk:
                break
            buf += chunk
    except OSError:
        pass
    try:
        status = int(buf.split(b" ", 2)[1]) if buf.startswith(b"HTTP/1.") else 0
    except (IndexError, ValueError):
        status = 0
    return s, status


def main():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(4096, hard)), hard))  # the gateway inherits it
    bal = t.start_balancer()
    gw = t.start_gateway("--balancer", bal.url, "--max-connections-per-address", CAP, "--max-connections", 5000)
    pid = gw.proc.pid
    fds0, rss0 = fds(pid), rss_mib(pid)

    socks, statuses = [], []
    t0 = time.monotonic()
    for _ in range(N):
        s, status = upgrade(gw.port)
        statuses.append(status)
        if status == 101:
            socks.append(s)
        else:
            s.close()
    took = time.monotonic() - t0
    accepted = sum(1 for s in statuses if s == 101)
    print("# %d upgrades in %.1f s: %d accepted, %d refused (statuses %s)"
          % (N, took, accepted, N - accepted, sorted(set(statuses))))
    t.check("%d connections from one address: exactly %d upgraded (--max-connections-per-address)" % (N, CAP),
            accepted == CAP, accepted)
    t.check("every refused upgrade is answered 429 Too Many Requests, not a bare hang-up",
            set(statuses) == {101, 429}, sorted(set(statuses)))
    fds1, rss1 = fds(pid), rss_mib(pid)
    print("# gateway fds %d -> %d, RSS %.1f -> %.1f MiB" % (fds0, fds1, rss0, rss1))
    t.check("the gateway's open file descriptors stay bounded (< base + %d + 50)" % CAP,
            fds1 < fds0 + CAP + 50, (fds0, fds1))
    t.check("the gateway's memory stays bounded (RSS grew < 64 MiB)", rss1 - rss0 < 64, (rss0, rss1))
    h = t.request("GET", gw.url + "/healthz", timeout=10)
    t.check("the gateway still answers /healthz meanwhile", h.status == 200, t.describe(h))
    m = t.metrics(gw.url)
    t.check("/metrics counts the refused connections",
            t.metric(m, "sdgate_gateway_connections_refused_total", 0) >= N - CAP, m)

    for s in socks:
        s.close()
    back = t.wait_until(lambda: fds(pid) <= fds0 + 5, 15, 0.2)
    t.check("after they close, the gateway's file descriptors come back (%d -> %d)" % (fds0, fds(pid)), back)
    ws = WSClient("127.0.0.1", gw.port, "/ws", timeout=10)
    ws.send_json({"type": "hello"})
    t.check("then the address connects again and gets welcome", ws.wait_type("welcome", 20) is not None)
    ws.close()


if __name__ == "__main__":
    t.run(main)
