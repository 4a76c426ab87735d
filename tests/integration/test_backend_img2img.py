"""test_backend_img2img.py — POST /sdapi/v1/img2img and txt2img's hires fix
on the native backend: output sizes, determinism (same seed, same pixels),
denoising_strength's two ends (near 0: the init image back; 1: near the
txt2img of the same seed), A1111's four resize modes, hires fix by hr_scale
and hr_resize_x, the features in /sdgate/v1/info, and bad input at the new
route (oversized bodies and images, non-image base64, WebP, corrupt PNGs,
wrong types, a mask): a clear A1111-shaped error each, and the backend
still answers. Metric: mean absolute difference per RGB channel value
(0..255). Small sizes (64..128) keep it quick under ASan."""

import base64
import struct
import time
import zlib

import sdtest as t


def png(width, height, rgb_of):
    """A PNG (RGB8) whose pixel (x, y) is rgb_of(x, y)."""
    rows = b"".join(b"\x00" + bytes(c for x in range(width) for c in rgb_of(x, y)) for y in range(height))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)) +
            chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def b64(data):
    return base64.b64encode(data).decode("ascii")


def pixels(reply, i=0):
    return t.decode_png(t.images_of(reply)[i])


def mad(a, b):
    """Mean |a - b| per RGB value of two decoded images of one size."""
    pa, pb = a.pixels, b.pixels
    return sum(abs(x - y) for x, y in zip(pa, pb)) / len(pa)


def post(url, path, body, **kw):
    t0 = time.monotonic()
    r = t.request("POST", url + path, json_body=body, **kw)
    return r, time.monotonic() - t0


def detail_loc(reply):
    try:
        return reply.json["detail"][0]["loc"][-1], reply.json["detail"][0]["msg"]
    except (TypeError, KeyError, IndexError, ValueError):
        return None, None


