"""test_balancer_routing.py — sdgate-balancer in front of three backends of
different speeds (--pace-ms-per-step): 20 concurrent jobs all finish, and no
backend ever has two of them at once. Overlap is seen from the backends'
side: each backend sits behind a recording proxy (the balancer knows only
the proxy's URL), which notes the start and end of every txt2img call it
forwards; a second call opening before the previous one closed is an
overlap, whatever the backend itself would have done with it. The job
reports (provider, gpu, seed) are compared with what each proxy saw.
Contract: ../../balancer/README.md "Routing", ../../docs/jobs-api.md."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sdtest as t  # noqa: E402

N_JOBS = 20
# name, gpu class, pace ms per step
BACKENDS = [("fast", "h100", 20), ("mid", "a100", 50), ("slow", "rtx3090", 100)]


def main():
    proxies, bes = {}, {}
    args = []
    for name, cls, pace in BACKENDS:
        be = t.start_backend("--pace-ms-per-step", pace, "--provider", "real-" + name, "--gpu-class", cls,
                             name="backend-" + name)
        px = t.RecordingProxy(be.url)
        bes[name], proxies[name] = be, px
        args += ["--backend", t.static_backend_arg(px.url, provider="prov-" + name, location="Loc " + name,
                                                   gpu_class=cls)]
    # --prefetch-ms 0: the slot contract alone (with it, each slot may also
    # hold one job waiting behind: test_balancer_prefetch.py)
    bal = t.start_balancer("--prefetch-ms", 0, *args)
    t.check("the three static backends come up idle on GET /v1/backends",
            t.wait_idle_backends(bal.url, 3), t.board(bal.url))
    brd = t.board(bal.url) or []
    t.check("the board shows each static backend's identity from its URL fragment (provider, location, "
            "gpu_class, source static)",
            all(t.board_entry(brd, provider="prov-" + n, location="Loc " + n, gpu_class=c, source="static")
                for n, c, _ in BACKENDS), brd)

    bodies = [t.small_job(prompt="routing job %d" % i, seed=1000 + i, steps=4, sampler_name="Euler")
              for i in range(N_JOBS)]
    subs = [t.Background(t.submit_job, bal.url, b) for b in bodies]
    ids = []
    for i, s in enumerate(subs):
        res, err, _ = s.join(60)
        ok = res is not None and res.status == 202 and isinstance(res.json, dict) and t.is_hex_id(res.json.get("id"))
        if ok:
            ids.append(res.json["id"])
        else:
            t.check("POST /v1/jobs #%d answers 202 with an id" % i, False, t.describe(res) if res else repr(err))
    t.check("all %d concurrent POST /v1/jobs answer 202 {id, status queued, position}" % N_JOBS,
            len(ids) == N_JOBS, "%d of %d" % (len(ids), N_JOBS))

    docs = [t.wait_job(bal.url, i, timeout=90) for i in ids]
    done = [d for d in docs if d and d.get("status") == "done"]
    t.check("every job finishes with status done", len(done) == len(ids),
            [(d or {}).get("status") for d in docs])

    for name, px in proxies.items():
        ov = px.overlaps()
        t.check("backend %s never had two txt2img calls at once (max in flight %d, %d calls)"
                % (name, px.max_inflight, len(px.calls)),
                not ov and px.max_inflight <= 1,
                [("%.3f-%s" % (a["start"], a["end"]), "%.3f" % b["start"]) for a, b in ov[:3]])
    total = sum(len(px.calls) for px in proxies.values())
    t.check("the backends got exactly %d txt2img calls in all (one per job, no duplicates)" % N_JOBS,
            total == N_JOBS, {n: len(px.calls) for n, px in proxies.items()})
    used = [n for n, px in proxies.items() if px.calls]
    t.check("the work is spread: at least two of the three backends ran jobs", len(used) >= 2,
            {n: len(px.calls) for n, px in proxies.items()})

    # Which backend ran which job, by the proxies; vs what the job says.
    ran_on = {}
    for name, px in proxies.items():
        for c in px.calls:
            if isinstance(c["request"], dict):
                ran_on[c["request"].get("prompt")] = (name, c["request"])
    cls_of = {n: c for n, c, _ in BACKENDS}
    wrong, bad_images = [], []
    for body, d in zip(bodies, docs):
        if not d or d.get("status") != "done":
            continue
        where = ran_on.get(body["prompt"])
        if not where:
            wrong.append((body["prompt"], "no proxy saw it"))
            continue
        name, sent = where
        if d.get("provider") != "prov-" + name or d.get("gpu") != cls_of[name] or d.get("location") != "Loc " + name:
            wrong.append((body["prompt"], name, d.get("provider"), d.get("gpu"), d.get("location")))
        if sent.get("seed") != body["seed"] or d.get("seed") != body["seed"]:
            wrong.append((body["prompt"], "seed", sent.get("seed"), d.get("seed")))
        if "gpus" in sent or "sdgate" in sent:
            wrong.append((body["prompt"], "routing hints were forwarded to the backend", sorted(sent)))
        pngs = t.job_images(bal.url, d) or []
        decoded = [t.try_decode_png(p) for p in pngs]
        if len(decoded) != 1 or decoded[0][0] is None or decoded[0][0].width != 64 or decoded[0][0].height != 64:
            bad_images.append((body["prompt"], len(pngs), [e for _, e in decoded]))
    t.check("each job's provider, location, gpu and seed match the backend that really ran it", not wrong,
            wrong[:5])
    t.check("each done job's result holds one decodable 64x64 PNG", not bad_images, bad_images[:5])
    t.check("each done job reports attempt 1, queue_ms and inference_ms as numbers >= 0",
            all(d.get("attempt") == 1 and t.is_number(d.get("queue_ms")) and d["queue_ms"] >= 0
                and t.is_number(d.get("inference_ms")) and d["inference_ms"] >= 0 for d in done),
            [(d.get("attempt"), d.get("queue_ms"), d.get("inference_ms")) for d in done][:5])

    keys = ["id", "status", "position", "attempt", "seed", "provider", "location", "gpu", "backend", "queue_ms",
            "inference_ms", "created", "result"]
    t.check("each done job's GET /v1/jobs/{id} has every documented key (%s), result {images, info}"
            % ", ".join(keys),
            all(all(k in d for k in keys) and isinstance(d.get("result"), dict) and "images" in d["result"]
                and "info" in d["result"] and t.is_hex_id(d.get("backend")) for d in done),
            [sorted(d) for d in done[:1]])

    # The learned speeds: the fast backend ran at least as many jobs as the slow one.
    t.check("the fast backend ran at least as many jobs as the slow one",
            len(proxies["fast"].calls) >= len(proxies["slow"].calls),
            {n: len(px.calls) for n, px in proxies.items()})

    brd = t.wait_board(bal.url, lambda bs: all(x.get("state") == "idle" for x in bs), 20)
    t.check("afterwards every backend is idle with running 0", brd and all(
        x.get("state") == "idle" and x.get("running") == 0 for x in brd), brd)
    jd = {x.get("provider"): x.get("jobs_done") for x in brd or []}
    t.check("the board's jobs_done per backend equals the calls each proxy saw",
            all(jd.get("prov-" + n) == len(px.calls) for n, px in proxies.items()),
            (jd, {n: len(px.calls) for n, px in proxies.items()}))
    r = t.request("GET", bal.url + "/healthz", timeout=10)
    t.check("GET /healthz at the end: 200, status ok, queue 0",
            r.status == 200 and isinstance(r.json, dict) and r.json.get("status") == "ok" and r.json.get("queue") == 0,
            t.describe(r))
    bal.stop()
    check_slots()


def check_slots():
    """A backend declared with slots=2 (URL fragment) gets two jobs at once,
    never three."""
    be = t.start_backend("--pace-ms-per-step", 50, "--provider", "two-slots", "--gpu-class", "a100",
                         name="backend-2slots")
    px = t.RecordingProxy(be.url)
    bal = t.start_balancer("--prefetch-ms", 0, "--backend",
                           t.static_backend_arg(px.url, provider="two-slots", gpu_class="a100", slots=2),
                           name="balancer-slots")
    brd = t.wait_board(bal.url, lambda bs: any(x.get("state") == "idle" for x in bs), 30)
    t.check("[slots 2] the board shows the backend idle with slots 2",
            (t.board_entry(brd, provider="two-slots") or {}).get("slots") == 2, brd)
    subs = [t.Background(t.submit_job, bal.url, t.small_job(prompt="slot job %d" % i, seed=i, steps=5))
            for i in range(8)]
    ids = []
    for s in subs:
        res, err, _ = s.join(60)
        if res is not None and res.status == 202 and isinstance(res.json, dict):
            ids.append(res.json["id"])
    docs = [t.wait_job(bal.url, i, timeout=60) for i in ids]
    t.check("[slots 2] 8 jobs all done", len(ids) == 8 and all(d and d.get("status") == "done" for d in docs),
            [d and d.get("status") for d in docs])
    t.check("[slots 2] the backend had two txt2img calls at once, never three (max in flight %d)" % px.max_inflight,
            px.max_inflight == 2, px.max_inflight)
    bal.stop()


if __name__ == "__main__":
    t.run(main)
