/* store.c — see store.h. What does not depend on the database lives here:
 * the store's lane and its tasks, the batches, the migrations' order, the
 * caps and which results they drop, the documents' text. The SQL is in one
 * file per engine (store_engine.h: store_sqlite.c, store_pg.c).
 *
 * Batches: the store's lane hands its thread whatever is queued (up to
 * BATCH_MAX tasks) at once, and the batch runs in one transaction
 * (batch_begin, batch_end): a commit (for SQLite its WAL frames and the
 * pages the rows share, for PostgreSQL a round trip and a WAL flush) is paid
 * once per batch, not once per task. A task that needs all-or-none (a
 * result, an expiry) runs in a savepoint inside it. The tasks' callbacks run
 * only after the commit, so nothing is acknowledged before it is stored;
 * should the commit fail, each task of the batch runs again on its own, as
 * without batches. Under light load a batch is one task.
 *
 * One thread at a time uses the engine's connection: `lock` is held by the
 * store's thread for a batch and by the main thread while it loads (its
 * callbacks may already submit tasks, which then wait for the load). */
#include "store.h"

#include "image.h"
#include "lane.h"
#include "log.h"
#include "store_engine.h"

#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum task_kind {
	SAVE_JOB,
	SAVE_BACKEND,
	DELETE_BACKEND,
	EXPIRE_JOBS,
	PUT_RESULT,
	READ_IMAGE,
	BEAT,
	CLAIM,
	FIND_JOB,
	FIND_IDEMPOTENT,
	TOUCH_BACKEND,
	LIST_BACKENDS,
	LEASE_SLOT,
	RELEASE_SLOT,
	NOTIFY,
	SAVE_OPTIONS,
	EXPIRE_OPTIONS,
	READ_OPTIONS
};

#define BATCH_MAX 64

struct store {
	const struct store_engine *e;
	struct store_conn *c;
	pthread_mutex_t lock;
	struct lane *lane;
	int in_batch;                         /* the store's thread is in a batch's transaction */
	long long batch_bytes, batch_evicted; /* bytes and evicted when it began */
	long long max_bytes, max_per_client;
	_Atomic long long bytes;   /* images kept; written by whichever thread holds the lock */
	_Atomic long long evicted; /* results dropped by the caps */
	char member[STORE_ID_MAX]; /* a shared database's member ("": none yet) */
	int joined;                /* its first heartbeat went through */
	char *db;                  /* what --db named: the listener connects to it too */
	struct httpd *h;
	struct listener *listener; /* store_listen's thread, or NULL */
};

struct store_task {
	struct lane_task base; /* first */
	struct store *s;
	enum task_kind kind;
	char id[STORE_ID_MAX];
	char status[16];
	double when;
	json_t *doc;
	store_done_fn done;
	void *user;
	int ok;
	/* PUT_RESULT */
	char client[64]; /* and SAVE_OPTIONS */
	struct image_files images;
	json_t *meta, *evicted;
	store_kept_fn kept;
	/* BEAT, CLAIM, FIND_*: [{doc, flags}] found (NULL: failed); READ_OPTIONS: [{client, doc, age_s}] */
	json_t *rows;
	char key[640]; /* FIND_IDEMPOTENT: the Idempotency-Key; *_SLOT: the backend's URL */
	store_rows_fn found;
	int slot; /* LEASE_SLOT, RELEASE_SLOT */
	/* READ_IMAGE */
	int n;
	long long offset, total;
	unsigned char *buf;
	size_t cap, len;
	store_read_fn read;
	char *text; /* NOTIFY, SAVE_OPTIONS: the payload (SAVE_OPTIONS: may be NULL) */
};

static int exec(struct store *s, const char *sql) { return s->e->exec(s->c, sql); }

/* A task's all-or-none: a savepoint in the batch's transaction, else a
 * transaction of its own. */
static int tx_begin(struct store *s) { return exec(s, s->in_batch ? "SAVEPOINT task" : s->e->begin_sql); }

static int tx_commit(struct store *s) { return exec(s, s->in_batch ? "RELEASE task" : "COMMIT"); }

static void tx_rollback(struct store *s) { exec(s, s->in_batch ? "ROLLBACK TO task; RELEASE task" : "ROLLBACK"); }

