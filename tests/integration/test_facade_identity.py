"""test_facade_identity.py — who an A1111 client is, and what reaches a
provider, through the shipped NGINX config (deploy/nginx/sdgate.conf) with
the balancers run with --trusted-proxy 127.0.0.1:

- anonymous clients behind NGINX share one peer address, yet B sees none of
  A's progress or preview and B's interrupt leaves A's job running; clients
  with API keys (Bearer, or Basic as A1111's --api-auth clients send it) see
  their own progress and stop their own job, nobody else's;
- queue limits are per API key, else per real address (NGINX's X-Real-IP;
  a forged one is replaced; untrusted peers are not believed; IPv6 per /64,
  IPv4-mapped as IPv4); the global --max-queue holds;
- a text/plain or form body (a CORS "simple" request) gets 415, a foreign
  Origin 403, and neither makes a job;
- a request full of what steers a provider's A1111 (override_settings
  outdir_samples / samples_filename_pattern, save_images, scripts,
  alwayson_scripts, SillyTavern's auth and url, an unknown key) reaches the
  backend with only the allowed fields; scripts only where the backend
  allows them; the credentials are not in the balancer's store either.
Contract: ../../docs/security.md "Who can do what", ../../balancer/README.md."""

import base64
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sdtest as t  # noqa: E402

PACE_MS = 100
SLOW_STEPS = 40  # 4 s of pace at least: long enough to watch and poke at
BASE_MODEL = "sdgate-procedural-base-v1.builtin [9917535daf]"
KEY1 = {"Authorization": "Bearer k1-0f9c2d7e5b8a41c3a6e2"}
ADMIN_TOKEN = "admin-7d1e0c9a2b"
KEY2 = {"Authorization": "Basic " + base64.b64encode(b"bob:hunter2-is-not-a-key").decode()}

# What a backend may receive (balancer/forward.c).
ALLOWED = {"prompt", "negative_prompt", "seed", "subseed", "subseed_strength", "seed_resize_from_h",
           "seed_resize_from_w", "sampler_name", "sampler_index", "scheduler", "batch_size", "n_iter", "steps",
           "cfg_scale", "width", "height", "restore_faces", "tiling", "eta", "denoising_strength", "s_min_uncond",
           "s_churn", "s_tmax", "s_tmin", "s_noise", "refiner_checkpoint", "refiner_switch_at",
           "disable_extra_networks", "enable_hr", "firstphase_width", "firstphase_height", "hr_scale",
           "hr_upscaler", "hr_second_pass_steps", "hr_resize_x", "hr_resize_y", "hr_checkpoint_name",
           "hr_sampler_name", "hr_scheduler", "hr_prompt", "hr_negative_prompt", "styles", "override_settings",
           "override_settings_restore_afterwards", "save_images", "send_images"}
SCRIPTS = {"script_name", "script_args", "alwayson_scripts"}


def start_nginx(bal):
    web, api = t.free_port(), t.free_port()
    ngx = t.Nginx(t.render_nginx_conf(t.NGINX_CONF, [t.free_port()], [bal.port], web, api))
    url = "http://127.0.0.1:%d" % api
    up = t.wait_until(lambda: t.request("GET", url + "/healthz", timeout=2).status == 200, 15)
    t.check("NGINX with deploy/nginx/sdgate.conf forwards to the balancer", up, ngx.log())
    return ngx, url


def idle_progress(p):
    st = p.get("state") if isinstance(p, dict) else None
    return (isinstance(st, dict) and st.get("job_count") == 0 and p.get("progress") == 0
            and p.get("current_image") is None)


def progress(url, headers=None):
    r = t.request("GET", url + "/sdapi/v1/progress?skip_current_image=false", headers=headers, timeout=10)
    return r.json if r.status == 200 else {"status": r.status}


def facade(url, body, headers=None):
    return t.Background(t.request, "POST", url + "/sdapi/v1/txt2img", json_body=body, headers=headers, timeout=120)


def slow_job(prompt, seed):
    return t.small_job(prompt=prompt, seed=seed, steps=SLOW_STEPS, gpus=["plain"])


