/* idem.c — the Idempotency-Key of a POST that makes a job: the jobs API's
 * POST /v1/jobs (api_jobs.c) and the façade's POSTs that wait for their
 * image (waiter.c: /sdapi/v1/txt2img, /img2img, /v1/images/generations).
 *
 * A key is 1..128 printable ASCII characters, unique per client. The job
 * that holds it answers every retry that comes with the same body (its
 * hash, salted by the route, so that one key cannot be two routes' jobs);
 * another body is 422 idempotency_key_reused. The job is looked for here,
 * then, on a shared database, in the store (another balancer's row, or one
 * this balancer has not taken in), where a key is unique across balancers:
 * a job saved under a key another balancer saved first is refused by the
 * store, and the other's is the answer (idem_look_again).
 *
 * The lookup may wait for the store; the request may end meanwhile: its
 * state lives apart and the request's pool holds only a guard. Loop thread. */
#include "balancer.h"

#include "log.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct idem_guard {
	struct idem *c;
};

static void guard_dispose(void *p)
{
	struct idem_guard *g = p;
	if (g->c)
		g->c->req = NULL;
}

void idem_end(struct idem *c)
{
	if (c->req)
		c->guard->c = NULL;
	free(c);
}

/* FNV-1a (64 bits) of the salt then the body, in hex: tells a retry of the
 * same request from another request under the same key. Not a security
 * measure. */
static void body_hash(const h2o_req_t *req, const char *salt, char out[17])
{
	uint64_t h = 14695981039346656037ull;
	for (const char *s = salt; *s; s++)
		h = (h ^ (unsigned char)*s) * 1099511628211ull;
	for (size_t i = 0; i < req->entity.len; i++)
		h = (h ^ (unsigned char)req->entity.base[i]) * 1099511628211ull;
	snprintf(out, 17, "%016llx", (unsigned long long)h);
}

/* Idempotency-Key: 1..128 printable ASCII characters, or absent ("" in key).
 * -1 when malformed. */
static int read_key(h2o_req_t *req, char key[BAL_MAX_IDEMPOTENCY_KEY + 1])
{
	h2o_iovec_t v = httpd_header(req, "idempotency-key");
	key[0] = '\0';
	if (!v.base)
		return 0;
	int ok = v.len >= 1 && v.len <= BAL_MAX_IDEMPOTENCY_KEY;
	for (size_t i = 0; ok && i < v.len; i++)
		ok = v.base[i] > 0x20 && v.base[i] < 0x7f;
	if (!ok)
		return -1;
	memcpy(key, v.base, v.len);
	key[v.len] = '\0';
	return 0;
}

/* The job found under the key (held here, or seen: a copy of another
 * balancer's unfinished job, which ops->found takes) answers the request:
 * 0; -1 when there is none. Ends c when it answered. */
static int found(struct idem *c, struct job *local, struct job *seen)
{
	struct job *prev = local ? local : seen;
	if (!prev)
		return -1;
	if (strcmp(prev->idem_hash, c->hash) != 0) {
		c->ops->error(c, SDE_IDEMPOTENCY_REUSED, "This Idempotency-Key was used for another request",
			      "Idempotency-Key");
		if (seen)
			jobs_free_unlinked(seen);
	} else { /* a retry: the job it made, not a second one */
		c->ops->found(c, prev, seen != NULL);
	}
	idem_end(c);
	return 0;
}

static void on_key_row(void *user, int r, json_t *rows)
{
	(void)r;
	struct idem *c = user;
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
	if (found(c, local, seen) == 0)
		return;
	if (!rows && c->ops->keyless_when_down) {
		log_warn("the database cannot be read: a façade request's Idempotency-Key is not kept (a retry of it "
			 "makes another job)");
		c->key[0] = '\0';
		c->shared_key = 0;
		c->after_save = 0;
		c->ops->create(c);
		return;
	}
	if (!rows || c->after_save) {
		c->ops->error(c, SDE_STORAGE_FAILED, "The job could not be stored; it was not accepted", NULL);
		idem_end(c);
		return;
	}
	c->ops->create(c);
}

void idem_look_again(struct idem *c)
{
	c->after_save = 1;
	store_find_idempotent(c->b->store, c->client, c->key, c->b->cfg.lease_s, on_key_row, c);
}

void idem_start(struct balancer *b, h2o_req_t *req, const char *salt, const struct idem_ops *ops, void *user)
{
	struct idem *c = calloc(1, sizeof *c);
	if (!c) {
		bal_reply_error(req, SDE_INTERNAL, "Out of memory", NULL);
		return;
	}
	c->b = b;
	c->req = req;
	c->ops = ops;
	c->user = user;
	if (read_key(req, c->key) != 0) {
		ops->error(c, SDE_INVALID, "Idempotency-Key: 1 to 128 printable ASCII characters, no spaces",
			   "Idempotency-Key");
		free(c);
		return;
	}
	c->guard = httpd_alloc_guarded(req, sizeof *c->guard, guard_dispose);
	c->guard->c = c;
	if (c->key[0]) {
		body_hash(req, salt, c->hash);
		bal_client_of(b, req, c->client, sizeof c->client);
		if (found(c, jobs_find_idempotent(b, c->client, c->key), NULL) == 0)
			return;
		c->shared_key = store_shared(b->store);
		if (c->shared_key) { /* another balancer's, maybe */
			store_find_idempotent(b->store, c->client, c->key, b->cfg.lease_s, on_key_row, c);
			return;
		}
	}
	ops->create(c);
}

void idem_set(struct idem *c, struct job *j)
{
	snprintf(c->id, sizeof c->id, "%s", j->id);
	if (c->key[0])
		jobs_set_idempotency(c->b, j, c->key, c->hash);
}
