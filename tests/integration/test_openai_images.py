"""test_openai_images.py — POST /v1/images/generations, OpenAI's image API
on the balancer (issue 12 item 6), over a real native backend: the request
shapes Open WebUI (backend/open_webui/routers/images.py, engine "openai")
and LibreChat (its DALL-E 3 tool and its gpt-image-1 tool, through the
OpenAI Node SDK) send, headers included, answer 200 with decodable PNGs of
the asked size, n of them, as b64_json or as URLs of the jobs API; "model"
picks a checkpoint; bad input at every field gets OpenAI's error shape
{"error": {"message", "type", "param", "code"}}; a client's queue limit is
a 429; every job ends done in the jobs API and the metrics; nothing crashes.
Contract: ../../docs/openai.md."""

import json
import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sdtest as t  # noqa: E402

BASE = "sdgate-procedural-base-v1.builtin [9917535daf]"
REFINER_NAME = "sdgate-procedural-refiner-v1.builtin"
PROMPT = "a red lighthouse on a cliff at dusk"

# Open WebUI's aiohttp call (engine "openai"): Bearer key, JSON, its fields.
OPEN_WEBUI_HEADERS = {"Authorization": "Bearer sk-open-webui-key", "Content-Type": "application/json",
                      "Accept": "*/*", "User-Agent": "Python/3.11 aiohttp/3.11.11"}
# The OpenAI Node SDK (v4) as LibreChat uses it.
NODE_SDK_HEADERS = {"Authorization": "Bearer sk-librechat-key", "Content-Type": "application/json",
                    "Accept": "application/json", "User-Agent": "OpenAI/JS 4.67.3",
                    "X-Stainless-Lang": "js", "X-Stainless-Package-Version": "4.67.3",
                    "X-Stainless-OS": "Linux", "X-Stainless-Arch": "x64", "X-Stainless-Runtime": "node",
                    "X-Stainless-Runtime-Version": "v20.18.0", "X-Stainless-Retry-Count": "0"}


def generate(bal, body, headers=None, raw=None):
    t0 = time.monotonic()
    r = t.request("POST", bal.url + "/v1/images/generations", json_body=None if raw is not None else body,
                  raw_body=raw, headers=headers if headers is not None else OPEN_WEBUI_HEADERS)
    return r, time.monotonic() - t0


def openai_error(r, status, param="-", code=None):
    """r is `status` with OpenAI's error shape (and that param and code)."""
    if r.status != status or not isinstance(r.json, dict) or not isinstance(r.json.get("error"), dict):
        return False
    e = r.json["error"]
    ok = (isinstance(e.get("message"), str) and e["message"] and isinstance(e.get("type"), str)
          and "param" in e and "code" in e)
    return ok and (param == "-" or e["param"] == param) and (code is None or e["code"] == code)


def b64_images(r):
    """The decoded PNG images of a b64_json answer, or None."""
    try:
        data = r.json["data"]
        assert isinstance(r.json["created"], int) and abs(r.json["created"] - time.time()) < 600
        return [t.decode_png_b64(d["b64_json"]) for d in data]
    except (TypeError, KeyError, AssertionError):
        return None


def url_images(r):
    """(urls, decoded PNGs fetched from them) of a url answer, or (None, None)."""
    try:
        urls = [d["url"] for d in r.json["data"]]
    except (TypeError, KeyError):
        return None, None
    images = []
    for u in urls:
        g = t.request("GET", u, timeout=30)  # no Authorization: the job id is the capability
        images.append(t.try_decode_png(g.raw)[0] if g.status == 200 else None)
    return urls, images


def sized(images, n, w, h):
    return (isinstance(images, list) and len(images) == n
            and all(i is not None and i.width == w and i.height == h for i in images))


