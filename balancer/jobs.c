/* jobs.c — the balancer's jobs: the id table, the queue, their states and
 * events, their documents in the store, and their expiry. Loop thread only.
 * A done job's images are kept by results.c; the job holds only their
 * metadata.
 *
 * Ownership: the table owns every job until jobs_expire (or shutdown) frees
 * it. A job is freed only once final, its result stored, and without
 * subscribers or a waiter. */
#include "balancer.h"

#include "log.h"
#include "router.h"
#include "utf8.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static unsigned hash_str(unsigned h, const char *s)
{
	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 16777619u;
	return h;
}

static unsigned bucket_of(const char *id) { return hash_str(2166136261u, id) % BAL_JOB_BUCKETS; }

static unsigned idem_bucket(const char *client, const char *key)
{
	return hash_str(hash_str(2166136261u, client) * 16777619u, key) % BAL_JOB_BUCKETS;
}

struct job *jobs_find(struct balancer *b, const char *id)
{
	if (strlen(id) != BAL_ID_LEN)
		return NULL;
	for (struct job *j = b->table[bucket_of(id)]; j; j = j->hnext)
		if (strcmp(j->id, id) == 0)
			return j;
	return NULL;
}

struct job *jobs_find_idempotent(struct balancer *b, const char *client, const char *key)
{
	for (struct job *j = b->idem_table[idem_bucket(client, key)]; j; j = j->inext)
		if (strcmp(j->idem_key, key) == 0 && strcmp(j->client, client) == 0)
			return j;
	return NULL;
}

static void link_idempotent(struct balancer *b, struct job *j)
{
	unsigned k = idem_bucket(j->client, j->idem_key);
	j->inext = b->idem_table[k];
	b->idem_table[k] = j;
}

void jobs_set_idempotency(struct balancer *b, struct job *j, const char *key, const char *body_hash)
{
	snprintf(j->idem_key, sizeof j->idem_key, "%s", key);
	snprintf(j->idem_hash, sizeof j->idem_hash, "%s", body_hash);
	link_idempotent(b, j);
}

int jobs_is_final(const struct job *j)
{
	return j->status == JOB_DONE || j->status == JOB_FAILED || j->status == JOB_CANCELLED;
}

static const char *status_name(enum job_status s)
{
	static const char *const names[] = {"queued", "running", "done", "failed", "cancelled"};
	return names[s];
}

static int status_parse(const char *s)
{
	for (int i = JOB_QUEUED; i <= JOB_CANCELLED; i++)
		if (s && strcmp(s, status_name((enum job_status)i)) == 0)
			return i;
	return -1;
}

static long long int_or(const json_t *o, const char *key, long long dflt)
{
	json_t *v = json_object_get(o, key);
	return json_is_integer(v) ? json_integer_value(v) : dflt;
}

static double num_or(const json_t *o, const char *key, double dflt)
{
	json_t *v = json_object_get(o, key);
	return json_is_number(v) ? json_number_value(v) : dflt;
}

#define HIRES_MAX_SIDE 16384.0
#define HIRES_MAX_STEPS 1000.0

/* A1111's hires fix: a second pass at hr_resize_x/y (or hr_scale x the size)
 * of hr_second_pass_steps (0 = steps) x denoising_strength steps (img2img
 * runs that share of its steps), with hr_sampler_name or the same sampler. */
static void hires_work(const json_t *r, struct router_work_in *w)
{
	json_t *on = json_object_get(r, "enable_hr");
	if (!json_is_true(on))
		return;
	double scale = num_or(r, "hr_scale", 2.0);
	double x = num_or(r, "hr_resize_x", 0), y = num_or(r, "hr_resize_y", 0);
	w->hr_width = x > 0 ? x : w->width * scale;
	w->hr_height = y > 0 ? y : w->height * scale;
	if (x > 0 && !(y > 0))
		w->hr_height = w->height * x / w->width;
	if (y > 0 && !(x > 0))
		w->hr_width = w->width * y / w->height;
	/* Bounded: these fields reach here unchecked (A1111 would refuse or clamp them). */
	w->hr_width = fmin(fmax(w->hr_width, 0), HIRES_MAX_SIDE);
	w->hr_height = fmin(fmax(w->hr_height, 0), HIRES_MAX_SIDE);
	double steps = fmin(num_or(r, "hr_second_pass_steps", 0), HIRES_MAX_STEPS);
	double denoise = num_or(r, "denoising_strength", 0.75);
	w->hr_steps = (steps > 0 ? steps : w->steps) * fmin(fmax(denoise, 0.0), 1.0);
	const char *sampler = json_string_value(json_object_get(r, "hr_sampler_name"));
	w->hr_calls = sampler && *sampler ? router_sampler_calls(sampler) : w->calls_per_step;
}

