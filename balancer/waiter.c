/* waiter.c — the façade's waiting request: POST /sdapi/v1/txt2img and
 * /img2img (api_a1111.c) and POST /v1/images/generations (api_openai.c)
 * answer once their job ended; a client that hangs up cancels the job.
 *
 * With an Idempotency-Key (idem.c: the jobs API's rules; NGINX's shipped
 * conf sets one per request when the client sent none), the job is saved
 * at intake like a jobs-API job, so that a retry reaches it on any
 * balancer of a shared database and a takeover runs it again (jobs.c):
 *   - the key's job unfinished here: the retry waits for it (409
 *     request_in_progress when a request waits for it already);
 *   - finished: answered as the first request was, its images read back
 *     from the store (readback.c; 410 result_gone once dropped);
 *   - another balancer's, unfinished: the retry waits until the job is
 *     here (remote_when_here: finished there, or taken over here), then as
 *     above.
 * Without a key, the job is stored only when it ends: its client waits on
 * this connection, which a restart would cut anyway. Loop thread. */
#include "balancer.h"

#include "log.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>

struct waiter {
	struct balancer *b;
	h2o_req_t *req;
	struct job *job; /* NULL once answered */
	const struct waiter_api *api;
};

/* The request ended: if it was not answered, its client went away. */
static void waiter_dispose(void *p)
{
	struct waiter *w = p;
	struct job *j = w->job;
	if (!j || w->b->stopping)
		return;
	j->waiter = NULL;
	w->job = NULL;
	if (!jobs_is_final(j))
		dispatch_cancel(w->b, j);
}

/* The status an ended job's failure answers: its code's (common/error.c). */
static int failure_status(const char *code) { return sd_error_status(sd_error_of(code)); }

/* A done job's A1111 answer with its images read back (readback.c). */
static void a1111_images(struct balancer *b, h2o_req_t *req, struct job *j, json_t *images, void *user)
{
	(void)b;
	(void)user;
	if (!j || !images) {
		bal_reply_error(req, SDE_RESULT_GONE, "This job's images are no longer kept", NULL);
		return;
	}
	json_t *info = json_object_get(j->result, "info");
	httpd_reply_json(req, 200,
			 json_pack("{s:O,s:O,s:o}", "images", images, "parameters", j->request, "info",
				   json_is_string(info) ? json_incref(info) : json_string("{}")));
}

/* A1111's answer for an ended job (or, not final, the balancer stopping). */
static void a1111_answer(struct balancer *b, h2o_req_t *req, struct job *j)
{
	if (j->status == JOB_DONE && j->reply) {
		httpd_reply_json(req, 200, j->reply);
		j->reply = NULL; /* stolen by the reply */
	} else if (j->status == JOB_DONE) {
		results_read_b64(b, req, j, a1111_images, NULL);
	} else if (j->status == JOB_CANCELLED) {
		/* Stopped before the backend made anything (an interrupt while
		 * queued, or a cancel through the jobs API): A1111 answers an
		 * interrupted txt2img with what was made, here nothing. */
		httpd_reply_json(req, 200,
				 json_pack("{s:[],s:O,s:s}", "images", "parameters", j->request, "info", "{}"));
	} else if (j->status == JOB_FAILED) {
		const char *code = json_string_value(json_object_get(j->error, "code"));
		const char *msg = json_string_value(json_object_get(j->error, "message"));
		httpd_reply_detail(req, failure_status(code ? code : ""), msg ? msg : "failed");
	} else {
		httpd_reply_detail(req, 503, "The balancer is shutting down");
	}
}

static void answer(struct balancer *b, const struct waiter_api *api, h2o_req_t *req, struct job *j)
{
	if (api->answer)
		api->answer(b, req, j);
	else
		a1111_answer(b, req, j);
}

/* The waiter leaves j without answering. */
static void detach(struct job *j)
{
	struct waiter *w = j->waiter;
	if (!w)
		return;
	j->waiter = NULL;
	w->job = NULL;
}

void waiter_finish(struct balancer *b, struct job *j)
{
	struct waiter *w = j->waiter;
	if (!w)
		return;
	detach(j);
	answer(b, w->api, w->req, j);
}

void waiter_shutdown(struct job *j)
{
	struct waiter *w = j->waiter;
	if (!w)
		return;
	detach(j);
	answer(w->b, w->api, w->req, j); /* j is not final: the balancer is shutting down */
}

/* HTTP/1: h2o 2.2.5 stops reading a connection while its request is being
 * handled, so a client that hangs up is otherwise noticed only when the
 * answer is written. Peek at the socket instead: end-of-file means it left.
 * (HTTP/2 resets dispose the request, which the waiter handles.) */