def check_open_webui(bal):
    body = {"model": "dall-e-2", "prompt": PROMPT, "n": 1, "size": "512x512", "response_format": "b64_json"}
    r, s = generate(bal, body)
    images = b64_images(r)
    t.check("Open WebUI (model dall-e-2, 512x512, b64_json): 200 with one decodable 512x512 PNG (%.2f s)" % s,
            r.status == 200 and sized(images, 1, 512, 512), t.describe(r))
    # With a gpt-image model Open WebUI sends no response_format (its IMAGE_URL_RESPONSE_MODELS_REGEX_PATTERN,
    # "^gpt-image") and reads a url or b64_json.
    body = {"model": "gpt-image-1", "prompt": PROMPT, "n": 1, "size": "512x512"}
    r, s = generate(bal, body)
    images = b64_images(r)
    t.check("Open WebUI (model gpt-image-1, no response_format): one 512x512 PNG as b64_json (%.2f s)" % s,
            r.status == 200 and sized(images, 1, 512, 512), t.describe(r))
    body = {"model": BASE, "prompt": PROMPT, "n": 2, "size": "256x256", "response_format": "b64_json"}
    r, s = generate(bal, body)
    images = b64_images(r)
    t.check("Open WebUI with a checkpoint as its model, n 2: two 256x256 PNGs (%.2f s)" % s,
            r.status == 200 and sized(images, 2, 256, 256), t.describe(r))
    t.check("the two images differ (seeds drawn apart)",
            images and len(images) == 2 and images[0] and images[1] and images[0].pixels != images[1].pixels)


def check_librechat(bal):
    # DALL-E 3 tool: no response_format, so OpenAI's default (url) for dall-e models.
    body = {"model": "dall-e-3", "quality": "standard", "style": "vivid", "size": "1024x1024", "prompt": PROMPT,
            "n": 1}
    r, s = generate(bal, body, NODE_SDK_HEADERS)
    urls, images = url_images(r)
    t.check("LibreChat DALL-E 3 (1024x1024, no response_format): 200 with a URL that serves a 1024x1024 PNG "
            "(%.2f s)" % s, r.status == 200 and sized(images, 1, 1024, 1024), (t.describe(r), images))
    t.check("the URL is absolute and ends in .png (LibreChat takes the file type from it)",
            urls and urls[0].startswith(bal.url + "/v1/jobs/") and urls[0].endswith("/images/0.png"), urls)
    job_id = urls[0].split("/v1/jobs/")[1].split("/")[0] if urls else ""
    doc = t.get_job(bal.url, job_id) if job_id else None
    t.check("the jobs API shows that job done", (doc or {}).get("status") == "done", doc)
    g = t.request("GET", bal.url + "/v1/jobs/%s/images/0.jpg" % job_id, timeout=10)
    t.check("its image under another type's extension is 404", t.is_sdgate_error(g, 404, "not_found"),
            t.describe(g))
    # gpt-image-1 tool: size auto, extra fields, no response_format: b64_json.
    body = {"model": "gpt-image-1", "prompt": PROMPT, "n": 1, "background": "auto", "output_format": "png",
            "quality": "auto", "size": "auto"}
    r, s = generate(bal, body, NODE_SDK_HEADERS)
    images = b64_images(r)
    t.check("LibreChat gpt-image-1 (size auto, n 1, background/output_format/quality): a 1024x1024 PNG as "
            "b64_json (%.2f s)" % s, r.status == 200 and sized(images, 1, 1024, 1024), t.describe(r))
    t.check("no url in a b64_json answer, no b64_json in a url answer",
            r.status == 200 and all("url" not in d for d in r.json["data"]))


def check_model(bal):
    body = {"model": REFINER_NAME, "prompt": PROMPT, "size": "128x128", "user": "user-42"}
    r, _ = generate(bal, body)
    images = b64_images(r)
    text = (images[0].text if images and images[0] else {}) or {}
    params = " ".join(str(v) for v in text.values())
    t.check("model = a checkpoint's model_name, no response_format: 200 b64_json, and the image's infotext names "
            "that checkpoint",
            r.status == 200 and sized(images, 1, 128, 128) and ("Model: " + REFINER_NAME.split(".")[0]) in params,
            (t.describe(r), params[:300]))
    r, _ = generate(bal, {"model": "stable-diffusion-9000", "prompt": PROMPT})
    t.check("an unknown model: 404 model_not_found, param model, OpenAI's shape",
            openai_error(r, 404, "model", "model_not_found"), t.describe(r))


