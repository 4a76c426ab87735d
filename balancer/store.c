/* store.c — see store.h.
 *
 * Batches: the store's lane hands its thread whatever is queued (up to
 * BATCH_MAX tasks) at once, and the batch runs in one transaction
 * (batch_begin, batch_end): a commit, its WAL frames and the pages the rows
 * share (index leaves, the tables' last pages) are paid once per batch, not
 * once per task. A task that needs all-or-none (a result, an expiry) runs in
 * a savepoint inside it. The tasks' callbacks run only after the commit, so
 * nothing is acknowledged before it is in the file; should the commit fail,
 * each task of the batch runs again on its own, as without batches. Under
 * light load a batch is one task. */
#include "store.h"

#include "image.h"
#include "lane.h"
#include "log.h"

#include <fcntl.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

enum task_kind { SAVE_JOB, SAVE_BACKEND, DELETE_BACKEND, EXPIRE_JOBS, PUT_RESULT, READ_IMAGE };

/* Every statement, prepared once (on the store's thread, or on the main
 * thread before that thread starts). */
enum stmt_kind {
	Q_SAVE_JOB,
	Q_SAVE_BACKEND,
	Q_DELETE_BACKEND,
	Q_EXPIRE_JOBS,
	Q_EXPIRED_BYTES,
	Q_EXPIRE_IMAGES,
	Q_INSERT_IMAGE,
	Q_TOTAL_BYTES,
	Q_CLIENT_BYTES,
	Q_OLDEST,
	Q_OLDEST_OF_CLIENT,
	Q_JOB_BYTES,
	Q_DELETE_IMAGES,
	Q_FIND_IMAGE,
	N_STMTS
};

static const char *const SQL[N_STMTS] = {
	[Q_SAVE_JOB] = "INSERT INTO jobs (id, status, doc, finished, created) VALUES (?, ?, ?, ?,"
		       " (SELECT coalesce(max(created), 0) + 1 FROM jobs))"
		       " ON CONFLICT(id) DO UPDATE SET status = excluded.status, doc = excluded.doc,"
		       " finished = excluded.finished",
	[Q_SAVE_BACKEND] = "INSERT OR REPLACE INTO backends (id, doc) VALUES (?, ?)",
	[Q_DELETE_BACKEND] = "DELETE FROM backends WHERE id = ?",
	[Q_EXPIRE_JOBS] = "DELETE FROM jobs WHERE status IN ('done', 'failed', 'cancelled') AND finished < ?",
	[Q_EXPIRED_BYTES] = "SELECT coalesce(sum(bytes), 0) FROM images WHERE finished < ?",
	[Q_EXPIRE_IMAGES] = "DELETE FROM images WHERE finished < ?",
	[Q_INSERT_IMAGE] = "INSERT OR REPLACE INTO images (job_id, n, mime, bytes, client, finished, data)"
			   " VALUES (?, ?, ?, ?, ?, ?, ?)",
	[Q_TOTAL_BYTES] = "SELECT coalesce(sum(bytes), 0) FROM images",
	[Q_CLIENT_BYTES] = "SELECT coalesce((SELECT bytes FROM client_bytes WHERE client = ?), 0)",
	[Q_OLDEST] = "SELECT job_id FROM images ORDER BY finished, rowid LIMIT 1",
	[Q_OLDEST_OF_CLIENT] = "SELECT job_id FROM images WHERE client = ? ORDER BY finished, rowid LIMIT 1",
	[Q_JOB_BYTES] = "SELECT coalesce(sum(bytes), 0) FROM images WHERE job_id = ?",
	[Q_DELETE_IMAGES] = "DELETE FROM images WHERE job_id = ?",
	[Q_FIND_IMAGE] = "SELECT rowid, length(data) FROM images WHERE job_id = ? AND n = ?",
};

#define BATCH_MAX 64

struct store {
	sqlite3 *db;
	struct lane *lane;
	int in_batch;                         /* the store's thread is in a batch's transaction */
	long long batch_bytes, batch_evicted; /* bytes and evicted when it began */
	sqlite3_stmt *stmts[N_STMTS];
	long long max_bytes, max_per_client;
	_Atomic long long bytes;   /* images kept; written by whichever thread owns the file */
	_Atomic long long evicted; /* results dropped by the caps */
};