static int client_left(h2o_req_t *req)
{
	if (req->version >= 0x200 || !req->conn->callbacks->get_socket)
		return 0;
	h2o_socket_t *sock = req->conn->callbacks->get_socket(req->conn);
	int fd = sock ? h2o_socket_get_fd(sock) : -1;
	if (fd < 0)
		return 0;
	char c;
	ssize_t n = recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
	return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
}

void waiters_check(struct balancer *b)
{
	for (struct job *j = b->active, *next; j; j = next) {
		next = j->act_next;
		if (j->waiter && client_left(j->waiter->req)) {
			log_info("job %s: its façade client hung up; cancelling", j->id);
			dispatch_cancel(b, j);
		}
	}
}

/* req waits for j. */
static void attach(struct balancer *b, h2o_req_t *req, struct job *j, const struct waiter_api *api)
{
	struct waiter *w = httpd_alloc_guarded(req, sizeof *w, waiter_dispose);
	w->b = b;
	w->req = req;
	w->job = j;
	w->api = api;
	j->waiter = w;
}

/* A retry (the same key and body) reaches its job held here. */
static void join(struct balancer *b, h2o_req_t *req, struct job *j, const struct waiter_api *api)
{
	if (j->waiter && (!jobs_is_final(j) || j->storing)) {
		api->error(req, SDE_REQUEST_IN_PROGRESS,
			   "A request with this Idempotency-Key is waiting for its job already", "Idempotency-Key");
		return;
	}
	h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("idempotent-replayed"), 0, NULL,
			      H2O_STRLIT("true"));
	if (jobs_is_final(j) && !j->storing)
		answer(b, api, req, j);
	else /* queued, running (taken over, or run again after a restart), or its images on their way */
		attach(b, req, j, api);
}

/* What the façade's request keeps while its key is looked up. */
struct start {
	const struct waiter_api *api;
	void *user;
};

static void key_error(struct idem *c, enum sd_error e, const char *message, const char *field)
{
	struct start *s = c->user;
	s->api->error(c->req, e, message, field);
}

/* Another balancer's job is here now (remote.c), or gone (NULL). */
static void on_here(struct balancer *b, h2o_req_t *req, struct job *j, void *user)
{
	struct start *s = user;
	if (j)
		join(b, req, j, s->api);
	else
		s->api->error(req, SDE_NOT_FOUND, "The job of this Idempotency-Key is no longer kept", NULL);
}

static void key_found(struct idem *c, struct job *j, int elsewhere)
{
	struct start *s = c->user;
	if (!elsewhere)
		join(c->b, c->req, j, s->api);
	else if (!remote_when_here(c->b, c->req, j, on_here, s))
		s->api->error(c->req, SDE_RUNNING_ELSEWHERE,
			      "The job of this Idempotency-Key runs on another balancer; try again", NULL);
}

/* A keyed job's row is in (queued now, on a shared database), or was
 * refused: another balancer's job may hold the key, which answers then. */
static void on_saved(void *user, int ok)
{
	struct idem *c = user;
	struct job *j = jobs_find(c->b, c->id);
	if (!j || jobs_is_final(j)) { /* its client left meanwhile, or it ended here already */
		idem_end(c);
		return;
	}
	if (ok && c->shared_key) {
		jobs_enqueue(c->b, j, 0);
		dispatch_schedule(c->b);
	} else if (!ok) {
		struct start *s = c->req ? c->user : NULL;
		j->idem_key[0] = '\0'; /* this one's cancelled row must not claim the key */
		detach(j);
		dispatch_cancel(c->b, j);
		if (s && c->shared_key) {
			idem_look_again(c);
			return;
		}
		if (s)
			s->api->error(c->req, SDE_STORAGE_FAILED, "The job could not be stored; it was not accepted",
				      NULL);
	}
	idem_end(c);
}

static void create(struct idem *c)
{
	struct balancer *b = c->b;
	struct start *s = c->user;
	struct intake_error e;
	struct job *j = s->api->make(b, c->req, s->user, &e);
	if (!j) {
		s->api->refuse(c->req, &e);
		intake_error_free(&e);
		idem_end(c);
		return;
	}
	idem_set(c, j);
	attach(b, c->req, j, s->api);
	if (dispatch_reject_unservable(b, j)) { /* failed: answered */
		idem_end(c);
		return;
	}
	if (!c->shared_key)
		jobs_enqueue(b, j, 0);
	if (c->key[0])
		jobs_save(b, j, on_saved, c); /* first in the store's FIFO: before any later state */
	else
		idem_end(c);
	dispatch_schedule(b);
}

static const struct idem_ops FACADE_KEY = {create, key_found, key_error, 1};

void waiter_start(struct balancer *b, h2o_req_t *req, const struct waiter_api *api, void *user)
{
	struct start *s = h2o_mem_alloc_pool(&req->pool, sizeof *s);
	s->api = api;
	s->user = user;
	idem_start(b, req, api->route, &FACADE_KEY, s);
}
