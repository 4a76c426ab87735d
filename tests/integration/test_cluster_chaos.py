#!/usr/bin/env python3
"""test_cluster_chaos.py — three balancers on one PostgreSQL database, behind
the shipped NGINX (deploy/nginx/sdgate-postgresql.conf), killed with -9 and
restarted one after another while 100 jobs arrive (issue 13, tests item 2;
the guarantees are docs/cluster.md's).

The marketplace: three balancers (--lease-s 2, fixed ports, one database);
NGINX in front of them; four native backends (paced: 0.3-0.8 s a job) that
register and beat through NGINX (so with whichever balancer it picks: the
registrations are shared); the gateway, whose one --balancer is NGINX's
balancer port. The jobs, spread over about 12 s:

  ws      through the gateway's websocket (4 connections)
  api     POST /v1/jobs through NGINX, each under its own Idempotency-Key,
          sent again (same key) whatever went wrong on the way, then polled
          through NGINX (GET /v1/jobs/{id}: any balancer answers)
  facade  POST /sdapi/v1/txt2img through NGINX, waiting for the image, with no
          Idempotency-Key of its own: NGINX gives it one and sends it to the
          next balancer when its balancer dies

Meanwhile each balancer in turn is killed (-9) while its own /metrics shows
a running job (waited for, bounded), and started again a second later on the
same port and database.

Checked: every websocket and jobs API job is accepted and done exactly once
from its client's view (one result, nothing after it), with an image whose
pixels equal a direct render of the same request; so does every façade
request, on its first try: none is cut by a kill (docs/cluster.md: its key
makes NGINX's retry safe, and its job, stored at intake, is taken over), and
the database holds exactly one job for each. (Should one be cut, the client
sends it again, a new job, up to FACADE_TRIES times, and the check fails.)
At the end the database's jobs rows are all final (every job done), and no
balancer has anything queued or running. Printed: the timeline, the
figures per entry point, and how many jobs ran twice on backends (from the
backends' logs, one line per txt2img with its seed): docs/cluster.md allows
that only for a job whose balancer died while it ran, so each of those must
have been taken over (a balancer's log says so)."""

import collections
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sdtest as t  # noqa: E402
from wsclient import WSClient  # noqa: E402

LEASE_S = 2
PROVIDER = "cluster-chaos-provider-token"
STEPS, SIZE = 8, 64
BACKENDS = [("be-40", 40), ("be-60", 60), ("be-80", 80), ("be-100", 100)]  # ms per step: 0.32-0.8 s a job
N = {"ws": 50, "api": 30, "facade": 20}
SEED0 = {"ws": 1000, "api": 2000, "facade": 3000}
SPREAD_S = 16.0       # the jobs of each kind arrive evenly over this
N_CONNS = 4
# NGINX leaves a balancer out for 5 s (fail_timeout) after its second failure, which comes as late as its restart:
# kills 6 s apart leave two of the three in its rotation (closer, NGINX has moments with none: "no live upstreams")
KILL_AT_S = (2.0, 8.0, 14.0)
DOWN_S = 1.0
KILL_WAIT_S = 5.0     # bound on waiting for the victim to run a job
FACADE_TRIES = 3
API_PATIENCE_S = 30
PROMPTS = ["a red circle on a blue square", "green triangles over a yellow field", "a purple star, night sky",
           "orange squares and white circles", "a blue house by a red lake"]
SAMPLERS = ["Euler a", "DPM++ 2M Karras", "Euler", "DDIM"]
RUN_LINE = re.compile(r"job: txt2img, .* seed (\d+): [0-9.]+ s( \(interrupted\))?")


def job_body(kind, i):
    return {"prompt": PROMPTS[i % len(PROMPTS)], "negative_prompt": "", "sampler_name": SAMPLERS[i % len(SAMPLERS)],
            "steps": STEPS, "cfg_scale": 7, "width": SIZE, "height": SIZE, "seed": SEED0[kind] + i}


