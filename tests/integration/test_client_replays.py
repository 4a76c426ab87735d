"""test_client_replays.py — the call sequences that popular A1111 clients
really make, replayed against the balancer's façade over one native backend
and the stand-in plain A1111 1.10 (a1111_standin.py, SDXL base and refiner):
every call must succeed as the client judges success (the status it checks,
the keys it reads), and the provider never sees a client's "auth" or "url".

Each sequence was read from the client's own source (paths below); the
values a user chooses (prompt, size, steps) are small here so that the test
stays fast, the shapes are the client's:

- Dify's Stable Diffusion tool (langgenius/dify,
  api/core/tools/provider/builtin/stablediffusion/tools/stable_diffusion.py):
  validate_models GETs /sdapi/v1/sd-models and looks for its model among the
  model_names; _invoke POSTs /options {"sd_model_checkpoint": model} with
  httpx post(data=json.dumps(...)), so with no Content-Type, and aborts on
  anything but 200; text2img POSTs DRAW_TEXT_OPTIONS (sampler_index "DPM++ SDE
  Karras", sampler_name "", override_settings with the model, script_args,
  alwayson_scripts, comments, do_not_save_*) the same way and decodes
  images[0].
- SillyTavern (SillyTavern/SillyTavern, src/endpoints/stable-diffusion.js,
  the server side of public/scripts/extensions/stable-diffusion/index.js):
  /ping GETs /options; /upscalers GETs /upscalers and /latent-upscale-modes
  together (one failure fails both); /vaes GETs /sd-vae and /sd-modules (one
  must answer a list); /samplers, /schedulers, /models GET theirs;
  /set-model POSTs /options then polls /progress until progress 0 and
  state.job_count 0; /get-model reads options.sd_model_checkpoint;
  /generate GETs /options (Forge check) then POSTs the browser's whole body,
  *including its "url" and "auth"*, to /txt2img (generateSDImage:
  sampler_name, scheduler, hr_* keys, hr_additional_modules, clip_skip,
  override_settings CLIP_stop_at_last_layers, save_images true), every call
  with Authorization: Basic of its auth setting.
- Open WebUI (open-webui/open-webui, backend/open_webui/routers/images.py):
  verify_url and get_image_model GET /options with an "authorization" header
  (empty when no auth is set); set_image_model GETs /options and POSTs the
  whole object back with the new sd_model_checkpoint; image_generations
  POSTs {prompt, batch_size, width, height, steps, negative_prompt} and reads
  images and info.
- webuiapi (mix1009/sdwebuiapi, webuiapi/webuiapi.py): set_auth then
  check_extensions GETs /scripts twice (errors swallowed); util_set_model
  POSTs /options with a title from /sd-models; util_wait_for_ready polls
  /progress for state.job_count 0; txt2img POSTs its full payload
  (sampler_name and sampler_index "Euler a", hr_upscaler "Latent", eta 1,
  script_name null, alwayson_scripts {}) and json.loads(info); png_info
  POSTs a data: URL; interrupt() stops a running txt2img, whose answer must
  still be 200 (_to_api_result raises on anything else).
- The Akash SDXL demo's websocket server (zJuuu/SDXL-V1-on-Akash-Network,
  A1111-WS/src/index.ts): GETs /samplers at start; per message POSTs a full
  A1111 options dump (sd_model_checkpoint "sd_xl_base_1.0.safetensors
  [31e35c80fc]", outdir_*, samples_save true, ...) then txt2img 1024x1024,
  "DPM++ 2M Karras", refiner_checkpoint "sd_xl_refiner_1.0.safetensors".

Checks that need backends' capabilities (issue 12 item 2, branch caps: the
union listings, a sampler only the A1111 has reaching it) are marked
CAPS and only reported until CAPS_MERGED is set to True.
Contract: ../../docs/a1111-facade.md."""

import base64
import http.client as httpclient
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import a1111_standin  # noqa: E402
import sdtest as t  # noqa: E402

CAPS_MERGED = True  # set once branch caps (capabilities, union listings) is in main
NATIVE = "sdgate-procedural-base-v1.builtin [9917535daf]"
NATIVE_NAME = "sdgate-procedural-base-v1"
SDXL = "sd_xl_base_1.0.safetensors [31e35c80fc]"
ST_AUTH = "tavern:tavern-pass-1"
SECRET_URL = "http://10.0.0.5:7860"

results = {}  # client -> [passed, calls]


