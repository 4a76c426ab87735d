#!/usr/bin/env python3
"""test_cluster_facade_key.py — a façade request survives its balancer's
death (issue 13): three balancers on one PostgreSQL database behind the
shipped NGINX conf (deploy/nginx/sdgate-postgresql.conf), which gives every
façade and OpenAI POST an Idempotency-Key ($request_id when the client sent
none) and sends it to the next balancer when the first fails midway.

  1. A plain A1111 client (no key) POSTs /sdapi/v1/txt2img through NGINX; the
     balancer that runs its job is killed (-9) mid-job. The client gets 200
     with an image pixel-identical to a direct render of the same request,
     and the database holds exactly one job for it (the retry waited for
     that job: taken over within the lease, then run again).
  2. The same key (read from that row) replayed later, straight to each
     surviving balancer: 200, Idempotent-Replayed, the same image bytes
     (read back from the store); with another body: 422
     idempotency_key_reused.
  3. The same for OpenAI's POST /v1/images/generations (b64_json).
  4. A client's own key, its balancer alive: the same request sent to
     another balancer while the first runs it waits for that job and
     answers its image; a second request with the key on the first
     balancer meanwhile: 409 request_in_progress.
  5. One balancer on a SQLite file: a keyed request whose balancer is
     killed -9 mid-job and restarted; the retry (same key) gets that job
     (Idempotent-Replayed), run again after the restart, with the right
     pixels; one job in the file.

Without the balancer's key handling (a second job is made) or without the
conf's retry (NGINX's 502), it fails."""

import base64
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sdtest as t  # noqa: E402

LEASE_S = 2
PROVIDER = "facade-key-provider-token"
PACE_MS = 150  # a step: 12 steps = 1.8 s a job, 20 (OpenAI's) = 3 s
SIZE = 64
A1111_BODY = {"prompt": "a blue square over a red sea, facade key", "negative_prompt": "", "steps": 12,
              "sampler_name": "Euler a", "cfg_scale": 7, "width": SIZE, "height": SIZE, "seed": 4242}
OPENAI_BODY = {"prompt": "a yellow star over green hills, facade key", "size": "%dx%d" % (SIZE, SIZE),
               "response_format": "b64_json", "model": "dall-e-3"}


class Cluster:
    def __init__(self):
        pg = t.start_postgres()
        self.db = pg.url(pg.create_database())
        self.args = ["--lease-s", LEASE_S, "--trusted-proxy", "127.0.0.1", "--provider-token", PROVIDER,
                     "--heartbeat-interval", 2, "--max-attempts", 8]
        self.ports = [t.free_port() for _ in range(3)]
        self.bals = [t.start_balancer(*self.args, name="balancer-%s" % "ABC"[k], port=self.ports[k], db=self.db)
                     for k in range(3)]
        self.ngx, self.api = t.nginx_pg_front(self.ports)
        self.backend = t.start_backend("--pace-ms-per-step", PACE_MS, "--provider", "paced", "--gpu-class", "l40",
                                       "--balancer", self.api, "--token", PROVIDER, name="paced")
        self.reference = t.start_backend("--provider", "reference", name="reference")
        self.reference_paced = t.start_backend("--pace-ms-per-step", PACE_MS, "--provider", "reference-paced",
                                               name="reference-paced")
        for b in self.bals:
            t.check("%s sees the backend idle" % b.name, t.wait_idle_backends(b.url, 1, 30))

    def kill_the_runner(self):
        """Kills -9 the balancer whose /metrics shows a running job; returns its index, or None."""
        def runner():
            for k, b in enumerate(self.bals):
                if b.running() and t.metric(t.metrics(b.url), "sdgate_jobs_running", 0):
                    return k + 1
            return None
        k = t.wait_until(runner, 10, 0.02)
        if not k:
            return None
        time.sleep(0.3)  # midway: the backend has begun
        self.bals[k - 1].kill()
        return k - 1

    def rows(self, prompt):
        """(id, status, idempotency_key) of the stored jobs with this prompt."""
        return t.db_query(self.db, "SELECT id, status, doc->>'idempotency_key' FROM jobs "
                                   "WHERE doc->'request'->>'prompt' = ?", (prompt,))