/* What routing needs, read from the (validated) request. */
static void derive(struct job *j)
{
	const json_t *r = j->request;
	struct router_work_in w = {0};
	w.steps = (double)int_or(r, "steps", 50);
	w.width = (double)int_or(r, "width", 512);
	w.height = (double)int_or(r, "height", 512);
	w.n_images = (double)int_or(r, "batch_size", 1) * (double)int_or(r, "n_iter", 1);
	const char *sampler = json_string_value(json_object_get(r, "sampler_name"));
	if (!sampler || !*sampler)
		sampler = json_string_value(json_object_get(r, "sampler_index"));
	w.calls_per_step = router_sampler_calls(sampler);
	hires_work(r, &w);
	j->n_images = w.n_images;
	/* the images come back at the hires fix's size when there is one */
	j->pixels = (w.hr_width > 0 && w.hr_height > 0 ? w.hr_width * w.hr_height : w.width * w.height) * w.n_images;
	j->work = router_work(&w);
	j->seed = int_or(r, "seed", -1);
	j->model = json_string_value(json_object_get(json_object_get(r, "override_settings"), "sd_model_checkpoint"));
	j->refiner = json_string_value(json_object_get(r, "refiner_checkpoint"));
	if (j->model && !*j->model)
		j->model = NULL;
	if (j->refiner && !*j->refiner)
		j->refiner = NULL;
	caps_need_of(r, json_object_get(r, "init_images") != NULL, &j->need);
}

static void link_job(struct balancer *b, struct job *j)
{
	unsigned k = bucket_of(j->id);
	j->hnext = b->table[k];
	b->table[k] = j;
	j->all_next = b->all;
	if (b->all)
		b->all->all_prev = j;
	b->all = j;
	b->n_jobs++;
}

static void link_active(struct balancer *b, struct job *j)
{
	j->act_prev = NULL;
	j->act_next = b->active;
	if (b->active)
		b->active->act_prev = j;
	b->active = j;
}

static void unlink_active(struct balancer *b, struct job *j)
{
	if (j->act_prev)
		j->act_prev->act_next = j->act_next;
	else if (b->active == j)
		b->active = j->act_next;
	if (j->act_next)
		j->act_next->act_prev = j->act_prev;
	j->act_prev = j->act_next = NULL;
}

static void unlink_job(struct balancer *b, struct job *j)
{
	if (j->unsaved)
		b->unsaved--;
	b->unstored -= j->unstored;
	struct job **pp = &b->table[bucket_of(j->id)];
	while (*pp && *pp != j)
		pp = &(*pp)->hnext;
	if (*pp)
		*pp = j->hnext;
	if (j->idem_key[0]) {
		pp = &b->idem_table[idem_bucket(j->client, j->idem_key)];
		while (*pp && *pp != j)
			pp = &(*pp)->inext;
		if (*pp)
			*pp = j->inext;
	}
	if (j->all_prev)
		j->all_prev->all_next = j->all_next;
	else
		b->all = j->all_next;
	if (j->all_next)
		j->all_next->all_prev = j->all_prev;
	b->n_jobs--;
}

static void free_job(struct job *j)
{
	json_decref(j->request);
	json_decref(j->gpus);
	json_decref(j->placed);
	json_decref(j->result);
	json_decref(j->reply);
	json_decref(j->images);
	json_decref(j->error);
	image_files_free(&j->files);
	free(j->preview);
	events_clear(&j->events);
	free(j);
}