def call(client, method, url, body=None, headers=None, content_type="application/json", ok=None, what=None):
    """One HTTP call as the client makes it (body None: none; content_type
    None: no Content-Type header). ok(reply) is the client's own test of
    success (default: status 200). Counted per client; returns the Reply."""
    u = url.split("/", 3)
    host, port = u[2].split(":")
    conn = httpclient.HTTPConnection(host, int(port), timeout=120)
    try:
        conn.putrequest(method, "/" + u[3], skip_accept_encoding=True)
        data = json.dumps(body).encode() if body is not None else b""
        if body is not None:
            conn.putheader("Content-Length", str(len(data)))
            if content_type:
                conn.putheader("Content-Type", content_type)
        elif method == "POST":
            conn.putheader("Content-Length", "0")
        for k, v in (headers or {}).items():
            conn.putheader(k, v)
        conn.endheaders(data if body is not None else None)
        resp = conn.getresponse()
        r = t.Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
    finally:
        conn.close()
    good = ok(r) if ok else r.status == 200
    res = results.setdefault(client, [0, 0])
    res[0] += 1 if good else 0
    res[1] += 1
    t.check("[%s] %s %s%s" % (client, method, u[3].split("?")[0], " (" + what + ")" if what else ""), good,
            t.describe(r))
    return r


def caps_check(name, cond, detail=""):
    if CAPS_MERGED:
        t.check("CAPS " + name, cond, detail)
    else:
        print("# CAPS (not checked until CAPS_MERGED): %s -> %s" % (name, "holds" if cond else "fails"))


def caps_call(client, method, url, what, **kw):
    """A call whose success needs capabilities: made, and checked only once caps is merged."""
    if CAPS_MERGED:
        return call(client, method, url, what=what, **kw)
    r = t.request(method, url, json_body=kw.get("body"), headers=kw.get("headers"), timeout=60)
    caps_check("[%s] %s %s (%s): 200" % (client, method, url.split("/", 3)[3], what), r.status == 200,
               t.describe(r))
    return r


def images_ok(r):
    imgs = t.images_of(r) if r.status == 200 else None
    return bool(imgs) and all(t.try_decode_png(b)[0] is not None for b in imgs)


def is_list_of_named(r):
    return r.status == 200 and isinstance(r.json, list) and all(isinstance(x, dict) and "name" in x for x in r.json)


def dify(bal):
    c, base = "dify", bal.url + "/sdapi/v1"
    # get_sd_models fills the tool's model choice with the model_names; the
    # user picks the native checkpoint's, which validate_models then finds.
    r = call(c, "GET", base + "/sd-models", what="get_sd_models / validate_models",
             ok=lambda r: r.status == 200 and all("model_name" in m for m in r.json))
    names = [m["model_name"] for m in r.json] if r.status == 200 else []
    model = next((n for n in names if n.startswith(NATIVE_NAME)), NATIVE_NAME)
    caps_check("[dify] sd-models model_name as A1111's (no file extension: %s)" % NATIVE_NAME, NATIVE_NAME in names,
               names)
    call(c, "POST", base + "/options", {"sd_model_checkpoint": model}, content_type=None,
         ok=lambda r: r.status == 200, what="set model, no Content-Type")
    draw = {"prompt": "a cat", "negative_prompt": "", "seed": -1, "subseed": -1, "subseed_strength": 0,
            "seed_resize_from_h": -1, "sampler_index": "DPM++ SDE Karras", "seed_resize_from_w": -1,
            "batch_size": 1, "n_iter": 1, "steps": 2, "cfg_scale": 7, "width": 128, "height": 128,
            "restore_faces": False, "do_not_save_samples": False, "do_not_save_grid": False, "eta": 0,
            "denoising_strength": 0, "s_min_uncond": 0, "s_churn": 0, "s_tmax": 0, "s_tmin": 0, "s_noise": 0,
            "override_settings": {"sd_model_checkpoint": model}, "override_settings_restore_afterwards": True,
            "refiner_switch_at": 0, "disable_extra_networks": False, "comments": {}, "enable_hr": False,
            "firstphase_width": 0, "firstphase_height": 0, "hr_scale": 2, "hr_second_pass_steps": 0,
            "hr_resize_x": 0, "hr_resize_y": 0, "hr_prompt": "", "hr_negative_prompt": "", "script_args": [],
            "send_images": True, "save_images": False, "alwayson_scripts": {}}
    call(c, "POST", base + "/txt2img", draw, content_type=None, ok=images_ok, what="DRAW_TEXT_OPTIONS, no Content-Type")


