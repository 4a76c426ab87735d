"""test_backend_bad_input.py — every bad input the backend contract names
gets its documented answer (422 in FastAPI/pydantic v2's shape with the
right loc, 404 for an unknown sampler or path, 405 for a wrong method, 413
for a body over 1 MiB), hostile connections do not block the server, and
after every bad input the server still serves a good request.
Contract: ../../README.md "sdgate-backend" (bad input), ../../docs/security.md
"Limits on input"."""

import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sdtest as t  # noqa: E402

GOOD = {"prompt": "a white moon", "seed": 3, "steps": 1, "width": 64, "height": 64, "sampler_name": "Euler"}


def good(**over):
    b = dict(GOOD)
    b.update(over)
    return b


def check_still_serves(be, after):
    """A good txt2img right after a bad input answers 200 with one image."""
    try:
        r, _ = t.txt2img(be.url, GOOD, timeout=60)
        ok = r.status == 200 and len(t.images_of(r) or []) == 1
        detail = t.describe(r)
    except Exception as e:  # noqa: BLE001
        ok, detail = False, "%s: %s" % (type(e).__name__, e)
    t.check("  ... and then a good txt2img still answers 200 (after %s)" % after, ok, detail)


def detail_entries(r):
    """The list under detail when the reply has FastAPI's 422 shape, else None."""
    if not (r.is_json and isinstance(r.json, dict) and isinstance(r.json.get("detail"), list)
            and r.json["detail"]):
        return None
    entries = r.json["detail"]
    for e in entries:
        if not (isinstance(e, dict) and isinstance(e.get("type"), str) and isinstance(e.get("msg"), str)
                and isinstance(e.get("loc"), list) and e["loc"] and e["loc"][0] == "body"):
            return None
    return entries


def expect_422(be, name, loc=None, loc_any=None, json_body=None, raw_body=None, input_value=None,
               has_input=True):
    """Sends a bad txt2img; checks 422, FastAPI's shape, and the loc:
    loc: exact list; loc_any: one of these names must appear in some loc
    (None: any loc starting with "body"). input_value: the entry's input."""
    r = t.request("POST", be.url + "/sdapi/v1/txt2img", json_body=json_body, raw_body=raw_body, timeout=60)
    entries = detail_entries(r)
    ok = r.status == 422 and entries is not None
    where = ""
    if ok and loc is not None:
        ok = any(e["loc"] == loc for e in entries)
        where = " with loc %s" % loc
    elif ok and loc_any is not None:
        # A loc naming the field: ["body", "a", "b"] or ["body", "a.b"].
        ok = any(any(x in str(el) for x in loc_any for el in e["loc"][1:]) for e in entries)
        where = " with a loc naming %s" % " or ".join(loc_any)
    if ok and has_input:
        ok = all("input" in e for e in entries)
        if ok and input_value is not None:
            ok = any(e.get("input") == input_value for e in entries)
            where += " and input %s" % t.short(input_value, 40)
    t.check("%s -> 422 {detail: [{type, loc, msg, input}]}%s" % (name, where), ok, t.describe(r))
    check_still_serves(be, name)


