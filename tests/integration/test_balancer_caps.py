"""test_balancer_caps.py — routing by capability (issue 12 item 2): a
balancer over one native sdgate backend (it declares its capabilities in
/sdgate/v1/info) and a plain AUTOMATIC1111 1.10 (the stand-in,
a1111_standin.py, whose /sdapi/v1/* listings the balancer reads itself; also
through an sdgate backend in --upstream mode, which passes them through).

The façade's listings are the union of the two; a job only the A1111 can run
(UniPC, the SDXL refiner, hires fix, a side past the native backend's
max_size) reaches it (its recorded bodies say so); a job only the native
backend can run (its checkpoint) runs there; an unknown sampler is 404
"Sampler not found"; a size no backend runs is a 422 naming the field; and
once the A1111 is gone, its names leave the union. Docs: balancer/README.md
"Routing by capability", docs/a1111-facade.md "Listings"."""

import os
import re
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import a1111_standin  # noqa: E402
import sdtest as t  # noqa: E402

STANDIN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "a1111_standin.py")
REFINER = "sd_xl_refiner_1.0.safetensors [7440042bbd]"
BASE = "sd_xl_base_1.0.safetensors [31e35c80fc]"


def names(reply, key="name"):
    return [x.get(key) for x in reply.json] if reply.status == 200 and isinstance(reply.json, list) else None


def provider_of(reply):
    info = t.info_of(reply)
    return ((info or {}).get("sdgate") or {}).get("provider")


def standin_jobs(record):
    return [r["body"] for r in a1111_standin.read_records(record) if r["path"] == "/sdapi/v1/txt2img"]