def sillytavern(bal, record):
    c, base = "sillytavern", bal.url + "/sdapi/v1"
    auth = {"Authorization": "Basic " + base64.b64encode(ST_AUTH.encode()).decode()}
    call(c, "GET", base + "/options", headers=auth, what="/api/sd/ping")
    up = caps_call(c, "GET", base + "/upscalers", "/api/sd/upscalers, with latent modes", headers=auth)
    lat = caps_call(c, "GET", base + "/latent-upscale-modes", "/api/sd/upscalers, with upscalers", headers=auth)
    caps_check("[sillytavern] upscalers and latent modes are lists of {name}", is_list_of_named(up)
               and is_list_of_named(lat), (t.describe(up), t.describe(lat)))
    vae = t.request("GET", base + "/sd-vae", headers=auth, timeout=30)
    caps_check("[sillytavern] /api/sd/vaes: /sd-vae answers a list", vae.status == 200
               and isinstance(vae.json, list), t.describe(vae))
    call(c, "GET", base + "/samplers", headers=auth, ok=is_list_of_named, what="/api/sd/samplers")
    call(c, "GET", base + "/schedulers", headers=auth, ok=is_list_of_named, what="/api/sd/schedulers")
    r = call(c, "GET", base + "/sd-models", headers=auth, ok=lambda r: r.status == 200 and SDXL in
             [m.get("title") for m in r.json], what="/api/sd/models: titles")
    call(c, "POST", base + "/options", {"sd_model_checkpoint": SDXL}, headers=auth, what="/api/sd/set-model")
    call(c, "GET", base + "/progress", headers=auth, what="/api/sd/set-model: waits for progress 0, job_count 0",
         ok=lambda r: r.status == 200 and r.json.get("progress") == 0 and r.json["state"]["job_count"] == 0)
    call(c, "GET", base + "/options", headers=auth, what="/api/sd/get-model",
         ok=lambda r: r.status == 200 and r.json.get("sd_model_checkpoint") == SDXL)
    call(c, "GET", base + "/options", headers=auth, what="/api/sd/generate: the Forge check")
    body = {"url": SECRET_URL, "auth": ST_AUTH, "prompt": "a tavern at night", "negative_prompt": "blurry",
            "sampler_name": "DPM++ 2M", "scheduler": "Karras", "steps": 3, "cfg_scale": 7, "width": 128,
            "height": 128, "restore_faces": False, "enable_hr": False, "hr_upscaler": "Latent", "hr_scale": 1.0,
            "hr_additional_modules": [], "denoising_strength": 0.7, "hr_second_pass_steps": 0,
            "override_settings": {"CLIP_stop_at_last_layers": 1}, "override_settings_restore_afterwards": True,
            "clip_skip": 1, "save_images": True, "send_images": True, "do_not_save_grid": False,
            "do_not_save_samples": False}
    n0 = len(a1111_standin.read_records(record))
    call(c, "POST", base + "/txt2img", body, headers=auth, ok=images_ok, what="/api/sd/generate, body with url and auth")
    sent = [x for x in a1111_standin.read_records(record)[n0:] if x["path"] == "/sdapi/v1/txt2img"]
    got = (sent[-1]["body"] if sent else None) or {}
    t.check("[sillytavern] its txt2img reached the A1111 of its chosen checkpoint",
            (got.get("override_settings") or {}).get("sd_model_checkpoint") == SDXL, got)
    t.check("[sillytavern] the provider never sees the client's auth or url",
            sent and "auth" not in got and "url" not in got and ST_AUTH not in json.dumps(got)
            and SECRET_URL not in json.dumps(got), sorted(got))