struct job *jobs_new(struct balancer *b, json_t *request, json_t *gpus, double max_price, const char *client,
		     int facade)
{
	struct job *j = calloc(1, sizeof *j);
	if (!j) {
		json_decref(request);
		json_decref(gpus);
		return NULL;
	}
	do
		bal_random_id(j->id);
	while (jobs_find(b, j->id));
	snprintf(j->client, sizeof j->client, "%s", client);
	j->facade = facade;
	j->request = request;
	j->gpus = gpus ? gpus : json_array();
	j->max_price = max_price;
	j->created = bal_unix_now();
	j->enqueued = bal_now();
	j->status = JOB_QUEUED;
	j->last_position = -1;
	derive(j);
	link_job(b, j);
	link_active(b, j);
	return j;
}

void jobs_enqueue(struct balancer *b, struct job *j, int front)
{
	if (j->in_queue)
		return;
	j->status = JOB_QUEUED;
	j->in_queue = 1;
	j->qprev = j->qnext = NULL;
	if (front) {
		j->qnext = b->qhead;
		if (b->qhead)
			b->qhead->qprev = j;
		else
			b->qtail = j;
		b->qhead = j;
	} else {
		router_rate_add(&b->arrivals, bal_now());
		j->qprev = b->qtail;
		if (b->qtail)
			b->qtail->qnext = j;
		else
			b->qhead = j;
		b->qtail = j;
	}
	b->queued++;
	b->reschedule = 1;
	/* Recorded even with no reader: one that comes later is replayed it. */
	j->last_position = front ? 1 : b->queued;
	jobs_emit_state(b, j, "queued", json_pack("{s:i}", "position", j->last_position));
}

void jobs_dequeue(struct balancer *b, struct job *j)
{
	if (!j->in_queue)
		return;
	if (j->qprev)
		j->qprev->qnext = j->qnext;
	else
		b->qhead = j->qnext;
	if (j->qnext)
		j->qnext->qprev = j->qprev;
	else
		b->qtail = j->qprev;
	j->qprev = j->qnext = NULL;
	j->in_queue = 0;
	b->queued--;
}

int jobs_position(struct balancer *b, const struct job *j)
{
	if (j->shadow) /* another balancer's queue: the position its last event gave */
		return j->status == JOB_QUEUED ? j->last_position : 0;
	if (!j->in_queue)
		return 0;
	int pos = 1;
	for (const struct job *q = b->qhead; q && q != j; q = q->qnext)
		pos++;
	return pos;
}

int jobs_count_client(struct balancer *b, const char *client)
{
	int n = 0;
	for (const struct job *j = b->active; j; j = j->act_next)
		if (strcmp(j->client, client) == 0)
			n++;
	return n;
}

static void set_opt(json_t *o, const char *key, json_t *v)
{
	if (v)
		json_object_set(o, key, v);
}

/* The request as the job log keeps it: an img2img's init images (up to 4 x
 * 8 MiB) are left out, only their count stays. New reference. */
static json_t *request_doc(json_t *request)
{
	json_t *init = json_object_get(request, "init_images");
	if (!init)
		return json_incref(request);
	json_t *copy = json_copy(request);
	json_object_del(copy, "init_images");
	json_object_set_new(copy, "init_images_omitted", json_integer((json_int_t)json_array_size(init)));
	return copy;
}

json_t *jobs_doc(const struct job *j)
{
	json_t *d = json_pack("{s:s,s:s,s:b,s:o,s:O,s:f,s:s,s:i,s:f,s:I,s:I,s:f,s:f}", "id", j->id, "client", j->client,
			      "facade", j->facade, "request", request_doc(j->request), "gpus", j->gpus, "max_price",
			      j->max_price, "status", status_name(j->status), "attempt", j->attempt, "created",
			      j->created, "queue_ms", (json_int_t)j->queue_ms, "inference_ms",
			      (json_int_t)j->inference_ms, "inference_s", j->inference_s, "finished_unix",
			      j->finished_unix);
	json_object_set_new(d, "event_id", json_integer((json_int_t)j->events.last_id));
	if (j->prefer == ROUTER_PREFER_CHEAPEST)
		json_object_set_new(d, "prefer", json_string("cheapest"));
	if (j->idem_key[0]) {
		json_object_set_new(d, "idempotency_key", json_string(j->idem_key));
		json_object_set_new(d, "request_hash", json_string(j->idem_hash));
	}
	set_opt(d, "placed", j->placed);
	if (j->result && j->images) { /* a done job's images described, as the store wrote them (store_put_result) */
		json_t *result = json_copy(j->result);
		json_object_set(result, "images", j->images);
		json_object_set_new(d, "result", result);
	} else {
		set_opt(d, "result", j->result);
	}
	set_opt(d, "error", j->error);
	return d;
}