/* Drops the oldest results (of client, or anyone's) until the kept bytes
 * fit cap; their ids go to evicted (may be NULL). 0 on a failed write. */
static int evict(struct store *s, const char *client, long long cap, json_t *evicted)
{
	if (cap <= 0)
		return 1;
	for (;;) {
		long long total = client ? s->e->client_bytes(s->c, client) : s->bytes;
		char id[STORE_ID_MAX];
		if (total < 0)
			return 0;
		if (total <= cap)
			return 1;
		int found = s->e->oldest(s->c, client, id);
		if (found <= 0)
			return found == 0;
		long long bytes = s->e->drop_images(s->c, id);
		if (bytes < 0)
			return 0;
		s->bytes -= bytes;
		if (evicted)
			json_array_append_new(evicted, json_string(id));
	}
}

/* Brings the schema to the engine's last version, each migration in one
 * transaction with its row in schema_migrations, under the engine's lock
 * (balancers starting together on one database). A database newer than
 * this binary is refused. 0 on success. */
static int migrate(struct store *s, const char *label)
{
	const struct store_engine *e = s->e;
	if (e->lock && !e->lock(s->c)) {
		log_error("db %s: cannot take the migrations' lock", label);
		return -1;
	}
	int rc = -1, v = e->version(s->c);
	if (v < 0) {
		log_error("db %s: cannot read the schema's version", label);
	} else if (v > e->n_migrations) {
		log_error("db %s: schema version %d is newer than this sdgate-balancer knows (%d): "
			  "run a newer sdgate-balancer, or restore a backup of this version",
			  label, v, e->n_migrations);
	} else {
		rc = 0;
		for (int i = v; i < e->n_migrations && rc == 0; i++) {
			char record[96];
			snprintf(record, sizeof record, "INSERT INTO schema_migrations (version) VALUES (%d)", i + 1);
			if (exec(s, e->begin_sql) && exec(s, e->migrations[i]) && exec(s, record) &&
			    exec(s, "COMMIT")) {
				log_info("db %s: schema migrated to version %d", label, i + 1);
			} else {
				exec(s, "ROLLBACK");
				log_error("db %s: migration to version %d failed; the schema stays at version %d",
					  label, i + 1, i);
				rc = -1;
			}
		}
	}
	if (e->unlock)
		e->unlock(s->c);
	return rc;
}

int store_is_url(const char *db)
{
	return strncmp(db, "postgresql://", 13) == 0 || strncmp(db, "postgres://", 11) == 0;
}

/* Appends k bytes of text to out (size n, *len used), truncating. */
static void put(char *out, size_t n, size_t *len, const char *text, size_t k)
{
	while (k-- && *len + 1 < n)
		out[(*len)++] = *text++;
	out[*len] = '\0';
}

void store_db_label(const char *db, char *out, size_t n)
{
	size_t len = 0;
	if (!n)
		return;
	out[0] = '\0';
	if (!store_is_url(db)) {
		put(out, n, &len, db, strlen(db));
		return;
	}
	/* postgresql://user:PASSWORD@host/...: between the first ':' after
	 * the scheme and the authority's last '@'. */
	const char *auth = strstr(db, "://") + 3, *at = NULL, *p = db;
	for (const char *q = auth; q < auth + strcspn(auth, "/?#"); q++)
		if (*q == '@')
			at = q;
	const char *colon = at ? memchr(auth, ':', (size_t)(at - auth)) : NULL;
	if (colon) {
		put(out, n, &len, db, (size_t)(colon + 1 - db));
		put(out, n, &len, "***", 3);
		p = at;
	}
	/* ...?password=PASSWORD&...: up to the next '&' or '#'. */
	int in_query = 0;
	while (*p) {
		put(out, n, &len, p, 1);
		in_query |= *p == '?';
		if (in_query && (*p == '?' || *p == '&') && strncmp(p + 1, "password=", 9) == 0) {
			put(out, n, &len, "password=***", 12);
			p += 10;
			p += strcspn(p, "&#");
			continue;
		}
		p++;
	}
}

