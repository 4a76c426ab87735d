/* balancer_client.c — the gateway's side of the balancer's HTTP API, on
 * libcurl multi in a thread of its own, so that the lws service thread never
 * waits on the network.
 *
 * Per job: POST /v1/jobs (202 {id}), then GET /v1/jobs/{id}/events, whose
 * Server-Sent Events are parsed in the write callback (bounded buffers) and
 * turned into the websocket messages of docs/websocket.md; on the done
 * event, GET of the first image's URL (bounded, its Content-Type one of
 * PNG, JPEG, WebP), sent on as base64 with that type; DELETE on
 * cancel or when the client's connection closes. A balancer that cannot be
 * reached is skipped for the next one (--balancer is repeatable); an event
 * stream that breaks is re-opened for --stream-patience-s, with Last-Event-ID:
 * the last event id it delivered, so the balancer replays what was missed
 * and nothing twice (the balancer keeps
 * accepted jobs across a restart, and a late subscriber gets the job's
 * current state), and if its balancer stays away the job is submitted to the
 * next one. Every board_interval_ms, GET /v1/backends feeds the board.
 *
 * Threads: the service thread only calls bc_submit/bc_cancel/bc_close_conn/
 * bc_take_events (a mutex-protected queue each way); everything else runs on
 * this module's thread, which owns every job and every curl handle. */
#include "gateway.h"

#include "error.h"
#include "sse_parse.h"

#include "b64.h"
#include "json.h"
#include "log.h"

#include <curl/curl.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#define BC_MAX_BALANCERS 64

enum cmd_kind { CMD_SUBMIT, CMD_CANCEL, CMD_CLOSE };

struct cmd {
	struct cmd *next;
	enum cmd_kind kind;
	uint64_t conn;
	char id[GW_MAX_ID + 1];
	char addr[64];
	double work;
	json_t *body;
};

/* J_WAITING: the event stream broke, re-opened at retry_at; J_RESUBMIT: no
 * balancer took the submission, sent again (same Idempotency-Key) at
 * retry_at; J_FETCHING: done, its image being fetched. */
enum job_state { J_SUBMITTING, J_STREAMING, J_WAITING, J_RESUBMIT, J_FETCHING };

/* Server-Sent Events parser state: the line being read, the event's name
 * and its data lines joined by '\n'. Both buffers are bounded. */

struct xfer;

/* Retries of one thing (the event stream, the submission) within
 * --stream-patience-s of its first failure; zeroed when it works again. */
struct retry_window {
	double since; /* the first failure; 0 while it works */
	int tries;
};

struct job {
	struct job *next, *prev;
	uint64_t conn;
	char id[GW_MAX_ID + 1];
	char addr[64];
	double work;
	char *body;        /* the POST body, kept for a resubmission */
	char idem_key[48]; /* Idempotency-Key of every submission of this job */
	enum job_state state;
	int bal;                    /* the balancer that has it */
	int submits;                /* balancers tried */
	struct retry_window stream; /* re-opens since the stream last delivered an event */
	struct retry_window submit; /* submissions since no balancer took the job */
	double retry_at;
	char job_id[64];        /* the balancer's id, once accepted */
	char last_event_id[24]; /* of the last event its stream delivered (digits), sent as Last-Event-ID when the
				   stream is re-opened: the balancer replays what was missed (docs/jobs-api.md) */
	int cancel_requested;
	int detached; /* the connection is gone: no more events */
	int final;
	json_t *done_msg; /* the done message, until its image is fetched */
	char image_path[160];
	struct xfer *x; /* the running submit, stream or image fetch */
};

enum xfer_kind { X_SUBMIT, X_STREAM, X_DELETE, X_BOARD, X_SAMPLERS, X_IMAGE };

struct xfer {
	struct xfer *next, *prev; /* every live transfer, for shutdown */
	enum xfer_kind kind;
	struct bc *bc;
	struct job *job; /* X_SUBMIT, X_STREAM */
	int bal;
	CURL *easy;
	struct curl_slist *headers;
	char *resp; /* non-stream answers, and a stream's non-200 body */
	size_t resp_len, resp_cap, resp_max;
	long status;
	int overflow;
	int stop;       /* a stream that got its final event */
	double stop_at; /* when (now_s) */
	struct sse_parser sse;
	char err[CURL_ERROR_SIZE];
};

struct bc {
	const struct gw_config *cfg;
	void (*wake)(void *);
	void *wake_user;
	pthread_t thread;
	CURLM *multi;

	pthread_mutex_t mu; /* guards cmds, events, stopping */
	struct cmd *cmds, *cmds_tail;
	struct bc_event *events, *events_tail;
	int stopping;

	/* thread-owned */
	struct job *jobs;
	struct xfer *xfers;
	struct bc_event *out, *out_tail; /* produced this round, published at its end */
	int preferred;
	double next_board;
	struct xfer *board_x;
	int board_tries;
	char *board_text; /* the last board, for change detection */
	json_t *board;
	json_t *samplers;
	int samplers_tries;

	char nonce[17];         /* random per process: Idempotency-Keys of two gateways never meet */
	unsigned long long seq; /* jobs taken, for their Idempotency-Keys */

	atomic_int up[BC_MAX_BALANCERS];
	atomic_int board_ok;
};

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* ---------------------------------------------------------------- events out */

static void emit(struct bc *bc, struct bc_event *ev)
{
	if (bc->out_tail)
		bc->out_tail->next = ev;
	else
		bc->out = ev;
	bc->out_tail = ev;
}

