#!/usr/bin/env python3
"""soak.py — a soak of the local marketplace: memory, file descriptors, lost jobs.

What it measures (issue "Soak": 30 minutes at 80 % load over the local
marketplace; RSS of every process and open fds sampled each minute; target
flat after warm-up, zero lost jobs):

1. Starts the local marketplace itself on free loopback ports, as
   deploy/run-local.sh does: sdgate-balancer (provider + admin tokens), three
   native backends that register with it (h100 / a100 / rtx3090 labels, speeds
   SIMULATED with --pace-ms-per-step 15 / 40 / 90) and sdgate-gateway (rate
   limits relaxed so that the load is never rate-limited). All at
   --log-level warn, so that logs stay small.
2. Capacity: each backend's service time for the job shape (--size, --steps),
   measured direct to the backend, one job at a time; capacity = sum of
   1 / service time (jobs/s). Then one job per GPU class on each entry point,
   so that pooled connections exist before the idle fd baseline is taken.
3. Load: Poisson arrivals at --load x capacity for --minutes, mixed over the
   real entry points: ~70 % gateway websocket (a few long-lived connections,
   generate -> done/error), ~15 % balancer jobs API (POST /v1/jobs, then
   polling GET /v1/jobs/{id}), ~15 % A1111 façade (POST /sdapi/v1/txt2img).
   Prompts, samplers, seeds and GPU hints vary. Every job is tracked:
   submitted, accepted, done, failed (by code), lost (no terminal answer
   within --job-timeout-s, a balancer 404, or a connection that dropped).
4. Every --sample-s seconds, per process: RSS (VmRSS, MiB) and open fds, plus
   the balancer's queue depth and jobs done; one markdown table row per
   sample, printed as it goes. At the end a summary: per process RSS at the
   first sample after warm-up and at the end, growth, least-squares slope in
   MiB/h over the post-warm-up samples, fds under load and idle before/after
   the load; job totals; latency per entry point; a verdict per process and
   the lost-job count.

Verdict per process: "flat" when the RSS slope after warm-up is under
SLOPE_LIMIT_MIB_H (5 MiB/h) and, once the load has drained, the process holds
at most FD_TOLERANCE (2) more fds than it did idle before the load. 5 MiB/h is
~190 bytes per job at 8 jobs/s (the default load here): any per-job leak of a
request, an answer, a PNG or a curl handle is well above it, while allocator
noise and the balancer's bounded result cache (see --result-ttl) stay below it
once warmed up. fds are compared idle-to-idle because under load they follow
the connections in flight. A slope over a post-warm-up span under 10 minutes
is mostly noise; the verdict says so.

Run (not in CI; build a Release tree first):
    cmake -S . -B build-bench -DCMAKE_BUILD_TYPE=Release
    cmake --build build-bench -j --target sdgate-backend sdgate-balancer sdgate-gateway
    python3 tests/bench/soak.py --bin build-bench                           # 30 min
    python3 tests/bench/soak.py --bin build-bench --minutes 3 --sample-s 30  # smoke
Ctrl-C stops the load, prints the summary so far and stops every program.
Exit code 0 when it ran and every job was done; 2 when any job was lost or
failed (a last line says how many and why; the tables have the rest); 1 when
it could not run: a program did not start or died during the run. The RSS
and fd verdicts do not change the exit code (on a short run the slope is
noise): read them.
Standard library only; reuses tests/integration/sdtest.py and wsclient.py.
"""

