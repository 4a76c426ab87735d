"""test_gateway_img2img.py — img2img from the browser's websocket: a
`generate` with an `init_image` (a data: URL or bare base64) through
sdgate-gateway, sdgate-balancer (its jobs API) and a native sdgate-backend,
all real processes on loopback.

Covers: the job is done and its image has the asked size (64x96 from a 64x64
init image), at both resize modes sent; bad init images, wrong types and
out-of-range strengths get an `error` naming the field (init_image,
denoising_strength, resize_mode); a message past --max-message that is not a
generate with an init image, and one past --max-image-message, get
`too_large` and the connection stays; a client that starts a 10 MiB message
and stalls is cut after --large-message-timeout-s while the gateway keeps
serving others, and while it holds --max-large-rx-bytes another large
message is refused (`busy`) and then goes through once it is gone; a
large message is validated off the service thread (another connection's
hello is answered meanwhile). Prints
the gateway's RSS around it. Contract: web/README.md (protocol) and
docs/security.md (the bounds)."""

import base64
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sdtest as t  # noqa: E402
from wsclient import WSClient, OP_TEXT, frame  # noqa: E402

TIMEOUT_S = 4  # --large-message-timeout-s
LARGE_RX = 16 << 20  # --max-large-rx-bytes


def connect(gw):
    ws = WSClient("127.0.0.1", gw.port, "/ws", timeout=30)
    ws.send_json({"type": "hello"})
    if not ws.wait_type("welcome", 20):
        raise RuntimeError("no welcome")
    return ws


def gen(id, **over):
    m = {"type": "generate", "id": id, "prompt": "a red circle", "sampler_name": "Euler a", "steps": 3,
         "cfg_scale": 7, "width": 64, "height": 96, "seed": 7, "gpus": []}
    m.update(over)
    return m


def final_of(ws, id, timeout=t.JOB_TIMEOUT_S, start=0):
    return ws.wait_for(lambda m: isinstance(m, dict) and m.get("id") == id
                       and m.get("type") in ("done", "error"), timeout, start)


def next_error(ws, send, timeout=20):
    start = ws.count()
    if isinstance(send, dict):
        ws.send_json(send)
    else:
        ws.send_text(send)
    return ws.wait_for(lambda m: isinstance(m, dict) and m.get("type") == "error", timeout, start)


def is_error(m, code, field=None):
    return (isinstance(m, dict) and m.get("type") == "error" and m.get("code") == code
            and isinstance(m.get("message"), str) and m.get("message") != "" and m.get("field") == field)


def alive(ws):
    start = ws.count()
    ws.send_json({"type": "hello"})
    return ws.wait_type("welcome", 10, start=start) is not None


def b64(data):
    return base64.b64encode(data).decode("ascii")


def check_not_blocking(gw, ws, big_png):
    """An 11.9 MB generate is validated off the service thread: while it is,
    another connection's hello gets its welcome at once."""
    other = connect(gw)
    f = frame(OP_TEXT, json.dumps(gen("nb", init_image=b64(big_png))))
    start = ws.count()
    t0 = time.monotonic()
    ws.send_raw(f)
    lat = []
    while ws.count() == start and time.monotonic() - t0 < 60:
        s = other.count()
        t1 = time.monotonic()
        other.send_json({"type": "hello"})
        other.wait_type("welcome", 30, start=s)
        lat.append(time.monotonic() - t1)
        time.sleep(0.02)
    answered = time.monotonic() - t0
    m = ws.wait_for(lambda m: isinstance(m, dict) and m.get("id") == "nb", 1, start)
    print("# an 11.9 MB generate answered after %.2f s (%s); hello->welcome on another connection meanwhile: "
          "max %.0f ms over %d tries" % (answered, m and m.get("code"), max(lat) * 1000, len(lat)))
    t.check("while an 11.9 MB message is validated, other connections are served (max hello->welcome "
            "latency under half the time it took)", is_error(m, "image_too_large", "init_image")
            and max(lat) < 0.5 * answered, (max(lat), answered))
    other.close()


