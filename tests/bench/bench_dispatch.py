#!/usr/bin/env python3
"""bench_dispatch.py — every dispatch policy on the same arrival trace (issue 11, item 3).

    python3 tests/bench/bench_dispatch.py --bin build-bench [--quick]

Paced native backends (--pace-ms-per-step emulates a GPU's speed; each gets
the GPU class label and the price of the GPU it emulates) behind four
policies, each fed the same arrivals:

- balancer: sdgate-balancer (its A1111 façade), static backends;
- nginx least_conn: NGINX (bench_balancer.Nginx), which queues on the backends;
- first-idle-else-random: the Akash SDXL demo's GPU load balancer
  (zJuuu/SDXL-V1-on-Akash-Network, A1111-GPU-LB/src/index.ts), redone here
  in Python's standard library (FirstIdleProxy below);
- clairvoyant (simulated): offline schedules computed on the same arrival
  trace with the measured service times, knowing the future (greedy earliest
  finish, then local search with random restarts): one row with the lowest
  mean found, one with the lowest p99 found. The balancer's p50 is held
  against the first, its p99 against the second.

Scenarios: idle pool with sequential jobs (cold start: a fresh balancer);
Poisson arrivals at 70% and 90% of capacity on pool A (6 : 2.5 : 1) and pool
B (6 : 3.3 : 2 : 1); a burst of 50 jobs at once; the fastest backend 3x
slower mid-run (restarted on its port with 3x the pace); a new, fastest
backend joining mid-run. Prints one table and a verdict per target; passes
or fails nothing. tests/bench/README.md has the details.
"""

import argparse
import http.client
import http.server
import os
import random
import statistics
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bench_balancer as bb  # noqa: E402  (programs, NGINX, job posting, percentiles)

t = bb.t
note = bb.note

# (provider, gpu class, ms per step at --pace-ms 15, price per hour). Speeds
# 6 : 2.5 : 1 and 6 : 3.3 : 2 : 1 (ms per step = 90 / speed); labels ordered
# like public Stable Diffusion throughput, prices as in README's run command.
POOL_A = [("h100", "h100", 15, 2.49), ("a100", "a100", 36, 1.29), ("rtx3090", "rtx3090", 90, 0.39)]
POOL_B = [("h100", "h100", 15, 2.49), ("a100", "a100", 27, 1.29), ("rtx3090", "rtx3090", 45, 0.39),
          ("t4", "t4", 90, 0.20)]

POLICIES = ("balancer", "nginx least_conn", "first-idle-else-random")
ORACLE_MEAN = "clairvoyant, lowest mean (simulated)"
ORACLE_TAIL = "clairvoyant, lowest p99 (simulated)"


# ---------------------------------------------------------------- first idle, else random

class FirstIdleProxy:
    """The Akash SDXL demo's GPU load balancer, policy for policy: a list of
    servers with an `available` flag (all true at start); a txt2img goes to
    the first available one in list order, which is marked unavailable until
    its answer comes back; when none is available, to a uniformly random
    server, whose flag is set to available when that answer comes back (even
    if another job still runs there — as the original does); an error is
    retried the same way (the original retries forever; here at most 5 times).
    Each forward is a fresh connection (axios without a keep-alive agent).
    Node runs the pick atomically; a lock does it here."""

    def __init__(self, urls, seed):
        self.servers = [{"url": u, "available": True} for u in urls]
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status, data = proxy.forward(self.path, body)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 1024

        self.port = t.free_port()
        self.httpd = Server(("127.0.0.1", self.port), Handler)
        self.url = "http://127.0.0.1:%d" % self.port
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def add(self, url):
        with self.lock:
            self.servers.append({"url": url, "available": True})

    def pick(self):
        with self.lock:
            for s in self.servers:
                if s["available"]:
                    s["available"] = False
                    return s
            return self.servers[int(self.rng.random() * len(self.servers))]

    def forward(self, path, body):
        for _ in range(6):
            s = self.pick()
            host, port = s["url"].split("//")[1].split(":")
            conn = http.client.HTTPConnection(host, int(port), timeout=600)
            try:
                conn.request("POST", path, body, {"Content-Type": "application/json"})
                r = conn.getresponse()
                data = r.read()
                if r.status == 200:
                    with self.lock:
                        s["available"] = True
                    return 200, data
            except (OSError, http.client.HTTPException):
                pass
            finally:
                conn.close()
        return 502, b'{"detail": "first-idle proxy: every try failed"}'

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


