#!/usr/bin/env python3
"""bench_progress.py — live progress (issue 11 §6), printed as a table.

A paced native sdgate-backend behind sdgate-balancer and sdgate-gateway, a
websocket client sending jobs one after another. Each step's time is taken
at the backend from its own debug log line ("job: step N/M", --log-level
debug; the line is written when the step is done, before it is published),
each progress message's time at the client when its frame is read; both are
CLOCK_REALTIME on this machine. For every progress message: latency = arrival
- the time the backend reached that step; interval = the gap since the
previous progress message of the job (the
latency of the first message that shows a step: a new preview may come with the
same step again). Also the preview count and size, and
the balancer's and backend's CPU per second of running job (/proc).

The same run measures each polling setting in turn:
  before  --progress-interval-ms 500 --preview-interval-ms 1  (the old
          behaviour: a poll every 500 ms, each asking for the image), or an
          older build's balancer and gateway with their defaults
          (--before-bin; the backend is this build's, for its step log)
  after   the defaults (50 ms polls without the image, a preview at most
          every 1000 ms)
and each on two job shapes: 25 steps x 20 ms (the issue's 0.5 s job) and
15 steps x 130 ms (a step time that is no multiple of the poll interval, so
that polls do not lock onto the steps' phase). Target: a message at least every 250 ms or every step,
whichever is rarer; latency p99 under 100 ms.

Usage: python3 tests/bench/bench_progress.py --bin build-bench [--jobs 8].
Standard library only; not a test (nothing asserts), a measurement.
"""

import argparse
import datetime
import os
import re
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", default=os.path.join(ROOT, "build"), help="CMake build dir (release)")
    ap.add_argument("--jobs", type=int, default=12, help="jobs per setting and shape")
    ap.add_argument("--before-bin", help="an older build dir: 'before' runs its programs with their defaults")
    return ap.parse_args()


ARGS = parse_args()
os.environ["SDGATE_BIN"] = os.path.abspath(ARGS.bin)
import sdtest as t  # noqa: E402  (reads SDGATE_BIN at import)
from wsclient import WSClient  # noqa: E402

ADMIN = "bench-progress-admin"
SETTINGS = [("before", ["--progress-interval-ms", 500, "--preview-interval-ms", 1], 500), ("after", [], 50)]
IDLE_S = 3.0  # the CPU the programs use idle, subtracted
SHAPES = [(25, 20), (15, 130)] if not os.environ.get("BENCH_SHAPE") else [tuple(map(int, os.environ["BENCH_SHAPE"].split("x")))]  # (steps, ms per step); 130: not a multiple of a poll interval (no phase lock)
STEP_LINE = re.compile(r"^(\S+)Z DEBUG backend: job: step (\d+)/(\d+) of image 1/1")


def pct(xs, p):
    xs = sorted(xs)
    if not xs:
        return float("nan")
    return xs[min(len(xs) - 1, int(round(p / 100.0 * (len(xs) - 1))))]


def step_times(log_path, since):
    """[(unix time, step, steps)] of the backend's step lines written after since."""
    out = []
    with open(log_path, encoding="utf-8", errors="replace") as f:
        for line in f:
            m = STEP_LINE.match(line)
            if not m:
                continue
            ts = datetime.datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S.%f")
            ts = ts.replace(tzinfo=datetime.timezone.utc).timestamp()
            if ts >= since - 0.002:
                out.append((ts, int(m.group(2)), int(m.group(3))))
    return out


def run_jobs(ws, be, steps, jobs, tag):
    """Runs jobs one after another; returns [(job's messages with arrival times, its backend step times)]."""
    runs = []
    for i in range(jobs):
        jid = "%s-%d" % (tag, i)
        start = ws.count()
        t0 = time.time()
        ws.send_json({"type": "generate", "id": jid, "prompt": "a red circle on a blue square",
                      "negative_prompt": "", "sampler_name": "Euler a", "steps": steps, "cfg_scale": 7,
                      "width": 64, "height": 64, "seed": 100 + i, "gpus": []})
        done = ws.wait_for(lambda m: isinstance(m, dict) and m.get("id") == jid
                           and m.get("type") in ("done", "error"), 120, start)
        if not done or done.get("type") != "done":
            print("# job %s: %s" % (jid, done))
        time.sleep(0.05)  # the log line of the last step is written
        with ws._cv:
            msgs = [(ws.arrivals[k], m) for k, m in enumerate(ws.messages)
                    if k >= start and isinstance(m, dict) and m.get("id") == jid]
        # the steps of this job only: after it was sent, before the next
        runs.append((msgs, step_times(be.log_path, t0)))
    return runs


