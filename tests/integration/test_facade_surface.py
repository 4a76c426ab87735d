"""test_facade_surface.py — the A1111 façade's client surface beyond
txt2img (issue 12 item 3), over one native backend and the stand-in plain
A1111 1.10 (a1111_standin.py):

- POST /sdapi/v1/options answers 200 null, also with no Content-Type (as Dify
  sends it); its sd_model_checkpoint becomes *that client's* default: GET
  /options shows it to that client only, and that client's later txt2img that
  names no checkpoint runs on a backend that offers it (and reaches it in
  override_settings); another client's choice is its own. The other keys (a
  whole GET /options posted back, as Open WebUI does) are accepted; an unknown
  checkpoint gets 422 naming the field; a body that is not an object 422;
- POST /sdapi/v1/interrupt: the caller's running façade txt2img answers 200
  with what was made (A1111's behaviour; it was 409), its queued one 200 with
  no image; DELETE /v1/jobs/{id} keeps its contract (200 {id, status:
  cancelled}, the job cancelled); /skip answers 200;
- POST /sdapi/v1/png-info reads a façade image's infotext back (info,
  items, parameters as A1111's parse_generation_parameters), bare or as a
  data: URL; non-images, URLs (never fetched) and wrong types get 422;
- a text/plain body still gets 415;
- --api-auth (from a file): every /sdapi route answers 401 with
  WWW-Authenticate: Basic and A1111's detail without the credentials or with
  wrong ones, 200 with either pair; /healthz and /v1/backends are not
  covered; a password under 8 bytes stops the balancer at start (exit 2).
Contract: ../../docs/a1111-facade.md, ../../docs/security.md."""

import base64
import http.client as httpclient
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import a1111_standin  # noqa: E402
import sdtest as t  # noqa: E402

NATIVE_MODEL = "sdgate-procedural-base-v1.builtin [9917535daf]"
SDXL = "sd_xl_base_1.0.safetensors [31e35c80fc]"
KEY_A = {"Authorization": "Bearer surface-client-a-5c1f0e"}
KEY_B = {"Authorization": "Bearer surface-client-b-93d2aa"}
KEY_C = {"Authorization": "Bearer surface-client-c-0b7e41"}  # no default checkpoint


def basic(user, password):
    return {"Authorization": "Basic " + base64.b64encode(("%s:%s" % (user, password)).encode()).decode()}


