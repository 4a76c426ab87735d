#!/usr/bin/env python3
"""bench_gateway.py — sdgate-gateway benchmarks (issue 4 §5), printed as tables.

(a) Idle clients: N websocket clients (default 10,000) connect, say hello and
    get welcome, then stay idle; the gateway's RSS and CPU are read from /proc
    before, once all are connected, and after an idle period. Target (issue
    11): at most 4 KB per idle websocket, RSS under 50 MB at 10,000.
(b) Added latency for a tiny job (64x64, 1 step; two backends so a job never
    waits), sent in turn on three paths in the same run:
      gateway   websocket generate -> done
      jobs API  POST /v1/jobs on the balancer, then its SSE events -> done
                (what the gateway itself does for each job)
      façade    POST /sdapi/v1/txt2img on the balancer
    Target (issue 11): the gateway adds under 1 ms at p50 over the jobs API.

Usage: python3 tests/bench/bench_gateway.py --bin build-bench [--clients 10000]
[--idle-s 20] [--jobs 300]. Starts everything itself on loopback and stops it.
Standard library only; not a test (nothing asserts), a measurement.
"""

import argparse
import http.client
import json
import os
import resource
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", default=os.path.join(ROOT, "build"), help="CMake build dir (release)")
    ap.add_argument("--clients", type=int, default=10000)
    ap.add_argument("--idle-s", type=float, default=20.0)
    ap.add_argument("--jobs", type=int, default=300)
    return ap.parse_args()


ARGS = parse_args()
os.environ["SDGATE_BIN"] = os.path.abspath(ARGS.bin)
import sdtest as t  # noqa: E402  (reads SDGATE_BIN at import)
from wsclient import WSClient, drain_idle, open_idle  # noqa: E402


def raise_fd_limit(want):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = min(hard, max(soft, want))
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return target


def proc_stats(pid):
    """(RSS MiB, CPU seconds user+system) of a process."""
    return t.proc_rss_mib(pid), t.proc_cpu_s(pid)


def start_gateway(balancer_url, *extra):
    exe = os.path.join(t.BIN_DIR, "gateway", "sdgate-gateway")
    port = t.free_port()
    prog = t.Program("gateway", [exe, "--listen", "127.0.0.1:%d" % port, "--balancer", balancer_url,
                                 "--log-level", "warn", "--board-interval-ms", "2000"] + list(extra), port)
    if not t.wait_ready(prog, "/healthz"):
        raise RuntimeError("gateway did not start:\n" + prog.log_tail())
    return prog


# ---------------------------------------------------------------- (a) idle clients


def bench_idle(balancer):
    n = ARGS.clients
    limit = raise_fd_limit(n + 1000)
    if limit < n + 100:
        print("# RLIMIT_NOFILE hard limit %d: using %d clients" % (limit, limit - 200))
        n = limit - 200
    gw = start_gateway(balancer.url, "--max-connections", str(n + 100), "--max-connections-per-address", str(n + 100))
    rows = []
    rss, cpu = proc_stats(gw.proc.pid)
    rows.append(("started, no client", 0, rss, None))
    socks, secs, failed = open_idle(gw.port, n)
    rss2, cpu2 = proc_stats(gw.proc.pid)
    rows.append(("%d connected (hello -> welcome)" % len(socks), len(socks), rss2, cpu2 - cpu))
    t_idle = time.monotonic()
    while time.monotonic() - t_idle < ARGS.idle_s:
        time.sleep(1.0)
        drain_idle(socks)
    rss3, cpu3 = proc_stats(gw.proc.pid)
    rows.append(("after %.0f s idle" % ARGS.idle_s, len(socks), rss3, cpu3 - cpu2))
    healthy = t.request("GET", gw.url + "/healthz", timeout=10).status
    for s in socks:
        s.close()
    gw.stop()

    print("\n## (a) %d idle websocket clients\n" % n)
    print("| moment | clients | gateway RSS MiB | gateway CPU s in the step |")
    print("|---|---:|---:|---:|")
    for name, k, r, c in rows:
        print("| %s | %d | %.1f | %s |" % (name, k, r, "–" if c is None else "%.2f" % c))
    print()
    print("- connecting took %.1f s (%.0f connections/s, handshake + hello + welcome + board); %d failed"
          % (secs, len(socks) / secs if secs else 0, failed))
    print("- RSS per connection: %.1f KiB; idle CPU: %.2f%% of one core"
          % ((rss3 - rss) * 1024.0 / max(1, len(socks)), 100.0 * (cpu3 - cpu2) / ARGS.idle_s))
    per = (rss3 - rss) * 1048576.0 / max(1, len(socks))
    print("- target at most 4 KB per connection and RSS < 50 MB at 10,000: %s (%.0f bytes, %.1f MB); "
          "/healthz afterwards: %s"
          % ("met" if per <= 4000 and rss3 * 1.048576 < 50 and n >= 10000 else "NOT met" if n >= 10000 else "n/a",
             per, rss3 * 1.048576, healthy))