struct store *store_open(const char *db, double wait_s, long long max_bytes, long long max_bytes_per_client)
{
	struct store *s = calloc(1, sizeof *s);
	if (!s)
		return NULL;
	char label[512];
	store_db_label(db, label, sizeof label);
	s->max_bytes = max_bytes;
	s->max_per_client = max_bytes_per_client;
	pthread_mutex_init(&s->lock, NULL);
	s->c = store_is_url(db) ? store_pg_open(db, wait_s, &s->e) : store_sqlite_open(db, &s->e);
	s->db = strdup(db);
	if (!s->c || !s->db || migrate(s, label) != 0 || (s->e->ready && !s->e->ready(s->c)))
		goto fail;
	s->bytes = s->e->total_bytes(s->c);
	if (s->bytes < 0)
		goto fail;
	return s;
fail:
	if (s->c)
		s->e->close(s->c);
	pthread_mutex_destroy(&s->lock);
	free(s->db);
	free(s);
	return NULL;
}

static void task_run(struct lane_task *lt);
static void listener_stop(struct store *s);

static void batch_begin(void *ctx)
{
	struct store *s = ctx;
	pthread_mutex_lock(&s->lock);
	s->batch_bytes = s->bytes;
	s->batch_evicted = s->evicted;
	s->in_batch = exec(s, s->e->begin_sql); /* else each task runs on its own */
}

static void batch_end(void *ctx, struct lane_task *tasks)
{
	struct store *s = ctx;
	if (s->in_batch) {
		s->in_batch = 0;
		if (!exec(s, "COMMIT")) {
			exec(s, "ROLLBACK");
			s->bytes = s->batch_bytes;
			s->evicted = s->batch_evicted;
			log_warn("db: a batch of writes could not be committed; each is tried on its own");
			for (struct lane_task *t = tasks; t; t = t->next)
				task_run(t);
		}
	}
	pthread_mutex_unlock(&s->lock);
}

int store_start(struct store *s, struct httpd *h)
{
	struct lane_batch batch = {batch_begin, batch_end, s, BATCH_MAX};
	s->h = h;
	s->lane = lane_new_batched(h, "store", &batch);
	return s->lane ? 0 : -1;
}

void store_close(struct store *s)
{
	if (!s)
		return;
	listener_stop(s);
	lane_drain_and_free(s->lane);
	s->e->close(s->c);
	pthread_mutex_destroy(&s->lock);
	free(s->db);
	free(s);
}

long long store_results_bytes(const struct store *s) { return s ? s->bytes : 0; }

long long store_results_evicted(const struct store *s) { return s ? s->evicted : 0; }

/* Expired jobs and images, in one transaction. */
static int expire(struct store *s, double before)
{
	if (!tx_begin(s))
		return 0;
	long long gone = s->e->expire(s->c, before);
	if (gone < 0 || !tx_commit(s)) {
		tx_rollback(s);
		return 0;
	}
	s->bytes -= gone;
	return 1;
}

void store_prune(struct store *s, double before)
{
	pthread_mutex_lock(&s->lock);
	long long was = s->bytes;
	json_t *evicted = json_array();
	int ok = expire(s, before);
	if (ok && exec(s, s->e->begin_sql)) {
		if (evict(s, NULL, s->max_bytes, evicted) && exec(s, "COMMIT")) {
			s->evicted += (long long)json_array_size(evicted);
		} else {
			exec(s, "ROLLBACK");
			json_array_clear(evicted);
			s->bytes = s->e->total_bytes(s->c);
		}
	}
	if (was != s->bytes)
		log_info("db: kept images %lld -> %lld bytes (%zu result(s) over --result-max-bytes dropped)", was,
			 s->bytes, json_array_size(evicted));
	json_decref(evicted);
	pthread_mutex_unlock(&s->lock);
}

json_t *store_image_meta(const struct image_file *file)
{
	return json_pack("{s:s,s:I,s:i,s:i}", "type", image_mime(file->facts.type), "bytes", (json_int_t)file->len,
			 "width", file->facts.width, "height", file->facts.height);
}

/* One image of a result (a file answer.c checked) inserted; its metadata
 * appended to meta. 0 on a failed write. */