def post_no_type(url, body, headers=None):
    """POST with no Content-Type header at all (what Dify's httpx post(data=...) sends)."""
    u = url.split("/", 3)
    host, port = u[2].split(":")
    conn = httpclient.HTTPConnection(host, int(port), timeout=60)
    try:
        conn.putrequest("POST", "/" + u[3])
        data = json.dumps(body).encode()
        conn.putheader("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            conn.putheader(k, v)
        conn.endheaders(data)
        resp = conn.getresponse()
        return t.Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
    finally:
        conn.close()


def provider_of(r):
    return ((t.info_of(r) or {}).get("sdgate") or {}).get("provider")


def check_options(bal, record):
    r = post_no_type(bal.url + "/sdapi/v1/options", {"sd_model_checkpoint": "sd_xl_base_1.0"}, KEY_A)
    t.check("POST /options with no Content-Type (Dify's way), model_name: 200 null",
            r.status == 200 and r.raw.strip() == b"null", t.describe(r))
    r = t.request("GET", bal.url + "/sdapi/v1/options", headers=KEY_A)
    t.check("GET /options shows that client its checkpoint, as A1111's title",
            r.status == 200 and (r.json or {}).get("sd_model_checkpoint") == SDXL, t.describe(r))
    r = t.request("POST", bal.url + "/sdapi/v1/options", json_body={"sd_model_checkpoint": NATIVE_MODEL},
                  headers=KEY_B)
    t.check("another client chooses the native checkpoint: 200", r.status == 200, t.describe(r))
    r = t.request("GET", bal.url + "/sdapi/v1/options", headers=KEY_A)
    t.check("... and the first client's choice stays its own",
            (r.json or {}).get("sd_model_checkpoint") == SDXL, t.describe(r))
    r = t.request("GET", bal.url + "/sdapi/v1/options", headers=KEY_B)
    t.check("... the second client sees its own", (r.json or {}).get("sd_model_checkpoint") == NATIVE_MODEL,
            t.describe(r))

    body = t.small_job(prompt="default checkpoint", seed=7, steps=2, sampler_name="Euler")
    r = t.request("POST", bal.url + "/sdapi/v1/txt2img", json_body=body, headers=KEY_A)
    sent = [x for x in a1111_standin.read_records(record) if x["path"] == "/sdapi/v1/txt2img"]
    last = (sent[-1]["body"] if sent else {}) or {}
    t.check("client A's txt2img naming no checkpoint runs on the A1111 that offers its choice",
            r.status == 200 and provider_of(r) == "a1111", (t.describe(r), provider_of(r)))
    t.check("... and reaches it as override_settings.sd_model_checkpoint (not restored afterwards)",
            (last.get("override_settings") or {}).get("sd_model_checkpoint") == "sd_xl_base_1.0"
            and last.get("override_settings_restore_afterwards") is False, last)
    n_before = len(sent)
    for i in range(2):
        r = t.request("POST", bal.url + "/sdapi/v1/txt2img", json_body=dict(body, seed=8 + i), headers=KEY_B)
        t.check("client B's txt2img (%d) runs on the native backend it chose" % (i + 1),
                r.status == 200 and provider_of(r) == "native", (t.describe(r), provider_of(r)))
    sent = [x for x in a1111_standin.read_records(record) if x["path"] == "/sdapi/v1/txt2img"]
    t.check("... none of B's reached the A1111", len(sent) == n_before, len(sent) - n_before)

    # Open WebUI's way: GET the options, change the checkpoint, POST the whole object back.
    r = t.request("GET", bal.url + "/sdapi/v1/options", headers=KEY_B)
    whole = dict(r.json or {}, sd_model_checkpoint=SDXL, outdir_samples="/etc", samples_save=True)
    r = t.request("POST", bal.url + "/sdapi/v1/options", json_body=whole, headers=KEY_B)
    t.check("POST /options with a whole options object (Open WebUI): 200 null", r.status == 200
            and r.raw.strip() == b"null", t.describe(r))
    opts = [x for x in a1111_standin.read_records(record) if x["path"] == "/sdapi/v1/options"
            and x["method"] == "POST"]
    t.check("no client's options reach a provider", not any("outdir_samples" in (x["body"] or {}) for x in opts),
            opts[-3:])

    r = t.request("POST", bal.url + "/sdapi/v1/options", json_body={"sd_model_checkpoint": "no-such-model"})
    d = (r.json or {}).get("detail") if isinstance(r.json, dict) else None
    t.check("an unknown checkpoint: 422 naming sd_model_checkpoint",
            r.status == 422 and isinstance(d, list) and d and d[0].get("loc") == ["body", "sd_model_checkpoint"],
            t.describe(r))
    for raw, what in ((b"[1, 2]", "a list"), (b'{"sd_model_checkpoint": ', "cut JSON"),
                      (b'{"sd_model_checkpoint": 5}', "a number as checkpoint"),
                      (json.dumps({"sd_model_checkpoint": "x" * 300}).encode(), "a 300-byte checkpoint")):
        r = t.request("POST", bal.url + "/sdapi/v1/options", raw_body=raw)
        t.check("POST /options with %s: 422 with a detail list" % what,
                r.status == 422 and isinstance((r.json or {}).get("detail"), list), t.describe(r))
    r = t.request("POST", bal.url + "/sdapi/v1/options", raw_body=b'{"sd_model_checkpoint": "x"}',
                  headers={"Content-Type": "text/plain"})
    t.check("a text/plain body still gets 415", r.status == 415, t.describe(r))


def wait_running(bal, headers, min_step=2, timeout=20):
    def running():
        p = t.request("GET", bal.url + "/sdapi/v1/progress", headers=headers, timeout=5).json or {}
        return p.get("state", {}).get("sampling_step", 0) >= min_step and p
    return t.wait_until(running, timeout, 0.05)


def check_interrupt(bal):
    slow = t.small_job(prompt="interrupt me", seed=11, steps=40)
    hdr = dict(KEY_C, **{"X-Sdgate-Gpus": "a100"})  # the native backend (100 ms a step)
    job = t.Background(t.request, "POST", bal.url + "/sdapi/v1/txt2img", json_body=slow, headers=hdr)
    p = wait_running(bal, KEY_C)
    t.check("the slow façade job runs (progress from the caller's key)", bool(p), p)
    queued = t.Background(t.request, "POST", bal.url + "/sdapi/v1/txt2img",
                          json_body=dict(slow, seed=12), headers=hdr)
    time.sleep(0.5)
    t0 = time.monotonic()
    r = t.request("POST", bal.url + "/sdapi/v1/interrupt", headers=KEY_C)
    t.check("POST /sdapi/v1/interrupt: 200 {}", r.status == 200 and r.json == {}, t.describe(r))
    res, err, secs = job.join(30)
    waited = time.monotonic() - t0
    print("# interrupted at step %s of 40; the waiting txt2img answered %.2f s after the interrupt"
          % ((p or {}).get("state", {}).get("sampling_step"), waited))
    imgs = t.images_of(res) if res is not None else None
    t.check("the interrupted txt2img answers 200 with what was made (one image), as A1111",
            res is not None and res.status == 200 and imgs and len(imgs) == 1, err or t.describe(res))
    t.check("... well before its 40 steps (4 s) would have ended", waited < 3.5, waited)
    sd = ((t.info_of(res) or {}).get("sdgate") or {}) if res is not None else {}
    d = t.get_job(bal.url, sd.get("job_id", "0" * 32))
    t.check("... and the jobs API shows that job done", d is not None and d.get("status") == "done", d)
    res, err, _ = queued.join(30)
    t.check("the caller's queued txt2img answers 200 with no image",
            res is not None and res.status == 200 and (res.json or {}).get("images") == [],
            err or t.describe(res))

    # Interrupted as soon as it is dispatched: the interrupt may reach the
    # backend before the job has started there; it is sent again.
    job = t.Background(t.request, "POST", bal.url + "/sdapi/v1/txt2img", json_body=dict(slow, seed=14), headers=hdr)
    t.wait_until(lambda: t.request("GET", bal.url + "/sdapi/v1/progress", headers=KEY_C, timeout=5).json
                 ["state"]["job_count"] == 1, 20, 0.01)
    t0 = time.monotonic()
    t.request("POST", bal.url + "/sdapi/v1/interrupt", headers=KEY_C)
    res, err, _ = job.join(30)
    waited = time.monotonic() - t0
    info = t.info_of(res) if res is not None else None
    print("# interrupted right after dispatch: answered %.2f s later, %s" % (waited, info and info.get("infotexts")))
    t.check("a txt2img interrupted right after dispatch answers 200 early (%.2f s; an image if it had started, "
            "none if still queued)" % waited, res is not None and res.status == 200
            and len(t.images_of(res) or []) in (0, 1) and waited < 3.5, err or t.describe(res))

    job = t.Background(t.request, "POST", bal.url + "/sdapi/v1/txt2img", json_body=dict(slow, seed=13), headers=hdr)
    wait_running(bal, KEY_C, 1)
    r = t.request("POST", bal.url + "/sdapi/v1/skip", headers=KEY_C)
    t.check("POST /sdapi/v1/skip: 200", r.status == 200, t.describe(r))
    res, err, _ = job.join(30)
    t.check("a skipped one-image txt2img answers 200 (A1111 skips to the end of its only image)",
            res is not None and res.status == 200, err or t.describe(res))


def check_jobs_cancel(bal):
    slow = t.small_job(prompt="cancel me", seed=21, steps=40)
    r = t.submit_job(bal.url, dict(slow, gpus=["a100"]))
    jid = (r.json or {}).get("id")
    t.wait_until(lambda: (t.get_job(bal.url, jid) or {}).get("status") == "running", 20)
    r = t.request("DELETE", bal.url + "/v1/jobs/" + jid)
    t.check("DELETE /v1/jobs/{id} keeps its contract: 200 {id, status: cancelled}",
            r.status == 200 and r.json == {"id": jid, "status": "cancelled"}, t.describe(r))
    t.check("... and the job is cancelled", (t.get_job(bal.url, jid) or {}).get("status") == "cancelled",
            t.get_job(bal.url, jid))


def check_png_info(bal):
    r = t.request("POST", bal.url + "/sdapi/v1/txt2img", json_body=t.small_job(prompt="png info", seed=31, steps=2),
                  headers={"X-Sdgate-Gpus": "a100"})
    img = ((r.json or {}).get("images") or [""])[0]
    infotext = ((t.info_of(r) or {}).get("infotexts") or [""])[0]
    for prefix, what in (("data:image/png;base64,", "a data: URL (webuiapi)"), ("", "bare base64")):
        r = t.request("POST", bal.url + "/sdapi/v1/png-info", json_body={"image": prefix + img})
        j = r.json if isinstance(r.json, dict) else {}
        t.check("POST /sdapi/v1/png-info with %s: 200 {info, items, parameters}" % what,
                r.status == 200 and set(j) == {"info", "items", "parameters"}, t.describe(r))
        t.check("... info is the image's infotext (the txt2img's infotexts[0])", j.get("info") == infotext,
                (j.get("info"), infotext))
        p = j.get("parameters") or {}
        t.check("... parameters parsed as A1111's (Prompt, Seed 31 as a string, Size-1 64, Clip skip 1)",
                p.get("Prompt") == "png info" and p.get("Seed") == "31" and p.get("Size-1") == "64"
                and p.get("Clip skip") == "1", p)
    r = t.request("POST", bal.url + "/sdapi/v1/png-info", json_body={"image": ""})
    t.check("png-info of an empty image: 200 with info \"\"", r.status == 200 and (r.json or {}).get("info") == "",
            t.describe(r))
    bad = [({"image": base64.b64encode(b"<html>not an image</html>").decode()}, "non-image base64"),
           ({"image": "not base64 at all!"}, "text that is not base64"),
           ({"image": "http://169.254.169.254/latest/meta-data"}, "a URL (never fetched)"),
           ({"image": 5}, "a number"), ({}, "no image"), ([1], "a list")]
    for body, what in bad:
        r = t.request("POST", bal.url + "/sdapi/v1/png-info", json_body=body)
        d = (r.json or {}).get("detail") if isinstance(r.json, dict) else None
        t.check("png-info with %s: 422 with a detail list" % what, r.status == 422 and isinstance(d, list),
                t.describe(r))
    r = t.request("POST", bal.url + "/sdapi/v1/png-info", raw_body=b'{"image": "' + b"A" * (2 << 20) + b'"}')
    t.check("png-info with a 2 MiB body: 413", r.status == 413, t.describe(r))


def check_api_auth(be_url, tmp):
    path = os.path.join(tmp, "api-auth")
    with open(path, "w") as f:
        f.write("alice:wonderland-1,bob:builder-42\n")
    bal = t.start_balancer("--api-auth-file", path, "--backend", be_url + "#provider=native&gpu_class=a100",
                           name="balancer-auth")
    t.check("the --api-auth balancer's backend comes up", t.wait_idle_backends(bal.url, 1), t.board(bal.url))
    wrong = [({}, "no Authorization"), (basic("alice", "wonderland-2"), "a wrong password"),
             (basic("mallory", "wonderland-1"), "an unknown user"), (KEY_A, "a Bearer key"),
             ({"Authorization": "Basic !!!"}, "broken base64"), ({"Authorization": "Basic "}, "empty Basic")]
    for hdr, what in wrong:
        for method, path_ in (("GET", "/sdapi/v1/options"), ("POST", "/sdapi/v1/txt2img"),
                              ("GET", "/sdapi/v1/sd-models")):
            r = t.request(method, bal.url + path_, json_body={"prompt": "x"} if method == "POST" else None,
                          headers=hdr)
            t.check("--api-auth, %s, %s %s: 401, WWW-Authenticate: Basic, A1111's detail" % (what, method, path_),
                    r.status == 401 and r.headers.get("www-authenticate") == "Basic"
                    and r.json == {"detail": "Incorrect username or password"}, t.describe(r))
    for user, pw in (("alice", "wonderland-1"), ("bob", "builder-42")):
        r = t.request("GET", bal.url + "/sdapi/v1/options", headers=basic(user, pw))
        t.check("--api-auth, %s's credentials: GET /options 200" % user, r.status == 200, t.describe(r))
    r = t.request("POST", bal.url + "/sdapi/v1/txt2img", json_body=t.small_job(steps=2),
                  headers=basic("bob", "builder-42"))
    t.check("--api-auth, bob's credentials: txt2img 200", r.status == 200 and t.images_of(r), t.describe(r))
    for path_ in ("/healthz", "/v1/backends"):
        r = t.request("GET", bal.url + path_)
        t.check("--api-auth does not cover %s (200 without credentials)" % path_, r.status == 200, t.describe(r))
    bal.stop()
    with open(path, "w") as f:
        f.write("alice:short\n")
    out = t.run_tool([t.balancer_path(), "--api-auth-file", path, "--db", os.path.join(tmp, "x.db"),
                      "--listen", "127.0.0.1:%d" % t.free_port()], timeout=20)
    t.check("--api-auth with a password under 8 bytes: the balancer refuses to start (exit 2)",
            out[0] == 2 and "--api-auth" in out[2], out)


def main():
    a1111, record, be, bal = t.start_native_and_a1111("surface", 100, load_ms=50)
    tmp = t.tmpdir("surface-auth")
    check_options(bal, record)
    check_interrupt(bal)
    check_png_info(bal)
    check_jobs_cancel(bal)
    bal.stop()
    check_api_auth(be.url, tmp)
    a1111.shutdown()


if __name__ == "__main__":
    t.run(main)