/* A websocket message for job j; msg is stolen. No-op for a detached job. */
static void emit_job(struct bc *bc, struct job *j, json_t *msg, enum bc_outcome outcome, int droppable, int rejected)
{
	if (j->detached || !msg) {
		json_decref(msg);
		return;
	}
	struct bc_event *ev = calloc(1, sizeof *ev);
	if (!ev) {
		json_decref(msg);
		return;
	}
	ev->kind = BC_EV_JOB;
	ev->conn = j->conn;
	memcpy(ev->id, j->id, sizeof ev->id);
	memcpy(ev->addr, j->addr, sizeof ev->addr);
	ev->work = j->work;
	ev->outcome = outcome;
	ev->droppable = droppable;
	ev->rejected = rejected;
	json_object_set_new(msg, "id", json_string(j->id));
	ev->text = json_dump_compact(msg, &ev->len);
	json_decref(msg);
	if (!ev->text) {
		free(ev);
		return;
	}
	emit(bc, ev);
}

static void emit_error(struct bc *bc, struct job *j, const char *code, const char *message, const char *field,
		       int rejected)
{
	json_t *m = json_pack("{s:s,s:s,s:s}", "type", "error", "code", code, "message", message);
	if (field && *field)
		json_object_set_new(m, "field", json_string(field));
	enum bc_outcome o = !strcmp(code, sd_error_code(SDE_CANCELLED)) ? BC_CANCELLED : BC_FAILED;
	metrics_inc(o == BC_CANCELLED ? GW_C_JOBS_CANCELLED : GW_C_JOBS_FAILED);
	j->final = 1;
	emit_job(bc, j, m, o, 0, rejected);
}

/* Publishes this round's events and wakes the service thread once. */
static void publish(struct bc *bc)
{
	if (!bc->out)
		return;
	pthread_mutex_lock(&bc->mu);
	if (bc->events_tail)
		bc->events_tail->next = bc->out;
	else
		bc->events = bc->out;
	bc->events_tail = bc->out_tail;
	pthread_mutex_unlock(&bc->mu);
	bc->out = bc->out_tail = NULL;
	bc->wake(bc->wake_user);
}

void bc_event_free(struct bc_event *ev)
{
	if (!ev)
		return;
	free(ev->text);
	json_decref(ev->board);
	json_decref(ev->samplers);
	free(ev);
}

struct bc_event *bc_take_events(struct bc *bc)
{
	pthread_mutex_lock(&bc->mu);
	struct bc_event *ev = bc->events;
	bc->events = bc->events_tail = NULL;
	pthread_mutex_unlock(&bc->mu);
	return ev;
}

/* The stream's events (sse_parse.c calls back here). */
static void on_sse_event(struct xfer *x, const char *name, const char *data, size_t len);

static int sse_cb(void *user, const char *name, const char *data, size_t len)
{
	struct xfer *x = user;
	on_sse_event(x, name, data, len);
	return x->stop;
}

/* ---------------------------------------------------------------- transfers */

static size_t on_write(char *p, size_t size, size_t nmemb, void *user)
{
	struct xfer *x = user;
	size_t n = size * nmemb;
	if (x->stop) /* a stream after its final event: the rest (its end) is read, so its connection is kept */
		return x->kind == X_STREAM ? n : 0;
	if (x->kind == X_STREAM) {
		if (!x->status)
			curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &x->status);
		if (x->status == 200) {
			if (sse_parser_feed(&x->sse, p, n) != 0 && x->sse.overflow)
				x->overflow = 1;
			return x->overflow ? 0 : n;
		}
	}
	size_t max = x->kind == X_STREAM ? 65536 : x->resp_max;
	if (sse_buf_append(&x->resp, &x->resp_len, &x->resp_cap, p, n, max)) {
		x->overflow = 1;
		return 0;
	}
	return n;
}

static void xfer_free(struct bc *bc, struct xfer *x)
{
	if (!x)
		return;
	if (x->prev)
		x->prev->next = x->next;
	else if (bc->xfers == x)
		bc->xfers = x->next;
	if (x->next)
		x->next->prev = x->prev;
	if (x->easy) {
		curl_multi_remove_handle(bc->multi, x->easy);
		curl_easy_cleanup(x->easy);
	}
	curl_slist_free_all(x->headers);
	free(x->resp);
	sse_parser_free(&x->sse);
	free(x);
}

/* Starts a transfer to balancer bal at path; body (borrowed, copied by curl)
 * makes it a POST unless method says otherwise. */
