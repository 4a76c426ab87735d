"""test_balancer_sse_resume.py — GET /v1/jobs/{id}/events with ids and
Last-Event-ID: every event has an increasing id and the stream starts with a
retry: hint; a reader that drops and comes back with Last-Event-ID gets
exactly what it missed (state events all, progress coalesced to the latest),
then the live events, the final one once; after the job finished it gets the
final event, and 204 when it already has it (also with ?last_event_id=);
the same after a restart on the same --db (the final event keeps its id),
and an unfinished job's ids after a restart, even one after kill -9, are
above every id given before; malformed or unknown ids get the current state.
Contract: ../../docs/jobs-api.md "Resuming a stream"."""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sdtest as t  # noqa: E402

PACE_MS = 100
STEPS = 30  # 3 s at the pace


def events_of(stream):
    """[(id as int or None, name, data)] of a stream."""
    with stream._cv:
        pairs = list(zip(stream.ids, stream.events))
    return [(int(i) if isinstance(i, str) and i.isdigit() else None, e[0], e[1]) for i, e in pairs]


def increasing(ids):
    return all(isinstance(i, int) for i in ids) and all(b > a for a, b in zip(ids, ids[1:]))


def stream(bal, job_id, last=None, query=None):
    headers = {"Last-Event-ID": last} if last is not None else None
    url = bal.url + "/v1/jobs/%s/events" % job_id + ("?last_event_id=%s" % query if query is not None else "")
    return t.EventStream(url, headers=headers)


def ended_stream(bal, job_id, last=None, query=None, timeout=15):
    s = stream(bal, job_id, last, query)
    s.wait_end(timeout)
    return s


def short(evs):
    return [(i, n, {k: v for k, v in d.items() if k not in ("preview", "images", "info")} if isinstance(d, dict)
             else d) for i, n, d in evs]


def brief(s):
    return "status %r, %s" % (s.status, short(events_of(s)))


