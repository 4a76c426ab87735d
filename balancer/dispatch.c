/* dispatch.c — runs the router over the queue and carries each dispatch
 * through: POST txt2img to the backend, progress polling, the answer (done,
 * rejected, or a failure that marks the backend down and queues the job again
 * at the front, up to --max-attempts), cancellation and timeouts.
 * Loop thread only. */
#include "balancer.h"

#include "answer.h"
#include "forward.h"
#include "image.h"
#include "log.h"
#include "router.h"
#include "utf8.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* A conservative speed for a backend not measured yet, used only for its
 * timeout: about a slow GPU's SDXL (1024², ~3 s per step). */
#define SPP_PRIOR 3e-6
#define NO_BACKEND_GRACE_S 120.0 /* a queued job whose backends all went down waits this long */
#define INTERRUPT_TIMEOUT_MS 5000
#define DRAIN_POLL_S 0.2
#define DRAIN_MAX_S 30.0
#define SCHEDULE_EVERY_S 0.02
#define PACE_FROM 0.25 /* the share of a job done from which its backend's pace predicts the rest */

/* F x the expected time, within [--min-job-timeout-s, --max-job-timeout-s]:
 * the largest job on a backend not measured yet would otherwise hold a slot
 * (and its client) for days when the backend never answers. */
static double timeout_s(struct balancer *b, const struct bk *k, const struct job *j)
{
	double t = b->cfg.job_timeout_factor * (k->spp > 0 ? k->spp : SPP_PRIOR) * j->work;
	return fmin(fmax(t, b->cfg.min_job_timeout_s), b->cfg.max_job_timeout_s);
}

/* The most a txt2img answer for j may weigh, checked before any of it is
 * parsed or decoded: per image, the base64 of an uncompressed RGBA PNG
 * (4 bytes a pixel, a filter byte a row, deflate's stored blocks and chunk
 * headers under 1 %) and 64 KiB of other chunks (A1111's parameters text);
 * around them, 8 x the request per image and 1 MiB for the JSON (A1111 echoes
 * the prompts in "parameters" and in info's all_prompts and infotexts). A
 * JPEG or WebP is smaller. Never more than BAL_MAX_ANSWER. */
static size_t answer_cap(const struct job *j, size_t request_len)
{
	double file = (j->pixels * 4 + j->n_images * (IMAGE_MAX_SIDE + 65536.0)) * 1.01;
	double cap = file * 4 / 3 + 8.0 * (double)request_len * (j->n_images + 1) + (1 << 20);
	return cap < BAL_MAX_ANSWER ? (size_t)cap : BAL_MAX_ANSWER;
}

static void promote(struct balancer *b, struct bk *k, int slot);
static void lease_return(struct balancer *b, const char *key, int slot);
static void requeue_behind(struct balancer *b, struct bk *k, int slot);

/* The slot of k where j runs, or -1 (queued, or waiting behind another). */
static int running_slot(const struct bk *k, const struct job *j)
{
	for (int s = 0; k && s < BAL_MAX_SLOTS; s++)
		if (k->jobs[s] == j)
			return s;
	return -1;
}

/* j leaves its backend. A job sent behind it (prefetch) then runs there when
 * j ended as the backend meant (done, or refused by it: `ok`); otherwise it
 * goes back to the front of the queue, so that no interrupt or failure meant
 * for j reaches it. */
static void give_back(struct balancer *b, struct bk *k);

static void release_slot(struct balancer *b, struct job *j, int ok)
{
	struct bk *k = j->bk;
	if (!k)
		return;
	for (int s = 0; s < BAL_MAX_SLOTS; s++) {
		if (k->behind[s] == j)
			k->behind[s] = NULL;
		if (k->jobs[s] == j) {
			k->jobs[s] = NULL;
			k->freed_at[s] = bal_now();
			if (k->behind[s] && ok)
				promote(b, k, s);
			else if (k->behind[s])
				requeue_behind(b, k, s);
		}
	}
	k->running--;
	b->running--;
	j->bk = NULL;
	give_back(b, k);
	fetch_cancel(j->call);
	fetch_cancel(j->poll);
	j->call = j->poll = NULL;
	b->reschedule = 1;
}

/* Draining a backend after a cancel: POST interrupt, then GET progress;
 * idle (A1111's job_count 0) ends it, otherwise interrupt again shortly.
 * Until then the backend counts as busy, so that the next job does not queue
 * behind the one being stopped. */
