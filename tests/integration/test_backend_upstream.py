"""test_backend_upstream.py — sdgate-backend as an upstream adapter: backend
A runs the native engine, backend B forwards to it with --upstream. B must
return A's images byte for byte with B's identity in info.sdgate, pass
/progress and /interrupt through to A, and answer a JSON 502 while A is
down without going down itself. Contract: ../../README.md "sdgate-backend",
../../docs/operators.md "In front of your own AUTOMATIC1111, Forge or SD.Next"."""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sdtest as t  # noqa: E402

PACE_MS = 100


def wait_for_step(be, job, min_step, timeout=30):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline and not job.done():
        r = t.request("GET", be.url + "/sdapi/v1/progress?skip_current_image=true", timeout=10)
        last = r.json
        st = r.json.get("state") if isinstance(r.json, dict) else None
        if isinstance(st, dict) and t.is_int(st.get("sampling_step")) and st["sampling_step"] >= min_step:
            return r.json
        time.sleep(0.05)
    return None if last is None else {"last": last}


def main():
    a = t.start_backend("--provider", "native-prov", "--location", "Here, DE", "--pace-ms-per-step", str(PACE_MS),
                        name="backend-A-native")
    b = t.start_backend("--upstream", a.url, "--provider", "upstream-prov", "--location", "There, FR",
                        "--gpu-class", "rtx3090", name="backend-B-upstream")

    r = t.request("GET", b.url + "/sdgate/v1/info", timeout=30)
    info = r.json if isinstance(r.json, dict) else {}
    t.check("B's /sdgate/v1/info says engine 'upstream'", r.status == 200 and info.get("engine") == "upstream",
            t.describe(r))
    t.check("B's /sdgate/v1/info has B's identity (provider, location, gpu_class)",
            (info.get("provider"), info.get("location"), info.get("gpu_class"))
            == ("upstream-prov", "There, FR", "rtx3090"), t.describe(r))
    r = t.request("GET", a.url + "/sdgate/v1/info", timeout=30)
    t.check("A's /sdgate/v1/info says a native engine",
            r.status == 200 and isinstance(r.json, dict) and r.json.get("engine") not in (None, "", "upstream"),
            t.describe(r))

    r = t.request("GET", b.url + "/sdapi/v1/samplers", timeout=30)
    names = [s.get("name") for s in r.json] if isinstance(r.json, list) else []
    t.check("B's /sdapi/v1/samplers lists A1111 samplers ('Euler a', 'DPM++ 2M')",
            r.status == 200 and "Euler a" in names and "DPM++ 2M" in names, t.describe(r))

    body = {"prompt": "an orange lighthouse at dusk", "seed": 77, "steps": 6, "width": 64, "height": 64,
            "sampler_name": "DPM++ 2M Karras"}
    rb, _ = t.txt2img(b.url, body)
    ra, _ = t.txt2img(a.url, body)
    ib = t.images_of(rb)
    t.check("txt2img through B answers 200 with one PNG",
            rb.status == 200 and ib and len(ib) == 1 and t.try_decode_png(ib[0])[0] is not None, t.describe(rb))
    t.check("B returns A's image: same PNG bytes as asking A directly",
            ra.status == 200 and ib and ib == t.images_of(ra), "A: %s / B: %s" % (t.describe(ra), t.describe(rb)))
    info_b = t.info_of(rb) or {}
    info_a = t.info_of(ra) or {}
    sg = info_b.get("sdgate") if isinstance(info_b.get("sdgate"), dict) else {}
    t.check("info.sdgate.provider through B is 'upstream-prov'", sg.get("provider") == "upstream-prov", sg)
    t.check("info.sdgate.location through B is B's", sg.get("location") == "There, FR", sg)
    t.check("info.sdgate.inference_time through B is a float > 0",
            isinstance(sg.get("inference_time"), float) and sg["inference_time"] > 0, sg)
    t.check("info through B keeps A1111's keys (seed 77, all_seeds [77], steps 6, infotexts)",
            info_b.get("seed") == 77 and info_b.get("all_seeds") == [77] and info_b.get("steps") == 6
            and isinstance(info_b.get("infotexts"), list) and len(info_b["infotexts"]) == 1, t.short(info_b))
    t.check("asking A directly reports A's provider", (info_a.get("sdgate") or {}).get("provider") == "native-prov",
            info_a.get("sdgate"))

    # img2img and hires fix pass through to A as they are (issue 12 item 5)
    if ra.status == 200:
        i2i = dict(body, steps=3, init_images=[ra.json["images"][0]], denoising_strength=0.6)
        rb2 = t.request("POST", b.url + "/sdapi/v1/img2img", json_body=i2i, timeout=60)
        ra2 = t.request("POST", a.url + "/sdapi/v1/img2img", json_body=i2i, timeout=60)
        t.check("img2img through B answers A's image (same PNG bytes as asking A)",
                rb2.status == 200 and ra2.status == 200 and t.images_of(rb2) == t.images_of(ra2),
                "A: %s / B: %s" % (t.describe(ra2), t.describe(rb2)))
        hr = dict(body, steps=2, enable_hr=True, hr_scale=1.5, hr_second_pass_steps=1, denoising_strength=0.5)
        rb3, _ = t.txt2img(b.url, hr)
        im = t.try_decode_png(t.images_of(rb3)[0])[0] if rb3.status == 200 and t.images_of(rb3) else None
        t.check("txt2img with enable_hr through B: A's hires image (96x96)",
                im is not None and (im.width, im.height) == (96, 96), t.describe(rb3))

    r = t.request("POST", b.url + "/sdapi/v1/txt2img", json_body=dict(body, sampler_name="Bogus Sampler"), timeout=60)
    t.check("an unknown sampler through B -> 404 {\"detail\": \"Sampler not found\"}",
            r.status == 404 and r.json == {"detail": "Sampler not found"}, t.describe(r))
    r = t.request("POST", b.url + "/sdapi/v1/txt2img", json_body=dict(body, steps=0), timeout=60)
    t.check("steps 0 through B -> 422 with loc ['body', 'steps']",
            r.status == 422 and isinstance(r.json, dict) and isinstance(r.json.get("detail"), list)
            and any(isinstance(e, dict) and e.get("loc") == ["body", "steps"] for e in r.json["detail"]),
            t.describe(r))

    # progress and interrupt through B reach A.
    long_body = {"prompt": "a long job through the adapter", "seed": 8, "steps": 30, "width": 64, "height": 64}
    job = t.Background(t.txt2img, b.url, long_body)
    p = wait_for_step(b, job, 3)
    ok = isinstance(p, dict) and "state" in p
    t.check("B's /progress shows A's running job (sampling_step >= 3, progress > 0)",
            ok and t.is_number(p.get("progress")) and p["progress"] > 0, p)
    t.check("B's /progress reports the job's 30 sampling_steps",
            ok and isinstance(p.get("state"), dict) and p["state"].get("sampling_steps") == 30, p)
    t_int = time.monotonic()
    r = t.request("POST", b.url + "/sdapi/v1/interrupt", timeout=10)
    t.check("POST /sdapi/v1/interrupt through B answers 200 {}", r.status == 200 and r.json == {}, t.describe(r))
    res, err, secs = job.join()
    t_end = time.monotonic()
    reply = res[0] if res else None
    t.check("the job through B returns 200 with an image after the interrupt",
            reply is not None and reply.status == 200 and len(t.images_of(reply) or []) == 1,
            t.describe(reply) if reply else repr(err))
    t.check("the interrupt reached A: the job ended well before its 3 s of pace (< 1.5 s after interrupt)",
            t_end - t_int < 1.5, "%.2f s after interrupt, %.2f s in all" % (t_end - t_int, secs or -1))
    rb2, _ = t.txt2img(b.url, body)
    t.check("the next job through B runs normally (same PNG bytes as before)",
            rb2.status == 200 and t.images_of(rb2) == ib, t.describe(rb2))

    # A dies in the middle of a job forwarded by B: B's client gets a JSON 502.
    long_body = dict(long_body, seed=9)
    job = t.Background(t.txt2img, b.url, long_body, timeout=60)
    p = wait_for_step(b, job, 3)
    t.check("a second long job through B is running on A", isinstance(p, dict) and "state" in p, p)
    a.kill()
    t_kill = time.monotonic()
    res, err, _ = job.join(timeout=60)
    reply = res[0] if res else None
    t.check("A killed mid-job: B answers the job's client with a JSON 502 {detail}",
            reply is not None and reply.status == 502 and isinstance(reply.json, dict) and "detail" in reply.json,
            t.describe(reply) if reply else repr(err))
    t.check("... within 5 s of A's death", job.t1 is not None and job.t1 - t_kill < 5,
            job.t1 and "%.1f s" % (job.t1 - t_kill))

    # A stays down: B answers 502 JSON and keeps serving.
    for i in range(2):
        try:
            r, secs = t.txt2img(b.url, body, timeout=60)
            t.check("with A down, txt2img through B answers 502 with a JSON {detail} (try %d)" % (i + 1),
                    r.status == 502 and isinstance(r.json, dict) and "detail" in r.json,
                    "%s after %.1f s" % (t.describe(r), secs))
        except Exception as e:  # noqa: BLE001
            t.check("with A down, txt2img through B answers 502 with a JSON {detail} (try %d)" % (i + 1),
                    False, repr(e))
        r = t.request("GET", b.url + "/internal/ping", timeout=10)
        t.check("with A down, B's /internal/ping still answers 200 (try %d)" % (i + 1), r.status == 200,
                t.describe(r))
    r = t.request("GET", b.url + "/sdapi/v1/progress?skip_current_image=true", timeout=30)
    t.check("with A down, B's /progress answers JSON (no hang, no crash)", r.is_json, t.describe(r))

    # A comes back on the same port: B serves again, the same image as before.
    a2 = t.start_backend("--provider", "native-prov", name="backend-A-restarted", port=a.port)
    rb3, _ = t.txt2img(b.url, body)
    t.check("after A restarts on its port, txt2img through B answers 200 with A's image again",
            rb3.status == 200 and t.images_of(rb3) == ib, t.describe(rb3))
    b.stop()
    a2.stop()


if __name__ == "__main__":
    t.run(main)
