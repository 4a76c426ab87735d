"""test_balancer_img2img.py — the façade's POST /sdapi/v1/img2img and
txt2img's hires fix through the balancer over a native backend: A1111's
answer with the image at the right size, the same PNG the backend gives for
the same body (the seed fixed once), hires fix at 2x, the job log keeping no
init image, and bad input (non-image base64, an oversized image, wrong
types, a mask, bodies past each route's bound) answered in A1111's shape
with nothing lost: the balancer and its backend still run jobs after it.
The jobs API (POST /v1/jobs, what the gateway uses) takes img2img too: the
same image as the façade for the same body, the same bounds (a txt2img body
keeps 1 MiB), and a queued img2img job ends with balancer_restarted after a
restart (its init image is not in the SQLite file) instead of running as a
txt2img.
Contract: ../../docs/a1111-facade.md "img2img and hires fix"."""

import base64
import json
import os
import sqlite3
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sdtest as t  # noqa: E402


def b64(data):
    return base64.b64encode(data).decode("ascii")


def loc(reply):
    try:
        return reply.json["detail"][0]["loc"][-1]
    except (TypeError, KeyError, IndexError, ValueError):
        return None


def stored_doc(db, job_id):
    """The job's document in the balancer's store (SQLite or PostgreSQL), or None yet."""
    try:
        rows = t.db_query(db, "SELECT doc FROM jobs WHERE id = ?", (job_id,))
        return json.loads(rows[0][0]) if rows else None
    except (sqlite3.Error, RuntimeError):
        return None