/* A write without a caller waiting: a failure leaves the job to be
 * written again (jobs_save_again). */
struct bg_save {
	struct balancer *b;
	char id[BAL_ID_LEN + 1];
};

static void mark_unsaved(struct balancer *b, struct job *j, int unsaved)
{
	if (j && j->unsaved != unsaved) {
		j->unsaved = unsaved;
		b->unsaved += unsaved ? 1 : -1;
	}
}

void jobs_mark_unsaved(struct balancer *b, struct job *j)
{
	if (!b->stopping)
		mark_unsaved(b, j, 1);
}

static void on_bg_saved(void *user, int ok)
{
	struct bg_save *s = user;
	mark_unsaved(s->b, jobs_find(s->b, s->id), !ok && !s->b->stopping);
	free(s);
}

void jobs_save(struct balancer *b, struct job *j, store_done_fn done, void *user)
{
	struct bg_save *s = done ? NULL : malloc(sizeof *s);
	if (s) {
		s->b = b;
		snprintf(s->id, sizeof s->id, "%s", j->id);
		done = on_bg_saved;
		user = s;
	}
	store_save_job(b->store, j->id, status_name(j->status), j->finished_unix, jobs_doc(j), done, user);
}

#define SAVE_AGAIN_MAX 16 /* jobs written again per call */

void jobs_save_again(struct balancer *b)
{
	int n = 0;
	for (struct job *j = b->all; j && b->unsaved > 0 && n < SAVE_AGAIN_MAX; j = j->all_next)
		if (j->unsaved && !j->storing) {
			mark_unsaved(b, j, 0); /* set again if this write fails too */
			if (j->unstored)
				results_keep_again(b, j); /* its held images with it */
			else
				jobs_save(b, j, NULL, NULL);
			n++;
		}
}

static const char *placed_str(const struct job *j, const char *key)
{
	const char *s = json_string_value(json_object_get(j->placed, key));
	return s ? s : "";
}

json_t *jobs_view(struct balancer *b, const struct job *j)
{
	/* Until its images are stored, a done job is still running to its readers. */
	const char *status = j->storing ? "running" : status_name(j->status);
	json_t *v = json_pack("{s:s,s:s,s:i,s:i,s:I,s:I,s:I,s:f}", "id", j->id, "status", status, "position",
			      jobs_position(b, j), "attempt", j->attempt, "seed", (json_int_t)j->seed, "queue_ms",
			      (json_int_t)j->queue_ms, "inference_ms", (json_int_t)j->inference_ms, "created",
			      j->created);
	if (j->placed) {
		json_object_set_new(v, "provider", json_string(placed_str(j, "provider")));
		json_object_set_new(v, "location", json_string(placed_str(j, "location")));
		json_object_set_new(v, "gpu", json_string(placed_str(j, "gpu")));
		json_object_set_new(v, "backend", json_string(placed_str(j, "backend")));
	} else {
		json_object_set_new(v, "provider", json_null());
		json_object_set_new(v, "location", json_null());
		json_object_set_new(v, "gpu", json_null());
		json_object_set_new(v, "backend", json_null());
	}
	if (j->status == JOB_RUNNING || j->storing)
		json_object_set_new(v, "progress", json_pack("{s:i,s:i}", "step", j->step, "steps", j->steps));
	if (j->status == JOB_DONE && !j->storing) {
		json_t *r = json_pack("{s:o,s:O*}", "images", results_view(j), "info",
				      json_object_get(j->result, "info"));
		if (j->gone)
			json_object_set_new(r, "gone", json_true());
		json_object_set_new(v, "result", r);
	}
	if (j->error)
		json_object_set(v, "error", j->error);
	return v;
}

