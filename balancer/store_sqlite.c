/* store_sqlite.c — the store's SQLite engine (store_engine.h): one file in
 * WAL mode, private to the balancer's user, every statement prepared once.
 * Images are BLOB rows read in chunks with sqlite3_blob_read. Each client's
 * kept bytes are a row of client_bytes that the images' triggers keep up to
 * date (rebuilt at open), so the per-client cap reads one row. */
#include "store_engine.h"

#include "log.h"

#include <fcntl.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

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
	Q_HAS_TABLE,
	Q_VERSION,
	Q_SAVE_OPTIONS,
	Q_EXPIRE_OPTIONS,
	Q_LOAD_OPTIONS,
	N_STMTS
};

/* Now as unix seconds (client_options.updated_at). */
#define SQ_NOW "((julianday('now') - 2440587.5) * 86400.0)"

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
	[Q_HAS_TABLE] = "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?",
	[Q_VERSION] = "SELECT coalesce(max(version), 0) FROM schema_migrations",
	[Q_SAVE_OPTIONS] = "INSERT INTO client_options (client, doc, updated_at) VALUES (?, ?, " SQ_NOW ")"
			   " ON CONFLICT(client) DO UPDATE SET doc = excluded.doc, updated_at = excluded.updated_at",
	[Q_EXPIRE_OPTIONS] = "DELETE FROM client_options WHERE updated_at < " SQ_NOW " - ?1 OR client IN"
			     " (SELECT client FROM client_options ORDER BY updated_at DESC, client LIMIT -1 OFFSET ?2)",
	[Q_LOAD_OPTIONS] = "SELECT json_object('client', client, 'doc', json(doc), 'age_s', " SQ_NOW " - updated_at), 0"
			   " FROM (SELECT client, doc, updated_at FROM client_options"
			   " WHERE updated_at >= " SQ_NOW " - ?2"
			   " ORDER BY updated_at DESC, client LIMIT ?1) ORDER BY updated_at, client",
};

struct store_conn {
	sqlite3 *db;
	sqlite3_stmt *stmts[N_STMTS];
};

/* The connection's settings, at every open (not part of the schema). */
static const char PRAGMAS[] = "PRAGMA journal_mode=WAL;"
			      "PRAGMA synchronous=NORMAL;"
			      "PRAGMA journal_size_limit=67108864;" /* the WAL shrinks back after a large result */
			      /* A checkpoint every 16 MiB of WAL, not 4: a page that many results
			       * rewrite (index leaves, the tables' last pages) is copied to the file
			       * and synced once per checkpoint, not once per 4 MiB. */
			      "PRAGMA wal_autocheckpoint=4000;"
			      "PRAGMA recursive_triggers=ON;"; /* INSERT OR REPLACE's deletes fire images_drop */

/* Version 1 is the layout of the files written before schema versions (its
 * tables are recognised as version 1 without a schema_migrations table). */
static const char *const MIGRATIONS[] = {
	"CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY,"
	" applied_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP);"
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
	" DELETE FROM client_bytes WHERE client = old.client AND bytes <= 0; END;",
	/* 2: the façade clients' options (store.h), kept across a restart. */
	"CREATE TABLE client_options (client TEXT PRIMARY KEY, doc TEXT NOT NULL, updated_at REAL NOT NULL);"
	"CREATE INDEX client_options_updated ON client_options(updated_at);",
};

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
static sqlite3_stmt *stmt(struct store_conn *c, enum stmt_kind k)
{
	if (!c->stmts[k] && sqlite3_prepare_v2(c->db, SQL[k], -1, &c->stmts[k], NULL) != SQLITE_OK) {
		log_error("db: %s", sqlite3_errmsg(c->db));
		return NULL;
	}
	sqlite3_reset(c->stmts[k]);
	sqlite3_clear_bindings(c->stmts[k]);
	return c->stmts[k];
}

