"""test_backend_api.py — sdgate-backend's A1111 API over loopback: flags
(--help, --version, --config with flags overriding it, identity), the list
endpoints' shapes, txt2img's response (images, parameters, info with A1111's
keys and info.sdgate), determinism, seeds, batches, samplers in both naming
styles, the Akash SDXL app's request, and colour words in the prompt.
Contract: ../../README.md "sdgate-backend", ../../docs/architecture.md
"What a backend answers"."""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sdtest as t  # noqa: E402

INFO_KEYS = ["prompt", "all_prompts", "negative_prompt", "seed", "all_seeds", "subseed",
             "all_subseeds", "width", "height", "sampler_name", "cfg_scale", "steps",
             "batch_size", "sd_model_name", "sd_model_hash", "infotexts", "job_timestamp",
             "version", "sdgate"]
SAMPLERS = ["Euler", "Euler a", "Heun", "LMS", "DPM++ 2M", "DPM++ SDE", "DPM++ 2M SDE", "DDIM"]
SCHEDULERS = ["automatic", "uniform", "karras", "exponential", "sgm_uniform", "normal"]


def get_json(be, path):
    r = t.request("GET", be.url + path, timeout=30)
    return r


def check_flags():
    exe = t.backend_path()
    rc, out, err = t.run_tool([exe, "--version"])
    t.check("--version exits 0 and prints a version", rc == 0 and out.strip() + err.strip() != "",
            "rc %r stdout %r stderr %r" % (rc, out, t.short(err)))
    rc, out, err = t.run_tool([exe, "--help"])
    text = out + err
    t.check("--help exits 0 and lists the common flags",
            rc == 0 and all(f in text for f in ["--listen", "--provider", "--location", "--upstream",
                                                 "--pace-ms-per-step", "--config", "--gpu-class"]),
            "rc %r output %s" % (rc, t.short(text)))
    d = t.tmpdir("badcfg")
    bad_cfg = os.path.join(d, "bad.json")
    with open(bad_cfg, "w") as f:
        f.write("{\"provider\": ")
    for name, args in [("an unknown flag", ["--no-such-flag"]),
                       ("--listen without a port", ["--listen", "127.0.0.1"]),
                       ("--config naming a missing file", ["--config", os.path.join(d, "missing.json")]),
                       ("--config with malformed JSON", ["--config", bad_cfg])]:
        try:
            rc, out, err = t.run_tool([exe] + args, timeout=20)
        except Exception as e:  # noqa: BLE001 - a hang is a failure
            rc, out, err = None, "", repr(e)
        # rc > 0: an orderly refusal; < 0 would be a signal (a crash), 0 a silent start.
        t.check("%s: exits with an error code (no crash, no start)" % name,
                rc is not None and rc > 0, "rc %r stderr %s" % (rc, t.short(err)))


def check_info(be, cfg_location):
    r = get_json(be, "/sdgate/v1/info")
    info = r.json if r.is_json else None
    ok = t.check("GET /sdgate/v1/info answers 200 JSON object",
                 r.status == 200 and isinstance(info, dict), t.describe(r))
    if not ok:
        return
    t.check("info has provider, location, gpu, gpu_class, engine, models, slots, version",
            all(k in info for k in ["provider", "location", "gpu", "gpu_class", "engine", "models",
                                    "slots", "version"]), info)
    t.check("info.provider is the --provider flag (it overrides --config)",
            info.get("provider") == "flag-prov", info.get("provider"))
    t.check("info.location comes from --config", info.get("location") == cfg_location,
            info.get("location"))
    t.check("info.gpu_class equals --gpu-class", info.get("gpu_class") == "l40s", info.get("gpu_class"))
    t.check("info.slots is 1", info.get("slots") == 1, info.get("slots"))
    t.check("info.engine is a native engine name (not upstream)",
            isinstance(info.get("engine"), str) and info.get("engine") not in ("", "upstream"),
            info.get("engine"))
    t.check("info.models is a non-empty list", isinstance(info.get("models"), list) and info["models"],
            info.get("models"))
    t.check("info.version is a non-empty string", isinstance(info.get("version"), str) and info["version"],
            info.get("version"))
    t.check("info.gpu is a non-empty string", isinstance(info.get("gpu"), str) and info["gpu"],
            info.get("gpu"))


