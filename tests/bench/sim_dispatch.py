#!/usr/bin/env python3
"""sim_dispatch.py — dispatch policies simulated on many arrival traces (issue 11, item 3).

    python3 tests/bench/sim_dispatch.py [--seeds 4] [--jobs 200] [--gap-ms 1.5]

bench_dispatch.py measures the live programs on one trace; this runs the
policies as discrete-event simulations (no programs, no noise) on --seeds
Poisson traces per cell (pools A 6:2.5:1 and B 6:3.3:2:1 at 70 % and 90 % of
capacity, the service times bench_dispatch measures), beside the same
clairvoyant schedules, and prints one table: each policy's p50 and p99 as a
ratio to NGINX least_conn's and to the clairvoyant's, and its mean.

Policies:
- least_conn: each job at its arrival to the backend with the fewest
  unfinished jobs (ties in turn), which queues it (NGINX);
- earliest finish: a central FIFO queue; at each arrival and completion the
  queue is planned in order, each job at the backend where it would finish
  first, waiting for a busy one when that is earlier (balancer/router.c
  without its look-ahead);
- look-ahead: earliest finish, but a job that would wait for a busy backend
  while another is idle starts on the idle one when that lowers the sum of
  the latencies of it, the jobs behind it and the arrivals expected over
  twice the idle backend's run (router.c's router_plan_load);
- both with --gap-ms between a backend's answer and its next job's start
  (the balancer's round trip; its --prefetch-ms hides it on a busy backend:
  --gap-ms 0).
The clairvoyant rows are bench_dispatch.clairvoyant (knows the future).
"""

import argparse
import heapq
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bench_balancer as bb  # noqa: E402
import bench_dispatch as d  # noqa: E402

# Service times (s) as bench_dispatch measured them (10 steps would scale all alike).
POOLS = {"A 6:2.5:1": [0.092, 0.219, 0.543], "B 6:3.3:2:1": [0.093, 0.164, 0.272, 0.543]}


def stats(lat):
    v = sorted(lat)
    return bb.pct(v, 50), bb.pct(v, 99), sum(v) / len(v)


def least_conn(offs, svc):
    ends = [[] for _ in svc]
    free = [0.0] * len(svc)
    lat, turn = [], 0
    for o in offs:
        for k in range(len(svc)):
            ends[k] = [e for e in ends[k] if e > o]
        m = min(len(e) for e in ends)
        ties = [k for k in range(len(svc)) if len(ends[k]) == m]
        k = ties[turn % len(ties)]
        turn += 1
        free[k] = max(free[k], o) + svc[k]
        ends[k].append(free[k])
        lat.append(free[k] - o)
    return lat


def eft_cost(free, svc, jobs):
    """Jobs (arrival from now) each at its earliest finish on `free`: the sum of latencies."""
    f, total = list(free), 0.0
    for a in jobs:
        k = min(range(len(f)), key=lambda x: max(f[x], a) + svc[x])
        f[k] = max(f[k], a) + svc[k]
        total += f[k] - a
    return total


