/* job.c — one txt2img job: queued on the "jobs" lane (FIFO, one at a time,
 * as A1111 serves one job per GPU), generated there by the engine (or the
 * upstream server), encoded to PNG + base64 there, and answered back on the
 * loop thread. The request may die while the job waits or runs: a guard in
 * req->pool clears job->req, and a job whose client is gone before it starts
 * is skipped. */
#include "backend.h"

#include "log.h"
#include "png.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* A preview PNG is encoded at most this often (the balancer asks for one about
 * once a second, A1111 clients about as often); the steps between keep the last. */
#define PREVIEW_EVERY_S 0.25

struct job_guard {
	struct job *job;
};

struct job {
	struct lane_task task; /* first */
	struct backend *b;
	struct txt2img t;
	h2o_req_t *req; /* loop thread only */
	struct job_guard *guard;
	atomic_int abandoned;
	double last_step;    /* pacing, worker thread */
	double last_preview; /* when the last preview was encoded, worker thread; 0: none yet */
	int status;
	char *body;
	size_t body_len;
};

double backend_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

void backend_timestamp(char out[16])
{
	time_t now = time(NULL);
	struct tm tm;
	gmtime_r(&now, &tm);
	strftime(out, 16, "%Y%m%d%H%M%S", &tm);
}

static void guard_dispose(void *p)
{
	struct job_guard *g = p;
	if (g->job) {
		g->job->req = NULL;
		atomic_store(&g->job->abandoned, 1);
	}
}

static void set_progress_idle(struct backend *b)
{
	pthread_mutex_lock(&b->progress.mu);
	b->progress.active = 0;
	free(b->progress.preview_b64);
	b->progress.preview_b64 = NULL;
	pthread_mutex_unlock(&b->progress.mu);
}

/* Sleeps until at least pace ms passed since the last step, in slices so that
 * interrupt and skip stay prompt. Worker thread. */
static void pace(struct job *j)
{
	long ms = j->b->id.pace_ms_per_step;
	if (ms <= 0)
		return;
	double until = j->last_step + (double)ms / 1000.0;
	for (;;) {
		double now = backend_now();
		if (now >= until || atomic_load(&j->b->interrupt) || atomic_load(&j->b->skip))
			break;
		double left = until - now;
		struct timespec ts = {0, (long)((left < 0.01 ? left : 0.01) * 1e9)};
		nanosleep(&ts, NULL);
	}
	j->last_step = backend_now();
}

static void on_step(void *user, const struct engine_progress *p)
{
	struct job *j = user;
	struct backend *b = j->b;
	pace(j);
	/* at debug level only: tests/bench/bench_progress.py times each step's
	 * way to a websocket client from this line */
	log_debug("job: step %d/%d of image %d/%d", p->step, p->steps, p->image + 1, p->images);
	char *preview = NULL;
	double now = backend_now();
	if (p->preview && (j->last_preview == 0 || now - j->last_preview >= PREVIEW_EVERY_S)) {
		preview = png_encode_b64(p->preview, p->preview_width, p->preview_height, NULL);
		j->last_preview = now;
	}
	pthread_mutex_lock(&b->progress.mu);
	b->progress.job_no = p->image;
	b->progress.job_count = p->images;
	b->progress.sampling_step = p->step;
	b->progress.sampling_steps = p->steps;
	if (preview) {
		free(b->progress.preview_b64);
		b->progress.preview_b64 = preview;
	}
	pthread_mutex_unlock(&b->progress.mu);
}

/* Appends s to the growing body; returns -1 when out of memory. */
struct text {
	char *buf;
	size_t len, cap;
};

static int text_add(struct text *t, const char *s, size_t n)
{
	if (t->len + n + 1 > t->cap) {
		size_t cap = t->cap ? t->cap : 4096;
		while (cap < t->len + n + 1)
			cap *= 2;
		char *grown = realloc(t->buf, cap);
		if (!grown)
			return -1;
		t->buf = grown;
		t->cap = cap;
	}
	memcpy(t->buf + t->len, s, n);
	t->len += n;
	t->buf[t->len] = '\0';
	return 0;
}

