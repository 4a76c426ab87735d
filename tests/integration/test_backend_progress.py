"""test_backend_progress.py — sdgate-backend while a job runs: /progress
(shape, rising progress, sampling_steps, previews, skip_current_image),
/interrupt and /skip, one job at a time, and SIGTERM in the middle of a job.
The backend runs with --pace-ms-per-step (the testing aid) so that a small
job lasts long enough to watch. Contract: ../../docs/architecture.md
"What a backend answers"."""

import base64
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sdtest as t  # noqa: E402

PACE_MS = 100
STATE_KEYS = ["skipped", "interrupted", "job", "job_count", "job_timestamp", "job_no", "sampling_step",
              "sampling_steps"]


def progress(be, skip_image=False):
    r = t.request("GET", be.url + "/sdapi/v1/progress?skip_current_image=%s" % ("true" if skip_image else "false"),
                  timeout=10)
    return r


def progress_shape_ok(p):
    return (isinstance(p, dict) and t.is_number(p.get("progress")) and 0 <= p["progress"] <= 1
            and t.is_number(p.get("eta_relative")) and isinstance(p.get("state"), dict)
            and all(k in p["state"] for k in STATE_KEYS) and "current_image" in p and "textinfo" in p
            and (p["textinfo"] is None or isinstance(p["textinfo"], str))
            and (p["current_image"] is None or isinstance(p["current_image"], str)))