def check_validation(be):
    # Malformed JSON: loc is ["body"] or ["body", <position>].
    for name, raw in [("malformed JSON (truncated object)", b'{"prompt": "x", '),
                      ("malformed JSON (not JSON at all)", b"prompt=a+cat&steps=20"),
                      ("malformed JSON (trailing garbage)", b'{"prompt": "x"} xyz'),
                      ("an empty body", b"")]:
        r = t.request("POST", be.url + "/sdapi/v1/txt2img", raw_body=raw, timeout=60)
        entries = detail_entries(r)
        t.check("%s -> 422 with loc ['body'] or ['body', <position>]" % name,
                r.status == 422 and entries is not None
                and any(len(e["loc"]) <= 2 and (len(e["loc"]) == 1 or t.is_int(e["loc"][1])) for e in entries),
                t.describe(r))
        check_still_serves(be, name)

    # JSON must be UTF-8 (RFC 8259); FastAPI itself answers 400 here, the contract 422.
    r = t.request("POST", be.url + "/sdapi/v1/txt2img", raw_body=b'{"prompt": "caf\xc3\x28 \xff"}', timeout=60)
    t.check("invalid UTF-8 inside a JSON string -> 422 (or FastAPI's 400) with a JSON detail",
            r.status in (400, 422) and isinstance(r.json, dict) and "detail" in r.json, t.describe(r))
    check_still_serves(be, "invalid UTF-8")

    # Valid JSON that is not an object: FastAPI answers loc ["body"] (type
    # model_attributes_type), not a JSON decode error at a position.
    for name, raw in [("a JSON array body", b'[{"prompt": "x"}]'), ("a JSON string body", b'"a cat"'),
                      ("a JSON number body", b"42"), ("a JSON null body", b"null")]:
        r = t.request("POST", be.url + "/sdapi/v1/txt2img", raw_body=raw, timeout=60)
        entries = detail_entries(r)
        t.check("%s -> 422 with loc ['body']" % name,
                r.status == 422 and entries is not None and any(e["loc"] == ["body"] for e in entries),
                t.describe(r))
        check_still_serves(be, name)

    # Wrong types.
    expect_422(be, '"steps": "abc"', ["body", "steps"], json_body=good(steps="abc"), input_value="abc")
    expect_422(be, '"width": 12.5', ["body", "width"], json_body=good(width=12.5), input_value=12.5)
    # (A1111 1.10 runs pydantic v1: a number is taken as a string, 12.5 as int 12.)
    expect_422(be, '"prompt": {"a": 5}', ["body", "prompt"], json_body=good(prompt={"a": 5}), input_value={"a": 5})
    expect_422(be, '"cfg_scale": "high"', ["body", "cfg_scale"], json_body=good(cfg_scale="high"))
    expect_422(be, '"negative_prompt": [1]', ["body", "negative_prompt"], json_body=good(negative_prompt=[1]))
    expect_422(be, '"seed": "lucky"', ["body", "seed"], json_body=good(seed="lucky"))
    expect_422(be, '"batch_size": {}', ["body", "batch_size"], json_body=good(batch_size={}))
    expect_422(be, '"sampler_name": [7]', ["body", "sampler_name"], json_body=good(sampler_name=[7]))

    # Ranges.
    for field, bad in [("steps", 0), ("steps", 151), ("steps", -5), ("cfg_scale", 0.5), ("cfg_scale", 30.5),
                       ("width", 56), ("width", 2056), ("width", 100), ("height", 0), ("height", 4096),
                       ("height", 65), ("batch_size", 0), ("batch_size", 9), ("n_iter", 0), ("n_iter", 17)]:
        expect_422(be, '"%s": %s' % (field, bad), ["body", field], json_body=good(**{field: bad}),
                   input_value=bad)
    expect_422(be, '"steps": 1e30 (a float far out of range)', loc_any=["steps"], json_body=good(steps=1e30))
    expect_422(be, '"steps": 99999999999999999999999 (a big integer)', has_input=False,
               raw_body=b'{"prompt": "x", "steps": 99999999999999999999999, "width": 64, "height": 64}')

    # Boundaries that must pass.
    for name, body in [("cfg_scale 1", good(cfg_scale=1)), ("cfg_scale 30", good(cfg_scale=30)),
                       ("a prompt of exactly 8192 bytes", good(prompt="a" * 8192)),
                       ("a negative_prompt of exactly 8192 bytes", good(negative_prompt="b" * 8192)),
                       ("width 72 x height 64", good(width=72, height=64)),
                       ("width 2048 x height 64", good(width=2048, height=64)),
                       ("steps 150", good(steps=150)),
                       ("batch_size 8 x n_iter 2 (16 images)", good(batch_size=8, n_iter=2)),
                       ("n_iter 16", good(n_iter=16))]:
        r, _ = t.txt2img(be.url, body)
        n = body.get("batch_size", 1) * body.get("n_iter", 1)
        t.check("%s is valid (200, %d image%s)" % (name, n, "s" if n > 1 else ""),
                r.status == 200 and len(t.images_of(r) or []) == n, t.describe(r))

    # Lengths, in bytes: 2731 x "€" (3 bytes) is 8193 bytes but only 2731 characters.
    expect_422(be, "a prompt of 8193 bytes", ["body", "prompt"], json_body=good(prompt="a" * 8193), has_input=False)
    expect_422(be, "a prompt of 2731 euro signs (8193 bytes, 2731 characters)", ["body", "prompt"],
               json_body=good(prompt="\u20ac" * 2731), has_input=False)
    expect_422(be, "a negative_prompt of 8193 bytes", ["body", "negative_prompt"],
               json_body=good(negative_prompt="n" * 8193), has_input=False)

    # Names.
    expect_422(be, '"scheduler": "bogus"', ["body", "scheduler"], json_body=good(scheduler="bogus"),
               input_value="bogus")
    expect_422(be, '"refiner_checkpoint": "no-such-model"', loc_any=["refiner_checkpoint"],
               json_body=good(refiner_checkpoint="no-such-model", refiner_switch_at=0.5))
    expect_422(be, '"override_settings": {"sd_model_checkpoint": "no-such-model"}',
               loc_any=["override_settings", "sd_model_checkpoint"],
               json_body=good(override_settings={"sd_model_checkpoint": "no-such-model"}))

    for name in ["Bogus Sampler", "DPM++ 9M Karras", "Euler b"]:
        r = t.request("POST", be.url + "/sdapi/v1/txt2img", json_body=good(sampler_name=name), timeout=60)
        t.check('"sampler_name": "%s" -> 404 {"detail": "Sampler not found"}' % name,
                r.status == 404 and r.json == {"detail": "Sampler not found"}, t.describe(r))
        check_still_serves(be, "an unknown sampler")


