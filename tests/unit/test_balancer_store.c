/* Unit tests of balancer/store.c on both engines: how --db is named in logs
 * (passwords masked), which --db is a server, and opening: a fresh store
 * migrated to its engine's last version (opening again applies nothing), a
 * newer version refused, stored rows loaded, something that is not a store
 * refused, the façade clients' options loaded; on SQLite files also a file
 * from before schema versions, taken as version 1 with its rows.
 *
 * Without $SDGATE_TEST_PG_FILE the cases run on SQLite files in /tmp; with
 * it (ctest's test_balancer_store_pg, fixture pg_server: a file whose first
 * line is a PostgreSQL server's URL, tests/integration/pg_server.py) they
 * run on databases this test creates on that server. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <libpq-fe.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "store.h"

#define STORE_SQLITE_VERSION 2 /* store_sqlite.c's migrations */

static void test_label(void **state)
{
	(void)state;
	const char *cases[][2] = {
		{"/var/lib/sdgate/balancer.db", "/var/lib/sdgate/balancer.db"},
		{"postgresql://sdgate@db:5432/sdgate", "postgresql://sdgate@db:5432/sdgate"},
		{"postgresql://sdgate:s3cret@db:5432/sdgate", "postgresql://sdgate:***@db:5432/sdgate"},
		{"postgres://u:p%40ss@w@[::1]/x", "postgres://u:***@[::1]/x"}, /* the authority's last '@' */
		{"postgresql://db/x?password=s3cret", "postgresql://db/x?password=***"},
		{"postgresql://db/x?sslmode=require&password=s3cret&application_name=a",
		 "postgresql://db/x?sslmode=require&password=***&application_name=a"},
		{"postgresql://u:pw@db/x?password=pw2#frag", "postgresql://u:***@db/x?password=***#frag"},
		{"postgresql://db:5432/x?user=u", "postgresql://db:5432/x?user=u"},
		{"postgresql://u:@db/x", "postgresql://u:***@db/x"},
		{"postgresql://", "postgresql://"},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		char out[256];
		store_db_label(cases[i][0], out, sizeof out);
		assert_string_equal(out, cases[i][1]);
	}
	char small[24]; /* truncated, still terminated, still masked */
	store_db_label("postgresql://user:secretpassword@host/db", small, sizeof small);
	assert_null(strstr(small, "secret"));
	assert_int_equal(strlen(small), sizeof small - 1);
}

static void test_is_url(void **state)
{
	(void)state;
	assert_true(store_is_url("postgresql://h/d"));
	assert_true(store_is_url("postgres://h/d"));
	assert_false(store_is_url("postgresql:/h/d"));
	assert_false(store_is_url("PostgreSQL://h/d")); /* a file name, as before */
	assert_false(store_is_url("balancer.db"));
}

/* The PostgreSQL server's URL (database "postgres") from the fixture's
 * file, or "" when this run is on SQLite. */
static char pg_server[512];

static void pg_server_read(void)
{
	const char *path = getenv("SDGATE_TEST_PG_FILE");
	FILE *f = path && *path ? fopen(path, "r") : NULL;
	if (!f)
		return;
	if (!fgets(pg_server, sizeof pg_server, f))
		pg_server[0] = 0;
	pg_server[strcspn(pg_server, "\n")] = 0;
	fclose(f);
}

/* Runs text on the PostgreSQL database at url; 1 if it succeeded. *v (may
 * be NULL) gets the first row's first field as a number (-1: none). */
static int pg_sql(const char *url, const char *text, long long *v)
{
	PGconn *c = PQconnectdb(url);
	PGresult *r = PQstatus(c) == CONNECTION_OK ? PQexec(c, text) : NULL;
	ExecStatusType st = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
	int ok = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
	if (!ok)
		fprintf(stderr, "sql: %s\n", PQerrorMessage(c));
	if (v)
		*v = ok && PQntuples(r) > 0 && !PQgetisnull(r, 0, 0) ? atoll(PQgetvalue(r, 0, 0)) : -1;
	PQclear(r);
	PQfinish(c);
	return ok;
}

/* A new store's --db (size 512): a temp file path, or a URL to a new empty
 * database on the fixture's server. Removed by drop(). */