struct store_task {
	struct lane_task base; /* first */
	struct store *s;
	enum task_kind kind;
	char id[80];
	char status[16];
	double when;
	json_t *doc;
	store_done_fn done;
	void *user;
	int ok;
	/* PUT_RESULT */
	char client[64];
	struct image_files images;
	json_t *meta, *evicted;
	store_kept_fn kept;
	/* READ_IMAGE */
	int n;
	long long offset, total;
	unsigned char *buf;
	size_t cap, len;
	store_read_fn read;
};

static const char SCHEMA[] =
	"PRAGMA journal_mode=WAL;"
	"PRAGMA synchronous=NORMAL;"
	"PRAGMA journal_size_limit=67108864;" /* the WAL shrinks back after a large result */
	/* A checkpoint every 16 MiB of WAL, not 4: a page that many results
	 * rewrite (index leaves, the tables' last pages) is copied to the file
	 * and synced once per checkpoint, not once per 4 MiB. */
	"PRAGMA wal_autocheckpoint=4000;"
	"PRAGMA recursive_triggers=ON;" /* INSERT OR REPLACE's deletes fire images_drop */
	"CREATE TABLE IF NOT EXISTS jobs (id TEXT PRIMARY KEY, status TEXT NOT NULL,"
	" finished REAL NOT NULL DEFAULT 0, created INTEGER NOT NULL, doc TEXT NOT NULL);"
	"CREATE INDEX IF NOT EXISTS jobs_finished ON jobs(status, finished);"
	"CREATE INDEX IF NOT EXISTS jobs_created ON jobs(created);"
	"CREATE TABLE IF NOT EXISTS backends (id TEXT PRIMARY KEY, doc TEXT NOT NULL);"
	"CREATE TABLE IF NOT EXISTS images (job_id TEXT NOT NULL, n INTEGER NOT NULL, mime TEXT NOT NULL,"
	" bytes INTEGER NOT NULL, client TEXT NOT NULL, finished REAL NOT NULL, data BLOB NOT NULL,"
	" PRIMARY KEY (job_id, n));"
	"CREATE INDEX IF NOT EXISTS images_finished ON images(finished);"
	"CREATE INDEX IF NOT EXISTS images_client ON images(client, finished, bytes);"
	/* Each client's kept bytes, kept up to date by the images' triggers: the
	 * per-client cap reads one row instead of summing the client's images
	 * (a scan per result that grew with the results kept). Rebuilt at open. */
	"CREATE TABLE IF NOT EXISTS client_bytes (client TEXT PRIMARY KEY, bytes INTEGER NOT NULL);"
	"CREATE TRIGGER IF NOT EXISTS images_add AFTER INSERT ON images BEGIN"
	" INSERT INTO client_bytes (client, bytes) VALUES (new.client, new.bytes)"
	" ON CONFLICT(client) DO UPDATE SET bytes = bytes + excluded.bytes; END;"
	"CREATE TRIGGER IF NOT EXISTS images_drop AFTER DELETE ON images BEGIN"
	" UPDATE client_bytes SET bytes = bytes - old.bytes WHERE client = old.client;"
	" DELETE FROM client_bytes WHERE client = old.client AND bytes <= 0; END;"
	"BEGIN IMMEDIATE;"
	"DELETE FROM client_bytes;"
	"INSERT INTO client_bytes (client, bytes) SELECT client, sum(bytes) FROM images GROUP BY client;"
	"COMMIT;";

/* The file and its -wal/-shm hold every client's prompts and images: they
 * are the balancer user's alone (SQLite gives -wal/-shm the file's mode). */
static void make_private(const char *path)
{
	int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd >= 0) {
		if (fchmod(fd, 0600) != 0)
			log_warn("db %s: cannot make it private (mode 0600)", path);
		close(fd);
	}
	static const char *const side[] = {"-wal", "-shm"};
	for (size_t i = 0; i < sizeof side / sizeof side[0]; i++) {
		char p[4096];
		if (snprintf(p, sizeof p, "%s%s", path, side[i]) < (int)sizeof p)
			chmod(p, 0600); /* absent is fine */
	}
}

/* The statement of that kind, reset and ready to bind; NULL if it cannot be
 * prepared (logged). */
static sqlite3_stmt *stmt(struct store *s, enum stmt_kind k)
{
	if (!s->stmts[k] && sqlite3_prepare_v2(s->db, SQL[k], -1, &s->stmts[k], NULL) != SQLITE_OK) {
		log_error("db: %s", sqlite3_errmsg(s->db));
		return NULL;
	}
	sqlite3_reset(s->stmts[k]);
	sqlite3_clear_bindings(s->stmts[k]);
	return s->stmts[k];
}

