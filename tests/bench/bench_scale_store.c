/* bench_scale_store.c — the store half of bench_scale: how many job state
 * writes a second the store sustains. Each job is three document writes of
 * about 1.5 KB (queued: an insert; running; done: updates), interleaved as on
 * a busy balancer (while one job is queued, earlier ones start and finish).
 *
 * Through the real store first (store.h: store_open, its lane thread on an
 * httpd loop, store_save_job acknowledged once committed) on a SQLite file
 * and, when SDGATE_BENCH_PG=postgresql://... is set, on PostgreSQL: 1 write
 * in flight (a light load: each its own transaction) and IN_FLIGHT (the lane
 * batches up to its BATCH_MAX a transaction). Then the same SQL directly,
 * without the lane and JSON: sqlite3 with the store's pragmas (WAL,
 * synchronous=NORMAL, wal_autocheckpoint=4000), jobs table, indexes and
 * upsert, in transactions of 1 and of BATCH_MAX writes; and libpq with
 * store_pg.c's jobs table (json doc, created from a sequence), prepared
 * upsert, one round trip a write, one transaction a batch, also with
 * --store-writers connections at once (balancers sharing one
 * database). Images (store_put_result) are not counted: only documents. */
#include "bench_scale.h"
#include "log.h"
#include "store.h"

#include <math.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

#define BATCH_MAX 64 /* store.c */
#define DOC_BYTES 1500
#define IN_FLIGHT 256 /* jobs between a job's queued write and its done write */

static const char LITE_SCHEMA[] = /* store.c's, for the jobs table */
	"PRAGMA journal_mode=WAL;"
	"PRAGMA synchronous=NORMAL;"
	"PRAGMA journal_size_limit=67108864;"
	"PRAGMA wal_autocheckpoint=4000;"
	"CREATE TABLE IF NOT EXISTS jobs (id TEXT PRIMARY KEY, status TEXT NOT NULL,"
	" finished REAL NOT NULL DEFAULT 0, created INTEGER NOT NULL, doc TEXT NOT NULL);"
	"CREATE INDEX IF NOT EXISTS jobs_finished ON jobs(status, finished);"
	"CREATE INDEX IF NOT EXISTS jobs_created ON jobs(created);";
static const char LITE_SAVE[] = /* store.c's Q_SAVE_JOB */
	"INSERT INTO jobs (id, status, doc, finished, created) VALUES (?, ?, ?, ?,"
	" (SELECT coalesce(max(created), 0) + 1 FROM jobs))"
	" ON CONFLICT(id) DO UPDATE SET status = excluded.status, doc = excluded.doc,"
	" finished = excluded.finished";

static double wall_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

/* The w-th write of a run of n jobs: which job, which state. Writes go in
 * rounds: job i queued, job i - IN_FLIGHT/2 running, job i - IN_FLIGHT done. */
struct write {
	long job;
	int state; /* 0 queued, 1 running, 2 done */
};
static int write_at(long w, long n, struct write *out)
{
	long round = w / 3;
	int state = (int)(w % 3);
	long job = round - (long)state * (IN_FLIGHT / 2);
	if (job < 0 || job >= n)
		return 0;
	out->job = job;
	out->state = state;
	return 1;
}

static const char *const STATES[] = {"queued", "running", "done"};

/* A job document of about DOC_BYTES: what jobs_doc keeps (ids, the request
 * with its prompt, times, placement). */
static int make_doc(char *buf, size_t cap, const char *prefix, long job, int state)
{
	char prompt[1101];
	for (int i = 0; i < 1100; i++)
		prompt[i] = "abcdefghij klmnopqrstu vwxyz, "[(job * 7 + i) % 30];
	prompt[1100] = '\0';
	return snprintf(buf, cap,
			"{\"id\":\"%s%016lx\",\"status\":\"%s\",\"client\":\"c%04ld\",\"created\":%ld,"
			"\"request\":{\"prompt\":\"%s\",\"negative_prompt\":\"blurry\",\"steps\":25,"
			"\"width\":512,\"height\":512,\"sampler_name\":\"Euler a\",\"cfg_scale\":7,\"seed\":%ld},"
			"\"placed\":%s,\"attempt\":%d}",
			prefix, job, STATES[state], job % 1000, job, prompt, job,
			state ? "{\"backend\":\"b0123456789abcdef\",\"provider\":\"p\",\"gpu\":\"a100\"}" : "null",
			state ? 1 : 0);
}