def check_anonymous(url, slow):
    """Two anonymous clients behind NGINX: same peer, separate identities."""
    a = facade(url, slow_job("anonymous A's secret prompt", 11))
    running = t.wait_until(lambda: t.backend_step(slow) >= 2, 30)
    t.check("[anon] A's façade job runs on the backend", running, t.backend_progress(slow))
    pb = progress(url)
    print("# anonymous B's progress while A runs: %s" % t.short(pb, 300))
    t.check("[anon] B's GET /sdapi/v1/progress is idle (job_count 0, progress 0, no preview) while A's job runs",
            idle_progress(pb), t.short(pb))
    pa = progress(url)
    t.check("[anon] …and so is A's own (an address is not an identity: progress needs an API key)",
            idle_progress(pa), t.short(pa))
    step0 = t.backend_step(slow)
    r = t.request("POST", url + "/sdapi/v1/interrupt", timeout=10)
    t.check("[anon] B's POST /sdapi/v1/interrupt answers 200 {}", r.status == 200 and r.json == {}, t.describe(r))
    r = t.request("POST", url + "/sdapi/v1/skip", timeout=10)
    t.check("[anon] B's POST /sdapi/v1/skip answers 200 {}", r.status == 200 and r.json == {}, t.describe(r))
    later = t.wait_until(lambda: t.backend_step(slow) >= step0 + 3, 20)
    print("# A's job after B's interrupt: step %s -> %s" % (step0, t.backend_step(slow)))
    t.check("[anon] A's job keeps running after B's interrupt and skip (3 more steps)", later,
            t.backend_progress(slow))
    reply, err, secs = a.join(120)
    t.check("[anon] A gets its image (200) in %.1f s" % (secs or 0),
            reply is not None and reply.status == 200 and len(t.images_of(reply) or []) == 1,
            t.describe(reply) if reply else repr(err))


def check_keyed(url, slow):
    """Clients with API keys see and stop their own job, and only theirs."""
    k1 = facade(url, slow_job("keyed K1's job", 12), KEY1)
    seen = t.wait_until(lambda: (lambda p: p if p.get("state", {}).get("sampling_step", 0) >= 1 else None)(
        progress(url, KEY1)), 30)
    print("# K1's own progress: %s" % t.short(seen, 200))
    t.check("[key] K1's GET /sdapi/v1/progress (Bearer) shows its running job: job_count 1, sampling_steps %d"
            % SLOW_STEPS, isinstance(seen, dict) and seen["state"].get("job_count") == 1
            and seen["state"].get("sampling_steps") == SLOW_STEPS and seen.get("progress", 0) > 0, t.short(seen))
    p2 = progress(url, KEY2)
    t.check("[key] K2 (Basic auth, another key) sees idle progress", idle_progress(p2), t.short(p2))
    pa = progress(url)
    t.check("[key] an anonymous client sees idle progress", idle_progress(pa), t.short(pa))
    step0 = t.backend_step(slow)
    r = t.request("POST", url + "/sdapi/v1/interrupt", headers=KEY2, timeout=10)
    t.check("[key] K2's interrupt answers 200", r.status == 200, t.describe(r))
    later = t.wait_until(lambda: t.backend_step(slow) >= step0 + 3, 20)
    t.check("[key] K1's job keeps running after K2's interrupt (step %s -> %s)" % (step0, t.backend_step(slow)),
            later, t.backend_progress(slow))
    r = t.request("POST", url + "/sdapi/v1/interrupt", headers=KEY1, timeout=10)
    reply, err, secs = k1.join(60)
    print("# K1's façade request after its own interrupt: %s in %.1f s" % (
        t.describe(reply) if reply else repr(err), secs or 0))
    t.check("[key] K1's own interrupt ends its job (200 with what was made, as A1111)",
            reply is not None and reply.status == 200 and len(t.images_of(reply) or []) == 1,
            t.describe(reply) if reply else repr(err))
    idle = t.wait_until(lambda: t.backend_idle(slow), 20)
    t.check("[key] …and the backend goes idle", idle, t.backend_progress(slow))


