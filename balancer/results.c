/* results.c — a done job's images: handed to the store when the job
 * finishes (the files answer.c decoded and checked, written on the store's
 * thread), described
 * in the job by their metadata only, and served by GET
 * /v1/jobs/{id}/images/{n} straight from the store, BAL_IMAGE_CHUNK bytes at
 * a time, so that neither the loop thread nor a connection ever holds a
 * whole result. The job id (128 random bits) is the capability. Loop thread.
 *
 * Images the store could not take (the database away) are held by their
 * job, in memory, and served from there, while they fit BAL_MAX_UNSTORED
 * and the result caps (else they are dropped: the job's images are gone);
 * jobs_save_again hands them to the store again with the job's document,
 * until it takes them. While they are on their way, they are the store's
 * task's: a read submitted after it finds them stored, or, should the
 * store fail again, held again (the task gives them back first).
 *
 * A stream's state outlives its request while a read is in flight (the store
 * writes into its buffer); the request's pool holds only a guard. */
#include "balancer.h"

#include "error.h"
#include "log.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

struct kept_ctx {
	struct balancer *b;
	char id[BAL_ID_LEN + 1];
	int again; /* results_keep_again: the job held its images */
};

/* info (a JSON string), as kept: bounded, or left out. A1111's
 * "parameters" (the request echoed) only goes to the façade's client: no
 * API shows it later, so it is neither kept nor written. */
static json_t *slim_result(const struct job *j)
{
	json_t *slim = json_object();
	json_t *info = json_object_get(j->result, "info");
	if (json_is_string(info) && json_string_length(info) <= BAL_MAX_INFO)
		json_object_set(slim, "info", info);
	else if (info)
		log_warn("job %s: info over %u bytes; not kept", j->id, BAL_MAX_INFO);
	return slim;
}

/* A done job's images are stored (or gone): its façade client gets its
 * answer, and its readers the final event. */
static void stored(struct balancer *b, struct job *j)
{
	j->storing = 0;
	waiter_finish(b, j);
	json_decref(j->reply); /* its client hung up meanwhile: not kept in memory */
	j->reply = NULL;
	if (jobs_has_readers(j)) /* a façade job usually has none: its final event is not even built */
		jobs_announce_final(b, j);
	else
		events_clear(&j->events); /* a finished job answers only its final event */
}

/* [{type, bytes, width, height}] of images. New reference. */
static json_t *images_meta(const struct image_files *images)
{
	json_t *meta = json_array();
	for (size_t i = 0; i < images->n; i++)
		json_array_append_new(meta, store_image_meta(&images->v[i]));
	return meta;
}

/* Bytes of images that client's jobs hold. */
static long long client_unstored(struct balancer *b, const char *client)
{
	long long n = 0;
	for (const struct job *j = b->all; j; j = j->all_next)
		if (j->unstored && !strcmp(j->client, client))
			n += j->unstored;
	return n;
}

/* What may be held: BAL_MAX_UNSTORED in all, and no more than the store
 * would keep (--result-max-bytes, in all and per client). */
static int may_hold(struct balancer *b, const struct job *j, long long bytes)
{
	long long cap = BAL_MAX_UNSTORED, per = b->cfg.result_max_bytes_per_client;
	if (b->cfg.result_max_bytes > 0 && b->cfg.result_max_bytes < cap)
		cap = b->cfg.result_max_bytes;
	return b->unstored + bytes <= cap && (per <= 0 || client_unstored(b, j->client) + bytes <= per);
}

/* j holds the images that the store could not take (moved out of *images)
 * if they fit what may be held: 1, else 0. */
static int hold(struct balancer *b, struct job *j, struct image_files *images)
{
	long long bytes = 0;
	for (size_t i = 0; i < images->n; i++)
		bytes += (long long)images->v[i].len;
	if (!bytes)
		return 0;
	if (!may_hold(b, j, bytes)) {
		log_error("job %s: %lld bytes of images not held in memory (%lld held already, at most %u): dropped",
			  j->id, bytes, b->unstored, BAL_MAX_UNSTORED);
		return 0;
	}
	j->files = *images;
	*images = (struct image_files){NULL, 0};
	j->unstored = bytes;
	b->unstored += bytes;
	log_warn("job %s: its images could not be stored; %lld bytes held in memory until the database answers", j->id,
		 bytes);
	return 1;
}

/* The store's answer to results_keep_again: the held images are stored,
 * or held again. */
static void kept_again(struct balancer *b, struct job *j, const struct store_kept *k)
{
	if (k->ok) {
		b->unstored -= j->unstored;
		j->unstored = 0;
		log_info("job %s: its images, held while the database was away, are stored", j->id);
		return;
	}
	image_files_free(&j->files);
	j->files = *k->images;
	*k->images = (struct image_files){NULL, 0};
	jobs_mark_unsaved(b, j);
}