struct run_result {
	double seconds, writes, batch_p50, batch_p99;
	int ok;
};

static void summarize(struct run_result *r, double *lat, long nl, double t0, long writes)
{
	r->seconds = wall_now() - t0;
	r->writes = (double)writes;
	qsort(lat, (size_t)nl, sizeof *lat, cmp_double);
	r->batch_p50 = nl ? lat[nl / 2] : NAN;
	r->batch_p99 = nl ? lat[(long)ceil(0.99 * (double)nl) - 1] : NAN;
}

static void remove_db(const char *path)
{
	static const char *const SUFFIXES[] = {"", "-wal", "-shm"};
	for (size_t i = 0; i < sizeof SUFFIXES / sizeof SUFFIXES[0]; i++) {
		char p[600];
		snprintf(p, sizeof p, "%s%s", path, SUFFIXES[i]);
		unlink(p);
	}
}

static struct run_result sqlite_run(const char *dir, long jobs, int batch)
{
	struct run_result r = {0};
	char path[512];
	snprintf(path, sizeof path, "%s/bench_scale_%d.db", dir, batch);
	remove_db(path);
	sqlite3 *db = NULL;
	sqlite3_stmt *st = NULL;
	long total = 3 * jobs + 3 * IN_FLIGHT, nl = 0, done = 0;
	double *lat = calloc((size_t)(total / batch + 2), sizeof *lat);
	char *doc = malloc(DOC_BYTES * 2);
	if (!lat || !doc || sqlite3_open(path, &db) != SQLITE_OK ||
	    sqlite3_exec(db, LITE_SCHEMA, 0, 0, 0) != SQLITE_OK ||
	    sqlite3_prepare_v2(db, LITE_SAVE, -1, &st, NULL) != SQLITE_OK) {
		fprintf(stderr, "sqlite: %s\n", db ? sqlite3_errmsg(db) : "open failed");
		goto out;
	}
	sqlite3_busy_timeout(db, 5000);
	double t0 = wall_now();
	for (long w = 0; w < total;) {
		double b0 = wall_now();
		if (sqlite3_exec(db, "BEGIN IMMEDIATE", 0, 0, 0) != SQLITE_OK)
			goto fail;
		for (int n = 0; n < batch && w < total; w++) {
			struct write x;
			if (!write_at(w, jobs, &x))
				continue;
			char id[40];
			snprintf(id, sizeof id, "j%016lx", x.job);
			int len = make_doc(doc, DOC_BYTES * 2, "j", x.job, x.state);
			sqlite3_bind_text(st, 1, id, -1, SQLITE_TRANSIENT);
			sqlite3_bind_text(st, 2, STATES[x.state], -1, SQLITE_STATIC);
			sqlite3_bind_text(st, 3, doc, len, SQLITE_TRANSIENT);
			sqlite3_bind_double(st, 4, x.state == 2 ? 1.7e9 + (double)x.job : 0);
			if (sqlite3_step(st) != SQLITE_DONE)
				goto fail;
			sqlite3_reset(st);
			n++;
			done++;
		}
		if (sqlite3_exec(db, "COMMIT", 0, 0, 0) != SQLITE_OK)
			goto fail;
		lat[nl++] = wall_now() - b0;
	}
	summarize(&r, lat, nl, t0, done);
	r.ok = 1;
	goto out;
fail:
	fprintf(stderr, "sqlite: %s\n", sqlite3_errmsg(db));
out:
	sqlite3_finalize(st);
	sqlite3_close(db);
	remove_db(path);
	free(lat);
	free(doc);
	return r;
}

static const char PG_SCHEMA[] = "SET client_min_messages TO warning;"
				"CREATE TABLE IF NOT EXISTS bench_jobs (id text PRIMARY KEY, status text NOT NULL,"
				" finished double precision NOT NULL DEFAULT 0,"
				" created bigserial NOT NULL, doc json NOT NULL);" /* store_pg.c's: json */
				"CREATE INDEX IF NOT EXISTS bench_jobs_finished ON bench_jobs(status, finished);"
				"CREATE INDEX IF NOT EXISTS bench_jobs_created ON bench_jobs(created);"
				"TRUNCATE bench_jobs;";
static const char PG_SAVE[] = "INSERT INTO bench_jobs (id, status, doc, finished) VALUES ($1, $2, $3, $4)"
			      " ON CONFLICT (id) DO UPDATE SET status = excluded.status, doc = excluded.doc,"
			      " finished = excluded.finished";