static struct xfer *xfer_start(struct bc *bc, enum xfer_kind kind, int bal, const char *method, const char *path,
			       const char *extra_header, const char *body, const char *client_addr)
{
	struct xfer *x = calloc(1, sizeof *x);
	if (!x)
		return NULL;
	x->kind = kind;
	x->bc = bc;
	x->bal = bal;
	x->resp_max = GW_MAX_REPLY;
	sse_parser_init(&x->sse, GW_MAX_EVENT, sse_cb, x);
	x->easy = curl_easy_init();
	if (!x->easy) {
		free(x);
		return NULL;
	}
	const char *base = bc->cfg->balancers[bal];
	size_t bl = strlen(base);
	while (bl && base[bl - 1] == '/')
		bl--;
	char url[2048];
	snprintf(url, sizeof url, "%.*s%s", (int)bl, base, path);
	CURL *e = x->easy;
	curl_easy_setopt(e, CURLOPT_URL, url);
	curl_easy_setopt(e, CURLOPT_PRIVATE, x);
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_write);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, x);
	curl_easy_setopt(e, CURLOPT_ERRORBUFFER, x->err);
	curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
	long connect_ms = bc->cfg->balancer_timeout_ms < 3000 ? bc->cfg->balancer_timeout_ms : 3000;
	curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, connect_ms);
	if (kind == X_STREAM) {
		/* no overall limit: a 50-step 2048² job on a slow GPU takes long;
		 * the balancer sends a keep-alive comment every 15 s */
		curl_easy_setopt(e, CURLOPT_LOW_SPEED_LIMIT, 1L);
		curl_easy_setopt(e, CURLOPT_LOW_SPEED_TIME, 45L);
		x->headers = curl_slist_append(x->headers, "Accept: text/event-stream");
	} else {
		curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, bc->cfg->balancer_timeout_ms);
	}
	if (body) {
		curl_easy_setopt(e, CURLOPT_POSTFIELDS, body);
		x->headers = curl_slist_append(x->headers, "Content-Type: application/json");
	}
	if (method)
		curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
	x->headers = curl_slist_append(x->headers, "Expect:");
	if (extra_header)
		x->headers = curl_slist_append(x->headers, extra_header);
	if (bc->cfg->admin_token && *bc->cfg->admin_token) {
		char h[512];
		snprintf(h, sizeof h, "Authorization: Bearer %s", bc->cfg->admin_token);
		x->headers = curl_slist_append(x->headers, h);
		if (client_addr && *client_addr) {
			snprintf(h, sizeof h, "X-Sdgate-Client: %s", client_addr);
			x->headers = curl_slist_append(x->headers, h);
		}
	}
	curl_easy_setopt(e, CURLOPT_HTTPHEADER, x->headers);
	x->next = bc->xfers;
	if (bc->xfers)
		bc->xfers->prev = x;
	bc->xfers = x;
	if (curl_multi_add_handle(bc->multi, e) != CURLM_OK) {
		xfer_free(bc, x);
		return NULL;
	}
	return x;
}

static void send_delete(struct bc *bc, struct job *j)
{
	char path[128];
	snprintf(path, sizeof path, "/v1/jobs/%s", j->job_id);
	if (!xfer_start(bc, X_DELETE, j->bal, "DELETE", path, NULL, NULL, j->addr))
		log_warn("job %s: could not start DELETE", j->job_id);
}

/* ---------------------------------------------------------------- jobs */

static void job_free(struct bc *bc, struct job *j)
{
	if (j->prev)
		j->prev->next = j->next;
	else
		bc->jobs = j->next;
	if (j->next)
		j->next->prev = j->prev;
	xfer_free(bc, j->x);
	json_decref(j->done_msg);
	free(j->body);
	free(j);
}

/* After a failure: 1 and *retry_at set (0.25 s doubling, at most
 * GW_STREAM_BACKOFF_MAX_S) while within --stream-patience-s of the
 * window's first failure; 0 once patience has run out. */
static int retry_later(const struct bc *bc, struct retry_window *w, double *retry_at)
{
	double now = now_s();
	if (w->since == 0)
		w->since = now;
	if (now - w->since >= bc->cfg->stream_patience_s)
		return 0;
	*retry_at = now + fmin(0.25 * (double)(1 << (w->tries < 4 ? w->tries : 4)), GW_STREAM_BACKOFF_MAX_S);
	w->tries++;
	return 1;
}

static void job_submit(struct bc *bc, struct job *j)
{
	j->state = J_SUBMITTING;
	j->submits++;
	j->job_id[0] = '\0';
	j->last_event_id[0] = '\0';
	j->stream = (struct retry_window){0};
	char key[96];
	snprintf(key, sizeof key, "Idempotency-Key: %s", j->idem_key);
	j->x = xfer_start(bc, X_SUBMIT, j->bal, NULL, "/v1/jobs", key, j->body, j->addr);
	if (j->x)
		j->x->job = j;
	else
		emit_error(bc, j, sd_error_code(SDE_INTERNAL), "could not start the request to the balancer", NULL, 1);
	metrics_inc(GW_C_JOBS_SUBMITTED);
}

static void job_stream(struct bc *bc, struct job *j)
{
	char path[128], resume[64] = "";
	snprintf(path, sizeof path, "/v1/jobs/%s/events", j->job_id);
	if (j->last_event_id[0])
		snprintf(resume, sizeof resume, "Last-Event-ID: %s", j->last_event_id);
	j->state = J_STREAMING;
	j->x = xfer_start(bc, X_STREAM, j->bal, NULL, path, resume[0] ? resume : NULL, NULL, j->addr);
	if (j->x)
		j->x->job = j;
	else
		emit_error(bc, j, sd_error_code(SDE_INTERNAL), "could not open the job's event stream", NULL, 0);
}

static const char *str_or(const json_t *o, const char *key, const char *dflt)
{
	const char *s = json_string_value(json_object_get(o, key));
	return s ? s : dflt;
}

/* The image types a browser is given: the web UI makes its Blobs with this
 * type, so nothing else (text/html from a hostile provider) ever reaches it. */
static const char *allowed_image_type(const char *type)
{
	static const char *const OK[] = {"image/png", "image/jpeg", "image/webp"};
	for (size_t i = 0; type && i < sizeof OK / sizeof OK[0]; i++)
		if (!strcmp(type, OK[i]))
			return OK[i];
	return NULL;
}

/* A progress event's preview, passed on only as bare base64 of an allowed
 * type (image/png when the balancer names none). */
static void add_preview(json_t *m, const json_t *d)
{
	json_t *preview = json_object_get(d, "preview");
	json_t *ptype = json_object_get(d, "preview_type");
	const char *type = allowed_image_type(ptype ? json_string_value(ptype) : "image/png");
	if (!json_is_string(preview) || !type)
		return;
	size_t len = json_string_length(preview);
	const char *b64 = b64_payload(json_string_value(preview), &len);
	if (len == 0 || !b64_is_valid(b64, len))
		return;
	json_object_set_new(m, "preview", json_stringn(b64, len));
	json_object_set_new(m, "preview_type", json_string(type));
}

