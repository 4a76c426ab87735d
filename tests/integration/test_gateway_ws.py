"""The gateway end to end over a real websocket: two paced sdgate-backends
(a100 in Berlin, rtx3090 in Austin) behind sdgate-balancer, and
sdgate-gateway in front, all on free loopback ports. The websocket client is
wsclient.py (standard library, masked client frames).

Covers: static files, /healthz, /metrics; hello → welcome + board; generate
→ accepted, queued, assigned, progress, done (a real PNG, timings, who ran
it); cancel; every validation error (invalid UTF-8, oversized and
fragmented-oversized messages, non-object JSON, binary frames, each field)
with the connection kept; the per-connection job cap; the per-address work
rate limit; a closed connection cancelling its job (the backend goes idle);
failover from a dead first --balancer and from one killed mid-job; hostile
frames that must not hurt the gateway."""

import base64
import os
import re
import signal
import socket
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sdtest as t  # noqa: E402
from wsclient import WSClient, HandshakeError, OP_BINARY, OP_TEXT, OP_CONT, OP_CLOSE, frame  # noqa: E402

ADMIN = "gw-admin-token-0123"
PACE = 120  # ms per step: slow enough to see queues, progress and cancels


def start_gateway(*args, name="gateway"):
    """sdgate-gateway --listen 127.0.0.1:<free> ARGS, ready when its first board poll is done."""
    return t.start_gateway(*args, name=name, wait_board=True)


def connect(gw, hello=True):
    ws = WSClient("127.0.0.1", gw.port, "/ws", timeout=30)
    if hello:
        ws.send_json({"type": "hello"})
        if not ws.wait_type("welcome", 20):
            raise RuntimeError("no welcome")
    return ws


def job(id, **over):
    m = {"type": "generate", "id": id, "prompt": "a red circle on a blue square", "negative_prompt": "",
         "sampler_name": "Euler a", "steps": 3, "cfg_scale": 7, "width": 64, "height": 64, "seed": 42,
         "gpus": []}
    m.update(over)
    return m


def final_of(ws, id, timeout=t.JOB_TIMEOUT_S):
    return ws.wait_for(lambda m: isinstance(m, dict) and m.get("id") == id
                       and m.get("type") in ("done", "error"), timeout)


def is_error(m, code, field=None, id=None):
    return (isinstance(m, dict) and m.get("type") == "error" and m.get("code") == code
            and isinstance(m.get("message"), str) and m.get("message") != ""
            and (field is None or m.get("field") == field) and m.get("id") == id)


def expect_error(ws, name, send, code, field=None, id=None, timeout=10):
    """Sends (send is a dict → JSON, bytes/str → a text frame, or a callable),
    then expects the next error message to be that one (board pushes and
    other jobs' messages may come in between)."""
    start = ws.count()
    if callable(send):
        send()
    elif isinstance(send, dict):
        ws.send_json(send)
    else:
        ws.send_text(send)
    m = ws.wait_for(lambda m: not isinstance(m, dict) or m.get("type") == "error", timeout, start)
    t.check("%s → error %s%s" % (name, code, " on " + field if field else ""), is_error(m, code, field, id), m)
    return m


def alive(ws):
    """The connection still answers: hello → welcome."""
    start = ws.count()
    ws.send_json({"type": "hello"})
    return ws.wait_type("welcome", 10, start=start) is not None


def job_status(bal, job_id):
    d = t.get_job(bal.url, job_id)
    return d.get("status") if d else None