struct pg_writer {
	const char *url;
	long jobs;
	int batch, index;
	struct run_result r;
	pthread_barrier_t *start;
};

static int pg_ok(PGconn *c, PGresult *res)
{
	ExecStatusType s = PQresultStatus(res);
	int ok = s == PGRES_COMMAND_OK || s == PGRES_TUPLES_OK;
	if (!ok)
		fprintf(stderr, "postgresql: %s", PQerrorMessage(c));
	PQclear(res);
	return ok;
}

static void *pg_write(void *arg)
{
	struct pg_writer *p = arg;
	PGconn *c = PQconnectdb(p->url);
	long total = 3 * p->jobs + 3 * IN_FLIGHT, nl = 0, done = 0;
	double *lat = calloc((size_t)(total / p->batch + 2), sizeof *lat);
	char *doc = malloc(DOC_BYTES * 2), prefix[8];
	snprintf(prefix, sizeof prefix, "w%d-", p->index);
	int ready = PQstatus(c) == CONNECTION_OK && lat && doc && pg_ok(c, PQprepare(c, "save", PG_SAVE, 4, NULL));
	if (!ready)
		fprintf(stderr, "postgresql: %s", PQerrorMessage(c));
	pthread_barrier_wait(p->start);
	if (!ready)
		goto out;
	double t0 = wall_now();
	for (long w = 0; w < total;) {
		double b0 = wall_now();
		if (!pg_ok(c, PQexec(c, "BEGIN")))
			goto out;
		for (int n = 0; n < p->batch && w < total; w++) {
			struct write x;
			if (!write_at(w, p->jobs, &x))
				continue;
			char id[48], fin[32];
			snprintf(id, sizeof id, "%s%016lx", prefix, x.job);
			snprintf(fin, sizeof fin, "%.1f", x.state == 2 ? 1.7e9 + (double)x.job : 0);
			make_doc(doc, DOC_BYTES * 2, prefix, x.job, x.state);
			const char *vals[4] = {id, STATES[x.state], doc, fin};
			if (!pg_ok(c, PQexecPrepared(c, "save", 4, vals, NULL, NULL, 0)))
				goto out;
			n++;
			done++;
		}
		if (!pg_ok(c, PQexec(c, "COMMIT")))
			goto out;
		lat[nl++] = wall_now() - b0;
	}
	summarize(&p->r, lat, nl, t0, done);
	p->r.ok = 1;
out:
	PQfinish(c);
	free(lat);
	free(doc);
	return NULL;
}

/* writers connections at once, each its own jobs; the rate is their sum over
 * the longest one's time. */
static struct run_result pg_run(const char *url, long jobs, int batch, int writers)
{
	struct run_result r = {0};
	PGconn *c = PQconnectdb(url);
	int ok = PQstatus(c) == CONNECTION_OK && pg_ok(c, PQexec(c, PG_SCHEMA));
	if (!ok)
		fprintf(stderr, "postgresql: %s", PQerrorMessage(c));
	PQfinish(c);
	if (!ok)
		return r;
	struct pg_writer *w = calloc((size_t)writers, sizeof *w);
	pthread_t *t = calloc((size_t)writers, sizeof *t);
	pthread_barrier_t start;
	pthread_barrier_init(&start, NULL, (unsigned)writers);
	for (int i = 0; i < writers; i++) {
		w[i] = (struct pg_writer){
			.url = url, .jobs = jobs / writers, .batch = batch, .index = i, .start = &start};
		pthread_create(&t[i], NULL, pg_write, &w[i]);
	}
	r.ok = 1;
	for (int i = 0; i < writers; i++) {
		pthread_join(t[i], NULL);
		r.ok &= w[i].r.ok;
		r.writes += w[i].r.writes;
		r.seconds = fmax(r.seconds, w[i].r.seconds);
		r.batch_p50 = fmax(r.batch_p50, w[i].r.batch_p50); /* the worst writer's */
		r.batch_p99 = fmax(r.batch_p99, w[i].r.batch_p99);
	}
	pthread_barrier_destroy(&start);
	free(w);
	free(t);
	return r;
}

/* Through the real store (store.h): store_open on a SQLite file or a
 * postgresql:// URL, its lane thread started on an httpd loop, job documents
 * (json_t) handed to store_save_job, each acknowledged on the loop once
 * committed. `in_flight` writes outstanding at most: 1 is a light load
 * (each write its own transaction), IN_FLIGHT lets the lane batch (up to
 * its BATCH_MAX a transaction). Latency: submitted -> acknowledged. */