/* Runs a bound statement that returns no row; 1 if it completed. */
static int step_done(struct store *s, sqlite3_stmt *st)
{
	if (!st)
		return 0;
	int rc = sqlite3_step(st);
	if (rc != SQLITE_DONE)
		log_error("db: %s", sqlite3_errmsg(s->db));
	sqlite3_reset(st);
	return rc == SQLITE_DONE;
}

/* Runs a bound statement whose first row's first column is an integer;
 * -1 if it failed. */
static long long step_int(struct store *s, sqlite3_stmt *st)
{
	if (!st)
		return -1;
	int rc = sqlite3_step(st);
	long long v = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : -1;
	if (rc != SQLITE_ROW)
		log_error("db: %s", sqlite3_errmsg(s->db));
	sqlite3_reset(st);
	return v;
}

static int exec(struct store *s, const char *sql)
{
	char *err = NULL;
	if (sqlite3_exec(s->db, sql, NULL, NULL, &err) == SQLITE_OK)
		return 1;
	log_error("db: %s: %s", sql, err ? err : "failed");
	sqlite3_free(err);
	return 0;
}

/* A task's all-or-none: a savepoint in the batch's transaction, else a
 * transaction of its own. */
static int tx_begin(struct store *s) { return exec(s, s->in_batch ? "SAVEPOINT task" : "BEGIN IMMEDIATE"); }

static int tx_commit(struct store *s) { return exec(s, s->in_batch ? "RELEASE task" : "COMMIT"); }

static void tx_rollback(struct store *s) { exec(s, s->in_batch ? "ROLLBACK TO task; RELEASE task" : "ROLLBACK"); }

static sqlite3_stmt *with_text(sqlite3_stmt *st, const char *text)
{
	if (st)
		sqlite3_bind_text(st, 1, text, -1, SQLITE_STATIC);
	return st;
}

static sqlite3_stmt *with_real(sqlite3_stmt *st, double v)
{
	if (st)
		sqlite3_bind_double(st, 1, v);
	return st;
}

/* The job whose images are the oldest kept (of client, when not NULL), in
 * id (size 80); 0 when none is kept. */
static int oldest(struct store *s, const char *client, char id[80])
{
	sqlite3_stmt *st = client ? with_text(stmt(s, Q_OLDEST_OF_CLIENT), client) : stmt(s, Q_OLDEST);
	if (!st)
		return 0;
	int found = sqlite3_step(st) == SQLITE_ROW && sqlite3_column_text(st, 0);
	if (found)
		snprintf(id, 80, "%s", (const char *)sqlite3_column_text(st, 0));
	sqlite3_reset(st);
	return found;
}

/* Drops the oldest results (of client, or anyone's) until the kept bytes
 * fit cap; their ids go to evicted (may be NULL). 0 on a failed write. */
static int evict(struct store *s, const char *client, long long cap, json_t *evicted)
{
	if (cap <= 0)
		return 1;
	for (;;) {
		long long total = client ? step_int(s, with_text(stmt(s, Q_CLIENT_BYTES), client)) : s->bytes;
		char id[80];
		if (total < 0)
			return 0;
		if (total <= cap || !oldest(s, client, id))
			return 1;
		long long bytes = step_int(s, with_text(stmt(s, Q_JOB_BYTES), id));
		if (bytes < 0 || !step_done(s, with_text(stmt(s, Q_DELETE_IMAGES), id)))
			return 0;
		s->bytes -= bytes;
		if (evicted)
			json_array_append_new(evicted, json_string(id));
	}
}

struct store *store_open(const char *path, long long max_bytes, long long max_bytes_per_client)
{
	struct store *s = calloc(1, sizeof *s);
	if (!s)
		return NULL;
	s->max_bytes = max_bytes;
	s->max_per_client = max_bytes_per_client;
	make_private(path);
	if (sqlite3_open_v2(path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, NULL) !=
	    SQLITE_OK) {
		log_error("db %s: %s", path, s->db ? sqlite3_errmsg(s->db) : "cannot open");
		goto fail;
	}
	sqlite3_busy_timeout(s->db, 5000);
	char *err = NULL;
	if (sqlite3_exec(s->db, SCHEMA, NULL, NULL, &err) != SQLITE_OK) {
		log_error("db %s: %s", path, err ? err : "schema failed");
		sqlite3_free(err);
		goto fail;
	}
	s->bytes = step_int(s, stmt(s, Q_TOTAL_BYTES));
	if (s->bytes < 0)
		goto fail;
	return s;
fail:
	for (int k = 0; k < N_STMTS; k++)
		sqlite3_finalize(s->stmts[k]);
	sqlite3_close(s->db);
	free(s);
	return NULL;
}

