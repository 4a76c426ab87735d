/* Unit tests of balancer/store.c on SQLite files (PostgreSQL runs in the
 * integration tests, against a real server): how --db is named in logs
 * (passwords masked), which --db is a server, and opening: a fresh file
 * migrated to the last version, a file from before schema versions taken as
 * version 1 with its rows, a newer version refused, a file that is not a
 * database refused; the façade clients' options loaded. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "store.h"

#define STORE_SQLITE_VERSION 2 /* store_sqlite.c's migrations */
#define STR_(x) #x
#define STR(x) STR_(x)

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

/* A temp file path; removed (with -wal/-shm) by drop(). */
static void temp_path(char out[64])
{
	snprintf(out, 64, "/tmp/sdgate-store-XXXXXX");
	int fd = mkstemp(out);
	assert_true(fd >= 0);
	close(fd);
}

/* A temp file migrated to the last version, closed. */
static void fresh_file(char out[64])
{
	temp_path(out);
	struct store *s = store_open(out, 0, 1 << 20, 1 << 20);
	assert_non_null(s);
	store_close(s);
}

static void drop(const char *path)
{
	char p[96];
	unlink(path);
	snprintf(p, sizeof p, "%s-wal", path);
	unlink(p);
	snprintf(p, sizeof p, "%s-shm", path);
	unlink(p);
}

static void sql(const char *path, const char *text)
{
	sqlite3 *db = NULL;
	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	char *err = NULL;
	int rc = sqlite3_exec(db, text, NULL, NULL, &err);
	if (rc != SQLITE_OK)
		fprintf(stderr, "sql: %s\n", err ? err : "?");
	sqlite3_free(err);
	sqlite3_close(db);
	assert_int_equal(rc, SQLITE_OK);
}

static long long sql_int(const char *path, const char *text)
{
	sqlite3 *db = NULL;
	sqlite3_stmt *st = NULL;
	long long v = -1;
	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	if (sqlite3_prepare_v2(db, text, -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
		v = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	sqlite3_close(db);
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
	char path[64];
	temp_path(path);
	struct store *s = store_open(path, 0, 1 << 20, 1 << 20);
	assert_non_null(s);
	int jobs[2] = {0, 0}, backends = 0;
	assert_int_equal(store_load_jobs(s, count_job, jobs), 0);
	assert_int_equal(store_load_backends(s, count_backend, &backends), 0);
	store_close(s);
	assert_int_equal(sql_int(path, "SELECT max(version) FROM schema_migrations"), STORE_SQLITE_VERSION);
	assert_int_equal(sql_int(path, "SELECT count(*) FROM schema_migrations"), STORE_SQLITE_VERSION);
	/* Opening again applies nothing. */
	s = store_open(path, 0, 1 << 20, 1 << 20);
	assert_non_null(s);
	store_close(s);
	assert_int_equal(sql_int(path, "SELECT count(*) FROM schema_migrations"), STORE_SQLITE_VERSION);
	drop(path);
}

/* A file as sdgate wrote it before schema versions: its rows are kept and
 * loaded, and it is recorded as version 1. */
static void test_before_versions(void **state)
{
	(void)state;
	char path[64];
	fresh_file(path);
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

static void test_newer_refused(void **state)
{
	(void)state;
	char path[64];
	fresh_file(path);
	sql(path, "INSERT INTO schema_migrations (version) VALUES (" STR(STORE_SQLITE_VERSION + 1) ")");
	assert_null(store_open(path, 0, 1 << 20, 1 << 20));
	/* untouched */
	assert_int_equal(sql_int(path, "SELECT max(version) FROM schema_migrations"), STORE_SQLITE_VERSION + 1);
	drop(path);
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
	char path[64];
	fresh_file(path);
	sql(path, "INSERT INTO client_options (client, doc, updated_at) VALUES"
		  " ('new', '{\"sd_model_checkpoint\":\"n\"}', (julianday('now') - 2440587.5) * 86400.0 - 10),"
		  " ('old', '{\"sd_model_checkpoint\":\"o\"}', (julianday('now') - 2440587.5) * 86400.0 - 500),"
		  " ('mid', '{\"sd_model_checkpoint\":\"m\"}', (julianday('now') - 2440587.5) * 86400.0 - 100),"
		  " ('gone', '{\"sd_model_checkpoint\":\"g\"}', (julianday('now') - 2440587.5) * 86400.0 - 90000),"
		  " ('odd', '[1]', (julianday('now') - 2440587.5) * 86400.0 - 50)");
	struct store *s = store_open(path, 0, 1 << 20, 1 << 20);
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
	drop(path);
}

static void test_not_a_database(void **state)
{
	(void)state;
	char path[64];
	temp_path(path);
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	for (int i = 0; i < 200; i++)
		fputs("this is not a SQLite file, ", f);
	fclose(f);
	assert_null(store_open(path, 0, 1 << 20, 1 << 20));
	drop(path);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_label),         cmocka_unit_test(test_is_url),
		cmocka_unit_test(test_fresh),         cmocka_unit_test(test_before_versions),
		cmocka_unit_test(test_newer_refused), cmocka_unit_test(test_not_a_database),
		cmocka_unit_test(test_load_options),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