struct api_run {
	struct store *st;
	struct httpd *h;
	long jobs, next_w, total_w, submitted, acked, failed;
	int in_flight;
	char prefix[16];
	double *lat;
};

struct api_write {
	struct api_run *run;
	double at;
};

static void api_submit(struct api_run *r);

static void api_ack(void *user, int ok)
{
	struct api_write *w = user;
	struct api_run *r = w->run;
	r->lat[r->acked++] = wall_now() - w->at;
	r->failed += !ok;
	free(w);
	if (r->acked == r->submitted && r->next_w >= r->total_w)
		httpd_stop(r->h);
	else
		api_submit(r);
}

static void api_submit(struct api_run *r)
{
	char doc[DOC_BYTES * 2], id[48];
	while (r->submitted - r->acked < r->in_flight && r->next_w < r->total_w) {
		struct write x;
		if (!write_at(r->next_w++, r->jobs, &x))
			continue;
		snprintf(id, sizeof id, "%s%016lx", r->prefix, x.job);
		make_doc(doc, sizeof doc, r->prefix, x.job, x.state);
		json_t *d = json_loads(doc, 0, NULL);
		struct api_write *w = malloc(sizeof *w);
		if (!d || !w) {
			fprintf(stderr, "bench_scale: out of memory\n");
			exit(1);
		}
		*w = (struct api_write){r, wall_now()};
		r->submitted++;
		store_save_job(r->st, id, STATES[x.state], x.state == 2 ? 1.7e9 + (double)x.job : 0, d, api_ack, w);
	}
}

static void api_tick(struct httpd *h)
{
	struct api_run *r = httpd_user(h);
	if (r->acked == r->submitted && r->next_w >= r->total_w)
		httpd_stop(h);
}

static struct run_result api_run_once(const char *db, long jobs, int in_flight)
{
	static int runs;
	struct run_result res = {0};
	struct api_run r = {.jobs = jobs, .total_w = 3 * jobs + 3 * IN_FLIGHT, .in_flight = in_flight};
	snprintf(r.prefix, sizeof r.prefix, "a%d-", runs++); /* every job a fresh row, run after run */
	r.lat = calloc((size_t)(3 * jobs + 1), sizeof *r.lat);
	struct httpd_config hc = {.host = "127.0.0.1", .port = 0, .max_body = 1024, .user = &r};
	r.h = httpd_new(&hc);
	r.st = r.h && r.lat ? store_open(db, 10, 1LL << 30, 1LL << 30) : NULL;
	if (!r.st || store_start(r.st, r.h) != 0) {
		fprintf(stderr, "bench_scale: the store did not open (%s)\n", db);
		goto out;
	}
	httpd_set_tick(r.h, api_tick);
	double t0 = wall_now();
	api_submit(&r);
	httpd_run(r.h);
	summarize(&res, r.lat, r.acked, t0, r.acked);
	res.ok = r.failed == 0 && r.acked == 3 * jobs;
out:
	if (r.st)
		store_close(r.st);
	if (r.h)
		httpd_free(r.h);
	free(r.lat);
	return res;
}

struct api_arg {
	const char *db;
	int sqlite;
};

static struct run_result api_fn(const void *arg, long jobs, int in_flight)
{
	const struct api_arg *a = arg;
	if (a->sqlite)
		remove_db(a->db);
	struct run_result r = api_run_once(a->db, jobs, in_flight);
	if (a->sqlite)
		remove_db(a->db);
	return r;
}

static void print_row(const char *store, int writers, int batch, long jobs, const struct run_result *r)
{
	if (!r->ok) {
		printf("| %s | %d | %d | %ld | failed | | | |\n", store, writers, batch, jobs);
		return;
	}
	double rate = r->writes / r->seconds;
	printf("| %s | %d | %d | %ld | %.0f | %.0f | %.2f / %.2f | %.1f |\n", store, writers, batch, jobs, rate,
	       rate / 3, r->batch_p50 * 1e3, r->batch_p99 * 1e3, r->seconds);
	fflush(stdout);
}

/* The run of median rate among `repeat` (the store's numbers on a shared
 * machine move by tens of percent from run to run). */
