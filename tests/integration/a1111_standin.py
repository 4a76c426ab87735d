#!/usr/bin/env python3
"""a1111_standin.py — a stand-in plain AUTOMATIC1111 1.10 for the tests
(Python 3 standard library only): a third party that sdgate must work with,
answering as A1111 1.10's modules/api/api.py and models.py do.

What it has, as a fresh A1111 1.10 install with the SDXL base and refiner:
A1111's 20 samplers and 12 schedulers; /options (GET the settings, POST
answers 200 null; sd_model_checkpoint switches the loaded model, which
takes --load-ms); /sd-models with sd_xl_base_1.0 and sd_xl_refiner_1.0
(title "name.safetensors [shorthash]"), /sd-vae, /upscalers,
/latent-upscale-modes, /loras (the built-in Lora extension's route),
/embeddings, /scripts, /prompt-styles, /face-restorers, /progress,
/interrupt ({}), /skip (null), txt2img and img2img. Jobs run one at a time
(A1111's queue lock: a second waits), --step-ms per step, and answer one
small valid PNG per image (its "parameters" text chunk holds the infotext),
`parameters` (every field of the request model) and `info` (a JSON string).
Errors in A1111's shapes: pydantic v1's 422 {"detail": [{loc, msg, type}]}
and A1111's exception handler's {"error", "detail", "body", "errors"}
(an unknown sampler: 404 "Sampler not found"). No /sdgate/v1/* routes.

It records every body it received: with --record FILE, one JSON line per
request ({"method", "path", "body"}) appended to FILE; read_records(FILE)
reads them back.

    python3 tests/integration/a1111_standin.py --port 7860 [--record F]
        [--step-ms 5] [--load-ms 300] [--no-refiner] [--models-dir D] [--listen HOST:PORT]

Test knobs: --models-dir D adds D's *.safetensors as checkpoints (A1111
rescans them on POST /sdapi/v1/refresh-checkpoints, as here); SIGUSR1
toggles a broken install whose listings answer 500.
"""

import argparse
import base64
import hashlib
import json
import os
import random
import signal
import struct
import sys
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

VERSION = "v1.10.1"
MAX_BODY = 64 << 20

SAMPLERS = [  # name, aliases, options (modules/sd_samplers_kdiffusion.py, _timesteps.py, _lcm.py)
    ("DPM++ 2M", ["k_dpmpp_2m"], {}),
    ("DPM++ SDE", ["k_dpmpp_sde"], {"second_order": True, "brownian_noise": True}),
    ("DPM++ 2M SDE", ["k_dpmpp_2m_sde"], {"brownian_noise": True}),
    ("DPM++ 2M SDE Heun", ["k_dpmpp_2m_sde_heun"], {"brownian_noise": True, "solver_type": "heun"}),
    ("DPM++ 2S a", ["k_dpmpp_2s_a"], {"uses_ensd": True, "second_order": True}),
    ("DPM++ 3M SDE", ["k_dpmpp_3m_sde"], {"brownian_noise": True, "discard_next_to_last_sigma": True}),
    ("Euler a", ["k_euler_a", "k_euler_ancestral"], {"uses_ensd": True}),
    ("Euler", ["k_euler"], {}),
    ("LMS", ["k_lms"], {}),
    ("Heun", ["k_heun"], {"second_order": True}),
    ("DPM2", ["k_dpm_2"], {"discard_next_to_last_sigma": True, "second_order": True}),
    ("DPM2 a", ["k_dpm_2_a"], {"discard_next_to_last_sigma": True, "uses_ensd": True, "second_order": True}),
    ("DPM fast", ["k_dpm_fast"], {"uses_ensd": True}),
    ("DPM adaptive", ["k_dpm_ad"], {"uses_ensd": True}),
    ("Restart", ["restart"], {"scheduler": "karras", "second_order": True}),
    ("DDIM", ["ddim"], {}),
    ("DDIM CFG++", ["ddim_cfgpp"], {}),
    ("PLMS", ["plms"], {}),
    ("UniPC", ["unipc"], {}),
    ("LCM", ["k_lcm"], {}),
]