static void fresh_db(char out[512])
{
	if (!pg_server[0]) {
		snprintf(out, 512, "/tmp/sdgate-store-XXXXXX");
		int fd = mkstemp(out);
		assert_true(fd >= 0);
		close(fd);
		return;
	}
	static int n;
	char name[64], text[128];
	snprintf(name, sizeof name, "unit_%ld_%d", (long)getpid(), ++n);
	snprintf(text, sizeof text, "CREATE DATABASE \"%s\"", name);
	assert_true(pg_sql(pg_server, text, NULL));
	const char *slash = strrchr(pg_server, '/'); /* the server's URL ends in /postgres */
	assert_non_null(slash);
	snprintf(out, 512, "%.*s/%s", (int)(slash - pg_server), pg_server, name);
}

/* A new store's --db, migrated to the last version, closed. */
static void fresh_store(char out[512])
{
	fresh_db(out);
	struct store *s = store_open(out, 0, 1 << 20, 1 << 20);
	assert_non_null(s);
	store_close(s);
}

static void drop(const char *db)
{
	if (store_is_url(db)) {
		char text[128];
		snprintf(text, sizeof text, "DROP DATABASE \"%s\" WITH (FORCE)", strrchr(db, '/') + 1);
		assert_true(pg_sql(pg_server, text, NULL));
		return;
	}
	char p[600];
	unlink(db);
	snprintf(p, sizeof p, "%s-wal", db);
	unlink(p);
	snprintf(p, sizeof p, "%s-shm", db);
	unlink(p);
}

static void sql(const char *db, const char *text)
{
	if (store_is_url(db)) {
		assert_true(pg_sql(db, text, NULL));
		return;
	}
	sqlite3 *h = NULL;
	assert_int_equal(sqlite3_open(db, &h), SQLITE_OK);
	char *err = NULL;
	int rc = sqlite3_exec(h, text, NULL, NULL, &err);
	if (rc != SQLITE_OK)
		fprintf(stderr, "sql: %s\n", err ? err : "?");
	sqlite3_free(err);
	sqlite3_close(h);
	assert_int_equal(rc, SQLITE_OK);
}