class Cluster:
    """The programs, with what it takes to kill and restart a balancer."""

    def __init__(self):
        pg = t.start_postgres()
        self.db = pg.url(pg.create_database())
        self.args = ["--lease-s", LEASE_S, "--trusted-proxy", "127.0.0.1", "--max-queue-per-client", 1000,
                     "--max-attempts", 8, "--progress-interval-ms", 100, "--provider-token", PROVIDER,
                     "--heartbeat-interval", 2]
        self.ports = [t.free_port() for _ in range(3)]
        self.starts = collections.Counter()
        self.every_balancer = []  # every balancer process started, killed ones too (their logs)
        self.bals = [self.start_balancer(k) for k in range(3)]
        gw_port = t.free_port()
        self.ngx, self.api = t.nginx_pg_front(self.ports, gw_port)
        self.backends = [t.start_backend("--pace-ms-per-step", pace, "--provider", name, "--gpu-class", "l40",
                                         "--balancer", self.api, "--token", PROVIDER, name=name)
                         for name, pace in BACKENDS]
        self.gw = t.start_gateway("--balancer", self.api, "--max-jobs-per-connection", 50, port=gw_port,
                                  wait_board=True)
        self.reference = t.start_backend("--provider", "reference", name="reference")

    def start_balancer(self, k):
        self.starts[k] += 1
        bal = t.start_balancer(*self.args, name="balancer-%s-%d" % ("ABC"[k], self.starts[k]), port=self.ports[k],
                               db=self.db)
        self.every_balancer.append(bal)
        return bal

    def taken_over(self):
        """The ids of the jobs a balancer took over from a dead one (its log)."""
        return {m.group(1) for b in self.every_balancer
                for m in re.finditer(r"job ([0-9a-f]+): taken over from a balancer", b.log_tail(100000))}


def chaos(cl, t0, log):
    """Kills each balancer in turn mid-job and restarts it. Returns the kills:
    (balancer, jobs running when killed, seconds waited for one)."""
    kills = []
    for k, at in enumerate(KILL_AT_S):
        time.sleep(max(0.0, t0 + at - time.monotonic()))
        bal, w0 = cl.bals[k], time.monotonic()
        running = t.wait_until(lambda: t.metric(t.metrics(bal.url), "sdgate_jobs_running", 0), KILL_WAIT_S, 0.02)
        bal.kill()
        kills.append((bal.name, int(running or 0), time.monotonic() - w0))
        log("kill -9 %s (%d job(s) running, after waiting %.2f s)" % kills[-1])
        time.sleep(DOWN_S)
        cl.bals[k] = cl.start_balancer(k)
        log("%s started on the same port and database" % cl.bals[k].name)
    return kills


def ws_load(cl, t0, record):
    conns = [WSClient("127.0.0.1", cl.gw.port, "/ws", timeout=60) for _ in range(N_CONNS)]
    for c in conns:
        c.send_json({"type": "hello"})
    for i in range(N["ws"]):
        time.sleep(max(0.0, t0 + i * SPREAD_S / N["ws"] - time.monotonic()))
        key = "ws-%d" % i
        record[key] = {"via": "ws", "conn": conns[i % N_CONNS], "body": job_body("ws", i)}
        record[key]["conn"].send_json(dict(record[key]["body"], type="generate", id=key, gpus=[]))
    return conns


def api_client(cl, i, rec):
    """POST /v1/jobs through NGINX as a careful client: every try carries the
    same Idempotency-Key, so it may send again whatever went wrong (a cut
    connection, a 5xx while a balancer died) without making a second job.
    Then polls the job through NGINX until it is final."""
    deadline = time.monotonic() + API_PATIENCE_S
    while time.monotonic() < deadline and not rec.get("job"):
        rec["posts"] += 1
        try:
            r = t.submit_job(cl.api, rec["body"], headers={"Idempotency-Key": "cluster-chaos-api-%d" % i}, timeout=10)
        except (OSError, t.httpclient.HTTPException) as e:
            rec["last_error"] = str(e)
            time.sleep(0.3)
            continue
        if r.status in (200, 202) and isinstance(r.json, dict) and r.json.get("id"):
            rec["job"], rec["replayed"] = r.json["id"], r.status == 200
        elif r.status >= 500:
            rec["last_error"] = t.describe(r)
            time.sleep(0.3)
        else:
            rec["refused"] = t.describe(r)
            return
    if rec.get("job"):
        rec["doc"] = t.wait_job(cl.api, rec["job"], timeout=90, interval=0.2)