def render_direct(cl, body):
    r, _ = t.txt2img(cl.reference.url, body)
    imgs = t.images_of(r) or []
    img = t.try_decode_png(imgs[0])[0] if imgs else None
    return img.pixels if img else None


def survive(cl, path, body, what):
    """POSTs body through NGINX (no key), kills the balancer that runs it;
    returns (the client's reply, the victim's index)."""
    client = t.Background(t.request, "POST", cl.api + path, json_body=body, timeout=90)
    victim = cl.kill_the_runner()
    t.check("%s: its job ran on a balancer, killed -9 mid-job" % what, victim is not None)
    reply, err, secs = client.join(120)
    t.check("%s: the client (no Idempotency-Key) got 200 through NGINX though its balancer died (%.1f s)"
            % (what, secs or 0), err is None and reply is not None and reply.status == 200,
            repr(err) if err else t.describe(reply))
    return reply, victim


def one_row(cl, prompt, what):
    rows = cl.rows(prompt)
    t.check("%s: the database holds exactly one job for it, done, under NGINX's key (%s)" % (what, rows),
            len(rows) == 1 and rows[0][1] == "done" and t.is_hex_id(rows[0][2] or ""), rows)
    return rows[0][2] if rows else None


def replays(cl, path, body, other, key, expect, images_of, what):
    """The key replayed to each surviving balancer: the same images; another body: 422."""
    for b in cl.bals:
        if not b.running():
            continue
        r = t.request("POST", b.url + path, json_body=body, headers={"Idempotency-Key": key}, timeout=60)
        t.check("%s: the key replayed to %s answers the same image bytes (Idempotent-Replayed)" % (what, b.name),
                r.status == 200 and images_of(r) == expect and r.headers.get("idempotent-replayed") == "true",
                t.describe(r))
        r = t.request("POST", b.url + path, json_body=other, headers={"Idempotency-Key": key}, timeout=60)
        t.check("%s: the key with another body on %s: 422 idempotency_key_reused" % (what, b.name),
                r.status == 422 and "idempotency_key_reused" in r.raw.decode("utf-8", "replace"), t.describe(r))


def a1111_part(cl):
    what = "A1111 txt2img"
    reply, victim = survive(cl, "/sdapi/v1/txt2img", A1111_BODY, what)
    imgs = t.images_of(reply) or []
    img = t.try_decode_png(imgs[0])[0] if len(imgs) == 1 else None
    info = t.info_of(reply) or {}
    direct = dict(A1111_BODY, seed=info.get("seed"))
    if t.is_int(info.get("subseed")):
        direct["subseed"] = info["subseed"]
    t.check("%s: its image equals a direct render of the same request" % what,
            img is not None and info.get("seed") == A1111_BODY["seed"] and render_direct(cl, direct) == img.pixels,
            t.describe(reply))
    key = one_row(cl, A1111_BODY["prompt"], what)
    replays(cl, "/sdapi/v1/txt2img", A1111_BODY, dict(A1111_BODY, prompt="another prompt"), key,
            reply.json.get("images"), lambda r: (r.json or {}).get("images"), what)
    return victim


def openai_part(cl):
    what = "OpenAI b64_json"
    reply, _ = survive(cl, "/v1/images/generations", OPENAI_BODY, what)
    data = (reply.json or {}).get("data") or []
    img = t.try_decode_png(base64.b64decode(data[0]["b64_json"]))[0] if len(data) == 1 else None
    t.check("%s: one %dx%d image" % (what, SIZE, SIZE), img is not None and (img.width, img.height) == (SIZE, SIZE),
            t.describe(reply))
    key = one_row(cl, OPENAI_BODY["prompt"], what)
    b64 = [d.get("b64_json") for d in data]
    replays(cl, "/v1/images/generations", OPENAI_BODY, dict(OPENAI_BODY, prompt="another prompt"), key, b64,
            lambda r: [d.get("b64_json") for d in ((r.json or {}).get("data") or [])], what)