# ---------------------------------------------------------------- (b) latency

JOB = {"prompt": "a red circle", "steps": 1, "width": 64, "height": 64, "sampler_name": "Euler", "seed": 1}


def job_api(conn):
    """POST /v1/jobs, then its SSE stream until done; one keep-alive connection for the POST."""
    conn.request("POST", "/v1/jobs", json.dumps(JOB), {"Content-Type": "application/json"})
    r = conn.getresponse()
    body = json.loads(r.read())
    if r.status != 202:
        raise RuntimeError("jobs API: %s %s" % (r.status, body))
    ev = http.client.HTTPConnection(conn.host, conn.port, timeout=60)
    ev.request("GET", "/v1/jobs/%s/events" % body["id"])
    resp = ev.getresponse()
    event = None
    while True:
        line = resp.fp.readline()
        if not line:
            raise RuntimeError("events ended early")
        if line.startswith(b"event: "):
            event = line[7:].strip()
        elif line.startswith(b"data: ") and event in (b"done", b"failed", b"cancelled"):
            ev.close()
            if event != b"done":
                raise RuntimeError("job %s" % event.decode())
            return


def facade(conn):
    conn.request("POST", "/sdapi/v1/txt2img", json.dumps(JOB), {"Content-Type": "application/json"})
    r = conn.getresponse()
    r.read()
    if r.status != 200:
        raise RuntimeError("façade: HTTP %d" % r.status)


def gateway_job(ws, i):
    msg = dict(JOB, type="generate", id="b%d" % i, cfg_scale=7, negative_prompt="", gpus=[])
    start = ws.count()
    ws.send_json(msg)
    m = ws.wait_for(lambda m: m.get("id") == msg["id"] and m.get("type") in ("done", "error"), 60, start=start)
    if not m or m.get("type") != "done":
        raise RuntimeError("gateway: %s" % m)


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100.0 * (len(xs) - 1))))]


def bench_latency(balancer):
    gw = start_gateway(balancer.url, "--rate-burst", "1e9", "--rate-refill", "1e9")
    ws = WSClient("127.0.0.1", gw.port, "/ws", timeout=30)
    ws.send_json({"type": "hello"})
    ws.wait_type("welcome", 20)
    conn = http.client.HTTPConnection("127.0.0.1", balancer.port, timeout=60)
    paths = [("jobs API (POST /v1/jobs + SSE)", lambda i: job_api(conn)),
             ("façade (POST /sdapi/v1/txt2img)", lambda i: facade(conn)),
             ("gateway (websocket generate -> done)", lambda i: gateway_job(ws, i))]
    for i in range(20):  # warm up: connections, learned speeds
        for _, fn in paths:
            fn(-1 - i)
    times = {name: [] for name, _ in paths}
    for i in range(ARGS.jobs):
        for name, fn in paths:
            t0 = time.perf_counter()
            fn(i)
            times[name].append((time.perf_counter() - t0) * 1000.0)
    ws.close()
    conn.close()
    gw.stop()

    base = statistics.median(times[paths[0][0]])
    base99 = pct(times[paths[0][0]], 99)
    print("\n## (b) a tiny job (64x64, 1 step) end to end, %d per path, interleaved\n" % ARGS.jobs)
    print("| path | p50 ms | p90 ms | p99 ms | vs jobs API p50 | vs jobs API p99 |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, _ in paths:
        xs = times[name]
        p50 = statistics.median(xs)
        print("| %s | %.3f | %.3f | %.3f | %s | %s |" % (
            name, p50, pct(xs, 90), pct(xs, 99), "–" if name == paths[0][0] else "%+.3f" % (p50 - base),
            "–" if name == paths[0][0] else "%+.3f" % (pct(xs, 99) - base99)))
    added = statistics.median(times[paths[2][0]]) - base
    print()
    print("- the gateway adds %.3f ms at p50 over the balancer's jobs API it calls (target < 1 ms): %s"
          % (added, "met" if added < 1.0 else "NOT met"))


def main():
    t0 = time.monotonic()
    be = [t.start_backend("--provider", "bench-%d" % i, "--log-level", "warn", name="backend-%d" % i)
          for i in range(2)]
    backend_args = [a for b in be for a in ("--backend", b.url)]
    bal = t.start_balancer("--log-level", "warn", "--max-queue-per-client", "100000", *backend_args)
    t.wait_until(lambda: t.request("GET", bal.url + "/healthz", timeout=5).json["backends"]["idle"] == 2, 30)
    print("# sdgate-gateway benchmarks\n")
    print("Host: %d CPUs; everything on loopback; release build from %s." % (os.cpu_count(), t.BIN_DIR))
    bench_latency(bal)
    bench_idle(bal)
    print("\n_took %.0f s_" % (time.monotonic() - t0))


if __name__ == "__main__":
    try:
        main()
    finally:
        t._cleanup()