static void emit(struct job *j, long long id, const char *event, json_t *data)
{
	for (struct sse *s = j->subs, *next; s; s = next) {
		next = sse_next(s);
		sse_send(s, id, event, data);
	}
	json_decref(data);
}

void jobs_emit_state(struct balancer *b, struct job *j, const char *event, json_t *data)
{
	long long id = events_add_state(&j->events, event, data);
	notices_job_event(b, j, id, event, data, NOTICE_STATE);
	emit(j, id, event, data);
}

void jobs_emit_update(struct balancer *b, struct job *j, const char *event, json_t *data)
{
	long long id = events_add_update(&j->events, event, data);
	notices_job_event(b, j, id, event, data, NOTICE_UPDATE);
	emit(j, id, event, data);
}

/* What a shadow's document view (jobs_view) takes from its owner's event. */
static void shadow_follow(struct job *j, const char *event, const json_t *data)
{
	if (!strcmp(event, "queued")) {
		j->status = JOB_QUEUED;
		j->last_position = (int)int_or(data, "position", j->last_position);
	} else if (!strcmp(event, "assigned")) {
		j->status = JOB_RUNNING;
		j->attempt = (int)int_or(data, "attempt", j->attempt);
		j->step = j->steps = 0;
		json_decref(j->placed);
		j->placed = json_pack("{s:O*,s:O*,s:O*,s:O*}", "backend", json_object_get(data, "backend"), "provider",
				      json_object_get(data, "provider"), "location", json_object_get(data, "location"),
				      "gpu", json_object_get(data, "gpu"));
	} else if (!strcmp(event, "progress")) {
		j->step = (int)int_or(data, "step", j->step);
		j->steps = (int)int_or(data, "steps", j->steps);
	}
}

void jobs_emit_copy(struct job *j, long long id, const char *event, json_t *data, int state)
{
	if (events_put(&j->events, id, event, data, state)) {
		shadow_follow(j, event, data);
		emit(j, id, event, data);
	} else {
		json_decref(data);
	}
}

int jobs_has_readers(const struct job *j) { return j->subs || j->watched_until > bal_now(); }

json_t *jobs_progress_data(const struct job *j, int with_preview)
{
	json_t *p = json_pack("{s:i,s:i,s:f}", "step", j->step, "steps", j->steps, "progress", j->progress);
	if (with_preview && j->preview) {
		json_object_set_new(p, "preview", json_string(j->preview));
		json_object_set_new(p, "preview_type", json_string(j->preview_type));
	}
	return p;
}

void jobs_refresh_events(struct balancer *b, struct job *j)
{
	if (j->shadow) /* its events come from the balancer that runs it */
		return;
	const json_t *last = j->events.update.data;
	if (j->status == JOB_QUEUED) {
		int pos = jobs_position(b, j);
		if (pos != j->last_position) {
			j->last_position = pos;
			jobs_emit_update(b, j, "queued", json_pack("{s:i}", "position", pos));
		}
	} else if (j->status == JOB_RUNNING && j->steps > 0) {
		const char *kept = json_string_value(json_object_get(j->events.preview.data, "preview"));
		int new_preview = j->preview && (!kept || strcmp(kept, j->preview));
		if (new_preview || !last || json_integer_value(json_object_get(last, "step")) != j->step ||
		    json_integer_value(json_object_get(last, "steps")) != j->steps)
			jobs_emit_update(b, j, "progress", jobs_progress_data(j, new_preview));
	}
}

static json_t *final_data(const struct job *j)
{
	switch (j->status) {
	case JOB_DONE: {
		long total = (long)((j->finished - j->enqueued) * 1000.0);
		return json_pack("{s:o,s:O*,s:I,s:I,s:I,s:I,s:s,s:s,s:s}", "images", results_view(j), "info",
				 json_object_get(j->result, "info"), "seed", (json_int_t)j->seed, "inference_ms",
				 (json_int_t)j->inference_ms, "queue_ms", (json_int_t)j->queue_ms, "total_ms",
				 (json_int_t)total, "provider", placed_str(j, "provider"), "location",
				 placed_str(j, "location"), "gpu", placed_str(j, "gpu"));
	}
	case JOB_FAILED:
		return json_pack("{s:O}", "error", j->error);
	default:
		return json_object();
	}
}

