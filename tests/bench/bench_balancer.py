#!/usr/bin/env python3
"""bench_balancer.py — sdgate-balancer beside NGINX, printed as markdown tables.

    python3 tests/bench/bench_balancer.py --bin build-bench [--part overhead|sched|all]

Starts every program itself on free loopback ports (sdgate-backend ×N,
sdgate-balancer, and NGINX with its own config and prefix in a temp dir,
never the system service), runs, prints the tables and stops everything.
Not a ctest: a benchmark, not a pass/fail test. Needs nginx and wrk
(deploy/install-deps.sh installs both) and Python 3's standard library.

(a) overhead — the same small txt2img (64x64, 1 step: the backend answers at
    once) sent direct to a backend, through the balancer's A1111 façade
    (POST /sdapi/v1/txt2img, which waits and returns the A1111 answer), and
    through NGINX (least_conn upstream with keepalive over the same
    backends); with --store both, also through a balancer whose store is a
    throwaway PostgreSQL server on this host, and through 2 and 3
    balancers sharing one database (docs/cluster.md) behind an NGINX round
    robin (the server's and that NGINX's CPU counted with the path's). Latency: wrk with one connection, p50/p99 and what the path
    adds to the direct one. Throughput: wrk at several connection counts;
    direct means one wrk per backend at once (the backends' own ceiling).
    Targets: added p50 < 1 ms; jobs/s >= 0.8 x NGINX's.

(b) scheduling — 3 backends paced to speeds 1x, 2x, 4x (--pace-ms-per-step),
    Poisson arrivals at 70% and 95% of the measured total capacity, the same
    arrival sequence (fixed seed) for each policy: the balancer (central
    queue), NGINX least_conn and NGINX round robin (which queue on the
    backends, each of which serves one job at a time, FIFO). Job latency is
    client-side (scheduled arrival to full answer); per-backend utilisation
    is the sum of the backends' reported inference_time over the run's span.
    Target: balancer p99 at 95% at least 30% below NGINX least_conn's.
"""

import argparse
import atexit
import http.client
import json
import math
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
import sdtest as t  # noqa: E402  (process start-up on free ports, temp dirs, cleanup at exit)

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
PG_PATH = "balancer (PostgreSQL)"
PG2_PATH = "2 balancers, one PostgreSQL (NGINX rr)"
PG3_PATH = "3 balancers, one PostgreSQL (NGINX rr)"
WRK = shutil.which("wrk") or "/usr/bin/wrk"

_nginxes = []