/* The done event: its message waits in the job (without the image) while
 * the first image is fetched from the URL the event gives, which must be
 * this job's. */
static void on_done_event(struct job *j, const json_t *d)
{
	const char *url = json_string_value(json_object_get(json_array_get(json_object_get(d, "images"), 0), "url"));
	char prefix[128];
	int n = snprintf(prefix, sizeof prefix, "/v1/jobs/%s/images/", j->job_id);
	if (!url || strncmp(url, prefix, (size_t)n) || !url[n] || url[n + strspn(url + n, "0123456789")] ||
	    strlen(url) >= sizeof j->image_path) {
		j->image_path[0] = '\0';
		return;
	}
	snprintf(j->image_path, sizeof j->image_path, "%s", url);
	json_t *seed = json_object_get(d, "seed");
	json_t *info = NULL;
	if (!json_is_integer(seed)) {
		json_t *is = json_object_get(d, "info");
		info = json_is_string(is) ? json_loads(json_string_value(is), 0, NULL) : json_incref(is);
		seed = json_object_get(info, "seed");
	}
	json_decref(j->done_msg);
	j->done_msg = json_pack("{s:s,s:O*,s:O*,s:O*,s:s,s:s,s:s}", "type", "done", "seed", seed, "inference_ms",
				json_object_get(d, "inference_ms"), "total_ms", json_object_get(d, "total_ms"),
				"provider", str_or(d, "provider", ""), "location", str_or(d, "location", ""), "gpu",
				str_or(d, "gpu", ""));
	json_decref(info);
}

/* The stream got its final event: what follows is read and dropped while the
 * balancer ends it (end_stopped_streams). */
static void stream_stop(struct xfer *x)
{
	if (!x->stop)
		x->stop_at = now_s();
	x->stop = 1;
}

/* The balancer's SSE event → the client's message. */
static void on_sse_event(struct xfer *x, const char *name, const char *data, size_t len)
{
	struct bc *bc = x->bc;
	struct job *j = x->job;
	if (!j || j->final)
		return;
	j->stream = (struct retry_window){0}; /* the stream works (again) */
	size_t idn = strlen(x->sse.id);
	if (idn && idn < sizeof j->last_event_id && strspn(x->sse.id, "0123456789") == idn)
		memcpy(j->last_event_id, x->sse.id, idn + 1);
	json_t *d = json_loadb(data, len, 0, NULL);
	if (!json_is_object(d)) {
		log_warn("job %s: %s event with a body that is not a JSON object", j->job_id, name);
		json_decref(d);
		return;
	}
	if (!strcmp(name, "queued")) {
		emit_job(bc, j, json_pack("{s:s,s:O*}", "type", "queued", "position", json_object_get(d, "position")),
			 BC_RUNNING, 0, 0);
	} else if (!strcmp(name, "assigned")) {
		emit_job(bc, j,
			 json_pack("{s:s,s:s,s:s,s:s}", "type", "assigned", "provider", str_or(d, "provider", ""),
				   "location", str_or(d, "location", ""), "gpu", str_or(d, "gpu", "")),
			 BC_RUNNING, 0, 0);
	} else if (!strcmp(name, "progress")) {
		json_t *m = json_pack("{s:s,s:O*,s:O*}", "type", "progress", "step", json_object_get(d, "step"),
				      "steps", json_object_get(d, "steps"));
		add_preview(m, d);
		emit_job(bc, j, m, BC_RUNNING, json_object_get(m, "preview") ? 2 : 1, 0);
	} else if (!strcmp(name, "done")) {
		on_done_event(j, d);
		stream_stop(x); /* the stream ends here; the image is fetched once it has */
	} else if (!strcmp(name, "failed")) {
		json_t *e = json_object_get(d, "error");
		emit_error(bc, j, str_or(e, "code", sd_error_code(SDE_FAILED)), str_or(e, "message", "the job failed"),
			   NULL, 0);
	} else if (!strcmp(name, "cancelled")) {
		emit_error(bc, j, sd_error_code(SDE_CANCELLED), "cancelled", NULL, 0);
	}
	json_decref(d);
	if (j->final)
		stream_stop(x); /* the stream ends here */
}

static int transport_failed(CURLcode rc) { return rc != CURLE_OK; }

static void set_up(struct bc *bc, int bal, int up)
{
	atomic_store(&bc->up[bal], up);
	if (up)
		bc->preferred = bal;
}

/* Moves job j to the next balancer it has not tried; 0 if there was one. */
static int job_failover(struct bc *bc, struct job *j)
{
	if (j->submits >= (int)bc->cfg->n_balancers)
		return -1;
	int from = j->bal;
	j->bal = (j->bal + 1) % (int)bc->cfg->n_balancers;
	if (bc->preferred == from)
		bc->preferred = j->bal;
	metrics_inc(GW_C_FAILOVERS);
	log_warn("job %s: balancer %s unreachable, trying %s", j->id, bc->cfg->balancers[from],
		 bc->cfg->balancers[j->bal]);
	job_submit(bc, j);
	return 0;
}