def check_http_level(be):
    # Body over 1 MiB: 413 with a JSON detail (sent on a raw socket: the server
    # may answer before it has read the whole body).
    pad = "x" * (1024 * 1024 + 4096)
    body = ('{"prompt": "a cat", "steps": 1, "width": 64, "height": 64, "padding": "%s"}' % pad).encode()
    req = (b"POST /sdapi/v1/txt2img HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
           b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body)) + body
    status, headers, rbody, err = t.raw_exchange("127.0.0.1", be.port, req, timeout=60)
    rep = t.Reply(status or 0, headers, rbody)
    t.check("a body over 1 MiB -> 413 with a JSON {detail}",
            status == 413 and isinstance(rep.json, dict) and "detail" in rep.json,
            "status %r body %s error %s" % (status, t.short(rbody), err))
    check_still_serves(be, "a body over 1 MiB")

    # Same, chunked (no Content-Length to judge by).
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 65536]), body[i:i + 65536])
                      for i in range(0, len(body), 65536)) + b"0\r\n\r\n"
    req = (b"POST /sdapi/v1/txt2img HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
           b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n") + chunks
    status, headers, rbody, err = t.raw_exchange("127.0.0.1", be.port, req, timeout=60)
    rep = t.Reply(status or 0, headers, rbody)
    t.check("a chunked body over 1 MiB -> 413 with a JSON {detail}",
            status == 413 and isinstance(rep.json, dict) and "detail" in rep.json,
            "status %r body %s error %s" % (status, t.short(rbody), err))
    check_still_serves(be, "a chunked body over 1 MiB")

    # Deeply nested JSON (hostile depth) under the size limit: a clear answer, no crash.
    deep = b'{"prompt": "x", "steps": 1, "width": 64, "height": 64, "nest": ' + b"[" * 200000 + b"]" * 200000 + b"}"
    try:
        r = t.request("POST", be.url + "/sdapi/v1/txt2img", raw_body=deep, timeout=60)
        t.check("JSON nested 200000 deep -> a JSON answer (200, 413 or 422)",
                r.status in (200, 413, 422) and r.is_json, t.describe(r))
    except Exception as e:  # noqa: BLE001
        t.check("JSON nested 200000 deep -> a JSON answer (200, 413 or 422)", False, repr(e))
    check_still_serves(be, "deeply nested JSON")

    for method, path in [("GET", "/sdapi/v1/nope"), ("POST", "/sdapi/v2/txt2img"), ("GET", "/"),
                         ("GET", "/sdapi/v1/txt2img/extra")]:
        r = t.request(method, be.url + path, json_body={} if method == "POST" else None, timeout=30)
        t.check("%s %s -> 404 {\"detail\": \"Not Found\"}" % (method, path),
                r.status == 404 and r.json == {"detail": "Not Found"}, t.describe(r))
    for method, path in [("GET", "/sdapi/v1/txt2img"), ("DELETE", "/sdapi/v1/progress"),
                         ("PUT", "/sdapi/v1/options"), ("GET", "/sdapi/v1/interrupt"),
                         ("POST", "/sdapi/v1/samplers")]:
        r = t.request(method, be.url + path, json_body={} if method in ("PUT", "POST") else None, timeout=30)
        t.check("%s %s -> 405" % (method, path), r.status == 405, t.describe(r))
    check_still_serves(be, "unknown paths and wrong methods")

    # Garbage instead of HTTP: answered or closed, never a crash.
    status, _, _, err = t.raw_exchange("127.0.0.1", be.port, b"\x16\x03\x01\x02\x00GARBAGE\r\n\r\n", timeout=10)
    t.check("a garbage request line gets a 4xx or a closed connection", status is None or 400 <= status < 500,
            "status %r error %s" % (status, err))
    check_still_serves(be, "a garbage request line")

    # A slow client holding a half-sent request does not block other clients.
    slow = socket.create_connection(("127.0.0.1", be.port), timeout=10)
    try:
        slow.sendall(b"POST /sdapi/v1/txt2img HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n"
                     b"Content-Type: application/json\r\n\r\n{\"prompt\": ")
        time.sleep(0.2)
        t0 = time.monotonic()
        r, _ = t.txt2img(be.url, GOOD, timeout=60)
        t.check("a good txt2img is served while another client holds a half-sent request",
                r.status == 200 and len(t.images_of(r) or []) == 1, t.describe(r))
        print("# good request beside a stalled one took %.2f s" % (time.monotonic() - t0))
    finally:
        slow.close()
    # A client that sends a full job then disconnects at once does not wedge the job lane.
    c = socket.create_connection(("127.0.0.1", be.port), timeout=10)
    import json
    payload = json.dumps(good(steps=3, width=128, height=128)).encode()
    c.sendall(b"POST /sdapi/v1/txt2img HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Content-Length: %d\r\n\r\n" % len(payload) + payload)
    c.close()
    time.sleep(0.3)
    check_still_serves(be, "a client that hung up during its job")


def main():
    be = t.start_backend("--provider", "bad-input-prov", name="backend-bad-input")
    r, _ = t.txt2img(be.url, GOOD)
    t.check("a good request answers 200 before the bad ones", r.status == 200, t.describe(r))
    check_validation(be)
    check_http_level(be)
    r = t.request("GET", be.url + "/internal/ping", timeout=10)
    t.check("the backend still answers /internal/ping at the end", r.status == 200, t.describe(r))
    be.stop()


if __name__ == "__main__":
    t.run(main)
