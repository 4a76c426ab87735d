"""test_balancer_cancel.py — cancelling: DELETE /v1/jobs/{id} on a running
job answers 200 {id, status cancelled}, the backend is interrupted (it goes
idle long before the job would have ended), subscribers get cancelled {},
a second DELETE is 409 already_finished; a queued job is cancelled without
ever reaching a backend; the backend then serves the next job normally.
On the façade: POST /sdapi/v1/interrupt stops the caller's job (a client
with an API key), whose txt2img answers 200 with what was made, as A1111's
does; a client that hangs up cancels its job.
Contract: ../../docs/jobs-api.md "Jobs", ../../balancer/README.md "A1111 façade"."""

import base64
import json
import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sdtest as t  # noqa: E402

PACE_MS = 100
LONG_STEPS = 150  # 15 s of pace: "idle soon" below means well before that
IDLE_WITHIN_S = 8


def wait_running_on(bal, be, jid, min_step=2):
    d = t.wait_job(bal.url, jid, statuses=("running",) + t.FINAL_STATES, timeout=30)
    if not d or d.get("status") != "running":
        return None
    return t.wait_until(lambda: t.backend_step(be) >= min_step, 30)


def check_delete_running(bal, be):
    r = t.submit_job(bal.url, t.small_job(prompt="cancel me while running", seed=1, steps=LONG_STEPS))
    jid = r.json.get("id") if r.status == 202 and isinstance(r.json, dict) else None
    ok = t.check("a long job is accepted (202)", jid is not None, t.describe(r))
    if not ok:
        return
    ev = t.EventStream(bal.url + "/v1/jobs/%s/events" % jid)
    ok = t.check("it runs on the backend (step >= 2)", wait_running_on(bal, be, jid), t.get_job(bal.url, jid))
    if not ok:
        return
    t0 = time.monotonic()
    r = t.request("DELETE", bal.url + "/v1/jobs/%s" % jid, timeout=10)
    t.check("DELETE /v1/jobs/{id} of the running job: 200 {id, status cancelled}",
            r.status == 200 and r.json == {"id": jid, "status": "cancelled"}, t.describe(r))
    d = t.get_job(bal.url, jid)
    t.check("GET /v1/jobs/{id} then shows status cancelled", d is not None and d.get("status") == "cancelled", d)
    idle = t.wait_until(lambda: t.backend_idle(be), IDLE_WITHIN_S, 0.05)
    took = time.monotonic() - t0
    t.check("the backend goes idle soon after (interrupted: within %d s; %d s of steps were left)"
            % (IDLE_WITHIN_S, LONG_STEPS * PACE_MS // 1000 - 1), idle, "%.2f s, progress %s" % (
                took, t.backend_progress(be)))
    ev.wait_end(15)
    t.check("the job's event stream ends with cancelled", ev.names()[-1:] == ["cancelled"], ev.names())
    r = t.request("DELETE", bal.url + "/v1/jobs/%s" % jid, timeout=10)
    t.check("a second DELETE: 409 already_finished", t.is_sdgate_error(r, 409, "already_finished"), t.describe(r))
    late = t.EventStream(bal.url + "/v1/jobs/%s/events" % jid)
    late.wait_end(15)
    t.check("a late subscriber gets cancelled and the stream ends", late.names() == ["cancelled"], late.names())
    brd = t.wait_board(bal.url, lambda bs: all(x.get("state") == "idle" for x in bs), 15)
    t.check("the board shows the backend idle again", brd and all(x.get("state") == "idle" for x in brd), brd)
    r = t.submit_job(bal.url, t.small_job(prompt="after the cancel", seed=2))
    d = t.wait_job(bal.url, r.json["id"], timeout=30) if r.status == 202 and isinstance(r.json, dict) else None
    t.check("the next job runs normally (done, seed 2)", d is not None and d.get("status") == "done"
            and d.get("seed") == 2, d and {k: v for k, v in d.items() if k != "result"})