static void on_submit_done(struct bc *bc, struct xfer *x, CURLcode rc)
{
	struct job *j = x->job;
	j->x = NULL;
	long status = 0;
	curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &status);
	if (transport_failed(rc) || status == 502 || status == 504) {
		if (transport_failed(rc))
			set_up(bc, x->bal, 0);
		log_warn("job %s: POST %s/v1/jobs: %s", j->id, bc->cfg->balancers[x->bal],
			 transport_failed(rc) ? (x->err[0] ? x->err : curl_easy_strerror(rc)) : "bad gateway");
		/* Every submission of a job carries the same Idempotency-Key, so
		 * sending it again to a balancer that may have stored it (a
		 * timeout, a reset, a restart) finds that job instead of making a
		 * second. While no balancer takes it, keep the job for
		 * --stream-patience-s instead of failing it at once. */
		xfer_free(bc, x);
		if (j->detached) {
			job_free(bc, j);
			return;
		}
		if (job_failover(bc, j) == 0)
			return;
		if (retry_later(bc, &j->submit, &j->retry_at)) {
			j->state = J_RESUBMIT;
			j->submits = 0; /* every balancer may be tried again */
			return;
		}
		emit_error(bc, j, sd_error_code(SDE_BALANCER_UNREACHABLE),
			   "no balancer could be reached; try again in a moment", NULL, 1);
		job_free(bc, j);
		return;
	}
	set_up(bc, x->bal, 1);
	j->submit = (struct retry_window){0};
	json_t *r = x->resp ? json_loadb(x->resp, x->resp_len, 0, NULL) : NULL;
	const char *job_id = json_string_value(json_object_get(r, "id"));
	/* 202: a new job; 200: the balancer already had it (Idempotency-Key). */
	if ((status == 202 || status == 200) && job_id && strlen(job_id) < sizeof j->job_id &&
	    job_id[strspn(job_id, "0123456789abcdefABCDEF")] == '\0') {
		snprintf(j->job_id, sizeof j->job_id, "%s", job_id);
		metrics_inc(GW_C_JOBS_ACCEPTED);
		log_info("job %s: accepted by %s as %s", j->id, bc->cfg->balancers[x->bal], j->job_id);
		json_decref(r);
		xfer_free(bc, x);
		if (j->detached) {
			send_delete(bc, j);
			job_free(bc, j);
			return;
		}
		emit_job(bc, j, json_pack("{s:s,s:s}", "type", "accepted", "job", j->job_id), BC_RUNNING, 0, 0);
		if (j->cancel_requested)
			send_delete(bc, j);
		job_stream(bc, j);
		return;
	}
	/* Refused: the balancer's sdgate error, passed on. */
	json_t *e = json_object_get(r, "error");
	char msg[320];
	if (!json_is_object(e))
		snprintf(msg, sizeof msg, "the balancer answered HTTP %ld", status);
	else
		snprintf(msg, sizeof msg, "%s", str_or(e, "message", "refused by the balancer"));
	if (!j->detached)
		emit_error(bc, j,
			   json_is_object(e) ? str_or(e, "code", sd_error_code(SDE_REFUSED))
					     : sd_error_code(SDE_BALANCER_ERROR),
			   msg, json_is_object(e) ? str_or(e, "field", NULL) : NULL, 1);
	json_decref(r);
	xfer_free(bc, x);
	job_free(bc, j);
}

static void job_fetch_image(struct bc *bc, struct job *j)
{
	j->state = J_FETCHING;
	j->x = xfer_start(bc, X_IMAGE, j->bal, NULL, j->image_path, NULL, NULL, j->addr);
	if (j->x) {
		j->x->job = j;
		j->x->resp_max = GW_MAX_IMAGE;
	} else {
		emit_error(bc, j, sd_error_code(SDE_INTERNAL), "could not fetch the job's image", NULL, 0);
	}
}

static void on_stream_done(struct bc *bc, struct xfer *x, CURLcode rc)
{
	struct job *j = x->job;
	j->x = NULL;
	if (!j->final && x->stop && !j->done_msg) {
		xfer_free(bc, x);
		emit_error(bc, j, sd_error_code(SDE_NO_IMAGE), "the balancer reported the job done without an image",
			   NULL, 0);
		job_free(bc, j);
		return;
	}
	if (!j->final && j->done_msg) {
		xfer_free(bc, x);
		job_fetch_image(bc, j);
		if (j->final)
			job_free(bc, j);
		return;
	}
	if (j->final || x->stop) {
		xfer_free(bc, x);
		job_free(bc, j);
		return;
	}
	long status = x->status;
	if (!status)
		curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &status);
	if (x->overflow) {
		xfer_free(bc, x);
		send_delete(bc, j);
		emit_error(bc, j, sd_error_code(SDE_BALANCER_ERROR),
			   "the balancer sent an event larger than the gateway accepts", NULL, 0);
		job_free(bc, j);
		return;
	}
	if (status == 404) {
		xfer_free(bc, x);
		emit_error(bc, j, sd_error_code(SDE_LOST), "the balancer no longer knows this job", NULL, 0);
		job_free(bc, j);
		return;
	}
	if (transport_failed(rc) && (rc == CURLE_COULDNT_CONNECT || rc == CURLE_OPERATION_TIMEDOUT))
		set_up(bc, x->bal, 0);
	log_warn("job %s: event stream from %s ended early (%s, HTTP %ld)", j->id, bc->cfg->balancers[x->bal],
		 rc ? (x->err[0] ? x->err : curl_easy_strerror(rc)) : "closed", status);
	xfer_free(bc, x);
	/* The job is in the balancer's SQLite file: while it restarts, keep
	 * re-opening the stream (a late subscriber gets the current state)
	 * rather than run the job again elsewhere. */
	if (retry_later(bc, &j->stream, &j->retry_at)) {
		j->state = J_WAITING;
		return;
	}
	/* Its balancer stayed away: another one runs it from scratch. */
	if (!j->cancel_requested && job_failover(bc, j) == 0)
		return;
	emit_error(bc, j, sd_error_code(SDE_BALANCER_LOST), "lost contact with the balancer running this job", NULL, 0);
	job_free(bc, j);
}