static void on_kept(void *user, const struct store_kept *k)
{
	struct kept_ctx *c = user;
	struct balancer *b = c->b;
	size_t i;
	json_t *v;
	json_array_foreach(k->evicted, i, v)
	{
		struct job *e = jobs_find(b, json_string_value(v));
		if (e) {
			e->gone = 1;
			log_info("job %s: its images were dropped to stay within the result caps", e->id);
		}
	}
	struct job *j = jobs_find(b, c->id);
	int again = c->again;
	free(c);
	if (!j)
		return;
	if (again) {
		kept_again(b, j, k);
		return;
	}
	if (!j->storing)
		return;
	/* Not stored: all of them are described (k->meta may list only some) */
	j->images = k->ok ? json_incref(k->meta) : images_meta(k->images);
	if (!k->ok && hold(b, j, k->images)) {
		stored(b, j);
		jobs_mark_unsaved(b, j); /* its images and document go to the store together */
		return;
	}
	if (!k->ok) {
		j->gone = 1;
		log_error("job %s: its images could not be stored", j->id);
	}
	stored(b, j);
	if (!k->ok) /* its document may be missing too (a database away): done, images gone */
		jobs_save(b, j, NULL, NULL);
}

/* The store's task with j's images (moved out of j->files) and its
 * document. 0 when out of memory (nothing done). */
static int put(struct balancer *b, struct job *j, int again)
{
	struct kept_ctx *c = calloc(1, sizeof *c);
	if (!c)
		return 0;
	c->b = b;
	c->again = again;
	snprintf(c->id, sizeof c->id, "%s", j->id);
	json_t *doc = jobs_doc(j);
	json_object_set_new(doc, "result", json_copy(j->result)); /* the store's thread adds "images" to this copy */
	struct store_result r = {
		.job_id = j->id,
		.client = j->client,
		.finished = j->finished_unix,
		.images = j->files,
		.doc = doc,
	};
	j->files = (struct image_files){NULL, 0};
	store_put_result(b->store, &r, on_kept, c);
	return 1;
}

void results_keep_again(struct balancer *b, struct job *j)
{
	if (j->files.n && !put(b, j, 1))
		jobs_mark_unsaved(b, j);
}

void results_keep(struct balancer *b, struct job *j)
{
	json_t *slim = slim_result(j);
	if (j->waiter) /* the façade's client gets the whole answer once it is stored (on_kept) */
		j->reply = json_incref(j->result);
	json_decref(j->result); /* the base64 now lives only in the façade's reply, if any */
	j->result = slim;
	j->storing = 1;
	if (!put(b, j, 0)) {
		image_files_free(&j->files);
		j->gone = 1;
		j->images = json_array();
		stored(b, j);
	}
}

json_t *results_view(const struct job *j)
{
	json_t *list = json_array();
	size_t i;
	json_t *m;
	json_array_foreach(j->images, i, m)
	{
		char url[96];
		snprintf(url, sizeof url, "/v1/jobs/%s/images/%zu", j->id, i);
		json_t *o = json_pack("{s:s}", "url", url);
		json_object_update(o, m);
		json_array_append_new(list, o);
	}
	return list;
}

void results_load(struct job *j, const json_t *result, int has_images)
{
	j->result = json_object();
	json_t *v;
	if ((v = json_object_get(result, "info")) && json_is_string(v))
		json_object_set(j->result, "info", v);
	j->images = json_array();
	size_t i;
	json_array_foreach(json_object_get(result, "images"), i, v)
	{
		if (!json_is_object(v)) /* a file from before images were kept apart: its base64 is not kept */
			break;
		json_array_append_new(j->images,
				      json_pack("{s:O*,s:O*,s:O*,s:O*}", "type", json_object_get(v, "type"), "bytes",
						json_object_get(v, "bytes"), "width", json_object_get(v, "width"),
						"height", json_object_get(v, "height")));
	}
	j->gone = !has_images;
}

/* ---------------------------------------------------------------- GET */

struct image_stream;

struct image_guard {
	struct image_stream *st;
};

struct image_stream {
	struct balancer *b;
	h2o_req_t *req; /* NULL once the request ended */
	struct image_guard *guard;
	h2o_generator_t gen;
	char id[BAL_ID_LEN + 1];
	int n;
	char mime[16];
	long max_age;
	long long total, sent;
	int reading; /* the store is filling buf */
	unsigned char buf[BAL_IMAGE_CHUNK];
};

static void stream_read(struct image_stream *st);
static int read_held(struct image_stream *st);

static void guard_dispose(void *p)
{
	struct image_guard *g = p;
	struct image_stream *st = g->st;
	if (!st)
		return;
	st->req = NULL;
	if (!st->reading)
		free(st);
}

static void reply_code(h2o_req_t *req, enum sd_error e, const char *message) { bal_reply_error(req, e, message, NULL); }

static void start_response(struct image_stream *st)
{
	h2o_req_t *req = st->req;
	char cache[64];
	int n = snprintf(cache, sizeof cache, "private, max-age=%ld", st->max_age);
	req->res.status = 200;
	req->res.reason = "OK";
	req->res.content_length = (size_t)st->total;
	h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, st->mime, strlen(st->mime));
	h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("x-content-type-options"), 0, NULL,
			      H2O_STRLIT("nosniff"));
	h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CACHE_CONTROL, NULL,
		       h2o_strdup(&req->pool, cache, (size_t)n).base, (size_t)n);
	h2o_start_response(req, &st->gen);
}