static int put_image(struct store *s, struct store_task *t, int n, const struct image_file *file)
{
	const char *mime = image_mime(file->facts.type);
	json_array_append_new(t->meta, store_image_meta(file));
	struct store_image_row row = {t->id, mime, t->client, n, t->when, file->data, file->len};
	int ok = s->e->insert_image(s->c, &row);
	if (ok)
		s->bytes += (long long)file->len;
	return ok;
}

static int save_job_doc(struct store *s, const char *id, const char *status, double finished, const char *text)
{
	return s->e->save_job(s->c, id, status, finished, text, s->member[0] ? s->member : NULL);
}

/* A row found by a shared database's query, onto the task's rows. */
static void found_row(const char *text, int flags, void *ctx)
{
	struct store_task *t = ctx;
	json_t *doc = text ? json_loads(text, 0, NULL) : NULL;
	if (json_is_object(doc))
		json_array_append_new(t->rows, json_pack("{s:o,s:i}", "doc", doc,
							 t->kind == LIST_BACKENDS ? "age_ms" : "flags", flags));
	else
		json_decref(doc);
}

static void run_shared(struct store *s, struct store_task *t)
{
	json_decref(t->rows); /* a batch that failed runs its tasks again */
	t->rows = json_array();
	int n = -1;
	switch (t->kind) {
	case BEAT:
		n = s->e->beat(s->c, s->member, !s->joined);
		if (n == 1)
			s->joined = 1;
		t->n = n;
		break;
	case CLAIM:
		n = s->e->claim(s->c, s->member, t->when, t->n, found_row, t);
		break;
	case FIND_JOB:
		n = s->e->find_job(s->c, t->id, t->when, found_row, t);
		break;
	case FIND_IDEMPOTENT:
		n = s->e->find_idempotent(s->c, t->client, t->key, t->when, found_row, t);
		break;
	case TOUCH_BACKEND:
		n = s->e->touch_backend(s->c, t->id) ? 0 : -1;
		break;
	case LIST_BACKENDS:
		n = s->e->list_backends(s->c, found_row, t);
		break;
	case LEASE_SLOT:
	case RELEASE_SLOT:
		n = s->e->slot(s->c, t->kind == LEASE_SLOT, t->key, t->slot, s->member, t->when);
		t->n = n;
		break;
	default:
		break;
	}
	if (n < 0) {
		json_decref(t->rows);
		t->rows = NULL;
	}
}

/* The result's images, the evictions and the job's document, all or none;
 * if the images cannot be stored, the document still is (the images go
 * back to the caller: store_kept). Runs again as it is if its batch fails
 * to commit. */
static void put_result(struct store *s, struct store_task *t)
{
	long long was = s->bytes;
	json_decref(t->meta);
	json_decref(t->evicted);
	t->meta = json_array();
	t->evicted = json_array();
	int ok = tx_begin(s);
	for (size_t i = 0; i < t->images.n; i++)
		ok = ok && put_image(s, t, (int)i, &t->images.v[i]);
	ok = ok && evict(s, t->client, s->max_per_client, t->evicted) && evict(s, NULL, s->max_bytes, t->evicted);
	json_t *result = json_object_get(t->doc, "result");
	if (json_is_object(result))
		json_object_set(result, "images", t->meta);
	char *text = json_dumps(t->doc, JSON_COMPACT);
	ok = ok && text && save_job_doc(s, t->id, "done", t->when, text) && tx_commit(s);
	if (ok) {
		s->evicted += (long long)json_array_size(t->evicted);
	} else {
		tx_rollback(s);
		s->bytes = was;
		json_array_clear(t->evicted);
		if (text)
			save_job_doc(s, t->id, "done", t->when, text);
	}
	free(text);
	t->ok = ok;
}

static void read_options(struct store *s, struct store_task *t);