import argparse
import json
import os
import random
import signal
import statistics
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", default=os.path.join(ROOT, "build-bench"), help="CMake build dir (release)")
    ap.add_argument("--minutes", type=float, default=30.0, help="length of the load")
    ap.add_argument("--load", type=float, default=0.80, help="offered load as a fraction of measured capacity")
    ap.add_argument("--sample-s", type=float, default=60.0, help="seconds between RSS/fd samples")
    ap.add_argument("--warmup-samples", type=int, default=2, help="samples left out of the slope")
    ap.add_argument("--seed", type=int, default=1, help="seed of the arrivals and of the job mix")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--size", type=int, default=128, help="width = height, a multiple of 8")
    ap.add_argument("--ws-connections", type=int, default=4, help="long-lived gateway websockets")
    ap.add_argument("--job-timeout-s", type=float, default=120.0, help="no terminal answer by then = lost")
    ap.add_argument("--result-ttl", type=int, default=30,
                    help="the balancer's --result-ttl: finished jobs are kept this long (their images on disk), "
                         "so its RSS plateaus after warm-up instead of filling for an hour")
    return ap.parse_args()


ARGS = parse_args()
os.environ["SDGATE_BIN"] = os.path.abspath(ARGS.bin)
import sdtest as t  # noqa: E402  (reads SDGATE_BIN at import)
from wsclient import OP_TEXT, WSClient  # noqa: E402

sys.stdout.reconfigure(line_buffering=True)

SLOPE_LIMIT_MIB_H = 5.0
FD_TOLERANCE = 2
MIN_SPAN_FOR_SLOPE_S = 600.0
POLL_S = 0.2            # jobs API polling interval
CAPACITY_JOBS = 4       # measured jobs per backend (after one warm-up job)

# gpu class, provider, location, country, price per hour, SIMULATED ms per step (as deploy/run-local.sh)
BACKENDS = [
    ("h100", "Nimbus Compute", "Frankfurt, DE", "DE", 2.49, 15),
    ("a100", "Lakeside GPU Co-op", "Austin, US", "US", 1.29, 40),
    ("rtx3090", "Shibuya Render", "Tokyo, JP", "JP", 0.39, 90),
]
ENTRY_POINTS = [("gateway", 0.70), ("jobs", 0.15), ("facade", 0.15)]
ENTRY_LABEL = {"gateway": "gateway websocket", "jobs": "balancer POST /v1/jobs + poll",
               "facade": "A1111 façade POST /sdapi/v1/txt2img"}
COLOURS = ["red", "green", "blue", "yellow", "purple", "orange", "white", "black"]
SHAPES = ["circle", "square", "triangle", "star", "ring", "stripes"]
SAMPLERS = ["Euler", "Euler a", "DPM++ 2M", "DPM++ 2M Karras", "DPM++ SDE Karras", "DDIM", "LMS"]
GPU_HINTS = [([], 0.80), (["h100", "a100"], 0.10), (["a100", "rtx3090"], 0.05), (["rtx3090"], 0.05)]


class Abort(Exception):
    """The soak cannot go on (a program died): report and exit 1."""


def weighted(rng, choices):
    x = rng.random()
    for value, w in choices:
        x -= w
        if x < 0:
            return value
    return choices[-1][0]


# ---------------------------------------------------------------- the marketplace

def start_gateway(balancer_url, admin_token):
    return t.start_gateway("--balancer", balancer_url, "--admin-token", admin_token, "--log-level", "warn",
                           "--board-interval-ms", "2000", "--rate-burst", "1e9", "--rate-refill", "1e9",
                           "--max-jobs-per-connection", "1000")


def start_marketplace():
    """Balancer, three registered backends, gateway. Returns (balancer, [backends], gateway)."""
    provider_token, admin_token = os.urandom(16).hex(), os.urandom(16).hex()
    bal = t.start_balancer("--provider-token", provider_token, "--admin-token", admin_token,
                           "--heartbeat-interval", "5", "--log-level", "warn", "--max-queue", "100000",
                           "--max-queue-per-client", "100000", "--result-ttl", str(ARGS.result_ttl))
    backends = []
    for gpu, provider, location, country, price, pace in BACKENDS:
        backends.append(t.start_backend(
            "--provider", provider, "--location", location, "--country", country, "--gpu-class", gpu,
            "--price-per-hour", price, "--pace-ms-per-step", pace, "--balancer", bal.url,
            "--token", provider_token, "--log-level", "warn", name="backend-" + gpu))
        backends[-1].gpu = gpu
    registered = t.wait_until(lambda: t.request("GET", bal.url + "/healthz", timeout=5)
                              .json["backends"]["idle"] == len(BACKENDS), 30)
    if not registered:
        raise RuntimeError("the backends did not all register with the balancer")
    return bal, backends, start_gateway(bal.url, admin_token)