def check_bad_input(bal):
    long_prompt = "x" * 8193
    cases = [
        ("no prompt", {"n": 1}, 400, "prompt"),
        ("prompt null", {"prompt": None}, 400, "prompt"),
        ("prompt a number", {"prompt": 5}, 400, "prompt"),
        ("prompt empty", {"prompt": ""}, 400, "prompt"),
        ("prompt over 8192 bytes", {"prompt": long_prompt}, 400, "prompt"),
        ("n 0", {"prompt": PROMPT, "n": 0}, 400, "n"),
        ("n 9", {"prompt": PROMPT, "n": 9}, 400, "n"),
        ("n a string", {"prompt": PROMPT, "n": "2"}, 400, "n"),
        ("n 1.5", {"prompt": PROMPT, "n": 1.5}, 400, "n"),
        ("size a number", {"prompt": PROMPT, "size": 512}, 400, "size"),
        ("size without x", {"prompt": PROMPT, "size": "512"}, 400, "size"),
        ("size with a sign", {"prompt": PROMPT, "size": "-512x512"}, 400, "size"),
        ("size with spaces", {"prompt": PROMPT, "size": "512 x 512"}, 400, "size"),
        ("size huge digits", {"prompt": PROMPT, "size": "99999999999x512"}, 400, "size"),
        ("size under 64", {"prompt": PROMPT, "size": "32x32"}, 400, "size"),
        ("size over 2048", {"prompt": PROMPT, "size": "4096x4096"}, 400, "size"),
        ("size not a multiple of 8", {"prompt": PROMPT, "size": "513x512"}, 400, "size"),
        ("response_format png", {"prompt": PROMPT, "response_format": "png"}, 400, "response_format"),
        ("response_format a number", {"prompt": PROMPT, "response_format": 1}, 400, "response_format"),
        ("model a number", {"prompt": PROMPT, "model": 5}, 400, "model"),
        ("model 300 bytes", {"prompt": PROMPT, "model": "m" * 300}, 400, "model"),
    ]
    for name, body, status, param in cases:
        r, _ = generate(bal, body)
        t.check("%s: %d, param %s, OpenAI's error shape" % (name, status, param), openai_error(r, status, param),
                t.describe(r))
    for name, raw in (("a body that is not JSON", b"{prompt"), ("a JSON array", b"[1]"), ("JSON null", b"null"),
                      ("an empty body", b"")):
        r, _ = generate(bal, None, raw=raw)
        t.check("%s: 400 bad_json, OpenAI's shape" % name, openai_error(r, 400, None, "bad_json"), t.describe(r))
    r = t.request("POST", bal.url + "/v1/images/generations", raw_body=b"prompt=x",
                  headers={"Content-Type": "application/x-www-form-urlencoded"})
    t.check("a form body: 415 (sdgate's shape, which carries error.message too)",
            t.is_sdgate_error(r, 415), t.describe(r))
    r = t.request("GET", bal.url + "/v1/images/generations", timeout=10)
    t.check("GET: 405, not a crash", r.status == 405, t.describe(r))


def check_identity(bal):
    h = dict(OPEN_WEBUI_HEADERS, **{"X-Sdgate-Client": "someone"})
    r, _ = generate(bal, {"prompt": PROMPT, "size": "64x64"}, h)
    t.check("X-Sdgate-Client with a Bearer key that is not the admin token: 401 (naming a client is the "
            "admin's), with error.message", r.status == 401 and isinstance((r.json or {}).get("error"), dict)
            and isinstance(r.json["error"].get("message"), str), t.describe(r))
    r, _ = generate(bal, {"prompt": PROMPT, "size": "64x64", "response_format": "b64_json"},
                    {"Content-Type": "application/json"})
    t.check("no Authorization at all: 200 (the caller is its address)", r.status == 200, t.describe(r))