def check_lists(be):
    """Returns (base title, refiner title, refiner model_name) from sd-models."""
    r = get_json(be, "/sdapi/v1/samplers")
    ok = t.check("GET /sdapi/v1/samplers answers a JSON list", r.status == 200 and isinstance(r.json, list),
                 t.describe(r))
    if ok:
        names = [s.get("name") for s in r.json if isinstance(s, dict)]
        t.check("samplers list every engine sampler", all(n in names for n in SAMPLERS), names)
        t.check("each sampler has name (str), aliases (list), options (object)",
                all(isinstance(s, dict) and isinstance(s.get("name"), str) and isinstance(s.get("aliases"), list)
                    and isinstance(s.get("options"), dict) for s in r.json), t.short(r.json))
        ea = [s for s in r.json if isinstance(s, dict) and s.get("name") == "Euler a"]
        t.check("'Euler a' has the alias k_euler_a", ea and "k_euler_a" in (ea[0].get("aliases") or []),
                ea)

    r = get_json(be, "/sdapi/v1/schedulers")
    ok = t.check("GET /sdapi/v1/schedulers answers a JSON list", r.status == 200 and isinstance(r.json, list),
                 t.describe(r))
    if ok:
        names = [s.get("name") for s in r.json if isinstance(s, dict)]
        t.check("schedulers list automatic, uniform, karras, exponential, sgm_uniform, normal",
                all(n in names for n in SCHEDULERS), names)
        t.check("each scheduler has name, label, aliases, default_rho, need_inner_model",
                all(isinstance(s, dict) and all(k in s for k in ["name", "label", "aliases", "default_rho",
                                                                  "need_inner_model"]) for s in r.json),
                t.short(r.json))

    base = refiner = refiner_name = None
    r = get_json(be, "/sdapi/v1/sd-models")
    ok = t.check("GET /sdapi/v1/sd-models answers a JSON list", r.status == 200 and isinstance(r.json, list),
                 t.describe(r))
    models = r.json if ok else []
    if ok:
        fields = ["title", "model_name", "hash", "sha256", "filename", "config"]
        t.check("each model has title, model_name, hash, sha256, filename, config",
                models and all(isinstance(m, dict) and all(k in m for k in fields) for m in models), models)
        t.check("every checkpoint's title and model_name start with 'sdgate-'",
                models and all(str(m.get("model_name", "")).startswith("sdgate-")
                               and str(m.get("title", "")).startswith("sdgate-") for m in models), models)
        ref = [m for m in models if isinstance(m, dict) and "refiner" in str(m.get("model_name", ""))]
        bas = [m for m in models if isinstance(m, dict) and "refiner" not in str(m.get("model_name", ""))]
        t.check("sd-models has a base and a refiner checkpoint", ref and bas, models)
        if ref and bas:
            base, refiner, refiner_name = bas[0]["title"], ref[0]["title"], ref[0]["model_name"]
    titles = [m.get("title") for m in models if isinstance(m, dict)]

    r = get_json(be, "/sdapi/v1/options")
    t.check("GET /sdapi/v1/options has sd_model_checkpoint, a title from sd-models",
            r.status == 200 and isinstance(r.json, dict) and r.json.get("sd_model_checkpoint") in titles,
            t.describe(r))
    if base:
        base_name = [m["model_name"] for m in models if isinstance(m, dict) and m.get("title") == base][0]
        r = t.request("POST", be.url + "/sdapi/v1/options", json_body={"sd_model_checkpoint": base_name})
        t.check("POST /sdapi/v1/options with the base's model_name answers 200", r.status == 200,
                t.describe(r))
        r = get_json(be, "/sdapi/v1/options")
        t.check("GET /sdapi/v1/options then reports the base's title",
                r.is_json and isinstance(r.json, dict) and r.json.get("sd_model_checkpoint") == base,
                t.describe(r))
        r = t.request("POST", be.url + "/sdapi/v1/options", json_body={"sd_model_checkpoint": base})
        t.check("POST /sdapi/v1/options with the base's title answers 200", r.status == 200, t.describe(r))
        r = t.request("POST", be.url + "/sdapi/v1/options", json_body={"CLIP_stop_at_last_layers": 2})
        t.check("POST /sdapi/v1/options with another A1111 option answers 200", r.status == 200, t.describe(r))
    r = t.request("POST", be.url + "/sdapi/v1/options",
                  json_body={"sd_model_checkpoint": "no-such-model.safetensors"})
    t.check("POST /sdapi/v1/options with an unknown checkpoint answers 422 or 404 with JSON detail",
            r.status in (404, 422) and isinstance(r.json, dict) and "detail" in r.json, t.describe(r))
    r = get_json(be, "/sdapi/v1/options")
    t.check("an unknown checkpoint leaves sd_model_checkpoint unchanged",
            r.is_json and isinstance(r.json, dict) and r.json.get("sd_model_checkpoint") == base,
            t.describe(r))

    for path in ["/sdapi/v1/sd-vae", "/sdapi/v1/loras", "/sdapi/v1/upscalers"]:
        r = get_json(be, path)
        t.check("GET %s answers 200 with a JSON list" % path, r.status == 200 and isinstance(r.json, list),
                t.describe(r))
    r = get_json(be, "/sdapi/v1/embeddings")
    t.check("GET /sdapi/v1/embeddings answers an object with loaded and skipped",
            r.status == 200 and isinstance(r.json, dict) and "loaded" in r.json and "skipped" in r.json,
            t.describe(r))
    r = get_json(be, "/sdapi/v1/memory")
    t.check("GET /sdapi/v1/memory answers an object with ram and cuda",
            r.status == 200 and isinstance(r.json, dict) and "ram" in r.json and "cuda" in r.json,
            t.describe(r))
    r = get_json(be, "/sdapi/v1/cmd-flags")
    t.check("GET /sdapi/v1/cmd-flags answers a JSON object", r.status == 200 and isinstance(r.json, dict),
            t.describe(r))
    r = get_json(be, "/internal/ping")
    t.check("GET /internal/ping answers 200 JSON", r.status == 200 and r.is_json, t.describe(r))
    return base, refiner, refiner_name


