/* store.c — see store.h. */
#include "store.h"

#include "lane.h"
#include "log.h"

#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>

enum task_kind { SAVE_JOB, SAVE_BACKEND, DELETE_BACKEND, EXPIRE_JOBS, N_KINDS };

/* One statement per kind of write, prepared once on the store's thread. */
static const char *const SQL[N_KINDS] = {
	[SAVE_JOB] = "INSERT INTO jobs (id, status, doc, finished, created) VALUES (?, ?, ?, ?,"
		     " (SELECT coalesce(max(created), 0) + 1 FROM jobs))"
		     " ON CONFLICT(id) DO UPDATE SET status = excluded.status, doc = excluded.doc,"
		     " finished = excluded.finished",
	[SAVE_BACKEND] = "INSERT OR REPLACE INTO backends (id, doc) VALUES (?, ?)",
	[DELETE_BACKEND] = "DELETE FROM backends WHERE id = ?",
	[EXPIRE_JOBS] = "DELETE FROM jobs WHERE status IN ('done', 'failed', 'cancelled') AND finished < ?",
};

struct store {
	sqlite3 *db;
	struct lane *lane;
	sqlite3_stmt *stmts[N_KINDS];
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
};

static const char SCHEMA[] = "PRAGMA journal_mode=WAL;"
			     "PRAGMA synchronous=NORMAL;"
			     "CREATE TABLE IF NOT EXISTS jobs (id TEXT PRIMARY KEY, status TEXT NOT NULL,"
			     " finished REAL NOT NULL DEFAULT 0, created INTEGER NOT NULL, doc TEXT NOT NULL);"
			     "CREATE INDEX IF NOT EXISTS jobs_finished ON jobs(status, finished);"
			     "CREATE INDEX IF NOT EXISTS jobs_created ON jobs(created);"
			     "CREATE TABLE IF NOT EXISTS backends (id TEXT PRIMARY KEY, doc TEXT NOT NULL);";

struct store *store_open(const char *path)
{
	struct store *s = calloc(1, sizeof *s);
	if (!s)
		return NULL;
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
	return s;
fail:
	sqlite3_close(s->db);
	free(s);
	return NULL;
}

int store_start(struct store *s, struct httpd *h)
{
	s->lane = lane_new(h, "store");
	return s->lane ? 0 : -1;
}

void store_close(struct store *s)
{
	if (!s)
		return;
	lane_drain_and_free(s->lane);
	for (int k = 0; k < N_KINDS; k++)
		sqlite3_finalize(s->stmts[k]);
	sqlite3_close(s->db);
	free(s);
}

/* Runs the kind's statement with its text parameters, then its real ones,
 * bound in order; reports whether it completed. */
static int run_stmt(struct store *s, enum task_kind kind, const char *const *texts, int n_texts, const double *reals,
		    int n_reals)
{
	sqlite3_stmt *st = s->stmts[kind];
	if (!st && sqlite3_prepare_v2(s->db, SQL[kind], -1, &s->stmts[kind], NULL) != SQLITE_OK) {
		log_error("db: %s", sqlite3_errmsg(s->db));
		return 0;
	}
	st = s->stmts[kind];
	int k = 1;
	for (int i = 0; i < n_texts; i++)
		sqlite3_bind_text(st, k++, texts[i], -1, SQLITE_STATIC);
	for (int i = 0; i < n_reals; i++)
		sqlite3_bind_double(st, k++, reals[i]);
	int rc = sqlite3_step(st);
	if (rc != SQLITE_DONE)
		log_error("db: %s", sqlite3_errmsg(s->db));
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	return rc == SQLITE_DONE;
}

static void task_run(struct lane_task *lt)
{
	struct store_task *t = (struct store_task *)lt;
	struct store *s = t->s;
	char *text = t->doc ? json_dumps(t->doc, JSON_COMPACT) : NULL;
	switch (t->kind) {
	case SAVE_JOB: {
		const char *texts[] = {t->id, t->status, text ? text : "{}"};
		const double reals[] = {t->when};
		t->ok = text && run_stmt(s, SAVE_JOB, texts, 3, reals, 1);
		break;
	}
	case SAVE_BACKEND: {
		const char *texts[] = {t->id, text ? text : "{}"};
		t->ok = text && run_stmt(s, SAVE_BACKEND, texts, 2, NULL, 0);
		break;
	}
	case DELETE_BACKEND: {
		const char *texts[] = {t->id};
		t->ok = run_stmt(s, DELETE_BACKEND, texts, 1, NULL, 0);
		break;
	}
	case EXPIRE_JOBS: {
		const double reals[] = {t->when};
		t->ok = run_stmt(s, EXPIRE_JOBS, NULL, 0, reals, 1);
		break;
	}
	case N_KINDS:
		break;
	}
	free(text);
}

static void task_done(struct httpd *h, struct lane_task *lt)
{
	struct store_task *t = (struct store_task *)lt;
	if (t->done)
		t->done(t->user, t->base.cancelled ? 0 : t->ok);
	json_decref(t->doc);
	free(t);
}

static void submit(struct store *s, enum task_kind kind, const char *id, json_t *doc, store_done_fn done, void *user,
		   const char *status, double when)
{
	struct store_task *t = calloc(1, sizeof *t);
	if (!t) {
		json_decref(doc);
		if (done)
			done(user, 0);
		return;
	}
	t->base.run = task_run;
	t->base.done = task_done;
	t->s = s;
	t->kind = kind;
	snprintf(t->id, sizeof t->id, "%s", id ? id : "");
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

static int load(struct store *s, const char *sql, void (*fn)(json_t *doc, void *user), void *user)
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
			fn(doc, user);
			n++;
		} else {
			log_warn("db: skipping an unreadable row");
		}
		json_decref(doc);
	}
	sqlite3_finalize(st);
	return rc == SQLITE_DONE ? n : -1;
}

int store_load_jobs(struct store *s, void (*fn)(json_t *doc, void *user), void *user)
{
	return load(s, "SELECT doc FROM jobs ORDER BY created", fn, user);
}

int store_load_backends(struct store *s, void (*fn)(json_t *doc, void *user), void *user)
{
	return load(s, "SELECT doc FROM backends ORDER BY rowid", fn, user);
}