def open_webui(bal):
    c, base = "open-webui", bal.url + "/sdapi/v1"
    hdr = {"authorization": ""}  # get_automatic1111_api_auth() with no auth set
    call(c, "GET", base + "/options", headers=hdr, what="verify_url")
    call(c, "GET", base + "/sd-models", headers=hdr, ok=lambda r: r.status == 200 and all(
        "title" in m and "model_name" in m for m in r.json), what="get_models: title, model_name")
    r = call(c, "GET", base + "/options", headers=hdr, what="set_image_model: current options",
             ok=lambda r: r.status == 200 and "sd_model_checkpoint" in r.json)
    whole = dict(r.json, sd_model_checkpoint=NATIVE)
    call(c, "POST", base + "/options", whole, headers=hdr, what="set_image_model: the whole object back")
    call(c, "GET", base + "/options", headers=hdr, what="get_image_model",
         ok=lambda r: r.status == 200 and r.json.get("sd_model_checkpoint") == NATIVE)
    data = {"prompt": "a lighthouse", "batch_size": 2, "width": 128, "height": 128, "steps": 2,
            "negative_prompt": "fog"}

    def ok(r):
        return images_ok(r) and len(r.json["images"]) == 2 and isinstance(r.json.get("info"), str)
    r = call(c, "POST", base + "/txt2img", data, headers=hdr, ok=ok, what="image_generations, batch_size 2")
    t.check("[open-webui] its images came from the native checkpoint it set",
            (t.info_of(r) or {}).get("sdgate", {}).get("provider") == "native", t.info_of(r))


def webuiapi(bal):
    c, base = "webuiapi", bal.url + "/sdapi/v1"
    auth = {"Authorization": "Basic " + base64.b64encode(b"webui:webuiapi-pass").decode()}
    for what in ("check_controlnet", "check_adetailer"):  # errors are swallowed by the client
        caps_call(c, "GET", base + "/scripts", what, headers=auth)
    r = call(c, "GET", base + "/sd-models", headers=auth, what="util_get_model_names",
             ok=lambda r: r.status == 200 and NATIVE in [m["title"] for m in r.json])
    call(c, "POST", base + "/options", {"sd_model_checkpoint": NATIVE}, headers=auth, what="util_set_model")
    call(c, "GET", base + "/progress", headers=auth, what="util_wait_for_ready",
         ok=lambda r: r.status == 200 and r.json["state"]["job_count"] == 0)

    def payload(**over):
        p = {"enable_hr": False, "hr_scale": 2, "hr_upscaler": "Latent", "hr_second_pass_steps": 0,
             "hr_resize_x": 0, "hr_resize_y": 0, "denoising_strength": 0.7, "firstphase_width": 0,
             "firstphase_height": 0, "prompt": "a robot", "styles": [], "seed": 1234, "subseed": -1,
             "subseed_strength": 0.0, "seed_resize_from_h": 0, "seed_resize_from_w": 0, "batch_size": 1,
             "n_iter": 1, "steps": 3, "cfg_scale": 7.0, "width": 128, "height": 128, "restore_faces": False,
             "tiling": False, "do_not_save_samples": False, "do_not_save_grid": False, "negative_prompt": "",
             "eta": 1.0, "s_churn": 0, "s_tmax": 0, "s_tmin": 0, "s_noise": 1, "override_settings": {},
             "override_settings_restore_afterwards": True, "sampler_name": "Euler a", "sampler_index": "Euler a",
             "script_name": None, "script_args": [], "send_images": True, "save_images": False,
             "alwayson_scripts": {}}
        p.update(over)
        return p

    def api_result(r):  # _to_api_result: 200, images decode, json.loads(info)
        try:
            return images_ok(r) and isinstance(json.loads(r.json["info"]), dict)
        except (ValueError, KeyError, TypeError):
            return False
    r = call(c, "POST", base + "/txt2img", payload(), headers=auth, ok=api_result, what="txt2img")
    img = (r.json or {}).get("images", [""])[0] if r.status == 200 else ""
    call(c, "POST", base + "/png-info", {"image": "data:image/png;base64," + img}, headers=auth, what="png_info",
         ok=lambda r: r.status == 200 and r.json.get("parameters", {}).get("Seed") == "1234")

    # interrupt(): a longer job, stopped; the client still needs its 200.
    job = t.Background(call, c, "POST", base + "/txt2img", payload(steps=150, seed=99), headers=auth,
                       ok=api_result, what="txt2img, then interrupted")
    t.wait_until(lambda: t.request("GET", base + "/progress", headers=auth, timeout=5).json["state"]
                 ["sampling_step"] >= 1, 30)
    call(c, "POST", base + "/interrupt", headers=auth, what="interrupt")
    res, err, secs = job.join(60)
    print("# webuiapi: the interrupted txt2img answered after %.2f s" % (secs or 0))
    t.check("[webuiapi] the interrupted txt2img returned (200 checked above)", res is not None, repr(err))

    # UniPC with the native checkpoint chosen above: no backend has both (the balancer answers 503
    # no_backend); a user of the A1111's sampler picks one of its checkpoints first, as here.
    call(c, "POST", base + "/options", {"sd_model_checkpoint": SDXL}, headers=auth, what="util_set_model (SDXL)")
    r = t.request("POST", base + "/txt2img", json_body=payload(sampler_name="UniPC", sampler_index="UniPC"),
                  headers=auth, timeout=60)
    caps_check("[webuiapi] a UniPC txt2img (only the A1111 has it) runs there",
               r.status == 200 and (t.info_of(r) or {}).get("sdgate", {}).get("provider") == "a1111",
               t.describe(r))