/* Runs a bound statement that returns no row; 1 if it completed. */
static int step_done(struct store_conn *c, sqlite3_stmt *st)
{
	if (!st)
		return 0;
	int rc = sqlite3_step(st);
	if (rc != SQLITE_DONE)
		log_error("db: %s", sqlite3_errmsg(c->db));
	sqlite3_reset(st);
	return rc == SQLITE_DONE;
}

/* Runs a bound statement whose first row's first column is an integer;
 * -1 if it failed. */
static long long step_int(struct store_conn *c, sqlite3_stmt *st)
{
	if (!st)
		return -1;
	int rc = sqlite3_step(st);
	long long v = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : -1;
	if (rc != SQLITE_ROW)
		log_error("db: %s", sqlite3_errmsg(c->db));
	sqlite3_reset(st);
	return v;
}

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

static int run_text(struct store_conn *c, enum stmt_kind k, const char *a, const char *b)
{
	sqlite3_stmt *st = with_text(stmt(c, k), a);
	if (st && b)
		sqlite3_bind_text(st, 2, b, -1, SQLITE_STATIC);
	return step_done(c, st);
}

static int sq_exec(struct store_conn *c, const char *sql)
{
	char *err = NULL;
	if (sqlite3_exec(c->db, sql, NULL, NULL, &err) == SQLITE_OK)
		return 1;
	log_error("db: %.200s: %s", sql, err ? err : "failed");
	sqlite3_free(err);
	return 0;
}

static void sq_close(struct store_conn *c)
{
	if (!c)
		return;
	for (int k = 0; k < N_STMTS; k++)
		sqlite3_finalize(c->stmts[k]);
	sqlite3_close(c->db);
	free(c);
}

/* A file written before schema versions has the version-1 tables and no
 * schema_migrations: it is recorded as version 1, its rows untouched. */
static int sq_version(struct store_conn *c)
{
	long long has = step_int(c, with_text(stmt(c, Q_HAS_TABLE), "schema_migrations"));
	if (has > 0)
		return (int)step_int(c, stmt(c, Q_VERSION));
	if (has < 0)
		return -1;
	long long legacy = step_int(c, with_text(stmt(c, Q_HAS_TABLE), "jobs"));
	if (legacy <= 0)
		return legacy < 0 ? -1 : 0;
	if (!sq_exec(c, "BEGIN IMMEDIATE;"
			"CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY,"
			" applied_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP);"
			"INSERT INTO schema_migrations (version) VALUES (1);"
			"COMMIT;")) {
		sq_exec(c, "ROLLBACK");
		return -1;
	}
	log_info("db: a file from before schema versions: recorded as version 1");
	return 1;
}

/* client_bytes from the images themselves, whatever a crash left. */
static int sq_ready(struct store_conn *c)
{
	return sq_exec(c,
		       "BEGIN IMMEDIATE;"
		       "DELETE FROM client_bytes;"
		       "INSERT INTO client_bytes (client, bytes) SELECT client, sum(bytes) FROM images GROUP BY client;"
		       "COMMIT;");
}

static int sq_save_job(struct store_conn *c, const char *id, const char *status, double finished, const char *doc,
		       const char *owner)
{
	(void)owner; /* one balancer's file: nothing to fence */
	sqlite3_stmt *st = stmt(c, Q_SAVE_JOB);
	if (!st)
		return 0;
	sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, status, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 3, doc, -1, SQLITE_STATIC);
	sqlite3_bind_double(st, 4, finished);
	return step_done(c, st);
}

static int sq_save_backend(struct store_conn *c, const char *id, const char *doc)
{
	return run_text(c, Q_SAVE_BACKEND, id, doc);
}

static int sq_delete_backend(struct store_conn *c, const char *id) { return run_text(c, Q_DELETE_BACKEND, id, NULL); }