def main():
    be1 = t.start_backend("--provider", "Acme GPUs", "--location", "Berlin, DE", "--gpu-class", "a100",
                          "--pace-ms-per-step", PACE, name="backend-a100")
    be2 = t.start_backend("--provider", "Beta Compute", "--location", "Austin, US", "--gpu-class", "rtx3090",
                          "--pace-ms-per-step", PACE, name="backend-3090")
    backends = ["--backend", be1.url, "--backend", be2.url]
    bal = t.start_balancer("--admin-token", ADMIN, "--progress-interval-ms", "100", *backends)
    t.check("balancer sees both backends idle", t.wait_idle_backends(bal.url, 2, 30))
    gw = start_gateway("--balancer", bal.url, "--admin-token", ADMIN, "--max-jobs-per-connection", "2")

    # ------------------------------------------------------------ HTTP
    r = t.request("GET", gw.url + "/")
    t.check("GET / serves web/index.html", r.status == 200 and "text/html" in r.headers.get("content-type", "")
            and b"<html" in r.raw.lower(), t.describe(r))
    r = t.request("GET", gw.url + "/app.js")
    t.check("GET /app.js is served", r.status == 200 and b"WebSocket" in r.raw, r.status)
    r = t.request("GET", gw.url + "/no-such-file.txt")
    t.check("unknown file → 404", r.status == 404, r.status)
    st, _, body, _ = t.raw_exchange("127.0.0.1", gw.port, b"GET /../../../../etc/passwd HTTP/1.1\r\nHost: x\r\n"
                                    b"Connection: close\r\n\r\n", timeout=10)
    t.check("path traversal does not leave web/", b"root:" not in (body or b""), (st, body[:200]))
    r = t.request("GET", gw.url + "/healthz")
    t.check("GET /healthz → 200 ok with the balancer up",
            r.status == 200 and r.json.get("status") == "ok" and r.json["balancers"][0]["up"] is True, t.describe(r))
    r = t.request("POST", gw.url + "/healthz", raw_body=b"{}")
    t.check("POST /healthz is refused", r.status in (405, 404, 400), r.status)
    try:
        WSClient("127.0.0.1", gw.port, "/not-ws", timeout=10)
        t.check("websocket upgrade on another path is refused", False, "it was accepted")
    except (HandshakeError, OSError) as e:
        t.check("websocket upgrade on another path is refused", True, e)

    # ------------------------------------------------------------ hello → welcome + board
    ws = WSClient("127.0.0.1", gw.port, "/ws")
    ws.send_json({"type": "hello"})
    welcome = ws.wait_type("welcome", 20)
    t.check("hello → welcome", isinstance(welcome, dict), ws.messages)
    welcome = welcome or {}
    samplers = welcome.get("samplers") or []
    t.check("welcome.samplers has A1111 names incl. the UI's default",
            "Euler a" in samplers and "DPM++ SDE Karras" in samplers and "DPM++ 2M" in samplers, samplers)
    gpus = {g.get("class"): g for g in welcome.get("gpus") or []}
    t.check("welcome.gpus lists a100 and rtx3090 with idle/busy/down counts",
            set(gpus) == {"a100", "rtx3090"} and all(t.is_int(g.get(k)) for g in gpus.values()
                                                      for k in ("idle", "busy", "down")), welcome.get("gpus"))
    lim = welcome.get("limits") or {}
    t.check("welcome.limits mirror the backend's limits",
            lim.get("max_steps") == 150 and lim.get("min_steps") == 1 and lim.get("max_cfg") == 30
            and lim.get("min_cfg") == 1 and lim.get("max_width") == 2048 and lim.get("min_size") == 64
            and lim.get("size_multiple") == 8 and lim.get("max_prompt") == 2000
            and lim.get("max_jobs_per_connection") == 2, lim)
    board = ws.wait_type("board", 10)
    t.check("board follows welcome with both providers",
            isinstance(board, dict) and sorted(b.get("provider") for b in board.get("backends", []))
            == ["Acme GPUs", "Beta Compute"] and isinstance(board.get("gpus"), list), board)
    if board:
        b0 = board["backends"][0]
        t.check("board rows carry what the page shows and no backend URL",
                all(k in b0 for k in ("provider", "location", "gpu_class", "state", "simulated", "jobs_done"))
                and "url" not in b0 and b0.get("simulated") is True, b0)

    # ------------------------------------------------------------ a job, every message type
    ws.send_json(job("j1", gpus=["a100"], steps=8, seed=4242))
    done = final_of(ws, "j1")
    msgs = ws.of_job("j1")
    types = [m.get("type") for m in msgs]
    t.check("generate → accepted first, done last", types[:1] == ["accepted"] and types[-1:] == ["done"], types)
    acc = msgs[0] if msgs else {}
    t.check("accepted carries the balancer's job id", t.is_hex_id(acc.get("job")), acc)
    asg = next((m for m in msgs if m.get("type") == "assigned"), None)
    t.check("assigned: Acme GPUs, Berlin, a100",
            asg is not None and asg.get("provider") == "Acme GPUs" and asg.get("location") == "Berlin, DE"
            and asg.get("gpu") == "a100", asg)
    prog = [m for m in msgs if m.get("type") == "progress"]
    t.check("progress messages with step/steps", prog and all(t.is_int(m.get("step")) and m.get("steps") == 8
                                                               for m in prog), prog[:3])
    t.check("a progress message carries a preview PNG (preview_type image/png)",
            any(isinstance(m.get("preview"), str) and base64.b64decode(m["preview"])[:8] == t.PNG_SIGNATURE
                and m.get("preview_type") == "image/png" for m in prog), [sorted(m) for m in prog])
    ok = isinstance(done, dict) and done.get("type") == "done"
    t.check("job j1 done", ok, done)
    if ok:
        img, _ = t.try_decode_png(base64.b64decode(done.get("image", "")))
        t.check("done.image is a 64x64 PNG, image_type image/png (fetched from the balancer's image URL)",
                img is not None and img.width == 64 and img.height == 64 and done.get("image_type") == "image/png",
                (done.get("image", "")[:80], done.get("image_type")))
        t.check("done: seed, provider, location, gpu",
                done.get("seed") == 4242 and done.get("provider") == "Acme GPUs"
                and done.get("location") == "Berlin, DE" and done.get("gpu") == "a100",
                {k: v for k, v in done.items() if k != "image"})
        t.check("done: inference_ms > 0 (8 steps at %d ms ≥ 0.9 s), total_ms ≥ inference_ms" % PACE,
                t.is_number(done.get("inference_ms")) and done["inference_ms"] >= 8 * PACE * 0.9
                and t.is_number(done.get("total_ms")) and done["total_ms"] >= done["inference_ms"],
                {k: v for k, v in done.items() if k != "image"})
    t.check("no message after done for j1", ws.of_job("j1")[-1].get("type") == "done", types)

    # ------------------------------------------------------------ queued, then cancel
    ws.send_json(job("long", gpus=["a100"], steps=40))
    t.check("long job assigned", ws.wait_type("assigned", 30, id="long") is not None, ws.of_job("long"))
    ws.send_json(job("next", gpus=["a100"], steps=3))
    q = ws.wait_type("queued", 30, id="next")
    t.check("a job behind a busy a100 → queued {position ≥ 1}", q is not None and t.is_int(q.get("position"))
            and q["position"] >= 1, ws.of_job("next"))
    ws.send_json({"type": "cancel", "id": "long"})
    m = final_of(ws, "long", 30)
    t.check("cancel → error {id, code: cancelled}", is_error(m, "cancelled", id="long"), m)
    m = final_of(ws, "next", 60)
    t.check("the queued job runs once the a100 is free", isinstance(m, dict) and m.get("type") == "done", m)
    t.check("cancelled job is cancelled at the balancer",
            t.wait_until(lambda: job_status(bal, ws.of_job("long")[0].get("job")) == "cancelled", 10),
            ws.of_job("long")[:1])

    # ------------------------------------------------------------ validation errors, connection kept
    ws2 = connect(gw)
    expect_error(ws2, "invalid UTF-8 in a text frame", b'{"type":"hello","x":"\xc3\x28"}', "bad_utf8")
    expect_error(ws2, "an overlong UTF-8 encoding", b'{"type":"hello","x":"\xc0\xaf"}', "bad_utf8")
    expect_error(ws2, "a UTF-16 surrogate encoded in UTF-8", b'{"type":"hello","x":"\xed\xa0\x80"}', "bad_utf8")
    expect_error(ws2, "a 70000-byte message", '{"type":"hello","pad":"%s"}' % ("x" * 70000), "too_large")

    def fragmented():
        part = b"y" * 30000
        ws2.send_frame(OP_TEXT, b'{"type":"hello","pad":"' + part, fin=False)
        ws2.send_frame(OP_CONT, part, fin=False)
        ws2.send_frame(OP_CONT, part + b'"}', fin=True)
    expect_error(ws2, "a 90000-byte message in three fragments", fragmented, "too_large")
    expect_error(ws2, "a binary frame", lambda: ws2.send_frame(OP_BINARY, b"\x00\x01"), "binary_frame")
    expect_error(ws2, "not JSON", "{type: hello", "bad_json")
    expect_error(ws2, "JSON array", "[1, 2]", "not_object")
    expect_error(ws2, "JSON string", '"hello"', "not_object")
    expect_error(ws2, "duplicate keys", '{"type":"hello","type":"cancel"}', "bad_json")
    expect_error(ws2, "no type", {"id": "x"}, "invalid", "type")
    expect_error(ws2, "type not a string", {"type": 5}, "invalid", "type")
    expect_error(ws2, "unknown type", {"type": "launch_missiles"}, "unknown_type", "type")
    expect_error(ws2, "unknown type of 200 multi-byte characters", {"type": "ü€😀" * 70}, "unknown_type", "type")
    expect_error(ws2, "JSON nested 20000 deep", "[" * 20000 + "]" * 20000, "bad_json")
    expect_error(ws2, "a NUL escape in a string", '{"type":"hello\\u0000"}', "bad_json")
    expect_error(ws2, "an empty message", "", "bad_json")
    expect_error(ws2, "generate without id", {k: v for k, v in job("x").items() if k != "id"}, "invalid", "id")
    expect_error(ws2, "a 65-character id", job("i" * 65), "invalid", "id")
    expect_error(ws2, "an id with a control character", job("a\nb"), "invalid", "id")
    cases = [
        ("no prompt", {"prompt": None}, "invalid", "prompt"),
        ("blank prompt", {"prompt": "   "}, "invalid", "prompt"),
        ("prompt of 2001 characters", {"prompt": "é" * 2001}, "invalid", "prompt"),
        ("prompt not a string", {"prompt": 12}, "invalid", "prompt"),
        ("negative_prompt of 2001 characters", {"negative_prompt": "ü" * 2001}, "invalid", "negative_prompt"),
        ("steps 0", {"steps": 0}, "invalid", "steps"),
        ("steps 151", {"steps": 151}, "invalid", "steps"),
        ("steps 2.5", {"steps": 2.5}, "invalid", "steps"),
        ("steps as a string", {"steps": "20"}, "invalid", "steps"),
        ("cfg_scale 0.5", {"cfg_scale": 0.5}, "invalid", "cfg_scale"),
        ("cfg_scale 31", {"cfg_scale": 31}, "invalid", "cfg_scale"),
        ("width 100 (not a multiple of 8)", {"width": 100}, "invalid", "width"),
        ("width 4096", {"width": 4096}, "invalid", "width"),
        ("height 32", {"height": 32}, "invalid", "height"),
        ("seed -2", {"seed": -2}, "invalid", "seed"),
        ("unknown sampler", {"sampler_name": "Warp Drive"}, "sampler_not_found", "sampler_name"),
        ("unknown scheduler", {"scheduler": "whenever"}, "scheduler_not_found", "scheduler"),
        ("refiner_switch_at 1.5", {"refiner_switch_at": 1.5}, "invalid", "refiner_switch_at"),
        ("refiner_switch_at 0", {"refiner_switch_at": 0}, "invalid", "refiner_switch_at"),
        ("gpus not a list", {"gpus": "a100"}, "invalid", "gpus"),
        ("gpus with a number", {"gpus": [1]}, "invalid", "gpus"),
        ("gpus with 17 entries", {"gpus": ["a100"] * 17}, "invalid", "gpus"),
        ("a GPU class no balancer lists", {"gpus": ["h100"]}, "unknown_gpu", "gpus"),
        # 2000 two-byte characters pass the prompt check (code points, not bytes): the next error is the GPU's
        ("prompt of exactly 2000 characters", {"prompt": "é" * 2000, "gpus": ["v100"]}, "unknown_gpu", "gpus"),
    ]
    for name, over, code, field in cases:
        expect_error(ws2, name, job("bad", **over), code, field, id="bad")
    expect_error(ws2, "cancel of an unknown id", {"type": "cancel", "id": "nope"}, "unknown_job", "id")
    expect_error(ws2, "cancel without id", {"type": "cancel"}, "invalid", "id")
    t.check("after every error the connection still answers hello", alive(ws2))
    t.check("no job was sent to the balancer by invalid messages",
            not any(isinstance(m, dict) and m.get("type") == "accepted" for m in ws2.messages), ws2.messages[-3:])

    # ------------------------------------------------------------ per-connection cap, duplicate ids
    ws2.send_json(job("c1", steps=30))
    ws2.send_json(job("c2", steps=30))
    t.check("two jobs accepted", ws2.wait_type("accepted", 30, id="c1") and ws2.wait_type("accepted", 30, id="c2"))
    expect_error(ws2, "a running job's id again", job("c1"), "duplicate_id", "id", id="c1")
    expect_error(ws2, "a third job with --max-jobs-per-connection 2", job("c3"), "too_many_jobs", id="c3")

    # ------------------------------------------------------------ a closed connection cancels its jobs
    for c in ("c1", "c2"):
        ws2.wait_type("assigned", 30, id=c)
    t.check("both backends busy with this connection's jobs",
            t.wait_until(lambda: t.backend_step(be1) >= 0 and t.backend_step(be2) >= 0, 20))
    ids = [ws2.of_job(c)[0].get("job") for c in ("c1", "c2")]
    ws2.abort()  # no close frame: a dropped TCP connection
    t0 = time.monotonic()
    idle = t.wait_until(lambda: t.backend_idle(be1) and t.backend_idle(be2), 15, 0.05)
    t.check("disconnect → both backends idle again (GET /sdapi/v1/progress)", idle,
            (t.backend_progress(be1), t.backend_progress(be2)))
    t.check("…within 5 s of the disconnect", time.monotonic() - t0 < 5, time.monotonic() - t0)
    t.check("the balancer marks the dropped connection's jobs cancelled",
            t.wait_until(lambda: all(job_status(bal, i) == "cancelled" for i in ids), 10),
            [job_status(bal, i) for i in ids])

    # ------------------------------------------------------------ hostile frames
    bad = [
        ("an unmasked client frame", frame(OP_TEXT, b'{"type":"hello"}', mask=False)),
        ("a frame claiming 2^62 bytes", bytes([0x81, 0xFF]) + struct.pack("!Q", 1 << 62) + os.urandom(4)),
        ("reserved bits set", frame(OP_TEXT, b"{}", rsv=4)),
        ("a continuation with no start", frame(OP_CONT, b"xx")),
        ("a 200-byte ping", frame(0x9, b"p" * 200)),
    ]
    for name, data in bad:
        w = connect(gw, hello=False)
        try:
            w.send_raw(data)
        except OSError:
            pass
        w.wait_closed(5)
        w.abort()
        r = t.request("GET", gw.url + "/healthz", timeout=10)
        t.check("gateway survives %s" % name, r.status == 200 and gw.running(), r.status)
    s = socket.create_connection(("127.0.0.1", gw.port), timeout=10)
    s.sendall(b"\x16\x03\x01garbage that is not HTTP\r\n\r\n")
    try:
        s.recv(100)
    except OSError:
        pass
    s.close()
    w = connect(gw)
    t.check("after garbage and protocol violations a new client still gets welcome", alive(w))
    w.close()

    # ------------------------------------------------------------ metrics
    # done: j1 and next. cancelled: "long", by a cancel message; c1 and c2,
    # whose connection dropped (cancelled at the balancer, checked above).
    m = t.metrics(gw.url)
    done_n = t.metric(m, "sdgate_gateway_jobs_total", 0, outcome="done")
    cancelled_n = t.metric(m, "sdgate_gateway_jobs_total", 0, outcome="cancelled")
    invalid_n = t.metric(m, "sdgate_gateway_invalid_messages_total", 0)
    t.check("/metrics: jobs done %d ≥ 2, cancelled %d ≥ 3, invalid %d ≥ 30" % (done_n, cancelled_n, invalid_n),
            done_n >= 2 and cancelled_n >= 3 and invalid_n >= 30, m)
    t.check("/metrics: open connections counted", t.metric(m, "sdgate_gateway_connections", -1) >= 1, m)
    ws.close()

    # ------------------------------------------------------------ rate limit in GPU work
    rl = start_gateway("--balancer", bal.url, "--rate-burst", "0.05", "--rate-refill", "0.0001",
                       "--max-jobs-per-connection", "10", name="gateway-ratelimited")
    a = connect(rl)
    for i in range(3):  # 64*64*4 steps = 0.016 megapixel-steps each: three fit in 0.05
        a.send_json(job("r%d" % i, steps=4))
    finals = [final_of(a, "r%d" % i, 60) for i in range(3)]
    t.check("three small jobs within the burst run", all(isinstance(f, dict) and f.get("type") == "done"
                                                         for f in finals), finals)
    m = expect_error(a, "a fourth job past the work budget", job("r3", steps=4), "rate_limited", id="r3")
    t.check("rate_limited says when to retry", "try again" in (m or {}).get("message", ""), m)
    b = connect(rl)
    expect_error(b, "the same address on another connection", job("r4", steps=1), "rate_limited", id="r4")
    m = expect_error(b, "a job larger than the whole burst", job("big", steps=50, width=512, height=512),
                     "rate_limited", id="big")
    t.check("…and says it can never fit", "more than" in (m or {}).get("message", ""), m)
    t.check("rate-limited connections stay open", alive(a) and alive(b))
    m = t.metrics(rl.url)
    t.check("/metrics counts rate-limited jobs", t.metric(m, "sdgate_gateway_rate_limited_total", 0) >= 3, m)
    a.close()

    # ------------------------------------------------------------ behind a trusted reverse proxy
    # Every client reaches this gateway from 127.0.0.1 (as from NGINX); with
    # --trusted-proxy the forwarded address is the one metered, so one
    # client's exhausted budget does not limit another.
    px = start_gateway("--balancer", bal.url, "--rate-burst", "0.02", "--rate-refill", "0.0001",
                       "--trusted-proxy", "127.0.0.1", name="gateway-proxied")

    def via_proxy(client_ip, forwarded_for=None):
        hdr = {"X-Forwarded-For": forwarded_for} if forwarded_for else {"X-Real-IP": client_ip}
        ws = WSClient("127.0.0.1", px.port, "/ws", timeout=30, headers=hdr)
        ws.send_json({"type": "hello"})
        ws.wait_type("welcome", 20)
        return ws
    c1 = via_proxy("203.0.113.7")
    c1.send_json(job("p1", steps=4))  # 0.016 of the 0.02 budget
    f = final_of(c1, "p1", 60)
    t.check("[proxy] the first client's job runs", isinstance(f, dict) and f.get("type") == "done", f)
    expect_error(c1, "[proxy] the same forwarded client past its budget", job("p2", steps=4), "rate_limited",
                 id="p2")
    c2 = via_proxy("198.51.100.9")
    c2.send_json(job("p3", steps=4))
    f = final_of(c2, "p3", 60)
    t.check("[proxy] another forwarded client (X-Real-IP) has its own budget",
            isinstance(f, dict) and f.get("type") == "done", f)
    # X-Forwarded-For: only the last hop (what the proxy appended) counts; a
    # client cannot escape its budget by prepending addresses.
    c3 = via_proxy(None, forwarded_for="192.0.2.1, 203.0.113.7")
    expect_error(c3, "[proxy] a forged X-Forwarded-For prefix does not reset the budget", job("p4", steps=4),
                 "rate_limited", id="p4")
    for c in (c1, c2, c3):
        c.close()

    # ------------------------------------------------------------ connections per address
    # One address cannot hold every connection: past its cap the upgrade is
    # refused, while another address (here: another forwarded client) still
    # gets in and is served.
    cap = start_gateway("--balancer", bal.url, "--max-connections-per-address", "3",
                        "--trusted-proxy", "127.0.0.1", name="gateway-capped")

    def open_as(ip):
        try:
            ws = WSClient("127.0.0.1", cap.port, "/ws", timeout=10, headers={"X-Real-IP": ip})
        except (HandshakeError, OSError) as e:
            return e
        ws.send_json({"type": "hello"})
        return ws if ws.wait_type("welcome", 20) else None
    mine = [open_as("192.0.2.50") for _ in range(3)]
    t.check("[cap] three connections from one address are accepted",
            all(isinstance(w, WSClient) for w in mine), mine)
    fourth = open_as("192.0.2.50")
    t.check("[cap] a fourth from the same address is refused at the upgrade with 429",
            isinstance(fourth, HandshakeError) and fourth.status == 429, fourth)
    other = open_as("198.51.100.77")
    t.check("[cap] another address still connects and gets welcome", isinstance(other, WSClient), other)
    t.check("[cap] the first address's connections stay open", all(alive(w) for w in mine))
    mine[0].close()
    again = t.wait_until(lambda: isinstance(open_as("192.0.2.50"), WSClient), 10, 0.3)
    t.check("[cap] once one closes, the address may connect again", again)
    for w in mine[1:] + [other]:
        w.close()
    b.close()

    # ------------------------------------------------------------ failover
    dead = "http://127.0.0.1:%d" % t.free_port()
    fo = start_gateway("--balancer", dead, "--balancer", bal.url, "--balancer-timeout-ms", "3000",
                       name="gateway-deadfirst")
    f = connect(fo)
    f.send_json(job("f1"))
    m = final_of(f, "f1", 60)
    t.check("first --balancer dead: the job runs on the second", isinstance(m, dict) and m.get("type") == "done", m)
    acc = f.wait_type("accepted", 1, id="f1")
    t.check("…and the second balancer has it", acc and job_status(bal, acc.get("job")) == "done", acc)
    r = t.request("GET", fo.url + "/healthz")
    t.check("/healthz shows the dead balancer down and the other up",
            r.status == 200 and [x["up"] for x in r.json["balancers"]] == [False, True], r.json)
    t.check("the welcome through failover still lists the GPUs",
            {g.get("class") for g in (f.wait_type("welcome", 1) or {}).get("gpus", [])} == {"a100", "rtx3090"})
    f.close()

    bal2 = t.start_balancer("--admin-token", ADMIN, "--progress-interval-ms", "100", *backends, name="balancer2")
    t.check("second balancer sees both backends", t.wait_idle_backends(bal2.url, 2, 30))
    fo2 = start_gateway("--balancer", bal2.url, "--balancer", bal.url, "--balancer-timeout-ms", "3000",
                        "--stream-patience-s", "2", name="gateway-failover")
    g = connect(fo2)
    g.send_json(job("k1"))
    m = final_of(g, "k1", 60)
    acc = g.wait_type("accepted", 1, id="k1") or {}
    t.check("with both balancers up, the first one runs the job",
            isinstance(m, dict) and m.get("type") == "done" and job_status(bal2, acc.get("job")) == "done", m)
    g.send_json(job("k2", steps=25, gpus=["rtx3090"]))
    t.check("a long job is assigned by the first balancer", g.wait_type("assigned", 30, id="k2") is not None)
    bal2.kill()  # kill -9 mid-job
    m = final_of(g, "k2", 90)
    t.check("first balancer killed mid-job: the job still finishes (resubmitted to the second)",
            isinstance(m, dict) and m.get("type") == "done" and m.get("gpu") == "rtx3090", m)
    accs = [x for x in g.of_job("k2") if x.get("type") == "accepted"]
    t.check("…the second balancer accepted it", len(accs) == 2 and job_status(bal, accs[-1].get("job")) == "done",
            accs)
    g.send_json(job("k3"))
    m = final_of(g, "k3", 60)
    t.check("later jobs go to the second balancer", isinstance(m, dict) and m.get("type") == "done", m)
    m = t.metrics(fo2.url)
    t.check("/metrics counts failovers", t.metric(m, "sdgate_gateway_balancer_failovers_total", 0) >= 1, m)
    g.close()

    # A stream cut mid-job (a network blip, not a dead balancer) is re-opened with Last-Event-ID: the
    # balancer replays only what the gateway missed, so its client sees each event once.
    proxy = t.TcpProxy(bal.port)
    fo3 = start_gateway("--balancer", proxy.url, "--stream-patience-s", "10", name="gateway-blip")
    h = connect(fo3)
    h.send_json(job("b1", steps=25, gpus=["rtx3090"]))
    acc = h.wait_type("accepted", 30, id="b1") or {}
    t.check("blip: the job is assigned", h.wait_type("assigned", 30, id="b1") is not None)
    t.check("blip: …and makes progress", h.wait_type("progress", 30, id="b1") is not None)
    proxy.cut()
    m = final_of(h, "b1", 90)
    t.check("blip: the job still finishes, once, on the same balancer job (not resubmitted)",
            isinstance(m, dict) and m.get("type") == "done"
            and [x.get("job") for x in h.of_job("b1") if x.get("type") == "accepted"] == [acc.get("job")], m)
    head = re.compile(rb"GET /v1/jobs/%s/events[^\r]*\r\n(?:[^\r]+\r\n)*\r\n" % str(acc.get("job")).encode())
    streams = [m.group(0) for x in proxy.sent for m in head.finditer(bytes(x))]
    t.check("blip: the stream was re-opened with Last-Event-ID (and opened first without)",
            len(streams) >= 2 and b"last-event-id" not in streams[0].lower()
            and all(re.search(rb"(?i)\r\nlast-event-id: [0-9]+\r\n", x) for x in streams[1:]), streams)
    t.check("blip: its client got each state event once (assigned once, done once)",
            [x.get("type") for x in h.of_job("b1")].count("assigned") == 1
            and [x.get("type") for x in h.of_job("b1")].count("done") == 1, h.of_job("b1"))
    h.close()
    fo3.stop()

    # the gateways must exit 0 on SIGTERM, with open connections and nothing leaked (ASan)
    keep = connect(gw)
    keep.send_json(job("shutdown", steps=30))
    keep.wait_type("accepted", 30, id="shutdown")
    rc, took = gw.stop()
    t.check("gateway stops within 5 s with a job running", took < 5, took)
    t.check("…and its running job is cancelled at the balancer",
            t.wait_until(lambda: job_status(bal, keep.of_job("shutdown")[0].get("job")) == "cancelled", 10))
    keep.abort()


t.run(main)