def stop_marketplace(bal, backends, gw):
    """In run-local.sh's order: gateway (cancels its clients' jobs), balancer, backends."""
    for p in [gw, bal] + backends:
        if p is not None:
            p.stop()


# ---------------------------------------------------------------- capacity

def job_shape(**over):
    body = {"prompt": "a red circle", "negative_prompt": "", "steps": ARGS.steps, "width": ARGS.size,
            "height": ARGS.size, "sampler_name": "Euler", "cfg_scale": 7, "seed": 1}
    body.update(over)
    return body


def service_time(backend):
    """Median seconds of one job of the shape, direct to the backend (after a warm-up job)."""
    times = []
    for i in range(CAPACITY_JOBS + 1):
        r, secs = t.txt2img(backend.url, job_shape(seed=100 + i), timeout=60)
        if r.status != 200:
            raise RuntimeError("capacity job on %s: %s" % (backend.name, t.describe(r)))
        times.append(secs)
    return statistics.median(times[1:])


def measure_capacity(backends):
    rows = [(b.gpu, service_time(b)) for b in backends]
    print("\n## Capacity (%dx%d, %d steps, direct to each backend, median of %d jobs)\n"
          % (ARGS.size, ARGS.size, ARGS.steps, CAPACITY_JOBS))
    print("| backend | service time s | jobs/s |")
    print("|---|---:|---:|")
    for gpu, s in rows:
        print("| %s | %.3f | %.2f |" % (gpu, s, 1.0 / s))
    capacity = sum(1.0 / s for _, s in rows)
    print("| **all** | | **%.2f** |" % capacity)
    return capacity


# ---------------------------------------------------------------- jobs

def random_job(rng):
    """A txt2img request of the measured shape; prompt, sampler, seed and GPU hint vary."""
    words = [rng.choice(COLOURS), rng.choice(SHAPES)]
    if rng.random() < 0.5:
        words += ["and", rng.choice(COLOURS), rng.choice(SHAPES)]
    return job_shape(prompt="a " + " ".join(words), negative_prompt=rng.choice(["", "blurry", "grey"]),
                     sampler_name=rng.choice(SAMPLERS), cfg_scale=rng.choice([5, 7, 9]),
                     seed=-1 if rng.random() < 0.2 else rng.randrange(1, 2 ** 31)), weighted(rng, GPU_HINTS)


class Job:
    __slots__ = ("id", "entry", "conn", "t0", "deadline", "accepted", "outcome", "code", "latency_ms", "gpu")

    def __init__(self, id, entry, conn=None):
        self.id, self.entry, self.conn = id, entry, conn
        self.t0 = time.monotonic()
        self.deadline = self.t0 + ARGS.job_timeout_s
        self.accepted = False
        self.outcome = self.code = self.latency_ms = self.gpu = None