def note(msg):
    print("# " + msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- programs

def stop(prog, timeout=10.0):
    """SIGTERM, wait, SIGKILL after timeout. Returns the exit code (None if killed)."""
    if prog is None or prog.stopped:
        return None
    prog.stopped = True
    rc = prog.proc.poll()
    if rc is None:
        prog.proc.send_signal(signal.SIGTERM)
        try:
            rc = prog.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            prog.proc.kill()
            prog.proc.wait()
            rc = None
    try:
        prog._log.close()
    except Exception:  # noqa: BLE001
        pass
    return rc


def start_backends(specs, port=None):
    """specs: list of (provider, gpu_class, pace_ms[, price_per_hour]); port
    (one spec only): restart on that port. Returns Programs with .provider,
    .gpu, .pace and .identity (the balancer's --backend fragment)."""
    out = []
    for spec in specs:
        provider, gpu, pace = spec[:3]
        args = ["--provider", provider, "--gpu-class", gpu, "--log-level", "warn", "--cpu"]
        if pace:
            args += ["--pace-ms-per-step", str(pace)]
        be = t.start_backend(*args, name="be-" + provider, port=port)
        be.provider, be.gpu, be.pace = provider, gpu, pace
        be.identity = {"provider": provider}
        if len(spec) > 3:
            be.identity["price_per_hour"] = spec[3]
        out.append(be)
    return out


def start_balancer(backends, log_level, extra=(), db=None, name="balancer"):
    args = ["--log-level", log_level, "--max-queue", "100000", "--max-queue-per-client", "100000"] + list(extra)
    for be in backends:
        args += ["--backend", t.static_backend_arg(be.url, **be.identity)]
    bal = t.start_balancer(*args, name=name, db=db)
    # Wait until the balancer sees every backend idle (it probes /sdgate/v1/info).
    t.wait_until(lambda: (t.http("GET", bal.url + "/healthz", timeout=5)[1] or {}).get("backends", {}).get("idle")
                 == len(backends), timeout=30)
    return bal


class Nginx:
    """nginx -p DIR -c DIR/nginx.conf -g 'daemon off;' with one server per
    upstream: upstreams is a list of (name, policy, [backend ports]); policy
    'least_conn' or 'round_robin'. .urls[name] is its address."""

    def __init__(self, upstreams, workers="auto"):
        self.dir = t.tmpdir("nginx")
        self.workers = workers
        self.urls = {}
        for name, _, _ in upstreams:
            self.urls[name] = "http://127.0.0.1:%d" % t.free_port()
        self.conf = os.path.join(self.dir, "nginx.conf")
        self._write_conf(upstreams)
        d = self.dir
        self.log = open(os.path.join(d, "stdout.log"), "wb")
        self.proc = subprocess.Popen([NGINX, "-p", d + "/", "-c", self.conf, "-e", d + "/error.log",
                                      "-g", "daemon off;"], stdout=self.log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        _nginxes.append(self)
        for name, url in self.urls.items():
            ok = t.wait_until(lambda: self.proc.poll() is None and
                              t.http("GET", url + "/internal/ping", timeout=2)[0] == 200, timeout=20)
            if not ok:
                raise RuntimeError("nginx did not come up (%s); error.log:\n%s" % (url, self.error_log()))

    def _write_conf(self, upstreams):
        ups, servers = [], []
        for name, policy, ports in upstreams:
            port = int(self.urls[name].rsplit(":", 1)[1])
            ups.append("  upstream %s {\n%s    zone %s 64k;\n%s    keepalive 128;\n  }\n" % (
                name, "    least_conn;\n" if policy == "least_conn" else "", name,
                "".join("    server 127.0.0.1:%d max_fails=0;\n" % p for p in ports)))
            servers.append(
                "  server {\n"
                "    listen 127.0.0.1:%d backlog=4096;\n"
                "    location / {\n"
                "      proxy_pass http://%s;\n"
                "      proxy_http_version 1.1;\n"
                "      proxy_set_header Connection \"\";\n"
                "      proxy_next_upstream off;\n"
                "      proxy_read_timeout 600s;\n"
                "      proxy_send_timeout 600s;\n"
                "    }\n"
                "  }\n" % (port, name))
        d = self.dir
        conf = (
            "worker_processes %s;\n"
            "pid %s/nginx.pid;\n"
            "error_log %s/error.log warn;\n"
            "events { worker_connections 4096; }\n"
            "http {\n"
            "  access_log off;\n"
            "  keepalive_requests 1000000;\n"
            "  client_max_body_size 1m;\n"
            "  client_body_temp_path %s/body;\n"
            "  proxy_temp_path %s/proxy;\n"
            "  fastcgi_temp_path %s/fastcgi;\n"
            "  uwsgi_temp_path %s/uwsgi;\n"
            "  scgi_temp_path %s/scgi;\n"
            "%s%s"
            "}\n" % (self.workers, d, d, d, d, d, d, d, "".join(ups), "".join(servers)))
        with open(self.conf, "w") as f:
            f.write(conf)

    def reload(self, upstreams):
        """Rewrites the config (same names, same listen ports) and sends SIGHUP,
        as an operator adds a server: old workers finish what they hold, new
        ones take new connections. Waits until a new worker answers."""
        self._write_conf(upstreams)
        before = set(children_of(self.proc.pid))
        self.proc.send_signal(signal.SIGHUP)
        t.wait_until(lambda: set(children_of(self.proc.pid)) - before, timeout=10)

    def error_log(self):
        try:
            with open(os.path.join(self.dir, "error.log")) as f:
                return f.read()[-3000:]
        except OSError:
            return ""

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)  # graceful
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


@atexit.register
def _kill_nginxes():
    for n in _nginxes:
        if n.proc.poll() is None:
            n.proc.kill()


# ---------------------------------------------------------------- HTTP

def post_job(url, body, timeout=120):
    """One POST /sdapi/v1/txt2img on a fresh connection. Returns
    (status, seconds, provider or None, inference_time or None, error text)."""
    host, port = url.split("//")[1].split(":")
    data = json.dumps(body).encode("utf-8")
    t0 = time.monotonic()
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.request("POST", "/sdapi/v1/txt2img", data, {"Content-Type": "application/json"})
        r = conn.getresponse()
        raw = r.read()
        status = r.status
    except (OSError, http.client.HTTPException) as e:
        return None, time.monotonic() - t0, None, None, str(e)
    finally:
        conn.close()
    took = time.monotonic() - t0
    provider = inference = err = None
    try:
        doc = json.loads(raw)
        info = json.loads(doc["info"])
        provider = info["sdgate"]["provider"]
        inference = float(info["sdgate"]["inference_time"])
        if not doc.get("images"):
            err = "no images"
    except (ValueError, KeyError, TypeError):
        err = "HTTP %s %s" % (status, raw[:200])
    return status, took, provider, inference, err


class KeepAlive:
    """One keep-alive HTTP/1.1 connection (reopened after an error)."""

    def __init__(self, url):
        host, port = url.split("//")[1].split(":")
        self.host, self.port = host, int(port)
        self.conn = None

    def post(self, path, data):
        """Returns (status or None, body bytes)."""
        for _ in range(2):
            try:
                if self.conn is None:
                    self.conn = http.client.HTTPConnection(self.host, self.port, timeout=60)
                self.conn.request("POST", path, data, {"Content-Type": "application/json"})
                r = self.conn.getresponse()
                return r.status, r.read()
            except (OSError, http.client.HTTPException):
                if self.conn is not None:
                    self.conn.close()
                self.conn = None
        return None, b""


def latency_interleaved(targets, body, jobs, warm=50):
    """targets: [(name, url)]. Sends one job to each in turn, `jobs` rounds
    (after `warm` unrecorded ones). Returns {name: {n, errors, p50, p90, p99}} (s)."""
    data = json.dumps(body).encode("utf-8")
    clients = [(name, KeepAlive(url)) for name, url in targets]
    samples = {name: [] for name, _ in targets}
    errors = {name: 0 for name, _ in targets}
    for i in range(warm + jobs):
        for name, c in clients:
            t0 = time.perf_counter()
            st, raw = c.post("/sdapi/v1/txt2img", data)
            took = time.perf_counter() - t0
            if i < warm:
                continue
            if st != 200 or b'"images"' not in raw[:64]:
                errors[name] += 1
            else:
                samples[name].append(took)
    out = {}
    for name, _ in targets:
        v = sorted(samples[name])
        out[name] = {"n": len(v), "errors": errors[name], "p50": pct(v, 50), "p90": pct(v, 90), "p99": pct(v, 99)}
    return out


def pct(sorted_vals, p):
    """Nearest-rank percentile of an ascending list."""
    if not sorted_vals:
        return float("nan")
    k = max(0, min(len(sorted_vals) - 1, int(math.ceil(p / 100.0 * len(sorted_vals))) - 1))
    return sorted_vals[k]


# ---------------------------------------------------------------- CPU accounting

_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids):
    """utime+stime of these processes (all their threads), in seconds."""
    total = 0
    for pid in pids:
        try:
            with open("/proc/%d/stat" % pid) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            pass
    return total / _TCK