def check_basic_txt2img(be, models):
    body = {"prompt": "a yellow star over hills", "seed": 1234, "steps": 4, "width": 64, "height": 96,
            "sampler_name": "Euler a"}
    r, _ = t.txt2img(be.url, body)
    ok = t.check("txt2img answers 200 with images, parameters, info",
                 r.status == 200 and isinstance(r.json, dict)
                 and all(k in r.json for k in ["images", "parameters", "info"]), t.describe(r))
    if not ok:
        return None
    pngs = t.images_of(r)
    ok = t.check("txt2img returns exactly one base64 image", pngs is not None and len(pngs) == 1,
                 t.describe(r))
    if ok:
        img, err = t.try_decode_png(pngs[0])
        t.check("the image is a valid PNG of 64x96 (width x height)",
                img is not None and (img.width, img.height) == (64, 96),
                err or "%dx%d" % (img.width, img.height))
        if img:
            t.check("the image is not flat (stddev > 2)", img.stddev() > 2, img.stddev())
    t.check("txt2img answers Content-Type application/json",
            r.headers.get("content-type", "").startswith("application/json"), r.headers.get("content-type"))
    params = r.json["parameters"]
    t.check("parameters echoes the request and fills defaults (cfg_scale 7, batch_size 1, n_iter 1, "
            "negative_prompt '')",
            isinstance(params, dict) and params.get("prompt") == body["prompt"] and params.get("steps") == 4
            and params.get("width") == 64 and params.get("height") == 96 and params.get("cfg_scale") == 7
            and params.get("batch_size") == 1 and params.get("n_iter") == 1
            and params.get("negative_prompt") == "", params)
    t.check("info is a string holding JSON", isinstance(r.json["info"], str) and t.info_of(r) is not None,
            t.short(r.json["info"]))
    info = t.info_of(r) or {}
    missing = [k for k in INFO_KEYS if k not in info]
    t.check("info has A1111's keys and sdgate", not missing, "missing %s in %s" % (missing, t.short(info)))
    t.check("info.prompt, all_prompts, negative_prompt match the request",
            info.get("prompt") == body["prompt"] and info.get("all_prompts") == [body["prompt"]]
            and info.get("negative_prompt") == "", t.short(info))
    t.check("info.seed 1234, all_seeds [1234]", info.get("seed") == 1234 and info.get("all_seeds") == [1234],
            (info.get("seed"), info.get("all_seeds")))
    t.check("info.subseed is an int and all_subseeds a list of one",
            t.is_int(info.get("subseed")) and isinstance(info.get("all_subseeds"), list)
            and len(info["all_subseeds"]) == 1, (info.get("subseed"), info.get("all_subseeds")))
    t.check("info.width 64, height 96, steps 4, cfg_scale 7, batch_size 1, sampler_name 'Euler a'",
            (info.get("width"), info.get("height"), info.get("steps"), info.get("cfg_scale"),
             info.get("batch_size"), info.get("sampler_name")) == (64, 96, 4, 7, 1, "Euler a"),
            t.short(info))
    model_names = [m for m in models if m]
    t.check("info.sd_model_name names a builtin 'sdgate-' checkpoint and sd_model_hash is a string",
            str(info.get("sd_model_name", "")).startswith("sdgate-") and isinstance(info.get("sd_model_hash"), str)
            and info["sd_model_hash"], (info.get("sd_model_name"), info.get("sd_model_hash"), model_names))
    it = info.get("infotexts")
    t.check("info.infotexts is one A1111 infotext ('Steps: 4', 'Seed: 1234', 'Size: 64x96')",
            isinstance(it, list) and len(it) == 1 and isinstance(it[0], str) and "Steps: 4" in it[0]
            and "Seed: 1234" in it[0] and "Size: 64x96" in it[0], it)
    t.check("info.job_timestamp and version are non-empty strings",
            isinstance(info.get("job_timestamp"), str) and info["job_timestamp"]
            and isinstance(info.get("version"), str) and info["version"],
            (info.get("job_timestamp"), info.get("version")))
    if pngs and isinstance(it, list) and it:
        img, _ = t.try_decode_png(pngs[0])
        t.check("the PNG carries A1111's 'parameters' text chunk, equal to infotexts[0]",
                img is not None and img.text.get("parameters") == it[0],
                img and t.short(img.text))
    sg = info.get("sdgate")
    ok = t.check("info.sdgate has provider, location, gpu, backend, inference_time",
                 isinstance(sg, dict) and all(k in sg for k in ["provider", "location", "gpu", "backend",
                                                                 "inference_time"]), sg)
    if ok:
        t.check("info.sdgate.provider and location are this backend's identity",
                sg["provider"] == "flag-prov" and sg["location"] == "Cfgtown, DE", sg)
        t.check("info.sdgate.inference_time is a float > 0 seconds (and < 120)",
                isinstance(sg["inference_time"], float) and 0 < sg["inference_time"] < 120, sg)
    return r