/* {"images": [...], "parameters": {...}, "info": "<json>"}, assembled by hand
 * so that multi-MB base64 strings are copied once, not three times. */
static char *build_answer(const struct job *j, char **images, int count, json_t *info, size_t *len)
{
	struct text out = {0};
	int fail = text_add(&out, "{\"images\":[", 11);
	for (int i = 0; i < count && !fail; i++) {
		if (i)
			fail |= text_add(&out, ",", 1);
		fail |= text_add(&out, "\"", 1);
		fail |= text_add(&out, images[i], strlen(images[i]));
		fail |= text_add(&out, "\"", 1);
	}
	/* As A1111's img2img API: the init images and the mask are not echoed
	 * back unless include_init_images asks for them. */
	if (j->t.a.kind == A1111_IMG2IMG && !j->t.a.include_init_images) {
		json_object_set_new(j->t.parameters, "init_images", json_null());
		json_object_set_new(j->t.parameters, "mask", json_null());
	}
	char *params = json_dumps(j->t.parameters, JSON_COMPACT);
	char *info_text = json_dumps(info, JSON_COMPACT);
	json_t *info_str = json_string(info_text ? info_text : "{}");
	char *info_json = json_dumps(info_str, JSON_COMPACT | JSON_ENCODE_ANY);
	fail |= !params || !info_json;
	if (!fail) {
		fail |= text_add(&out, "],\"parameters\":", 15);
		fail |= text_add(&out, params, strlen(params));
		fail |= text_add(&out, ",\"info\":", 8);
		fail |= text_add(&out, info_json, strlen(info_json));
		fail |= text_add(&out, "}", 1);
	}
	free(params);
	free(info_text);
	free(info_json);
	json_decref(info_str);
	if (fail) {
		free(out.buf);
		return NULL;
	}
	*len = out.len;
	return out.buf;
}

json_t *job_sdgate_info(const struct backend *b, double inference_s)
{
	return json_pack("{s:s,s:s,s:s,s:s,s:s,s:f}", "provider", b->id.provider, "location", b->id.location, "gpu",
			 b->id.gpu_class, "gpu_name", b->id.gpu, "backend", b->id.url, "inference_time", inference_s);
}

static void reply_error_body(struct job *j, int status, const char *message)
{
	json_t *e = json_pack("{s:s}", "detail", message);
	j->body = json_dumps(e, JSON_COMPACT);
	j->body_len = j->body ? strlen(j->body) : 0;
	j->status = status;
	json_decref(e);
}

/* The whole answer is a JSON value (an error list). */
static void reply_json_body(struct job *j, int status, json_t *answer)
{
	j->body = json_dumps(answer, JSON_COMPACT);
	j->body_len = j->body ? strlen(j->body) : 0;
	j->status = status;
	json_decref(answer);
}