SCHEDULERS = [  # name, label, aliases, default_rho, need_inner_model (modules/sd_schedulers.py)
    ("automatic", "Automatic", None, -1.0, False),
    ("uniform", "Uniform", None, -1.0, True),
    ("karras", "Karras", None, 7.0, False),
    ("exponential", "Exponential", None, -1.0, False),
    ("polyexponential", "Polyexponential", None, 1.0, False),
    ("sgm_uniform", "SGM Uniform", ["SGMUniform"], -1.0, True),
    ("kl_optimal", "KL Optimal", None, -1.0, False),
    ("align_your_steps", "Align Your Steps", None, -1.0, False),
    ("simple", "Simple", None, -1.0, True),
    ("normal", "Normal", None, -1.0, True),
    ("ddim", "DDIM", None, -1.0, True),
    ("beta", "Beta", None, -1.0, True),
]

MODELS_DIR = "/home/a1111/stable-diffusion-webui/models"
CHECKPOINTS = [  # name, shorthash, sha256
    ("sd_xl_base_1.0", "31e35c80fc", "31e35c80fc4829d14f90153f4c74cd59c90b779f6afe05a74cd6120b893f7e5b"),
    ("sd_xl_refiner_1.0", "7440042bbd", "7440042bbdc8a24813002c09b6b69b64dc90fded4472613437b7f55f9b7d9c5f"),
]
VAES = ["sdxl_vae.safetensors"]
UPSCALERS = [  # name, model_name, scale
    ("None", None, 4), ("Lanczos", None, 4), ("Nearest", None, 4), ("DAT x2", "DAT x2", 2), ("DAT x3", "DAT x3", 3),
    ("DAT x4", "DAT x4", 4), ("ESRGAN_4x", "ESRGAN_4x", 4), ("LDSR", None, 4), ("R-ESRGAN 4x+", "R-ESRGAN 4x+", 4),
    ("R-ESRGAN 4x+ Anime6B", "R-ESRGAN 4x+ Anime6B", 4), ("ScuNET GAN", "ScuNET GAN", 4),
    ("ScuNET PSNR", "ScuNET", 4), ("SwinIR 4x", "SwinIR 4x", 4),
]
LATENT_MODES = ["Latent", "Latent (antialiased)", "Latent (bicubic)", "Latent (bicubic antialiased)",
                "Latent (nearest)", "Latent (nearest-exact)"]
LORAS = ["add_detail", "sdxl_lightning_4step_lora"]
SCRIPTS_T2I = ["prompt matrix", "prompts from file or textbox", "x/y/z plot", "extra options", "hypertile",
               "refiner", "seed", "sampler"]
SCRIPTS_I2I = ["img2img alternative test", "loopback", "outpainting mk2", "poor man's outpainting",
               "prompt matrix", "prompts from file or textbox", "sd upscale", "x/y/z plot", "extra options",
               "hypertile", "refiner", "seed", "sampler"]
STYLES = [{"name": "cinematic", "prompt": "{prompt}, cinematic still, film grain",
           "negative_prompt": "cartoon, drawing"}]
FACE_RESTORERS = [{"name": "CodeFormer", "cmd_dir": MODELS_DIR + "/Codeformer"}, {"name": "GFPGAN", "cmd_dir": None}]

