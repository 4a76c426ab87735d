/* api_jobs.c — sdgate's jobs API: POST /v1/jobs (202 once the job is in the
 * SQLite file), GET /v1/jobs/{id}, GET /v1/jobs/{id}/events (SSE), GET
 * /v1/jobs/{id}/images/{n} (results.c), DELETE /v1/jobs/{id}. A job id (32
 * random hex chars) is the capability to read or cancel it. Loop thread. */
#include "balancer.h"

#include <stdint.h>
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

/* The 202 waits for the store's thread; the request may die meanwhile, so
 * the context outlives it and the request's pool only holds a guard. */
struct save_ctx {
	struct balancer *b;
	h2o_req_t *req;
	struct save_guard *guard;
	char id[BAL_ID_LEN + 1];
	/* A shared database (store.h): the Idempotency-Key is looked up there
	 * first, and a job is queued only once its row is in (a row another
	 * balancer wrote under the same key first wins). */
	char key[BAL_MAX_IDEMPOTENCY_KEY + 1], hash[17], client[64];
	int shared_key, after_save;
};

struct save_guard {
	struct save_ctx *ctx;
};

static void guard_dispose(void *p)
{
	struct save_guard *g = p;
	if (g->ctx)
		g->ctx->req = NULL;
}

static void create(struct save_ctx *c);
static void look_up_key(struct save_ctx *c);

/* A retry's answer: the job its first try made. */
static void replay(h2o_req_t *req, struct balancer *b, const struct job *j)
{
	h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("idempotent-replayed"), 0, NULL,
			      H2O_STRLIT("true"));
	httpd_reply_json(req, 200, accepted_answer(b, j));
}