# ---------------------------------------------------------------- the clairvoyant schedule

class SimBackend:
    """A backend in the simulation: service time svc, svc2 from change_at on
    (by start time), usable from avail."""

    def __init__(self, svc, avail=0.0, change_at=float("inf"), svc2=None):
        self.svc, self.avail, self.change_at, self.svc2 = svc, avail, change_at, svc2

    def service(self, start):
        return self.svc2 if start >= self.change_at else self.svc


def chain(offs, jobs, bk, lat, power):
    """FIFO on one backend (optimal order for equal service times): writes
    lat[j] for its jobs (ascending arrival) and returns the sum of lat ** power."""
    free, cost = bk.avail, 0.0
    for j in jobs:
        start = max(free, offs[j])
        free = start + bk.service(start)
        lat[j] = free - offs[j]
        cost += lat[j] ** power
    return cost


def local_search(offs, bks, where, power, deadline):
    """Moves single jobs between backends while the sum of latency ** power
    falls (first improvement), until no move helps or the deadline. Returns
    (latencies, where, cost)."""
    n, k = len(offs), len(bks)
    order = sorted(range(n), key=lambda j: offs[j])
    lat, scratch = [0.0] * n, [0.0] * n
    on = [[j for j in order if where[j] == x] for x in range(k)]
    cost = [chain(offs, on[x], bks[x], lat, power) for x in range(k)]
    improved = True
    while improved and time.monotonic() < deadline:
        improved = False
        for j in order:
            a = where[j]
            without = [x for x in on[a] if x != j]
            ca = chain(offs, without, bks[a], scratch, power)
            for b in range(k):
                if b == a:
                    continue
                with_j = sorted(on[b] + [j], key=lambda x: (offs[x], x))
                cb = chain(offs, with_j, bks[b], scratch, power)
                if ca + cb < cost[a] + cost[b] - 1e-12:
                    on[a], on[b], where[j] = without, with_j, b
                    cost[a], cost[b] = ca, cb
                    improved = True
                    break
    for x in range(k):
        chain(offs, on[x], bks[x], lat, power)
    return lat, list(where), sum(cost)