/* The image arrived (or not): the done message with it, or an error. A
 * balancer that went away meanwhile is waited for like a broken stream:
 * the stream, re-opened, gives the done event again. */
static void on_image_done(struct bc *bc, struct xfer *x, CURLcode rc)
{
	struct job *j = x->job;
	j->x = NULL;
	long status = 0;
	char *ctype = NULL;
	curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &status);
	curl_easy_getinfo(x->easy, CURLINFO_CONTENT_TYPE, &ctype);
	const char *type = allowed_image_type(ctype);
	if (transport_failed(rc) && !x->overflow && retry_later(bc, &j->stream, &j->retry_at)) {
		log_warn("job %s: fetching its image from %s failed (%s); trying again", j->id,
			 bc->cfg->balancers[x->bal], x->err[0] ? x->err : curl_easy_strerror(rc));
		xfer_free(bc, x);
		json_decref(j->done_msg);
		j->done_msg = NULL;
		j->state = J_WAITING;
		return;
	}
	char *b64 = !rc && status == 200 && type && x->resp_len ? b64_encode_new((unsigned char *)x->resp, x->resp_len)
								: NULL;
	if (!b64) {
		log_warn("job %s: its image from %s: HTTP %ld, %s, type %s", j->id, bc->cfg->balancers[x->bal], status,
			 x->overflow ? "too large"
			 : rc        ? curl_easy_strerror(rc)
				     : "ok",
			 ctype ? ctype : "none");
		emit_error(bc, j, sd_error_code(SDE_NO_IMAGE),
			   status == 410 ? "the job's image is no longer kept" : "the job's image could not be fetched",
			   NULL, 0);
	} else {
		json_t *m = j->done_msg;
		j->done_msg = NULL;
		json_object_set_new(m, "image", json_string_nocheck(b64)); /* base64: ASCII */
		json_object_set_new(m, "image_type", json_string(type));
		metrics_inc(GW_C_JOBS_DONE);
		j->final = 1;
		emit_job(bc, j, m, BC_DONE, 0, 0);
	}
	free(b64);
	xfer_free(bc, x);
	job_free(bc, j);
}

/* ---------------------------------------------------------------- board */

static void board_poll(struct bc *bc)
{
	if (bc->board_x)
		return;
	bc->board_x = xfer_start(bc, X_BOARD, bc->preferred, NULL, "/v1/backends", NULL, NULL, NULL);
}

static void on_board_done(struct bc *bc, struct xfer *x, CURLcode rc)
{
	bc->board_x = NULL;
	long status = 0;
	curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &status);
	json_t *r = !rc && status == 200 && x->resp ? json_loadb(x->resp, x->resp_len, 0, NULL) : NULL;
	int bal = x->bal;
	xfer_free(bc, x);
	if (!json_is_array(json_object_get(r, "backends")) || !json_is_array(json_object_get(r, "gpus"))) {
		json_decref(r);
		if (rc)
			set_up(bc, bal, 0);
		log_debug("board: GET %s/v1/backends failed (%s, HTTP %ld)", bc->cfg->balancers[bal],
			  rc ? curl_easy_strerror(rc) : "bad answer", status);
		if (++bc->board_tries < (int)bc->cfg->n_balancers) {
			bc->preferred = (bal + 1) % (int)bc->cfg->n_balancers;
			board_poll(bc); /* the next balancer, now */
		} else {
			bc->board_tries = 0;
			atomic_store(&bc->board_ok, 0);
		}
		return;
	}
	set_up(bc, bal, 1);
	bc->board_tries = 0;
	atomic_store(&bc->board_ok, 1);
	/* Only what the page shows: not backend URLs or ids. */
	static const char *const KEEP[] = {"provider",         "location",      "country", "gpu",
					   "gpu_class",        "simulated",     "state",   "jobs_done",
					   "mean_inference_s", "price_per_hour"};
	json_t *backends = json_array();
	size_t i;
	json_t *b;
	json_array_foreach(json_object_get(r, "backends"), i, b)
	{
		json_t *o = json_object();
		for (size_t k = 0; k < sizeof KEEP / sizeof KEEP[0]; k++) {
			json_t *v = json_object_get(b, KEEP[k]);
			if (v)
				json_object_set(o, KEEP[k], v);
		}
		json_array_append_new(backends, o);
	}
	json_t *board = json_pack("{s:o,s:O}", "backends", backends, "gpus", json_object_get(r, "gpus"));
	json_decref(r);
	char *text = json_dumps(board, JSON_COMPACT | JSON_SORT_KEYS);
	if (text && bc->board_text && !strcmp(text, bc->board_text)) {
		free(text);
		json_decref(board);
	} else {
		free(bc->board_text);
		bc->board_text = text;
		json_decref(bc->board);
		bc->board = board;
		struct bc_event *ev = calloc(1, sizeof *ev);
		if (ev) {
			ev->kind = BC_EV_BOARD;
			ev->board = json_deep_copy(board);
			emit(bc, ev);
		}
	}
	if (!bc->samplers && bc->samplers_tries < 5) {
		bc->samplers_tries++;
		xfer_start(bc, X_SAMPLERS, bal, NULL, "/sdapi/v1/samplers", NULL, NULL, NULL);
	}
}

