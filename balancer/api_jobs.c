/* api_jobs.c — sdgate's jobs API: POST /v1/jobs (202 once the job is in the
 * SQLite file), GET /v1/jobs/{id}, GET /v1/jobs/{id}/events (SSE), GET
 * /v1/jobs/{id}/images/{n} (results.c), DELETE /v1/jobs/{id}. A job id (32
 * random hex chars) is the capability to read or cancel it. Loop thread. */
#include "balancer.h"

#include <stdlib.h>
#include <string.h>

static struct balancer *bal(struct httpd *h) { return httpd_user(h); }

static json_t *accepted_answer(struct balancer *b, const struct job *j)
{
	json_t *v = jobs_view(b, j);
	json_t *answer = json_pack("{s:s,s:O,s:O}", "id", j->id, "status", json_object_get(v, "status"), "position",
				   json_object_get(v, "position"));
	json_decref(v);
	return answer;
}

/* The 202 waits for the store's thread (idem.c holds the request's state
 * meanwhile). On a shared database (store.h) the Idempotency-Key is looked
 * up there first, and a job is queued only once its row is in (a row
 * another balancer wrote under the same key first wins). */

/* A retry's answer: the job its first try made. */
static void replay(h2o_req_t *req, struct balancer *b, const struct job *j)
{
	h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("idempotent-replayed"), 0, NULL,
			      H2O_STRLIT("true"));
	httpd_reply_json(req, 200, accepted_answer(b, j));
}

static void on_saved(void *user, int ok)
{
	struct idem *c = user;
	struct job *j = jobs_find(c->b, c->id);
	if (j && c->shared_key && !ok) {
		/* Maybe another balancer took the key first: its job is the answer. */
		j->idem_key[0] = '\0'; /* this one's cancelled row must not claim the key */
		dispatch_cancel(c->b, j);
		if (c->req) {
			idem_look_again(c);
			return;
		}
	} else if (j && c->shared_key && ok) {
		jobs_enqueue(c->b, j, 0);
		dispatch_schedule(c->b);
	}
	if (c->req) {
		if (!j) {
			bal_reply_error(c->req, SDE_INTERNAL, "The job vanished", NULL);
		} else if (!ok) {
			dispatch_cancel(c->b, j);
			bal_reply_error(c->req, SDE_STORAGE_FAILED, "The job could not be stored; it was not accepted",
					NULL);
		} else {
			httpd_reply_json(c->req, 202, accepted_answer(c->b, j));
		}
	}
	idem_end(c);
}

static void key_error(struct idem *c, enum sd_error e, const char *message, const char *field)
{
	bal_reply_error(c->req, e, message, field);
}

static void key_found(struct idem *c, struct job *j, int elsewhere)
{
	replay(c->req, c->b, j);
	if (elsewhere)
		jobs_free_unlinked(j);
}

/* The job, once no earlier one holds its Idempotency-Key: queued (on a
 * shared database, once its row is in) and answered 202 once stored. */
static void create(struct idem *c)
{
	struct balancer *b = c->b;
	h2o_req_t *req = c->req;
	struct intake_error e;
	struct job *j = intake_jobs_api(b, req, &e);
	if (!j) {
		intake_reply_error(req, &e, 0);
		intake_error_free(&e);
		idem_end(c);
		return;
	}
	idem_set(c, j);
	if (dispatch_reject_unservable(b, j)) {
		const char *msg = json_string_value(json_object_get(j->error, "message"));
		bal_reply_error(req, SDE_NO_BACKEND, msg ? msg : "No live backend can serve this job", NULL);
		idem_end(c);
		return;
	}
	if (!c->shared_key)
		jobs_enqueue(b, j, 0);
	jobs_save(b, j, on_saved, c); /* first in the store's FIFO: before any later state */
	dispatch_schedule(b);
}

static const struct idem_ops JOBS_KEY = {create, key_found, key_error, 0};

static int on_create(struct httpd *h, h2o_req_t *req, const char *rest)
{
	idem_start(bal(h), req, "", &JOBS_KEY, NULL);
	return 0;
}

static int on_job(struct httpd *h, h2o_req_t *req, const char *rest)
{
	struct balancer *b = bal(h);
	char id[BAL_ID_LEN + 1];
	size_t n = strcspn(rest, "/");
	const char *tail = rest + n;
	if (n != BAL_ID_LEN) {
		bal_reply_error(req, SDE_NOT_FOUND, "No such job", NULL);
		return 0;
	}
	memcpy(id, rest, n);
	id[n] = '\0';
	struct job *j = jobs_find(b, id);
	int is_events = strcmp(tail, "/events") == 0;
	int is_image = strncmp(tail, "/images/", 8) == 0;
	if (*tail && !is_events && !is_image)
		return -1;
	if (!j && (httpd_method_is(req, "GET") || (httpd_method_is(req, "DELETE") && !*tail)) &&
	    remote_job_request(b, req, id, tail))
		return 0; /* another balancer's, maybe (remote.c) */
	if (!j) {
		bal_reply_error(req, SDE_NOT_FOUND, "No such job (unknown, or expired)", NULL);
		return 0;
	}
	api_jobs_serve(b, req, j, tail);
	return 0;
}

void api_jobs_serve(struct balancer *b, h2o_req_t *req, struct job *j, const char *tail)
{
	if (httpd_method_is(req, "GET")) {
		if (strncmp(tail, "/images/", 8) == 0)
			results_serve(b, req, j, tail + 8);
		else if (strcmp(tail, "/events") == 0)
			sse_open(b, req, j);
		else
			httpd_reply_json(req, 200, jobs_view(b, j));
	} else if (httpd_method_is(req, "DELETE") && !*tail) {
		if (jobs_is_final(j)) {
			bal_reply_error(req, SDE_ALREADY_FINISHED, "The job has already finished", NULL);
			return;
		}
		dispatch_cancel(b, j);
		httpd_reply_json(req, 200, json_pack("{s:s,s:s}", "id", j->id, "status", "cancelled"));
	} else {
		bal_reply_error(req, SDE_METHOD_NOT_ALLOWED, "Method Not Allowed", NULL);
	}
}

const struct httpd_route API_JOBS_ROUTES[] = {
	{"POST", "/v1/jobs", on_create},
	{NULL, "/v1/jobs/", on_job},
};
const size_t API_JOBS_N = sizeof API_JOBS_ROUTES / sizeof API_JOBS_ROUTES[0];
