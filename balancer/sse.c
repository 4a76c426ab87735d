/* sse.c — Server-Sent Events on h2o 2.2.5 for GET /v1/jobs/{id}/events.
 *
 * h2o allows one h2o_send in flight per request: the next may only follow
 * the generator's proceed callback. Events that arrive meanwhile collect in
 * `pending` and go out together. The stream's state lives in the request's
 * pool; its dispose hook unlinks it from the job, so a client that hangs up
 * costs nothing further. A reader too slow to take SSE_MAX_PENDING bytes is
 * cut off rather than buffered without bound.
 *
 * Every event has an id (events.h). A new reader gets the job's current
 * state; one that sends Last-Event-ID (or ?last_event_id=, for clients
 * without EventSource) an id that the kept events cover gets what came after
 * it, then the live events (docs/jobs-api.md "Resuming a stream"). */
#include "balancer.h"

#include "log.h"

#include <stdlib.h>
#include <string.h>

#define SSE_MAX_PENDING (64u << 20)
#define SSE_RETRY_MS 1000 /* EventSource's wait before it reconnects (and resumes) */

struct sse {
	struct sse *next; /* the job's subscriber list */
	struct job *job;  /* NULL once detached */
	h2o_req_t *req;
	h2o_generator_t gen;
	char *pending, *inflight;
	size_t plen, pcap;
	int sending, closing, ended;
	double last_send;
	long long last_id; /* the last event's id sent */
};

static void detach(struct sse *s)
{
	if (!s->job)
		return;
	struct sse **pp = &s->job->subs;
	while (*pp && *pp != s)
		pp = &(*pp)->next;
	if (*pp)
		*pp = s->next;
	s->job = NULL;
	s->next = NULL;
}

static void on_dispose(void *p)
{
	struct sse *s = p;
	detach(s);
	free(s->pending);
	free(s->inflight);
}

static void flush(struct sse *s)
{
	if (s->sending || s->ended || (!s->plen && !s->closing))
		return;
	free(s->inflight);
	s->inflight = s->pending;
	h2o_iovec_t buf = h2o_iovec_init(s->inflight, s->plen);
	s->pending = NULL;
	s->plen = s->pcap = 0;
	s->sending = 1;
	s->last_send = bal_now();
	if (s->closing)
		s->ended = 1;
	h2o_send(s->req, &buf, buf.len ? 1 : 0, s->closing ? H2O_SEND_STATE_FINAL : H2O_SEND_STATE_IN_PROGRESS);
}

static void on_proceed(h2o_generator_t *gen, h2o_req_t *req)
{
	struct sse *s = H2O_STRUCT_FROM_MEMBER(struct sse, gen, gen);
	s->sending = 0;
	flush(s);
}

static void append(struct sse *s, const char *text, size_t len)
{
	if (s->ended || s->closing)
		return;
	if (s->plen + len > SSE_MAX_PENDING) {
		log_warn("events: a reader fell %zu bytes behind; closing its stream", s->plen);
		s->closing = 1;
		detach(s);
		flush(s);
		return;
	}
	if (s->plen + len > s->pcap) {
		size_t cap = s->pcap ? s->pcap : 4096;
		while (cap < s->plen + len)
			cap *= 2;
		char *grown = realloc(s->pending, cap);
		if (!grown)
			return;
		s->pending = grown;
		s->pcap = cap;
	}
	memcpy(s->pending + s->plen, text, len);
	s->plen += len;
}

struct sse *sse_next(struct sse *s) { return s->next; }

void sse_send(struct sse *s, long long id, const char *event, const json_t *data)
{
	char *text = json_dumps(data, JSON_COMPACT | JSON_ENCODE_ANY);
	if (!text)
		return;
	char head[96];
	int n = snprintf(head, sizeof head, "id: %lld\nevent: %s\ndata: ", id, event);
	s->last_id = id;
	append(s, head, (size_t)n);
	append(s, text, strlen(text)); /* compact JSON has no newline */
	append(s, "\n\n", 2);
	free(text);
	flush(s);
}