def live_owner_part(cl):
    what = "a key sent to two live balancers"
    body = dict(A1111_BODY, prompt="two balancers, one key", seed=77)
    key = {"Idempotency-Key": "facade-key-live-owner"}
    one, other = [b for b in cl.bals if b.running()][:2]
    first = t.Background(t.request, "POST", one.url + "/sdapi/v1/txt2img", json_body=body, headers=key,
                         timeout=60)
    t.check("%s: the first balancer runs it" % what,
            t.wait_until(lambda: t.metric(t.metrics(one.url), "sdgate_jobs_running", 0), 10, 0.02))
    r = t.request("POST", one.url + "/sdapi/v1/txt2img", json_body=body, headers=key, timeout=60)
    t.check("%s: a second request with the key where the first waits: 409 request_in_progress" % what,
            r.status == 409 and "request_in_progress" in r.raw.decode("utf-8", "replace"), t.describe(r))
    second = t.request("POST", other.url + "/sdapi/v1/txt2img", json_body=body, headers=key, timeout=60)
    reply, err, _ = first.join(60)
    t.check("%s: the other balancer waited for the job and answers its image" % what,
            err is None and reply.status == 200 and second.status == 200 and t.images_of(reply)
            and t.images_of(second) == t.images_of(reply) and second.headers.get("idempotent-replayed") == "true",
            t.describe(second))
    rows = cl.rows(body["prompt"])
    t.check("%s: one job in the database (%s)" % (what, rows), len(rows) == 1, rows)


def sqlite_part(cl):
    what = "SQLite, restarted"
    db = os.path.join(t.tmpdir("sqlite"), "balancer.db")
    port = t.free_port()
    args = ["--backend", cl.reference_paced.url]
    bal = t.start_balancer(*args, name="sqlite-1", port=port, db=db)
    body = dict(A1111_BODY, prompt="one balancer, restarted", seed=99)
    key = {"Idempotency-Key": "facade-key-sqlite"}
    first = t.Background(t.request, "POST", bal.url + "/sdapi/v1/txt2img", json_body=body, headers=key, timeout=60)
    t.check("%s: the balancer runs the keyed job" % what,
            t.wait_until(lambda: t.metric(t.metrics(bal.url), "sdgate_jobs_running", 0), 10, 0.02))
    bal.kill()
    first.join(10)
    bal = t.start_balancer(*args, name="sqlite-2", port=port, db=db)
    r = t.request("POST", bal.url + "/sdapi/v1/txt2img", json_body=body, headers=key, timeout=60)
    info = t.info_of(r) or {}
    imgs = t.images_of(r) or []
    img = t.try_decode_png(imgs[0])[0] if len(imgs) == 1 else None
    direct = dict(body, seed=info.get("seed"), subseed=info.get("subseed"))
    t.check("%s: the retry got the job, run again, with the right pixels" % what,
            r.status == 200 and img is not None and info.get("seed") == 99 and
            r.headers.get("idempotent-replayed") == "true" and render_direct(cl, direct) == img.pixels,
            t.describe(r))
    rows = t.db_query(db, "SELECT id FROM jobs")
    t.check("%s: one job in the file (%s)" % (what, rows), len(rows) == 1, rows)
    bal.stop()


def main():
    cl = Cluster()
    victim = a1111_part(cl)
    # Back on its port and database, as an operator would restart it.
    cl.bals[victim] = t.start_balancer(*cl.args, name="balancer-%s-2" % "ABC"[victim], port=cl.ports[victim],
                                       db=cl.db)
    t.check("the restarted balancer sees the backend idle", t.wait_idle_backends(cl.bals[victim].url, 1, 30))
    openai_part(cl)
    live_owner_part(cl)
    sqlite_part(cl)
    print("# NGINX error log: %s" % json.dumps(cl.ngx.log(600)))
    cl.ngx.stop()


t.run(main)
