"""test_balancer_bad_input.py — hostile and wrong input to sdgate-balancer:
malformed JSON, non-object bodies, bad steps/size/cfg → 422 in sdgate's
error shape on /v1/jobs (A1111's on the façade); unknown or malformed job
ids → 404 not_found; bodies past 1 MiB → 413; deep nesting, binary junk,
bad methods and paths. After all of it the balancer still serves jobs and
exits cleanly on SIGTERM.
Contract: ../../docs/jobs-api.md "Errors", ../../docs/security.md "Limits on
input"."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sdtest as t  # noqa: E402

MIB = 1 << 20


def post_jobs_raw(bal, raw, ctype="application/json"):
    return t.request("POST", bal.url + "/v1/jobs", raw_body=raw, headers={"Content-Type": ctype}, timeout=15)


def check_jobs_422(bal):
    for what, raw in [("malformed JSON", b'{"prompt": "x", "steps": '),
                      ("an empty body", b""),
                      ("a JSON array", b'[1, 2, 3]'),
                      ("a JSON string", b'"prompt"'),
                      ("invalid UTF-8", b'{"prompt": "\xff\xfe"}'),
                      ("binary junk", b'\x00\x01\x02junk')]:
        r = post_jobs_raw(bal, raw)
        t.check("POST /v1/jobs with %s: 422 in sdgate's error shape" % what, t.is_sdgate_error(r, 422),
                t.describe(r))
    for field, value in [("steps", 0), ("steps", 151), ("steps", "ten"), ("steps", "2.5"), ("width", 63),
                         ("height", 4096), ("cfg_scale", 99), ("batch_size", 100), ("n_iter", 0),
                         ("prompt", [5])]:
        r = t.submit_job(bal.url, t.small_job(**{field: value}), timeout=15)
        ok = t.is_sdgate_error(r, 422)
        t.check("POST /v1/jobs with %s=%r: 422 in sdgate's shape naming field %s" % (field, value, field),
                ok and r.json["error"].get("field") == field, t.describe(r))
    r = t.submit_job(bal.url, t.small_job(prompt="x" * 9000), timeout=15)
    t.check("POST /v1/jobs with a 9000-byte prompt (backend limit 8192): 422", t.is_sdgate_error(r, 422),
            t.describe(r))
    deep = b"[" * 5000 + b"]" * 5000
    r = post_jobs_raw(bal, b'{"prompt": "x", "override_settings": ' + deep + b'}')
    t.check("POST /v1/jobs with 5000-deep nesting: 422 (no crash)", t.is_sdgate_error(r, 422), t.describe(r))
    r = t.submit_job(bal.url, t.small_job(sampler_name="Nope Sampler"), timeout=15)
    t.check("POST /v1/jobs with an unknown sampler: a 4xx sdgate error (404 or 422)",
            r.status in (404, 422) and t.is_sdgate_error(r, r.status), t.describe(r))


def check_404(bal):
    for what, path in [("an unknown 32-hex id", "/v1/jobs/" + "0123456789abcdef" * 2),
                       ("a short id", "/v1/jobs/abc"),
                       ("a non-hex 32-char id", "/v1/jobs/" + "z" * 32),
                       ("a 33-char id", "/v1/jobs/" + "a" * 33),
                       ("a path-traversal id", "/v1/jobs/..%2F..%2Fetc%2Fpasswd")]:
        r = t.request("GET", bal.url + path, timeout=10)
        t.check("GET %s: 404 not_found in sdgate's shape" % what, t.is_sdgate_error(r, 404, "not_found"),
                t.describe(r))
    r = t.request("DELETE", bal.url + "/v1/jobs/" + "f" * 32, timeout=10)
    t.check("DELETE of an unknown job: 404 not_found", t.is_sdgate_error(r, 404, "not_found"), t.describe(r))
    r = t.request("GET", bal.url + "/v1/nothing-here", timeout=10)
    t.check("GET /v1/nothing-here: 404", r.status == 404, t.describe(r))
    r = t.request("PUT", bal.url + "/v1/jobs", json_body={}, timeout=10)
    t.check("PUT /v1/jobs: 404 or 405, not 2xx", r.status in (404, 405), t.describe(r))


def check_413(bal):
    big = b'{"prompt": "' + b"a" * (2 * MIB) + b'"}'
    for path in ("/v1/jobs", "/sdapi/v1/txt2img", "/v1/backends"):
        req = (b"POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
               b"Content-Length: %d\r\n\r\n" % (path.encode(), len(big))) + big
        status, headers, body, err = t.raw_exchange("127.0.0.1", bal.port, req, timeout=30)
        t.check("POST %s with a 2 MiB body: 413" % path, status == 413, (status, body[:200], err))
    req = (b"POST /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
           b"Transfer-Encoding: chunked\r\n\r\n")
    chunk = b"a" * 65536
    body = b'{"prompt": "'
    data = req + b"%x\r\n%s\r\n" % (len(body), body)
    for _ in range(40):  # 2.5 MiB in chunks
        data += b"%x\r\n%s\r\n" % (len(chunk), chunk)
    data += b"0\r\n\r\n"
    status, headers, rbody, err = t.raw_exchange("127.0.0.1", bal.port, data, timeout=30)
    t.check("POST /v1/jobs with a 2.5 MiB chunked body: 413", status == 413, (status, rbody[:200], err))


def main():
    be = t.start_backend("--provider", "bad-input-prov", "--gpu-class", "a100")
    bal = t.start_balancer("--provider-token", "bad-input-token-0123", "--backend", be.url)
    t.check("the backend comes up idle", t.wait_idle_backends(bal.url, 1), t.board(bal.url))
    check_jobs_422(bal)
    check_404(bal)
    check_413(bal)
    r = t.request("POST", bal.url + "/v1/backends", raw_body=b"[", headers={"Authorization": "Bearer bad-input-token-0123"},
                  timeout=10)
    t.check("registration with malformed JSON and the right token: 422", t.is_sdgate_error(r, 422), t.describe(r))

    t.check("the balancer process is still running", bal.running(), bal.log_tail(10))
    r = t.request("GET", bal.url + "/healthz", timeout=10)
    t.check("GET /healthz still 200 with queue 0", r.status == 200 and isinstance(r.json, dict)
            and r.json.get("queue") == 0, t.describe(r))
    r = t.submit_job(bal.url, t.small_job(prompt="still serving", seed=9))
    d = t.wait_job(bal.url, r.json["id"], timeout=30) if r.status == 202 and isinstance(r.json, dict) else None
    t.check("a valid job after all the bad input is done", d is not None and d.get("status") == "done",
            d and d.get("status"))
    m = t.metrics(bal.url)
    t.check("none of the refused requests counted as accepted (sdgate_jobs_accepted_total 1)",
            t.metric(m, "sdgate_jobs_accepted_total") == 1, t.metric(m, "sdgate_jobs_accepted_total"))

    # A client that keeps its connection open (HTTP/1.1 keep-alive, idle) must
    # not stop a clean shutdown.
    keep = t.httpclient.HTTPConnection("127.0.0.1", bal.port, timeout=10)
    keep.request("GET", "/healthz")
    keep.getresponse().read()
    bal.stop(label="the balancer exits 0 on SIGTERM within 10 s while a keep-alive client connection is idle")
    keep.close()


if __name__ == "__main__":
    t.run(main)
