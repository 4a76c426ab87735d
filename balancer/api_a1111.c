/* api_a1111.c — the A1111 façade: an A1111 client pointed at the balancer
 * sees one AUTOMATIC1111 whose txt2img runs on whichever backend the router
 * picks. POST /sdapi/v1/txt2img waits for its job (the waiter below); a
 * client that hangs up cancels the job. Progress and interrupt concern the
 * caller's own jobs only, and only a caller with an API key has any there
 * (client.c). Loop thread. */
#include "balancer.h"

#include "log.h"
#include "a1111.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

struct waiter {
	struct balancer *b;
	h2o_req_t *req;
	struct job *job; /* NULL once answered */
};

static struct balancer *bal(struct httpd *h) { return httpd_user(h); }

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

static int failure_status(const char *code)
{
	if (!strcmp(code, "no_backend"))
		return 503;
	if (!strcmp(code, "backend_failed"))
		return 502;
	if (!strcmp(code, "rejected"))
		return 422;
	return 500;
}

void waiter_finish(struct balancer *b, struct job *j)
{
	struct waiter *w = j->waiter;
	if (!w)
		return;
	j->waiter = NULL;
	w->job = NULL;
	if (j->status == JOB_DONE) {
		httpd_reply_json(w->req, 200, j->reply ? j->reply : json_incref(j->result));
		j->reply = NULL; /* stolen by the reply */
	} else if (j->status == JOB_CANCELLED) {
		httpd_reply_detail(w->req, 409, "Interrupted");
	} else {
		const char *code = json_string_value(json_object_get(j->error, "code"));
		const char *msg = json_string_value(json_object_get(j->error, "message"));
		httpd_reply_detail(w->req, failure_status(code ? code : ""), msg ? msg : "failed");
	}
}

void waiter_shutdown(struct job *j)
{
	struct waiter *w = j->waiter;
	if (!w)
		return;
	j->waiter = NULL;
	w->job = NULL;
	httpd_reply_detail(w->req, 503, "The balancer is shutting down");
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
			log_info("job %s: its A1111 client hung up; cancelling", j->id);
			dispatch_cancel(b, j);
		}
	}
}

/* A façade job (txt2img or img2img): queued, its client waiting on req. */
static int wait_for(struct balancer *b, h2o_req_t *req, struct job *j, struct intake_error *e)
{
	if (!j) {
		intake_reply_error(req, e, 1);
		intake_error_free(e);
		return 0;
	}
	struct waiter *w = httpd_alloc_guarded(req, sizeof *w, waiter_dispose);
	w->b = b;
	w->req = req;
	w->job = j;
	j->waiter = w;
	/* Not stored until it ends: its client waits on this connection, which
	 * a restart would cut anyway, so only the job log needs the record. */
	if (!dispatch_reject_unservable(b, j)) {
		jobs_enqueue(b, j, 0);
		dispatch_schedule(b);
	}
	return 0;
}

static int on_txt2img(struct httpd *h, h2o_req_t *req, const char *rest)
{
	struct intake_error e;
	return wait_for(bal(h), req, intake_job(bal(h), req, 1, &e), &e);
}

/* img2img: bodies up to A1111_MAX_IMG2IMG_BODY on this route only
 * (API_A1111_LARGE_BODIES); routed as txt2img, sent to /sdapi/v1/img2img. */
static int on_img2img(struct httpd *h, h2o_req_t *req, const char *rest)
{
	struct intake_error e;
	return wait_for(bal(h), req, intake_img2img(bal(h), req, &e), &e);
}

/* The calling client's most recent unfinished façade job, or NULL. Only a
 * client with an identity of its own (an API key, or the gateway's named
 * client) has one here: an address is shared behind a NAT or a proxy, so an
 * anonymous client's progress is idle and its interrupt stops nothing (it
 * cancels its job by hanging up). */
static struct job *client_job(struct balancer *b, h2o_req_t *req)
{
	char client[64];
	if (bal_client_of(b, req, client, sizeof client) == BAL_CLIENT_ADDRESS)
		return NULL;
	for (struct job *j = b->active; j; j = j->act_next)
		if (j->facade && !strcmp(j->client, client))
			return j;
	return NULL;
}