static void on_saved(void *user, int ok)
{
	struct save_ctx *c = user;
	struct job *j = jobs_find(c->b, c->id);
	if (j && c->shared_key && !ok) {
		/* Maybe another balancer took the key first: its job is the answer. */
		j->idem_key[0] = '\0'; /* this one's cancelled row must not claim the key */
		dispatch_cancel(c->b, j);
		if (c->req) {
			c->after_save = 1;
			look_up_key(c);
			return;
		}
	} else if (j && c->shared_key && ok) {
		jobs_enqueue(c->b, j, 0);
		dispatch_schedule(c->b);
	}
	if (c->req) {
		c->guard->ctx = NULL;
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
	free(c);
}

/* FNV-1a (64 bits) of the body, in hex: tells a retry of the same request
 * from another request under the same key. Not a security measure. */
static void body_hash(const h2o_req_t *req, char out[17])
{
	uint64_t h = 14695981039346656037ull;
	for (size_t i = 0; i < req->entity.len; i++)
		h = (h ^ (unsigned char)req->entity.base[i]) * 1099511628211ull;
	snprintf(out, 17, "%016llx", (unsigned long long)h);
}

/* Idempotency-Key: 1..128 printable ASCII characters, or absent ("" in key).
 * Returns -1 (after answering 422) when malformed. */
static int idempotency_key(h2o_req_t *req, char key[BAL_MAX_IDEMPOTENCY_KEY + 1])
{
	h2o_iovec_t v = httpd_header(req, "idempotency-key");
	key[0] = '\0';
	if (!v.base)
		return 0;
	int ok = v.len >= 1 && v.len <= BAL_MAX_IDEMPOTENCY_KEY;
	for (size_t i = 0; ok && i < v.len; i++)
		ok = v.base[i] > 0x20 && v.base[i] < 0x7f;
	if (!ok) {
		bal_reply_error(req, SDE_INVALID, "Idempotency-Key: 1 to 128 printable ASCII characters, no spaces",
				"Idempotency-Key");
		return -1;
	}
	memcpy(key, v.base, v.len);
	key[v.len] = '\0';
	return 0;
}

/* Answers a retry with the job found under its key (0), or returns -1
 * when none was found. */
static int replay_found(struct save_ctx *c, struct job *prev)
{
	if (!prev)
		return -1;
	if (strcmp(prev->idem_hash, c->hash) != 0)
		bal_reply_error(c->req, SDE_IDEMPOTENCY_REUSED, "This Idempotency-Key was used for another request",
				"Idempotency-Key");
	else /* a retry: the job it made, not a second one */
		replay(c->req, c->b, prev);
	return 0;
}

static void on_key_row(void *user, int r, json_t *rows)
{
	(void)r;
	struct save_ctx *c = user;
	if (!c->req) {
		free(c);
		return;
	}
	json_t *row = json_array_get(rows, 0);
	json_t *doc = json_object_get(row, "doc");
	int images = (int)json_integer_value(json_object_get(row, "flags")) & STORE_JOB_IMAGES;
	struct job *local = jobs_find_idempotent(c->b, c->client, c->key);
	struct job *seen = local || !doc ? NULL : jobs_from_doc(doc, images);
	if (seen && jobs_is_final(seen)) { /* kept here from now on, to be read */
		jobs_free_unlinked(seen);
		seen = NULL;
		jobs_adopt(c->b, doc, images);
		local = jobs_find_idempotent(c->b, c->client, c->key);
	}
	if (seen) {
		const char *hash = json_string_value(json_object_get(doc, "request_hash"));
		snprintf(seen->idem_hash, sizeof seen->idem_hash, "%s", hash ? hash : "");
	}
	int answered = replay_found(c, local ? local : seen) == 0;
	if (seen)
		jobs_free_unlinked(seen);
	if (!answered && (!rows || c->after_save))
		bal_reply_error(c->req, SDE_STORAGE_FAILED, "The job could not be stored; it was not accepted", NULL);
	else if (!answered) {
		create(c);
		return;
	}
	c->guard->ctx = NULL;
	free(c);
}

static void look_up_key(struct save_ctx *c)
{
	store_find_idempotent(c->b->store, c->client, c->key, c->b->cfg.lease_s, on_key_row, c);
}

/* The job, once no earlier one holds its Idempotency-Key: queued (on a
 * shared database, once its row is in) and answered 202 once stored. */
static void create(struct save_ctx *c)
{
	struct balancer *b = c->b;
	h2o_req_t *req = c->req;
	struct intake_error e;
	struct job *j = intake_jobs_api(b, req, &e);
	if (!j) {
		intake_reply_error(req, &e, 0);
		intake_error_free(&e);
		c->guard->ctx = NULL;
		free(c);
		return;
	}
	if (c->key[0])
		jobs_set_idempotency(b, j, c->key, c->hash);
	if (dispatch_reject_unservable(b, j)) {
		const char *msg = json_string_value(json_object_get(j->error, "message"));
		bal_reply_error(req, SDE_NO_BACKEND, msg ? msg : "No live backend can serve this job", NULL);
		c->guard->ctx = NULL;
		free(c);
		return;
	}
	snprintf(c->id, sizeof c->id, "%s", j->id);
	if (!c->shared_key)
		jobs_enqueue(b, j, 0);
	jobs_save(b, j, on_saved, c); /* first in the store's FIFO: before any later state */
	dispatch_schedule(b);
}

static int on_create(struct httpd *h, h2o_req_t *req, const char *rest)
{
	struct balancer *b = bal(h);
	struct save_ctx *c = calloc(1, sizeof *c);
	if (!c) {
		bal_reply_error(req, SDE_INTERNAL, "Out of memory", NULL);
		return 0;
	}
	c->b = b;
	c->req = req;
	if (idempotency_key(req, c->key) != 0) {
		free(c);
		return 0;
	}
	c->guard = httpd_alloc_guarded(req, sizeof *c->guard, guard_dispose);
	c->guard->ctx = c;
	if (c->key[0]) {
		body_hash(req, c->hash);
		bal_client_of(b, req, c->client, sizeof c->client);
		if (replay_found(c, jobs_find_idempotent(b, c->client, c->key)) == 0) {
			c->guard->ctx = NULL;
			free(c);
			return 0;
		}
		c->shared_key = store_shared(b->store);
		if (c->shared_key) { /* another balancer's, maybe */
			look_up_key(c);
			return 0;
		}
	}
	create(c);
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
