"""test_balancer_facade.py — the balancer as one AUTOMATIC1111 instance:
POST /sdapi/v1/txt2img answers A1111's shape (images, parameters, info as a
JSON string) with info.sdgate filled (provider, location, gpu, backend,
inference_time, queue_time, attempt, job_id) and the same PNG bytes as the
backend itself gives; the A1111 lists (samplers, schedulers, sd-models,
options), /sdapi/v1/progress for the caller's running job (the caller has an
API key), /internal/ping,
and A1111-shaped errors (422 FastAPI list, 404 Sampler not found).
Contract: ../../balancer/README.md "A1111 façade"."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sdtest as t  # noqa: E402

BASE_MODEL = "sdgate-procedural-base-v1.builtin [9917535daf]"
PROGRESS_KEYS = ["skipped", "interrupted", "job", "job_count", "job_timestamp", "job_no", "sampling_step",
                 "sampling_steps"]


def progress_shape_ok(p):
    return (isinstance(p, dict) and t.is_number(p.get("progress")) and t.is_number(p.get("eta_relative"))
            and isinstance(p.get("state"), dict) and all(k in p["state"] for k in PROGRESS_KEYS)
            and "current_image" in p and "textinfo" in p)


def facade(bal, body, gpus="a100"):
    """POST /sdapi/v1/txt2img with X-Sdgate-Gpus (the fast a100 by default), as (Reply, None)."""
    return t.request("POST", bal.url + "/sdapi/v1/txt2img", json_body=body,
                     headers={"X-Sdgate-Gpus": gpus} if gpus else None), None


def check_txt2img(bal, be, board):
    body = t.small_job(prompt="a yellow circle on blue", seed=123, steps=3, sampler_name="DPM++ 2M",
                       scheduler="karras", cfg_scale=6)
    r, _ = facade(bal, body)
    ok = t.check("façade POST /sdapi/v1/txt2img: 200 with images, parameters, info",
                 r.status == 200 and isinstance(r.json, dict) and all(k in r.json for k in ("images", "parameters",
                                                                                             "info")), t.describe(r))
    if not ok:
        return
    t.check("info is a JSON string, as A1111 sends it", isinstance(r.json["info"], str), type(r.json["info"]))
    info = t.info_of(r)
    t.check("info keeps A1111's keys (prompt, seed 123, all_seeds, width, height, sampler_name, steps, "
            "infotexts, sd_model_name)",
            isinstance(info, dict) and info.get("prompt") == body["prompt"] and info.get("seed") == 123
            and info.get("all_seeds") == [123] and info.get("width") == 64 and info.get("height") == 64
            and info.get("steps") == 3 and isinstance(info.get("infotexts"), list)
            and isinstance(info.get("sd_model_name"), str), info)
    sd = (info or {}).get("sdgate") if isinstance(info, dict) else None
    sd = sd if isinstance(sd, dict) else {}
    bid = (t.board_entry(board, provider="facade-prov") or {}).get("id")
    t.check("info.sdgate: provider facade-prov, location \"Berlin, DE\", gpu a100, backend = the board's id",
            sd.get("provider") == "facade-prov" and sd.get("location") == "Berlin, DE" and sd.get("gpu") == "a100"
            and sd.get("backend") == bid and bid, (sd, bid))
    t.check("info.sdgate: inference_time a float > 0, queue_time >= 0, attempt 1, job_id 32 hex",
            t.is_number(sd.get("inference_time")) and sd["inference_time"] > 0 and t.is_number(sd.get("queue_time"))
            and sd["queue_time"] >= 0 and sd.get("attempt") == 1 and t.is_hex_id(sd.get("job_id")), sd)
    pngs = t.images_of(r) or []
    img, err = t.try_decode_png(pngs[0]) if len(pngs) == 1 else (None, "%d images" % len(pngs))
    t.check("one decodable 64x64 PNG", img is not None and img.width == 64 and img.height == 64, err)
    t.check("the PNG carries A1111's parameters text chunk", img is not None and "parameters" in img.text,
            img and sorted(img.text))
    params = r.json.get("parameters")
    t.check("parameters echo the request (prompt, seed, steps, width)",
            isinstance(params, dict) and params.get("prompt") == body["prompt"] and params.get("seed") == 123
            and params.get("steps") == 3 and params.get("width") == 64, params)
    rd, _ = t.txt2img(be.url, body)
    t.check("the façade's PNG bytes equal the backend's own answer to the same request",
            rd.status == 200 and t.images_of(rd) == pngs and pngs, t.describe(rd))
    if t.is_hex_id(sd.get("job_id")):
        d = t.get_job(bal.url, sd["job_id"])
        t.check("GET /v1/jobs/{info.sdgate.job_id} shows the façade job done",
                d is not None and d.get("status") == "done", d and d.get("status"))

    # Several images, random seed.
    r, _ = facade(bal, t.small_job(prompt="two of them", seed=-1, n_iter=2))
    info = t.info_of(r) or {}
    seeds = info.get("all_seeds")
    t.check("n_iter 2 with seed -1: 2 PNGs, a concrete seed, all_seeds [s, s+1]",
            r.status == 200 and len(t.images_of(r) or []) == 2 and t.is_int(info.get("seed"))
            and info["seed"] >= 0 and seeds == [info["seed"], info["seed"] + 1], (t.describe(r), seeds))
    r, _ = facade(bal, t.small_job(prompt="old-style sampler", sampler_name="DPM++ 2M Karras"))
    t.check("an old combined sampler name (DPM++ 2M Karras) works through the façade", r.status == 200,
            t.describe(r))
    r, _ = facade(bal, t.small_job(prompt="checkpoint by title",
                                          override_settings={"sd_model_checkpoint": BASE_MODEL}))
    t.check("override_settings.sd_model_checkpoint with an offered title works", r.status == 200, t.describe(r))


def check_lists(bal, be):
    r = t.request("GET", bal.url + "/sdapi/v1/samplers", timeout=10)
    names = [s.get("name") for s in r.json] if r.status == 200 and isinstance(r.json, list) else []
    t.check("GET /sdapi/v1/samplers: A1111's list [{name, aliases, options}] with Euler a and DPM++ 2M",
            "Euler a" in names and "DPM++ 2M" in names
            and all(isinstance(s, dict) and "aliases" in s and "options" in s for s in r.json), t.describe(r))
    r = t.request("GET", bal.url + "/sdapi/v1/schedulers", timeout=10)
    t.check("GET /sdapi/v1/schedulers: a non-empty list of objects with name",
            r.status == 200 and isinstance(r.json, list) and r.json
            and all(isinstance(s, dict) and isinstance(s.get("name"), str) for s in r.json), t.describe(r))
    r = t.request("GET", bal.url + "/sdapi/v1/sd-models", timeout=10)
    rb = t.request("GET", be.url + "/sdapi/v1/sd-models", timeout=10)
    titles = sorted(m.get("title") for m in r.json) if r.status == 200 and isinstance(r.json, list) else None
    want = sorted(m["title"] for m in rb.json)
    t.check("GET /sdapi/v1/sd-models: the live backends' checkpoints, each title once", titles == want,
            (titles, want))
    t.check("... each entry has title and model_name",
            r.status == 200 and all(isinstance(m, dict) and "title" in m and "model_name" in m for m in r.json),
            t.describe(r))
    r = t.request("GET", bal.url + "/sdapi/v1/options", timeout=10)
    t.check("GET /sdapi/v1/options: sd_model_checkpoint is a live checkpoint title",
            r.status == 200 and isinstance(r.json, dict) and r.json.get("sd_model_checkpoint") in want, t.describe(r))
    r = t.request("GET", bal.url + "/internal/ping", timeout=10)
    t.check("GET /internal/ping: 200 {}", r.status == 200 and r.json == {}, t.describe(r))
    r = t.request("GET", bal.url + "/sdapi/v1/progress", timeout=10)
    t.check("GET /sdapi/v1/progress with nothing running: A1111's shape, progress 0, job_count 0",
            r.status == 200 and progress_shape_ok(r.json) and r.json["progress"] == 0
            and r.json["state"]["job_count"] == 0, t.describe(r))


def check_progress(bal):
    # Progress is the caller's own: an A1111 client with an API key (an
    # anonymous one sees idle; test_facade_identity.py checks that).
    key = {"Authorization": "Bearer facade-test-key-0123456789"}
    body = t.small_job(prompt="slow enough to watch", seed=8, steps=20, gpus=["rtx3090"])
    job = t.Background(t.request, "POST", bal.url + "/sdapi/v1/txt2img", json_body=body, headers=key)
    seen = []
    while not job.done():
        r = t.request("GET", bal.url + "/sdapi/v1/progress", headers=key, timeout=10)
        if r.status == 200 and isinstance(r.json, dict) and not job.done():
            seen.append(r.json)
        t.wait_until(lambda: job.done(), 0.1, 0.02)
    reply, err, _ = job.join()
    t.check("the slow façade job answers 200", reply is not None and reply.status == 200,
            t.describe(reply) if reply else repr(err))
    t.check("every /sdapi/v1/progress during it has A1111's shape", seen and all(progress_shape_ok(p) for p in seen),
            t.short(seen[:2]))
    t.check("the caller's /sdapi/v1/progress rises above 0 during its façade job, with sampling_steps 20",
            any(p.get("progress", 0) > 0 and p["state"].get("sampling_steps") == 20 for p in seen if progress_shape_ok(p)),
            [(p.get("progress"), (p.get("state") or {}).get("sampling_step")) for p in seen][:20])
    info = t.info_of(reply) if reply else None
    t.check("... and it ran on the rtx3090 it asked for",
            isinstance(info, dict) and (info.get("sdgate") or {}).get("gpu") == "rtx3090", info and info.get("sdgate"))


def check_errors(bal):
    r, _ = t.txt2img(bal.url, t.small_job(steps=0))
    d = r.json.get("detail") if isinstance(r.json, dict) else None
    t.check("façade steps 0: 422 FastAPI shape {detail: [{loc: [body, steps], msg, type}]}",
            r.status == 422 and isinstance(d, list) and d and isinstance(d[0], dict) and d[0].get("loc") == ["body",
                                                                                                           "steps"]
            and isinstance(d[0].get("msg"), str) and isinstance(d[0].get("type"), str), t.describe(r))
    r = t.request("POST", bal.url + "/sdapi/v1/txt2img", raw_body=b'{"prompt": "x", ', timeout=10)
    t.check("façade malformed JSON: 422 with a detail list", r.status == 422 and isinstance(r.json, dict)
            and isinstance(r.json.get("detail"), list), t.describe(r))
    r, _ = t.txt2img(bal.url, t.small_job(sampler_name="No Such Sampler"))
    t.check("façade unknown sampler: 404 {\"detail\": \"Sampler not found\"}",
            r.status == 404 and r.json == {"detail": "Sampler not found"}, t.describe(r))
    r, _ = t.txt2img(bal.url, t.small_job(width=65))
    t.check("façade width 65: 422", r.status == 422 and isinstance(r.json, dict)
            and isinstance(r.json.get("detail"), list), t.describe(r))


def main():
    be = t.start_backend("--provider", "facade-real", "--gpu-class", "a100", name="backend-fast")
    slow = t.start_backend("--pace-ms-per-step", 100, "--provider", "facade-slow", "--gpu-class", "rtx3090",
                           name="backend-slow")
    bal = t.start_balancer("--progress-interval-ms", 100,
                           "--backend", t.static_backend_arg(be.url, provider="facade-prov", location="Berlin, DE",
                                                             gpu_class="a100", price_per_hour=1.5),
                           "--backend", t.static_backend_arg(slow.url, provider="slow-prov", gpu_class="rtx3090"))
    t.check("two backends come up idle", t.wait_idle_backends(bal.url, 2), t.board(bal.url))
    brd = t.board(bal.url)
    t.check("the fragment's price shows on the board (1.5)",
            (t.board_entry(brd, provider="facade-prov") or {}).get("price_per_hour") == 1.5, brd)
    check_lists(bal, be)
    # X-Sdgate-Gpus: a100 keeps the comparison on the fast backend.
    check_txt2img(bal, be, brd)
    check_progress(bal)
    check_errors(bal)
    r = t.request("GET", bal.url + "/healthz", timeout=10)
    t.check("the balancer still serves after all that (GET /healthz 200)", r.status == 200, t.describe(r))


if __name__ == "__main__":
    t.run(main)