def check_determinism(be, first):
    body = {"prompt": "a yellow star over hills", "seed": 1234, "steps": 4, "width": 64, "height": 96,
            "sampler_name": "Euler a"}
    r, _ = t.txt2img(be.url, body)
    t.check("the same request gives byte-identical PNGs",
            first is not None and r.status == 200 and t.images_of(r) == t.images_of(first), t.describe(r))
    body2 = dict(body, seed=1235)
    r2, _ = t.txt2img(be.url, body2)
    t.check("another seed gives a different image",
            r2.status == 200 and t.images_of(r2) and t.images_of(r2) != t.images_of(r), t.describe(r2))

    body3 = dict(body, seed=-1)
    r3, _ = t.txt2img(be.url, body3)
    info = t.info_of(r3) or {}
    seed = info.get("seed")
    ok = t.check("seed -1 reports a concrete seed in info.seed (an int >= 0) and all_seeds",
                 r3.status == 200 and t.is_int(seed) and seed >= 0 and info.get("all_seeds") == [seed],
                 t.describe(r3))
    if ok:
        r4, _ = t.txt2img(be.url, dict(body, seed=seed))
        t.check("re-running with the reported seed gives byte-identical PNGs",
                r4.status == 200 and t.images_of(r4) == t.images_of(r3), t.describe(r4))
    r6, _ = t.txt2img(be.url, dict(body, subseed=99, subseed_strength=0))
    t.check("subseed 99 with subseed_strength 0 gives the same PNG as no subseed, and info.subseed is 99",
            r6.status == 200 and t.images_of(r6) == t.images_of(r) and (t.info_of(r6) or {}).get("subseed") == 99,
            t.describe(r6))
    r7, _ = t.txt2img(be.url, dict(body, subseed=99, subseed_strength=0.5))
    t.check("subseed_strength 0.5 changes the image",
            r7.status == 200 and t.images_of(r7) and t.images_of(r7) != t.images_of(r), t.describe(r7))
    r5, _ = t.txt2img(be.url, dict(body, seed=-1))
    s5 = (t.info_of(r5) or {}).get("seed")
    t.check("two seed -1 requests get different seeds", r5.status == 200 and t.is_int(s5) and s5 != seed,
            (seed, s5))