# The request model's fields (StableDiffusionTxt2ImgProcessingAPI /
# StableDiffusionImg2ImgProcessingAPI): name -> (type, default, kinds).
S, I, F, B, L, D = "str", "int", "float", "bool", "list", "dict"
T, II, TI = "t", "i", "ti"
FIELDS = {
    "prompt": (S, "", TI), "negative_prompt": (S, "", TI), "styles": (L, None, TI), "seed": (I, -1, TI),
    "subseed": (I, -1, TI), "subseed_strength": (F, 0, TI), "seed_resize_from_h": (I, -1, TI),
    "seed_resize_from_w": (I, -1, TI), "sampler_name": (S, None, TI), "scheduler": (S, None, TI),
    "batch_size": (I, 1, TI), "n_iter": (I, 1, TI), "steps": (I, 50, TI), "cfg_scale": (F, 7.0, TI),
    "width": (I, 512, TI), "height": (I, 512, TI), "restore_faces": (B, None, TI), "tiling": (B, None, TI),
    "do_not_save_samples": (B, False, TI), "do_not_save_grid": (B, False, TI), "eta": (F, None, TI),
    "denoising_strength": (F, None, TI), "s_min_uncond": (F, None, TI), "s_churn": (F, None, TI),
    "s_tmax": (F, None, TI), "s_tmin": (F, None, TI), "s_noise": (F, None, TI), "override_settings": (D, None, TI),
    "override_settings_restore_afterwards": (B, True, TI), "refiner_checkpoint": (S, None, TI),
    "refiner_switch_at": (F, None, TI), "disable_extra_networks": (B, False, TI), "firstpass_image": (S, None, T),
    "comments": (D, None, TI), "enable_hr": (B, False, T), "firstphase_width": (I, 0, T),
    "firstphase_height": (I, 0, T), "hr_scale": (F, 2.0, T), "hr_upscaler": (S, None, T),
    "hr_second_pass_steps": (I, 0, T), "hr_resize_x": (I, 0, T), "hr_resize_y": (I, 0, T),
    "hr_checkpoint_name": (S, None, T), "hr_sampler_name": (S, None, T), "hr_scheduler": (S, None, T),
    "hr_prompt": (S, "", T), "hr_negative_prompt": (S, "", T), "init_images": (L, None, II),
    "resize_mode": (I, 0, II), "image_cfg_scale": (F, None, II), "mask": (S, None, II), "mask_blur_x": (I, 4, II),
    "mask_blur_y": (I, 4, II), "mask_blur": (I, None, II), "mask_round": (B, True, II),
    "inpainting_fill": (I, 0, II), "inpaint_full_res": (B, True, II), "inpaint_full_res_padding": (I, 0, II),
    "inpainting_mask_invert": (I, 0, II), "initial_noise_multiplier": (F, None, II), "latent_mask": (S, None, II),
    "force_task_id": (S, None, TI), "sampler_index": (S, "Euler", TI), "script_name": (S, None, TI),
    "script_args": (L, [], TI), "send_images": (B, True, TI), "save_images": (B, False, TI),
    "alwayson_scripts": (D, {}, TI), "infotext": (S, None, TI), "include_init_images": (B, False, II),
}
TRUTHY = ("1", "on", "t", "true", "y", "yes")  # pydantic v1's strings for booleans
FALSY = ("0", "off", "f", "false", "n", "no")
PYDANTIC = {  # type -> (msg, type) of pydantic v1's errors
    I: ("value is not a valid integer", "type_error.integer"), F: ("value is not a valid float", "type_error.float"),
    B: ("value could not be parsed to a boolean", "type_error.bool"), S: ("str type expected", "type_error.str"),
    L: ("value is not a valid list", "type_error.list"), D: ("value is not a valid dict", "type_error.dict"),
}


def read_records(path):
    """The bodies a stand-in recorded with --record path: a list of dicts."""
    try:
        with open(path, encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]
    except FileNotFoundError:
        return []


class HTTPError(Exception):
    """An answer other than 200: A1111's exception handler's shape by default."""

    def __init__(self, status, detail="", error="HTTPException", errors=None, body=None):
        super().__init__(detail)
        if body is None:
            body = {"error": error, "detail": detail, "body": "",
                    "errors": errors if errors is not None else "%d: %s" % (status, detail)}
        self.status, self.body = status, body


