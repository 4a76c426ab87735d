#!/usr/bin/env python3
"""test_balancer_db_outage.py — jobs that finish while the balancer's
PostgreSQL server is down (balancer/results.c, jobs.c jobs_save_again;
docs/operators.md "The balancer's database", docs/jobs-api.md):

  - the balancer that ran one answers it done, its images listed and served
    from its memory, pixel for pixel what the backend renders for the same
    request;
  - once the server is back, its row is written (done, not running, so a
    restarted balancer, or another one sharing the database, does not run it
    again) with its images: a balancer started later on the database serves
    them;
  - images past what may be held (here --result-max-bytes-per-client) are
    dropped: that job is done with "gone": true, and its images answer 410."""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sdtest as t  # noqa: E402

# At 100 ms a step: the first (a 768x768 image, about 0.5 MB: served from
# memory in several 256 KiB chunks) finishes seconds before the second, and
# is the one held.
KEPT_STEPS, DROPPED_STEPS = 30, 80


def row_status(url, jid):
    rows = t.db_query(url, "SELECT status FROM jobs WHERE id = ?", (jid,))
    return rows[0][0] if rows else None


def stored_images(url, jid):
    rows = t.db_query(url, "SELECT count(*) FROM images WHERE job_id = ?", (jid,))
    return int(rows[0][0]) if rows else 0


def image(bal_url, jid, n=0):
    return t.request("GET", bal_url + "/v1/jobs/%s/images/%d" % (jid, n), timeout=60)


def pixels(data):
    try:
        return t.decode_png(data).pixels
    except Exception:  # noqa: BLE001 — not a PNG: no pixels
        return None