static void drain_answer(const struct fetch_result *r, void *user)
{
	struct bk *k = user;
	struct balancer *b = k->b;
	k->drain_call = NULL;
	if (k->drain_step == 0) {
		k->drain_step = 1;
		k->drain_next = 0; /* poll at once */
		return;
	}
	struct answer_progress ap = {0};
	json_t *p = r->status == 200 ? answer_parse_progress(r->body, r->len, &ap) : NULL;
	json_decref(p);
	if (ap.idle) {
		k->draining = 0;
		give_back(b, k);
		b->reschedule = 1;
		return;
	}
	k->drain_step = 0;
	k->drain_next = bal_now() + DRAIN_POLL_S;
}

static void drain_tick(struct balancer *b, struct bk *k, double now)
{
	if (k->drain_call || now < k->drain_next)
		return;
	if (now > k->drain_deadline) {
		log_warn("backend %s still busy %.0f s after an interrupt; using it again", k->id, DRAIN_MAX_S);
		k->draining = 0;
		give_back(b, k);
		b->reschedule = 1;
		return;
	}
	k->drain_call = registry_call(b, k, k->drain_step == 0 ? "POST" : "GET",
				      k->drain_step == 0 ? "/sdapi/v1/interrupt"
							 : "/sdapi/v1/progress?skip_current_image=true",
				      NULL, 0, INTERRUPT_TIMEOUT_MS, BAL_MAX_SMALL_ANSWER, drain_answer, k);
}

static void interrupt_backend(struct balancer *b, struct bk *k)
{
	double now = bal_now();
	if (!k->draining) {
		k->draining = 1;
		k->drain_deadline = now + DRAIN_MAX_S;
	}
	k->drain_step = 0;
	k->drain_next = now;
	drain_tick(b, k, now);
}

/* A failed dispatch: the job goes back to the front of the queue, or fails
 * once it has used its attempts. */
static void queue_again(struct balancer *b, struct job *j)
{
	jobs_enqueue(b, j, 1); /* its queued event too */
	if (!j->facade || j->idem_key[0]) /* a keyed façade job is another balancer's to read and take over */
		jobs_save(b, j, NULL, NULL);
}

static void retry_or_fail(struct balancer *b, struct job *j, const char *why)
{
	release_slot(b, j, 0);
	if (j->interrupted) { /* its client stopped it: nothing to run again */
		jobs_finish_cancelled(b, j);
		return;
	}
	if (j->attempt >= b->cfg.max_attempts) {
		char msg[512];
		snprintf(msg, sizeof msg, "All %d attempts failed; the last: %s", j->attempt, why);
		jobs_finish_failed(b, j, SDE_BACKEND_FAILED, msg);
		return;
	}
	b->m.retries++;
	log_info("job %s: attempt %d failed (%s); queued again", j->id, j->attempt, why);
	queue_again(b, j);
}

/* The job behind k's slot never started: it goes back to the front of the
 * queue, its attempt not counted; its call is dropped (a native backend then
 * skips it; an A1111 runs it for nobody, as for any client that hangs up). */
static void requeue_behind(struct balancer *b, struct bk *k, int slot)
{
	struct job *j = k->behind[slot];
	k->behind[slot] = NULL;
	k->running--;
	b->running--;
	j->bk = NULL;
	fetch_cancel(j->call);
	j->call = NULL;
	j->attempt--;
	log_info("job %s: taken back from behind the job on %s", j->id, k->id);
	queue_again(b, j);
}

static void backend_failed(struct balancer *b, struct job *j, const char *why)
{
	struct bk *k = j->bk;
	if (k) {
		k->jobs_failed++;
		registry_mark_down(b, k, why);
	}
	retry_or_fail(b, j, why);
}

static void learn_class(struct balancer *b, const char *cls, double seconds)
{
	json_t *e = json_object_get(b->m.inference_by_class, cls);
	if (!e) {
		e = json_pack("[f,i]", 0.0, 0);
		json_object_set_new(b->m.inference_by_class, cls, e);
	}
	json_array_set_new(e, 0, json_real(json_real_value(json_array_get(e, 0)) + seconds));
	json_array_set_new(e, 1, json_integer(json_integer_value(json_array_get(e, 1)) + 1));
}

/* The A1111 answer with info.sdgate set from the registry (authoritative for
 * identity) and the backend's own inference time when it reports one. */