def main():
    record = os.path.join(t.tmpdir("standin"), "bodies.jsonl")
    models_dir = t.tmpdir("standin-models")
    a1111 = t.start_program("a1111-standin", STANDIN, ["--record", record, "--step-ms", "2", "--load-ms", "50",
                                                        "--models-dir", models_dir], "/sdapi/v1/progress")
    native = t.start_backend("--provider", "native-prov", name="backend-native")
    r = t.request("GET", native.url + "/sdapi/v1/sd-models", timeout=30)
    native_models = names(r, "title") or []
    native_model = (native_models or [None])[0]
    info = t.request("GET", native.url + "/sdgate/v1/info", timeout=30).json or {}
    caps = info.get("capabilities") or {}
    t.check("the native backend declares its capabilities in /sdgate/v1/info (8 samplers, img2img and hires fix)",
            len(caps.get("samplers") or []) == 8 and caps.get("features") == {"img2img": True, "hires_fix": True, "img2img_webp": False}
            and caps.get("max_size") == 2048, caps)

    bal = t.start_balancer(
        "--backend", t.static_backend_arg(native.url, provider="native", max_size=1024),
        "--backend", t.static_backend_arg(a1111.url, provider="a1111", max_size=1536),
        "--health-interval-ms", "200")
    t0 = time.monotonic()
    board = t.wait_board(bal.url, lambda b: len(b) == 2 and all(x.get("state") == "idle" for x in b))
    t.check("both backends come up (%.1f s)" % (time.monotonic() - t0),
            board and all(x.get("state") == "idle" for x in board), board)

    # The listings: the union, in A1111's shapes.
    got = {}
    for path in ("samplers", "schedulers", "sd-models", "sd-vae", "upscalers", "latent-upscale-modes", "loras",
                 "embeddings", "scripts", "prompt-styles", "face-restorers"):
        got[path] = t.request("GET", bal.url + "/sdapi/v1/" + path, timeout=30)
    print("# listings: %s" % ", ".join("%s %s" % (p, len(r.json) if isinstance(r.json, list) else r.status)
                                       for p, r in got.items()))
    samplers = names(got["samplers"])
    t.check("/samplers: A1111's 20 (the union holds UniPC and the native ones)",
            samplers and len(samplers) == 20 and "UniPC" in samplers and "Euler" in samplers, samplers)
    t.check("/samplers entries have A1111's shape {name, aliases, options}",
            samplers and all(set(x) == {"name", "aliases", "options"} for x in got["samplers"].json))
    t.check("/schedulers: A1111's 12", len(names(got["schedulers"]) or []) == 12, names(got["schedulers"]))
    titles = names(got["sd-models"], "title") or []
    t.check("/sd-models: the native checkpoint and the SDXL base and refiner, with A1111's short hashes",
            native_model in titles and BASE in titles and REFINER in titles
            and any(x.get("hash") == "7440042bbd" for x in got["sd-models"].json), got["sd-models"].json)
    t.check("/upscalers: None and R-ESRGAN 4x+", {"None", "R-ESRGAN 4x+"} <= set(names(got["upscalers"]) or []),
            names(got["upscalers"]))
    t.check("/latent-upscale-modes, /loras, /sd-vae, /prompt-styles, /face-restorers: the A1111's",
            "Latent" in (names(got["latent-upscale-modes"]) or []) and "add_detail" in (names(got["loras"]) or [])
            and "sdxl_vae.safetensors" in (names(got["sd-vae"], "model_name") or [])
            and "cinematic" in (names(got["prompt-styles"]) or [])
            and "CodeFormer" in (names(got["face-restorers"]) or []),
            {p: got[p].json for p in ("latent-upscale-modes", "loras", "sd-vae", "face-restorers")})
    t.check("/scripts and /embeddings: A1111's objects",
            "x/y/z plot" in ((got["scripts"].json or {}).get("txt2img") or [])
            and set(got["embeddings"].json or {}) == {"loaded", "skipped"},
            (got["scripts"].json, got["embeddings"].json))

    # Jobs only the A1111 can run reach it.
    before = len(standin_jobs(record))
    cases = [("sampler_name UniPC", t.small_job(sampler_name="UniPC"), "sampler_name", "UniPC"),
             ("the SDXL refiner", t.small_job(refiner_checkpoint=REFINER, refiner_switch_at=0.8),
              "refiner_checkpoint", REFINER),
             ("scheduler beta", t.small_job(scheduler="beta"), "scheduler", "beta"),
             ("hires fix (the native backend has none yet)",
              t.small_job(enable_hr=True, hr_scale=2, hr_upscaler="Latent"), "enable_hr", True),
             ("1280 x 1280 (native max_size 1024)", t.small_job(width=1280, height=1280), "width", 1280)]
    for what, body, key, value in cases:
        r, took = t.txt2img(bal.url, body, timeout=60)
        bodies = standin_jobs(record)
        last = bodies[-1] if len(bodies) > before else {}
        t.check("%s: 200 from the A1111 (%.2f s), which received %s=%r" % (what, took, key, value),
                r.status == 200 and provider_of(r) == "a1111" and last.get(key) == value,
                (t.describe(r), last))
        before = len(bodies)

    # A job only the native backend can run still runs, there.
    r, took = t.txt2img(bal.url, t.small_job(override_settings={"sd_model_checkpoint": native_model}), timeout=60)
    t.check("the native checkpoint: 200 from the native backend (%.2f s), nothing reached the A1111" % took,
            r.status == 200 and provider_of(r) == "native" and len(standin_jobs(record)) == before, t.describe(r))

    # What no live backend runs.
    r = t.request("POST", bal.url + "/sdapi/v1/txt2img", json_body=t.small_job(sampler_name="Bogus"), timeout=30)
    t.check("an unknown sampler: 404 {\"detail\": \"Sampler not found\"}",
            r.status == 404 and (r.json or {}).get("detail") == "Sampler not found", t.describe(r))
    r = t.request("POST", bal.url + "/sdapi/v1/txt2img", json_body=t.small_job(width=2048, height=2048), timeout=30)
    detail = (r.json or {}).get("detail") if isinstance(r.json, dict) else None
    loc = detail[0].get("loc") if isinstance(detail, list) and detail and isinstance(detail[0], dict) else None
    t.check("2048 x 2048 (no backend's max_size): 422, FastAPI's shape naming width",
            r.status == 422 and loc == ["body", "width"], t.describe(r))
    r = t.submit_job(bal.url, t.small_job(width=2048, height=2048))
    t.check("the same through POST /v1/jobs: 422 not_runnable, field width",
            t.is_sdgate_error(r, 422, "not_runnable") and (r.json.get("error") or {}).get("field") == "width",
            t.describe(r))
    r = t.submit_job(bal.url, t.small_job(enable_hr=True, hr_upscaler="4x-UltraSharp"))
    t.check("an upscaler no backend lists: 422 not_runnable, field hr_upscaler",
            t.is_sdgate_error(r, 422, "not_runnable") and (r.json.get("error") or {}).get("field") == "hr_upscaler",
            t.describe(r))
    t.check("none of these reached the A1111", len(standin_jobs(record)) == before)

    # Refreshed: a checkpoint the A1111 finds later is listed and runs; a
    # broken listing keeps the last good one.
    open(os.path.join(models_dir, "sd_xl_turbo_1.0.safetensors"), "wb").close()
    t.request("POST", a1111.url + "/sdapi/v1/refresh-checkpoints", timeout=30)
    t0 = time.monotonic()
    turbo = t.wait_until(lambda: [x for x in names(t.request("GET", bal.url + "/sdapi/v1/sd-models", timeout=30),
                                                   "title") or [] if x.startswith("sd_xl_turbo_1.0.safetensors [")],
                         15)
    took = time.monotonic() - t0
    r, _ = t.txt2img(bal.url, t.small_job(override_settings={"sd_model_checkpoint": "sd_xl_turbo_1.0"}), timeout=60)
    bodies = standin_jobs(record)
    t.check("a checkpoint the A1111 found later is listed within %.1f s (refresh: 10 health intervals, 2 s) and "
            "its job reaches the A1111" % took,
            turbo and r.status == 200 and provider_of(r) == "a1111" and len(bodies) == before + 1,
            (turbo, t.describe(r)))
    before = len(bodies)
    # Refreshes refill each backend's names: every name a checkpoint goes by
    # still routes after them (the native one by its file name, as A1111 takes it).
    board = t.board(bal.url)
    native_names = (t.board_entry(board, provider="native") or {}).get("models") or []
    r, _ = t.txt2img(bal.url, t.small_job(override_settings={"sd_model_checkpoint": native_model.split(" [")[0]}),
                     timeout=60)
    t.check("after refreshes the native backend still lists its checkpoints' names (%d) and a job naming one by its "
            "file name runs there" % len(native_names),
            native_model in native_names and r.status == 200 and provider_of(r) == "native", (native_names,
                                                                                              t.describe(r)))

    def failed_listings():  # the balancer's refresh met the broken install
        with open(a1111.log_path, "rb") as f:
            return len(re.findall(rb'"GET /sdapi/v1/[a-z-]+ HTTP/1.1" 500', f.read()))
    a1111.signal(signal.SIGUSR1)  # its listings answer 500 from now on
    t0 = time.monotonic()
    t.wait_until(lambda: failed_listings() >= 1, 15)
    took = time.monotonic() - t0
    loras = names(t.request("GET", bal.url + "/sdapi/v1/loras", timeout=30))
    samplers = names(t.request("GET", bal.url + "/sdapi/v1/samplers", timeout=30))
    board = t.board(bal.url)
    r, _ = t.txt2img(bal.url, t.small_job(sampler_name="UniPC"), timeout=60)
    t.check("its listings answering 500 (a refresh %.1f s later): the last good ones stay, it stays up and runs "
            "UniPC" % took,
            failed_listings() >= 1 and loras == a1111_standin.LORAS and len(samplers or []) == 20
            and (t.board_entry(board, provider="a1111") or {}).get("state") == "idle" and r.status == 200
            and provider_of(r) == "a1111", (loras, samplers, t.describe(r)))
    a1111.signal(signal.SIGUSR1)
    before = len(standin_jobs(record))

    # An sdgate backend in --upstream mode in front of the A1111 declares
    # nothing: the balancer reads the A1111's listings through it.
    up = t.start_backend("--upstream", a1111.url, "--provider", "upstream-prov", name="backend-upstream")
    bal2 = t.start_balancer("--backend", t.static_backend_arg(up.url, provider="upstream"), name="balancer-2")
    t.wait_board(bal2.url, lambda b: len(b) == 1 and b[0].get("state") == "idle")
    samplers = names(t.request("GET", bal2.url + "/sdapi/v1/samplers", timeout=30))
    loras = names(t.request("GET", bal2.url + "/sdapi/v1/loras", timeout=30))
    r, took = t.txt2img(bal2.url, t.small_job(sampler_name="UniPC", refiner_checkpoint=REFINER), timeout=60)
    bodies = standin_jobs(record)
    t.check("through an --upstream backend: the A1111's 20 samplers and its LoRAs are listed, and a UniPC + "
            "refiner job reaches the A1111 (%.2f s)" % took,
            samplers and len(samplers) == 20 and loras == a1111_standin.LORAS and r.status == 200
            and provider_of(r) == "upstream" and len(bodies) == before + 1
            and bodies[-1].get("sampler_name") == "UniPC", (samplers, loras, t.describe(r)))
    before = len(bodies)
    bal2.stop()
    up.stop()

    # The A1111 goes away: its names leave the union, its jobs are refused.
    a1111.stop()
    t0 = time.monotonic()
    board = t.wait_board(bal.url, lambda b: (t.board_entry(b, provider="a1111") or {}).get("state") == "down", 20)
    t.check("the A1111 is seen down (%.1f s)" % (time.monotonic() - t0),
            (t.board_entry(board, provider="a1111") or {}).get("state") == "down", board)
    samplers = names(t.request("GET", bal.url + "/sdapi/v1/samplers", timeout=30))
    titles = names(t.request("GET", bal.url + "/sdapi/v1/sd-models", timeout=30), "title") or []
    upscalers = names(t.request("GET", bal.url + "/sdapi/v1/upscalers", timeout=30))
    print("# after: %d samplers, %d checkpoints, upscalers %s" % (len(samplers or []), len(titles), upscalers))
    t.check("without it: /samplers is the native 8, /sd-models the native checkpoints, /upscalers only None",
            samplers and len(samplers) == 8 and "UniPC" not in samplers
            and upscalers == ["None"] and sorted(titles) == sorted(native_models), (samplers, titles, upscalers))
    r = t.request("POST", bal.url + "/sdapi/v1/txt2img", json_body=t.small_job(sampler_name="UniPC"), timeout=30)
    t.check("UniPC without it: 404 Sampler not found",
            r.status == 404 and (r.json or {}).get("detail") == "Sampler not found", t.describe(r))
    r, took = t.txt2img(bal.url, t.small_job(), timeout=60)
    t.check("a plain job still runs on the native backend (%.2f s)" % took,
            r.status == 200 and provider_of(r) == "native", t.describe(r))


t.run(main)