def main():
    pg = t.start_postgres()
    url = pg.url(pg.create_database())
    be = t.start_backend("--pace-ms-per-step", 100, "--provider", "outage-prov", "--gpu-class", "l40", name="be-a")
    be2 = t.start_backend("--pace-ms-per-step", 100, "--provider", "outage-prov", "--gpu-class", "l40", name="be-b")
    kept_body = t.small_job(prompt="across an outage", steps=KEPT_STEPS, seed=3, width=768, height=768)
    dropped_body = t.small_job(prompt="past the held images' cap", steps=DROPPED_STEPS, seed=4)
    # What the backend renders for each (the same request, sent straight to it).
    direct = {}
    for name, body in (("kept", kept_body), ("dropped", dropped_body)):
        r, secs = t.txt2img(be.url, body)
        imgs = t.images_of(r) if r.status == 200 else None
        print("# direct render (%s): %d bytes in %.1f s" % (name, len(imgs[0]) if imgs else 0, secs))
        t.check("the backend renders the %s job's image directly" % name, imgs, t.describe(r))
        direct[name] = imgs[0] if imgs else b""
    # Room for the first job's images, not for both (one client: loopback).
    cap = len(direct["kept"]) + len(direct["dropped"]) - 1
    arg = ["--backend", t.static_backend_arg(be.url, provider="outage-prov", gpu_class="l40"),
           "--backend", t.static_backend_arg(be2.url, provider="outage-prov", gpu_class="l40"),
           "--result-max-bytes-per-client", str(cap)]
    bal = t.start_balancer(*arg, name="balancer", db=url)
    t.check("the backends are up", t.wait_idle_backends(bal.url, 2, 30))
    jids = {}
    for name, body in (("kept", kept_body), ("dropped", dropped_body)):
        r = t.submit_job(bal.url, body)
        jids[name] = (r.json or {}).get("id") if r.status == 202 else None
        t.check("a job of %d s is accepted (%s)" % (body["steps"] // 10, name), jids[name] is not None,
                t.describe(r))
    jid, jid2 = jids["kept"], jids["dropped"]
    t.check("…both run", t.wait_until(lambda: all(row_status(url, j) == "running" for j in jids.values()), 10,
                                      0.05), [row_status(url, j) for j in jids.values()])
    pg.stop("fast")

    d = t.wait_job(bal.url, jid, timeout=30)
    t.check("the server down, the job still finishes on its balancer", (d or {}).get("status") == "done", d)
    res = (d or {}).get("result") or {}
    t.check("…its images listed, not gone", len(res.get("images") or []) == 1 and not res.get("gone"), res)
    img = image(bal.url, jid)
    t.check("…and served from the balancer's memory: 200, image/png, the backend's pixels",
            img.status == 200 and img.headers.get("content-type") == "image/png"
            and pixels(img.raw) is not None and pixels(img.raw) == pixels(direct["kept"]), t.describe(img))
    t.check("…byte for byte the file the backend gave", img.raw == direct["kept"], len(img.raw or b""))
    d2 = t.wait_job(bal.url, jid2, timeout=30)
    res2 = (d2 or {}).get("result") or {}
    t.check("a second job past --result-max-bytes-per-client held: done, its image listed, gone",
            (d2 or {}).get("status") == "done" and res2.get("gone") is True and len(res2.get("images") or []) == 1,
            d2)
    img2 = image(bal.url, jid2)
    t.check("…and they answer 410 result_gone", t.is_sdgate_error(img2, 410, "result_gone"), t.describe(img2))
    time.sleep(1)  # a few writes tried again, and failed, meanwhile
    img = image(bal.url, jid)
    t.check("still served while the server stays down", img.status == 200 and img.raw == direct["kept"],
            t.describe(img))
    # The shipped NGINX conf gives every façade request an Idempotency-Key: the façade keeps serving.
    r = t.request("POST", bal.url + "/sdapi/v1/txt2img", json_body=t.small_job(prompt="keyed, server down", seed=5),
                  headers={"Idempotency-Key": "outage-facade-1"}, timeout=30)
    t.check("a façade txt2img with an Idempotency-Key while the server is down: 200 with its image (the key "
            "is not kept)", r.status == 200 and t.images_of(r), t.describe(r))

    pg.start()
    saved = t.wait_until(lambda: row_status(url, jid) == "done" and stored_images(url, jid) == 1, 10, 0.1)
    t.check("the server back, within 10 s its row says done (not running), its image stored", saved,
            (row_status(url, jid), stored_images(url, jid)))
    t.check("…the dropped job's row says done too, no image",
            t.wait_until(lambda: row_status(url, jid2) == "done", 10, 0.1) and stored_images(url, jid2) == 0,
            (row_status(url, jid2), stored_images(url, jid2)))
    img = image(bal.url, jid)
    t.check("its balancer serves the image (now from the database)",
            img.status == 200 and pixels(img.raw) == pixels(direct["kept"]), t.describe(img))
    bal.stop()

    bal2 = t.start_balancer(*arg, name="balancer-2", db=url)
    t.wait_idle_backends(bal2.url, 2, 30)
    time.sleep(5)  # past --lease-s (4 s): the first balancer's unfinished jobs would be taken over by now
    d = t.get_job(bal2.url, jid)
    t.check("a balancer started on the database later does not run it again (done, attempt 1)",
            (d or {}).get("status") == "done" and (d or {}).get("attempt") == 1, d)
    res = (d or {}).get("result") or {}
    t.check("…and lists its image, not gone", len(res.get("images") or []) == 1 and not res.get("gone"), res)
    img = image(bal2.url, jid)
    t.check("…and serves it, pixel-identical to the direct render",
            img.status == 200 and pixels(img.raw) is not None and pixels(img.raw) == pixels(direct["kept"]),
            t.describe(img))
    d2 = t.get_job(bal2.url, jid2)
    t.check("…the dropped job: done, attempt 1, its image listed, gone",
            (d2 or {}).get("status") == "done" and (d2 or {}).get("attempt") == 1
            and ((d2 or {}).get("result") or {}).get("gone") is True
            and len(((d2 or {}).get("result") or {}).get("images") or []) == 1, d2)
    img2 = image(bal2.url, jid2)
    t.check("…which answers 410 result_gone", t.is_sdgate_error(img2, 410, "result_gone"), t.describe(img2))
    bal2.stop()


t.run(main)