static json_t *build_result(struct balancer *b, struct job *j, struct bk *k, json_t *answer, double elapsed)
{
	json_t *info = answer_info(answer);
	double reported = answer_reported_inference(info);
	double inference = reported >= 0 ? reported : elapsed;
	j->inference_s = inference;
	j->inference_ms = (long)(inference * 1000.0);
	json_object_set_new(info, "sdgate",
			    json_pack("{s:s,s:s,s:s,s:s,s:s,s:f,s:f,s:i,s:s}", "provider", bk_str(k, "provider"),
				      "location", bk_str(k, "location"), "gpu", bk_str(k, "gpu_class"), "gpu_name",
				      bk_str(k, "gpu"), "backend", k->id, "inference_time", inference, "queue_time",
				      j->queue_ms / 1000.0, "attempt", j->attempt, "job_id", j->id));
	char *text = json_dumps(info, JSON_COMPACT);
	json_decref(info);
	json_t *params = json_object_get(answer, "parameters");
	params = json_is_object(params) ? json_incref(params) : json_object();
	json_t *res = json_pack("{s:O,s:O,s:o,s:s}", "images", json_object_get(answer, "images"), "image_types",
				json_object_get(answer, "image_types"), "parameters", params, "info",
				text ? text : "{}");
	free(text);
	return res;
}

static void on_call(const struct fetch_result *r, void *user)
{
	struct job *j = user;
	struct bk *k = j->bk;
	struct balancer *b = k->b;
	j->call = NULL;
	if (r->status == 200) {
		json_t *a = answer_parse_txt2img(r->body, r->len, &j->files);
		if (a) {
			/* from its start: a job sent behind another waited in the call */
			double took = fmin(r->elapsed_s, bal_now() - j->started);
			json_t *res = build_result(b, j, k, a, took);
			json_decref(a);
			/* Checkpoint loading is counted apart (router_switch_s). */
			double run = fmax(took - j->switch_s, 0.5 * took);
			k->spp = router_learn(k->spp, k->samples++, run / fmax(j->work, 1));
			k->jobs_done++;
			k->strikes = 0;
			k->inference_sum += j->inference_s;
			learn_class(b, bk_str(k, "gpu_class"), j->inference_s);
			release_slot(b, j, 1);
			log_info("job %s done on %s (%s) in %.3f s, attempt %d", j->id, k->id, bk_str(k, "provider"),
				 r->elapsed_s, j->attempt);
			jobs_finish_done(b, j, res);
			return;
		}
		if (j->interrupted) { /* stopped before an image was made: nothing is wrong with the backend */
			release_slot(b, j, 1);
			jobs_finish_cancelled(b, j);
			return;
		}
		backend_failed(b, j, "malformed txt2img answer");
		return;
	}
	if (r->status == 401 || r->status == 403) {
		/* Not the request's fault: the backend does not take jobs from this
		 * balancer (yet: one that has just registered may not have stored
		 * its token when the first job comes). Another backend runs it. */
		backend_failed(b, j,
			       r->status == 401 ? "txt2img answered HTTP 401: not authenticated by the backend"
						: "txt2img answered HTTP 403: refused by the backend");
		return;
	}
	if (r->status >= 400 && r->status < 500 && r->status != 408 && r->status != 409 && r->status != 429) {
		/* The request itself is wrong for this backend; retrying elsewhere
		 * would only repeat it. */
		char said[401], msg[600];
		utf8_copy(said, sizeof said, r->body, r->len); /* whole characters: it becomes JSON */
		snprintf(msg, sizeof msg, "The backend refused the request (HTTP %ld): %s", r->status, said);
		release_slot(b, j, 1);
		jobs_finish_failed(b, j, SDE_REJECTED, msg);
		return;
	}
	char why[320];
	if (r->status)
		snprintf(why, sizeof why, "txt2img answered HTTP %ld", r->status);
	else
		snprintf(why, sizeof why, "txt2img: %s", r->error);
	if (r->status == 0 && k)
		interrupt_backend(b, k); /* a timeout may leave it working */
	backend_failed(b, j, why);
}

static void stop_answer(const struct fetch_result *r, void *user)
{
	(void)r;
	(void)user;
}

/* A1111's interrupt ends the running job early and its txt2img answers with
 * what was made; skip ends the current image and goes on. So the backend is
 * told, and the job's own call brings the answer (on_call: done as any). A
 * queued job ends with nothing made (its waiting client gets that). A backend
 * running other jobs too would stop them as well: there the job is cancelled
 * as the jobs API cancels (and a skip does nothing). */
void dispatch_interrupt(struct balancer *b, struct job *j, int skip)
{
	if (jobs_is_final(j) || j->interrupted)
		return;
	struct bk *k = j->bk;
	int busy = 0, slot = running_slot(k, j); /* slots running a job; j's */
	for (int s = 0; k && s < BAL_MAX_SLOTS; s++)
		busy += k->jobs[s] != NULL;
	if (!k || busy > 1 || slot < 0) { /* queued, sent behind another, or not alone */
		if (!skip)
			dispatch_cancel(b, j);
		return;
	}
	if (k->behind[slot]) /* it must not meet this interrupt when j ends first */
		requeue_behind(b, k, slot);
	if (!skip)
		j->interrupted = 1 + j->step;
	registry_call(b, k, "POST", skip ? "/sdapi/v1/skip" : "/sdapi/v1/interrupt", NULL, 0, INTERRUPT_TIMEOUT_MS,
		      BAL_MAX_SMALL_ANSWER, stop_answer, NULL);
}