def children_of(pid):
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open("/proc/%s/stat" % d) as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(d))
            except (OSError, IndexError, ValueError):
                pass
    return out


# ---------------------------------------------------------------- wrk

WRK_LUA = r'''
wrk.method = "POST"
wrk.body = '%s'
wrk.headers["Content-Type"] = "application/json"
done = function(summary, latency, requests)
  io.write(string.format(
    "WRKJSON {\"requests\":%%d,\"duration_us\":%%d,\"connect\":%%d,\"read\":%%d,\"write\":%%d," ..
    "\"status\":%%d,\"timeout\":%%d,\"p50_us\":%%d,\"p90_us\":%%d,\"p99_us\":%%d,\"mean_us\":%%f,\"max_us\":%%d}\n",
    summary.requests, summary.duration, summary.errors.connect, summary.errors.read,
    summary.errors.write, summary.errors.status, summary.errors.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean, latency.max))
end
'''


def write_lua(body):
    path = os.path.join(t.tmpdir("wrk"), "post.lua")
    with open(path, "w") as f:
        f.write(WRK_LUA % json.dumps(body, separators=(",", ":")))
    return path


def wrk_start(url, conns, seconds, lua):
    cmd = [WRK, "-t", "1", "-c", str(conns), "-d", "%ds" % seconds, "--timeout", "10s", "-s", lua,
           url + "/sdapi/v1/txt2img"]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def wrk_finish(p, seconds):
    out, _ = p.communicate(timeout=seconds + 60)
    text = out.decode("utf-8", "replace")
    for line in text.splitlines():
        if line.startswith("WRKJSON "):
            r = json.loads(line[8:])
            r["errors"] = r["connect"] + r["read"] + r["write"] + r["status"] + r["timeout"]
            r["rps"] = r["requests"] / (r["duration_us"] / 1e6) if r["duration_us"] else 0.0
            return r
    raise RuntimeError("wrk printed no result:\n" + text[-2000:])


def wrk(urls, conns, seconds, lua):
    """One wrk per URL, all at once; the summed result (latency from the first)."""
    ps = [wrk_start(u, conns, seconds, lua) for u in urls]
    rs = [wrk_finish(p, seconds) for p in ps]
    r = dict(rs[0])
    r["requests"] = sum(x["requests"] for x in rs)
    r["errors"] = sum(x["errors"] for x in rs)
    r["rps"] = sum(x["rps"] for x in rs)
    return r


# ---------------------------------------------------------------- (a) overhead

