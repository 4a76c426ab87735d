"""test_balancer_gpus.py — routing hints: a job goes only to a backend whose
GPU class is accepted (top-level "gpus", "sdgate": {"gpus"}, or the
X-Sdgate-Gpus header, on /v1/jobs and on the A1111 façade), within
max_price, offering the asked checkpoint; a GPU class, checkpoint or price
that no live backend offers fails at once with 503 no_backend instead of
waiting; malformed hints are 422.
Contract: ../../docs/jobs-api.md "Routing hints"."""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sdtest as t  # noqa: E402

BASE_MODEL = "sdgate-procedural-base-v1.builtin [9917535daf]"
# name, gpu class, price per hour; the a100 takes its name and class from its own
# /sdgate/v1/info, its price from the operator (a self-reported price never counts).
BACKENDS = [("a100", "a100", 2.0), ("3090", "rtx3090", 0.5), ("l40", "l40", 1.0)]
FAIL_FAST_S = 15  # "at once": far below any job timeout; a hang would wait minutes


def run_jobs(bal, bodies, headers=None):
    """Submits all at once; returns the final documents (None for a refused one)."""
    subs = [t.Background(t.submit_job, bal.url, b, headers) for b in bodies]
    ids = []
    for s in subs:
        res, err, _ = s.join(30)
        ids.append(res.json.get("id") if res is not None and res.status == 202 and isinstance(res.json, dict) else None)
    return [t.wait_job(bal.url, i, timeout=60) if i else None for i in ids]


def gpus_of(docs):
    return [(d or {}).get("gpu") if (d or {}).get("status") == "done" else (d or {}).get("status") for d in docs]