class Tracker:
    """Every job's fate. The first terminal answer wins (a 'done' after the
    timeout does not undo 'lost')."""

    def __init__(self):
        self.lock = threading.Lock()
        self.jobs = {}
        self.pending = {}

    def submit(self, job):
        with self.lock:
            self.jobs[job.id] = job
            self.pending[job.id] = job

    def accept(self, id):
        with self.lock:
            if id in self.jobs:
                self.jobs[id].accepted = True

    def finish(self, id, outcome, code=None, gpu=None):
        with self.lock:
            job = self.pending.pop(id, None)
            if job is None:
                return
            job.outcome, job.code, job.gpu = outcome, code, gpu
            job.latency_ms = (time.monotonic() - job.t0) * 1000.0

    def reset(self):
        with self.lock:
            self.jobs.clear()
            self.pending.clear()

    def knows(self, id):
        with self.lock:
            return id in self.jobs

    def expire(self, now, reason="no terminal answer within %.0f s" % ARGS.job_timeout_s):
        for job in [j for j in self.pending_jobs() if now >= j.deadline]:
            self.finish(job.id, "lost", reason)

    def pending_jobs(self):
        with self.lock:
            return list(self.pending.values())

    def snapshot(self):
        with self.lock:
            return list(self.jobs.values())


def error_code(reply):
    """sdgate's error.code of an answer, else http_<status>."""
    doc = reply.json if isinstance(reply.json, dict) else {}
    err = doc.get("error")
    return err.get("code") if isinstance(err, dict) and err.get("code") else "http_%d" % reply.status


class GatewayConn(WSClient):
    """A long-lived gateway websocket. Job messages go to the tracker instead
    of piling up in .messages (30 minutes of images would); board updates are
    dropped; the rest (welcome, connection-level errors) is kept."""

    def __init__(self, port, tracker):
        self.tracker = tracker
        super().__init__("127.0.0.1", port, "/ws", timeout=30)
        self.send_json({"type": "hello"})
        if not self.wait_type("welcome", 20):
            raise RuntimeError("no welcome from the gateway")

    def _deliver(self, opcode, payload):
        msg = None
        if opcode == OP_TEXT:
            try:
                msg = json.loads(payload.decode("utf-8"))
            except ValueError:
                pass
        if isinstance(msg, dict):
            if msg.get("type") == "board":
                return
            if self.tracker.knows(msg.get("id")):
                self.on_job_message(msg)
                return
        super()._deliver(opcode, payload)

    def on_job_message(self, msg):
        kind, id = msg.get("type"), msg.get("id")
        if kind == "accepted":
            self.tracker.accept(id)
        elif kind == "done":
            self.tracker.finish(id, "done", gpu=msg.get("gpu"))
        elif kind == "error":
            self.tracker.finish(id, "failed", msg.get("code") or "error")

    def generate(self, id, body, gpus):
        self.send_json(dict(body, type="generate", id=id, gpus=gpus))


def via_jobs_api(bal_url, tracker, job, body, gpus):
    try:
        r = t.request("POST", bal_url + "/v1/jobs", json_body=dict(body, gpus=gpus), timeout=30)
    except (OSError, t.httpclient.HTTPException) as e:
        tracker.finish(job.id, "lost", "POST /v1/jobs: %s" % e.__class__.__name__)
        return
    if r.status != 202:
        tracker.finish(job.id, "failed", error_code(r))
        return
    tracker.accept(job.id)
    url = bal_url + "/v1/jobs/" + r.json["id"]
    while time.monotonic() < job.deadline:
        time.sleep(POLL_S)
        try:
            r = t.request("GET", url, timeout=30)
        except (OSError, t.httpclient.HTTPException):
            continue  # a transient failure; the deadline decides
        if r.status == 404:
            tracker.finish(job.id, "lost", "balancer 404 for an accepted job")
            return
        status = r.json.get("status") if isinstance(r.json, dict) else None
        if status == "done":
            tracker.finish(job.id, "done", gpu=r.json.get("gpu"))
            return
        if status in ("failed", "cancelled"):
            err = r.json.get("error") or {}
            tracker.finish(job.id, "failed", err.get("code") or status)
            return
    tracker.finish(job.id, "lost", "no terminal state within %.0f s" % ARGS.job_timeout_s)