def check_batch(be):
    body = {"prompt": "two orange balls", "seed": 100, "steps": 2, "width": 64, "height": 64,
            "batch_size": 2, "n_iter": 2, "sampler_name": "Euler"}
    r, _ = t.txt2img(be.url, body)
    pngs = t.images_of(r) or []
    info = t.info_of(r) or {}
    t.check("batch_size 2 x n_iter 2 returns 4 images", r.status == 200 and len(pngs) == 4, t.describe(r))
    t.check("each batch image is a 64x64 PNG",
            len(pngs) == 4 and all((lambda im: im[0] is not None and im[0].width == 64 and im[0].height == 64)
                                   (t.try_decode_png(p)) for p in pngs), len(pngs))
    t.check("batch images differ from each other", len(set(pngs)) == len(pngs) == 4, len(set(pngs)))
    t.check("all_seeds is [100, 101, 102, 103]", info.get("all_seeds") == [100, 101, 102, 103],
            info.get("all_seeds"))
    t.check("infotexts and all_prompts have one entry per image",
            isinstance(info.get("infotexts"), list) and len(info["infotexts"]) == 4
            and info.get("all_prompts") == [body["prompt"]] * 4, t.short(info))
    t.check("info.batch_size is 2", info.get("batch_size") == 2, info.get("batch_size"))

    r, _ = t.txt2img(be.url, dict(body, send_images=False, batch_size=1, n_iter=1))
    t.check("send_images false answers 200 with images [] and an info",
            r.status == 200 and isinstance(r.json, dict) and r.json.get("images") == []
            and t.info_of(r) is not None, t.describe(r))