def measure(setting, args, steps, pace, jobs):
    t.BIN_DIR = os.path.abspath(ARGS.bin)
    be = t.start_backend("--gpu-class", "a100", "--pace-ms-per-step", pace, "--log-level", "debug",
                         name="backend-%s-%d" % (setting, pace))
    if setting == "before" and ARGS.before_bin:  # its balancer and gateway; this backend (it logs the steps)
        t.BIN_DIR, args = os.path.abspath(ARGS.before_bin), []
    bal = t.start_balancer("--admin-token", ADMIN, "--backend", be.url, *args, name="balancer-%s-%d" % (setting, pace))
    t.wait_idle_backends(bal.url, 1, 30)
    gw = t.start_gateway("--balancer", bal.url, "--admin-token", ADMIN, wait_board=True,
                         name="gateway-%s-%d" % (setting, pace))
    ws = WSClient("127.0.0.1", gw.port, "/ws", timeout=30)
    ws.arrivals = {}
    orig = ws._deliver

    def deliver(opcode, payload):
        now = time.time()
        orig(opcode, payload)
        with ws._cv:
            ws.arrivals[len(ws.messages) - 1] = now
    ws._deliver = deliver
    ws.send_json({"type": "hello"})
    ws.wait_type("welcome", 20)
    run_jobs(ws, be, steps, 1, "warm-%s-%d" % (setting, pace))
    pids = (bal.proc.pid, be.proc.pid, gw.proc.pid)
    i0, iw = [t.proc_cpu_s(p) for p in pids], time.monotonic()
    time.sleep(IDLE_S)
    idle = [(t.proc_cpu_s(p) - c) / (time.monotonic() - iw) for p, c in zip(pids, i0)]  # CPU s per s, idle
    cpu0 = (t.proc_cpu_s(bal.proc.pid), t.proc_cpu_s(be.proc.pid), t.proc_cpu_s(gw.proc.pid))
    w0 = time.monotonic()
    runs = run_jobs(ws, be, steps, jobs, "%s-%d" % (setting, pace))
    wall = time.monotonic() - w0
    cpu1 = (t.proc_cpu_s(bal.proc.pid), t.proc_cpu_s(be.proc.pid), t.proc_cpu_s(gw.proc.pid))
    ws.close()
    for p in (gw, bal, be):
        p.stop()

    lat, gaps, counts, previews, pbytes, first = [], [], [], 0, [], []
    for msgs, st in runs:
        at_step = {}
        for ts, s, _ in st:
            at_step.setdefault(s, ts)
        start = min(at_step.values()) - pace / 1000.0 if at_step else None  # about when step 1 began
        prog = [(a, m) for a, m in msgs if m.get("type") == "progress"]
        counts.append(len(prog))
        prev, last_step = None, None
        for a, m in prog:
            s = m.get("step")
            if s in at_step and s != last_step:  # the first message with this step (a new preview may repeat it)
                lat.append(a - at_step[s])
            last_step = s
            if prev is not None:
                gaps.append(a - prev)
            elif start is not None:
                first.append(a - start)
            prev = a
            if "preview" in m:
                previews += 1
                pbytes.append(len(m["preview"]))
    cpu = [c1 - c0 - i * wall for c0, c1, i in zip(cpu0, cpu1, idle)]  # above idle
    return {"lat": lat, "gaps": gaps, "counts": counts, "previews": previews, "pbytes": pbytes,
            "first": first, "cpu": cpu, "wall": wall}


def main():
    try:
        load = open("/proc/loadavg").read().split()[:3]
    except OSError:
        load = ["?"]
    print("# bench_progress: %d jobs per row, loadavg %s, %d CPUs" % (ARGS.jobs, " ".join(load), os.cpu_count()))
    hdr = ("%-7s %-11s %5s %9s %9s %9s %9s %9s %9s %8s %10s %10s %10s" %
           ("setting", "job", "msgs", "gap p50", "gap p99", "gap max", "lat p50", "lat p99", "lat max",
            "previews", "bal CPU", "be CPU", "gw CPU"))
    rows, per_shape = [], {}
    for steps, pace in SHAPES:
        for name, args, interval in SETTINGS:
            r = measure(name, args, steps, pace, ARGS.jobs)
            n = max(1, ARGS.jobs)
            busy = r["wall"]
            polls = ARGS.jobs * steps * pace / interval
            rows.append("%-7s %-11s %5.1f %7.0fms %7.0fms %7.0fms %7.0fms %7.0fms %7.0fms %8s %9.2f%% %9.2f%% %9.2f%%" % (
                name, "%dx%dms" % (steps, pace), sum(r["counts"]) / n, pct(r["gaps"], 50) * 1e3,
                pct(r["gaps"], 99) * 1e3, max(r["gaps"] or [float("nan")]) * 1e3, pct(r["lat"], 50) * 1e3,
                pct(r["lat"], 99) * 1e3, max(r["lat"] or [float("nan")]) * 1e3,
                "%d/%dB" % (r["previews"], int(sum(r["pbytes"]) / max(1, len(r["pbytes"])))),
                100 * r["cpu"][0] / busy, 100 * r["cpu"][1] / busy, 100 * r["cpu"][2] / busy))
            per_shape.setdefault((steps, pace), []).append((r["cpu"], polls, busy))
            print("# %s %dx%dms: first message %.0f ms after step 1 began (p50); %d latencies, p90 %.0f ms, "
                  "p95 %.0f ms, the 5 largest %s ms" % (name, steps, pace, pct(r["first"], 50) * 1e3, len(r["lat"]),
                                                       pct(r["lat"], 90) * 1e3, pct(r["lat"], 95) * 1e3,
                                                       [round(x * 1e3) for x in sorted(r["lat"])[-5:]]), flush=True)
    print()
    print("msgs: progress messages per job at the websocket; gap: between two of a job; lat: arrival - the")
    print("backend's step; previews: count/mean base64 bytes; CPU: of one core over the jobs' wall time, above")
    print("idle (the backend's includes the job itself).")
    print(hdr)
    for row in rows:
        print(row)
    print()
    for (steps, pace), ((cb, pb, wb), (ca, pa, wa)) in per_shape.items():
        extra = pa - pb
        print("%dx%dms: each extra poll (%.0f after vs %.0f before) costs the balancer %.0f µs, the backend %.0f µs,"
              " the gateway %.0f µs of CPU (all its costs: the poll, the event, the websocket message)" %
              (steps, pace, pa, pb, 1e6 * (ca[0] - cb[0]) / extra, 1e6 * (ca[1] - cb[1]) / extra,
               1e6 * (ca[2] - cb[2]) / extra))


if __name__ == "__main__":
    main()