def facade_client(cl, i, rec):
    """POST /sdapi/v1/txt2img through NGINX, sent again (a new job) when a
    kill cut it, up to FACADE_TRIES times. rec["tries"]: 200, "cut: ..." (the
    connection broke, or NGINX's own 502) or a balancer's other answer."""
    for _ in range(FACADE_TRIES):
        sent = time.monotonic()
        try:
            r = t.request("POST", cl.api + "/sdapi/v1/txt2img", json_body=rec["body"], timeout=90)
        except (OSError, t.httpclient.HTTPException) as e:
            rec["tries"].append("cut: %s" % type(e).__name__)
            rec.setdefault("cuts", []).append((sent, time.monotonic()))
            time.sleep(0.5)
            continue
        if r.status == 200:
            rec["tries"].append(200)
            rec["reply"] = r
            return
        rec["last_error"] = t.describe(r)
        if r.status != 502 or r.is_json:  # a balancer's own answer, not NGINX's for a cut connection
            rec["tries"].append(r.status)
            return
        rec["tries"].append("cut: NGINX 502")
        rec.setdefault("cuts", []).append((sent, time.monotonic()))
        time.sleep(0.5)


def clients(cl, t0, record, kind, fn):
    threads = []
    for i in range(N[kind]):
        time.sleep(max(0.0, t0 + i * SPREAD_S / N[kind] - time.monotonic()))
        rec = record["%s-%d" % (kind, i)] = {"via": kind, "body": job_body(kind, i), "posts": 0, "tries": []}
        threads.append(t.Background(fn, cl, i, rec))
    for th in threads:
        th.join(150)


def render_direct(cl, body, seed, subseed):
    """The pixels of the same request rendered directly on the reference backend."""
    direct = dict(body, seed=seed)
    if t.is_int(subseed):
        direct["subseed"] = subseed
    r, _ = t.txt2img(cl.reference.url, direct)
    imgs = t.images_of(r) or []
    img = t.try_decode_png(imgs[0])[0] if imgs else None
    return img.pixels if img else None


def backend_runs(cl):
    """seed → (runs, interrupted runs) over the four backends' logs."""
    runs = collections.defaultdict(lambda: [0, 0])
    for be in cl.backends:
        for m in RUN_LINE.finditer(be.log_tail(100000)):
            runs[int(m.group(1))][0] += 1
            runs[int(m.group(1))][1] += bool(m.group(2))
    return runs


def outcome_of(cl, key, rec):
    """(status, image or None, seed, subseed, problem or None) of one ws or api job."""
    if rec["via"] == "ws":
        msgs = rec["conn"].of_job(key)
        terminal = [m for m in msgs if m.get("type") in ("done", "error")]
        accepted = [m.get("job") for m in msgs if m.get("type") == "accepted"]
        rec["job"] = accepted[-1] if accepted else None
        if len(terminal) != 1 or msgs[-1] is not terminal[0] or len(accepted) != 1:
            return None, None, None, None, ("not exactly one result", [m.get("type") for m in msgs])
        if terminal[0].get("type") != "done":
            return "failed", None, None, None, ("failed", terminal[0])
        doc = t.wait_job(cl.api, rec["job"], timeout=30) or {}
        img = t.decode_png_b64(terminal[0].get("image"))
    else:
        doc = rec.get("doc") or {}
        if not rec.get("job") or doc.get("status") != "done":
            return doc.get("status"), None, None, None, ("not done", rec.get("job"), doc.get("status"),
                                                         rec.get("refused") or rec.get("last_error"))
        imgs = t.job_images(cl.api, doc) or []
        img = t.try_decode_png(imgs[0])[0] if len(imgs) == 1 else None
    if doc.get("status") != "done":
        return None, None, None, None, ("the client has done, the balancers say", doc.get("status"))
    return "done", img, doc.get("seed"), (t.job_info(doc) or {}).get("subseed"), None