def check_samplers(be):
    base = {"prompt": "a purple cube", "seed": 55, "steps": 3, "width": 64, "height": 64}
    got = {}
    for name, sched in [("DPM++ 2M", "karras"), ("DPM++ 2M Karras", None), ("DPM++ SDE Karras", None),
                        ("Euler a", None), ("Euler", None), ("Heun", None), ("LMS", None),
                        ("DPM++ 2M SDE", None), ("DDIM", None), ("k_euler_a", None), ("DPM++ SDE", None),
                        ("DPM++ 2M", None)]:
        body = dict(base, sampler_name=name)
        label = name
        if sched:
            body["scheduler"] = sched
            label = "%s + scheduler %s" % (name, sched)
        r, _ = t.txt2img(be.url, body)
        pngs = t.images_of(r) or []
        img = t.try_decode_png(pngs[0])[0] if len(pngs) == 1 else None
        t.check("sampler '%s' answers 200 with one 64x64 PNG" % label,
                r.status == 200 and img is not None and img.width == 64, t.describe(r))
        got[label] = pngs[0] if pngs else None
    t.check("'DPM++ 2M' + scheduler karras equals 'DPM++ 2M Karras' (same PNG bytes)",
            got.get("DPM++ 2M + scheduler karras") is not None
            and got.get("DPM++ 2M + scheduler karras") == got.get("DPM++ 2M Karras"), "images differ")
    t.check("'k_euler_a' equals 'Euler a' (same PNG bytes)",
            got.get("k_euler_a") is not None and got.get("k_euler_a") == got.get("Euler a"), "images differ")
    t.check("'Euler' and 'Euler a' give different images",
            got.get("Euler") is not None and got.get("Euler") != got.get("Euler a"), "images equal")

    by_sched = {}
    for sched in SCHEDULERS:
        r, _ = t.txt2img(be.url, dict(base, sampler_name="Euler", scheduler=sched))
        pngs = t.images_of(r) or []
        t.check("scheduler '%s' answers 200 with one image" % sched, r.status == 200 and len(pngs) == 1,
                t.describe(r))
        by_sched[sched] = pngs[0] if pngs else None
    t.check("Euler with scheduler karras and with exponential give different images",
            by_sched.get("karras") is not None and by_sched.get("karras") != by_sched.get("exponential"),
            "images equal")


def check_akash(be, refiner):
    body = {"prompt": "futuristic city with neon lights, rainy streets, bright colors, detailed",
            "negative_prompt": "blurry", "batch_size": 1, "steps": 20, "cfg_scale": 7,
            "sampler_name": "DPM++ 2M Karras", "width": 256, "height": 256,
            "refiner_checkpoint": refiner, "refiner_switch_at": 0.8}
    r, secs = t.txt2img(be.url, body)
    pngs = t.images_of(r) or []
    img, err = t.try_decode_png(pngs[0]) if len(pngs) == 1 else (None, "no single image")
    t.check("the Akash SDXL app's request (256x256, DPM++ 2M Karras, refiner) gives one 256x256 PNG",
            r.status == 200 and img is not None and img.width == 256 and img.height == 256,
            "%s; %s" % (t.describe(r), err))
    print("# Akash request took %.1f s" % secs)


def check_unknown_fields(be, refiner_name):
    body = t.small_job(styles=[], enable_hr=False, save_images=False, restore_faces=False,
                       script_args=[], alwayson_scripts={}, sdgate_unknown_field={"x": [1, 2, {"y": None}]},
                       do_not_save_grid=True, eta=0.5, s_churn=0.0, s_noise=1.0, subseed=3,
                       subseed_strength=0.2, tiling=False, hr_scale=2)
    r, _ = t.txt2img(be.url, body)
    t.check("unknown and unsupported A1111 fields are accepted and ignored", r.status == 200
            and len(t.images_of(r) or []) == 1, t.describe(r))
    if refiner_name:
        r, _ = t.txt2img(be.url, t.small_job(override_settings={"sd_model_checkpoint": refiner_name}))
        info = t.info_of(r) or {}
        t.check("override_settings.sd_model_checkpoint with the refiner's name answers 200 "
                "and info.sd_model_name reports it",
                r.status == 200 and info.get("sd_model_name") == refiner_name, t.describe(r))