static void on_samplers_done(struct bc *bc, struct xfer *x, CURLcode rc)
{
	long status = 0;
	curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &status);
	json_t *r = !rc && status == 200 && x->resp ? json_loadb(x->resp, x->resp_len, 0, NULL) : NULL;
	xfer_free(bc, x);
	if (!json_is_array(r) || json_array_size(r) == 0 || bc->samplers) {
		json_decref(r);
		return;
	}
	bc->samplers = r;
	struct bc_event *ev = calloc(1, sizeof *ev);
	if (ev) {
		ev->kind = BC_EV_BOARD;
		ev->samplers = json_deep_copy(r);
		emit(bc, ev);
	}
}

/* ---------------------------------------------------------------- commands */

static void run_command(struct bc *bc, struct cmd *c)
{
	if (c->kind == CMD_SUBMIT) {
		struct job *j = calloc(1, sizeof *j);
		char *body = json_dumps(c->body, JSON_COMPACT);
		if (!j || !body) {
			free(j);
			free(body);
			return;
		}
		j->conn = c->conn;
		memcpy(j->id, c->id, sizeof j->id);
		memcpy(j->addr, c->addr, sizeof j->addr);
		j->work = c->work;
		j->body = body;
		snprintf(j->idem_key, sizeof j->idem_key, "gw-%s-%llu", bc->nonce, ++bc->seq);
		j->bal = bc->preferred;
		j->next = bc->jobs;
		if (bc->jobs)
			bc->jobs->prev = j;
		bc->jobs = j;
		job_submit(bc, j);
		if (j->final)
			job_free(bc, j);
		return;
	}
	for (struct job *j = bc->jobs, *n; j; j = n) {
		n = j->next;
		if (j->conn != c->conn || (c->kind == CMD_CANCEL && strcmp(j->id, c->id)))
			continue;
		j->cancel_requested = 1;
		if (c->kind == CMD_CLOSE) {
			/* Its client is gone: the job ends cancelled, with no event
			 * to send (emit_error never runs for a detached job). */
			if (!j->final)
				metrics_inc(GW_C_JOBS_CANCELLED);
			j->detached = 1;
		}
		if (j->state == J_SUBMITTING)
			continue;             /* the 202 handler sends the DELETE */
		if (j->state == J_RESUBMIT) { /* no balancer has it: nothing to delete */
			if (c->kind == CMD_CANCEL)
				emit_error(bc, j, sd_error_code(SDE_CANCELLED), "cancelled", NULL, 0);
			job_free(bc, j);
			continue;
		}
		if (!j->final)
			send_delete(bc, j);
		if (c->kind == CMD_CLOSE)
			job_free(bc, j);
	}
}

static void take_commands(struct bc *bc, int *stopping)
{
	pthread_mutex_lock(&bc->mu);
	struct cmd *c = bc->cmds;
	bc->cmds = bc->cmds_tail = NULL;
	*stopping = bc->stopping;
	pthread_mutex_unlock(&bc->mu);
	while (c) {
		struct cmd *n = c->next;
		run_command(bc, c);
		json_decref(c->body);
		free(c);
		c = n;
	}
}

static void push_command(struct bc *bc, struct cmd *c)
{
	pthread_mutex_lock(&bc->mu);
	if (bc->cmds_tail)
		bc->cmds_tail->next = c;
	else
		bc->cmds = c;
	bc->cmds_tail = c;
	pthread_mutex_unlock(&bc->mu);
	curl_multi_wakeup(bc->multi);
}

void bc_submit(struct bc *bc, uint64_t conn, const char *id, json_t *body, const char *addr, double work)
{
	struct cmd *c = calloc(1, sizeof *c);
	if (!c) {
		json_decref(body);
		return;
	}
	c->kind = CMD_SUBMIT;
	c->conn = conn;
	snprintf(c->id, sizeof c->id, "%s", id);
	snprintf(c->addr, sizeof c->addr, "%s", addr);
	c->work = work;
	c->body = body;
	push_command(bc, c);
}

void bc_cancel(struct bc *bc, uint64_t conn, const char *id)
{
	struct cmd *c = calloc(1, sizeof *c);
	if (!c)
		return;
	c->kind = CMD_CANCEL;
	c->conn = conn;
	snprintf(c->id, sizeof c->id, "%s", id);
	push_command(bc, c);
}

void bc_close_conn(struct bc *bc, uint64_t conn)
{
	struct cmd *c = calloc(1, sizeof *c);
	if (!c)
		return;
	c->kind = CMD_CLOSE;
	c->conn = conn;
	push_command(bc, c);
}

/* ---------------------------------------------------------------- the thread */

static void reap(struct bc *bc)
{
	CURLMsg *m;
	int left;
	while ((m = curl_multi_info_read(bc->multi, &left))) {
		if (m->msg != CURLMSG_DONE)
			continue;
		CURLcode rc = m->data.result; /* m is invalid once the handle is removed */
		struct xfer *x = NULL;
		curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&x);
		if (!x)
			continue;
		switch (x->kind) {
		case X_SUBMIT:
			on_submit_done(bc, x, rc);
			break;
		case X_STREAM:
			on_stream_done(bc, x, rc);
			break;
		case X_BOARD:
			on_board_done(bc, x, rc);
			break;
		case X_SAMPLERS:
			on_samplers_done(bc, x, rc);
			break;
		case X_IMAGE:
			on_image_done(bc, x, rc);
			break;
		case X_DELETE: {
			long status = 0;
			curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &status);
			log_debug("DELETE on %s: %s, HTTP %ld", bc->cfg->balancers[x->bal],
				  rc ? curl_easy_strerror(rc) : "ok", status);
			xfer_free(bc, x);
			break;
		}
		}
	}
}