static long long sq_expire(struct store_conn *c, double before)
{
	long long gone = step_int(c, with_real(stmt(c, Q_EXPIRED_BYTES), before));
	int ok = gone >= 0 && step_done(c, with_real(stmt(c, Q_EXPIRE_IMAGES), before)) &&
		 step_done(c, with_real(stmt(c, Q_EXPIRE_JOBS), before));
	return ok ? gone : -1;
}

static long long sq_total_bytes(struct store_conn *c) { return step_int(c, stmt(c, Q_TOTAL_BYTES)); }

static long long sq_client_bytes(struct store_conn *c, const char *client)
{
	return step_int(c, with_text(stmt(c, Q_CLIENT_BYTES), client));
}

static int sq_oldest(struct store_conn *c, const char *client, char id[STORE_ID_MAX])
{
	sqlite3_stmt *st = client ? with_text(stmt(c, Q_OLDEST_OF_CLIENT), client) : stmt(c, Q_OLDEST);
	if (!st)
		return -1;
	int rc = sqlite3_step(st);
	int found = rc == SQLITE_ROW && sqlite3_column_text(st, 0);
	if (found)
		snprintf(id, STORE_ID_MAX, "%s", (const char *)sqlite3_column_text(st, 0));
	else if (rc != SQLITE_DONE && rc != SQLITE_ROW)
		log_error("db: %s", sqlite3_errmsg(c->db));
	sqlite3_reset(st);
	return found ? 1 : rc == SQLITE_DONE ? 0 : -1;
}

static long long sq_drop_images(struct store_conn *c, const char *job_id)
{
	long long bytes = step_int(c, with_text(stmt(c, Q_JOB_BYTES), job_id));
	return bytes >= 0 && step_done(c, with_text(stmt(c, Q_DELETE_IMAGES), job_id)) ? bytes : -1;
}

static int sq_insert_image(struct store_conn *c, const struct store_image_row *r)
{
	sqlite3_stmt *st = stmt(c, Q_INSERT_IMAGE);
	if (!st)
		return 0;
	sqlite3_bind_text(st, 1, r->job_id, -1, SQLITE_STATIC);
	sqlite3_bind_int(st, 2, r->n);
	sqlite3_bind_text(st, 3, r->mime, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 4, (sqlite3_int64)r->len);
	sqlite3_bind_text(st, 5, r->client, -1, SQLITE_STATIC);
	sqlite3_bind_double(st, 6, r->finished);
	sqlite3_bind_blob64(st, 7, r->data, r->len, SQLITE_STATIC);
	int ok = step_done(c, st);
	sqlite3_clear_bindings(st); /* the file is freed once the task is done */
	return ok;
}

static long long sq_read_image(struct store_conn *c, const char *job_id, int n, long long offset, unsigned char *buf,
			       size_t cap, size_t *len)
{
	sqlite3_stmt *st = with_text(stmt(c, Q_FIND_IMAGE), job_id);
	long long total = -1;
	*len = 0;
	if (!st)
		return -1;
	sqlite3_bind_int(st, 2, n);
	sqlite3_int64 rowid = 0;
	if (sqlite3_step(st) == SQLITE_ROW) {
		rowid = sqlite3_column_int64(st, 0);
		total = sqlite3_column_int64(st, 1);
	}
	sqlite3_reset(st);
	if (total < 0 || offset >= total)
		return total;
	long long want = total - offset;
	size_t k = want < (long long)cap ? (size_t)want : cap;
	sqlite3_blob *blob = NULL;
	if (sqlite3_blob_open(c->db, "main", "images", "data", rowid, 0, &blob) == SQLITE_OK &&
	    sqlite3_blob_read(blob, buf, (int)k, (int)offset) == SQLITE_OK)
		*len = k;
	else
		log_warn("db: reading image %d of job %s: %s", n, job_id, sqlite3_errmsg(c->db));
	sqlite3_blob_close(blob);
	return total;
}

/* Each row (text, int) of a bound statement to row: the count, -1 on
 * failure. */