def coerce(name, kind, v):
    """pydantic v1's lenient coercion of one field; raises ValueError(kind)."""
    if v is None:
        return None
    if kind == I:
        if isinstance(v, bool):
            return int(v)
        if isinstance(v, (int, float)) and float(v) == int(v):
            return int(v)
        if isinstance(v, str):
            return int(v.strip())
    elif kind == F:
        if isinstance(v, (int, float)):
            return float(v)
        if isinstance(v, str):
            return float(v.strip())
    elif kind == B:
        if isinstance(v, bool):
            return v
        if v in (0, 1):
            return bool(v)
        if isinstance(v, str) and v.lower() in FALSY + TRUTHY:
            return v.lower() in TRUTHY
    elif kind == S:
        if isinstance(v, str):
            return v
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return str(v)
    elif kind == L and isinstance(v, list):
        return v
    elif kind == D and isinstance(v, dict):
        return v
    raise ValueError(kind)


def validate(body, kinds):
    """The request model built from body: every field, defaults first, or HTTPError 422."""
    if not isinstance(body, dict):
        raise HTTPError(422, body={"detail": [{"loc": ["body"], "msg": "value is not a valid dict",
                                               "type": "type_error.dict"}]})
    model, errors = {}, []
    for name, (kind, default, where) in FIELDS.items():
        if kinds not in where:
            continue
        if name not in body:
            model[name] = json.loads(json.dumps(default))
            continue
        try:
            model[name] = coerce(name, kind, body[name])
        except (ValueError, OverflowError):
            msg, typ = PYDANTIC[kind]
            errors.append({"loc": ["body", name], "msg": msg, "type": typ})
    if errors:
        raise HTTPError(422, body={"detail": errors})
    return model


def decode_image(encoding):
    """api.py's decode_base64_to_image, without PIL: a data: URL or bare base64 of a
    PNG, JPEG or WebP file, else 500 "Invalid encoded image"."""
    if not isinstance(encoding, str):
        raise HTTPError(500, "Invalid encoded image")
    if encoding.startswith(("http://", "https://")):
        raise HTTPError(500, "Requests not allowed")  # opts.api_enable_requests is off by default
    if encoding.startswith("data:image/"):
        encoding = encoding.split(";")[1].split(",")[1]
    try:
        data = base64.b64decode(encoding)
    except ValueError:
        data = b""
    if not (data.startswith(b"\x89PNG\r\n\x1a\n") or data.startswith(b"\xff\xd8\xff")
            or (data[:4] == b"RIFF" and data[8:12] == b"WEBP")):
        raise HTTPError(500, "Invalid encoded image")
    return data