def main():
    be = t.start_backend("--provider", "p")
    url = be.url

    info = t.request("GET", url + "/sdgate/v1/info").json
    feats = (info.get("capabilities") or {}).get("features")
    t.check("info's capabilities declare img2img and hires fix", feats == {"img2img": True, "hires_fix": True, "img2img_webp": False}, feats)

    base = {"prompt": "a green triangle on a gray background", "seed": 4321, "steps": 12, "width": 128,
            "height": 128, "sampler_name": "Euler"}
    src, _ = t.txt2img(url, dict(base, prompt="a red circle on a blue background", seed=99))
    init_png = t.images_of(src)[0]
    init = t.decode_png(init_png)
    t2i, _ = t.txt2img(url, base)

    # ---- size and determinism
    body = dict(base, init_images=[b64(init_png)], denoising_strength=0.5, height=96)
    a, sec = post(url, "/sdapi/v1/img2img", body)
    b, _ = post(url, "/sdapi/v1/img2img", body)
    ok = a.status == 200 and b.status == 200
    t.check("img2img answers 200", ok, t.describe(a))
    if ok:
        ia, ib = pixels(a), pixels(b)
        t.check("img2img image is 128x96", (ia.width, ia.height) == (128, 96), (ia.width, ia.height))
        t.check("img2img: same seed, same image", ia.pixels == ib.pixels)
        inf = t.info_of(a)
        t.check("img2img info reports its denoising_strength", inf and inf.get("denoising_strength") == 0.5,
                inf and inf.get("denoising_strength"))
        it = (inf or {}).get("infotexts", [""])[0]
        t.check("img2img infotext: Denoising strength: 0.5, Size: 128x96", "Denoising strength: 0.5," in it
                and "Size: 128x96," in it, it)
        print("# img2img 128x96, 12 steps at 0.5 (7 run): %.2f s" % sec)

    # ---- the two ends of denoising_strength
    lo, _ = post(url, "/sdapi/v1/img2img", dict(base, init_images=[b64(init_png)], denoising_strength=0.02))
    hi, _ = post(url, "/sdapi/v1/img2img", dict(base, init_images=["data:image/png;base64," + b64(init_png)],
                                                 denoising_strength=1.0))
    if lo.status == 200 and hi.status == 200 and t2i.status == 200:
        d_lo = mad(pixels(lo), init)
        d_hi = mad(pixels(hi), pixels(t2i))
        d_init = mad(init, pixels(t2i))
        print("# strength 0.02: mad to the init image %.2f; strength 1: mad to txt2img of the same seed %.2f "
              "(init vs that txt2img %.2f)" % (d_lo, d_hi, d_init))
        t.check("strength 0.02 gives the init image back (mad < 8)", d_lo < 8, d_lo)
        t.check("strength 1 is much nearer the txt2img of the seed than the init is", d_hi < d_init / 2,
                (d_hi, d_init))
    else:
        t.check("strength ends answer 200", False, (t.describe(lo), t.describe(hi)))

    # ---- resize modes: a 192x64 init into 128x128
    wide = png(192, 64, lambda x, y: (255 if x < 64 else 0, 200 if 64 <= x < 128 else 30, 255 if x >= 128 else 0))
    outs = []
    for mode in range(4):
        r, _ = post(url, "/sdapi/v1/img2img", dict(base, init_images=[b64(wide)], denoising_strength=0.05,
                                                    resize_mode=mode, steps=4))
        im = pixels(r) if r.status == 200 else None
        t.check("resize_mode %d answers a 128x128 image" % mode, im and (im.width, im.height) == (128, 128),
                t.describe(r))
        outs.append(im)
    if all(outs):
        # crop and resize keeps the middle third (green) across the width;
        # just resize keeps all three bands
        left = [outs[m].pixels[(64 * 128 + 4) * 3:(64 * 128 + 4) * 3 + 3] for m in range(4)]
        print("# resize modes, pixel (4, 64): just %s, crop %s, fill %s, latent %s" % tuple(tuple(p) for p in left))
        t.check("just resize: the left edge is the red band", left[0][0] > 150 and left[0][1] < 120, tuple(left[0]))
        t.check("crop and resize: the left edge is the green band", left[1][1] > 120 and left[1][0] < 120,
                tuple(left[1]))

    # ---- hires fix
    hr = dict(base, width=64, height=64, enable_hr=True, hr_scale=2, hr_second_pass_steps=4, denoising_strength=0.5)
    h1, sec = post(url, "/sdapi/v1/txt2img", hr)
    h2, _ = post(url, "/sdapi/v1/txt2img", hr)
    if h1.status == 200 and h2.status == 200:
        i1, i2 = pixels(h1), pixels(h2)
        t.check("hires fix 64 -> x2 gives 128x128", (i1.width, i1.height) == (128, 128), (i1.width, i1.height))
        t.check("hires fix: same seed, same image", i1.pixels == i2.pixels)
        print("# hires fix 64->128, 12 + 4 steps: %.2f s" % sec)
        inf = t.info_of(h1) or {}
        it = (inf.get("infotexts") or [""])[0]
        t.check("hires infotext as A1111's: Size: 64x64, Denoising strength: 0.5, Hires upscale: 2, Hires steps: 4, "
                "Hires upscaler: Latent", "Size: 64x64," in it and "Denoising strength: 0.5, Hires upscale: 2, "
                "Hires steps: 4, Hires upscaler: Latent," in it and inf.get("denoising_strength") == 0.5, it)
    else:
        t.check("hires fix answers 200", False, t.describe(h1))
    h3, _ = post(url, "/sdapi/v1/txt2img", dict(hr, hr_resize_x=96, hr_upscaler="Latent (nearest)"))
    t.check("hires fix by hr_resize_x 96 (y by aspect) gives 96x96",
            h3.status == 200 and (pixels(h3).width, pixels(h3).height) == (96, 96), t.describe(h3))
    h4, _ = post(url, "/sdapi/v1/txt2img", dict(hr, width=1024, height=1024, hr_scale=4))
    t.check("hires fix past 2048 answers 422 naming hr_scale",
            h4.status == 422 and detail_loc(h4)[0] == "hr_scale", t.describe(h4))
    h5, _ = post(url, "/sdapi/v1/txt2img", dict(hr, enable_hr=False))
    t.check("enable_hr false: the first pass's size", h5.status == 200 and pixels(h5).width == 64, t.describe(h5))

    # ---- bad input at the new route
    good = dict(base, steps=2, width=64, height=64)
    cases = [
        ("init_images missing (A1111: 404 Init image not found)", dict(good), 404, None),
        ("init_images a string", dict(good, init_images=b64(init_png)), 422, "init_images"),
        ("init_images [42]", dict(good, init_images=[42]), 422, "init_images.0"),
        ("not base64", dict(good, init_images=["this is not base64 at all!!"]), 422, "init_images.0"),
        ("base64 text, not an image", dict(good, init_images=[b64(b"hello, this is plain text, no image")]), 422,
         "init_images.0"),
        ("PNG magic then garbage", dict(good, init_images=[b64(b"\x89PNG\r\n\x1a\n" + b"\x00garbage" * 40)]), 422,
         "init_images.0"),
        ("truncated PNG", dict(good, init_images=[b64(init_png[:len(init_png) // 2])]), 422, "init_images.0"),
        ("WebP", dict(good, init_images=[b64(b"RIFF\x24\x00\x00\x00WEBPVP8 " + b"\x00" * 40)]), 422,
         "init_images.0"),
        ("a 5000x8 PNG", dict(good, init_images=[b64(png(5000, 8, lambda x, y: (1, 2, 3)))]), 422,
         "init_images.0"),
        ("denoising_strength 'abc'", dict(good, init_images=[b64(init_png)], denoising_strength="abc"), 422,
         "denoising_strength"),
        ("denoising_strength 1.5", dict(good, init_images=[b64(init_png)], denoising_strength=1.5), 422,
         "denoising_strength"),
        ("resize_mode 7", dict(good, init_images=[b64(init_png)], resize_mode=7), 422, "resize_mode"),
        ("a mask", dict(good, init_images=[b64(init_png)], mask=b64(init_png)), 422, "mask"),
        ("five init images", dict(good, init_images=[b64(init_png)] * 5), 422, "init_images"),
    ]
    for name, body, status, field in cases:
        r, _ = post(url, "/sdapi/v1/img2img", body)
        loc, msg = detail_loc(r)
        t.check("img2img, %s: %d%s" % (name, status, " naming " + field if field else ""),
                r.status == status and (field is None or loc == field), t.describe(r))
        print("#   %s -> %d %s: %s" % (name, r.status, loc, msg))
    r, _ = post(url, "/sdapi/v1/img2img", "not an object")
    t.check("img2img, a JSON string: 422", r.status == 422, t.describe(r))
    r = t.request("POST", url + "/sdapi/v1/img2img", raw_body=b"{\"init_images\": [")
    t.check("img2img, broken JSON: 422", r.status == 422, t.describe(r))
    big = b64(b"\x89PNG\r\n\x1a\n" + b"\x00" * (9 << 20))
    r, _ = post(url, "/sdapi/v1/img2img", dict(good, init_images=[big]))
    t.check("img2img, a 9 MiB image: 422 naming init_images.0",
            r.status == 422 and detail_loc(r)[0] == "init_images.0", t.describe(r))
    r = t.request("POST", url + "/sdapi/v1/img2img", raw_body=b"{\"prompt\": \"" + b"a" * (48 << 20) + b"\"}")
    t.check("img2img, a body just over 48 MiB: JSON 413", r.status == 413 and r.is_json, t.describe(r))
    r = t.request("POST", url + "/sdapi/v1/txt2img", raw_body=b"{\"prompt\": \"" + b"a" * (2 << 20) + b"\"}")
    t.check("txt2img keeps its 1 MiB bound: 413 for 2 MiB", r.status == 413, t.describe(r))
    r, _ = post(url, "/sdapi/v1/img2img", dict(good, init_images=[b64(init_png)]))
    t.check("the backend still runs img2img after all that", r.status == 200, t.describe(r))
    t.check("the backend still answers ping", t.request("GET", url + "/internal/ping").status == 200)


t.run(main)