def wait_for_step(be, job, min_step, timeout=30):
    """Polls /progress until sampling_step >= min_step; returns the state or None."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not job.done():
        r = progress(be, skip_image=True)
        st = r.json.get("state") if isinstance(r.json, dict) else None
        if isinstance(st, dict) and t.is_int(st.get("sampling_step")) and st["sampling_step"] >= min_step:
            return st
        time.sleep(0.03)
    return None


def check_idle(be, when):
    r = progress(be)
    p = r.json
    t.check("GET /progress %s: 200, A1111's ProgressResponse shape" % when,
            r.status == 200 and progress_shape_ok(p), t.describe(r))
    t.check("GET /progress %s: progress is 0" % when, isinstance(p, dict) and p.get("progress") == 0,
            t.describe(r))


def check_progress(be):
    check_idle(be, "when idle")
    body = {"prompt": "a blue bird on a branch", "seed": 11, "steps": 30, "width": 64, "height": 64,
            "sampler_name": "DPM++ 2M", "scheduler": "karras"}
    job = t.Background(t.txt2img, be.url, body)
    samples, skipped_samples, previews, preview_errors = [], [], [], []
    n = 0
    while not job.done():
        n += 1
        skip = n % 3 == 0
        try:
            r = progress(be, skip_image=skip)
        except Exception as e:  # noqa: BLE001
            t.check("GET /progress answers while a job runs", False, repr(e))
            break
        if r.status == 200 and isinstance(r.json, dict):
            if job.done():
                break
            (skipped_samples if skip else samples).append(r.json)
            ci = r.json.get("current_image")
            if not skip and isinstance(ci, str) and ci:
                img, err = t.try_decode_png(base64.b64decode(ci))
                (previews if img else preview_errors).append(img or err)
        time.sleep(0.05)
    res, err, secs = job.join()
    reply = res[0] if res else None
    ok = t.check("the paced 30-step job answers 200 with one image",
                 reply is not None and reply.status == 200 and len(t.images_of(reply) or []) == 1,
                 t.describe(reply) if reply else repr(err))
    if ok:
        t.check("the job took at least 30 x %d ms (pace honoured)" % PACE_MS, secs >= 30 * PACE_MS / 1000.0,
                "%.2f s" % secs)
    every = samples + skipped_samples
    t.check("polled /progress at least 10 times during the job", len(every) >= 10, len(every))
    t.check("every /progress during the job has A1111's shape", every and all(progress_shape_ok(p) for p in every),
            t.short([p for p in every if not progress_shape_ok(p)][:2]))
    prog = [p["progress"] for p in samples if isinstance(p, dict) and t.is_number(p.get("progress"))]
    t.check("progress rises above 0 during the job", any(x > 0 for x in prog), prog)
    # The job may end on the server (progress back to 0) before its answer
    # reaches us: trailing zeros are the idle state, not a step back.
    running = list(prog)
    while running and running[-1] == 0:
        running.pop()
    t.check("progress never goes down during a one-image job",
            all(b >= a - 1e-9 for a, b in zip(running, running[1:])), prog)
    steps_seen = [p["state"].get("sampling_steps") for p in every if isinstance(p.get("state"), dict)]
    t.check("state.sampling_steps equals the job's 30 steps",
            any(s == 30 for s in steps_seen) and all(s in (0, 30) for s in steps_seen), steps_seen)
    step_seen = [p["state"].get("sampling_step") for p in every if isinstance(p.get("state"), dict)]
    t.check("state.sampling_step advances during the job (0..30)",
            all(t.is_int(s) and 0 <= s <= 30 for s in step_seen) and max(step_seen or [0]) > min(step_seen or [0]),
            step_seen)
    t.check("state.job_count >= 1 while a job runs",
            any(t.is_int(p["state"].get("job_count")) and p["state"]["job_count"] >= 1 for p in every
                if isinstance(p.get("state"), dict)), t.short(every[:1]))
    t.check("current_image is a decodable PNG preview during the job (skip_current_image=false)",
            len(previews) >= 1 and not preview_errors,
            "%d previews, errors %s" % (len(previews), preview_errors[:3]))
    t.check("current_image is null with skip_current_image=true",
            skipped_samples and all(p.get("current_image") is None for p in skipped_samples),
            t.short([p.get("current_image") for p in skipped_samples][:3], 200))
    check_idle(be, "after the job")
    return secs / 30.0


def check_interrupt(be):
    ref_body = {"prompt": "a green field", "seed": 21, "steps": 5, "width": 64, "height": 64,
                "sampler_name": "Euler a"}
    r, _ = t.txt2img(be.url, ref_body)
    ref = t.images_of(r)
    t.check("reference job answers 200 with one image", r.status == 200 and ref and len(ref) == 1, t.describe(r))

    body = {"prompt": "a long job to interrupt", "seed": 5, "steps": 40, "width": 64, "height": 64,
            "sampler_name": "Euler"}
    job = t.Background(t.txt2img, be.url, body)
    st = wait_for_step(be, job, 3)
    t.check("the 40-step job reaches step 3", st is not None, st)
    t_int = time.monotonic()
    r = t.request("POST", be.url + "/sdapi/v1/interrupt", timeout=10)
    t.check("POST /sdapi/v1/interrupt answers 200 {}", r.status == 200 and r.json == {}, t.describe(r))
    res, err, secs = job.join()
    t_end = time.monotonic()
    reply = res[0] if res else None
    pngs = t.images_of(reply) if reply else None
    img = t.try_decode_png(pngs[0])[0] if pngs and len(pngs) == 1 else None
    t.check("the interrupted job answers 200 with the image produced so far (one decodable 64x64 PNG)",
            reply is not None and reply.status == 200 and img is not None and img.width == 64,
            t.describe(reply) if reply else repr(err))
    left = (40 - (st or {}).get("sampling_step", 0)) * PACE_MS / 1000.0
    t.check("the interrupted job returns well before it would have finished (< 1.5 s after interrupt; "
            "%.1f s of steps were left)" % left, t_end - t_int < 1.5, "%.2f s" % (t_end - t_int))

    r, _ = t.txt2img(be.url, ref_body)
    t.check("the next job runs normally (same PNG bytes as the reference)",
            r.status == 200 and t.images_of(r) == ref, t.describe(r))

    r = t.request("POST", be.url + "/sdapi/v1/interrupt", timeout=10)
    t.check("POST /sdapi/v1/interrupt when idle answers 200 {}", r.status == 200 and r.json == {}, t.describe(r))
    r, secs = t.txt2img(be.url, ref_body)
    t.check("a job after an idle interrupt runs in full (same PNG bytes as the reference)",
            r.status == 200 and t.images_of(r) == ref, t.describe(r))


def check_skip(be, per_step):
    steps = 15
    body = {"prompt": "three small boats", "seed": 31, "steps": steps, "width": 64, "height": 64,
            "n_iter": 3, "batch_size": 1, "sampler_name": "Euler"}
    job = t.Background(t.txt2img, be.url, body)
    st = wait_for_step(be, job, 2)
    t_skip = time.monotonic()
    in_first = st is not None and (t_skip - job.t0) < steps * per_step * 0.8
    t.check("skip is sent during the first image (step >= 2)", in_first,
            "state %s after %.2f s" % (st, t_skip - job.t0))
    r = t.request("POST", be.url + "/sdapi/v1/skip", timeout=10)
    t.check("POST /sdapi/v1/skip answers 200 {}", r.status == 200 and r.json == {}, t.describe(r))
    res, err, secs = job.join()
    t_end = time.monotonic()
    reply = res[0] if res else None
    pngs = (t.images_of(reply) or []) if reply else []
    info = t.info_of(reply) if reply else None
    t.check("after skip the job still answers 200 with all 3 images",
            reply is not None and reply.status == 200 and len(pngs) == 3
            and all(t.try_decode_png(p)[0] is not None for p in pngs),
            t.describe(reply) if reply else repr(err))
    t.check("after skip info.all_seeds is [31, 32, 33]", isinstance(info, dict) and info.get("all_seeds") == [31, 32, 33],
            info and info.get("all_seeds"))
    after = t_end - t_skip
    full_rest = 2 * steps * per_step
    step_at = st.get("sampling_step", 0) if st else 0
    unskipped = full_rest + (steps - step_at) * per_step
    t.check("the skipped image ended early and the other two ran in full "
            "(%.2f s <= time after skip < %.2f s)" % (full_rest * 0.9, full_rest + (unskipped - full_rest) * 0.6),
            full_rest * 0.9 <= after < full_rest + (unskipped - full_rest) * 0.6,
            "%.2f s after skip; per step %.3f s; skipped at step %s" % (after, per_step, step_at))


def check_one_at_a_time(be):
    bodies = [{"prompt": "first of two", "seed": 1, "steps": 10, "width": 64, "height": 64},
              {"prompt": "second of two", "seed": 2, "steps": 10, "width": 64, "height": 64}]
    t0 = time.monotonic()
    jobs = [t.Background(t.txt2img, be.url, b) for b in bodies]
    results = [j.join() for j in jobs]
    wall = time.monotonic() - t0
    replies = [res[0] if res else None for res, _, _ in results]
    t.check("two concurrent txt2img requests both answer 200 with one image",
            all(r is not None and r.status == 200 and len(t.images_of(r) or []) == 1 for r in replies),
            [t.describe(r) if r else repr(e) for (r, (_, e, _)) in zip(replies, results)])
    need = 2 * 10 * PACE_MS / 1000.0
    t.check("their generation does not overlap (both took >= %.1f s of pace in total)" % need,
            wall >= need * 0.97, "%.2f s for both" % wall)
    ends = sorted(j.t1 for j in jobs if j.t1)
    t.check("the second answer comes at least one job's pace after the first",
            len(ends) == 2 and ends[1] - ends[0] >= 10 * PACE_MS / 1000.0 * 0.9,
            ends and "%.2f s apart" % (ends[-1] - ends[0]))


def check_no_crosstalk(be):
    """Several clients at once: each gets its own job's image, none is lost."""
    bodies = [{"prompt": p, "seed": 40 + i, "steps": 3, "width": 64, "height": 64, "sampler_name": s}
              for i, (p, s) in enumerate([("a red apple", "Euler a"), ("a blue car", "DPM++ 2M Karras"),
                                          ("a green tree", "Heun"), ("a yellow sun", "DDIM"),
                                          ("a white cloud", "LMS")])]
    jobs = [t.Background(t.txt2img, be.url, b) for b in bodies]
    got = []
    for j in jobs:
        res, err, _ = j.join()
        got.append(t.images_of(res[0]) if res and res[0].status == 200 else None)
    t.check("five concurrent jobs all answer 200 with one image", all(g and len(g) == 1 for g in got),
            [None if g is None else len(g) for g in got])
    same = []
    for b, g in zip(bodies, got):
        r, _ = t.txt2img(be.url, b)
        same.append(g is not None and r.status == 200 and t.images_of(r) == g)
    t.check("each concurrent job's image equals the same request run alone (no cross-talk)", all(same), same)