/* An interrupt that reached the backend before the job had started there
 * is lost (A1111 and sdgate's backend only stop a running job): while the
 * job still moves on two steps past it, it is sent again. The job is the
 * only one on that backend (dispatch_interrupt), so it stops no other. */
static void interrupt_again(struct balancer *b, struct job *j, int step)
{
	if (!j->interrupted || step <= j->interrupted || j->bk->running != 1)
		return;
	j->interrupted = 1 + step;
	registry_call(b, j->bk, "POST", "/sdapi/v1/interrupt", NULL, 0, INTERRUPT_TIMEOUT_MS, BAL_MAX_SMALL_ANSWER,
		      stop_answer, NULL);
}

/* A poll's answer: an event for the subscribers when the step moved or a new
 * preview came. The event carries the preview only when it is new (a client
 * keeps the last one it got; one joining later gets it with the current
 * state: jobs_refresh_events), so that the many small step events stay small. */
static void on_poll(const struct fetch_result *r, void *user)
{
	struct job *j = user;
	j->poll = NULL;
	if (r->status != 200 || j->status != JOB_RUNNING || !j->bk)
		return;
	struct balancer *b = j->bk->b;
	struct answer_progress ap;
	json_t *p = answer_parse_progress(r->body, r->len, &ap);
	if (ap.valid) {
		interrupt_again(b, j, ap.step);
		const char *preview = ap.preview; /* checked by answer.c, or NULL */
		int fresh = preview && (!j->preview || strcmp(preview, j->preview));
		int changed = ap.step != j->step || ap.steps != j->steps || fresh;
		j->step = ap.step;
		j->steps = ap.steps;
		j->progress = ap.progress;
		j->progress_at = bal_now();
		if (fresh) {
			free(j->preview);
			j->preview = strdup(preview);
			j->preview_type = j->preview ? ap.preview_type : NULL;
			j->next_preview = bal_now() + b->cfg.preview_interval_ms / 1000.0;
		}
		if (changed && jobs_has_readers(j))
			jobs_emit_update(b, j, "progress", jobs_progress_data(j, fresh));
	}
	json_decref(p);
}

/* j starts running on its backend (now, or when the job it was sent behind
 * ends): its times and progress polls count from here. */
static void began(struct balancer *b, struct job *j, double now)
{
	j->started = now;
	j->queue_ms = (long)((now - j->enqueued) * 1000.0);
	if (j->attempt == 1) {
		b->m.dispatch_latency_sum += now - j->enqueued;
		b->m.dispatch_latency_count++;
	}
	j->next_poll = now + b->cfg.progress_interval_ms / 1000.0;
	j->next_preview = now;
}

static void promote(struct balancer *b, struct bk *k, int slot)
{
	struct job *j = k->behind[slot];
	k->behind[slot] = NULL;
	k->jobs[slot] = j;
	began(b, j, bal_now());
}

/* Sends j to k: into a free slot, or (behind >= 0) behind the job running in
 * slot `behind`, where the backend's own queue holds it until that job ends
 * (--prefetch-ms: the round trip from one job's answer to the next job's
 * start is then not lost on a busy backend). */
/* A slot that is free here: no job, none waiting for its lease, and not
 * held by another balancer when last asked; -1 if none is. */
static int free_slot(const struct bk *k, double now)
{
	for (int s = 0; s < k->slots && s < BAL_MAX_SLOTS; s++)
		if (!k->jobs[s] && !k->leasing[s] && k->held_until[s] <= now)
			return s;
	return -1;
}