def check_forwarding(url, bal, plain_rec, scripted_rec):
    """Only the allowed fields reach a provider."""
    hostile = t.small_job(
        prompt="what reaches the provider", seed=21, steps=2, gpus=["plain"],
        override_settings={"sd_model_checkpoint": BASE_MODEL, "outdir_samples": "/tmp/pwned",
                           "samples_filename_pattern": "../../[prompt]", "CLIP_stop_at_last_layers": 2},
        override_settings_restore_afterwards=False, save_images=True, send_images=True,
        script_name="x/y/z plot", script_args=[1, "a"], alwayson_scripts={"controlnet": {"args": [{"m": 1}]}},
        auth="alice:secret", url="http://127.0.0.1:1/", api_key="sk-123", unknown_key_xyz={"a": 1},
        force_task_id="task(x)", infotext="Steps: 99")
    n0 = len(plain_rec.calls)
    r = t.request("POST", url + "/sdapi/v1/txt2img", json_body=hostile, timeout=60)
    t.check("[forward] the request with steering fields is served (200)", r.status == 200, t.describe(r))
    sent = plain_rec.calls[n0]["request"] if len(plain_rec.calls) > n0 else None
    print("# what the provider got: %s" % t.short(sent, 700))
    keys = set(sent or {})
    t.check("[forward] the provider got only allowed fields (no auth, url, api_key, unknown key, force_task_id, "
            "infotext, scripts)", sent is not None and keys <= ALLOWED, sorted(keys - ALLOWED))
    t.check("[forward] override_settings reduced to the allow-list (sd_model_checkpoint, CLIP_stop_at_last_layers)",
            isinstance(sent, dict) and sent.get("override_settings") == {
                "sd_model_checkpoint": BASE_MODEL, "CLIP_stop_at_last_layers": 2},
            sent and sent.get("override_settings"))
    t.check("[forward] override_settings_restore_afterwards forced true, save_images false",
            isinstance(sent, dict) and sent.get("override_settings_restore_afterwards") is True
            and sent.get("save_images") is False, sent)
    t.check("[forward] the generation fields arrive as sent (prompt, seed, steps, size, sampler)",
            isinstance(sent, dict) and all(sent.get(k) == hostile[k] for k in
                                           ("prompt", "seed", "steps", "width", "height", "sampler_name")), sent)
    job_id = ((t.info_of(r) or {}).get("sdgate") or {}).get("job_id")
    stored = t.wait_until(lambda: (lambda d: d if job_id and job_id.encode() in d else None)(t.db_dump(bal.db)), 10)
    t.check("[forward] the balancer's store holds the job but not the client's credentials or settings "
            "(no 'alice:secret', 'sk-123', '/tmp/pwned')",
            stored and not any(x in stored for x in (b"alice:secret", b"sk-123", b"/tmp/pwned")),
            "job %s stored: %s" % (job_id, bool(stored)))

    # The provider's body is serialised from the parsed request (issue 12):
    # coerced values, canonical sampler names, the seed fixed once.
    lax = t.small_job(prompt="parsed, not forwarded", steps="2", seed="-1", cfg_scale="6.5",
                      sampler_name="", sampler_index="DPM++ 2M Karras", gpus=["plain"], auth="bob:pw")
    n0 = len(plain_rec.calls)
    r = t.request("POST", url + "/sdapi/v1/txt2img", json_body=lax, timeout=60)
    sent = plain_rec.calls[n0]["request"] if len(plain_rec.calls) > n0 else None
    info = t.info_of(r) or {}
    print("# lax request %s -> provider got %s; info.seed %s" % (
        {k: lax[k] for k in ("steps", "seed", "cfg_scale", "sampler_index")},
        sent and {k: sent.get(k) for k in ("steps", "seed", "cfg_scale", "sampler_name", "scheduler")},
        info.get("seed")))
    t.check("[forward] a lax request (steps \"2\", seed \"-1\", cfg \"6.5\", sampler_index \"DPM++ 2M Karras\") "
            "is served (200)", r.status == 200, t.describe(r))
    t.check("[forward] …the provider gets the parsed request: steps 2, cfg_scale 6.5, a concrete integer seed, "
            "sampler_name \"DPM++ 2M\" + scheduler \"karras\", no sampler_index, no auth",
            isinstance(sent, dict) and sent.get("steps") == 2 and sent.get("cfg_scale") == 6.5
            and t.is_int(sent.get("seed")) and sent.get("seed") >= 0 and sent.get("sampler_name") == "DPM++ 2M"
            and sent.get("scheduler") == "karras" and "sampler_index" not in sent and "auth" not in sent, sent)
    t.check("[forward] …and the answer's info reports that seed", isinstance(sent, dict)
            and info.get("seed") == sent.get("seed"), (info.get("seed"), sent and sent.get("seed")))

    n0 = len(scripted_rec.calls)
    hostile["gpus"] = ["scripted"]
    r = t.request("POST", url + "/sdapi/v1/txt2img", json_body=hostile, timeout=60)
    t.check("[forward] the same request to a backend with allow_scripts is served (200)", r.status == 200,
            t.describe(r))
    sent = scripted_rec.calls[n0]["request"] if len(scripted_rec.calls) > n0 else None
    keys = set(sent or {})
    t.check("[forward] a backend that allows scripts gets script_name, script_args, alwayson_scripts as sent",
            isinstance(sent, dict) and all(sent.get(k) == hostile[k] for k in SCRIPTS), sent)
    t.check("[forward] …and still nothing else (no auth, url, unknown key, outdir_samples, save_images true)",
            sent is not None and keys <= ALLOWED | SCRIPTS and sent.get("save_images") is False
            and "outdir_samples" not in (sent.get("override_settings") or {}), sorted(keys - ALLOWED - SCRIPTS))