static long long sql_int(const char *db, const char *text)
{
	long long v = -1;
	if (store_is_url(db)) {
		pg_sql(db, text, &v);
		return v;
	}
	sqlite3 *h = NULL;
	sqlite3_stmt *st = NULL;
	assert_int_equal(sqlite3_open(db, &h), SQLITE_OK);
	if (sqlite3_prepare_v2(h, text, -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
		v = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	sqlite3_close(h);
	return v;
}

static void count_job(json_t *doc, int has_images, void *user)
{
	int *n = user;
	if (json_is_object(doc) && has_images)
		n[1]++;
	n[0]++;
}

static void count_backend(json_t *doc, void *user)
{
	(void)doc;
	(*(int *)user)++;
}

static void test_fresh(void **state)
{
	(void)state;
	char db[512];
	fresh_db(db);
	struct store *s = store_open(db, 0, 1 << 20, 1 << 20);
	assert_non_null(s);
	int jobs[2] = {0, 0}, backends = 0;
	assert_int_equal(store_load_jobs(s, count_job, jobs), 0);
	assert_int_equal(store_load_backends(s, count_backend, &backends), 0);
	store_close(s);
	long long last = sql_int(db, "SELECT max(version) FROM schema_migrations");
	if (!store_is_url(db))
		assert_int_equal(last, STORE_SQLITE_VERSION);
	assert_true(last >= 1); /* every version applied, each recorded once */
	assert_int_equal(sql_int(db, "SELECT count(*) FROM schema_migrations"), last);
	/* Opening again applies nothing. */
	s = store_open(db, 0, 1 << 20, 1 << 20);
	assert_non_null(s);
	store_close(s);
	assert_int_equal(sql_int(db, "SELECT count(*) FROM schema_migrations"), last);
	drop(db);
}

/* A file as sdgate wrote it before schema versions (SQLite only: the
 * PostgreSQL engine came with them): its rows are kept and loaded, and it
 * is recorded as version 1. */
static void test_before_versions(void **state)
{
	(void)state;
	char path[512];
	fresh_store(path);
	sql(path, "DROP TABLE schema_migrations; DROP TABLE client_options;"
		  "INSERT INTO jobs (id, status, finished, created, doc) VALUES"
		  " ('a', 'done', 1e12, 1, '{\"id\":\"a\",\"status\":\"done\"}'),"
		  " ('b', 'queued', 0, 2, '{\"id\":\"b\",\"status\":\"queued\"}');"
		  "INSERT INTO images (job_id, n, mime, bytes, client, finished, data) VALUES"
		  " ('a', 0, 'image/png', 3, 'c', 1e12, x'010203');"
		  "INSERT INTO backends (id, doc) VALUES ('k', '{\"id\":\"k\"}');");
	struct store *s = store_open(path, 0, 1 << 20, 1 << 20);
	assert_non_null(s);
	assert_int_equal(store_results_bytes(s), 3);
	int jobs[2] = {0, 0}, backends = 0;
	assert_int_equal(store_load_jobs(s, count_job, jobs), 2);
	assert_int_equal(jobs[1], 1); /* a has its image */
	assert_int_equal(store_load_backends(s, count_backend, &backends), 1);
	assert_int_equal(backends, 1);
	store_close(s);
	assert_int_equal(sql_int(path, "SELECT min(version) FROM schema_migrations"), 1); /* recorded, then migrated */
	assert_int_equal(sql_int(path, "SELECT max(version) FROM schema_migrations"), STORE_SQLITE_VERSION);
	assert_int_equal(sql_int(path, "SELECT bytes FROM client_bytes WHERE client = 'c'"), 3);
	drop(path);
}

/* Rows in a store of the current version are loaded, the kept images'
 * bytes counted, and pruning drops what finished before its time. */
static void test_rows_loaded(void **state)
{
	(void)state;
	char db[512];
	fresh_store(db);
	sql(db, "INSERT INTO jobs (id, status, finished, created, doc) VALUES"
		" ('a', 'done', 1e12, 1, '{\"id\":\"a\",\"status\":\"done\"}'),"
		" ('b', 'queued', 0, 2, '{\"id\":\"b\",\"status\":\"queued\"}'),"
		" ('old', 'done', 5, 3, '{\"id\":\"old\",\"status\":\"done\"}');"
		"INSERT INTO backends (id, doc) VALUES ('k', '{\"id\":\"k\"}');");
	if (store_is_url(db))
		sql(db, "INSERT INTO images (job_id, n, mime, bytes, client, finished, data) VALUES"
			" ('a', 0, 'image/png', 3, 'c', 1e12, '\\x010203'::bytea),"
			" ('old', 0, 'image/png', 2, 'c', 5, '\\x0102'::bytea)");
	else
		sql(db, "INSERT INTO images (job_id, n, mime, bytes, client, finished, data) VALUES"
			" ('a', 0, 'image/png', 3, 'c', 1e12, x'010203'), ('old', 0, 'image/png', 2, 'c', 5, x'0102')");
	struct store *s = store_open(db, 0, 1 << 20, 1 << 20);
	assert_non_null(s);
	assert_int_equal(store_results_bytes(s), 5);
	store_prune(s, 10);
	assert_int_equal(store_results_bytes(s), 3);
	int jobs[2] = {0, 0}, backends = 0;
	assert_int_equal(store_load_jobs(s, count_job, jobs), 2);
	assert_int_equal(jobs[0], 2);
	assert_int_equal(jobs[1], 1); /* a has its image */
	assert_int_equal(store_load_backends(s, count_backend, &backends), 1);
	assert_int_equal(backends, 1);
	store_close(s);
	assert_int_equal(sql_int(db, "SELECT count(*) FROM jobs WHERE id = 'old'"), 0);
	assert_int_equal(sql_int(db, "SELECT count(*) FROM images"), 1);
	drop(db);
}

static void test_newer_refused(void **state)
{
	(void)state;
	char db[512], text[128];
	fresh_store(db);
	long long newer = sql_int(db, "SELECT max(version) FROM schema_migrations") + 1;
	snprintf(text, sizeof text, "INSERT INTO schema_migrations (version) VALUES (%lld)", newer);
	sql(db, text);
	assert_null(store_open(db, 0, 1 << 20, 1 << 20));
	assert_int_equal(sql_int(db, "SELECT max(version) FROM schema_migrations"), newer); /* untouched */
	drop(db);
}

struct loaded_options {
	int n;
	char client[4][16], checkpoint[4][32];
	double age[4];
};

static void load_option(const char *client, json_t *doc, double age_s, void *user)
{
	struct loaded_options *l = user;
	if (l->n < 4) {
		snprintf(l->client[l->n], sizeof l->client[0], "%s", client);
		snprintf(l->checkpoint[l->n], sizeof l->checkpoint[0], "%s",
			 json_string_value(json_object_get(doc, "sd_model_checkpoint")));
		l->age[l->n] = age_s;
	}
	l->n++;
}

/* The façade clients' options: the newest max saved within max_age_s,
 * oldest first, each with its age; older ones and unreadable rows are
 * left out. */
static void test_load_options(void **state)
{
	(void)state;
	char db[512], text[1024];
	fresh_store(db);
	/* updated_at: a timestamptz on PostgreSQL, unix seconds on SQLite; ago N end: N seconds ago */
	const char *ago = store_is_url(db) ? "now() - make_interval(secs => "
					   : "((julianday('now') - 2440587.5) * 86400.0 - (";
	const char *end = store_is_url(db) ? ")" : "))";
	snprintf(text, sizeof text,
		 "INSERT INTO client_options (client, doc, updated_at) VALUES"
		 " ('new', '{\"sd_model_checkpoint\":\"n\"}', %s10%s),"
		 " ('old', '{\"sd_model_checkpoint\":\"o\"}', %s500%s),"
		 " ('mid', '{\"sd_model_checkpoint\":\"m\"}', %s100%s),"
		 " ('gone', '{\"sd_model_checkpoint\":\"g\"}', %s90000%s),"
		 " ('odd', '[1]', %s50%s)",
		 ago, end, ago, end, ago, end, ago, end, ago, end);
	sql(db, text);
	struct store *s = store_open(db, 0, 1 << 20, 1 << 20);
	assert_non_null(s);
	struct loaded_options l = {0};
	/* old is past the 3 newest; odd is not an object */
	assert_int_equal(store_load_options(s, 3, 86400, load_option, &l), 3);
	assert_int_equal(l.n, 2);
	assert_string_equal(l.client[0], "mid");
	assert_string_equal(l.checkpoint[0], "m");
	assert_true(l.age[0] > 99 && l.age[0] < 110);
	assert_string_equal(l.client[1], "new");
	assert_string_equal(l.checkpoint[1], "n");
	assert_true(l.age[1] > 9 && l.age[1] < 20);
	memset(&l, 0, sizeof l);
	assert_int_equal(store_load_options(s, 10, 86400, load_option, &l), 4); /* gone is past the age */
	assert_int_equal(l.n, 3);
	assert_string_equal(l.client[0], "old");
	store_close(s);
	drop(db);
}

/* Not a store: a file of text, a database that does not exist. */
static void test_not_a_database(void **state)
{
	(void)state;
	char db[512];
	fresh_db(db);
	if (store_is_url(db)) {
		drop(db);
		assert_null(store_open(db, 0, 1 << 20, 1 << 20));
		return;
	}
	FILE *f = fopen(db, "w");
	assert_non_null(f);
	for (int i = 0; i < 200; i++)
		fputs("this is not a SQLite file, ", f);
	fclose(f);
	assert_null(store_open(db, 0, 1 << 20, 1 << 20));
	drop(db);
}

int main(void)
{
	pg_server_read();
	const struct CMUnitTest sqlite_tests[] = {
		cmocka_unit_test(test_label),          cmocka_unit_test(test_is_url),
		cmocka_unit_test(test_fresh),          cmocka_unit_test(test_before_versions),
		cmocka_unit_test(test_rows_loaded),    cmocka_unit_test(test_newer_refused),
		cmocka_unit_test(test_not_a_database), cmocka_unit_test(test_load_options),
	};
	const struct CMUnitTest pg_tests[] = {
		cmocka_unit_test(test_fresh),         cmocka_unit_test(test_rows_loaded),
		cmocka_unit_test(test_newer_refused), cmocka_unit_test(test_not_a_database),
		cmocka_unit_test(test_load_options),
	};
	if (pg_server[0])
		return cmocka_run_group_tests_name("postgresql", pg_tests, NULL, NULL);
	return cmocka_run_group_tests_name("sqlite", sqlite_tests, NULL, NULL);
}