static void start(struct balancer *b, struct job *j, struct bk *k, double switch_s, int behind, int slot)
{
	double now = bal_now();
	if (behind >= 0) {
		if (behind >= BAL_MAX_SLOTS || !k->jobs[behind] || k->behind[behind])
			return; /* cannot happen: the caller checked */
		k->behind[behind] = j;
	} else {
		if (slot < 0)
			slot = free_slot(k, now);
		if (slot < 0 || slot >= BAL_MAX_SLOTS || k->jobs[slot])
			return; /* cannot happen: the router checked slots */
		k->jobs[slot] = j;
	}
	jobs_dequeue(b, j);
	k->running++;
	b->running++;
	j->bk = k;
	j->status = JOB_RUNNING;
	j->attempt++;
	j->step = j->steps = 0;
	j->progress = j->progress_at = 0; /* nothing reported of this attempt yet */
	j->switch_s = switch_s;
	free(j->preview);
	j->preview = NULL;
	j->preview_type = NULL;
	if (behind < 0)
		began(b, j, now); /* else when it leaves its place behind (promote) */
	json_decref(j->placed);
	j->placed = json_pack("{s:s,s:s,s:s,s:s,s:s}", "backend", k->id, "provider", bk_str(k, "provider"), "location",
			      bk_str(k, "location"), "gpu", bk_str(k, "gpu_class"), "gpu_name", bk_str(k, "gpu"));
	/* A stale estimate (router.h) is measured afresh: this job's time is
	 * taken as is, not clipped against what it was --retry-after-s ago. */
	if (k->running == 1 && now - k->last_used >= b->cfg.retry_after_s)
		k->samples = 0;
	k->last_used = now;
	if (j->model) {
		free(k->loaded_model);
		k->loaded_model = strdup(j->model);
	}
	/* The client's request, rebuilt with only what a provider needs (forward.h). */
	json_t *sent = forward_request(j->request, json_is_true(json_object_get(k->identity, "allow_scripts")));
	char *body = sent ? json_dumps(sent, JSON_COMPACT) : NULL;
	json_decref(sent);
	size_t body_len = body ? strlen(body) : 0, cap = answer_cap(j, body_len);
	double timeout = timeout_s(b, k, j);
	if (behind >= 0) /* its wait behind the running job counts too */
		timeout = fmin(timeout + timeout_s(b, k, k->jobs[behind]), b->cfg.max_job_timeout_s);
	log_info("job %s: attempt %d on %s%s, timeout %.1f s, answer up to %zu bytes", j->id, j->attempt, k->id,
		 behind >= 0 ? " (behind its running job)" : "", timeout, cap);
	j->call = registry_call(b, k, "POST", job_is_img2img(j) ? "/sdapi/v1/img2img" : "/sdapi/v1/txt2img", body,
				body_len, (long)(timeout * 1000.0), cap, on_call, j);
	jobs_emit_state(b, j, "assigned",
			json_pack("{s:s,s:s,s:s,s:s,s:i}", "backend", k->id, "provider", bk_str(k, "provider"),
				  "location", bk_str(k, "location"), "gpu", bk_str(k, "gpu_class"), "attempt",
				  j->attempt));
	if (!j->facade || j->idem_key[0]) /* see waiter.c */
		jobs_save(b, j, NULL, NULL);
	if (!j->call)
		backend_failed(b, j, "out of memory");
}

/* A shared database: a free slot is leased before its job is sent (the job
 * waits out of the queue meanwhile, the slot counts as busy); a slot
 * another live balancer holds is left alone for a beat. */
struct lease_req {
	struct balancer *b;
	char job[BAL_ID_LEN + 1], bk[BAL_ID_LEN + 1], key[BAL_MAX_URL + 64];
	int slot;
	double switch_s;
	double hold_s; /* refused: the slot is left alone this long */
};

static void on_lease(void *user, int r, json_t *rows)
{
	(void)rows;
	struct lease_req *q = user;
	struct balancer *b = q->b;
	struct bk *k = registry_find(b, q->bk);
	struct job *j = jobs_find(b, q->job);
	int slot = q->slot;
	if (!k || !j || k->leasing[slot] != j) { /* the backend went meanwhile (removed) */
		if (j && !jobs_is_final(j) && !j->bk && !j->in_queue)
			jobs_enqueue(b, j, 1);
		if (r == 1 && !(k && (k->jobs[slot] || k->leased[slot])))
			lease_return(b, q->key, slot);
		b->reschedule = 1;
		free(q);
		return;
	}
	k->leasing[slot] = NULL;
	if (r == 1 && !k->leased[slot]) {
		k->leased[slot] = 1;
		k->leased_since[slot] = bal_now();
	}
	/* The database did not answer (an outage): the job starts without a
	 * lease rather than wait for it; at worst another balancer does the
	 * same and the backend queues the second job (A1111 runs one at a
	 * time). */
	static int unleased_logged;
	if (r < 0 && !unleased_logged)
		log_warn("the database did not answer a slot lease: jobs start without leases until it does");
	unleased_logged = r < 0;
	if ((r == 1 || r < 0) && !jobs_is_final(j) && !b->stopping) {
		start(b, j, k, q->switch_s, -1, slot);
	} else {
		if (r == 1)
			k->leased[slot] = 0, lease_return(b, k->key, slot);
		else if (r == 0)
			k->held_until[slot] = bal_now() + q->hold_s;
		if (!jobs_is_final(j))
			jobs_enqueue(b, j, 1);
	}
	b->reschedule = 1;
	free(q);
}