def check_cross_site(url, bal):
    acc0 = t.metric(t.metrics(bal.url), "sdgate_jobs_accepted_total", 0)
    body = t.small_job(prompt="cross-site", gpus=["plain"])
    raw = json.dumps(body)
    r = t.request("POST", url + "/v1/jobs", raw_body=raw, headers={"Content-Type": "text/plain;charset=UTF-8"},
                  timeout=10)
    t.check("[xsite] a text/plain POST /v1/jobs: 415 unsupported_media_type (sdgate shape)",
            t.is_sdgate_error(r, 415, "unsupported_media_type"), t.describe(r))
    r = t.request("POST", url + "/sdapi/v1/txt2img", raw_body=raw,
                  headers={"Content-Type": "application/x-www-form-urlencoded"}, timeout=10)
    t.check("[xsite] a form-encoded POST /sdapi/v1/txt2img: 415", t.is_sdgate_error(r, 415, "unsupported_media_type"),
            t.describe(r))
    r = t.request("POST", url + "/v1/jobs", raw_body=raw, headers={"Content-Type": "multipart/form-data; boundary=x"},
                  timeout=10)
    t.check("[xsite] a multipart/form-data POST: 415", t.is_sdgate_error(r, 415, "unsupported_media_type"),
            t.describe(r))
    r = t.request("POST", url + "/v1/jobs", json_body=body, headers={"Origin": "https://evil.example"}, timeout=10)
    t.check("[xsite] a JSON POST with a foreign Origin: 403 forbidden_origin",
            t.is_sdgate_error(r, 403, "forbidden_origin"), t.describe(r))
    r = t.request("POST", url + "/sdapi/v1/interrupt", headers={"Origin": "null"}, timeout=10)
    t.check("[xsite] POST /sdapi/v1/interrupt with Origin: null: 403", t.is_sdgate_error(r, 403, "forbidden_origin"),
            t.describe(r))
    acc1 = t.metric(t.metrics(bal.url), "sdgate_jobs_accepted_total", 0)
    t.check("[xsite] none of them made a job (accepted %s -> %s)" % (acc0, acc1), acc1 == acc0, (acc0, acc1))