static void task_run(struct lane_task *lt)
{
	struct store_task *t = (struct store_task *)lt;
	struct store *s = t->s;
	switch (t->kind) {
	case SAVE_JOB: {
		char *text = json_dumps(t->doc, JSON_COMPACT);
		t->ok = text && save_job_doc(s, t->id, t->status, t->when, text);
		free(text);
		break;
	}
	case SAVE_BACKEND: {
		char *text = json_dumps(t->doc, JSON_COMPACT);
		t->ok = text && s->e->save_backend(s->c, t->id, text);
		free(text);
		break;
	}
	case DELETE_BACKEND:
		t->ok = s->e->delete_backend(s->c, t->id);
		break;
	case EXPIRE_JOBS:
		t->ok = expire(s, t->when);
		break;
	case PUT_RESULT:
		put_result(s, t);
		break;
	case READ_IMAGE:
		t->total = s->e->read_image(s->c, t->id, t->n, t->offset, t->buf, t->cap, &t->len);
		break;
	case BEAT:
	case CLAIM:
	case FIND_JOB:
	case FIND_IDEMPOTENT:
	case TOUCH_BACKEND:
	case LIST_BACKENDS:
	case LEASE_SLOT:
	case RELEASE_SLOT:
		run_shared(s, t);
		break;
	case NOTIFY:
		t->ok = s->e->notify(s->c, t->text);
		break;
	case SAVE_OPTIONS: {
		char *text = json_dumps(t->doc, JSON_COMPACT);
		t->ok = text && s->e->save_options(s->c, t->client, text, t->text);
		free(text);
		break;
	}
	case EXPIRE_OPTIONS:
		t->ok = s->e->expire_options(s->c, t->when, t->n);
		break;
	case READ_OPTIONS:
		read_options(s, t);
		break;
	}
}

static void task_done(struct httpd *h, struct lane_task *lt)
{
	struct store_task *t = (struct store_task *)lt;
	int ok = t->base.cancelled ? 0 : t->ok;
	if (t->done)
		t->done(t->user, ok);
	if (t->kept) {
		struct store_kept k = {ok, t->meta ? t->meta : json_array(), t->evicted ? t->evicted : json_array(),
				       ok ? NULL : &t->images};
		t->kept(t->user, &k);
		if (k.meta != t->meta)
			json_decref(k.meta);
		if (k.evicted != t->evicted)
			json_decref(k.evicted);
	}
	if (t->read)
		t->read(t->user, t->base.cancelled ? -1 : t->total, t->base.cancelled ? 0 : t->len);
	if (t->found)
		t->found(t->user,
			 t->kind == BEAT || t->kind == LEASE_SLOT ? (t->base.cancelled || !t->rows ? -1 : t->n) : 0,
			 t->base.cancelled ? NULL : t->rows);
	json_decref(t->rows);
	json_decref(t->doc);
	image_files_free(&t->images);
	json_decref(t->meta);
	json_decref(t->evicted);
	free(t->text);
	free(t);
}

static struct store_task *task_new(struct store *s, enum task_kind kind, const char *id)
{
	struct store_task *t = calloc(1, sizeof *t);
	if (!t)
		return NULL;
	t->base.run = task_run;
	t->base.done = task_done;
	t->s = s;
	t->kind = kind;
	snprintf(t->id, sizeof t->id, "%s", id ? id : "");
	return t;
}

static void submit(struct store *s, enum task_kind kind, const char *id, json_t *doc, store_done_fn done, void *user,
		   const char *status, double when)
{
	struct store_task *t = s ? task_new(s, kind, id) : NULL;
	if (!t) {
		json_decref(doc);
		if (done)
			done(user, 0);
		return;
	}
	snprintf(t->status, sizeof t->status, "%s", status ? status : "");
	t->when = when;
	t->doc = doc;
	t->done = done;
	t->user = user;
	lane_submit(s->lane, &t->base);
}

void store_save_job(struct store *s, const char *id, const char *status, double finished, json_t *doc,
		    store_done_fn done, void *user)
{
	submit(s, SAVE_JOB, id, doc, done, user, status, finished);
}

void store_save_backend(struct store *s, const char *id, json_t *doc)
{
	submit(s, SAVE_BACKEND, id, doc, NULL, NULL, NULL, 0);
}

void store_delete_backend(struct store *s, const char *id) { submit(s, DELETE_BACKEND, id, NULL, NULL, NULL, NULL, 0); }

void store_expire_jobs(struct store *s, double before) { submit(s, EXPIRE_JOBS, NULL, NULL, NULL, NULL, NULL, before); }