def check_colour_words(be):
    common = {"seed": 4242, "steps": 20, "width": 128, "height": 128, "sampler_name": "DPM++ 2M",
              "scheduler": "karras", "cfg_scale": 7}
    means = {}
    for prompt in ["a red circle on a red background", "a blue square, blue sky"]:
        r, _ = t.txt2img(be.url, dict(common, prompt=prompt))
        pngs = t.images_of(r) or []
        img = t.try_decode_png(pngs[0])[0] if len(pngs) == 1 else None
        if t.check("txt2img '%s' gives a decodable PNG" % prompt, img is not None, t.describe(r)):
            means[prompt] = img.mean_rgb()
    red = means.get("a red circle on a red background")
    blue = means.get("a blue square, blue sky")
    t.check("'a red circle on a red background' has mean R > mean B", red and red[0] > red[2], red)
    t.check("'a blue square, blue sky' has mean B > mean R", blue and blue[2] > blue[0], blue)


def check_keep_alive(be):
    """A1111 clients (requests.Session) reuse one connection for many calls."""
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", be.port, timeout=60)
    statuses = []
    try:
        for method, path, body in [("GET", "/internal/ping", None),
                                   ("POST", "/sdapi/v1/txt2img", t.small_job()),
                                   ("GET", "/sdapi/v1/samplers", None),
                                   ("POST", "/sdapi/v1/txt2img", t.small_job(steps=0)),
                                   ("POST", "/sdapi/v1/txt2img", t.small_job(seed=8)),
                                   ("GET", "/sdapi/v1/progress?skip_current_image=true", None)]:
            data = json.dumps(body).encode() if body is not None else None
            conn.request(method, path, body=data, headers={"Content-Type": "application/json"} if data else {})
            resp = conn.getresponse()
            resp.read()
            statuses.append(resp.status)
    except Exception as e:  # noqa: BLE001
        statuses.append(repr(e))
    finally:
        conn.close()
    t.check("six requests on one keep-alive connection answer 200, 200, 200, 422, 200, 200",
            statuses == [200, 200, 200, 422, 200, 200], statuses)


def check_cpu_identity():
    be = t.start_backend("--cpu", name="backend-cpu")
    r = get_json(be, "/sdgate/v1/info")
    info = r.json if isinstance(r.json, dict) else {}
    t.check("with --cpu and no --gpu-class, info.gpu_class is 'cpu'", info.get("gpu_class") == "cpu",
            t.describe(r))
    be.stop()


def main():
    check_flags()
    d = t.tmpdir("cfg")
    cfg = os.path.join(d, "backend.json")
    with open(cfg, "w") as f:
        json.dump({"provider": "cfg-prov", "location": "Cfgtown, DE", "price_per_hour": 0.75}, f)
    be = t.start_backend("--config", cfg, "--provider", "flag-prov", "--gpu-class", "l40s",
                         "--price-per-hour", "0.5", name="backend-main")
    check_info(be, "Cfgtown, DE")
    base, refiner, refiner_name = check_lists(be)
    first = check_basic_txt2img(be, [base, refiner_name])
    check_determinism(be, first)
    check_batch(be)
    check_samplers(be)
    check_unknown_fields(be, refiner_name)
    check_colour_words(be)
    check_akash(be, refiner or "sdgate-procedural-refiner-v1")
    check_keep_alive(be)
    r = get_json(be, "/internal/ping")
    t.check("the backend still answers after the whole API run", r.status == 200, t.describe(r))
    be.stop()
    check_cpu_identity()


if __name__ == "__main__":
    t.run(main)