def check_queue_limits():
    stuck = t.FakeBackend(gpu_class="stuck", txt2img_status=500, txt2img_delay=90)
    q = t.start_balancer("--backend", stuck.url, "--trusted-proxy", "127.0.0.1", "--max-queue-per-client", "2",
                         "--max-queue", "13", "--min-job-timeout-s", "300", "--allowed-origin", "https://ok.example",
                         "--admin-token", ADMIN_TOKEN,
                         name="balancer-queue")
    t.wait_idle_backends(q.url, 1)
    ngx, url = start_nginx(q)
    try:
        def post(base, headers=None, source=None):
            r = t.request("POST", base + "/v1/jobs", json_body=t.small_job(prompt="queued"), headers=headers,
                          timeout=10, source=source)
            return r.status if r.status == 202 else "%d %s" % (r.status, t.error_code(r))

        got = [post(url, source="127.0.0.2") for _ in range(3)]
        got.append(post(url, {"X-Real-IP": "127.0.0.9", "X-Forwarded-For": "127.0.0.9"}, "127.0.0.2"))
        print("# via NGINX from 127.0.0.2 (the last with a forged X-Real-IP): %s" % got)
        t.check("[queue] client 127.0.0.2 via NGINX: 2 accepted, the 3rd 429 client_queue_full, and a forged "
                "X-Real-IP does not make it another client",
                got == [202, 202, "429 client_queue_full", "429 client_queue_full"], got)
        got = post(url, source="127.0.0.3")
        t.check("[queue] client 127.0.0.3 via the same NGINX has its own limit (202)", got == 202, got)
        got = [post(url, KEY1, "127.0.0.2") for _ in range(3)]
        print("# API key K1 from 127.0.0.2: %s" % got)
        t.check("[queue] an API key from 127.0.0.2 has its own limit: 202, 202, 429",
                got == [202, 202, "429 client_queue_full"], got)
        v6 = [post(q.url, {"X-Real-IP": ip}) for ip in
              ("2001:db8:1:2::1", "2001:db8:1:2:ffff::9", "2001:db8:1:2:abcd::1", "2001:db8:1:3::1")]
        print("# IPv6 clients named by the trusted proxy (2001:db8:1:2::1, :2:ffff::9, :2:abcd::1, :3::1): %s" % v6)
        t.check("[queue] IPv6 by its /64: two of 2001:db8:1:2::/64 accepted, the third 429; 2001:db8:1:3::/64 is "
                "another client", v6 == [202, 202, "429 client_queue_full", 202], v6)
        got = [post(q.url, {"X-Real-IP": "::ffff:127.0.0.3"}), post(url, source="127.0.0.3")]
        t.check("[queue] ::ffff:127.0.0.3 is 127.0.0.3 (its 2nd job accepted, then 429 via NGINX)",
                got == [202, "429 client_queue_full"], got)
        got = [post(q.url, {"X-Real-IP": "198.51.100.%d" % i}, "127.0.0.4") for i in range(3)]
        print("# direct from 127.0.0.4 (not a trusted proxy) with X-Real-IPs of its choice: %s" % got)
        t.check("[queue] an untrusted peer's X-Real-IP is not believed (202, 202, 429)",
                got == [202, 202, "429 client_queue_full"], got)
        admin = {"Authorization": "Bearer " + ADMIN_TOKEN}
        got = [post(url, dict(admin, **{"X-Sdgate-Client": ip}))
               for ip in ("2001:db8:5:6::1", "2001:db8:5:6:ffff::2", "2001:db8:5:6::3")]
        print("# the gateway (admin token) naming IPv6 browsers of one /64: %s" % got)
        t.check("[queue] browsers the gateway names by IPv6 address are keyed by /64 too: 202, 202, 429", got ==
                [202, 202, "429 client_queue_full"], got)
        got = [post(url, {"Authorization": "Bearer another-key-%d" % i}) for i in range(2)]
        print("# two more keys with the queue at 12 of --max-queue 13: %s" % got)
        t.check("[queue] the global --max-queue holds whatever the key: 202, then 429 queue_full",
                got == [202, "429 queue_full"], got)
        r = t.request("GET", url + "/v1/backends", headers={"Origin": "https://ok.example"}, timeout=10)
        t.check("[xsite] an Origin in --allowed-origin is let through (200)", r.status == 200, t.describe(r))
        r = t.request("GET", url + "/v1/backends", headers={"Origin": "https://evil.example"}, timeout=10)
        t.check("[xsite] another Origin is not (403)", t.is_sdgate_error(r, 403, "forbidden_origin"), t.describe(r))
    finally:
        ngx.stop()
        q.stop()
        stuck.close()


def check_flags():
    code, _, err = t.run_tool([t.balancer_path(), "--trusted-proxy", "nginx.example", "--db", "/nonexistent/x.db"])
    t.check("--trusted-proxy with something that is not an IP address: exit code 2 and says why",
            code == 2 and "--trusted-proxy" in err, (code, err[-300:]))


def main():
    check_flags()
    if not t.nginx_path():
        t.check("nginx is installed (deploy/install-deps.sh installs nginx-light)", False)
        return
    slow = t.start_backend("--gpu-class", "plain", "--pace-ms-per-step", str(PACE_MS), name="backend-slow")
    fast = t.start_backend("--gpu-class", "scripted", name="backend-scripts")
    plain_rec, scripted_rec = t.RecordingProxy(slow.url), t.RecordingProxy(fast.url)
    bal = t.start_balancer("--backend", t.static_backend_arg(plain_rec.url, gpu_class="plain"),
                           "--backend", t.static_backend_arg(scripted_rec.url, gpu_class="scripted",
                                                             allow_scripts="true"),
                           "--trusted-proxy", "127.0.0.1", name="balancer")
    t.wait_idle_backends(bal.url, 2)
    ngx, url = start_nginx(bal)
    try:
        check_anonymous(url, slow)
        check_keyed(url, slow)
        check_forwarding(url, bal, plain_rec, scripted_rec)
        check_cross_site(url, bal)
    finally:
        ngx.stop()
    check_queue_limits()


if __name__ == "__main__":
    t.run(main)
