"""Live progress end to end: a paced sdgate-backend (100 ms a step) behind
sdgate-balancer with its default polling, sdgate-gateway in front, a
websocket client and an SSE subscriber of GET /v1/jobs/{id}/events.

A 20-step job of about 2 s must reach the browser as a stream of progress
messages (at least 8 here, about 20 expected; the old 500 ms polling gave at
most 4), with steps that never go down, the longest gap between two of them
well under a second, and previews rate-limited (--preview-interval-ms,
1000 by default: at most a few in 2 s, each a small PNG). The SSE subscriber
sees the same cadence. Margins are generous (the machine is shared); the
figures are printed."""

import json
import os
import sys
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sdtest as t  # noqa: E402
from wsclient import WSClient  # noqa: E402

ADMIN = "gw-admin-token-progress"
PACE = 100  # ms per step
STEPS = 20
MIN_MESSAGES = 8  # of about STEPS; the old 500 ms polling gave at most 4
MAX_GAP_S = 2.5  # between two progress messages while the job runs (about 0.1 expected; generous, as a
#                  loaded machine can stall a process for a second or two: MIN_MESSAGES is what old polling fails)
MAX_PREVIEWS = 5  # in a 2 s job with previews at most every 1 s (3 expected at most)


def sse_events(url, out, stop):
    """Reads GET url (text/event-stream) into out as (time, name, data) until done or stop."""
    req = urllib.request.Request(url, headers={"Accept": "text/event-stream"})
    with urllib.request.urlopen(req, timeout=t.JOB_TIMEOUT_S) as r:
        name, data = None, []
        for raw in r:
            line = raw.decode("utf-8").rstrip("\r\n")
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].strip())
            elif line == "" and name:
                try:
                    d = json.loads("\n".join(data))
                except ValueError:
                    d = None
                out.append((time.monotonic(), name, d))
                if name in ("done", "failed", "cancelled") or stop.is_set():
                    return
                name, data = None, []


def gaps(times):
    return [b - a for a, b in zip(times, times[1:])]


def summary(xs):
    xs = sorted(xs)
    if not xs:
        return "none"
    return "n=%d min %.0f ms, median %.0f ms, max %.0f ms" % (len(xs), xs[0] * 1e3, xs[len(xs) // 2] * 1e3,
                                                               xs[-1] * 1e3)


def main():
    be = t.start_backend("--gpu-class", "a100", "--pace-ms-per-step", PACE)
    bal = t.start_balancer("--admin-token", ADMIN, "--backend", be.url)
    t.check("balancer sees the backend idle", t.wait_idle_backends(bal.url, 1, 30))
    gw = t.start_gateway("--balancer", bal.url, "--admin-token", ADMIN, wait_board=True)

    ws = WSClient("127.0.0.1", gw.port, "/ws", timeout=30)
    ws.send_json({"type": "hello"})
    t.check("hello → welcome", ws.wait_type("welcome", 20) is not None, ws.messages[:3])
    arrivals = {}
    orig = ws._deliver

    def deliver(opcode, payload):  # the arrival time of every message
        orig(opcode, payload)
        arrivals[ws.count() - 1] = time.monotonic()
    ws._deliver = deliver

    ws.send_json({"type": "generate", "id": "p1", "prompt": "a red circle on a blue square", "negative_prompt": "",
                  "sampler_name": "Euler a", "steps": STEPS, "cfg_scale": 7, "width": 64, "height": 64,
                  "seed": 7, "gpus": []})
    acc = ws.wait_type("accepted", 20, id="p1")
    job_id = (acc or {}).get("job")
    t.check("generate → accepted with the balancer's job id", t.is_hex_id(job_id), acc)
    sse, stop = [], threading.Event()
    reader = None
    if job_id:
        reader = t.Background(sse_events, "%s/v1/jobs/%s/events" % (bal.url, job_id), sse, stop)
    done = ws.wait_for(lambda m: isinstance(m, dict) and m.get("id") == "p1"
                       and m.get("type") in ("done", "error"), t.JOB_TIMEOUT_S)
    t.check("the job is done", isinstance(done, dict) and done.get("type") == "done", done)
    if reader:
        reader.join(30)
    stop.set()

    with ws._cv:
        msgs = [(i, m) for i, m in enumerate(ws.messages) if isinstance(m, dict) and m.get("id") == "p1"]
    prog = [(arrivals.get(i), m) for i, m in msgs if m.get("type") == "progress"]
    steps = [m.get("step") for _, m in prog]
    times = [a for a, _ in prog if a is not None]
    print("websocket: %d progress messages, steps %s; gaps %s" % (len(prog), steps, summary(gaps(times))))
    t.check("a %d-step job of about %.1f s gives at least %d progress messages over the websocket"
            % (STEPS, STEPS * PACE / 1000, MIN_MESSAGES), len(prog) >= MIN_MESSAGES, steps)
    t.check("websocket progress steps are integers that never go down, all of %d steps"
            % STEPS, all(t.is_int(s) for s in steps) and steps == sorted(steps)
            and all(m.get("steps") == STEPS for _, m in prog), [(m.get("step"), m.get("steps")) for _, m in prog])
    g = gaps(times)
    t.check("no gap between two websocket progress messages over %.1f s" % MAX_GAP_S,
            g and max(g) <= MAX_GAP_S, summary(g))
    previews = [m for _, m in prog if "preview" in m]
    sizes = [len(m["preview"]) for m in previews]
    print("websocket: %d previews, base64 sizes %s" % (len(previews), sizes))
    t.check("previews are rate-limited: between 1 and %d in a 2 s job" % MAX_PREVIEWS,
            1 <= len(previews) <= MAX_PREVIEWS, len(previews))
    decoded = [t.decode_png_b64(m["preview"]) for m in previews]
    t.check("previews are small PNGs (at most 256 px a side)",
            all(isinstance(d, t.Image) and d.width <= 256 and d.height <= 256 for d in decoded),
            [(d.width, d.height) if isinstance(d, t.Image) else d for d in decoded])

    sp = [(at, d) for at, n, d in sse if n == "progress" and isinstance(d, dict)]
    ssteps = [d.get("step") for _, d in sp]
    sg = gaps([at for at, _ in sp])
    print("SSE: %d progress events, steps %s; gaps %s" % (len(sp), ssteps, summary(sg)))
    t.check("the SSE subscriber gets at least %d progress events too, steps never going down"
            % (MIN_MESSAGES - 2), len(sp) >= MIN_MESSAGES - 2 and ssteps == sorted(ssteps), ssteps)
    t.check("no gap between two SSE progress events over %.1f s" % MAX_GAP_S, sg and max(sg) <= MAX_GAP_S,
            summary(sg))
    ws.close()


if __name__ == "__main__":
    t.run(main)