def png(width, height, rgb, text):
    """A valid RGB PNG of one colour with a tEXt "parameters" chunk."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    row = b"\x00" + bytes(rgb) * width
    raw = zlib.compress(row * height, 6)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    meta = b"parameters\x00" + text.encode("latin-1", "replace")
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"tEXt", meta) + chunk(b"IDAT", raw)
            + chunk(b"IEND", b""))


class A1111:
    """The server's state: settings, the loaded model, the one job running."""

    def __init__(self, step_ms, load_ms, record, refiner=True, models_dir=None):
        self.step_ms, self.load_ms, self.record_path = step_ms, load_ms, record
        self.builtin = CHECKPOINTS if refiner else CHECKPOINTS[:1]
        self.models_dir = models_dir
        self.listings_fail = False  # SIGUSR1 toggles it: the listings answer 500 (a broken install)
        self.checkpoints = self.scan()
        self.lock = threading.Lock()       # state
        self.queue_lock = threading.Lock()  # A1111's: one job (or model load) at a time
        self.record_lock = threading.Lock()
        self.options = {"sd_model_checkpoint": self.title(self.checkpoints[0]), "sd_checkpoint_hash":
                        self.checkpoints[0][2], "sd_vae": "Automatic", "CLIP_stop_at_last_layers": 1,
                        "samples_format": "png", "jpeg_quality": 80, "eta_noise_seed_delta": 0,
                        "sd_checkpoints_limit": 1, "live_previews_enable": True, "show_progress_every_n_steps": 10,
                        "face_restoration_model": "CodeFormer", "upscaler_for_img2img": None,
                        "refiner_checkpoint": None}
        self.state = self.idle_state()

    @staticmethod
    def title(ck):
        return "%s.safetensors [%s]" % (ck[0], ck[1])

    @staticmethod
    def idle_state():
        return {"skipped": False, "interrupted": False, "stopping_generation": False, "job": "", "job_count": 0,
                "job_timestamp": "0", "job_no": 0, "sampling_step": 0, "sampling_steps": 0, "time_start": 0.0}

    def record(self, method, path, body):
        if not self.record_path:
            return
        line = json.dumps({"method": method, "path": path, "body": body}) + "\n"
        with self.record_lock, open(self.record_path, "a", encoding="utf-8") as f:
            f.write(line)

    def find_checkpoint(self, name):
        """sd_models.checkpoint_aliases: title, name, model_name, short hash, sha256."""
        for ck in self.checkpoints:
            if name in (self.title(ck), ck[0] + ".safetensors", ck[0], ck[1], ck[2]):
                return ck
        return None

    def load(self, ck):
        with self.lock:
            loaded = self.options["sd_model_checkpoint"] == self.title(ck)
        if not loaded:
            time.sleep(self.load_ms / 1000.0)
            with self.lock:
                self.options["sd_model_checkpoint"] = self.title(ck)
                self.options["sd_checkpoint_hash"] = ck[2]

    # ---- routes

    def scan(self):
        """The checkpoints: the SDXL pair, and the *.safetensors of --models-dir
        (A1111 rescans on start and on POST /sdapi/v1/refresh-checkpoints)."""
        found = list(self.builtin)
        if self.models_dir:
            for f in sorted(os.listdir(self.models_dir)):
                if f.endswith(".safetensors"):
                    sha = hashlib.sha256(f.encode()).hexdigest()
                    found.append((f[:-len(".safetensors")], sha[:10], sha))
        return found

    def refresh_checkpoints(self, body):
        with self.lock:
            self.checkpoints = self.scan()
        return None

    def sd_models(self):
        return [{"title": self.title(ck), "model_name": ck[0], "hash": ck[1], "sha256": ck[2],
                 "filename": "%s/Stable-diffusion/%s.safetensors" % (MODELS_DIR, ck[0]), "config": None}
                for ck in self.checkpoints]

    def set_options(self, req):
        if not isinstance(req, dict):
            raise HTTPError(422, body={"detail": [{"loc": ["body"], "msg": "value is not a valid dict",
                                                   "type": "type_error.dict"}]})
        name = req.get("sd_model_checkpoint")
        ck = None
        if name is not None:
            ck = self.find_checkpoint(name) if isinstance(name, str) else None
            if ck is None:
                raise HTTPError(500, error="RuntimeError", errors="model %r not found" % (name,))
        with self.queue_lock:
            with self.lock:
                for k, v in req.items():
                    if k != "sd_model_checkpoint":
                        self.options[k] = v
            if ck:
                self.load(ck)
        return None

    def progress(self):
        with self.lock:
            st = dict(self.state)
        start = st.pop("time_start")
        if st["job_count"] == 0:
            return {"progress": 0, "eta_relative": 0, "state": st, "current_image": None, "textinfo": None}
        p = 0.01 + st["job_no"] / st["job_count"]
        if st["sampling_steps"] > 0:
            p += 1 / st["job_count"] * st["sampling_step"] / st["sampling_steps"]
        elapsed = time.time() - start
        return {"progress": min(p, 1), "eta_relative": elapsed / p - elapsed, "state": st, "current_image": None,
                "textinfo": None}

    def flag(self, name):
        with self.lock:
            if self.state["job_count"]:
                self.state[name] = True

    def generate(self, body, kinds):
        req = validate(body, kinds)
        sampler = req["sampler_name"] or req["sampler_index"]
        names = {s[0]: s[0] for s in SAMPLERS}
        names.update({a: s[0] for s in SAMPLERS for a in s[1]})
        if sampler not in names:
            raise HTTPError(404, "Sampler not found")
        if kinds == II and req["init_images"] is None:
            raise HTTPError(404, "Init image not found")
        if kinds == II:
            for enc in req["init_images"] + ([req["mask"]] if req["mask"] else []):
                decode_image(enc)
        if req["scheduler"] is not None and req["scheduler"] not in [x for s in SCHEDULERS for x in (s[0], s[1])]:
            req["scheduler"] = "automatic"
        over = req["override_settings"] or {}
        ck = None
        if isinstance(over.get("sd_model_checkpoint"), str):
            ck = self.find_checkpoint(over["sd_model_checkpoint"])
        refiner = None
        if req["refiner_checkpoint"] not in (None, "", "None"):
            refiner = self.find_checkpoint(req["refiner_checkpoint"])
            if refiner is None:
                raise HTTPError(500, error="Exception", errors="Could not find checkpoint with name %s"
                                % req["refiner_checkpoint"])
        w, h = req["width"], req["height"]
        if req.get("enable_hr"):
            w, h = (req["hr_resize_x"] or int(w * req["hr_scale"])), (req["hr_resize_y"] or int(h * req["hr_scale"]))
        count = max(1, req["batch_size"]) * max(1, req["n_iter"])
        seed = req["seed"] if req["seed"] != -1 else random.randrange(4294967294)
        subseed = req["subseed"] if req["subseed"] != -1 else random.randrange(4294967294)
        with self.queue_lock:
            if ck:
                self.load(ck)
            with self.lock:
                stamp = time.strftime("%Y%m%d%H%M%S")
                self.state = dict(self.idle_state(), job="scripts_txt2img" if kinds == T else "scripts_img2img",
                                  job_count=req["n_iter"], job_timestamp=stamp, sampling_steps=req["steps"],
                                  time_start=time.time())
                model = self.options["sd_model_checkpoint"]
            made = 0
            try:
                for it in range(req["n_iter"]):
                    for step in range(req["steps"]):
                        with self.lock:
                            if self.state["interrupted"] or self.state["skipped"]:
                                break
                            self.state.update(job_no=it, sampling_step=step + 1)
                        time.sleep(self.step_ms / 1000.0)
                    with self.lock:
                        if self.state["skipped"] and not self.state["interrupted"]:
                            self.state["skipped"] = False
                            continue
                        made += req["batch_size"]
                        if self.state["interrupted"]:
                            break
            finally:
                with self.lock:
                    self.state = self.idle_state()
        made = max(1, min(made, count))  # A1111 returns what was made; an interrupted first step still decodes
        return self.answer(req, model, refiner, seed, subseed, w, h, made, stamp)

    def answer(self, req, model, refiner, seed, subseed, w, h, count, stamp):
        ck = self.find_checkpoint(model)
        sampler = req["sampler_name"] or req["sampler_index"]
        extra = {"Schedule type": next((s[1] for s in SCHEDULERS if req["scheduler"] in (s[0], s[1])), "Automatic")}
        if refiner:
            extra.update({"Refiner": self.title(refiner), "Refiner switch at": req["refiner_switch_at"] or 0.8})
        texts = []
        for i in range(count):
            t = req["prompt"]
            if req["negative_prompt"]:
                t += "\nNegative prompt: " + req["negative_prompt"]
            t += "\nSteps: %d, Sampler: %s, %s, CFG scale: %g, Seed: %d, Size: %dx%d, Model hash: %s, Model: %s, " \
                 "Version: %s" % (req["steps"], sampler, ", ".join("%s: %s" % kv for kv in extra.items()),
                                  req["cfg_scale"], seed + i, w, h, ck[1], ck[0], VERSION)
            texts.append(t)
        images = []
        if req["send_images"]:
            for i in range(count):
                r = random.Random(seed + i)
                images.append(base64.b64encode(png(w, h, (r.randrange(256), r.randrange(256), r.randrange(256)),
                                                   texts[i])).decode())
        info = {"prompt": req["prompt"], "all_prompts": [req["prompt"]] * count,
                "negative_prompt": req["negative_prompt"], "all_negative_prompts": [req["negative_prompt"]] * count,
                "seed": seed, "all_seeds": [seed + i for i in range(count)], "subseed": subseed,
                "all_subseeds": [subseed + i for i in range(count)], "subseed_strength": req["subseed_strength"],
                "width": w, "height": h, "sampler_name": sampler, "cfg_scale": req["cfg_scale"], "steps": req["steps"],
                "batch_size": req["batch_size"], "restore_faces": bool(req["restore_faces"]),
                "face_restoration_model": None, "sd_model_name": ck[0], "sd_model_hash": ck[1],
                "sd_vae_name": None, "sd_vae_hash": None, "seed_resize_from_w": -1, "seed_resize_from_h": -1,
                "denoising_strength": req["denoising_strength"], "extra_generation_params": extra,
                "index_of_first_image": 0, "infotexts": texts, "styles": req["styles"] or [],
                "job_timestamp": stamp, "clip_skip": 1, "is_using_inpainting_conditioning": False, "version": VERSION}
        params = dict(req)
        if "include_init_images" in params and not params["include_init_images"]:
            params["init_images"], params["mask"] = None, None
        return {"images": images, "parameters": params, "info": json.dumps(info)}

    def get(self, path):
        routes = {
            "/sdapi/v1/samplers": lambda: [{"name": n, "aliases": a, "options": o} for n, a, o in SAMPLERS],
            "/sdapi/v1/schedulers": lambda: [{"name": n, "label": lb, "aliases": a, "default_rho": rho,
                                              "need_inner_model": inner} for n, lb, a, rho, inner in SCHEDULERS],
            "/sdapi/v1/options": lambda: dict(self.options),
            "/sdapi/v1/sd-models": self.sd_models,
            "/sdapi/v1/sd-vae": lambda: [{"model_name": v, "filename": "%s/VAE/%s" % (MODELS_DIR, v)} for v in VAES],
            "/sdapi/v1/upscalers": lambda: [{"name": n, "model_name": m, "model_path": None, "model_url": None,
                                             "scale": s} for n, m, s in UPSCALERS],
            "/sdapi/v1/latent-upscale-modes": lambda: [{"name": n} for n in LATENT_MODES],
            "/sdapi/v1/loras": lambda: [{"name": n, "alias": n, "path": "%s/Lora/%s.safetensors" % (MODELS_DIR, n),
                                         "metadata": {}} for n in LORAS],
            "/sdapi/v1/embeddings": lambda: {"loaded": {}, "skipped": {}},
            "/sdapi/v1/scripts": lambda: {"txt2img": SCRIPTS_T2I, "img2img": SCRIPTS_I2I},
            "/sdapi/v1/prompt-styles": lambda: STYLES,
            "/sdapi/v1/face-restorers": lambda: FACE_RESTORERS,
            "/sdapi/v1/progress": self.progress,
            "/sdapi/v1/cmd-flags": lambda: {"api": True, "listen": True, "nowebui": True},
        }
        fn = routes.get(path)
        if fn and self.listings_fail and path not in ("/sdapi/v1/progress", "/sdapi/v1/options"):
            def broken():
                raise HTTPError(500, error="RuntimeError", errors="listing unavailable")
            return broken
        return fn

    def post(self, path):
        return {
            "/sdapi/v1/options": self.set_options,
            "/sdapi/v1/txt2img": lambda b: self.generate(b, T),
            "/sdapi/v1/img2img": lambda b: self.generate(b, II),
            "/sdapi/v1/interrupt": lambda b: (self.flag("interrupted"), {})[1],
            "/sdapi/v1/skip": lambda b: self.flag("skipped"),
            "/sdapi/v1/refresh-checkpoints": self.refresh_checkpoints,
        }.get(path)


