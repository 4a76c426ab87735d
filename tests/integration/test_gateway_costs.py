#!/usr/bin/env python3
"""What the gateway costs (issue 11, item 5): memory per idle websocket,
the messages lws now hands it in pieces, connections per job:

- 1,500 idle websockets (hello -> welcome, then nothing) cost the gateway at
  most 4 KiB of RSS each (24 KiB under ASan, whose allocator adds redzones
  and shadow). They cost 9.7 KiB (46 KiB under ASan) while every connection
  held two 64 KiB buffers: lws's rx buffer and the gateway's own.
- After 300 of them each sent one 60 KB message (lws hands it over in 1 KiB
  pieces, the gateway joins them), they still do: the buffer a long message
  is joined in is freed once the message is handled.
- A message of exactly --max-message bytes passes, in one frame and in five
  fragments, with a two-byte character across every piece boundary; one
  byte more is too_large, and the connection goes on.
- 20 jobs one after another open fewer than 10 connections to the balancer
  (counted by a pass-through TCP proxy between them): the event stream ends
  on its own after the final event, so its connection serves the image
  fetch and the next job. It was at least one per job while the gateway cut
  every stream at its final event (the cut closes the connection). A stream
  whose end the proxy holds back is still cut soon after its done event."""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sdtest as t  # noqa: E402
from wsclient import OP_CONT, OP_TEXT, WSClient, drain_idle, frame, open_idle  # noqa: E402

# ASan's quarantine holds freed memory (256 MiB by default), which RSS would
# count: without it, RSS shows what the gateway holds.
os.environ["ASAN_OPTIONS"] = (os.environ.get("ASAN_OPTIONS", "") + ":quarantine_size_mb=0").lstrip(":")

IDLE = 1500
TALKERS = 300
JOBS = 20
MAX_MESSAGE = 65536  # the gateway's default --max-message


def sanitized(pid):
    with open("/proc/%d/maps" % pid) as f:
        return "libasan" in f.read()