static void task_run(struct lane_task *lt);

static void batch_begin(void *ctx)
{
	struct store *s = ctx;
	s->batch_bytes = s->bytes;
	s->batch_evicted = s->evicted;
	s->in_batch = exec(s, "BEGIN IMMEDIATE"); /* else each task runs on its own */
}

static void batch_end(void *ctx, struct lane_task *tasks)
{
	struct store *s = ctx;
	if (!s->in_batch)
		return;
	s->in_batch = 0;
	if (exec(s, "COMMIT"))
		return;
	exec(s, "ROLLBACK");
	s->bytes = s->batch_bytes;
	s->evicted = s->batch_evicted;
	log_warn("db: a batch of writes could not be committed; each is tried on its own");
	for (struct lane_task *t = tasks; t; t = t->next)
		task_run(t);
}

int store_start(struct store *s, struct httpd *h)
{
	struct lane_batch batch = {batch_begin, batch_end, s, BATCH_MAX};
	s->lane = lane_new_batched(h, "store", &batch);
	return s->lane ? 0 : -1;
}

void store_close(struct store *s)
{
	if (!s)
		return;
	lane_drain_and_free(s->lane);
	for (int k = 0; k < N_STMTS; k++)
		sqlite3_finalize(s->stmts[k]);
	sqlite3_close(s->db);
	free(s);
}

long long store_results_bytes(const struct store *s) { return s ? s->bytes : 0; }

long long store_results_evicted(const struct store *s) { return s ? s->evicted : 0; }

/* Expired jobs and images, in one transaction. */
static int expire(struct store *s, double before)
{
	if (!tx_begin(s))
		return 0;
	long long gone = step_int(s, with_real(stmt(s, Q_EXPIRED_BYTES), before));
	int ok = gone >= 0 && step_done(s, with_real(stmt(s, Q_EXPIRE_IMAGES), before)) &&
		 step_done(s, with_real(stmt(s, Q_EXPIRE_JOBS), before)) && tx_commit(s);
	if (!ok) {
		tx_rollback(s);
		return 0;
	}
	s->bytes -= gone;
	return 1;
}

void store_prune(struct store *s, double before)
{
	long long was = s->bytes;
	json_t *evicted = json_array();
	int ok = expire(s, before);
	if (ok && exec(s, "BEGIN IMMEDIATE")) {
		if (evict(s, NULL, s->max_bytes, evicted) && exec(s, "COMMIT")) {
			s->evicted += (long long)json_array_size(evicted);
		} else {
			exec(s, "ROLLBACK");
			s->bytes = step_int(s, stmt(s, Q_TOTAL_BYTES));
		}
	}
	if (was != s->bytes)
		log_info("db: kept images %lld -> %lld bytes (%zu result(s) over --result-max-bytes dropped)", was,
			 s->bytes, json_array_size(evicted));
	json_decref(evicted);
}

/* One image of a result (a file answer.c checked) inserted; its metadata
 * appended to meta. 0 on a failed write. */
static int put_image(struct store *s, struct store_task *t, int n, const struct image_file *file)
{
	const char *mime = image_mime(file->facts.type);
	json_array_append_new(t->meta, json_pack("{s:s,s:I,s:i,s:i}", "type", mime, "bytes", (json_int_t)file->len,
						 "width", file->facts.width, "height", file->facts.height));
	sqlite3_stmt *st = stmt(s, Q_INSERT_IMAGE);
	int ok = 0;
	if (st) {
		sqlite3_bind_text(st, 1, t->id, -1, SQLITE_STATIC);
		sqlite3_bind_int(st, 2, n);
		sqlite3_bind_text(st, 3, mime, -1, SQLITE_STATIC);
		sqlite3_bind_int64(st, 4, (sqlite3_int64)file->len);
		sqlite3_bind_text(st, 5, t->client, -1, SQLITE_STATIC);
		sqlite3_bind_double(st, 6, t->when);
		sqlite3_bind_blob64(st, 7, file->data, file->len, SQLITE_STATIC);
		ok = step_done(s, st);
		sqlite3_clear_bindings(st); /* the file is freed once the task is done */
	}
	if (ok)
		s->bytes += (long long)file->len;
	return ok;
}