def via_facade(bal_url, tracker, job, body, gpus):
    if gpus:
        body = dict(body, sdgate={"gpus": gpus})
    try:
        r, _ = t.txt2img(bal_url, body, timeout=ARGS.job_timeout_s)
    except (OSError, t.httpclient.HTTPException) as e:
        tracker.finish(job.id, "lost", "façade: %s" % e.__class__.__name__)
        return
    if r.status == 200:
        tracker.accept(job.id)
        info = t.info_of(r) or {}
        tracker.finish(job.id, "done", gpu=(info.get("sdgate") or {}).get("gpu"))
    else:
        tracker.finish(job.id, "failed", error_code(r))


class Load:
    """Submits one job on its entry point: websocket jobs from the caller's
    thread (a send), HTTP jobs on a thread each."""

    def __init__(self, bal, gw, tracker, rng):
        self.bal_url, self.tracker, self.rng = bal.url, tracker, rng
        self.conns = [GatewayConn(gw.port, tracker) for _ in range(ARGS.ws_connections)]
        self.n = 0

    def submit_random(self):
        body, gpus = random_job(self.rng)
        self.submit(weighted(self.rng, ENTRY_POINTS), body, gpus)

    def prime(self):
        """One job per GPU class on each entry point, waited for and then
        forgotten, so that the pooled connections (gateway to balancer,
        balancer to each backend) exist before the idle fd baseline."""
        for gpu, *_ in BACKENDS:
            for entry, _ in ENTRY_POINTS:
                self.submit(entry, job_shape(seed=self.n + 1), [gpu])
        drain(self.tracker, self)
        bad = [j for j in self.tracker.snapshot() if j.outcome != "done"]
        self.tracker.reset()
        if bad:
            raise RuntimeError("priming jobs did not all finish: %s"
                               % ", ".join("%s %s %s" % (j.entry, j.outcome, j.code) for j in bad))

    def submit(self, entry, body, gpus):
        self.n += 1
        conn = self.conns[self.n % len(self.conns)] if entry == "gateway" else None
        job = Job("soak-%d" % self.n, entry, conn)
        self.tracker.submit(job)
        if conn is not None:
            try:
                conn.generate(job.id, body, gpus)
            except OSError as e:
                self.tracker.finish(job.id, "lost", "websocket send: %s" % e.__class__.__name__)
            return
        fn = via_jobs_api if entry == "jobs" else via_facade
        threading.Thread(target=fn, args=(self.bal_url, self.tracker, job, body, gpus), daemon=True).start()

    def drop_jobs_of_closed_connections(self):
        """A closed websocket's unfinished jobs will never answer: lost."""
        for job in self.tracker.pending_jobs():
            if job.conn is not None and job.conn.closed:
                self.tracker.finish(job.id, "lost", "websocket closed")

    def connection_errors(self):
        return [m for c in self.conns for m in c.messages if isinstance(m, dict) and m.get("type") == "error"]

    def close(self):
        for c in self.conns:
            c.close(wait=1.0)


# ---------------------------------------------------------------- sampling

def proc_sample(pid):
    """(RSS MiB, open fds) of a live process."""
    return t.proc_rss_mib(pid), t.proc_fds(pid)