void jobs_final_event(struct balancer *b, const struct job *j, const char **event, json_t **data)
{
	*event = status_name(j->status);
	*data = final_data(j);
}

void jobs_announce_final(struct balancer *b, struct job *j)
{
	const char *event;
	json_t *data;
	events_clear(&j->events); /* a finished job answers only its final event */
	jobs_final_event(b, j, &event, &data);
	notices_job_event(b, j, j->events.last_id, event, data, NOTICE_FINAL);
	emit(j, j->events.last_id, event, data);
	sse_close_all(j);
}

/* Common tail of the three terminal transitions. A done job's façade client
 * gets its images from memory, and like its other readers once they are
 * stored: then GET /v1/jobs/{id} already says done when the client asks. */
static void finish(struct balancer *b, struct job *j, enum job_status status)
{
	jobs_dequeue(b, j);
	unlink_active(b, j);
	j->status = status;
	j->finished = bal_now();
	j->finished_unix = bal_unix_now();
	if (!j->started)
		j->queue_ms = (long)((j->finished - j->enqueued) * 1000.0);
	b->reschedule = 1;
	/* The final event's id, saved with the document now; a done job's event
	 * comes once its images are stored (results.c). */
	events_reserve(&j->events);
	if (status == JOB_DONE) {
		results_keep(b, j);
		return;
	}
	waiter_finish(b, j);
	jobs_save(b, j, NULL, NULL); /* before the final event's notice (notices.c): readers elsewhere read the row */
	jobs_announce_final(b, j);
}

void jobs_finish_done(struct balancer *b, struct job *j, json_t *result)
{
	j->result = result;
	b->m.done++;
	finish(b, j, JOB_DONE);
}

void jobs_finish_failed(struct balancer *b, struct job *j, enum sd_error e, const char *message)
{
	/* The message may carry a backend's text, cut anywhere or not UTF-8 at
	 * all; jansson takes only valid UTF-8, and a job must never end without
	 * its error and final event. */
	char text[1024];
	utf8_copy(text, sizeof text, message, strlen(message));
	json_decref(j->error);
	const char *code = sd_error_code(e);
	j->error = json_pack("{s:s,s:s}", "code", code, "message", text);
	b->m.failed++;
	log_info("job %s failed: %s: %s", j->id, code, message);
	finish(b, j, JOB_FAILED);
}

void jobs_finish_cancelled(struct balancer *b, struct job *j)
{
	json_decref(j->error);
	j->error = json_pack("{s:s,s:s}", "code", "cancelled", "message", "The job was cancelled");
	b->m.cancelled++;
	finish(b, j, JOB_CANCELLED);
}

void jobs_expire(struct balancer *b, double unix_now)
{
	double before = unix_now - (double)b->cfg.result_ttl_s;
	for (struct job *j = b->all, *next; j; j = next) {
		next = j->all_next;
		if (jobs_is_final(j) && !j->storing && j->finished_unix < before && !j->subs && !j->waiter) {
			unlink_job(b, j);
			free_job(j);
		}
	}
	store_expire_jobs(b->store, before);
}

/* Restart: every job the file holds comes back; unfinished ones are queued
 * again in their original order (a façade job without an Idempotency-Key
 * has no client any more, gone with the old process, so it fails instead of
 * running for nobody; one with a key is run again, for its client's retry
 * (waiter.c); an img2img's init images were never in the file, request_doc,
 * so it fails instead of running as a txt2img). */