def main():
    be = t.start_backend("--provider", "img-prov", "--gpu-class", "a100")
    bal = t.start_balancer("--backend", be.url)
    t.check("the balancer sees its backend idle", t.wait_idle_backends(bal.url, 1, 30))
    gw = t.start_gateway("--balancer", bal.url, "--large-message-timeout-s", TIMEOUT_S,
                         "--max-large-rx-bytes", LARGE_RX, wait_board=True)
    src, _ = t.txt2img(be.url, t.small_job(prompt="a red circle on a blue background", seed=99, steps=3))
    init_png = t.images_of(src)[0]
    data_url = "data:image/png;base64," + b64(init_png)

    ws = connect(gw)
    welcome = ws.wait_type("welcome", 5) or {}
    lim = welcome.get("limits") or {}
    t.check("welcome.limits: max_init_image_bytes 8 MiB, max_image_message, init_image_types",
            lim.get("max_init_image_bytes") == 8 << 20 and lim.get("max_image_message") == 12 << 20
            and lim.get("init_image_types") == ["image/png", "image/jpeg", "image/webp"], lim)

    # ------------------------------------------------------------ img2img done, the asked size
    for id, image, mode in (("i1", data_url, 0), ("i2", b64(init_png), 1)):
        start = ws.count()
        ws.send_json(gen(id, init_image=image, denoising_strength=0.5, resize_mode=mode))
        m = final_of(ws, id, start=start)
        ok = t.check("generate %s with an init_image (%s, resize_mode %d) → done" % (
            id, "data: URL" if image.startswith("data:") else "bare base64", mode),
            isinstance(m, dict) and m.get("type") == "done", m)
        if ok:
            im = t.decode_png(base64.b64decode(m["image"]))
            print("# %s: %dx%d from a 64x64 init image, inference %s ms" % (id, im.width, im.height,
                                                                             m.get("inference_ms")))
            t.check("its image is 64x96 as asked", (im.width, im.height) == (64, 96), (im.width, im.height))

    # ------------------------------------------------------------ bad input names the field
    big_png = b"\x89PNG\r\n\x1a\n" + b"\0" * ((17 << 19) - 8)  # 8.5 MiB decoded: the message is 11.3 MB
    cases = [
        ("init_image a number", gen("e1", init_image=123), "invalid", "init_image"),
        ("init_image a data: URL of text/html", gen("e2", init_image="data:text/html;base64," + b64(init_png)),
         "bad_image", "init_image"),
        ("init_image not base64", gen("e3", init_image="%%% not base64 at all %%%"), "bad_image", "init_image"),
        ("init_image base64 of text", gen("e4", init_image=b64(b"just some text, long enough to look")),
         "bad_image", "init_image"),
        ("init_image of 8.5 MiB", gen("e5", init_image=b64(big_png)), "image_too_large", "init_image"),
        ("denoising_strength a string", gen("e6", init_image=data_url, denoising_strength="0.5"), "invalid",
         "denoising_strength"),
        ("denoising_strength 1.5", gen("e7", init_image=data_url, denoising_strength=1.5), "invalid",
         "denoising_strength"),
        ("resize_mode 7", gen("e8", init_image=data_url, resize_mode=7), "invalid", "resize_mode"),
        ("resize_mode 1.5", gen("e9", init_image=data_url, resize_mode=1.5), "invalid", "resize_mode"),
    ]
    for name, msg, code, field in cases:
        m = next_error(ws, msg)
        t.check("%s → error %s on %s" % (name, code, field), is_error(m, code, field) and m.get("id") == msg["id"],
                m)
    m = next_error(ws, {"type": "hello", "pad": "x" * (2 << 20)})
    t.check("a 2 MiB message that is not a generate with an init_image → too_large", is_error(m, "too_large"), m)
    m = next_error(ws, gen("e10", prompt="p", pad="x" * (2 << 20)))
    t.check("a 2 MiB generate without an init_image → too_large", is_error(m, "too_large"), m)
    m = next_error(ws, gen("e11", init_image=b64(b"\x89PNG\r\n\x1a\n" + b"\0" * (10 << 20))))
    t.check("a 13.3 MB message (past --max-image-message) → too_large", is_error(m, "too_large"), m)
    t.check("the connection is still open after all that", alive(ws))
    check_not_blocking(gw, ws, big_png)

    # ------------------------------------------------------------ a stalled huge message
    rss0 = t.proc_rss_mib(gw.proc.pid)
    huge = frame(OP_TEXT, b'{"type":"generate","id":"s","prompt":"p","init_image":"' + b"A" * (10 << 20) + b'"}')
    staller = WSClient("127.0.0.1", gw.port, "/ws", timeout=30)
    staller.send_raw(huge[:9 << 20])  # 9 MiB of a 10 MiB message, then nothing
    t0 = time.monotonic()
    time.sleep(0.5)
    start = ws.count()
    ws.send_json(gen("during", init_image=data_url, denoising_strength=0.5))
    m = final_of(ws, "during", start=start)
    took = time.monotonic() - t0
    t.check("while a client stalls in a 10 MiB message, another's img2img is done", isinstance(m, dict)
            and m.get("type") == "done", m)
    rss1 = t.proc_rss_mib(gw.proc.pid)
    other = WSClient("127.0.0.1", gw.port, "/ws", timeout=30)
    start = other.count()
    other.send_raw(huge)
    m = other.wait_for(lambda m: isinstance(m, dict) and m.get("type") == "error", 30, start)
    busy_in = time.monotonic() - t0
    print("# a second 10 MiB message while the staller holds its buffer: %s after %.1f s" % (
        m and m.get("code"), busy_in))
    if busy_in < TIMEOUT_S:
        t.check("another large message meanwhile is refused: busy (--max-large-rx-bytes)", is_error(m, "busy"), m)
    closed = staller.wait_closed(TIMEOUT_S + 30)
    cut_after = time.monotonic() - t0
    print("# the stalled client was cut after %.1f s (--large-message-timeout-s %d); gateway RSS %s MiB before, "
          "%s MiB while it stalled" % (cut_after, TIMEOUT_S, rss0, rss1))
    t.check("the stalled client is closed after --large-message-timeout-s", closed and cut_after < TIMEOUT_S + 30,
            cut_after)
    start = other.count()
    other.send_raw(huge)
    m = other.wait_for(lambda m: isinstance(m, dict) and m.get("type") == "error", 30, start)
    t.check("once it is gone a large message goes through again (here: an invalid image, bad_image)",
            is_error(m, "bad_image", "init_image"), m)
    t.check("the gateway still answers /healthz", t.request("GET", gw.url + "/healthz").status == 200)
    t.check("the first connection is still open", alive(ws))
    print("# the img2img job during the stall took %.1f s" % took)
    staller.abort()
    other.close()
    ws.close()


if __name__ == "__main__":
    t.run(main)
