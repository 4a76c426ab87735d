/* sse.c — Server-Sent Events on h2o 2.2.5 for GET /v1/jobs/{id}/events.
 *
 * h2o allows one h2o_send in flight per request: the next may only follow
 * the generator's proceed callback. Events that arrive meanwhile collect in
 * `pending` and go out together. The stream's state lives in the request's
 * pool; its dispose hook unlinks it from the job, so a client that hangs up
 * costs nothing further. A reader too slow to take SSE_MAX_PENDING bytes is
 * cut off rather than buffered without bound. */
#include "balancer.h"

#include "log.h"

#include <stdlib.h>
#include <string.h>

#define SSE_MAX_PENDING (64u << 20)

struct sse {
	struct sse *next; /* the job's subscriber list */
	struct job *job;  /* NULL once detached */
	h2o_req_t *req;
	h2o_generator_t gen;
	char *pending, *inflight;
	size_t plen, pcap;
	int sending, closing, ended;
	double last_send;
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

void sse_send(struct sse *s, const char *event, const json_t *data)
{
	char *text = json_dumps(data, JSON_COMPACT | JSON_ENCODE_ANY);
	if (!text)
		return;
	char head[64];
	int n = snprintf(head, sizeof head, "event: %s\ndata: ", event);
	append(s, head, (size_t)n);
	append(s, text, strlen(text)); /* compact JSON has no newline */
	append(s, "\n\n", 2);
	free(text);
	flush(s);
}

void sse_open(struct balancer *b, h2o_req_t *req, struct job *j)
{
	struct sse *s = httpd_alloc_guarded(req, sizeof *s, on_dispose);
	s->req = req;
	s->gen.proceed = on_proceed;
	s->job = j;
	req->res.status = 200;
	req->res.reason = "OK";
	h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, H2O_STRLIT("text/event-stream"));
	h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CACHE_CONTROL, NULL, H2O_STRLIT("no-cache"));
	h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("x-accel-buffering"), 0, NULL,
			      H2O_STRLIT("no"));
	h2o_start_response(req, &s->gen);

	const char *event;
	json_t *data;
	jobs_current_event(b, j, &event, &data);
	sse_send(s, event, data);
	if (j->status == JOB_QUEUED) /* so the scheduler does not repeat it */
		j->last_position = (int)json_integer_value(json_object_get(data, "position"));
	if (j->status == JOB_RUNNING && j->steps > 0) {
		json_t *p = json_pack("{s:i,s:i,s:f}", "step", j->step, "steps", j->steps, "progress",
				      (double)j->step / j->steps);
		if (j->preview) {
			json_object_set_new(p, "preview", json_string(j->preview));
			json_object_set_new(p, "preview_type", json_string(j->preview_type));
		}
		sse_send(s, "progress", p);
		json_decref(p);
	}
	json_decref(data);
	if (jobs_is_final(j) && !j->storing) {
		s->closing = 1;
		s->job = NULL;
		flush(s);
		return;
	}
	s->next = j->subs;
	j->subs = s;
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