class Handler(BaseHTTPRequestHandler):
    server_version = "uvicorn"
    sys_version = ""
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        sys.stderr.write("a1111-standin: %s\n" % (fmt % args))

    def send_json(self, status, obj):
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def route(self, method):
        app = self.server.app
        path = self.path.split("?", 1)[0]
        known = app.get(path) is not None or app.post(path) is not None
        fn = (app.get if method == "GET" else app.post)(path)
        if fn is None:
            if known:
                return self.send_json(405, {"detail": "Method Not Allowed"})
            return self.send_json(404, {"detail": "Not Found"})
        body = None
        if method == "POST":
            n = int(self.headers.get("content-length") or 0)
            if n > MAX_BODY:
                self.close_connection = True
                return self.send_json(413, {"detail": "Request Entity Too Large"})
            raw = self.rfile.read(n) if n else b""
            try:
                body = json.loads(raw) if raw else None
            except ValueError as e:
                app.record(method, path, raw.decode("utf-8", "replace"))
                return self.send_json(422, {"detail": [{"loc": ["body", e.pos if hasattr(e, "pos") else 0],
                                                        "msg": "Expecting value", "type": "value_error.jsondecode",
                                                        "ctx": {"msg": str(e)}}]})
            app.record(method, path, body)
            if body is None and path not in ("/sdapi/v1/interrupt", "/sdapi/v1/skip", "/sdapi/v1/refresh-checkpoints"):
                return self.send_json(422, {"detail": [{"loc": ["body"], "msg": "field required",
                                                        "type": "value_error.missing"}]})
        try:
            return self.send_json(200, fn(body) if method == "POST" else fn())
        except HTTPError as e:
            return self.send_json(e.status, e.body)
        except Exception as e:  # A1111's exception handler: 500 with the exception's name
            return self.send_json(500, {"error": type(e).__name__, "detail": "", "body": "", "errors": str(e)})

    def do_GET(self):
        self.route("GET")

    def do_POST(self):
        self.route("POST")