struct job *jobs_from_doc(json_t *doc, int has_images)
{
	const char *id = json_string_value(json_object_get(doc, "id"));
	int status = status_parse(json_string_value(json_object_get(doc, "status")));
	json_t *request = json_object_get(doc, "request");
	if (!id || strlen(id) != BAL_ID_LEN || status < 0 || !json_is_object(request))
		return NULL;
	struct job *j = calloc(1, sizeof *j);
	if (!j)
		return NULL;
	snprintf(j->id, sizeof j->id, "%s", id);
	const char *client = json_string_value(json_object_get(doc, "client"));
	snprintf(j->client, sizeof j->client, "%s", client ? client : "");
	j->facade = json_is_true(json_object_get(doc, "facade"));
	j->request = json_incref(request);
	json_t *gpus = json_object_get(doc, "gpus");
	j->gpus = json_is_array(gpus) ? json_incref(gpus) : json_array();
	j->max_price = json_number_value(json_object_get(doc, "max_price"));
	const char *prefer = json_string_value(json_object_get(doc, "prefer"));
	j->prefer = prefer && !strcmp(prefer, "cheapest") ? ROUTER_PREFER_CHEAPEST : ROUTER_PREFER_FASTEST;
	j->attempt = (int)int_or(doc, "attempt", 0);
	j->created = json_number_value(json_object_get(doc, "created"));
	j->queue_ms = (long)int_or(doc, "queue_ms", 0);
	j->inference_ms = (long)int_or(doc, "inference_ms", 0);
	j->inference_s = json_number_value(json_object_get(doc, "inference_s"));
	j->finished_unix = json_number_value(json_object_get(doc, "finished_unix"));
	json_t *v;
	if ((v = json_object_get(doc, "placed")) && json_is_object(v))
		j->placed = json_incref(v);
	if ((v = json_object_get(doc, "result")) && json_is_object(v))
		results_load(j, v, has_images);
	if ((v = json_object_get(doc, "error")) && json_is_object(v))
		j->error = json_incref(v);
	j->last_position = -1;
	events_restore(&j->events, int_or(doc, "event_id", 0), status == JOB_QUEUED || status == JOB_RUNNING,
		       bal_unix_now());
	derive(j);
	j->enqueued = j->finished = bal_now();
	j->status = (enum job_status)status;
	return j;
}

void jobs_free_unlinked(struct job *j) { free_job(j); }

static void load_one(json_t *doc, int has_images, void *user)
{
	struct balancer *b = user;
	const char *id = json_string_value(json_object_get(doc, "id"));
	if (!id || jobs_find(b, id))
		return;
	struct job *j = jobs_from_doc(doc, has_images);
	if (!j)
		return;
	int status = j->status;
	json_t *request = j->request;
	link_job(b, j);
	const char *key = json_string_value(json_object_get(doc, "idempotency_key"));
	const char *hash = json_string_value(json_object_get(doc, "request_hash"));
	if (key && *key && strlen(key) <= BAL_MAX_IDEMPOTENCY_KEY && hash)
		jobs_set_idempotency(b, j, key, hash);
	if (status == JOB_QUEUED || status == JOB_RUNNING) {
		j->status = JOB_QUEUED; /* again: it runs here anew */
		link_active(b, j);
		if (j->facade && !j->idem_key[0]) {
			j->status = JOB_RUNNING; /* so that finish() records it */
			jobs_finish_failed(b, j, SDE_BALANCER_RESTARTED,
					   "The balancer restarted while the client was waiting");
		} else if (json_object_get(request, "init_images_omitted")) {
			j->status = JOB_RUNNING;
			jobs_finish_failed(b, j, SDE_BALANCER_RESTARTED,
					   "The balancer restarted before this img2img job ran; its init image is "
					   "not kept across a restart: submit it again");
		} else {
			jobs_enqueue(b, j, 0);
		}
	} else {
		j->status = (enum job_status)status;
	}
}

void jobs_adopt(struct balancer *b, json_t *doc, int has_images) { load_one(doc, has_images, b); }

void jobs_load(struct balancer *b)
{
	if (store_shared(b->store))
		return; /* the others' jobs are theirs: cluster.c claims the orphans, api_jobs.c finds the rest */
	int n = store_load_jobs(b->store, load_one, b);
	if (n > 0)
		log_info("db: %d job(s) loaded, %d queued again", n, b->queued);
}

void jobs_free_all(struct balancer *b)
{
	while (b->all) {
		struct job *j = b->all;
		if (j->unstored)
			log_warn("job %s: its images were never stored (the database was away): lost", j->id);
		unlink_job(b, j);
		free_job(j);
	}
}
