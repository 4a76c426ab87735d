#!/usr/bin/env python3
"""evil_backend.py — a malicious provider for tests: an A1111-like backend
(sdtest.FakeBackend: ping, options, sd-models, progress, interrupt,
/sdgate/v1/info, txt2img, answered as A1111 answers them) that attacks the
balancer through what it sends back, one way per mode:

  gzip-bomb     txt2img: 200 with Content-Encoding: gzip, a few hundred KB
                that inflate to ~200 MiB of JSON (sent whatever the request's
                Accept-Encoding said)
  huge          txt2img: 200, Content-Length 200 MiB of plain JSON, streamed
                until the balancer hangs up
  huge-chunked  the same without a Content-Length (chunked): no size to
                refuse up front, the bytes themselves must be counted
  html-png      txt2img: 200, an "image" data:text/html;base64,... whose bytes
                are the PNG signature and then an HTML page with a script
  evil-preview  txt2img: a valid PNG after 2 s; meanwhile progress answers
                previews that alternate between HTML behind the PNG
                signature (as data:text/html) and a valid PNG
  utf8-cut      txt2img: 400 {"detail": ...} whose 400th byte is inside a
                3-byte UTF-8 character (the balancer keeps 400 bytes of it)
  escapes       terminal escapes (ESC, BEL, C1 CSI) in its identity
                (/sdgate/v1/info provider, gpu) and raw in its txt2img error
  slow          txt2img: answers only after 60 s (a hung provider)

In a test: `evil_backend.start(mode, gpu_class=...)` returns the running
FakeBackend (.url, .txt2img_calls). Alone: `evil_backend.py MODE` prints
its URL and serves until interrupted."""

import base64
import json
import os
import struct
import sys
import time
import zlib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sdtest as t  # noqa: E402

MODES = ("gzip-bomb", "huge", "huge-chunked", "html-png", "evil-preview", "utf8-cut", "escapes", "slow")
BOMB_MIB = 200
HTML = b"<html><body><script>fetch('/steal?c='+document.cookie)</script></body></html>"
ESCAPES = "\x1b[31mRED\x1b]0;owned\x07\x1b[2J\u009b31m"


def png(w=8, h=8, rgb=(200, 30, 30)):
    """A small valid RGB PNG."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    raw = b"".join(b"\0" + bytes(rgb) * w for _ in range(h))
    return (t.PNG_SIGNATURE + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def html_png_b64():
    """The probe's image: data:text/html, PNG magic in front of a page."""
    return "data:text/html;base64," + base64.b64encode(t.PNG_SIGNATURE + HTML).decode()


def answer(images):
    return {"images": images, "parameters": {}, "info": json.dumps({"seed": 1})}


_bomb = []


def gzip_bomb():
    """gzip of {"images": ["AAAA..."]} inflating to BOMB_MIB MiB (made once)."""
    if not _bomb:
        z = zlib.compressobj(9, zlib.DEFLATED, 31)
        parts = [z.compress(b'{"images": ["')]
        block = b"A" * (1 << 20)
        for _ in range(BOMB_MIB):
            parts.append(z.compress(block))
        parts.append(z.compress(b'"], "info": "{}"}'))
        parts.append(z.flush())
        _bomb.append(b"".join(parts))
    return _bomb[0]


def _send_bomb(h, n):
    h.send(200, gzip_bomb(), headers={"Content-Encoding": "gzip"})


def _send_huge(h, n, chunked=False):
    size = BOMB_MIB << 20
    h.send_response(200)
    h.send_header("Content-Type", "application/json")
    h.send_header("Transfer-Encoding" if chunked else "Content-Length", "chunked" if chunked else str(size))
    h.end_headers()
    sent, block = 0, b'{"images": ["' + b"A" * ((1 << 20) - 13)
    try:
        while sent < size:
            h.wfile.write(b"%x\r\n%s\r\n" % (len(block), block) if chunked else block)
            sent += len(block)
            block = b"A" * (1 << 20)
    except OSError:
        pass  # the balancer hung up: what it should do
    h.close_connection = True


def _preview_progress(n):
    image = html_png_b64() if n % 2 else base64.b64encode(png(4, 4, (0, 90, 200))).decode()
    return {"progress": min(n, 8) / 8.0, "eta_relative": 1.0, "state": {
        "skipped": False, "interrupted": False, "job": "job", "job_count": 1, "job_timestamp": "0",
        "job_no": 0, "sampling_step": min(n, 8), "sampling_steps": 8}, "current_image": image, "textinfo": None}


def utf8_cut_body():
    """{"detail": ...}: 399 ASCII bytes, then 3-byte characters from byte 399."""
    head = b'{"detail":"'
    return head + b"a" * (399 - len(head)) + "\u20ac".encode() * 200 + b'"}'


def start(mode, gpu_class="evil", provider="Evil Inc"):
    """A FakeBackend behaving as mode (see the module's docstring)."""
    kw = {"gpu_class": gpu_class, "provider": provider, "txt2img_status": 200}
    if mode == "gzip-bomb":
        gzip_bomb()
        kw["txt2img_reply"] = _send_bomb
    elif mode == "huge":
        kw["txt2img_reply"] = _send_huge
    elif mode == "huge-chunked":
        kw["txt2img_reply"] = lambda h, n: _send_huge(h, n, chunked=True)
    elif mode == "html-png":
        kw["txt2img_body"] = answer([html_png_b64()])
    elif mode == "evil-preview":
        kw.update(txt2img_body=answer([base64.b64encode(png()).decode()]), txt2img_delay=2.0,
                  progress_reply=_preview_progress)
    elif mode == "utf8-cut":
        kw.update(txt2img_status=400, txt2img_body=utf8_cut_body())
    elif mode == "escapes":
        kw.update(txt2img_status=400, txt2img_body=("error: " + ESCAPES).encode(),
                  info_extra={"provider": "Evil" + ESCAPES, "gpu": "gpu" + ESCAPES})
    elif mode == "slow":
        kw.update(txt2img_body=answer([base64.b64encode(png()).decode()]), txt2img_delay=60.0)
    else:
        raise ValueError("unknown mode %r (one of %s)" % (mode, ", ".join(MODES)))
    return t.FakeBackend(**kw)


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in MODES:
        sys.exit("usage: evil_backend.py MODE   (MODE: %s)" % ", ".join(MODES))
    be = start(sys.argv[1])
    print(be.url, flush=True)
    while True:
        time.sleep(3600)