void store_put_result(struct store *s, const struct store_result *r, store_kept_fn done, void *user)
{
	struct store_task *t = s ? task_new(s, PUT_RESULT, r->job_id) : NULL;
	if (!t) {
		struct image_files images = r->images;
		json_decref(r->doc);
		struct store_kept k = {0, json_array(), json_array(), &images};
		done(user, &k);
		image_files_free(&images);
		json_decref(k.meta);
		json_decref(k.evicted);
		return;
	}
	snprintf(t->client, sizeof t->client, "%s", r->client);
	t->when = r->finished;
	t->images = r->images;
	t->doc = r->doc;
	t->kept = done;
	t->user = user;
	lane_submit(s->lane, &t->base);
}

void store_read_image(struct store *s, const char *job_id, int n, long long offset, unsigned char *buf, size_t cap,
		      store_read_fn done, void *user)
{
	struct store_task *t = s ? task_new(s, READ_IMAGE, job_id) : NULL;
	if (!t) {
		done(user, -1, 0);
		return;
	}
	t->n = n;
	t->offset = offset;
	t->buf = buf;
	t->cap = cap;
	t->read = done;
	t->user = user;
	lane_submit(s->lane, &t->base);
}

/* The caller's callback for one loaded row, its document parsed. */
struct loading {
	void (*job)(json_t *doc, int has_images, void *user);
	void (*backend)(json_t *doc, void *user);
	void *user;
};

static void loaded(const char *text, int has_images, void *ctx)
{
	const struct loading *l = ctx;
	json_error_t err;
	json_t *doc = text ? json_loads(text, 0, &err) : NULL;
	if (!json_is_object(doc))
		log_warn("db: skipping an unreadable row");
	else if (l->job)
		l->job(doc, has_images, l->user);
	else
		l->backend(doc, l->user);
	json_decref(doc);
}

int store_load_jobs(struct store *s, void (*fn)(json_t *doc, int has_images, void *user), void *user)
{
	struct loading l = {fn, NULL, user};
	pthread_mutex_lock(&s->lock);
	int n = s->e->load_jobs(s->c, loaded, &l);
	pthread_mutex_unlock(&s->lock);
	return n;
}

int store_load_backends(struct store *s, void (*fn)(json_t *doc, void *user), void *user)
{
	struct loading l = {NULL, fn, user};
	pthread_mutex_lock(&s->lock);
	int n = s->e->load_backends(s->c, loaded, &l);
	pthread_mutex_unlock(&s->lock);
	return n;
}

/* 1 if payload fits one notice (STORE_NOTICE_MAX); else logged. */
static int notice_fits(const char *payload)
{
	size_t len = strlen(payload);
	if (len <= STORE_NOTICE_MAX)
		return 1;
	log_warn("db: a notice of %zu bytes is over %d; not sent", len, STORE_NOTICE_MAX);
	return 0;
}

void store_save_options(struct store *s, const char *client, json_t *doc, const char *notice)
{
	struct store_task *t = s && strlen(client) < sizeof t->client ? task_new(s, SAVE_OPTIONS, NULL) : NULL;
	if (!t) {
		json_decref(doc);
		return;
	}
	snprintf(t->client, sizeof t->client, "%s", client);
	t->doc = doc;
	if (notice && store_shared(s) && notice_fits(notice))
		t->text = strdup(notice); /* out of memory: saved, not told */
	lane_submit(s->lane, &t->base);
}

void store_expire_options(struct store *s, double max_age_s, int keep)
{
	struct store_task *t = s ? task_new(s, EXPIRE_OPTIONS, NULL) : NULL;
	if (!t)
		return;
	t->when = max_age_s;
	t->n = keep;
	lane_submit(s->lane, &t->base);
}

/* The caller's callback for one loaded client's options. */
struct options_loading {
	void (*fn)(const char *client, json_t *doc, double age_s, void *user);
	void *user;
};

/* A row of client_options as the engine gives it, {client, doc, age_s}
 * checked (caller decrefs); NULL, logged, when it is not one. */
static json_t *options_row(const char *text)
{
	json_t *row = text ? json_loads(text, 0, NULL) : NULL;
	if (json_is_string(json_object_get(row, "client")) && json_is_object(json_object_get(row, "doc")) &&
	    json_is_number(json_object_get(row, "age_s")))
		return row;
	log_warn("db: skipping an unreadable row of client_options");
	json_decref(row);
	return NULL;
}

