/* readback.c — a done job's images as base64, for an answer that carries
 * them (the façade's A1111 answer, OpenAI's b64_json) when its client came
 * back with the job's Idempotency-Key after the answer was made: from the
 * job's reply while it holds it, from memory while the job holds images
 * the store could not take (results.c), else read back from the store
 * BAL_IMAGE_CHUNK bytes at a time, as GET /v1/jobs/{id}/images/N reads
 * them. At most BAL_MAX_ANSWER bytes in all (what a backend's answer may
 * be): the caps of kept results bound them well below that.
 *
 * The reading outlives its request while the store writes into its buffer;
 * the request's pool holds only a guard. Loop thread. */
#include "balancer.h"

#include "b64.h"
#include "log.h"

#include <stdlib.h>
#include <string.h>

struct readback_guard {
	struct readback *rb;
};

struct readback {
	struct balancer *b;
	h2o_req_t *req; /* NULL once the request ended */
	struct readback_guard *guard;
	results_b64_fn done;
	void *user;
	char id[BAL_ID_LEN + 1];
	size_t n, i;        /* images, the one being read */
	unsigned char *buf; /* image i, size bytes */
	long long size, got;
	json_t *images; /* base64 of those read */
};

static void guard_dispose(void *p)
{
	struct readback_guard *g = p;
	if (g->rb)
		g->rb->req = NULL;
}

static void free_readback(struct readback *rb)
{
	if (rb->req)
		rb->guard->rb = NULL;
	free(rb->buf);
	json_decref(rb->images);
	free(rb);
}

/* The end: images (NULL: gone) to done while the request lives. */
static void finish(struct readback *rb, json_t *images)
{
	if (rb->req)
		rb->done(rb->b, rb->req, jobs_find(rb->b, rb->id), images, rb->user);
	free_readback(rb);
}

static void read_next(struct readback *rb);

static void on_chunk(void *user, long long total, size_t len)
{
	struct readback *rb = user;
	if (!rb->req) {
		free_readback(rb);
		return;
	}
	struct job *j = jobs_find(rb->b, rb->id);
	if (total < 0 && j && rb->i < j->files.n) { /* not stored after all: held again */
		read_next(rb);
		return;
	}
	if (total != rb->size || (len == 0 && rb->got < rb->size)) {
		/* dropped (caps, expiry) or rewritten meanwhile */
		log_info("job %s: image %zu no longer kept; its replay answers gone", rb->id, rb->i);
		finish(rb, NULL);
		return;
	}
	rb->got += (long long)len;
	read_next(rb);
}

/* Image i from the store, a chunk at a time; then the next. */
static void read_next(struct readback *rb)
{
	struct job *j = jobs_find(rb->b, rb->id);
	while (j && rb->i < rb->n && rb->buf && rb->got >= rb->size) { /* image i is read */
		char *text = b64_encode_new(rb->buf, (size_t)rb->size);
		if (!text || json_array_append_new(rb->images, json_string_nocheck(text))) {
			free(text);
			finish(rb, NULL);
			return;
		}
		free(text);
		free(rb->buf);
		rb->buf = NULL;
		rb->i++;
	}
	if (!j || j->gone) {
		finish(rb, NULL);
		return;
	}
	if (rb->i == rb->n) {
		finish(rb, rb->images);
		return;
	}
	if (!rb->buf) {
		json_t *bytes = json_object_get(json_array_get(j->images, rb->i), "bytes");
		rb->size = json_integer_value(bytes);
		rb->got = 0;
		if (!json_is_integer(bytes) || rb->size <= 0 || rb->size > (long long)BAL_MAX_ANSWER ||
		    !(rb->buf = malloc((size_t)rb->size))) {
			finish(rb, NULL);
			return;
		}
	}
	if (rb->i < j->files.n && j->files.v[rb->i].len == (size_t)rb->size) { /* held: the store has it not */
		memcpy(rb->buf, j->files.v[rb->i].data, (size_t)rb->size);
		rb->got = rb->size;
		read_next(rb);
		return;
	}
	long long left = rb->size - rb->got;
	store_read_image(rb->b->store, rb->id, (int)rb->i, rb->got, rb->buf + rb->got,
			 left < BAL_IMAGE_CHUNK ? (size_t)left : BAL_IMAGE_CHUNK, on_chunk, rb);
}

void results_read_b64(struct balancer *b, h2o_req_t *req, struct job *j, results_b64_fn done, void *user)
{
	json_t *held = json_object_get(j->reply, "images");
	if (held) {
		done(b, req, j, held, user);
		return;
	}
	long long sum = 0;
	size_t i;
	json_t *m;
	json_array_foreach(j->images, i, m) sum += json_integer_value(json_object_get(m, "bytes"));
	struct readback *rb = j->gone || sum > (long long)BAL_MAX_ANSWER ? NULL : calloc(1, sizeof *rb);
	if (!rb) {
		done(b, req, j, NULL, user);
		return;
	}
	rb->b = b;
	rb->req = req;
	rb->done = done;
	rb->user = user;
	snprintf(rb->id, sizeof rb->id, "%s", j->id);
	rb->n = json_array_size(j->images);
	rb->images = json_array();
	rb->guard = httpd_alloc_guarded(req, sizeof *rb->guard, guard_dispose);
	rb->guard->rb = rb;
	read_next(rb);
}