static int each_row(struct store_conn *c, sqlite3_stmt *st, store_row_fn row, void *user)
{
	if (!st)
		return -1;
	int rc, n = 0;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		row((const char *)sqlite3_column_text(st, 0), sqlite3_column_int(st, 1), user);
		n++;
	}
	if (rc != SQLITE_DONE)
		log_error("db: %s", sqlite3_errmsg(c->db));
	sqlite3_reset(st);
	return rc == SQLITE_DONE ? n : -1;
}

static int load(struct store_conn *c, const char *sql, store_row_fn row, void *user)
{
	sqlite3_stmt *st = NULL;
	if (sqlite3_prepare_v2(c->db, sql, -1, &st, NULL) != SQLITE_OK) {
		log_error("db: %s", sqlite3_errmsg(c->db));
		return -1;
	}
	int n = each_row(c, st, row, user);
	sqlite3_finalize(st);
	return n;
}

static int sq_load_jobs(struct store_conn *c, store_row_fn row, void *user)
{
	return load(c,
		    "SELECT doc, EXISTS (SELECT 1 FROM images WHERE images.job_id = jobs.id) FROM jobs"
		    " ORDER BY created",
		    row, user);
}

static int sq_load_backends(struct store_conn *c, store_row_fn row, void *user)
{
	return load(c, "SELECT doc, 0 FROM backends ORDER BY rowid", row, user);
}

static int sq_save_options(struct store_conn *c, const char *client, const char *doc, const char *notice)
{
	(void)notice; /* one balancer's file: nobody to tell */
	return run_text(c, Q_SAVE_OPTIONS, client, doc);
}

static int sq_expire_options(struct store_conn *c, double max_age_s, int keep)
{
	sqlite3_stmt *st = with_real(stmt(c, Q_EXPIRE_OPTIONS), max_age_s);
	if (st)
		sqlite3_bind_int(st, 2, keep);
	return step_done(c, st);
}

static int sq_load_options(struct store_conn *c, int max, double max_age_s, store_row_fn row, void *user)
{
	sqlite3_stmt *st = stmt(c, Q_LOAD_OPTIONS);
	if (st) {
		sqlite3_bind_int(st, 1, max);
		sqlite3_bind_double(st, 2, max_age_s);
	}
	return each_row(c, st, row, user);
}

static const struct store_engine SQLITE_ENGINE = {
	.name = "sqlite",
	.migrations = MIGRATIONS,
	.n_migrations = (int)(sizeof MIGRATIONS / sizeof MIGRATIONS[0]),
	.close = sq_close,
	.exec = sq_exec,
	.begin_sql = "BEGIN IMMEDIATE",
	.version = sq_version,
	.ready = sq_ready,
	.save_job = sq_save_job,
	.save_backend = sq_save_backend,
	.delete_backend = sq_delete_backend,
	.expire = sq_expire,
	.total_bytes = sq_total_bytes,
	.client_bytes = sq_client_bytes,
	.oldest = sq_oldest,
	.drop_images = sq_drop_images,
	.insert_image = sq_insert_image,
	.read_image = sq_read_image,
	.load_jobs = sq_load_jobs,
	.load_backends = sq_load_backends,
	.save_options = sq_save_options,
	.expire_options = sq_expire_options,
	.load_options = sq_load_options,
};

struct store_conn *store_sqlite_open(const char *path, const struct store_engine **engine)
{
	struct store_conn *c = calloc(1, sizeof *c);
	if (!c)
		return NULL;
	make_private(path);
	if (sqlite3_open_v2(path, &c->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, NULL) !=
	    SQLITE_OK) {
		log_error("db %s: %s", path, c->db ? sqlite3_errmsg(c->db) : "cannot open");
		sq_close(c);
		return NULL;
	}
	sqlite3_busy_timeout(c->db, 5000);
	if (!sq_exec(c, PRAGMAS)) {
		log_error("db %s: not a SQLite database this balancer can use", path);
		sq_close(c);
		return NULL;
	}
	*engine = &SQLITE_ENGINE;
	return c;
}