def main():
    t0_all = time.monotonic()
    cl = Cluster()
    for b in cl.bals:
        t.check("%s sees the four backends idle" % b.name, t.wait_idle_backends(b.url, 4, 30))

    record, events = {}, []
    t0 = time.monotonic() + 0.3

    def log(what):
        events.append((time.monotonic() - t0, what))
        print("# chaos %5.1f s: %s" % (time.monotonic() - t0, what), flush=True)
    kill_thread = t.Background(chaos, cl, t0, log)
    api = t.Background(clients, cl, t0, record, "api", api_client)
    facade = t.Background(clients, cl, t0, record, "facade", facade_client)
    conns = ws_load(cl, t0, record)
    kills, err, _ = kill_thread.join(60)
    t.check("the kills ran to their end", err is None, repr(err))
    for th, what in ((api, "jobs API"), (facade, "façade")):
        _, err, _ = th.join(150)
        t.check("the %s clients ran to their end" % what, err is None, repr(err))
    deadline = time.monotonic() + 60
    for key, rec in record.items():
        if rec["via"] == "ws":
            rec["conn"].wait_for(lambda m, k=key: isinstance(m, dict) and m.get("id") == k
                                 and m.get("type") in ("done", "error"), max(1.0, deadline - time.monotonic()))
    loaded_s = time.monotonic() - t0
    time.sleep(0.5)  # anything a client would still receive after its result

    # ------------------------------------------------------------ checks
    figures = collections.defaultdict(collections.Counter)
    problems, unmatched, compared = [], [], 0
    for key, rec in sorted(record.items()):
        via = rec["via"]
        figures[via]["submitted"] += 1
        if via == "facade":
            figures[via]["cut by a kill"] += sum(1 for x in rec["tries"] if str(x).startswith("cut"))
            if "reply" not in rec:
                figures[via]["never answered"] += 1
                if any(not str(x).startswith("cut") for x in rec["tries"]):
                    problems.append((key, "façade answered neither an image nor a cut", rec.get("last_error")))
                continue
            imgs = t.images_of(rec["reply"]) or []
            img = t.try_decode_png(imgs[0])[0] if len(imgs) == 1 else None
            info = t.info_of(rec["reply"]) or {}
            status, seed, subseed = "done", info.get("seed"), info.get("subseed")
        else:
            status, img, seed, subseed, problem = outcome_of(cl, key, rec)
            if problem:
                problems.append((key,) + problem)
                continue
        figures[via][status] += 1
        rec["done"] = status == "done"
        if img is None or (img.width, img.height) != (SIZE, SIZE):
            problems.append((key, "no %dx%d image" % (SIZE, SIZE)))
            continue
        compared += 1
        if render_direct(cl, rec["body"], seed, subseed) != img.pixels:
            unmatched.append((key, seed))
    done = sum(figures[v]["done"] for v in N)
    t.check("every websocket and jobs API job was accepted and done exactly once from its client's view; every "
            "façade request answered its image or was cut by a kill (%d problems)" % len(problems),
            not problems, problems)
    t.check("every done image equals a direct render of the same request and seed (%d compared)" % compared,
            compared == done and not unmatched, unmatched)
    cut = {k: r["tries"] for k, r in record.items() if r["via"] == "facade" and r["tries"] != [200]}
    t.check("every façade request got its image on its first try: none was cut by a kill (%d)" % len(cut),
            not cut and figures["facade"]["done"] == N["facade"], cut)
    t.check("all %d websocket and %d jobs API jobs are done" % (N["ws"], N["api"]),
            figures["ws"]["done"] == N["ws"] and figures["api"]["done"] == N["api"], dict(figures))

    rows = t.db_query(cl.db, "SELECT id, status, doc->'request'->>'seed' FROM jobs")
    by_status = collections.Counter(st for _, st, _ in rows)
    by_seed = collections.defaultdict(list)
    for i, st, seed in rows:
        by_seed[seed].append((i, st))
    facade_rows = {k: by_seed[str(r["body"]["seed"])] for k, r in record.items() if r["via"] == "facade"}
    t.check("the database holds exactly one job for each façade request, done",
            all(len(v) == 1 and v[0][1] == "done" for v in facade_rows.values()), facade_rows)
    for k, v in facade_rows.items():
        record[k]["job"] = v[0][0] if v else None
    rows = [(i, st) for i, st, _ in rows]
    ids = {rec.get("job") for rec in record.values()}
    t.check("the database's jobs rows are all final (%s) and hold every job, done"
            % dict(by_status), set(by_status) <= set(t.FINAL_STATES)
            and ids <= {i for i, st in rows if st == "done"}, (dict(by_status), sorted(ids - {i for i, _ in rows})))

    def idle_everywhere():
        ms = [t.metrics(b.url) for b in cl.bals]
        return all(t.metric(m, "sdgate_queue_depth", 0) == 0 and t.metric(m, "sdgate_jobs_running", 0) == 0
                   for m in ms)
    t.check("no balancer has anything queued or running at the end (/metrics)", t.wait_until(idle_everywhere, 10))
    t.check("every kill landed while its balancer ran a job (%s)"
            % "; ".join("%s: %d running" % (n, r) for n, r, _ in kills or []),
            kills and len(kills) == 3 and all(r > 0 for _, r, _ in kills), kills)

    runs = backend_runs(cl)
    twice = {k: runs[r["body"]["seed"]] for k, r in record.items() if runs[r["body"]["seed"]][0] > 1}
    t.check("every done job ran on a backend",
            all(runs[r["body"]["seed"]][0] >= 1 for r in record.values() if r.get("done")))
    taken = cl.taken_over()
    t.check("a job ran twice on backends only when it was taken over from a dead balancer (%d ran twice, %d taken "
            "over)" % (len(twice), len(taken)), all(record[k].get("job") in taken for k in twice),
            {k: record[k].get("job") for k in twice if record[k].get("job") not in taken})

    # ------------------------------------------------------------ figures
    print("# timeline:")
    for s, what in events:
        print("#   %5.1f s  %s" % (s, what))
    print("# | entry point | submitted | done | cut by a kill (tries) | never answered |")
    print("# |---|---:|---:|---:|---:|")
    for via, name in (("ws", "gateway websocket"), ("api", "jobs API (Idempotency-Key)"),
                      ("facade", "A1111 façade")):
        f = figures[via]
        print("# | %s | %d | %d | %d | %d |" % (name, f["submitted"], f["done"], f["cut by a kill"],
                                               f["never answered"]))
    print("# jobs API POSTs sent again: %d (answered as a replay: %d)"
          % (sum(r["posts"] - 1 for r in record.values() if r["via"] == "api"),
             sum(1 for r in record.values() if r.get("replayed"))))
    print("# jobs that ran twice on backends: %d of %d jobs (%d of those first runs were interrupted when their "
          "balancer died): %s" % (len(twice), sum(N.values()), sum(1 for r in twice.values() if r[1]), sorted(twice)))
    print("# façade jobs taken over from a dead balancer: %d"
          % sum(1 for r in record.values() if r["via"] == "facade" and r.get("job") in taken))
    print("# jobs taken over from a dead balancer: %d" % len(taken))
    print("# façade: %d backend runs for %d requests sent"
          % (sum(runs[r["body"]["seed"]][0] for r in record.values() if r["via"] == "facade"),
             sum(len(r["tries"]) for r in record.values() if r["via"] == "facade")))
    print("# all clients had their outcome %.1f s after the first job; wall time %.1f s"
          % (loaded_s, time.monotonic() - t0_all))
    cuts = sorted((a - t0, b - t0, k) for k, r in record.items() for a, b in r.get("cuts", []))
    print("# façade cuts (sent, answered, request): %s" % ", ".join("%.1f-%.1f %s" % c for c in cuts))
    print("# NGINX had no balancer in its rotation %d times (\"no live upstreams\" in its error log)"
          % cl.ngx.log(10 ** 7).count("no live upstreams"))
    for c in conns:
        c.close()
    cl.ngx.stop()


t.run(main)