def check_urls(bal):
    """Image URLs name the address the client used: Host here; a --trusted-proxy's X-Forwarded-Proto/Host."""
    body = {"prompt": PROMPT, "size": "64x64", "response_format": "url"}
    fwd = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "images.example.com"}
    r, _ = generate(bal, {"prompt": PROMPT, "size": "64x64"}, dict(OPEN_WEBUI_HEADERS, **fwd))
    urls = [d.get("url") for d in (r.json or {}).get("data", [])] if r.status == 200 else []
    t.check("no model, no response_format: url (OpenAI's default); X-Forwarded-Proto/Host from a peer that is "
            "not a --trusted-proxy are ignored (%s)" % urls[:1],
            urls and urls[0].startswith(bal.url + "/v1/jobs/"), t.describe(r))
    r, _ = generate(bal, body, dict(OPEN_WEBUI_HEADERS, Host="evil.example/<x>"))
    urls = [d.get("url") for d in (r.json or {}).get("data", [])] if r.status == 200 else []
    t.check("a Host that is not host[:port]: relative URLs (%s)" % urls[:1],
            urls and urls[0].startswith("/v1/jobs/") and urls[0].endswith("/images/0.png"), t.describe(r))
    proxied = t.start_balancer("--trusted-proxy", "127.0.0.1", "--backend", bal.fast_url, "--backend",
                               t.static_backend_arg(bal.slow_url, gpu_class="rtx3090"), name="balancer-proxied")
    t.wait_idle_backends(proxied.url, 2)
    r, _ = generate(proxied, body, dict(OPEN_WEBUI_HEADERS, **fwd))
    urls = [d.get("url") for d in (r.json or {}).get("data", [])] if r.status == 200 else []
    t.check("behind a --trusted-proxy: https://images.example.com/v1/jobs/... (%s)" % urls[:1],
            urls and urls[0].startswith("https://images.example.com/v1/jobs/"), t.describe(r))
    # Shut down while a client waits: it gets OpenAI's 503, not a cut connection.
    waiting = t.Background(generate, proxied, body, dict(OPEN_WEBUI_HEADERS, **{"X-Sdgate-Gpus": "rtx3090"}))
    t.wait_until(lambda: t.metric(t.metrics(proxied.url), "sdgate_jobs_running", 0) >= 1, timeout=20)
    proxied.stop()
    res, err, _ = waiting.join()
    t.check("a client waiting while the balancer shuts down: 503 server_error in OpenAI's shape",
            res is not None and openai_error(res[0], 503) and res[0].json["error"]["type"] == "server_error",
            (err, res and t.describe(res[0])))


def check_hangup(bal):
    """A client that hangs up cancels its job, which stops on the backend."""
    body = json.dumps({"prompt": PROMPT, "size": "64x64"}).encode()
    m0 = t.metrics(bal.url)
    s = socket.create_connection(("127.0.0.1", bal.port), timeout=10)
    s.sendall(b"POST /v1/images/generations HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
              b"Authorization: Bearer sk-hangup\r\nX-Sdgate-Gpus: rtx3090\r\nContent-Length: %d\r\n\r\n%s"
              % (len(body), body))
    running = t.wait_until(lambda: t.metric(t.metrics(bal.url), "sdgate_jobs_running", 0) >= 1, timeout=20)
    s.close()
    t0 = time.monotonic()
    c0 = t.metric(m0, "sdgate_jobs_total", 0, outcome="cancelled")
    cancelled = t.wait_until(lambda: t.metric(t.metrics(bal.url), "sdgate_jobs_total", 0, outcome="cancelled") > c0,
                             timeout=20)
    t.check("a client that hangs up mid-job: its job is cancelled (%.2f s after)" % (time.monotonic() - t0),
            running and cancelled)
    t.check("and the slow backend is idle again", t.wait_idle_backends(bal.url, 2, timeout=20), t.board(bal.url))