def overhead(args):
    n = args.backends
    print("\n## (a) Overhead: 64x64, 1 step, %d backends that answer at once\n" % n)
    bes = start_backends([("p%d" % i, "l40", 0) for i in range(n)])
    bal = None
    ng = Nginx([("lc", "least_conn", [b.port for b in bes])], workers=args.nginx_workers)
    body = {"prompt": "a red circle", "seed": 1, "steps": 1, "width": 64, "height": 64, "sampler_name": "Euler"}
    lua = write_lua(body)
    paths = [("direct", [bes[0].url], [b.url for b in bes]), ("nginx least_conn", [ng.urls["lc"]], [ng.urls["lc"]])]
    proxy_pids = {"direct": [], "nginx least_conn": [ng.proc.pid] + children_of(ng.proc.pid)}
    backend_pids = [b.proc.pid for b in bes]
    try:
        bal = start_balancer(bes, args.balancer_log_level, args.balancer_arg)
        paths.insert(1, ("balancer", [bal.url], [bal.url]))
        proxy_pids["balancer"] = [bal.proc.pid]
    except Exception as e:  # noqa: BLE001 - the other columns still mean something
        note("balancer did not start: %s" % str(e)[:2000])
    pg_bals, pg_ngx = [], None
    if args.store == "both":
        # The same balancer on a PostgreSQL server of its own, then 2 and 3 balancers sharing one
        # database (docs/cluster.md) behind an NGINX round robin; the server's (and that NGINX's)
        # CPU counts as the path's.
        try:
            pg = t.start_postgres()
            at = 2 if bal else 1
            one = pg.url(pg.create_database())
            shared = pg.url(pg.create_database())
            pg_bals = [start_balancer(bes, args.balancer_log_level, args.balancer_arg, db=one, name="balancer-pg")]
            pg_bals += [start_balancer(bes, args.balancer_log_level, args.balancer_arg, db=shared,
                                       name="balancer-pg-%d" % i) for i in range(3)]
            pg_ngx = Nginx([("pg2", "round_robin", [b.port for b in pg_bals[1:3]]),
                            ("pg3", "round_robin", [b.port for b in pg_bals[1:4]])], workers=1)
            with open(os.path.join(pg.data, "postmaster.pid")) as f:
                postmaster = int(f.readline())
            db_pids = [postmaster] + children_of(postmaster)
            ngx_pids = [pg_ngx.proc.pid] + children_of(pg_ngx.proc.pid)
            for k, (name, url, bals) in enumerate([(PG_PATH, pg_bals[0].url, pg_bals[:1]),
                                                    (PG2_PATH, pg_ngx.urls["pg2"], pg_bals[1:3]),
                                                    (PG3_PATH, pg_ngx.urls["pg3"], pg_bals[1:4])]):
                paths.insert(at + k, (name, [url], [url]))
                proxy_pids[name] = [b.proc.pid for b in bals] + db_pids + (ngx_pids if k else [])
        except Exception as e:  # noqa: BLE001
            note("balancers on PostgreSQL did not start: %s" % str(e)[:2000])
    broken = set()
    for name, urls, _ in paths:
        st, _, prov, _, err = post_job(urls[0], body)
        if st != 200 or err:
            note("%s: a sanity txt2img answered %s %s" % (name, st, err))
            broken.add(name)

    lat = latency_interleaved([(name, urls[0]) for name, urls, _ in paths if name not in broken], body,
                              args.lat_jobs)
    conc = [n * k for k in args.conns_per_backend]
    runs = {}  # (name, c) -> [wrk results, one per round]
    cpu = {}   # name -> [proxy CPU s, backends' CPU s, jobs]
    per_round = {}  # name -> [(proxy CPU s, jobs) per round]
    for rnd in range(args.rounds):  # rounds interleave the paths, so background load hits each alike
        for c in conc:
            for name, urls, all_urls in paths:
                if name in broken:
                    continue
                c0, b0 = cpu_seconds(proxy_pids[name]), cpu_seconds(backend_pids)
                try:
                    if name == "direct":  # one wrk per backend, c/n connections each
                        r = wrk(all_urls, max(1, c // n), args.duration, lua)
                    else:
                        r = wrk(urls, c, args.duration, lua)
                except (RuntimeError, OSError, subprocess.SubprocessError) as e:
                    note("%s, c=%d: %s" % (name, c, str(e)[:2000]))
                    broken.add(name)
                    continue
                acc = cpu.setdefault(name, [0.0, 0.0, 0])
                acc[0] += cpu_seconds(proxy_pids[name]) - c0
                acc[1] += cpu_seconds(backend_pids) - b0
                acc[2] += r["requests"]
                pr = per_round.setdefault(name, [[0.0, 0] for _ in range(args.rounds)])
                pr[rnd][0] += cpu_seconds(proxy_pids[name]) - c0
                pr[rnd][1] += r["requests"]
                runs.setdefault((name, c), []).append(r)
    thr = {}
    for key, rs in runs.items():
        if key[0] in broken:
            continue
        r = dict(rs[0])
        r["rps"] = statistics.median(x["rps"] for x in rs)
        r["errors"] = sum(x["errors"] for x in rs)
        thr[key] = r

    if bal is None:  # shown as broken in both tables
        paths.insert(1, ("balancer", [], []))
    base = lat.get("direct")
    print("Latency, one client, keep-alive, %d jobs per path sent in turn (direct, balancer, NGINX, direct, …) "
          "so that background load hits each path alike:\n" % args.lat_jobs)
    print("| path | jobs | p50 ms | p90 ms | p99 ms | added p50 ms | added p99 ms | errors |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, _, _ in paths:
        r = lat.get(name)
        if r is None:
            print("| %s | – | – | – | – | – | – | broken |" % name)
            continue
        add50 = (r["p50"] - base["p50"]) * 1e3 if base and name != "direct" else None
        add99 = (r["p99"] - base["p99"]) * 1e3 if base and name != "direct" else None
        print("| %s | %d | %.3f | %.3f | %.3f | %s | %s | %d |" % (
            name, r["n"], r["p50"] * 1e3, r["p90"] * 1e3, r["p99"] * 1e3,
            "–" if add50 is None else "%+.3f" % add50, "–" if add99 is None else "%+.3f" % add99, r["errors"]))
    print("\nThroughput, jobs/s (wrk -t1, %d s per run, median of %d interleaved rounds; c = connections; direct = "
          "one wrk per backend at once, c/%d connections each):\n" % (args.duration, args.rounds, n))
    print("| path | " + " | ".join("c=%d" % c for c in conc) + " | best | × NGINX | proxy CPU µs/job | "
          "backends' CPU µs/job | errors |")
    print("|---|" + "---:|" * (len(conc) + 5))
    best = {}
    for name, _, _ in paths:
        rs = [thr.get((name, c)) for c in conc]
        if any(r is None for r in rs):
            print("| %s | " % name + " | ".join("–" for _ in conc) + " | – | – | – | – | broken |")
            continue
        best[name] = max(r["rps"] for r in rs)
        best_ng = None
        for c in conc:
            if thr.get(("nginx least_conn", c)):
                best_ng = max(best_ng or 0, thr[("nginx least_conn", c)]["rps"])
        acc = cpu.get(name, [0.0, 0.0, 0])
        jobs = max(1, acc[2])
        print("| %s | %s | %.0f | %s | %s | %.0f | %d |" % (
            name, " | ".join("%.0f" % r["rps"] for r in rs), best[name],
            "%.2f" % (best[name] / best_ng) if best_ng else "–",
            "%.0f" % (acc[0] / jobs * 1e6) if name != "direct" else "–", acc[1] / jobs * 1e6,
            sum(r["errors"] for r in rs)))
    print("\n(CPU µs/job: user+system time of the proxy's processes — all threads; NGINX master and workers — and"
          " of the backends, over every throughput run, per job answered; %d CPUs in all, shared with wrk.)\n"
          % os.cpu_count())
    for name in ("balancer", PG_PATH, PG2_PATH, PG3_PATH, "nginx least_conn"):
        if name in per_round and args.rounds > 1:
            print("- %s CPU µs/job by round: %s" % (name, ", ".join(
                "%.0f" % (c / max(1, j) * 1e6) for c, j in per_round[name])))
    if "balancer" in lat and base:
        add50 = (lat["balancer"]["p50"] - base["p50"]) * 1e3
        print("- balancer added p50: %.3f ms (target < 1 ms): %s" % (add50, "met" if add50 < 1.0 else "NOT met"))
    if "balancer" in best and "nginx least_conn" in best:
        ratio = best["balancer"] / best["nginx least_conn"]
        print("- balancer best throughput: %.2f × NGINX's (target ≥ 0.8×, aim 1.0×): %s"
              % (ratio, "met" if ratio >= 0.8 else "NOT met"))
    if bal is not None:
        try:
            m = t.metrics(bal.url)
            print("- balancer /metrics after the runs: done %d, failed %d, cancelled %d (wrk hangs up on what is "
                  "in flight when a run ends), retries %d"
                  % (t.metric(m, "sdgate_jobs_total", 0, outcome="done"),
                     t.metric(m, "sdgate_jobs_total", 0, outcome="failed"),
                     t.metric(m, "sdgate_jobs_total", 0, outcome="cancelled"),
                     t.metric(m, "sdgate_job_retries_total", 0)))
        except Exception as e:  # noqa: BLE001
            note("balancer /metrics: %s" % e)
    ng.stop()
    if pg_ngx is not None:
        pg_ngx.stop()
    for b in pg_bals:
        stop(b)
    if bal is not None:
        rc = stop(bal)
        if rc != 0:
            note("balancer exited with %r on SIGTERM; log tail:\n%s" % (rc, bal.log_tail(20)))
    for b in bes:
        stop(b)


# ---------------------------------------------------------------- (b) scheduling

def job_body(i, steps):
    return {"prompt": "bench job %d, a blue square" % i, "seed": 1000 + i, "steps": steps, "width": 64,
            "height": 64, "sampler_name": "Euler", "cfg_scale": 7}


def calibrate(bes, steps, reps=9):
    """Median seconds per job on each backend, direct, one at a time."""
    out = {}
    for be in bes:
        ts = []
        for i in range(reps):
            st, took, _, _, err = post_job(be.url, job_body(100000 + i, steps))
            if st != 200 or err:
                raise RuntimeError("calibration on %s: %s %s" % (be.provider, st, err))
            ts.append(took)
        out[be.provider] = statistics.median(ts)
    return out


def warm_up(url, steps, jobs=15, clients=3):
    """Closed loop: `clients` threads, `jobs` jobs in all (lets the balancer learn speeds)."""
    left = [jobs]
    lock = threading.Lock()

    def worker():
        while True:
            with lock:
                if left[0] <= 0:
                    return
                left[0] -= 1
                i = left[0]
            post_job(url, job_body(200000 + i, steps))

    ths = [threading.Thread(target=worker) for _ in range(clients)]
    for th in ths:
        th.start()
    for th in ths:
        th.join()


def open_loop(url, offsets, steps):
    """Sends job i at t0 + offsets[i], each on its own thread and connection.
    Returns a list of dicts per job."""
    recs = [None] * len(offsets)

    def one(i, at):
        st, took, prov, inf, err = post_job(url, job_body(i, steps))
        done = time.monotonic()
        recs[i] = {"status": st, "latency": done - at, "provider": prov, "inference": inf, "err": err,
                   "done": done, "lag": done - took - at}

    t0 = time.monotonic() + 0.05
    ths = []
    for i, off in enumerate(offsets):
        at = t0 + off
        d = at - time.monotonic()
        if d > 0:
            time.sleep(d)
        th = threading.Thread(target=one, args=(i, at), daemon=True)
        th.start()
        ths.append(th)
    for th in ths:
        th.join(900)
    return recs, t0


def summarize(recs, t0, providers):
    ok = [r for r in recs if r and r["status"] == 200 and not r["err"]]
    lats = sorted(r["latency"] for r in ok)
    span = max(r["done"] for r in recs if r) - t0
    per = {p: [0, 0.0] for p in providers}
    for r in ok:
        if r["provider"] in per:
            per[r["provider"]][0] += 1
            per[r["provider"]][1] += r["inference"] or 0.0
    return {
        "ok": len(ok), "errors": len(recs) - len(ok),
        "mean": statistics.mean(lats) if lats else float("nan"),
        "p50": pct(lats, 50), "p99": pct(lats, 99), "max": lats[-1] if lats else float("nan"),
        "span": span, "jobs": {p: per[p][0] for p in providers},
        "util": {p: per[p][1] / span for p in providers},
        "lag": max((r["lag"] for r in recs if r), default=0.0),
        "first_err": next((r["err"] or r["status"] for r in recs if r and (r["status"] != 200 or r["err"])), None),
    }


def median_summary(ss, providers):
    """The per-field median of several runs' summaries (errors: the sum)."""
    if len(ss) == 1:
        return ss[0]
    out = {k: statistics.median(s[k] for s in ss) for k in ("mean", "p50", "p99", "max", "span")}
    out["ok"] = sum(s["ok"] for s in ss)
    out["errors"] = sum(s["errors"] for s in ss)
    out["jobs"] = {p: int(round(statistics.median(s["jobs"][p] for s in ss))) for p in providers}
    out["util"] = {p: statistics.median(s["util"][p] for s in ss) for p in providers}
    out["lag"] = max(s["lag"] for s in ss)
    out["first_err"] = next((s["first_err"] for s in ss if s["first_err"]), None)
    return out


def simulate_earliest_finish(offs, svc):
    """The balancer's policy, idealised: a central FIFO queue; each job, in
    queue order, goes to the backend with the earliest expected finish
    (counting when a busy one frees up); it waits if that one is busy.
    Deterministic service times svc[k], no overheads. Returns per-job
    (latency, backend index)."""
    k = len(svc)
    free = [0.0] * k
    out = [None] * len(offs)
    queue = []
    i, now = 0, 0.0
    while i < len(offs) or queue:
        cands = [offs[i]] if i < len(offs) else []
        if queue:
            cands += [f for f in free if f > now]
        if cands:
            now = max(now, min(cands))
        while i < len(offs) and offs[i] <= now:
            queue.append(i)
            i += 1
        plan = [max(f, now) for f in free]
        left = []
        for j in queue:
            b = min(range(k), key=lambda x: (plan[x] + svc[x], x))
            if plan[b] <= now:
                free[b] = now + svc[b]
                plan[b] = free[b]
                out[j] = (free[b] - offs[j], b)
            else:
                plan[b] += svc[b]
                left.append(j)
        queue = left
    return out


def sched(args):
    P = args.pace_ms
    specs = [("x4-fast", "h100", P), ("x2-mid", "a100", 2 * P), ("x1-slow", "rtx3090", 4 * P)]
    providers = [s[0] for s in specs]
    bes = start_backends(specs)
    svc = calibrate(bes, args.steps)
    cap = sum(1.0 / s for s in svc.values())
    print("\n## (b) Scheduling: 3 backends at 1×/2×/4× speed, Poisson arrivals, %d jobs per run%s\n"
          % (args.jobs, ", median of %d runs per cell" % args.repeat if args.repeat > 1 else ""))
    print("Job: 64x64, %d steps, Euler; pace %d/%d/%d ms per step. Measured service time, direct, one at a time: %s;"
          " capacity %.1f jobs/s. Arrival seed %d (same sequence for every policy).\n"
          % (args.steps, P, 2 * P, 4 * P, ", ".join("%s %.0f ms" % (p, svc[p] * 1e3) for p in providers), cap,
             args.seed))
    ng = Nginx([("lc", "least_conn", [b.port for b in bes]), ("rr", "round_robin", [b.port for b in bes])],
               workers=args.nginx_workers)
    targets = [("balancer", None), ("nginx least_conn", ng.urls["lc"]), ("nginx round robin", ng.urls["rr"])]
    bal = None
    try:
        bal = start_balancer(bes, args.balancer_log_level, args.balancer_arg)
        targets[0] = ("balancer", bal.url)
    except Exception as e:  # noqa: BLE001
        note("balancer did not start: %s" % str(e)[:2000])
    for name, url in targets:
        if url:
            warm_up(url, args.steps)

    results = {}
    for li, load in enumerate(args.loads):
        rng = random.Random(args.seed * 1000 + li)
        lam = load * cap
        offs, x = [], 0.0
        for _ in range(args.jobs):
            offs.append(x)
            x += rng.expovariate(lam)
        svcs = [svc[p] for p in providers]
        sim = simulate_earliest_finish(offs, svcs)
        lats = sorted(x[0] for x in sim)
        span = max(offs[j] + sim[j][0] for j in range(len(offs)))
        results[(load, "ideal")] = {
            "ok": len(sim), "errors": 0, "mean": statistics.mean(lats), "p50": pct(lats, 50), "p99": pct(lats, 99),
            "max": lats[-1], "span": span,
            "jobs": {p: sum(1 for x in sim if x[1] == k) for k, p in enumerate(providers)},
            "util": {p: sum(svcs[k] for x in sim if x[1] == k) / span for k, p in enumerate(providers)},
            "lag": 0.0, "first_err": None}
        reps = {}
        live = [(name, url) for name, url in targets if url]
        for rep in range(args.repeat):
            # Rotate the order, so that no policy always runs first (or right after a slow one).
            for name, url in live[rep % len(live):] + live[:rep % len(live)]:
                recs, t0 = open_loop(url, offs, args.steps)
                s = summarize(recs, t0, providers)
                reps.setdefault(name, []).append(s)
                note("%.0f%% %s: p99 %.0f ms, %d errors" % (load * 100, name, s["p99"] * 1e3, s["errors"]))
        for name, ss in reps.items():
            results[(load, name)] = median_summary(ss, providers)

    print("| load | policy | mean ms | p50 ms | p99 ms | max ms | jobs %s | util %s | errors |"
          % ("/".join(p.split("-")[0] for p in providers), "/".join(p.split("-")[0] for p in providers)))
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for load in args.loads:
        for name, _ in targets + [("ideal", None)]:
            s = results.get((load, name))
            if s is None:
                print("| %.0f%% | %s | – | – | – | – | – | – | broken |" % (load * 100, name))
                continue
            print("| %.0f%% | %s | %.0f | %.0f | %.0f | %.0f | %s | %s | %d |" % (
                load * 100, name if name != "ideal" else "*ideal earliest-finish (simulated)*",
                s["mean"] * 1e3, s["p50"] * 1e3, s["p99"] * 1e3, s["max"] * 1e3,
                "/".join(str(s["jobs"][p]) for p in providers),
                "/".join("%.0f%%" % (100 * s["util"][p]) for p in providers), s["errors"]))
    print()
    hi = max(args.loads)
    b, lc = results.get((hi, "balancer")), results.get((hi, "nginx least_conn"))
    if b and lc:
        red = 1.0 - b["p99"] / lc["p99"]
        print("- p99 at %.0f%%: balancer %.0f ms vs NGINX least_conn %.0f ms: %.0f%% below (target ≥ 30%%): %s"
              % (hi * 100, b["p99"] * 1e3, lc["p99"] * 1e3, red * 100, "met" if red >= 0.30 else "NOT met"))
    for (load, name), s in sorted(results.items()):
        if s["errors"]:
            print("- %.0f%% %s: %d jobs failed, first: %s" % (load * 100, name, s["errors"], s["first_err"]))
    worst_lag = max((s["lag"] for s in results.values()), default=0.0)
    print("- *ideal*: the balancer's policy (central queue, earliest expected finish) simulated on the same"
          " arrivals with the measured service times, exact speeds and no overheads: what the balancer's rows"
          " would be if it were free")
    print("- utilisation = backend-reported inference_time summed per backend / (first arrival → last answer);"
          " latency = scheduled arrival → full answer (client send lag at most %.1f ms)" % (worst_lag * 1e3))
    ng.stop()
    if bal is not None:
        rc = stop(bal)
        if rc != 0:
            note("balancer exited with %r on SIGTERM; log tail:\n%s" % (rc, bal.log_tail(20)))
    for be in bes:
        stop(be)


# ---------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default="build-bench", help="CMake build dir (default build-bench; relative to the "
                    "current dir or the source root)")
    ap.add_argument("--part", choices=("overhead", "sched", "all"), default="all")
    ap.add_argument("--backends", type=int, default=4, help="(a) backends (default 4)")
    ap.add_argument("--duration", type=int, default=3, help="(a) seconds per wrk run (default 3)")
    ap.add_argument("--conns-per-backend", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2, 4],
                    help="(a) wrk connections per backend, comma-separated (default 1,2,4)")
    ap.add_argument("--lat-jobs", type=int, default=1000, help="(a) latency jobs per path (default 1000)")
    ap.add_argument("--rounds", type=int, default=3, help="(a) interleaved wrk rounds (default 3)")
    ap.add_argument("--nginx-workers", default="auto", help="NGINX worker_processes (default auto)")
    ap.add_argument("--balancer-log-level", default="warn",
                    help="balancer --log-level (default warn, as NGINX runs with access_log off)")
    ap.add_argument("--balancer-arg", action="append", default=[],
                    help="an extra balancer flag, repeatable (e.g. --balancer-arg=--result-ttl --balancer-arg=5)")
    ap.add_argument("--store", choices=("sqlite", "both"), default="sqlite",
                    help="(a) both: the balancer on SQLite and, as a path of its own, on a throwaway PostgreSQL "
                    "server (default sqlite)")
    ap.add_argument("--jobs", type=int, default=200, help="(b) jobs per run (default 200)")
    ap.add_argument("--loads", type=lambda s: [float(x) for x in s.split(",")], default=[0.70, 0.95],
                    help="(b) offered load as fractions of capacity (default 0.70,0.95)")
    ap.add_argument("--steps", type=int, default=10, help="(b) steps per job (default 10)")
    ap.add_argument("--pace-ms", type=int, default=7, help="(b) the fast backend's ms per step (default 7; the "
                    "others 2× and 4×)")
    ap.add_argument("--repeat", type=int, default=1, help="(b) runs per load and policy, the table shows medians "
                    "(default 1)")
    ap.add_argument("--seed", type=int, default=1, help="(b) arrival RNG seed (default 1)")
    args = ap.parse_args()

    bin_dir = args.bin if os.path.isdir(args.bin) else os.path.join(ROOT, args.bin)
    t.BIN_DIR = os.path.abspath(bin_dir)
    for tool in (NGINX, WRK):
        if not os.access(tool, os.X_OK):
            sys.exit("%s not found: run deploy/install-deps.sh" % tool)
    t0 = time.monotonic()
    print("# sdgate-balancer benchmarks\n")
    print("Host: %d CPUs (%s); every program on loopback on this host. NGINX %s, worker_processes %s, access_log "
          "off, upstream keepalive; balancer --log-level %s; backends on the CPU engine.\n"
          % (os.cpu_count(), os.uname().machine, nginx_version(), args.nginx_workers, args.balancer_log_level))
    if args.part in ("overhead", "all"):
        overhead(args)
    if args.part in ("sched", "all"):
        sched(args)
    print("\n_took %.0f s_" % (time.monotonic() - t0))


def nginx_version():
    try:
        p = subprocess.run([NGINX, "-v"], capture_output=True, text=True, timeout=10)
        return (p.stderr or p.stdout).strip().split("/")[-1]
    except (OSError, subprocess.SubprocessError):
        return "?"


if __name__ == "__main__":
    main()