class Sampler:
    """Samples every process and prints one markdown row per sample."""

    def __init__(self, bal, procs, tracker):
        self.bal, self.procs, self.tracker = bal, procs, tracker
        self.rows = []          # (seconds since start, done, {name: (rss, fds)})
        self.t0 = None
        self.last = (0.0, 0)    # (seconds, done) of the previous row

    def check_alive(self):
        for name, p in self.procs:
            if not p.running():
                raise Abort("%s exited on its own (code %r) during the soak; last lines of its log:\n%s"
                            % (name, p.proc.returncode, p.log_tail(25)))

    def take(self):
        """{name: (rss, fds)} now."""
        self.check_alive()
        return {name: proc_sample(p.proc.pid) for name, p in self.procs}

    def queue_depth(self):
        try:
            return t.request("GET", self.bal.url + "/healthz", timeout=5).json["queue"]
        except (OSError, t.httpclient.HTTPException, TypeError, KeyError):
            return "?"

    def header(self):
        self.t0 = time.monotonic()
        names = [n for n, _ in self.procs]
        print("\n## Samples every %.0f s (RSS MiB / open fds; the first %d after the start are warm-up)\n"
              % (ARGS.sample_s, ARGS.warmup_samples))
        print("| min | jobs done | jobs/s | queue | failed | lost | " + " | ".join(names) + " |")
        print("|---:|---:|---:|---:|---:|---:|" + "---:|" * len(names))

    def sample(self):
        now = time.monotonic() - self.t0
        procs = self.take()
        jobs = self.tracker.snapshot()
        done = sum(1 for j in jobs if j.outcome == "done")
        failed = sum(1 for j in jobs if j.outcome == "failed")
        lost = sum(1 for j in jobs if j.outcome == "lost")
        rate = (done - self.last[1]) / (now - self.last[0]) if now > self.last[0] else 0.0
        self.last = (now, done)
        self.rows.append((now, done, procs))
        tag = " (warm-up)" if 0 < len(self.rows) - 1 <= ARGS.warmup_samples else ""
        print("| %.1f%s | %d | %.2f | %s | %d | %d | " % (now / 60.0, tag, done, rate, self.queue_depth(), failed, lost)
              + " | ".join("%.1f / %d" % procs[n] for n, _ in self.procs) + " |")

    def post_warmup(self):
        """Rows after the warm-up (row 0 is the start of the load); all rows when too few."""
        rows = self.rows[1 + ARGS.warmup_samples:]
        return rows if len(rows) >= 2 else self.rows


# ---------------------------------------------------------------- summary

def lsq_slope(xs, ys):
    n = len(xs)
    if n < 2:
        return 0.0
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx if sxx else 0.0


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100.0 * (len(xs) - 1))))]


def verdict(slope, fd_before, fd_after):
    """'flat', or what grew; n/a when the run did not reach its idle end."""
    if fd_after is None:
        return "n/a (the run did not finish)"
    problems = []
    if slope >= SLOPE_LIMIT_MIB_H:
        problems.append("RSS %+.1f MiB/h" % slope)
    if fd_after - fd_before > FD_TOLERANCE:
        problems.append("fds idle %d → %d" % (fd_before, fd_after))
    return "GROWING: " + ", ".join(problems) if problems else "flat"