/* A slot's lease given back, and the other balancers told (notices.c): one
 * that was refused it asks again now. */
static void lease_return(struct balancer *b, const char *key, int slot)
{
	store_release_slot(b->store, key, slot);
	notices_send(b, "slot", json_pack("{s:s,s:i}", "backend", key, "slot", slot));
}

void dispatch_slot_freed(struct balancer *b, const char *key, int slot)
{
	struct bk *k = registry_find_url(b, key);
	if (!k || slot < 0 || slot >= BAL_MAX_SLOTS || k->held_until[slot] <= bal_now())
		return;
	k->held_until[slot] = 0;
	dispatch_schedule(b);
}

/* Starts j on k now (0), or asks for the slot's lease first (1). A slot
 * another balancer holds is asked for again after about the time this job
 * would take there (the holder's is likely alike), at least LEASE_HOLD_MIN_S
 * and at most a beat: short jobs do not leave a slot idle for a beat, long
 * ones do not make every balancer ask the database all the time. */
#define LEASE_HOLD_MIN_S 0.02
static int lease_then_start(struct balancer *b, struct job *j, struct bk *k, double switch_s, double expected_s)
{
	int slot = free_slot(k, bal_now());
	if (!store_shared(b->store) || slot < 0 || k->leased[slot])
		return 0;
	struct lease_req *q = calloc(1, sizeof *q);
	if (!q)
		return 0;
	q->b = b;
	snprintf(q->job, sizeof q->job, "%s", j->id);
	snprintf(q->bk, sizeof q->bk, "%s", k->id);
	snprintf(q->key, sizeof q->key, "%s", k->key);
	q->slot = slot;
	q->switch_s = switch_s;
	q->hold_s = fmin(fmax(expected_s, LEASE_HOLD_MIN_S), b->cfg.lease_s / 4);
	jobs_dequeue(b, j);
	k->leasing[slot] = j;
	store_lease_slot(b->store, k->key, slot, b->cfg.lease_s, on_lease, q);
	return 1;
}

/* A slot that emptied: its lease goes back, unless the backend is still
 * being drained (an interrupt meant for this balancer's job must not meet
 * another's), or this balancer has jobs queued and has held it for less
 * than a beat (the next one starts without a round trip to the database;
 * past a beat it lets the others have their turn). dispatch_tick gives
 * back what the queue did not use. */
static void give_back(struct balancer *b, struct bk *k)
{
	if (k->draining)
		return;
	double now = bal_now();
	for (int s = 0; s < BAL_MAX_SLOTS; s++)
		if (k->leased[s] && !k->jobs[s] && !k->behind[s] && !k->leasing[s] &&
		    !(b->queued > 0 && now - k->leased_since[s] < b->cfg.lease_s / 4 && now - k->freed_at[s] < 0.1)) {
			k->leased[s] = 0;
			lease_return(b, k->key, s);
		}
}

static int offers_cb(const void *ctx, const char *model) { return registry_offers(ctx, model); }

static int can_run_cb(const void *ctx, const void *need)
{
	return caps_cannot(&((const struct bk *)ctx)->caps, need) == NULL;
}

/* Seconds until a busy slot frees up. Once the backend has reported a
 * quarter of the job done, its own pace says it (a backend that slowed down
 * is seen during the job, not only after it); before, the estimate does,
 * and a job past its expected time is assumed to need about half as long
 * again as it has overrun, so a stuck backend stops attracting work. */
static double expected_s(const struct router_bk *v, const struct job *j, double base)
{
	if (j->progress >= PACE_FROM && j->progress < 1)
		return (j->progress_at - j->started) / j->progress; /* its whole time at that pace */
	return router_spp(v, base) * j->work + j->switch_s;
}

static double remaining_s(const struct router_bk *v, const struct job *j, double now, double base)
{
	double expected = expected_s(v, j, base);
	double elapsed = now - j->started;
	if (elapsed < expected)
		return expected - elapsed;
	return 0.5 * (elapsed - expected) + 0.05 * expected + 1e-3;
}

/* The router's view of k, but for free_in (fill_free_in). */
static void fill_view(struct bk *k, struct router_bk *v, double now)
{
	const struct balancer *b = k->b;
	memset(v, 0, sizeof *v);
	v->usable = k->state == BK_UP && !k->draining;
	v->gpu_class = bk_str(k, "gpu_class");
	v->price = bk_price(k);
	v->spp = k->spp;
	if (k->last_used <= 0)
		k->last_used = now; /* first seen: a backend never tried is re-tried from here (router.h) */
	v->idle_s = k->running ? 0 : now - k->last_used; /* a running job is a fresh try */
	v->retry_s = b->cfg.retry_after_s;
	v->slots = k->slots;
	v->loaded_model = k->loaded_model;
	v->offers = offers_cb;
	v->can_run = can_run_cb;
	v->ctx = k;
}

