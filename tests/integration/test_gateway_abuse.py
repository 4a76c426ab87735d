#!/usr/bin/env python3
"""Abuse of the front (issue 6 §3): 1,000 websocket connections from one
address. The gateway upgrades only --max-connections-per-address of them,
refuses the rest at the upgrade with HTTP 429, keeps its file descriptors and memory
bounded, keeps answering, and gives everything back once they close."""

import os
import resource
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sdtest as t  # noqa: E402
from wsclient import WSClient, raw_upgrade  # noqa: E402

N = 1000
CAP = 64


def main():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(4096, hard)), hard))  # the gateway inherits it
    bal = t.start_balancer()
    gw = t.start_gateway("--balancer", bal.url, "--max-connections-per-address", CAP, "--max-connections", 5000)
    pid = gw.proc.pid
    fds0, rss0 = t.proc_fds(pid), t.proc_rss_mib(pid)

    socks, statuses = [], []
    t0 = time.monotonic()
    for _ in range(N):
        s, status = raw_upgrade("127.0.0.1", gw.port)
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
    fds1, rss1 = t.proc_fds(pid), t.proc_rss_mib(pid)
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
    back = t.wait_until(lambda: t.proc_fds(pid) <= fds0 + 5, 15, 0.2)
    t.check("after they close, the gateway's file descriptors come back (%d -> %d)" % (fds0, t.proc_fds(pid)), back)
    ws = WSClient("127.0.0.1", gw.port, "/ws", timeout=10)
    ws.send_json({"type": "hello"})
    t.check("then the address connects again and gets welcome", ws.wait_type("welcome", 20) is not None)
    ws.close()


if __name__ == "__main__":
    t.run(main)