def check_queue_limit(bal):
    """--max-queue-per-client 1: a key's second request while its first runs (on the slow backend) is 429."""
    slow = dict(NODE_SDK_HEADERS, **{"Authorization": "Bearer sk-one-client", "X-Sdgate-Gpus": "rtx3090"})
    first = t.Background(generate, bal, {"prompt": PROMPT, "size": "64x64", "response_format": "b64_json"}, slow)
    running = t.wait_until(lambda: t.metric(t.metrics(bal.url), "sdgate_jobs_running", 0) >= 1, timeout=20)
    r, _ = generate(bal, {"prompt": PROMPT, "size": "64x64"}, slow)
    t.check("the same key's second request while its first runs: 429 rate_limit_error client_queue_full",
            running and openai_error(r, 429, None, "client_queue_full")
            and r.json["error"]["type"] == "rate_limit_error", t.describe(r))
    r2, _ = generate(bal, {"prompt": PROMPT, "size": "64x64", "response_format": "b64_json"},
                     dict(slow, Authorization="Bearer sk-another-client", **{"X-Sdgate-Gpus": "a100"}))
    t.check("another key meanwhile: 200", r2.status == 200, t.describe(r2))
    res, err, secs = first.join()
    t.check("the first request: 200 after %.2f s on the slow backend" % secs,
            res is not None and res[0].status == 200, (err, res and t.describe(res[0])))


def main():
    fast = t.start_backend("--provider", "oai-fast", "--gpu-class", "a100", name="backend-fast")
    slow = t.start_backend("--pace-ms-per-step", 40, "--provider", "oai-slow", "--gpu-class", "rtx3090",
                           name="backend-slow")
    bal = t.start_balancer("--max-queue-per-client", 1, "--backend", t.static_backend_arg(fast.url, gpu_class="a100"),
                           "--backend", t.static_backend_arg(slow.url, gpu_class="rtx3090"))
    bal.fast_url, bal.slow_url = fast.url, slow.url
    t.check("two backends come up idle", t.wait_idle_backends(bal.url, 2), t.board(bal.url))
    m0 = t.metrics(bal.url)
    check_open_webui(bal)
    check_librechat(bal)
    check_model(bal)
    check_bad_input(bal)
    check_identity(bal)
    check_urls(bal)
    check_queue_limit(bal)
    check_hangup(bal)
    m1 = t.metrics(bal.url)
    acc = t.metric(m1, "sdgate_jobs_accepted_total", 0) - t.metric(m0, "sdgate_jobs_accepted_total", 0)
    done = t.metric(m1, "sdgate_jobs_total", 0, outcome="done") - t.metric(m0, "sdgate_jobs_total", 0,
                                                                              outcome="done")
    failed = t.metric(m1, "sdgate_jobs_total", 0, outcome="failed")
    cancelled = t.metric(m1, "sdgate_jobs_total", 0, outcome="cancelled")
    print("# jobs accepted %d, done %d, failed %d, cancelled %d" % (acc, done, failed, cancelled))
    t.check("no job lost: of 12 accepted, 11 done and the hung-up client's cancelled, none failed, none left running",
            acc == 12 and done == 11 and cancelled == 1 and failed == 0 and t.metric(m1, "sdgate_jobs_running", 0) == 0
            and t.metric(m1, "sdgate_queue_depth", 0) == 0, (acc, done, failed, cancelled))
    r = t.request("GET", bal.url + "/healthz", timeout=10)
    t.check("the balancer still serves after all that (GET /healthz 200)", r.status == 200, t.describe(r))


if __name__ == "__main__":
    t.run(main)