def hello_of(size):
    """A hello of exactly size bytes whose padding is two-byte characters, so
    that some character straddles each 1 KiB piece (the head is 23 bytes)."""
    head, tail = b'{"type":"hello","pad":"', b'"}'
    n = size - len(head) - len(tail)
    return head + ("é" * (n // 2)).encode() + b"x" * (n % 2) + tail


def per_connection_kib(gw, rss0, n):
    time.sleep(0.5)
    return (t.proc_rss_mib(gw.proc.pid) - rss0) * 1024.0 / max(1, n)


def check_pieces(gw):
    ws = WSClient("127.0.0.1", gw.port, "/ws", timeout=30)
    whole = hello_of(MAX_MESSAGE)
    start = ws.count()
    ws.send_text(whole)
    t.check("a hello of exactly --max-message (%d) bytes in one frame → welcome" % len(whole),
            ws.wait_type("welcome", 30, start=start) is not None, ws.messages[start:][:2])
    start = ws.count()
    cuts = [0, 1000, 20000, 20001, 50000, len(whole)]
    for i in range(5):
        ws.send_frame(OP_TEXT if i == 0 else OP_CONT, whole[cuts[i]:cuts[i + 1]], fin=i == 4)
    t.check("…and in five fragments → welcome", ws.wait_type("welcome", 30, start=start) is not None,
            ws.messages[start:][:2])
    start = ws.count()
    ws.send_text(hello_of(MAX_MESSAGE + 1))
    m = ws.wait_type("error", 30, start=start)
    t.check("one byte more → error too_large", m is not None and m.get("code") == "too_large", m)
    start = ws.count()
    ws.send_json({"type": "hello"})
    t.check("…and the connection goes on (hello → welcome)", ws.wait_type("welcome", 30, start=start) is not None)
    ws.close()


def run_jobs(bal, n, hold_stream_end=False):
    """n tiny jobs one after another through a gateway whose balancer is
    behind a t.TcpProxy: (jobs done, connections opened, slowest in s)."""
    proxy = t.TcpProxy(bal.port, hold_stream_end)
    gw = t.start_gateway("--balancer", "http://127.0.0.1:%d" % proxy.port, "--board-interval-ms", "60000",
                         name="gateway-held" if hold_stream_end else "gateway-proxied", wait_board=True)
    ws = WSClient("127.0.0.1", gw.port, "/ws", timeout=30)
    ws.send_json({"type": "hello"})
    ws.wait_type("welcome", 30)
    before, done, slowest = proxy.accepted, 0, 0.0
    for i in range(n):
        start, t0 = ws.count(), time.monotonic()
        ws.send_json({"type": "generate", "id": "j%d" % i, "prompt": "a red circle", "negative_prompt": "",
                      "sampler_name": "Euler", "steps": 1, "cfg_scale": 7, "width": 64, "height": 64, "seed": i,
                      "gpus": []})
        m = ws.wait_for(lambda m: m.get("id") == "j%d" % i and m.get("type") in ("done", "error"), 60, start=start)
        slowest = max(slowest, time.monotonic() - t0)
        done += bool(m) and m.get("type") == "done"
    ws.close()
    gw.stop()
    return done, proxy.accepted - before, slowest


def check_connections_per_job(bal):
    done, opened, _ = run_jobs(bal, JOBS)
    print("# %d jobs through the gateway (%d done): %d new connections to the balancer" % (JOBS, done, opened))
    t.check("%d jobs one after another are done" % JOBS, done == JOBS, done)
    t.check("…and open fewer than %d connections to the balancer (%d)" % (JOBS // 2, opened), opened < JOBS // 2,
            opened)
    done, opened, slowest = run_jobs(bal, 3, hold_stream_end=True)
    print("# 3 jobs whose event stream is not ended after done: %d done, the slowest in %.2f s, %d connections"
          % (done, slowest, opened))
    t.check("a stream not ended after its done event is cut: 3 jobs done, each within 5 s (%.2f)" % slowest,
            done == 3 and slowest < 5, (done, slowest))


def main():
    be = t.start_backend("--provider", "p", "--gpu-class", "a100")
    bal = t.start_balancer("--backend", be.url)
    t.wait_idle_backends(bal.url, 1, 30)
    gw = t.start_gateway("--balancer", bal.url, "--max-connections", IDLE + 100, "--max-connections-per-address",
                         IDLE + 100, "--board-interval-ms", "1000", wait_board=True)
    check_pieces(gw)
    asan = sanitized(gw.proc.pid)
    bound = 24.0 if asan else 4.0
    t.wait_until(lambda: t.metric(t.metrics(gw.url), "sdgate_gateway_connections", 1) == 0, 10)
    rss0 = t.proc_rss_mib(gw.proc.pid)
    socks, secs, failed = open_idle(gw.port, IDLE, batch=200)
    drain_idle(socks)
    kib = per_connection_kib(gw, rss0, len(socks))
    print("# %d idle websockets in %.1f s (%d failed): gateway RSS %.1f -> %.1f MiB, %.2f KiB each%s"
          % (len(socks), secs, failed, rss0, t.proc_rss_mib(gw.proc.pid), kib, " (ASan)" if asan else ""))
    t.check("%d idle websockets opened" % IDLE, len(socks) == IDLE and failed == 0, (len(socks), failed))
    t.check("an idle websocket costs the gateway at most %.0f KiB (%.2f)" % (bound, kib), kib <= bound, kib)

    long_hello = frame(OP_TEXT, hello_of(60000))
    welcomed = 0
    for s in socks[:TALKERS]:  # one after the other: one message's buffer at a time
        s.setblocking(True)
        s.settimeout(30)
        s.sendall(long_hello)
        got = b""
        while b'"welcome"' not in got:
            data = s.recv(65536)
            if not data:
                break
            got += data
        welcomed += b'"welcome"' in got
    drain_idle(socks)
    t.check("%d 60 KB hellos (each joined from lws's pieces) → %d welcomes" % (TALKERS, welcomed),
            welcomed == TALKERS, welcomed)
    kib2 = per_connection_kib(gw, rss0, len(socks))
    print("# after %d of them sent a 60 KB message each: %.2f KiB each" % (TALKERS, kib2))
    t.check("…still at most %.0f KiB after %d of them sent a 60 KB message each (%.2f)" % (bound, TALKERS, kib2),
            kib2 <= bound, kib2)
    h = t.request("GET", gw.url + "/healthz", timeout=10)
    t.check("the gateway still answers", h.status == 200, t.describe(h))
    for s in socks:
        s.close()
    gw.stop()
    check_connections_per_job(bal)


if __name__ == "__main__":
    t.run(main)