def check_interrupt_batch(be):
    body = {"prompt": "a batch to interrupt", "seed": 60, "steps": 10, "width": 64, "height": 64, "n_iter": 3}
    job = t.Background(t.txt2img, be.url, body)
    st = wait_for_step(be, job, 3)
    t_int = time.monotonic()
    r = t.request("POST", be.url + "/sdapi/v1/interrupt", timeout=10)
    t.check("POST /sdapi/v1/interrupt during the first image of a 3-image job answers 200 {}",
            st is not None and r.status == 200 and r.json == {}, "%s; state %s" % (t.describe(r), st))
    res, err, _ = job.join()
    t_end = time.monotonic()
    reply = res[0] if res else None
    pngs = (t.images_of(reply) or []) if reply else []
    t.check("the interrupted batch answers 200 with the images produced so far (1 or 2 of 3, decodable)",
            reply is not None and reply.status == 200 and 1 <= len(pngs) < 3
            and all(t.try_decode_png(p)[0] is not None for p in pngs), t.describe(reply) if reply else repr(err))
    t.check("the interrupted batch returns early (< 1.5 s after interrupt; 2.7 s of steps were left)",
            t_end - t_int < 1.5, "%.2f s" % (t_end - t_int))


def check_sigterm_mid_job(be):
    body = {"prompt": "a job cut short by SIGTERM", "seed": 9, "steps": 100, "width": 64, "height": 64}
    job = t.Background(t.txt2img, be.url, body, timeout=30)
    st = wait_for_step(be, job, 2)
    t.check("the 100-step job is running before SIGTERM", st is not None, st)
    rc, took = be.stop(timeout=5, label="SIGTERM in the middle of a job: exit code 0 within 5 s")
    res, err, secs = job.join(timeout=10)
    t.check("the client of the cut job gets an answer or a closed connection, no hang",
            job.done(), "client still waiting")
    print("# SIGTERM mid-job: exit after %.2f s; client got %s" % (
        took, t.describe(res[0]) if res else repr(err)))


def main():
    be = t.start_backend("--pace-ms-per-step", str(PACE_MS), "--provider", "progress-prov",
                         name="backend-progress")
    per_step = check_progress(be)
    check_interrupt(be)
    check_skip(be, per_step)
    check_interrupt_batch(be)
    check_one_at_a_time(be)
    check_no_crosstalk(be)
    check_sigterm_mid_job(be)


if __name__ == "__main__":
    t.run(main)