/* The reader's Last-Event-ID, or its ?last_event_id= when it sends no such
 * header: 0 and *out when it is one of ours in form, else -1 (absent,
 * malformed, too long: the reader is new). */
static int last_event_id(h2o_req_t *req, long long *out)
{
	h2o_iovec_t v = httpd_header(req, "last-event-id");
	if (v.base)
		return events_parse_id(v.base, v.len, out);
	char q[BAL_EVENTS_MAX_ID_DIGITS + 2];
	int n = httpd_query_param(req, "last_event_id", q, sizeof q);
	return n < 0 ? -1 : events_parse_id(q, (size_t)n, out);
}

/* 204 No Content, no body and no Content-Length (RFC 9110 8.6). */
static void reply_no_content(h2o_req_t *req)
{
	static h2o_generator_t gen = {NULL, NULL};
	req->res.status = 204;
	req->res.reason = "No Content";
	h2o_start_response(req, &gen);
	h2o_send(req, NULL, 0, H2O_SEND_STATE_FINAL);
}

static void replay_one(void *user, const struct job_event *e) { sse_send(user, e->id, e->name, e->data); }

static void feed(struct balancer *b, struct sse *s, struct job *j, int resuming, long long after);

void sse_open(struct balancer *b, h2o_req_t *req, struct job *j)
{
	long long after = 0;
	int resuming = last_event_id(req, &after) == 0;
	int final = jobs_is_final(j) && !j->storing;
	if (final && resuming && after == j->events.last_id) {
		/* It has the final event: 204 tells EventSource to stop reconnecting. */
		reply_no_content(req);
		return;
	}
	struct sse *s = httpd_alloc_guarded(req, sizeof *s, on_dispose);
	s->req = req;
	s->gen.proceed = on_proceed;
	req->res.status = 200;
	req->res.reason = "OK";
	h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, H2O_STRLIT("text/event-stream"));
	h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CACHE_CONTROL, NULL, H2O_STRLIT("no-cache"));
	h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("x-accel-buffering"), 0, NULL,
			      H2O_STRLIT("no"));
	h2o_start_response(req, &s->gen);
	char retry[32];
	int n = snprintf(retry, sizeof retry, "retry: %d\n\n", SSE_RETRY_MS);
	append(s, retry, (size_t)n);

	feed(b, s, j, resuming, after);
}

/* What a stream gets from job j from now on: a finished job's final event
 * and the end; else what it missed after `after` (resuming, when the kept
 * events cover it) or the current state, then the live events. */
static void feed(struct balancer *b, struct sse *s, struct job *j, int resuming, long long after)
{
	if (jobs_is_final(j) && !j->storing) { /* all a finished job answers, whatever the reader had */
		const char *event;
		json_t *data;
		jobs_final_event(b, j, &event, &data);
		sse_send(s, j->events.last_id, event, data);
		json_decref(data);
		s->closing = 1;
		s->job = NULL;
		flush(s);
		return;
	}
	jobs_refresh_events(b, j);
	if (!resuming || !events_resumable(&j->events, after))
		after = events_current(&j->events);
	events_replay(&j->events, after, replay_one, s);
	s->job = j;
	s->next = j->subs;
	j->subs = s;
}

void sse_move_all(struct balancer *b, struct job *from, struct job *to)
{
	while (from->subs) {
		struct sse *s = from->subs;
		from->subs = s->next;
		s->next = NULL;
		s->job = NULL;
		feed(b, s, to, 1, s->last_id);
	}
}

void sse_close_all(struct job *j)
{
	while (j->subs) {
		struct sse *s = j->subs;
		j->subs = s->next;
		s->next = NULL;
		s->job = NULL;
		s->closing = 1;
		flush(s);
	}
}

void sse_keepalive(struct job *j)
{
	double now = bal_now();
	for (struct sse *s = j->subs; s; s = s->next)
		if (!s->sending && now - s->last_send >= BAL_SSE_KEEPALIVE_S) {
			append(s, ": keep-alive\n\n", 14);
			flush(s);
		}
}