def check_delete_queued(bal, be):
    done0 = (t.request("GET", be.url + "/sdgate/v1/info", timeout=10).json or {}).get("jobs_done")
    ra = t.submit_job(bal.url, t.small_job(prompt="keeps the backend busy", seed=3, steps=20))
    a = ra.json.get("id") if ra.status == 202 and isinstance(ra.json, dict) else None
    wait_running_on(bal, be, a, 1)
    rb = t.submit_job(bal.url, t.small_job(prompt="cancelled while queued", seed=4, steps=5))
    b = rb.json.get("id") if rb.status == 202 and isinstance(rb.json, dict) else None
    d = t.get_job(bal.url, b) if b else None
    t.check("a second job waits queued (position 1)", d is not None and d.get("status") == "queued"
            and d.get("position") == 1, d)
    r = t.request("DELETE", bal.url + "/v1/jobs/%s" % b, timeout=10) if b else None
    t.check("DELETE of the queued job: 200 {id, status cancelled}",
            r is not None and r.status == 200 and r.json == {"id": b, "status": "cancelled"}, t.describe(r))
    da = t.wait_job(bal.url, a, timeout=30)
    t.check("the running job is not disturbed (done)", da is not None and da.get("status") == "done", da and
            da.get("status"))
    d = t.get_job(bal.url, b)
    t.check("the cancelled queued job stays cancelled, never dispatched (attempt 0, no provider)",
            d is not None and d.get("status") == "cancelled" and not d.get("attempt") and not d.get("provider"), d)
    info = t.request("GET", be.url + "/sdgate/v1/info", timeout=10).json
    t.check("the backend ran only the first job (jobs_done +1, nothing queued, idle): the cancelled one never "
            "reached it", isinstance(info, dict) and t.is_int(done0) and info.get("jobs_done") == done0 + 1
            and info.get("queued") == 0 and t.backend_idle(be), (done0, info))


def check_facade_interrupt(bal, be):
    # The caller's job: an A1111 client with --api-auth credentials (Basic, as
    # webuiapi's set_auth sends them); anonymous interrupts stop nothing.
    auth = {"Authorization": "Basic " + base64.b64encode(b"alice:cancel-test").decode()}
    body = t.small_job(prompt="façade job to interrupt", seed=5, steps=LONG_STEPS)
    job = t.Background(t.request, "POST", bal.url + "/sdapi/v1/txt2img", json_body=body, headers=auth, timeout=60)
    step = t.wait_until(lambda: t.backend_step(be) >= 2, 30)
    t.check("the façade job runs on the backend", step, t.backend_progress(be))
    r = t.request("POST", bal.url + "/sdapi/v1/interrupt", headers=auth, timeout=10)
    t.check("POST /sdapi/v1/interrupt on the balancer: 200", r.status == 200, t.describe(r))
    idle = t.wait_until(lambda: t.backend_idle(be), IDLE_WITHIN_S, 0.05)
    t.check("the backend goes idle soon after the façade interrupt", idle, t.backend_progress(be))
    reply, err, secs = job.join(30)
    t.check("the interrupted façade request gets an answer (no hang)", job.done(), repr(err))
    # docs/a1111-facade.md "Interrupt and skip": as A1111, 200 with the image
    # the backend made before it stopped.
    t.check("…200 with what was made, one image (the client waited %.2f s in all)" % (secs or 0),
            reply is not None and reply.status == 200 and len(t.images_of(reply) or []) == 1,
            t.describe(reply) if reply else repr(err))


def check_client_hangup(bal, be):
    m0 = t.metrics(bal.url)
    body = json.dumps(t.small_job(prompt="a client that hangs up", seed=6, steps=LONG_STEPS)).encode()
    s = socket.create_connection(("127.0.0.1", bal.port), timeout=10)
    s.sendall(b"POST /sdapi/v1/txt2img HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Content-Length: %d\r\n\r\n" % len(body) + body)
    step = t.wait_until(lambda: t.backend_step(be) >= 2, 30)
    t.check("the façade job of the raw client runs", step, t.backend_progress(be))
    s.close()
    idle = t.wait_until(lambda: t.backend_idle(be), IDLE_WITHIN_S, 0.05)
    t.check("after the client hangs up the backend goes idle soon (its job was cancelled)", idle,
            t.backend_progress(be))
    m1 = t.wait_until(lambda: (lambda m: m if t.metric(m, "sdgate_jobs_total", 0, outcome="cancelled") >
                               t.metric(m0, "sdgate_jobs_total", 0, outcome="cancelled") else None)(
        t.metrics(bal.url)), 10, 0.1)
    t.check("sdgate_jobs_total{outcome=cancelled} counts the hung-up job", m1, m1 and t.metric(
        m1, "sdgate_jobs_total", outcome="cancelled"))


def main():
    be = t.start_backend("--pace-ms-per-step", PACE_MS, "--provider", "cancel-prov", "--gpu-class", "a100")
    bal = t.start_balancer("--progress-interval-ms", 100, "--backend", be.url)
    t.check("the backend comes up idle", t.wait_idle_backends(bal.url, 1), t.board(bal.url))
    check_delete_running(bal, be)
    check_delete_queued(bal, be)
    check_facade_interrupt(bal, be)
    check_client_hangup(bal, be)
    m = t.metrics(bal.url)
    t.check("at the end: queue depth 0, nothing running, 2 cancelled via DELETE (and more via the façade)",
            t.metric(m, "sdgate_queue_depth") == 0 and t.metric(m, "sdgate_jobs_running") == 0
            and t.metric(m, "sdgate_jobs_total", 0, outcome="cancelled") >= 2,
            {k: v for k, v in m.items() if "jobs" in k[0] or "queue" in k[0]})


if __name__ == "__main__":
    t.run(main)