static void fill_free_in(const struct bk *k, struct router_bk *v, double now, double base)
{
	for (int s = 0; s < k->slots; s++) {
		v->free_in[s] = k->jobs[s] ? remaining_s(v, k->jobs[s], now, base) : 0;
		if (!k->jobs[s] && (k->leasing[s] || k->held_until[s] > now)) /* busy, for how long unknown */
			v->free_in[s] = fmax(k->held_until[s] - now, 1.0);
		if (k->behind[s])
			v->free_in[s] += expected_s(v, k->behind[s], base);
	}
}

static void fill_job(const struct job *j, struct router_job *v, const char **gpus)
{
	memset(v, 0, sizeof *v);
	size_t i;
	json_t *g;
	json_array_foreach(j->gpus, i, g) if (v->n_gpus < BAL_MAX_GPUS) gpus[v->n_gpus++] = json_string_value(g);
	v->gpus = gpus;
	v->max_price = j->max_price;
	v->model = j->model;
	v->refiner = j->refiner;
	v->need = &j->need;
	v->work = j->work;
	v->prefer = j->prefer;
}

int dispatch_reject_unservable(struct balancer *b, struct job *j)
{
	struct router_job rj;
	const char *gpus[BAL_MAX_GPUS];
	fill_job(j, &rj, gpus);
	double now = bal_now();
	for (struct bk *k = b->backends; k; k = k->next) {
		struct router_bk v;
		fill_view(k, &v, now);
		if (k->state != BK_DOWN && router_eligible(&v, &rj))
			return 0;
	}
	char msg[512];
	snprintf(msg, sizeof msg,
		 "No live backend can serve this job (GPU classes %s, checkpoint %s%s%s, max price %g)",
		 rj.n_gpus ? "as asked" : "any", j->model ? j->model : "any", j->refiner ? ", refiner " : "",
		 j->refiner ? j->refiner : "", j->max_price);
	jobs_finish_failed(b, j, SDE_NO_BACKEND, msg);
	return 1;
}

static void send_positions(struct balancer *b)
{
	int pos = 0;
	for (struct job *j = b->qhead; j; j = j->qnext) {
		pos++;
		if (jobs_has_readers(j) && j->last_position != pos) {
			j->last_position = pos;
			jobs_emit_update(b, j, "queued", json_pack("{s:i}", "position", pos));
		}
	}
}

void dispatch_drop_fetches(struct balancer *b)
{
	for (struct job *j = b->active; j; j = j->act_next) {
		fetch_cancel(j->call);
		fetch_cancel(j->poll);
		j->call = j->poll = NULL;
	}
	for (struct bk *k = b->backends; k; k = k->next) {
		fetch_cancel(k->check);
		fetch_cancel(k->drain_call);
		k->check = k->drain_call = NULL;
	}
}