static void run_native(struct job *j)
{
	struct backend *b = j->b;
	struct engine_result res;
	char err[256] = "";
	json_t *bad = NULL;
	if (j->t.a.kind == A1111_IMG2IMG && txt2img_load_init(&j->t, &bad)) {
		log_info("job: init image refused: %s",
			 json_string_value(json_object_get(json_array_get(json_object_get(bad, "detail"), 0), "msg")));
		reply_json_body(j, 422, bad);
		return;
	}
	j->t.ep.preview_every = 1;
	j->last_step = backend_now();
	j->last_preview = 0;
	double t0 = backend_now();
	int rc = engine_generate(b->engine, &j->t.ep, on_step, j, &b->interrupt, &b->skip, &res, err, sizeof err);
	double inference_s = backend_now() - t0;
	if (rc != ENGINE_OK) {
		log_error("job: engine failed: %s", err);
		reply_error_body(j, rc == ENGINE_EINVAL ? 422 : 500, err[0] ? err : "engine failure");
		return;
	}
	char **images = calloc((size_t)(res.count ? res.count : 1), sizeof *images);
	int encoded = 0;
	for (int i = 0; images && j->t.send_images && i < res.count; i++) {
		char *infotext = txt2img_infotext(&j->t, i);
		images[i] = png_encode_b64(res.images[i].rgb, res.images[i].width, res.images[i].height, infotext);
		free(infotext);
		if (!images[i])
			break;
		encoded++;
	}
	int sent = j->t.send_images ? res.count : 0;
	if (!images || encoded != sent) {
		reply_error_body(j, 500, "out of memory while encoding images");
	} else {
		char stamp[16];
		pthread_mutex_lock(&b->progress.mu);
		memcpy(stamp, b->progress.job_timestamp, sizeof stamp);
		pthread_mutex_unlock(&b->progress.mu);
		json_t *info = txt2img_info(&j->t, res.count, stamp, job_sdgate_info(b, inference_s));
		j->body = build_answer(j, images, sent, info, &j->body_len);
		json_decref(info);
		j->status = j->body ? 200 : 500;
		if (!j->body)
			reply_error_body(j, 500, "out of memory while building the answer");
	}
	log_info("job: %s, %d image(s) %dx%d, %d steps, %s/%s, seed %llu: %.3f s%s",
		 j->t.a.kind == A1111_IMG2IMG ? "img2img"
		 : j->t.ep.hr_width           ? "txt2img + hires fix"
					      : "txt2img",
		 res.count, res.count ? res.images[0].width : 0, res.count ? res.images[0].height : 0,
		 engine_steps_total(&j->t.ep), j->t.sampler_label, j->t.schedule_label,
		 (unsigned long long)j->t.ep.seed, inference_s, res.interrupted ? " (interrupted)" : "");
	for (int i = 0; images && i < encoded; i++)
		free(images[i]);
	free(images);
	engine_result_free(&res);
}

static void job_run(struct lane_task *task)
{
	struct job *j = (struct job *)task;
	struct backend *b = j->b;
	if (atomic_load(&j->abandoned))
		return; /* the client left while the job waited */
	txt2img_fix_seeds(&j->t);
	atomic_store(&b->interrupt, 0);
	atomic_store(&b->skip, 0);
	pthread_mutex_lock(&b->progress.mu);
	b->progress.active = 1;
	b->progress.job_no = 0;
	b->progress.job_count = j->t.ep.batch_size * j->t.ep.n_iter;
	b->progress.sampling_step = 0;
	b->progress.sampling_steps = engine_steps_total(&j->t.ep);
	b->progress.interrupted = b->progress.skipped = 0;
	b->progress.started = backend_now();
	backend_timestamp(b->progress.job_timestamp);
	pthread_mutex_unlock(&b->progress.mu);

	if (b->upstream_url) {
		double inference_s = 0;
		j->body = upstream_txt2img(b, &j->t, &inference_s, &j->status, &j->body_len);
	} else {
		run_native(j);
	}
	atomic_fetch_add(&b->jobs_done, 1);
	set_progress_idle(b);
}

static void job_done(struct httpd *h, struct lane_task *task)
{
	struct job *j = (struct job *)task;
	(void)h;
	if (j->guard)
		j->guard->job = NULL;
	if (j->req) {
		if (j->task.cancelled || !j->body)
			httpd_reply_detail(j->req, 503,
					   j->task.cancelled ? "The backend is shutting down"
							     : "The job produced no answer");
		else {
			httpd_reply_owned(j->req, j->status, "application/json", j->body, j->body_len);
			j->body = NULL;
		}
	}
	free(j->body);
	txt2img_free(&j->t);
	free(j);
}

void job_submit(struct backend *b, h2o_req_t *req, struct txt2img *t)
{
	struct job *j = calloc(1, sizeof *j);
	if (!j) {
		txt2img_free(t);
		httpd_reply_detail(req, 500, "out of memory");
		return;
	}
	j->b = b;
	j->t = *t;
	j->req = req;
	j->guard = httpd_alloc_guarded(req, sizeof *j->guard, guard_dispose);
	j->guard->job = j;
	j->task.run = job_run;
	j->task.done = job_done;
	lane_submit(b->jobs, &j->task);
}