/* A stream that got its final event ends there, and the balancer ends it
 * right after (in the same read, or the next): curl then finishes it and
 * keeps its connection for the image fetch and the next job, instead of a
 * new connection per job. One the balancer has not ended within
 * GW_STREAM_END_WAIT_S is cut (its connection closed); *next: when to look
 * again. */
static void end_stopped_streams(struct bc *bc, double now, double *next)
{
	for (struct xfer *x = bc->xfers; x;) {
		if (x->kind == X_STREAM && x->stop && now - x->stop_at >= GW_STREAM_END_WAIT_S) {
			on_stream_done(bc, x, CURLE_OK); /* frees x */
			x = bc->xfers;
			continue;
		}
		if (x->kind == X_STREAM && x->stop && x->stop_at + GW_STREAM_END_WAIT_S < *next)
			*next = x->stop_at + GW_STREAM_END_WAIT_S;
		x = x->next;
	}
}

static void resume_waiting(struct bc *bc, double now, double *next)
{
	for (struct job *j = bc->jobs; j; j = j->next) {
		if (j->state != J_WAITING && j->state != J_RESUBMIT)
			continue;
		if (j->retry_at > now) {
			if (j->retry_at < *next)
				*next = j->retry_at;
		} else if (j->state == J_WAITING) {
			job_stream(bc, j);
		} else {
			job_submit(bc, j);
		}
	}
}

/* Cancels what is still running at its balancer, waits a moment for the
 * DELETEs, then frees everything. */
static void shut_down(struct bc *bc)
{
	while (bc->jobs) {
		struct job *j = bc->jobs;
		if (j->job_id[0] && !j->final)
			send_delete(bc, j);
		j->detached = 1;
		job_free(bc, j);
	}
	xfer_free(bc, bc->board_x);
	bc->board_x = NULL;
	double deadline = now_s() + 2.0;
	int running = 1;
	while (running && now_s() < deadline) {
		curl_multi_perform(bc->multi, &running);
		reap(bc);
		if (running)
			curl_multi_poll(bc->multi, NULL, 0, 100, NULL);
	}
	/* whatever is left (DELETEs to a dead balancer, sampler fetches) */
	while (bc->xfers)
		xfer_free(bc, bc->xfers);
}

static void *bc_main(void *arg)
{
	struct bc *bc = arg;
	int stopping = 0;
	while (!stopping) {
		take_commands(bc, &stopping);
		if (stopping)
			break;
		double now = now_s(), next = now + 1.0;
		if (now >= bc->next_board) {
			board_poll(bc);
			bc->next_board = now + bc->cfg->board_interval_ms / 1000.0;
		}
		if (bc->next_board < next)
			next = bc->next_board;
		resume_waiting(bc, now, &next);
		int running;
		curl_multi_perform(bc->multi, &running);
		reap(bc);
		end_stopped_streams(bc, now_s(), &next);
		publish(bc);
		int wait_ms = (int)ceil((next - now_s()) * 1000);
		if (wait_ms > 0)
			curl_multi_poll(bc->multi, NULL, 0, wait_ms > 1000 ? 1000 : wait_ms, NULL);
	}
	shut_down(bc);
	publish(bc);
	return NULL;
}

struct bc *bc_start(const struct gw_config *cfg, void (*wake)(void *user), void *user)
{
	if (cfg->n_balancers == 0 || cfg->n_balancers > BC_MAX_BALANCERS)
		return NULL;
	struct bc *bc = calloc(1, sizeof *bc);
	if (!bc)
		return NULL;
	bc->cfg = cfg;
	bc->wake = wake;
	bc->wake_user = user;
	atomic_store(&bc->board_ok, -1);
	unsigned char r[8] = {0};
	if (getrandom(r, sizeof r, 0) != (ssize_t)sizeof r) {
		unsigned long long t = (unsigned long long)time(NULL) ^ ((unsigned long long)getpid() << 32);
		memcpy(r, &t, sizeof r);
	}
	for (size_t i = 0; i < sizeof r; i++)
		snprintf(bc->nonce + 2 * i, 3, "%02x", r[i]);
	for (size_t i = 0; i < cfg->n_balancers; i++)
		atomic_store(&bc->up[i], 1);
	pthread_mutex_init(&bc->mu, NULL);
	bc->multi = curl_multi_init();
	if (!bc->multi) {
		free(bc);
		return NULL;
	}
	/* Signals belong to the service thread (it must see EINTR). */
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	int rc = pthread_create(&bc->thread, NULL, bc_main, bc);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc) {
		curl_multi_cleanup(bc->multi);
		free(bc);
		return NULL;
	}
	return bc;
}

void bc_stop(struct bc *bc)
{
	if (!bc)
		return;
	pthread_mutex_lock(&bc->mu);
	bc->stopping = 1;
	pthread_mutex_unlock(&bc->mu);
	curl_multi_wakeup(bc->multi);
	pthread_join(bc->thread, NULL);
	for (struct cmd *c = bc->cmds, *n; c; c = n) {
		n = c->next;
		json_decref(c->body);
		free(c);
	}
	for (struct bc_event *e = bc->events, *n; e; e = n) {
		n = e->next;
		bc_event_free(e);
	}
	curl_multi_cleanup(bc->multi);
	free(bc->board_text);
	json_decref(bc->board);
	json_decref(bc->samplers);
	pthread_mutex_destroy(&bc->mu);
	free(bc);
}

void bc_balancer_up(struct bc *bc, int *up)
{
	for (size_t i = 0; i < bc->cfg->n_balancers; i++)
		up[i] = atomic_load(&bc->up[i]);
}

int bc_board_ok(struct bc *bc) { return atomic_load(&bc->board_ok); }