static int save_job_doc(struct store *s, const char *id, const char *status, double finished, const char *text)
{
	sqlite3_stmt *st = stmt(s, Q_SAVE_JOB);
	if (!st)
		return 0;
	sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, status, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 3, text, -1, SQLITE_STATIC);
	sqlite3_bind_double(st, 4, finished);
	return step_done(s, st);
}

/* The result's images, the evictions and the job's document, all or none;
 * if the images cannot be stored, the document still is (its images then
 * answer 410). Runs again as it is if its batch fails to commit. */
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

static void read_image(struct store *s, struct store_task *t)
{
	sqlite3_stmt *st = with_text(stmt(s, Q_FIND_IMAGE), t->id);
	t->total = -1;
	if (!st)
		return;
	sqlite3_bind_int(st, 2, t->n);
	sqlite3_int64 rowid = 0;
	if (sqlite3_step(st) == SQLITE_ROW) {
		rowid = sqlite3_column_int64(st, 0);
		t->total = sqlite3_column_int64(st, 1);
	}
	sqlite3_reset(st);
	if (t->total < 0 || t->offset >= t->total)
		return;
	long long want = t->total - t->offset;
	size_t n = want < (long long)t->cap ? (size_t)want : t->cap;
	sqlite3_blob *blob = NULL;
	if (sqlite3_blob_open(s->db, "main", "images", "data", rowid, 0, &blob) == SQLITE_OK &&
	    sqlite3_blob_read(blob, t->buf, (int)n, (int)t->offset) == SQLITE_OK)
		t->len = n;
	else
		log_warn("db: reading image %d of job %s: %s", t->n, t->id, sqlite3_errmsg(s->db));
	sqlite3_blob_close(blob);
}

static int run_text(struct store *s, enum stmt_kind k, const char *a, const char *b)
{
	sqlite3_stmt *st = with_text(stmt(s, k), a);
	if (st && b)
		sqlite3_bind_text(st, 2, b, -1, SQLITE_STATIC);
	return step_done(s, st);
}

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
		t->ok = text && run_text(s, Q_SAVE_BACKEND, t->id, text);
		free(text);
		break;
	}
	case DELETE_BACKEND:
		t->ok = run_text(s, Q_DELETE_BACKEND, t->id, NULL);
		break;
	case EXPIRE_JOBS:
		t->ok = expire(s, t->when);
		break;
	case PUT_RESULT:
		put_result(s, t);
		break;
	case READ_IMAGE:
		read_image(s, t);
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
		struct store_kept k = {ok, t->meta ? t->meta : json_array(), t->evicted ? t->evicted : json_array()};
		t->kept(t->user, &k);
		if (k.meta != t->meta)
			json_decref(k.meta);
		if (k.evicted != t->evicted)
			json_decref(k.evicted);
	}
	if (t->read)
		t->read(t->user, t->base.cancelled ? -1 : t->total, t->base.cancelled ? 0 : t->len);
	json_decref(t->doc);
	image_files_free(&t->images);
	json_decref(t->meta);
	json_decref(t->evicted);
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
		image_files_free(&images);
		json_decref(r->doc);
		struct store_kept k = {0, json_array(), json_array()};
		done(user, &k);
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

static int load(struct store *s, const char *sql, void (*fn)(json_t *doc, int flag, void *user),
		void (*plain)(json_t *doc, void *user), void *user)
{
	sqlite3_stmt *st = NULL;
	if (sqlite3_prepare_v2(s->db, sql, -1, &st, NULL) != SQLITE_OK) {
		log_error("db: %s", sqlite3_errmsg(s->db));
		return -1;
	}
	int rc, n = 0;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		const char *text = (const char *)sqlite3_column_text(st, 0);
		json_error_t err;
		json_t *doc = text ? json_loads(text, 0, &err) : NULL;
		if (json_is_object(doc)) {
			if (fn)
				fn(doc, sqlite3_column_int(st, 1), user);
			else
				plain(doc, user);
			n++;
		} else {
			log_warn("db: skipping an unreadable row");
		}
		json_decref(doc);
	}
	sqlite3_finalize(st);
	return rc == SQLITE_DONE ? n : -1;
}

int store_load_jobs(struct store *s, void (*fn)(json_t *doc, int has_images, void *user), void *user)
{
	return load(s,
		    "SELECT doc, EXISTS (SELECT 1 FROM images WHERE images.job_id = jobs.id) FROM jobs"
		    " ORDER BY created",
		    fn, NULL, user);
}

int store_load_backends(struct store *s, void (*fn)(json_t *doc, void *user), void *user)
{
	return load(s, "SELECT doc FROM backends ORDER BY rowid", NULL, fn, user);
}