def main():
    be = t.start_backend("--pace-ms-per-step", PACE_MS, "--provider", "resume-prov", "--gpu-class", "a6000",
                         name="backend-resume")
    bal = t.start_balancer("--progress-interval-ms", 50, "--backend", be.url)
    t.check("the backend comes up idle", t.wait_idle_backends(bal.url, 1), t.board(bal.url))

    # Job A holds the backend, so that job B starts queued.
    ra = t.submit_job(bal.url, t.small_job(prompt="ahead", seed=1, steps=20))
    a = ra.json.get("id") if ra.status == 202 and isinstance(ra.json, dict) else None
    t.wait_job(bal.url, a, statuses=("running",) + t.FINAL_STATES, timeout=30)
    rb = t.submit_job(bal.url, t.small_job(prompt="resumed", seed=2, steps=STEPS))
    b = rb.json.get("id") if rb.status == 202 and isinstance(rb.json, dict) else None
    if not t.check("jobs A and B are accepted", a and b, (t.describe(ra), t.describe(rb))):
        return

    # The witness reads B's whole stream; the reader drops mid-job and comes back.
    full = stream(bal, b)
    part = stream(bal, b)
    t.check("the stream opens 200 with a retry: hint of 1000 ms",
            part.wait_headers() == 200 and part.wait_for(lambda evs: len(evs) >= 1, 10) and part.retry == "1000",
            (part.status, part.retry))
    got = part.wait_for(lambda evs: sum(1 for e in evs if e[0] == "progress") >= 3, 60)
    part.close()
    part.wait_end(10)
    seen = events_of(part)
    t.check("the reader saw queued, assigned and 3 progress events before it dropped",
            got and [n for _, n, _ in seen][:2] == ["queued", "assigned"], short(seen))
    last = seen[-1][0] if seen else None
    t.check("each of its events has an id, increasing", seen and increasing([i for i, _, _ in seen]), short(seen))
    time.sleep(0.6)  # progress goes on while it is away
    resumed = stream(bal, b, last=str(last))
    t.check("the resumed stream ends with the job", resumed.wait_end(60), brief(resumed))
    t.check("the witness's stream ends with the job", full.wait_end(60), brief(full))
    fe, re_ = events_of(full), events_of(resumed)
    by_id = {i: (n, d) for i, n, d in fe}
    fids = [i for i, _, _ in fe]
    t.check("the witness's ids increase, one per event, and its events run queued → assigned → progress → done",
            increasing(fids) and [n for _, n, _ in fe][:2] == ["queued", "assigned"] and fe[-1][1] == "done"
            and len(by_id) == len(fe), short(fe))
    t.check("every event the reader got is the witness's event of the same id (same name, same data)",
            all(by_id.get(i) == (n, d) for i, n, d in seen + re_), (short(seen), short(re_)))
    rids = [i for i, _, _ in re_]
    t.check("the resumed stream's ids increase and are all above the Last-Event-ID %s" % last,
            re_ and increasing(rids) and all(i > last for i in rids), short(re_))
    t.check("no event comes twice across the two connections", not set(rids) & {i for i, _, _ in seen},
            (short(seen), short(re_)))
    got_ids = set(rids)
    first_progress = min([i for i, n, _ in re_ if n == "progress"] or [0])
    missing = [(i, n) for i, n, _ in fe if i > last and i not in got_ids]
    t.check("nothing after the Last-Event-ID is lost: what the resumed stream lacks is only progress coalesced "
            "into its first progress event (%d of the witness's events after it, %d missed)"
            % (sum(1 for i in fids if i > last), len(missing)),
            all(n == "progress" and i < first_progress for i, n in missing) and first_progress, missing)
    dones = [e for e in seen + re_ if e[1] == "done"]
    t.check("the final event comes once, last", len(dones) == 1 and re_[-1][1] == "done", short(seen + re_))
    done_id, done_data = (fe[-1][0], fe[-1][2]) if fe else (None, None)
    assigned_id = next((i for i, n, _ in fe if n == "assigned"), None)

    # After the job finished.
    r = ended_stream(bal, b, last=str(last))
    t.check("resuming a finished job gets its final event (the same id and data) and the stream ends",
            r.ended and events_of(r) == [(done_id, "done", done_data)], brief(r))
    r = ended_stream(bal, b, last=str(assigned_id))
    t.check("... also from its assigned event's id", events_of(r) == [(done_id, "done", done_data)], brief(r))
    r = ended_stream(bal, b)
    t.check("... and with no Last-Event-ID", events_of(r) == [(done_id, "done", done_data)], brief(r))
    r = t.request("GET", bal.url + "/v1/jobs/%s/events" % b, headers={"Last-Event-ID": str(done_id)}, timeout=10)
    t.check("a reader that has the final event gets 204 No Content (EventSource stops reconnecting)",
            r.status == 204 and r.raw == b"", t.describe(r))
    r = t.request("GET", bal.url + "/v1/jobs/%s/events?last_event_id=%d" % (b, done_id), timeout=10)
    t.check("... the same with ?last_event_id=", r.status == 204, t.describe(r))
    r = ended_stream(bal, b, query=str(last))
    t.check("?last_event_id= before the end gets the final event", events_of(r) == [(done_id, "done", done_data)],
            brief(r))

    # Hostile Last-Event-IDs on a running job: its current state, never an error.
    rc = t.submit_job(bal.url, t.small_job(prompt="hostile readers", seed=3, steps=60))
    c = rc.json.get("id") if rc.status == 202 and isinstance(rc.json, dict) else None
    t.wait_until(lambda: t.backend_step(be) >= 2, 30)
    hostile = ["abc", "-1", "1e3", "0x10", "12 34", "99999999999999999999", "9007199254740992", "7" * 4000,
               "%d" % (2 ** 63), "\u00e9t\u00e9"]
    bad = []
    for h in hostile:
        s = stream(bal, c, last=h)
        ok = s.wait_headers() == 200 and s.wait_for(lambda evs: len(evs) >= 1, 10)
        evs = events_of(s)
        s.close()
        if not ok or not evs or evs[0][1] != "assigned" or not increasing([i for i, _, _ in evs]):
            bad.append((h[:20], brief(s)))
    t.check("a malformed, huge or too long Last-Event-ID (%d kinds) is ignored: 200, the current state (assigned "
            "first)" % len(hostile), not bad, bad)
    s = stream(bal, c, query="-5")
    t.check("... and a malformed ?last_event_id= too",
            s.wait_for(lambda evs: len(evs) >= 1, 10) and events_of(s)[0][1] == "assigned", brief(s))
    s.close()
    fut = stream(bal, c, last="900000000000000")
    t.check("an id the job never gave (a future one) gets the current state",
            fut.wait_for(lambda evs: len(evs) >= 1, 10) and events_of(fut)[0][1] == "assigned", brief(fut))
    fut.close()
    zero = stream(bal, c, last="0")
    t.check("Last-Event-ID 0 replays every kept event from queued",
            zero.wait_for(lambda evs: len(evs) >= 2, 10) and [n for _, n, _ in events_of(zero)][:2]
            == ["queued", "assigned"], brief(zero))
    zero.close()
    t.check("the balancer is healthy after them", t.request("GET", bal.url + "/healthz", timeout=10).status == 200)
    t.request("DELETE", bal.url + "/v1/jobs/%s" % c, timeout=10)
    t.wait_job(bal.url, c, timeout=60)

    # A restart on the same --db: the finished job's final event keeps its id.
    bal.stop(label="the balancer exits 0 on SIGTERM")
    bal2 = t.start_balancer("--progress-interval-ms", 50, "--backend", be.url, name="balancer-2", db=bal.db)
    r = ended_stream(bal2, b, last=str(last))
    t.check("after a restart, resuming the finished job gets its final event with the same id and images",
            [(i, n) for i, n, _ in events_of(r)] == [(done_id, "done")]
            and events_of(r)[0][2].get("images") == done_data.get("images"), brief(r))
    r = t.request("GET", bal2.url + "/v1/jobs/%s/events" % b, headers={"Last-Event-ID": str(done_id)}, timeout=10)
    t.check("... and 204 to a reader that has it", r.status == 204, t.describe(r))

    # An unfinished job across kill -9: its new ids are above every id it gave.
    t.wait_idle_backends(bal2.url, 1)
    rd = t.submit_job(bal2.url, t.small_job(prompt="across a crash", seed=4, steps=20))
    d = rd.json.get("id") if rd.status == 202 and isinstance(rd.json, dict) else None
    sd = stream(bal2, d)
    sd.wait_for(lambda evs: sum(1 for e in evs if e[0] == "progress") >= 3, 30)
    bal2.kill()
    sd.wait_end(10)
    before = events_of(sd)
    top = max([i for i, _, _ in before if i] or [0])
    t.check("job D's stream gave progress before the kill -9", any(n == "progress" for _, n, _ in before),
            short(before))
    bal3 = t.start_balancer("--progress-interval-ms", 50, "--backend", be.url, name="balancer-3", db=bal.db)
    after = ended_stream(bal3, d, last=str(top), timeout=60)
    ae = events_of(after)
    t.check("after the restart, resuming job D gets ids all above %d, increasing, from queued to done once" % top,
            ae and increasing([i for i, _, _ in ae]) and ae[0][0] > top and ae[0][1] == "queued"
            and [n for _, n, _ in ae].count("done") == 1 and ae[-1][1] == "done", short(ae))
    r = ended_stream(bal3, b)
    t.check("job B's final event still has its id after two restarts", [(i, n) for i, n, _ in events_of(r)]
            == [(done_id, "done")], brief(r))


if __name__ == "__main__":
    t.run(main)