def main():
    args = []
    for name, cls, price in BACKENDS:
        # A small pace so that several jobs at once keep the wanted backend busy
        # and the others idle: a filter that is ignored would use them.
        be = t.start_backend("--pace-ms-per-step", 30, "--provider", "prov-" + name, "--gpu-class", cls,
                             "--price-per-hour", price, name="backend-" + name)
        if name == "a100":
            args += ["--backend", t.static_backend_arg(be.url, price_per_hour=price)]  # the rest self-reported
        else:
            args += ["--backend", t.static_backend_arg(be.url, provider="prov-" + name, gpu_class=cls,
                                                       price_per_hour=price)]
    bal = t.start_balancer(*args)
    t.check("three backends come up idle", t.wait_idle_backends(bal.url, 3), t.board(bal.url))
    brd = t.board(bal.url) or []
    t.check("the backend given without a fragment takes provider and gpu_class from its /sdgate/v1/info",
            t.board_entry(brd, provider="prov-a100", gpu_class="a100") is not None, brd)

    docs = run_jobs(bal, [t.small_job(prompt="a100 only %d" % i, seed=i, steps=3, gpus=["a100"]) for i in range(6)])
    t.check("6 concurrent jobs with \"gpus\": [\"a100\"] all run on the a100", gpus_of(docs) == ["a100"] * 6,
            gpus_of(docs))
    t.check("... and report provider prov-a100", all((d or {}).get("provider") == "prov-a100" for d in docs),
            [(d or {}).get("provider") for d in docs])

    docs = run_jobs(bal, [t.small_job(prompt="3090 via sdgate %d" % i, seed=i, steps=3,
                                      sdgate={"gpus": ["rtx3090"]}) for i in range(4)])
    t.check("4 concurrent jobs with \"sdgate\": {\"gpus\": [\"rtx3090\"]} all run on the rtx3090",
            gpus_of(docs) == ["rtx3090"] * 4, gpus_of(docs))

    docs = run_jobs(bal, [t.small_job(prompt="l40 via header %d" % i, seed=i, steps=3) for i in range(4)],
                    headers={"X-Sdgate-Gpus": "l40"})
    t.check("4 concurrent jobs with the header X-Sdgate-Gpus: l40 all run on the l40", gpus_of(docs) == ["l40"] * 4,
            gpus_of(docs))

    docs = run_jobs(bal, [t.small_job(prompt="two classes %d" % i, seed=i, steps=3) for i in range(6)],
                    headers={"X-Sdgate-Gpus": " A100 , l40"})
    t.check("X-Sdgate-Gpus: \" A100 , l40\" (case, spaces) keeps 6 jobs on a100 and l40",
            all(g in ("a100", "l40") for g in gpus_of(docs)), gpus_of(docs))

    docs = run_jobs(bal, [t.small_job(prompt="cheap %d" % i, seed=i, steps=3, max_price=0.6) for i in range(4)])
    t.check("max_price 0.6 keeps 4 jobs on the 0.5/h rtx3090", gpus_of(docs) == ["rtx3090"] * 4, gpus_of(docs))
    docs = run_jobs(bal, [t.small_job(prompt="checkpoint %d" % i, seed=i, steps=3, gpus=["l40"],
                                      override_settings={"sd_model_checkpoint": BASE_MODEL}) for i in range(2)])
    t.check("a job naming a checkpoint the backends offer runs (done)", gpus_of(docs) == ["l40"] * 2, gpus_of(docs))

    # Façade with hints.
    r, _ = t.txt2img(bal.url, t.small_job(prompt="facade a100", seed=5, gpus=["a100"]))
    info = t.info_of(r)
    t.check("façade POST /sdapi/v1/txt2img with \"gpus\": [\"a100\"] runs on the a100 (info.sdgate.gpu)",
            r.status == 200 and isinstance(info, dict) and (info.get("sdgate") or {}).get("gpu") == "a100",
            t.describe(r) if r.status != 200 else info.get("sdgate"))
    rr = t.request("POST", bal.url + "/sdapi/v1/txt2img", json_body=t.small_job(prompt="facade header", seed=6),
                   headers={"X-Sdgate-Gpus": "rtx3090"})
    info = t.info_of(rr)
    t.check("façade with X-Sdgate-Gpus: rtx3090 runs on the rtx3090",
            rr.status == 200 and isinstance(info, dict) and (info.get("sdgate") or {}).get("gpu") == "rtx3090",
            t.describe(rr) if rr.status != 200 else info.get("sdgate"))
    r, _ = t.txt2img(bal.url, t.small_job(prompt="facade sdgate", seed=7, sdgate={"gpus": ["l40"], "max_price": 5}))
    info = t.info_of(r)
    t.check("façade with \"sdgate\": {\"gpus\": [\"l40\"], \"max_price\": 5} runs on the l40",
            r.status == 200 and isinstance(info, dict) and (info.get("sdgate") or {}).get("gpu") == "l40",
            t.describe(r) if r.status != 200 else info.get("sdgate"))
    params = r.json.get("parameters") if r.status == 200 and isinstance(r.json, dict) else None
    t.check("the routing hints are not passed on as txt2img parameters",
            isinstance(params, dict) and "sdgate" not in params and "gpus" not in params, params)

    # Nothing can serve it: 503 no_backend at once.
    cases = [("gpus [\"h100\"] (a class no backend has)", t.small_job(gpus=["h100"]), None),
             ("X-Sdgate-Gpus: v100", t.small_job(), {"X-Sdgate-Gpus": "v100"}),
             ("an unknown checkpoint", t.small_job(override_settings={"sd_model_checkpoint": "no-such-model.ckpt"}),
              None),
             ("an offered checkpoint but on a class no backend has",
              t.small_job(gpus=["h100"], override_settings={"sd_model_checkpoint": BASE_MODEL}), None),
             ("max_price 0.1 (below every backend's price)", t.small_job(max_price=0.1), None),
             ("rtx3090 within max_price 0.4 (it costs 0.5)", t.small_job(gpus=["rtx3090"], max_price=0.4), None)]
    for what, body, hdrs in cases:
        t0 = time.monotonic()
        r = t.submit_job(bal.url, body, headers=hdrs, timeout=FAIL_FAST_S)
        took = time.monotonic() - t0
        t.check("POST /v1/jobs with %s: 503 no_backend at once (%.2f s)" % (what, took),
                t.is_sdgate_error(r, 503, "no_backend"), t.describe(r))
    r = t.request("POST", bal.url + "/sdapi/v1/txt2img", json_body=t.small_job(gpus=["h100"]), timeout=FAIL_FAST_S)
    t.check("façade with gpus [\"h100\"]: 503 {\"detail\": str} at once",
            r.status == 503 and isinstance(r.json, dict) and isinstance(r.json.get("detail"), str), t.describe(r))
    r = t.request("POST", bal.url + "/sdapi/v1/txt2img", timeout=FAIL_FAST_S,
                  json_body=t.small_job(override_settings={"sd_model_checkpoint": "no-such-model.ckpt"}))
    t.check("façade with an unknown checkpoint: 503 {\"detail\"} at once",
            r.status == 503 and isinstance(r.json, dict) and isinstance(r.json.get("detail"), str), t.describe(r))

    # Malformed hints: 422.
    for what, body, hdrs in [("gpus a string", t.small_job(gpus="a100"), None),
                             ("gpus [1]", t.small_job(gpus=[1]), None),
                             ("gpus with a 100-character name", t.small_job(gpus=["x" * 100]), None),
                             ("gpus with 40 names", t.small_job(gpus=["g%d" % i for i in range(40)]), None),
                             ("a negative max_price", t.small_job(max_price=-1), None),
                             ("max_price a string", t.small_job(max_price="cheap"), None),
                             ("sdgate not an object", t.small_job(sdgate=["a100"]), None),
                             ("X-Sdgate-Gpus with a bad character", t.small_job(), {"X-Sdgate-Gpus": "a100;drop"})]:
        r = t.submit_job(bal.url, body, headers=hdrs, timeout=FAIL_FAST_S)
        t.check("POST /v1/jobs with %s: 422 (sdgate error shape)" % what, t.is_sdgate_error(r, 422), t.describe(r))
    r = t.request("POST", bal.url + "/sdapi/v1/txt2img", json_body=t.small_job(gpus="a100"), timeout=FAIL_FAST_S)
    t.check("façade with gpus a string: 422 in FastAPI's shape {\"detail\": [{loc, msg, type}]}",
            r.status == 422 and isinstance(r.json, dict) and isinstance(r.json.get("detail"), list)
            and all(isinstance(x, dict) and "loc" in x and "msg" in x and "type" in x for x in r.json["detail"]),
            t.describe(r))

    m = t.metrics(bal.url)
    t.check("at the end the queue is empty and nothing runs (sdgate_queue_depth 0, jobs_running 0)",
            t.metric(m, "sdgate_queue_depth") == 0 and t.metric(m, "sdgate_jobs_running") == 0,
            (t.metric(m, "sdgate_queue_depth"), t.metric(m, "sdgate_jobs_running")))


if __name__ == "__main__":
    t.run(main)