static void options_loaded(const char *text, int unused, void *ctx)
{
	(void)unused;
	const struct options_loading *l = ctx;
	json_t *row = options_row(text);
	if (row)
		l->fn(json_string_value(json_object_get(row, "client")), json_object_get(row, "doc"),
		      json_number_value(json_object_get(row, "age_s")), l->user);
	json_decref(row);
}

static void options_read(const char *text, int unused, void *ctx)
{
	(void)unused;
	struct store_task *t = ctx;
	json_t *row = options_row(text);
	if (row)
		json_array_append_new(t->rows, row);
}

static void read_options(struct store *s, struct store_task *t)
{
	json_decref(t->rows); /* a batch that failed runs its tasks again */
	t->rows = json_array();
	if (s->e->load_options(s->c, t->n, t->when, options_read, t) < 0) {
		json_decref(t->rows);
		t->rows = NULL;
	}
}

void store_read_options(struct store *s, int max, double max_age_s, store_rows_fn done, void *user)
{
	struct store_task *t = s ? task_new(s, READ_OPTIONS, NULL) : NULL;
	if (!t) {
		done(user, 0, NULL);
		return;
	}
	t->n = max;
	t->when = max_age_s;
	t->found = done;
	t->user = user;
	lane_submit(s->lane, &t->base);
}

int store_load_options(struct store *s, int max, double max_age_s,
		       void (*fn)(const char *client, json_t *doc, double age_s, void *user), void *user)
{
	struct options_loading l = {fn, user};
	pthread_mutex_lock(&s->lock);
	int n = s->e->load_options(s->c, max, max_age_s, options_loaded, &l);
	pthread_mutex_unlock(&s->lock);
	return n;
}

int store_shared(const struct store *s) { return s && s->e->beat != NULL; }

void store_set_member(struct store *s, const char *member)
{
	if (store_shared(s))
		snprintf(s->member, sizeof s->member, "%s", member);
}

/* A shared database's task; done at once (failed) on any other. */
static struct store_task *shared_task(struct store *s, enum task_kind kind, const char *id, double dead_after_s,
				      store_rows_fn done, void *user)
{
	struct store_task *t = store_shared(s) && s->member[0] ? task_new(s, kind, id) : NULL;
	if (!t) {
		done(user, -1, NULL);
		return NULL;
	}
	t->when = dead_after_s;
	t->found = done;
	t->user = user;
	return t;
}

void store_beat(struct store *s, store_rows_fn done, void *user)
{
	struct store_task *t = shared_task(s, BEAT, NULL, 0, done, user);
	if (t)
		lane_submit(s->lane, &t->base);
}

void store_claim_orphans(struct store *s, double dead_after_s, int max, store_rows_fn done, void *user)
{
	struct store_task *t = shared_task(s, CLAIM, NULL, dead_after_s, done, user);
	if (!t)
		return;
	t->n = max;
	lane_submit(s->lane, &t->base);
}

void store_find_job(struct store *s, const char *id, double dead_after_s, store_rows_fn done, void *user)
{
	struct store_task *t = shared_task(s, FIND_JOB, id, dead_after_s, done, user);
	if (t)
		lane_submit(s->lane, &t->base);
}

void store_find_idempotent(struct store *s, const char *client, const char *key, double dead_after_s,
			   store_rows_fn done, void *user)
{
	struct store_task *t = shared_task(s, FIND_IDEMPOTENT, NULL, dead_after_s, done, user);
	if (!t)
		return;
	snprintf(t->client, sizeof t->client, "%s", client);
	snprintf(t->key, sizeof t->key, "%s", key);
	lane_submit(s->lane, &t->base);
}

static void ignore_rows(void *user, int r, json_t *rows) { (void)user, (void)r, (void)rows; }

void store_touch_backend(struct store *s, const char *id)
{
	struct store_task *t = shared_task(s, TOUCH_BACKEND, id, 0, ignore_rows, NULL);
	if (t)
		lane_submit(s->lane, &t->base);
}

void store_list_backends(struct store *s, store_rows_fn done, void *user)
{
	struct store_task *t = shared_task(s, LIST_BACKENDS, NULL, 0, done, user);
	if (t)
		lane_submit(s->lane, &t->base);
}