def main():
    be = t.start_backend("--provider", "p")
    bal = t.start_balancer("--backend", t.static_backend_arg(be.url, provider="img-prov", gpu_class="a100"))
    t.check("the backend comes up idle", t.wait_idle_backends(bal.url, 1), t.board(bal.url))

    src, _ = t.txt2img(be.url, t.small_job(prompt="a red circle on a blue background", seed=99, steps=4))
    init_png = t.images_of(src)[0]
    body = t.small_job(init_images=[b64(init_png)], denoising_strength=0.5, steps=6, seed=321, width=64,
                       height=96)

    r = t.request("POST", bal.url + "/sdapi/v1/img2img", json_body=body)
    direct = t.request("POST", be.url + "/sdapi/v1/img2img", json_body=body)
    ok = t.check("façade POST /sdapi/v1/img2img: 200 with images, parameters, info",
                 r.status == 200 and isinstance(r.json, dict) and all(k in r.json for k in ("images", "parameters",
                                                                                             "info")), t.describe(r))
    if ok:
        im = t.decode_png(t.images_of(r)[0])
        t.check("the image is 64x96", (im.width, im.height) == (64, 96), (im.width, im.height))
        t.check("the same pixels as the backend gives for the same body (seed 321)",
                direct.status == 200 and t.decode_png(t.images_of(direct)[0]).pixels == im.pixels,
                t.describe(direct))
        params = r.json["parameters"]
        t.check("parameters do not echo the init image back (A1111: unless include_init_images)",
                isinstance(params, dict) and params.get("init_images") is None, t.short(params, 200))
        info = t.info_of(r) or {}
        job_id = (info.get("sdgate") or {}).get("job_id")
        t.check("info: denoising_strength 0.5, seed 321, a job id", info.get("denoising_strength") == 0.5
                and info.get("seed") == 321 and job_id, info)
        if job_id:
            doc = t.wait_until(lambda: stored_doc(bal.db, job_id), timeout=10)
            req = (doc or {}).get("request")
            t.check("the job log (the store) keeps no init image, only their count",
                    isinstance(req, dict) and "init_images" not in req and req.get("init_images_omitted") == 1,
                    sorted(req) if isinstance(req, dict) else doc)

    hr = t.small_job(enable_hr=True, hr_scale=2, hr_second_pass_steps=2, denoising_strength=0.5, steps=3)
    r = t.request("POST", bal.url + "/sdapi/v1/txt2img", json_body=hr)
    t.check("façade txt2img with enable_hr: 200, the image at 2x (128x128)",
            r.status == 200 and (t.decode_png(t.images_of(r)[0]).width, t.decode_png(t.images_of(r)[0]).height)
            == (128, 128), t.describe(r))

    good = t.small_job(init_images=[b64(init_png)])
    cases = [
        ("not base64", dict(good, init_images=["%%% not base64 %%%"]), 422, "init_images.0"),
        ("base64 text, not an image", dict(good, init_images=[b64(b"just some text, long enough")]), 422,
         "init_images.0"),
        ("init_images a number", dict(good, init_images=7), 422, "init_images"),
        ("denoising_strength a list", dict(good, denoising_strength=[0.5]), 422, "denoising_strength"),
        ("a 9 MiB image", dict(good, init_images=[b64(b"\x89PNG\r\n\x1a\n" + b"\x00" * (9 << 20))]), 422,
         "init_images.0"),
        ("a mask", dict(good, mask=b64(init_png)), 422, "mask"),
        ("no init image (A1111: 404)", t.small_job(), 404, None),
    ]
    for name, b, status, field in cases:
        r = t.request("POST", bal.url + "/sdapi/v1/img2img", json_body=b)
        t.check("façade img2img, %s: %d%s" % (name, status, " naming " + field if field else ""),
                r.status == status and (field is None or loc(r) == field) and r.is_json and "detail" in r.json,
                t.describe(r))
    # PNG magic bytes pass intake; the backend's decoder refuses the rest
    r = t.request("POST", bal.url + "/sdapi/v1/img2img",
                  json_body=dict(good, init_images=[b64(init_png[:len(init_png) // 2])]))
    t.check("façade img2img, a truncated PNG: the backend's 422 passed on, naming init_images.0",
            r.status == 422 and r.is_json and "init_images.0" in str(r.json.get("detail")), t.describe(r))
    print("# truncated PNG through the façade: %d %s" % (r.status, t.short(r.json, 300)))
    r = t.request("POST", bal.url + "/sdapi/v1/img2img", raw_body=b"{\"prompt\": \"" + b"a" * (48 << 20) + b"\"}")
    t.check("façade img2img, a body just over 48 MiB: JSON 413", r.status == 413 and r.is_json, t.describe(r))
    r = t.request("POST", bal.url + "/sdapi/v1/txt2img", raw_body=b"{\"prompt\": \"" + b"a" * (2 << 20) + b"\"}")
    t.check("façade txt2img keeps its 1 MiB bound: 413 for 2 MiB", r.status == 413, t.describe(r))
    r = t.request("POST", bal.url + "/sdapi/v1/img2img", json_body=body)
    t.check("after all that the façade still runs img2img", r.status == 200, t.describe(r))
    t.check("and the balancer answers /healthz", t.request("GET", bal.url + "/healthz").status == 200)
    check_jobs_api(bal, body, good)
    slow = check_img2img_bound(good)
    check_restart(slow, good)


def check_jobs_api(bal, body, good):
    """POST /v1/jobs with init_images: an img2img job, the façade's image for
    the same body; bad input in sdgate's shape naming the field; the bounds."""
    facade = t.request("POST", bal.url + "/sdapi/v1/img2img", json_body=body)
    r = t.submit_job(bal.url, body)
    jid = r.json.get("id") if r.status == 202 and isinstance(r.json, dict) else None
    t.check("jobs API: POST /v1/jobs with init_images answers 202", jid is not None, t.describe(r))
    d = t.wait_job(bal.url, jid, timeout=60) if jid else None
    t.check("jobs API: the img2img job is done", d is not None and d.get("status") == "done", d)
    imgs = t.job_images(bal.url, d) if d and d.get("status") == "done" else None
    if imgs:
        im = t.decode_png(imgs[0])
        print("# jobs API img2img: %dx%d, %d bytes" % (im.width, im.height, len(imgs[0])))
        t.check("jobs API: the image is 64x96", (im.width, im.height) == (64, 96), (im.width, im.height))
        t.check("jobs API: the same pixels as the façade's img2img for the same body (an img2img, not a txt2img)",
                facade.status == 200 and t.decode_png(t.images_of(facade)[0]).pixels == im.pixels,
                t.describe(facade))
    cases = [
        ("base64 text, not an image", dict(good, init_images=[b64(b"just some text, long enough")]), 422,
         "init_images.0"),
        ("a 9 MiB image", dict(good, init_images=[b64(b"\x89PNG\r\n\x1a\n" + b"\x00" * (9 << 20))]), 422,
         "init_images.0"),
        ("denoising_strength 2", dict(good, denoising_strength=2), 422, "denoising_strength"),
        ("resize_mode \"x\"", dict(good, resize_mode="x"), 422, "resize_mode"),
        # the native engine decodes no WebP (its capabilities say so): no backend here can run it
        ("a WebP init image", dict(good, init_images=[b64(b"RIFF\x24\x00\x00\x00WEBPVP8 " + b"\x00" * 32)]), 422,
         "init_images"),
    ]
    for name, b, status, field in cases:
        r = t.submit_job(bal.url, b, timeout=60)
        field_got = ((r.json or {}).get("error") or {}).get("field") if r.is_json else None
        t.check("jobs API img2img, %s: %d naming %s (sdgate's shape)" % (name, status, field),
                t.is_sdgate_error(r, status) and field_got == field, t.describe(r))
    big = b"{\"prompt\": \"" + b"a" * (2 << 20) + b"\"}"
    r = t.request("POST", bal.url + "/v1/jobs", raw_body=big, headers={"Content-Type": "application/json"})
    t.check("jobs API: a 2 MiB txt2img body is still 413 (only img2img bodies may be larger)",
            t.is_sdgate_error(r, 413, "body_too_large"), t.describe(r))
    r = t.request("POST", bal.url + "/v1/jobs", raw_body=b"{\"prompt\": \"" + b"a" * (48 << 20) + b"\"}",
                  headers={"Content-Type": "application/json"})
    t.check("jobs API: a body over 48 MiB: 413", r.status == 413 and r.is_json, t.describe(r))
    r = t.request("POST", bal.url + "/v1/backends", raw_body=b"{\"url\": \"" + b"a" * (2 << 20) + b"\"}",
                  headers={"Content-Type": "application/json"})
    t.check("another route keeps 1 MiB: POST /v1/backends with 2 MiB is 413", r.status == 413, t.describe(r))


def check_img2img_bound(good):
    """20 img2img at once on a slow backend: 16 held (one running, 15 queued),
    4 answered 429 {"detail": "Too many unfinished img2img jobs..."}; the clients
    then hang up."""
    slow = t.start_backend("--provider", "slow", "--pace-ms-per-step", 500, name="backend-slow")
    bal = t.start_balancer("--backend", t.static_backend_arg(slow.url, provider="slow-prov"), name="balancer-2")
    t.check("the slow backend comes up idle", t.wait_idle_backends(bal.url, 1), t.board(bal.url))
    body = dict(good, steps=20)

    def post():
        try:
            r = t.request("POST", bal.url + "/sdapi/v1/img2img", json_body=body, timeout=4)
            return r.status, (r.json or {}).get("detail") if r.is_json else r.raw
        except OSError:
            return "hung up", None
    jobs = [t.Background(post) for _ in range(20)]
    got = [j.join(30)[0] or ("no answer", None) for j in jobs]
    statuses = [g[0] for g in got]
    print("# 20 img2img at once: %s" % sorted(map(str, statuses)))
    t.check("20 img2img at once on a busy balancer: 16 held, 4 get 429 {\"detail\": ...img2img...}",
            statuses.count(429) == 4 and statuses.count("hung up") == 16
            and all("img2img" in str(d) for st, d in got if st == 429), got)
    r = t.request("POST", bal.url + "/sdapi/v1/txt2img", json_body=t.small_job(steps=1), timeout=90)
    t.check("a txt2img is not bound by it: 200 once the cancelled img2img are drained", r.status == 200,
            t.describe(r))
    return slow


def check_restart(slow, good):
    """A queued jobs-API img2img when the balancer restarts: failed with
    balancer_restarted (its init image was never stored), not run as a
    txt2img; a queued txt2img beside it runs."""
    bal = t.start_balancer("--backend", t.static_backend_arg(slow.url, provider="slow-prov"), name="balancer-3")
    db, port = bal.db, bal.port
    t.check("the slow backend is idle for balancer-3", t.wait_idle_backends(bal.url, 1), t.board(bal.url))
    first = t.submit_job(bal.url, t.small_job(steps=8, seed=1))
    img = t.submit_job(bal.url, dict(good, steps=2, seed=2))
    txt = t.submit_job(bal.url, t.small_job(steps=1, seed=3))
    ids = [r.json.get("id") if r.status == 202 and isinstance(r.json, dict) else None for r in (first, img, txt)]
    t.check("three jobs accepted (a long txt2img, then an img2img and a txt2img queued)", all(ids),
            [t.describe(r) for r in (first, img, txt)])
    if not all(ids):
        return
    d = t.get_job(bal.url, ids[1])
    t.check("the img2img is unfinished before the restart", d and d.get("status") in ("queued", "running"), d)
    t.wait_until(lambda: stored_doc(db, ids[2]), timeout=10)
    bal.kill()
    bal = t.start_balancer("--backend", t.static_backend_arg(slow.url, provider="slow-prov"), name="balancer-3b",
                           db=db, port=port)
    d = t.wait_job(bal.url, ids[1], timeout=60)
    err = (d or {}).get("error") or {}
    print("# queued img2img after a restart: %s %s" % ((d or {}).get("status"), err))
    t.check("after a restart the queued img2img failed with balancer_restarted (not run as a txt2img)",
            d is not None and d.get("status") == "failed" and err.get("code") == "balancer_restarted"
            and "init image" in str(err.get("message")), d)
    d = t.wait_job(bal.url, ids[2], timeout=90)
    t.check("the queued txt2img beside it still runs after the restart", d and d.get("status") == "done", d)


if __name__ == "__main__":
    t.run(main)