static void on_chunk(void *user, long long total, size_t len)
{
	struct image_stream *st = user;
	st->reading = 0;
	if (!st->req) {
		free(st);
		return;
	}
	if (total < 0 && read_held(st)) /* not stored after all: held again */
		return;
	if (st->sent == 0 && st->total < 0) { /* the first chunk: now the size is known */
		if (total < 0) {
			st->guard->st = NULL;
			reply_code(st->req, SDE_RESULT_GONE, "This job's images are no longer kept");
			free(st);
			return;
		}
		st->total = total;
		start_response(st);
	}
	if (total != st->total || (len == 0 && st->sent < st->total)) {
		/* dropped or rewritten mid-stream: the length promised cannot be kept */
		log_warn("job %s: image %d vanished while it was being sent", st->id, st->n);
		h2o_send(st->req, NULL, 0, H2O_SEND_STATE_ERROR);
		return;
	}
	st->sent += (long long)len;
	h2o_iovec_t buf = h2o_iovec_init(st->buf, len);
	h2o_send(st->req, &buf, 1, st->sent >= st->total ? H2O_SEND_STATE_FINAL : H2O_SEND_STATE_IN_PROGRESS);
}

/* h2o sent the last chunk: the buffer is free for the next. */
static void on_proceed(h2o_generator_t *gen, h2o_req_t *req)
{
	struct image_stream *st = H2O_STRUCT_FROM_MEMBER(struct image_stream, gen, gen);
	stream_read(st);
}

/* The next chunk from memory, when the job holds image n (the store could
 * not take it): 1, else 0. */
static int read_held(struct image_stream *st)
{
	const struct job *j = jobs_find(st->b, st->id);
	if (!j || (size_t)st->n >= j->files.n)
		return 0;
	const struct image_file *f = &j->files.v[st->n];
	size_t len = 0;
	if ((size_t)st->sent < f->len) {
		len = f->len - (size_t)st->sent;
		len = len < sizeof st->buf ? len : sizeof st->buf;
		memcpy(st->buf, f->data + st->sent, len);
	}
	on_chunk(st, (long long)f->len, len);
	return 1;
}

static void stream_read(struct image_stream *st)
{
	if (read_held(st))
		return;
	st->reading = 1;
	store_read_image(st->b->store, st->id, st->n, st->sent, st->buf, sizeof st->buf, on_chunk, st);
}

/* The file extension of a kept image's type (".png"), or "". */
const char *results_extension(const char *mime)
{
	if (mime && !strcmp(mime, "image/png"))
		return ".png";
	if (mime && !strcmp(mime, "image/jpeg"))
		return ".jpg";
	return mime && !strcmp(mime, "image/webp") ? ".webp" : "";
}

/* "0".."N-1" without sign, spaces or leading zeros, optionally followed by
 * the extension of that image's type ("0.png": for clients that take a
 * file's type from its URL); -1 otherwise. */
static int parse_index(const struct job *j, const char *s, size_t count)
{
	size_t digits = strspn(s, "0123456789");
	if (!digits || digits > 6 || (s[0] == '0' && digits > 1))
		return -1;
	long n = strtol(s, NULL, 10);
	if ((size_t)n >= count)
		return -1;
	const char *ext = s + digits;
	const char *type = json_string_value(json_object_get(json_array_get(j->images, (size_t)n), "type"));
	if (*ext && strcmp(ext, results_extension(type)))
		return -1;
	return (int)n;
}

void results_serve(struct balancer *b, h2o_req_t *req, struct job *j, const char *index)
{
	if (!jobs_is_final(j) || j->storing) {
		reply_code(req, SDE_NOT_READY, "The job has not finished yet");
		return;
	}
	if (j->status != JOB_DONE) {
		reply_code(req, SDE_NOT_FOUND, "The job ended without images");
		return;
	}
	int n = parse_index(j, index, json_array_size(j->images));
	if (n < 0) {
		reply_code(req, SDE_NOT_FOUND, "No such image");
		return;
	}
	const char *mime = json_string_value(json_object_get(json_array_get(j->images, (size_t)n), "type"));
	if (j->gone || !mime) {
		reply_code(req, SDE_RESULT_GONE, "This job's images are no longer kept");
		return;
	}
	struct image_stream *st = malloc(sizeof *st);
	if (!st) {
		reply_code(req, SDE_INTERNAL, "Out of memory");
		return;
	}
	memset(st, 0, offsetof(struct image_stream, buf));
	st->b = b;
	st->req = req;
	st->guard = httpd_alloc_guarded(req, sizeof *st->guard, guard_dispose);
	st->guard->st = st;
	st->gen.proceed = on_proceed;
	snprintf(st->id, sizeof st->id, "%s", j->id);
	st->n = n;
	snprintf(st->mime, sizeof st->mime, "%s", mime); /* the job may expire while its image is read */
	double left = j->finished_unix + (double)b->cfg.result_ttl_s - bal_unix_now();
	st->max_age = left > 0 ? (long)left : 0;
	st->total = -1;
	stream_read(st);
}