static int on_progress(struct httpd *h, h2o_req_t *req, const char *rest)
{
	struct balancer *b = bal(h);
	struct job *j = client_job(b, req);
	struct a1111_progress p = {0};
	json_t *image = NULL;
	if (j && j->status == JOB_RUNNING) {
		p.active = 1;
		p.job_count = 1;
		p.sampling_step = j->step;
		p.sampling_steps = j->steps;
		p.progress = j->steps > 0 ? (double)j->step / j->steps : 0;
		double elapsed = bal_now() - j->started;
		if (p.progress > 0.01)
			p.eta_relative = elapsed / p.progress - elapsed;
		char skip[8] = "";
		httpd_query_param(req, "skip_current_image", skip, sizeof skip);
		if (j->preview && strcmp(skip, "true") && strcmp(skip, "True") && strcmp(skip, "1"))
			image = json_string(j->preview);
	} else if (j) {
		p.active = 1; /* queued: A1111 reports a job with no step yet */
		p.job_count = 1;
	}
	httpd_reply_json(req, 200, a1111_progress_json(&p, image));
	return 0;
}

static int on_interrupt(struct httpd *h, h2o_req_t *req, const char *rest)
{
	struct balancer *b = bal(h);
	struct job *j;
	while ((j = client_job(b, req)))
		dispatch_cancel(b, j);
	httpd_reply_json(req, 200, json_object());
	return 0;
}

/* A1111 skips the current image of a batch and goes on; a façade job is one
 * dispatch, so there is nothing to skip: accepted, for clients that call it
 * (webuiapi's skip()), and touches nothing. */
static int on_skip(struct httpd *h, h2o_req_t *req, const char *rest)
{
	httpd_reply_json(req, 200, json_object());
	return 0;
}

static int on_samplers(struct httpd *h, h2o_req_t *req, const char *rest)
{
	httpd_reply_json(req, 200, a1111_samplers_json(&A1111_NATIVE));
	return 0;
}

static int on_schedulers(struct httpd *h, h2o_req_t *req, const char *rest)
{
	httpd_reply_json(req, 200, a1111_schedulers_json(&A1111_NATIVE));
	return 0;
}

/* Every checkpoint title a live backend offers, once. */
static json_t *live_titles(struct balancer *b)
{
	json_t *seen = json_object(), *list = json_array();
	for (struct bk *k = b->backends; k; k = k->next) {
		if (k->state != BK_UP)
			continue;
		size_t i;
		json_t *t;
		json_array_foreach(k->titles, i, t)
		{
			if (json_object_get(seen, json_string_value(t)))
				continue;
			json_object_set_new(seen, json_string_value(t), json_true());
			json_array_append(list, t);
		}
	}
	json_decref(seen);
	return list;
}

static int on_sd_models(struct httpd *h, h2o_req_t *req, const char *rest)
{
	json_t *titles = live_titles(bal(h)), *list = json_array();
	size_t i;
	json_t *t;
	json_array_foreach(titles, i, t)
	{
		const char *title = json_string_value(t);
		const char *br = strstr(title, " [");
		json_t *name = br ? json_stringn(title, (size_t)(br - title)) : json_string(title);
		json_array_append_new(list, json_pack("{s:O,s:o,s:n,s:n,s:s,s:n}", "title", t, "model_name", name,
						      "hash", "sha256", "filename", "", "config"));
	}
	json_decref(titles);
	httpd_reply_json(req, 200, list);
	return 0;
}

static int on_options(struct httpd *h, h2o_req_t *req, const char *rest)
{
	json_t *titles = live_titles(bal(h));
	const char *first = json_string_value(json_array_get(titles, 0));
	json_t *o = json_pack("{s:s,s:i,s:s,s:b}", "sd_model_checkpoint", first ? first : "", "sd_checkpoints_limit", 1,
			      "samples_format", "png", "enable_pnginfo", 1);
	json_decref(titles);
	httpd_reply_json(req, 200, o);
	return 0;
}

static int on_ping(struct httpd *h, h2o_req_t *req, const char *rest)
{
	httpd_reply_json(req, 200, json_object());
	return 0;
}

const struct httpd_route API_A1111_ROUTES[] = {
	{"POST", "/sdapi/v1/txt2img", on_txt2img},
	{"POST", "/sdapi/v1/img2img", on_img2img},
	{"GET", "/sdapi/v1/progress", on_progress},
	{"POST", "/sdapi/v1/interrupt", on_interrupt},
	{"POST", "/sdapi/v1/skip", on_skip},
	{"GET", "/sdapi/v1/samplers", on_samplers},
	{"GET", "/sdapi/v1/schedulers", on_schedulers},
	{"GET", "/sdapi/v1/sd-models", on_sd_models},
	{"GET", "/sdapi/v1/options", on_options},
	{"GET", "/internal/ping", on_ping},
};
const size_t API_A1111_N = sizeof API_A1111_ROUTES / sizeof API_A1111_ROUTES[0];
const char *const API_A1111_LARGE_BODIES[] = {"/sdapi/v1/img2img", NULL};