def print_process_summary(sampler, idle_before, idle_after, job_rate):
    rows = sampler.post_warmup()
    span = rows[-1][0] - rows[0][0]
    print("\n## Processes (post-warm-up: %d samples over %.1f min)\n" % (len(rows), span / 60.0))
    print("| process | RSS MiB first | RSS MiB end | growth MiB | slope MiB/h | ≈ bytes/job | fds under load "
          "min–max | fds idle before → after | verdict |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    verdicts = []
    hours = [r[0] / 3600.0 for r in rows]
    for name, _ in sampler.procs:
        rss = [r[2][name][0] for r in rows]
        fds = [r[2][name][1] for r in rows]
        slope = lsq_slope(hours, rss)
        per_job = slope * 1048576 / (job_rate * 3600.0) if job_rate > 0 else 0.0
        fd_before = idle_before[name][1]
        fd_after = idle_after[name][1] if idle_after else None
        verdicts.append((name, verdict(slope, fd_before, fd_after)))
        print("| %s | %.1f | %.1f | %+.1f | %+.2f | %+.0f | %d–%d | %d → %s | %s |" % (
            name, rss[0], rss[-1], rss[-1] - rss[0], slope, per_job, min(fds), max(fds), fd_before,
            "?" if fd_after is None else fd_after, verdicts[-1][1]))
    print()
    note = "" if span >= MIN_SPAN_FOR_SLOPE_S else \
        " (post-warm-up span %.1f min < %.0f min: the slope is mostly noise at this length)" % (
            span / 60.0, MIN_SPAN_FOR_SLOPE_S / 60.0)
    print("Flat = RSS slope < %.0f MiB/h after warm-up and fds idle after the load ≤ idle before + %d.%s"
          % (SLOPE_LIMIT_MIB_H, FD_TOLERANCE, note))
    for name, v in verdicts:
        print("- %s: %s" % (name, v))


def print_job_summary(tracker, load):
    jobs = tracker.snapshot()
    print("\n## Jobs\n")
    print("| entry point | submitted | accepted | done | failed | lost | p50 ms | p99 ms | max ms |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for entry, _ in ENTRY_POINTS + [("all", 0)]:
        js = [j for j in jobs if entry in ("all", j.entry)]
        lat = [j.latency_ms for j in js if j.outcome == "done"]
        count = lambda o: sum(1 for j in js if j.outcome == o)  # noqa: E731
        stats = ("%.0f | %.0f | %.0f" % (statistics.median(lat), pct(lat, 99), max(lat))) if lat else "– | – | –"
        print("| %s | %d | %d | %d | %d | %d | %s |" % (
            ENTRY_LABEL.get(entry, "**all**"), len(js), sum(1 for j in js if j.accepted), count("done"),
            count("failed"), count("lost"), stats))
    print()
    by = lambda outcome, key: sorted(  # noqa: E731
        {k: sum(1 for j in jobs if j.outcome == outcome and key(j) == k)
         for k in {key(j) for j in jobs if j.outcome == outcome}}.items())
    print("- done by GPU: %s" % (", ".join("%s %d" % kv for kv in by("done", lambda j: str(j.gpu))) or "none"))
    print("- failed by code: %s" % (", ".join("%s %d" % kv for kv in by("failed", lambda j: j.code)) or "none"))
    lost = [j for j in jobs if j.outcome == "lost"]
    if lost:
        print("- lost by reason: %s" % ", ".join("%s %d" % kv for kv in by("lost", lambda j: j.code)))
        print("- first lost ids: %s" % ", ".join("%s (%s)" % (j.id, j.entry) for j in lost[:10]))
    unfinished = len(tracker.pending_jobs())
    if unfinished:
        print("- still unanswered when the run was stopped: %d" % unfinished)
    errs = load.connection_errors() if load else []
    if errs:
        print("- connection-level websocket errors: %d, e.g. %s" % (len(errs), t.short(errs[0], 200)))
    print("\n**lost jobs: %d**" % len(lost))


def jobs_verdict(tracker):
    """2 (and why, on one line) when any job was lost or failed, else 0."""
    jobs = tracker.snapshot()
    bad = [j for j in jobs if j.outcome in ("lost", "failed")]
    if not bad:
        return 0
    reasons = {}
    for j in bad:
        key = "%s: %s" % (j.outcome, j.code)
        reasons[key] = reasons.get(key, 0) + 1
    print("\n# SOAK FAILED: %d of %d jobs lost, %d failed (%s)"
          % (sum(j.outcome == "lost" for j in bad), len(jobs), sum(j.outcome == "failed" for j in bad),
             ", ".join("%s × %d" % kv for kv in sorted(reasons.items()))), flush=True)
    return 2


# ---------------------------------------------------------------- main

def run_load(load, sampler, tracker, rate, rng):
    """Poisson arrivals at `rate` for ARGS.minutes, sampling every ARGS.sample_s."""
    sampler.header()
    duration = ARGS.minutes * 60.0
    start = sampler.t0
    sampler.sample()
    k = 1
    next_sample = start + min(ARGS.sample_s, duration)
    next_arrival = start + rng.expovariate(rate)
    end = start + duration
    while True:
        now = time.monotonic()
        if now >= next_sample:
            tracker.expire(now)
            load.drop_jobs_of_closed_connections()
            sampler.sample()
            if next_sample >= end:
                return
            k += 1
            next_sample = min(start + k * ARGS.sample_s, end)
            continue
        if next_arrival < end and now >= next_arrival:
            load.submit_random()
            next_arrival += rng.expovariate(rate)
            continue
        time.sleep(max(0.0, min(next_sample, next_arrival if next_arrival < end else next_sample) - now))


def drain(tracker, load):
    """Waits for every unanswered job, up to its deadline; the rest is lost."""
    t0 = time.monotonic()
    while tracker.pending_jobs():
        now = time.monotonic()
        tracker.expire(now)
        load.drop_jobs_of_closed_connections()
        time.sleep(0.2)
    return time.monotonic() - t0


def settle_sample(sampler, seconds=3.0):
    """Processes' (RSS, fds) once idle: after a moment for connections to close."""
    time.sleep(seconds)
    return sampler.take()


def on_sigterm(signum, frame):
    raise KeyboardInterrupt  # stop as on Ctrl-C


def main():
    signal.signal(signal.SIGTERM, on_sigterm)
    bal = gw = load = sampler = idle_before = idle_after = None
    backends = []
    tracker = Tracker()
    code, interrupted = 0, False
    t_start = time.monotonic()
    try:
        print("# sdgate soak: %.0f min at %.0f %% of capacity\n" % (ARGS.minutes, ARGS.load * 100))
        print("Host: %d CPUs; release build from %s; everything on loopback; backends' speeds SIMULATED "
              "(--pace-ms-per-step 15/40/90); job %dx%d, %d steps; balancer --result-ttl %d."
              % (os.cpu_count(), t.BIN_DIR, ARGS.size, ARGS.size, ARGS.steps, ARGS.result_ttl))
        bal, backends, gw = start_marketplace()
        procs = [("balancer", bal)] + [(b.gpu, b) for b in backends] + [("gateway", gw)]
        capacity = measure_capacity(backends)
        rate = ARGS.load * capacity
        rng = random.Random(ARGS.seed)
        load = Load(bal, gw, tracker, rng)
        load.prime()
        sampler = Sampler(bal, procs, tracker)
        idle_before = settle_sample(sampler)
        print("\nOffered: Poisson arrivals at %.2f jobs/s (%.0f %% of %.2f) for %.1f min; entry points %s; "
              "%d websocket connections; job timeout %.0f s."
              % (rate, ARGS.load * 100, capacity, ARGS.minutes,
                 ", ".join("%s %.0f %%" % (e, w * 100) for e, w in ENTRY_POINTS), ARGS.ws_connections,
                 ARGS.job_timeout_s))
        run_load(load, sampler, tracker, rate, rng)
        print("\nLoad stopped; drained the last jobs in %.1f s." % drain(tracker, load))
        idle_after = settle_sample(sampler)
    except KeyboardInterrupt:
        interrupted = True
        print("\n# interrupted: stopping the load and every program", flush=True)
    except Abort as e:
        code = 1
        print("\n# SOAK ABORTED: %s" % e, flush=True)
    except Exception as e:  # noqa: BLE001 - could not run: say why, stop everything
        code = 1
        print("\n# SOAK COULD NOT RUN: %s: %s" % (e.__class__.__name__, e), flush=True)
    finally:
        if sampler is not None and sampler.rows:
            done = sampler.rows[-1][1]
            span = sampler.rows[-1][0]
            print_process_summary(sampler, idle_before, idle_after, done / span if span else 0.0)
            print_job_summary(tracker, load)
        if interrupted:
            print("\n(interrupted: the figures cover the run so far)")
        code = code or jobs_verdict(tracker)
        if load is not None:
            load.close()
        print("\n## Stopping\n")
        stop_marketplace(bal, backends, gw)
        t._cleanup()
        print("\n_took %.0f s_" % (time.monotonic() - t_start))
    return code


if __name__ == "__main__":
    sys.exit(main())