def serve(port, host="127.0.0.1", step_ms=5, load_ms=300, record=None, refiner=True, models_dir=None):
    """A started server (in its own thread): .server_address, .shutdown()."""
    srv = ThreadingHTTPServer((host, port), Handler)
    srv.daemon_threads = True
    srv.app = A1111(step_ms, load_ms, record, refiner, models_dir)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def main(argv=None):
    ap = argparse.ArgumentParser(description="a stand-in plain AUTOMATIC1111 1.10 for sdgate's tests")
    ap.add_argument("--port", type=int, default=7860)
    ap.add_argument("--listen", help="HOST:PORT (wins over --port)")
    ap.add_argument("--record", help="append each received body to this file, one JSON line each")
    ap.add_argument("--step-ms", type=float, default=5.0, help="time per sampling step")
    ap.add_argument("--load-ms", type=float, default=300.0, help="time to switch the loaded checkpoint")
    ap.add_argument("--no-refiner", action="store_true", help="only the SDXL base checkpoint")
    ap.add_argument("--models-dir", help="more checkpoints: its *.safetensors (rescanned by refresh-checkpoints)")
    a = ap.parse_args(argv)
    host, port = "127.0.0.1", a.port
    if a.listen:
        host, _, p = a.listen.rpartition(":")
        port = int(p)
    srv = serve(port, host or "127.0.0.1", a.step_ms, a.load_ms, a.record, not a.no_refiner, a.models_dir)
    sys.stderr.write("a1111-standin: listening on %s:%d\n" % srv.server_address[:2])
    sys.stderr.flush()
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGUSR1, lambda *_: setattr(srv.app, "listings_fail", not srv.app.listings_fail))
    try:
        done.wait()
    except KeyboardInterrupt:
        pass
    srv.shutdown()


if __name__ == "__main__":
    main()