def clairvoyant(offs, bks, power, key, budget_s=2.0, seed=1):
    """Offline: knows every arrival and every service time. Starts from greedy
    earliest finish in arrival order (each backend FIFO), improves it by local
    search on the sum of latency ** power, then restarts from the best schedule
    with 10% of the jobs moved at random, until budget_s; keeps the schedule
    with the lowest key(sorted latencies). A heuristic, not a proven optimum
    (R|r_j|sum F_j^p is NP-hard). Returns (latencies, backend per job)."""
    n, k = len(offs), len(bks)
    free = [b.avail for b in bks]
    where = [0] * n
    for j in sorted(range(n), key=lambda j: offs[j]):
        best = min(range(k), key=lambda x: (max(free[x], offs[j]) + bks[x].service(max(free[x], offs[j])), x))
        start = max(free[best], offs[j])
        free[best] = start + bks[best].service(start)
        where[j] = best
    deadline = time.monotonic() + budget_s
    rng = random.Random(seed)
    lat, best_where, _ = local_search(offs, bks, where, power, deadline)
    best = (key(sorted(lat)), lat, best_where)
    while time.monotonic() < deadline:
        w = list(best[2])
        for j in rng.sample(range(n), max(1, n // 10)):
            w[j] = rng.randrange(k)
        lat, w, _ = local_search(offs, bks, w, power, deadline)
        if key(sorted(lat)) < best[0]:
            best = (key(sorted(lat)), lat, w)
    return best[1], best[2]


def oracle_rows(scen, offs, bks, names, rows):
    """Two clairvoyant rows: the lowest mean found (sum of latencies) and the
    lowest p99 found (local search on cubed latencies, ties by mean)."""
    for label, power, key in ((ORACLE_MEAN, 1, lambda v: sum(v)),
                              (ORACLE_TAIL, 3, lambda v: (bb.pct(v, 99), sum(v)))):
        lat, where = clairvoyant(offs, bks, power, key)
        v = sorted(lat)
        rows.append((scen, label, {
            "ok": len(v), "errors": 0, "mean": statistics.mean(v), "p50": bb.pct(v, 50), "p99": bb.pct(v, 99),
            "max": v[-1], "total": sum(v), "jobs": {p: sum(1 for w in where if w == x) for x, p in enumerate(names)}}))


# ---------------------------------------------------------------- runs

def poisson(n, rate, seed):
    rng = random.Random(seed)
    offs, x = [], 0.0
    for _ in range(n):
        offs.append(x)
        x += rng.expovariate(rate)
    return offs


def summary(recs, names):
    ok = [r for r in recs if r and r["status"] == 200 and not r["err"]]
    v = sorted(r["latency"] for r in ok)
    nan = float("nan")
    return {"ok": len(ok), "errors": len(recs) - len(ok), "mean": statistics.mean(v) if v else nan,
            "p50": bb.pct(v, 50), "p99": bb.pct(v, 99), "max": v[-1] if v else nan, "total": sum(v),
            "jobs": {p: sum(1 for r in ok if r["provider"] == p) for p in names},
            "first_err": next((r["err"] or r["status"] for r in recs if r and r not in ok), None)}


def sequential(url, n, steps):
    """One job after another (each sent when the previous answered)."""
    recs = []
    for i in range(n):
        st, took, prov, inf, err = bb.post_job(url, bb.job_body(300000 + i, steps))
        recs.append({"status": st, "latency": took, "provider": prov, "err": err})
    return recs


def timed(fn_at, at_s):
    """Runs fn_at() on a thread at_s seconds from now; returns the thread."""
    th = threading.Timer(at_s, fn_at)
    th.daemon = True
    th.start()
    return th


class Pool:
    """The backends of one pool, with the three live front ends over them."""

    def __init__(self, specs, args, join=None):
        self.args, self.specs, self.join_spec = args, specs, join
        self.bes = bb.start_backends(specs)
        self.names = [s[0] for s in specs] + ([join[0]] if join else [])
        self.svc = bb.calibrate(self.bes, args.steps, reps=5)
        self.token = os.urandom(16).hex()
        self.bal = self.start_balancer()
        self.ng = bb.Nginx([("lc", "least_conn", [b.port for b in self.bes])], workers=args.nginx_workers)
        order = list(range(len(self.bes)))
        random.Random(args.seed).shuffle(order)
        self.fi_order = [self.bes[i].provider for i in order]
        self.fi = FirstIdleProxy([self.bes[i].url for i in order], args.seed)
        self.joined = None

    def start_balancer(self):
        extra = list(self.args.balancer_arg)
        if self.join_spec:
            extra += ["--provider-token", self.token]
        return bb.start_balancer(self.bes, self.args.balancer_log_level, extra)

    def fresh_balancer(self):
        bb.stop(self.bal)
        self.bal = self.start_balancer()

    def url(self, policy):
        return {"balancer": self.bal.url, "nginx least_conn": self.ng.urls["lc"],
                "first-idle-else-random": self.fi.url}[policy]

    def capacity(self):
        return sum(1.0 / self.svc[b.provider] for b in self.bes)

    def sim_backends(self):
        return [SimBackend(self.svc[b.provider]) for b in self.bes]

    def warm(self):
        for p in POLICIES:
            bb.warm_up(self.url(p), self.args.steps)

    def restart(self, i, pace):
        """Backend i again on its port with another pace (a GPU that got slower)."""
        old = self.bes[i]
        bb.stop(old)
        spec = (old.provider, old.gpu, pace) + ((old.identity["price_per_hour"],) if "price_per_hour" in
                                                 old.identity else ())
        self.bes[i] = bb.start_backends([spec], port=old.port)[0]

    def join(self, policy):
        """The join backend starts and enters this policy's pool."""
        prov, gpu, pace, price = self.join_spec
        args = ["--provider", prov, "--gpu-class", gpu, "--log-level", "warn", "--cpu", "--pace-ms-per-step",
                str(pace), "--price-per-hour", str(price)]
        if policy == "balancer":
            args += ["--balancer", self.bal.url, "--token", self.token]
        be = t.start_backend(*args, name="be-" + prov)
        be.provider = prov
        self.joined = be
        if policy == "nginx least_conn":
            self.ng.reload([("lc", "least_conn", [b.port for b in self.bes] + [be.port])])
        elif policy == "first-idle-else-random":
            self.fi.add(be.url)

    def unjoin(self):
        if self.joined:
            bb.stop(self.joined)
            self.joined = None
        self.ng.reload([("lc", "least_conn", [b.port for b in self.bes])])
        with self.fi.lock:
            self.fi.servers = self.fi.servers[:len(self.bes)]
            for s in self.fi.servers:
                s["available"] = True

    def stop(self):
        self.fi.stop()
        self.ng.stop()
        rc = bb.stop(self.bal)
        if rc != 0:
            note("balancer exited with %r; log tail:\n%s" % (rc, self.bal.log_tail(20)))
        for b in self.bes:
            bb.stop(b)


def run_policies(pool, scenario, offs, rows, hook=None, unhook=None):
    for p in POLICIES:
        if hook:
            hook(p)
        recs, _ = bb.open_loop(pool.url(p), offs, pool.args.steps)
        if unhook:
            unhook(p)
        s = summary(recs, pool.names)
        rows.append((scenario, p, s))
        note("%s / %s: p50 %.0f ms, p99 %.0f ms, %d errors" % (scenario, p, s["p50"] * 1e3, s["p99"] * 1e3,
                                                               s["errors"]))


# ---------------------------------------------------------------- scenarios

def pool_runs(specs, label, args, rows, verdicts, extras):
    pool = Pool(specs, args)
    names = pool.names
    cap = pool.capacity()
    print("- pool %s: %s; service time measured direct, one at a time: %s; capacity %.2f jobs/s; first-idle list "
          "order %s" % (label, " : ".join("%s %d ms/step" % (s[0], s[2]) for s in specs),
                        ", ".join("%s %.0f ms" % (n, pool.svc[n] * 1e3) for n in names), cap,
                        ", ".join(pool.fi_order)))
    try:
        if extras:
            # Idle pool, sequential jobs, a fresh balancer (nothing measured yet).
            fastest = min(pool.svc.values())
            scen = "sequential ×%d, idle pool %s" % (args.seq_jobs, label)
            for p in POLICIES:
                s = summary(sequential(pool.url(p), args.seq_jobs, args.steps), names)
                rows.append((scen, p, s))
            ref = {"ok": args.seq_jobs, "errors": 0, "mean": fastest, "p50": fastest, "p99": fastest,
                   "max": fastest, "total": fastest * args.seq_jobs,
                   "jobs": {n: args.seq_jobs if pool.svc[n] == fastest else 0 for n in names}}
            rows.append((scen, "always the fastest GPU (measured)", ref))
            b = next(r[2] for r in rows if r[0] == scen and r[1] == "balancer")
            ratio = b["total"] / ref["total"]
            verdicts.append(("%s: balancer total %.2f s vs always-fastest %.2f s = %.2f× (target ≤ 1.1×)"
                             % (scen, b["total"], ref["total"], ratio), ratio <= 1.1))
        pool.warm()
        for li, load in enumerate(args.loads):
            offs = poisson(args.jobs, load * cap, args.seed * 1000 + li)
            scen = "Poisson %.0f%%, pool %s" % (load * 100, label)
            run_policies(pool, scen, offs, rows)
            oracle_rows(scen, offs, pool.sim_backends(), names, rows)
            poisson_verdicts(scen, rows, verdicts)
        if extras:
            offs = [0.0] * args.burst
            scen = "burst of %d, pool %s" % (args.burst, label)
            run_policies(pool, scen, offs, rows)
            oracle_rows(scen, offs, pool.sim_backends(), names, rows)
            best_verdict(scen, rows, verdicts)
            slowdown(pool, label, args, rows, verdicts)
    finally:
        pool.stop()


def slowdown(pool, label, args, rows, verdicts):
    """The fastest backend becomes 3x slower at the trace's midpoint. Load:
    --slow-load x the capacity after the change."""
    i = min(range(len(pool.bes)), key=lambda x: pool.svc[pool.bes[x].provider])
    fast = pool.bes[i]
    name, pace = fast.provider, fast.pace
    pool.restart(i, 3 * pace)
    slow_svc = bb.calibrate([pool.bes[i]], args.steps, reps=3)[name]
    pool.restart(i, pace)
    cap_after = pool.capacity() - 1.0 / pool.svc[name] + 1.0 / slow_svc
    offs = poisson(args.jobs, args.slow_load * cap_after, args.seed * 1000 + 77)
    mid = offs[len(offs) // 2]
    scen = "%s 3× slower mid-run (%.0f→%.0f ms), pool %s, %.0f%% of the capacity after" % (
        name, pool.svc[name] * 1e3, slow_svc * 1e3, label, args.slow_load * 100)
    timers = []

    def hook(p):
        timers.append(timed(lambda: pool.restart(i, 3 * pace), mid + 0.05))

    def unhook(p):
        timers[-1].join()
        pool.restart(i, pace)
    run_policies(pool, scen, offs, rows, hook, unhook)
    bks = pool.sim_backends()
    bks[i].change_at, bks[i].svc2 = mid, slow_svc
    oracle_rows(scen, offs, bks, pool.names, rows)
    best_verdict(scen, rows, verdicts)


def join_runs(specs, join, label, args, rows, verdicts):
    """`join` starts at the trace's midpoint; load: --join-load x the
    capacity before it joins."""
    pool = Pool(specs, args, join=join)
    try:
        probe = t.start_backend("--provider", "probe", "--gpu-class", join[1], "--log-level", "warn", "--cpu",
                                "--pace-ms-per-step", str(join[2]), name="be-probe")
        probe.provider, probe.identity = "probe", {}
        join_svc = bb.calibrate([probe], args.steps, reps=3)["probe"]
        bb.stop(probe)
        pool.warm()
        offs = poisson(args.jobs, args.join_load * pool.capacity(), args.seed * 1000 + 99)
        mid = offs[len(offs) // 2]
        scen = "%s (%.0f ms) joins mid-run, pool %s, %.0f%% of the capacity before" % (
            join[0], join_svc * 1e3, label, args.join_load * 100)
        timers = []

        def hook(p):
            if p == "balancer":  # a balancer that never saw it (a stopped one would be known, and down)
                pool.fresh_balancer()
                bb.warm_up(pool.bal.url, args.steps)
            timers.append(timed(lambda: pool.join(p), mid))

        def unhook(p):
            timers[-1].join()
            pool.unjoin()
        run_policies(pool, scen, offs, rows, hook, unhook)
        bks = pool.sim_backends() + [SimBackend(join_svc, avail=mid + 0.3)]
        oracle_rows(scen, offs, bks, pool.names, rows)
        best_verdict(scen, rows, verdicts)
    finally:
        pool.stop()


# ---------------------------------------------------------------- verdicts and table

def row(rows, scen, policy):
    return next((r[2] for r in rows if r[0] == scen and r[1] == policy), None)


def poisson_verdicts(scen, rows, verdicts):
    b, lc, fi = (row(rows, scen, p) for p in POLICIES)
    for ref, nm in ((lc, "least_conn"), (fi, "first-idle-else-random")):
        r = ref["p99"] / b["p99"]
        verdicts.append(("%s: p99 balancer %.0f ms vs %s %.0f ms: %.2f× better (target ≥ 1.3×)"
                         % (scen, b["p99"] * 1e3, nm, ref["p99"] * 1e3, r), r >= 1.3 and not b["errors"]))
    verdicts.append(("%s: p50 balancer %.0f ms vs least_conn %.0f ms (target: no worse)"
                     % (scen, b["p50"] * 1e3, lc["p50"] * 1e3), b["p50"] <= lc["p50"]))
    for k, o in (("p50", ORACLE_MEAN), ("p99", ORACLE_TAIL)):
        r = b[k] / row(rows, scen, o)[k]
        verdicts.append(("%s: %s balancer %.0f ms vs %s %.0f ms: %.2f× (target ≤ 1.2×)"
                         % (scen, k, b[k] * 1e3, o.split(" (")[0], row(rows, scen, o)[k] * 1e3, r), r <= 1.2))


def best_verdict(scen, rows, verdicts):
    """No figure in the issue: 'better than every reference' = the lowest p99 and mean of the live policies."""
    b = row(rows, scen, "balancer")
    others = [(p, row(rows, scen, p)) for p in POLICIES[1:]]
    worst = max(b["p99"] / s["p99"] for _, s in others)
    verdicts.append(("%s: balancer p99 %.0f ms, mean %.0f ms; references p99 %s, mean %s; clairvoyant p99 %.0f ms "
                     "(target: best p99 and mean of the live policies)"
                     % (scen, b["p99"] * 1e3, b["mean"] * 1e3, "/".join("%.0f" % (s["p99"] * 1e3) for _, s in others),
                        "/".join("%.0f" % (s["mean"] * 1e3) for _, s in others),
                        row(rows, scen, ORACLE_TAIL)["p99"] * 1e3),
                     worst <= 1.0 and all(b["mean"] <= s["mean"] for _, s in others) and not b["errors"]))


def print_table(rows):
    print("\n| scenario | policy | jobs ok | mean ms | p50 ms | p99 ms | max ms | total s | jobs per backend "
          "| errors |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---|---:|")
    for scen, p, s in rows:
        print("| %s | %s | %d | %.0f | %.0f | %.0f | %.0f | %.2f | %s | %d |" % (
            scen, "*%s*" % p if "simulated" in p or "measured" in p else p, s["ok"], s["mean"] * 1e3,
            s["p50"] * 1e3, s["p99"] * 1e3, s["max"] * 1e3, s["total"],
            " ".join("%s %d" % (k, v) for k, v in s["jobs"].items() if v), s["errors"]))
    print()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default="build-bench", help="CMake build dir (default build-bench)")
    ap.add_argument("--quick", action="store_true", help="fewer jobs and steps: a few minutes on 2 CPUs")
    ap.add_argument("--jobs", type=int, help="jobs per Poisson run (default 200, quick 80)")
    ap.add_argument("--steps", type=int, help="steps per job (default 10, quick 6)")
    ap.add_argument("--seq-jobs", type=int, default=12, help="sequential jobs on the idle pool (default 12)")
    ap.add_argument("--burst", type=int, default=50, help="jobs in the burst (default 50)")
    ap.add_argument("--loads", type=lambda s: [float(x) for x in s.split(",")], default=[0.70, 0.90])
    ap.add_argument("--slow-load", type=float, default=0.70, help="slowdown run: load after the change")
    ap.add_argument("--join-load", type=float, default=0.70, help="join run: load before the join")
    ap.add_argument("--pools", default="A,B", help="pools to run, A and/or B (default A,B)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--nginx-workers", default="auto")
    ap.add_argument("--balancer-log-level", default="warn")
    ap.add_argument("--balancer-arg", action="append", default=[], help="an extra balancer flag, repeatable")
    args = ap.parse_args()
    args.jobs = args.jobs or (80 if args.quick else 200)
    args.steps = args.steps or (6 if args.quick else 10)

    bin_dir = args.bin if os.path.isdir(args.bin) else os.path.join(bb.ROOT, args.bin)
    t.BIN_DIR = os.path.abspath(bin_dir)
    if not os.access(bb.NGINX, os.X_OK):
        sys.exit("%s not found: run deploy/install-deps.sh" % bb.NGINX)
    t0 = time.monotonic()
    print("# Dispatch: the balancer beside NGINX least_conn, first-idle-else-random and a clairvoyant schedule\n")
    print("Host: %d CPUs, load average %s at start; NGINX %s; job: 64x64, %d steps, Euler; %d jobs per Poisson "
          "run, seed %d (every policy gets the same arrivals).\n"
          % (os.cpu_count(), " ".join("%.2f" % x for x in os.getloadavg()), bb.nginx_version(), args.steps,
             args.jobs, args.seed))
    rows, verdicts = [], []
    pools = [p.strip().upper() for p in args.pools.split(",")]
    if "A" in pools:
        pool_runs(POOL_A, "A 6:2.5:1", args, rows, verdicts, extras=True)
        join_runs(POOL_A[1:], POOL_A[0], "A without h100", args, rows, verdicts)
    if "B" in pools:
        pool_runs(POOL_B, "B 6:3.3:2:1", args, rows, verdicts, extras=False)
    print_table(rows)
    print("Verdicts (figures, not a pass/fail of the bench):\n")
    for text, ok in verdicts:
        print("- %s: **%s**" % (text, "met" if ok else "NOT met"))
    for scen, p, s in rows:
        if s["errors"]:
            print("- %s / %s: %d jobs failed, first: %s" % (scen, p, s["errors"], s.get("first_err")))
    print("\nLoad average at the end: %s. _took %.0f s_" % (" ".join("%.2f" % x for x in os.getloadavg()),
                                                          time.monotonic() - t0))


if __name__ == "__main__":
    main()