def central(offs, svc, gap, lookahead, tau=5.0):
    n = len(svc)
    busy = [0.0] * n
    lat = [0.0] * len(offs)
    queue, seen = [], []
    events = [(o, 0, i) for i, o in enumerate(offs)]
    heapq.heapify(events)
    while events:
        now, kind, i = heapq.heappop(events)
        if kind == 0:
            queue.append(i)
            seen.append(now)
        rate = sum(1 for a in seen if a > now - tau) / min(tau, max(now, 0.5))
        free = [max(0.0, busy[k] - now) for k in range(n)]
        waiting = []
        for qi, j in enumerate(queue):
            best = min(range(n), key=lambda k: (free[k] + svc[k], k))
            idle = [k for k in range(n) if free[k] <= 0]
            if lookahead and free[best] > 0 and idle:
                ki = min(idle, key=lambda k: svc[k])
                horizon = 2 * svc[ki]
                behind = [0.0] * (len(queue) - qi - 1) + [(x + 1) / rate for x in range(min(64, int(rate * horizon)))]
                fw = list(free)
                fw[best] += svc[best]
                fn = list(free)
                fn[ki] = svc[ki]
                if svc[ki] + eft_cost(fn, svc, behind) < fw[best] + eft_cost(fw, svc, behind):
                    best = ki
            if free[best] <= 0:
                busy[best] = now + gap + svc[best]
                lat[j] = busy[best] - offs[j]
                heapq.heappush(events, (busy[best], 1, j))
                free[best] = busy[best] - now
            else:
                free[best] += svc[best]
                waiting.append(j)
        queue = waiting
    return lat


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=4, help="traces per cell (default 4)")
    ap.add_argument("--jobs", type=int, default=200, help="jobs per trace (default 200)")
    ap.add_argument("--gap-ms", type=float, default=1.5, help="answer-to-next-start gap of the central policies")
    ap.add_argument("--oracle-s", type=float, default=0.7, help="search time of each clairvoyant schedule")
    args = ap.parse_args()
    gap = args.gap_ms / 1000
    policies = [("earliest finish", lambda o, s: central(o, s, gap, False)),
                ("look-ahead", lambda o, s: central(o, s, gap, True)),
                ("look-ahead, no gap (prefetch)", lambda o, s: central(o, s, 0.0, True))]
    print("# Dispatch policies simulated: %d traces of %d jobs per cell, gap %.1f ms\n" % (args.seeds, args.jobs,
                                                                                        args.gap_ms))
    print("| pool | load | seed | least_conn p50/p99/mean ms | clairvoyant p50 (mean-opt) / p99 (p99-opt) ms | "
          + " | ".join("%s: p50÷LC, p50÷oracle, p99÷oracle, LC p99÷p99, mean ms" % p for p, _ in policies) + " |")
    print("|---|---:|---:|---|---|" + "---|" * len(policies))
    worst = {p: [0, 0, 0, 1e9, 0] for p, _ in policies}
    oracle_above_lc = cells = 0
    for pool, svc in POOLS.items():
        cap = sum(1 / s for s in svc)
        for li, load in enumerate((0.70, 0.90)):
            for seed in range(1, args.seeds + 1):
                offs = d.poisson(args.jobs, load * cap, seed * 1000 + li)
                sims = [d.SimBackend(s) for s in svc]
                om, _ = d.clairvoyant(offs, sims, 1, lambda v: sum(v), budget_s=args.oracle_s)
                ot, _ = d.clairvoyant(offs, sims, 3, lambda v: (bb.pct(v, 99), sum(v)), budget_s=args.oracle_s)
                lc50, lc99, lcm = stats(least_conn(offs, svc))
                om50, ot99 = stats(om)[0], stats(ot)[1]
                cells += 1
                oracle_above_lc += om50 > lc50
                row = []
                for p, fn in policies:
                    p50, p99, mean = stats(fn(offs, svc))
                    r = (p50 / lc50, p50 / om50, p99 / ot99, lc99 / p99)
                    w = worst[p]
                    w[0], w[1], w[2], w[3] = max(w[0], r[0]), max(w[1], r[1]), max(w[2], r[2]), min(w[3], r[3])
                    w[4] += all((r[0] <= 1, r[1] <= 1.2, r[2] <= 1.2, r[3] >= 1.3))
                    row.append("%.2f, %.2f, %.2f, %.2f, %.0f" % (r + (mean * 1e3,)))
                print("| %s | %.0f%% | %d | %.0f / %.0f / %.0f | %.0f / %.0f | %s |" % (
                    pool, load * 100, seed, lc50 * 1e3, lc99 * 1e3, lcm * 1e3, om50 * 1e3, ot99 * 1e3, " | ".join(row)))
    print("\nWorst over the %d cells (targets: p50÷LC ≤ 1, p50÷oracle ≤ 1.2, p99÷oracle ≤ 1.2, LC p99÷p99 ≥ 1.3):\n"
          % cells)
    for p, w in worst.items():
        print("- %s: p50÷LC %.2f, p50÷oracle %.2f, p99÷oracle %.2f, LC p99÷p99 %.2f; all four met in %d of %d cells"
              % (p, w[0], w[1], w[2], w[3], w[4], cells))
    print("- the clairvoyant lowest-mean schedule itself has a p50 above least_conn's in %d of %d cells"
          % (oracle_above_lc, cells))


if __name__ == "__main__":
    main()