void dispatch_schedule(struct balancer *b)
{
	b->reschedule = 0;
	if (!b->qhead || !b->backends || b->stopping)
		return;
	int nb = b->n_backends, nj = b->queued;
	struct router_bk *views = calloc((size_t)nb, sizeof *views);
	struct bk **bks = calloc((size_t)nb, sizeof *bks);
	struct router_job *rjobs = calloc((size_t)nj, sizeof *rjobs);
	const char **gpus = calloc((size_t)nj * BAL_MAX_GPUS, sizeof *gpus);
	struct job **jobs = calloc((size_t)nj, sizeof *jobs);
	int *assign = calloc((size_t)nj, sizeof *assign);
	struct router_pick *picks = calloc((size_t)nj, sizeof *picks);
	if (!views || !bks || !rjobs || !gpus || !jobs || !assign || !picks)
		goto out;
	double now = bal_now();
	int i = 0;
	for (struct bk *k = b->backends; k && i < nb; k = k->next, i++) {
		bks[i] = k;
		fill_view(k, &views[i], now);
	}
	nb = i;
	double base = router_base_spp(views, nb, -1);
	for (i = 0; i < nb; i++)
		fill_free_in(bks[i], &views[i], now, base);
	i = 0;
	for (struct job *j = b->qhead; j && i < nj; j = j->qnext, i++) {
		jobs[i] = j;
		fill_job(j, &rjobs[i], gpus + (size_t)i * BAL_MAX_GPUS);
	}
	router_plan_load(views, nb, rjobs, nj, router_rate_get(&b->arrivals, now), assign, picks);
	double lead = b->cfg.prefetch_ms / 1000.0, wake = INFINITY;
	for (i = 0; i < nj; i++) {
		struct job *j = jobs[i];
		const struct router_pick *p = &picks[i];
		struct bk *pk = p->k >= 0 ? bks[p->k] : NULL;
		/* only behind a backend whose speed was measured: a guessed one
		 * (its class's prior) could hold the job behind a long run */
		/* ...and not behind a job past its expected time: that backend may be stuck */
		int can_behind = lead > 0 && assign[i] == ROUTER_WAIT && pk && pk->spp > 0 && pk->jobs[p->slot] &&
				 !pk->jobs[p->slot]->interrupted && !pk->behind[p->slot] && !pk->draining &&
				 now - pk->jobs[p->slot]->started < expected_s(&views[p->k], pk->jobs[p->slot], base);
		if (can_behind && p->start_in > lead)
			wake = fmin(wake, p->start_in - lead); /* plan again then, not at the loop's next turn */
		if (assign[i] >= 0 || (can_behind && p->start_in <= lead)) {
			j->deadline = 0;
			struct router_bk *v = &views[p->k];
			v->loaded_model = pk->loaded_model; /* an earlier start may have changed it */
			double switch_s = router_switch_s(v, &rjobs[i]);
			if (assign[i] < 0 || !lease_then_start(b, j, pk, switch_s, expected_s(v, j, base)))
				start(b, j, pk, switch_s, assign[i] >= 0 ? -1 : p->slot, -1);
		} else if (assign[i] == ROUTER_NONE) {
			if (!j->deadline)
				j->deadline = now + NO_BACKEND_GRACE_S;
			else if (now > j->deadline && !dispatch_reject_unservable(b, j))
				j->deadline = now + NO_BACKEND_GRACE_S;
		} else {
			j->deadline = 0;
		}
	}
	send_positions(b);
	if (wake < 1)
		httpd_tick_within(b->httpd, (int)ceil(wake * 1000.0));
out:
	free(views);
	free(bks);
	free(rjobs);
	free(gpus);
	free(jobs);
	free(assign);
	free(picks);
}

void dispatch_cancel(struct balancer *b, struct job *j)
{
	if (jobs_is_final(j))
		return;
	struct bk *k = j->bk;
	if (k) {
		int running = running_slot(k, j) >= 0; /* not one waiting behind another: it must not be interrupted */
		if (running) /* first: the slot's lease is kept until the backend is drained */
			interrupt_backend(b, k);
		release_slot(b, j, 0);
	}
	jobs_finish_cancelled(b, j);
}

void dispatch_backend_lost(struct balancer *b, struct bk *k, const char *why)
{
	for (int s = 0; s < BAL_MAX_SLOTS; s++) {
		struct job *j = k->jobs[s];
		if (j)
			retry_or_fail(b, j, why);
	}
}

/* Every --progress-interval-ms, a cheap poll (skip_current_image=true: no
 * image to encode, send, parse); the preview only when one is due
 * (--preview-interval-ms after the last one that came), so that a fast poll
 * costs the backend, the balancer and the clients little. */
static void poll_progress(struct balancer *b, double now)
{
	double next = now + 1.0; /* the next poll due, for the loop's wait */
	for (struct bk *k = b->backends; k; k = k->next)
		for (int s = 0; s < BAL_MAX_SLOTS; s++) {
			struct job *j = k->jobs[s];
			if (!j || j->poll)
				continue; /* a poll's answer wakes the loop */
			if (now >= j->next_poll) {
				j->next_poll = now + b->cfg.progress_interval_ms / 1000.0;
				int preview = b->cfg.preview_interval_ms > 0 && now >= j->next_preview;
				j->poll = registry_call(b, k, "GET",
							preview ? "/sdapi/v1/progress?skip_current_image=false"
								: "/sdapi/v1/progress?skip_current_image=true",
							NULL, 0, 5000, BAL_MAX_SMALL_ANSWER, on_poll, j);
			} else if (j->next_poll < next) {
				next = j->next_poll;
			}
		}
	/* on time, not at the loop's next 50 ms turn: that would add up to 50 ms
	 * to each step's way to the clients */
	httpd_tick_within(b->httpd, (int)ceil((next - now) * 1000.0));
}

void dispatch_tick(struct balancer *b, double now)
{
	if (b->reschedule || (b->qhead && now - b->last_schedule >= SCHEDULE_EVERY_S)) {
		b->last_schedule = now;
		dispatch_schedule(b);
	}
	if (b->running)
		poll_progress(b, now);
	for (struct bk *k = b->backends; k; k = k->next) {
		if (k->draining)
			drain_tick(b, k, now);
		else if (store_shared(b->store) && !k->running)
			give_back(b, k);
	}
}