typedef struct run_result (*run_fn)(const void *arg, long jobs, int batch);
static struct run_result median_run(run_fn fn, const void *arg, long jobs, int batch, int repeat)
{
	struct run_result r[9] = {{0}};
	int n = repeat < 1 ? 1 : repeat > 9 ? 9 : repeat;
	for (int i = 0; i < n; i++) {
		r[i] = fn(arg, jobs, batch);
		if (!r[i].ok)
			return r[i];
	}
	for (int i = 1; i < n; i++) /* by writes/s, insertion sort */
		for (int x = i; x > 0 && r[x].writes / r[x].seconds < r[x - 1].writes / r[x - 1].seconds; x--) {
			struct run_result t = r[x];
			r[x] = r[x - 1];
			r[x - 1] = t;
		}
	return r[n / 2];
}

static struct run_result sqlite_fn(const void *dir, long jobs, int batch) { return sqlite_run(dir, jobs, batch); }

struct pg_arg {
	const char *url;
	int writers;
};
static struct run_result pg_fn(const void *arg, long jobs, int batch)
{
	const struct pg_arg *a = arg;
	return pg_run(a->url, jobs, batch, a->writers);
}

int bench_scale_store(int argc, char **argv, int quick)
{
	int repeat = quick ? 1 : 3;
	long jobs = quick ? 5000 : 20000;
	const char *dir = "/tmp";
	char writers_list[64] = "1,4";
	for (int i = 0; i < argc; i++) {
		if (!strcmp(argv[i], "--store-jobs") && i + 1 < argc)
			jobs = atol(argv[++i]);
		else if (!strcmp(argv[i], "--store-dir") && i + 1 < argc)
			dir = argv[++i];
		else if (!strcmp(argv[i], "--store-repeat") && i + 1 < argc)
			repeat = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--store-writers") && i + 1 < argc)
			snprintf(writers_list, sizeof writers_list, "%s", argv[++i]);
		else {
			fprintf(stderr, "bench_scale: unknown option %s (--help)\n", argv[i]);
			return 1;
		}
	}
	if (jobs < IN_FLIGHT)
		jobs = IN_FLIGHT;
	log_init("bench_scale", LOG_WARN); /* the store's own lines: warnings only */
	int rc = 0;
	printf("## Store: job state writes (3 per job, ~%d B documents), %ld jobs a run, median of %d runs\n\n",
	       DOC_BYTES, jobs, repeat);
	printf("| store | writers | writes a transaction (store.h: in flight) | jobs | writes/s | jobs/s (3 writes) |"
	       " transaction (store.h: write) p50 / p99 (ms) | seconds |\n");
	printf("|---|---:|---:|---:|---:|---:|---|---:|\n");
	int batches[2] = {1, BATCH_MAX}, in_flight[2] = {1, IN_FLIGHT};
	const char *url = getenv("SDGATE_BENCH_PG");
	char lite[600];
	snprintf(lite, sizeof lite, "%s/bench_scale_store.db", dir);
	const struct api_arg api[2] = {{lite, 1}, {url, 0}};
	for (int e = 0; e < (url && *url ? 2 : 1); e++)
		for (int b = 0; b < 2; b++) {
			long n = in_flight[b] == 1 ? jobs / 4 : jobs;
			struct run_result r = median_run(api_fn, &api[e], n, in_flight[b], repeat);
			print_row(e ? "store.h on PostgreSQL" : "store.h on SQLite", 1, in_flight[b], n, &r);
			rc |= !r.ok;
		}
	for (int b = 0; b < 2; b++) {
		/* one write a transaction is slow: fewer jobs */
		long n = batches[b] == 1 ? jobs / 4 : jobs;
		struct run_result r = median_run(sqlite_fn, dir, n, batches[b], repeat);
		print_row("SQLite (WAL, synchronous=NORMAL)", 1, batches[b], n, &r);
		rc |= !r.ok;
	}
	if (url && *url) {
		char *save = NULL;
		for (char *t = strtok_r(writers_list, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
			int writers = atoi(t);
			if (writers < 1 || writers > 64)
				continue;
			for (int b = 0; b < 2; b++) {
				long n = batches[b] == 1 ? jobs / 4 : jobs;
				struct pg_arg a = {url, writers};
				struct run_result r = median_run(pg_fn, &a, n, batches[b], repeat);
				print_row("PostgreSQL (libpq, json)", writers, batches[b], n, &r);
				rc |= !r.ok;
			}
		}
	}
	printf("\n");
	return rc;
}