void store_lease_slot(struct store *s, const char *backend, int slot, double dead_after_s, store_rows_fn done,
		      void *user)
{
	struct store_task *t = shared_task(s, LEASE_SLOT, NULL, dead_after_s, done, user);
	if (!t)
		return;
	snprintf(t->key, sizeof t->key, "%s", backend);
	t->slot = slot;
	lane_submit(s->lane, &t->base);
}

void store_release_slot(struct store *s, const char *backend, int slot)
{
	struct store_task *t = shared_task(s, RELEASE_SLOT, NULL, 0, ignore_rows, NULL);
	if (!t)
		return;
	snprintf(t->key, sizeof t->key, "%s", backend);
	t->slot = slot;
	lane_submit(s->lane, &t->base);
}

void store_notify(struct store *s, const char *payload)
{
	struct store_task *t = notice_fits(payload) && store_shared(s) ? task_new(s, NOTIFY, NULL) : NULL;
	if (!t)
		return;
	t->text = strdup(payload);
	if (!t->text) {
		free(t);
		return;
	}
	lane_submit(s->lane, &t->base);
}

/* The listener: a thread that waits on its own connection for notices and
 * posts each to the loop thread. */
struct listener {
	struct store *s;
	store_notice_fn fn;
	void *user;
	pthread_t thread;
	int stop[2]; /* a pipe: written to stop the thread */
};

#define LISTEN_RETRY_MS 2000
#define LISTEN_WAIT_MS 10000

struct notice_msg {
	struct httpd_msg msg; /* first */
	store_notice_fn fn;   /* copies: the listener may be gone when it is delivered */
	void *user;
	int reconnected; /* NULL to fn: notices may have been missed */
	char text[];
};

static void notice_deliver(struct httpd *h, struct httpd_msg *m)
{
	(void)h;
	struct notice_msg *n = (struct notice_msg *)m;
	n->fn(n->user, n->reconnected ? NULL : n->text);
	free(n);
}

static void notice_post(struct listener *l, const char *payload)
{
	size_t len = payload ? strlen(payload) : 0;
	struct notice_msg *n = calloc(1, sizeof *n + len + 1);
	if (!n)
		return;
	n->msg.fn = notice_deliver;
	n->fn = l->fn;
	n->user = l->user;
	n->reconnected = payload == NULL;
	if (payload)
		memcpy(n->text, payload, len);
	httpd_post(l->s->h, &n->msg);
}

static void on_notice_thread(const char *payload, void *user) { notice_post(user, payload); }

static void *listener_main(void *arg)
{
	struct listener *l = arg;
	const struct store_engine *e = l->s->e;
	int logged = 0;
	for (;;) {
		struct store_listener *c = e->listen_open(l->s->db, !logged);
		if (c) {
			logged = 0;
			notice_post(l, NULL);
			int r;
			while ((r = e->listen_wait(c, l->stop[0], LISTEN_WAIT_MS, on_notice_thread, l)) > 0)
				;
			e->listen_close(c);
			if (r == 0)
				return NULL;
		}
		logged = 1;
		struct pollfd p = {l->stop[0], POLLIN, 0};
		if (poll(&p, 1, LISTEN_RETRY_MS) > 0)
			return NULL;
	}
}

int store_listen(struct store *s, store_notice_fn fn, void *user)
{
	if (!store_shared(s) || !s->h || s->listener)
		return -1;
	struct listener *l = calloc(1, sizeof *l);
	if (!l)
		return -1;
	l->s = s;
	l->fn = fn;
	l->user = user;
	if (pipe(l->stop) != 0) {
		free(l);
		return -1;
	}
	if (pthread_create(&l->thread, NULL, listener_main, l) != 0) {
		close(l->stop[0]);
		close(l->stop[1]);
		free(l);
		return -1;
	}
	s->listener = l;
	return 0;
}

/* Stops the listener's thread; the notices it posted are delivered by the
 * loop's next turn. */
static void listener_stop(struct store *s)
{
	struct listener *l = s->listener;
	if (!l)
		return;
	ssize_t w = write(l->stop[1], "x", 1);
	(void)w;
	pthread_join(l->thread, NULL);
	close(l->stop[0]);
	close(l->stop[1]);
	free(l);
	s->listener = NULL;
}
