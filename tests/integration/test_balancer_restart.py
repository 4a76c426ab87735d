"""test_balancer_restart.py — nothing accepted is lost: jobs accepted with
202 (one running, the rest queued) survive a SIGKILL of the balancer; a new
balancer on the same --db queues them again and finishes every one, with the
seeds fixed before the crash. A job finished before the crash keeps its
result across restarts (also a clean SIGTERM restart).
Contract: ../../docs/jobs-api.md "Jobs" ("The 202 is sent only once the job is
in the balancer's database"), ../../docs/architecture.md "Storage"."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sdtest as t  # noqa: E402

PACE_MS = 60
STEPS = 10
N_QUEUED = 6
TOKEN = "restart-token-0123456"


def main():
    be = t.start_backend("--pace-ms-per-step", PACE_MS, "--provider", "restart-prov", "--gpu-class", "l40")
    static = t.static_backend_arg(be.url, provider="restart-prov", gpu_class="l40")
    common = ["--backend", static, "--provider-token", TOKEN, "--heartbeat-interval", 2]
    bal = t.start_balancer(*common, name="balancer-1")
    db, port = bal.db, bal.port
    t.check("the backend comes up idle", t.wait_idle_backends(bal.url, 1), t.board(bal.url))
    # A registered backend too: the balancer keeps it in the store.
    reg = t.start_backend("--provider", "registered-prov", "--gpu-class", "v100", "--balancer", bal.url,
                          "--token", TOKEN, name="backend-registered")
    brd = t.wait_board(bal.url, lambda bs: any(x.get("provider") == "registered-prov" and x.get("state") == "idle"
                                               for x in bs), 20)
    reg_id = (t.board_entry(brd, provider="registered-prov") or {}).get("id")
    t.check("a self-registering backend shows idle on the board", reg_id is not None, brd)
    # And a registration made by hand (nothing heartbeats for it but the test).
    fake = t.FakeBackend(gpu_class="manualgpu", provider="manual", txt2img_status=500)
    r = t.request("POST", bal.url + "/v1/backends", json_body={"url": fake.url, "provider": "manual",
                                                              "gpu_class": "manualgpu"},
                  headers={"Authorization": "Bearer " + TOKEN}, timeout=10)
    manual_id = r.json.get("id") if r.status == 201 and isinstance(r.json, dict) else None
    manual_secret = r.json.get("secret") if manual_id else None
    t.check("a manual registration: 201", manual_id is not None, t.describe(r))

    # One job finished before the crash.
    r = t.submit_job(bal.url, t.small_job(prompt="finished before the crash", seed=77, gpus=["l40"]))
    early = r.json.get("id") if r.status == 202 and isinstance(r.json, dict) else None
    d = t.wait_job(bal.url, early, timeout=30) if early else None
    t.check("a first job is done before the crash", d is not None and d.get("status") == "done", d)
    early_images = t.job_images(bal.url, d) if d else None

    ids, seeds_before = [], {}
    for i in range(N_QUEUED):
        r = t.submit_job(bal.url, t.small_job(prompt="survives the crash %d" % i, seed=-1, steps=STEPS, gpus=["l40"]))
        if r.status == 202 and isinstance(r.json, dict) and t.is_hex_id(r.json.get("id")):
            ids.append(r.json["id"])
        else:
            t.check("POST /v1/jobs #%d answers 202" % i, False, t.describe(r))
    t.check("%d jobs accepted (202)" % N_QUEUED, len(ids) == N_QUEUED, len(ids))
    states = {}
    for jid in ids:
        d = t.get_job(bal.url, jid)
        states[jid] = d.get("status") if d else None
        if d and t.is_int(d.get("seed")):
            seeds_before[jid] = d["seed"]
    queued = [j for j in ids if states[j] == "queued"]
    t.check("before the crash at least %d of them are still queued" % (N_QUEUED - 2), len(queued) >= N_QUEUED - 2,
            states)
    t.check("every accepted job shows a concrete seed (not -1) before the crash",
            len(seeds_before) == len(ids) and all(s >= 0 for s in seeds_before.values()), seeds_before)

    # A client that sent its job with an Idempotency-Key and never saw the
    # answer (the crash) sends it again after the restart: the same job.
    idem_body = t.small_job(prompt="sent again after the crash", seed=-1, steps=STEPS, gpus=["l40"])
    idem_hdr = {"Idempotency-Key": "restart-test-1"}
    r = t.submit_job(bal.url, idem_body, headers=idem_hdr)
    idem_id = r.json.get("id") if r.status == 202 and isinstance(r.json, dict) else None
    t.check("POST /v1/jobs with an Idempotency-Key: 202", idem_id is not None, t.describe(r))
    r = t.submit_job(bal.url, idem_body, headers=idem_hdr)
    t.check("the same request and key again: 200 with the same id (Idempotent-Replayed: true), no second job",
            r.status == 200 and isinstance(r.json, dict) and r.json.get("id") == idem_id
            and r.headers.get("idempotent-replayed") == "true", t.describe(r))
    r = t.submit_job(bal.url, dict(idem_body, prompt="another request"), headers=idem_hdr)
    t.check("the key with another request: 422 idempotency_key_reused",
            t.is_sdgate_error(r, 422, "idempotency_key_reused"), t.describe(r))
    r = t.submit_job(bal.url, idem_body, headers={"Idempotency-Key": "has space"})
    t.check("a malformed Idempotency-Key: 422 invalid, field Idempotency-Key",
            t.is_sdgate_error(r, 422, "invalid") and r.json["error"].get("field") == "Idempotency-Key", t.describe(r))

    if manual_id:  # it sends no heartbeats of its own: keep it within its window up to the crash
        t.request("POST", bal.url + "/v1/backends/%s/heartbeat" % manual_id,
                  headers={"Authorization": "Bearer %s" % manual_secret}, timeout=10)
    bal.kill()
    print("# balancer-1 killed with SIGKILL; %d queued, statuses %s" % (len(queued), sorted(states.values())))

    bal2 = t.start_balancer(*common, name="balancer-2", db=db, port=port)
    if manual_id:
        hb = t.request("POST", bal2.url + "/v1/backends/%s/heartbeat" % manual_id,
                       headers={"Authorization": "Bearer %s" % manual_secret}, timeout=10)
        t.check("right after the restart the manual registration is still known (heartbeat 200 under its old id and "
                "secret: registrations and their secrets' hashes are kept in the store)", hb.status == 200, t.describe(hb))
    r = t.submit_job(bal2.url, idem_body, headers=idem_hdr)
    t.check("after the crash and restart the retry with the same Idempotency-Key finds the same job",
            idem_id is not None and r.status == 200 and isinstance(r.json, dict) and r.json.get("id") == idem_id,
            t.describe(r))
    d = t.wait_job(bal2.url, idem_id, timeout=60) if idem_id else None
    t.check("…and that job finishes", d is not None and d.get("status") == "done", d and d.get("status"))
    docs = {jid: t.wait_job(bal2.url, jid, timeout=60) for jid in ids}
    missing = [j for j, d in docs.items() if d is None]
    t.check("after the restart on the same --db every accepted job is known (GET /v1/jobs/{id} 200)",
            not missing, missing)
    not_done = {j: (d or {}).get("status") for j, d in docs.items() if not d or d.get("status") != "done"}
    t.check("every job accepted before the crash finishes with status done", not not_done, not_done)
    t.check("each job kept the seed it was given before the crash",
            all(docs[j] and docs[j].get("seed") == seeds_before.get(j) for j in ids),
            [(seeds_before.get(j), (docs[j] or {}).get("seed")) for j in ids])
    infos = [t.job_info(docs[j]) if docs[j] else None for j in ids]
    t.check("each result's info.seed is that seed",
            all(isinstance(i, dict) and i.get("seed") == seeds_before.get(j) for i, j in zip(infos, ids)),
            [(seeds_before.get(j), (i or {}).get("seed")) for i, j in zip(infos, ids)])
    t.check("each result holds a decodable PNG",
            all(docs[j] and t.try_decode_png((t.job_images(bal2.url, docs[j]) or [b""])[0])[0] is not None
                for j in ids),
            "some image missing or not a PNG")

    d = t.get_job(bal2.url, early) if early else None
    t.check("the job finished before the crash is still done with the same image after the restart",
            d is not None and d.get("status") == "done" and t.job_images(bal2.url, d) == early_images and early_images,
            d and {k: v for k, v in d.items() if k != "result"})
    m = t.metrics(bal2.url)
    t.check("the restarted balancer's queue is empty at the end (sdgate_queue_depth 0, jobs_running 0)",
            t.metric(m, "sdgate_queue_depth") == 0 and t.metric(m, "sdgate_jobs_running") == 0,
            (t.metric(m, "sdgate_queue_depth"), t.metric(m, "sdgate_jobs_running")))
    brd = t.wait_board(bal2.url, lambda bs: any(x.get("provider") == "registered-prov" and x.get("state") == "idle"
                                                for x in bs), 20)
    e = t.board_entry(brd, provider="registered-prov")
    t.check("after the crash the self-registering backend is on the board again, idle, exactly once",
            e is not None and sum(1 for x in brd or [] if x.get("provider") == "registered-prov") == 1, brd)
    r = t.submit_job(bal2.url, t.small_job(prompt="on the registered one", seed=8, gpus=["v100"]))
    d = t.wait_job(bal2.url, r.json["id"], timeout=30) if r.status == 202 and isinstance(r.json, dict) else None
    t.check("a job for gpus [v100] runs on the registered backend after the restart",
            d is not None and d.get("status") == "done" and d.get("provider") == "registered-prov",
            d and {k: v for k, v in d.items() if k != "result"})

    # A clean restart keeps finished results too.
    last_images = t.job_images(bal2.url, docs[ids[-1]] or {})
    bal2.stop()
    bal3 = t.start_balancer("--backend", static, name="balancer-3", db=db)
    d = t.get_job(bal3.url, ids[-1])
    t.check("after a clean SIGTERM restart a finished job is still done with its images",
            d is not None and d.get("status") == "done" and t.job_images(bal3.url, d)
            and t.job_images(bal3.url, d) == last_images,
            d and {k: v for k, v in d.items() if k != "result"})
    r = t.submit_job(bal3.url, t.small_job(prompt="after two restarts", seed=5))
    d = t.wait_job(bal3.url, r.json["id"], timeout=30) if r.status == 202 and isinstance(r.json, dict) else None
    t.check("a new job on the third balancer is done", d is not None and d.get("status") == "done", d)
    r = t.request("GET", bal3.url + "/v1/jobs/" + "0" * 32, timeout=10)
    t.check("an unknown id is still 404 not_found after restarts", t.is_sdgate_error(r, 404, "not_found"),
            t.describe(r))


if __name__ == "__main__":
    t.run(main)