def akash(bal, options_dump):
    c, base = "akash-ws", bal.url + "/sdapi/v1"
    r = call(c, "GET", base + "/samplers", ok=is_list_of_named, what="at start: valid samplers")
    names = [s["name"] for s in r.json] if r.status == 200 else []
    for i, sampler in enumerate(("DPM++ 2M Karras", "Euler a")):
        call(c, "POST", base + "/options", options_dump, what="message %d: the full options dump" % (i + 1))
        body = {"prompt": "A futuristic city with neon lights", "negative_prompt": "ugly, lowres",
                "batch_size": 1, "steps": 20, "cfg_scale": 7,
                "sampler_name": sampler if sampler in names else "DPM++ 2M Karras", "width": 1024,
                "height": 1024, "refiner_checkpoint": "sd_xl_refiner_1.0.safetensors", "refiner_switch_at": 0.8}
        r = call(c, "POST", base + "/txt2img", body, ok=lambda r: r.status == 200 and bool(r.json.get("images")),
                 what="message %d: SDXL with the refiner" % (i + 1))
        t.check("[akash-ws] message %d ran on the A1111 that has the SDXL refiner" % (i + 1),
                (t.info_of(r) or {}).get("sdgate", {}).get("provider") == "a1111", t.info_of(r))


def akash_options():
    """The demo's options dump (A1111-WS/src/index.ts), abridged to its kinds of keys."""
    return {"samples_save": True, "samples_format": "png", "samples_filename_pattern": "", "grid_save": True,
            "outdir_samples": "", "outdir_txt2img_samples": "outputs/txt2img-images", "outdir_save": "log/images",
            "save_to_dirs": True, "realesrgan_enabled_models": ["R-ESRGAN 4x+", "R-ESRGAN 4x+ Anime6B"],
            "upscaler_for_img2img": None, "face_restoration_model": "CodeFormer", "code_former_weight": 0.5,
            "sd_model_checkpoint": SDXL, "sd_checkpoints_limit": 2, "CLIP_stop_at_last_layers": 1,
            "sd_vae": "Automatic", "sdxl_refiner_low_aesthetic_score": 2.5, "quicksettings_list":
            ["sd_model_checkpoint"], "keyedit_delimiters": ".,\\/!?%^*;:{}=`~()", "interrogate_clip_skip_categories":
            [], "sd_checkpoint_hash": "31e35c80fc4829d14f90153f4c74cd59c90b779f6afe05a74cd6120b893f7e5b",
            "canvas_disabled_functions": ["Overlap"], "extra_options_txt2img": []}


def main():
    a1111, record, _, bal = t.start_native_and_a1111("replays", 20)
    t0 = time.monotonic()
    for name, fn in (("dify", lambda: dify(bal)), ("sillytavern", lambda: sillytavern(bal, record)),
                     ("open-webui", lambda: open_webui(bal)), ("webuiapi", lambda: webuiapi(bal)),
                     ("akash-ws", lambda: akash(bal, akash_options()))):
        t1 = time.monotonic()
        fn()
        ok, n = results.get(name, [0, 0])
        print("# replay %-12s %2d/%2d calls succeeded in %.1f s" % (name, ok, n, time.monotonic() - t1))
    print("# replays: %d/%d calls in %.1f s (CAPS_MERGED=%s)" % (sum(v[0] for v in results.values()),
                                                               sum(v[1] for v in results.values()),
                                                               time.monotonic() - t0, CAPS_MERGED))
    leaked = [x for x in a1111_standin.read_records(record)
              if ST_AUTH in json.dumps(x.get("body")) or SECRET_URL in json.dumps(x.get("body"))]
    t.check("no request the A1111 received holds a client's auth or url", not leaked, leaked[:2])
    a1111.shutdown()


if __name__ == "__main__":
    t.run(main)
