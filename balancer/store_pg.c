/* store_pg.c — the store's PostgreSQL engine (store_engine.h), over one
 * libpq connection, used by one thread at a time (store.c's lock).
 *
 * Connection: --db is a postgresql:// (or postgres://) URL that libpq reads;
 * defaults that the URL may override bound every wait (connect_timeout,
 * TCP keepalives, tcp_user_timeout), so a server that vanishes fails a
 * task, never hangs the store's thread. A server that does not answer at
 * start is tried again with backoff for wait_s. A connection lost later is
 * logged once; the task that met it fails, and the next task reconnects
 * (never in the middle of a transaction: a batch that lost its connection
 * fails as a whole, and store.c runs its tasks again one by one). Logs name
 * the server by its URL with the password masked (store_db_label).
 *
 * Statements are prepared once per connection (by name, again after a
 * reconnect), their parameters sent apart from the SQL. Images are bytea
 * stored without compression (STORAGE EXTERNAL: they are PNG/JPEG/WebP
 * already), so that substring() reads only the chunk asked for. */
#include "store_engine.h"

#include "log.h"
#include "store.h"

#include <arpa/inet.h>
#include <errno.h>
#include <libpq-fe.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define PG_RETRY_FIRST_S 0.25 /* backoff at start: 0.25 s, doubling ... */
#define PG_RETRY_MAX_S 4.0    /* ... up to 4 s between tries */
/* The migrations' lock (pg_advisory_lock): one key for sdgate-balancer. */
#define PG_MIGRATION_LOCK "7310293695874560001"
/* The notices' channel (store.h): one per database. */
#define PG_CHANNEL "sdgate"

enum stmt_kind {
	Q_SAVE_JOB,
	Q_SAVE_BACKEND,
	Q_DELETE_BACKEND,
	Q_EXPIRE_IMAGES,
	Q_EXPIRE_JOBS,
	Q_INSERT_IMAGE,
	Q_TOTAL_BYTES,
	Q_CLIENT_BYTES,
	Q_OLDEST,
	Q_OLDEST_OF_CLIENT,
	Q_DROP_IMAGES,
	Q_READ_IMAGE,
	Q_JOIN,
	Q_BEAT,
	Q_REAP,
	Q_CLAIM,
	Q_FIND_JOB,
	Q_FIND_IDEMPOTENT,
	Q_TOUCH_BACKEND,
	Q_LIST_BACKENDS,
	Q_LEASE_SLOT,
	Q_RELEASE_SLOT,
	Q_NOTIFY,
	Q_SAVE_OPTIONS,
	Q_EXPIRE_OPTIONS,
	Q_LOAD_OPTIONS,
	N_STMTS
};

/* A found job's STORE_ROW_* flags (parameter $N: dead_after_s). */
#define ROW_FLAGS(N)                                                                                                   \
	"(EXISTS (SELECT 1 FROM images i WHERE i.job_id = jobs.id))::int + 2 * (owner IS NOT NULL AND EXISTS"          \
	" (SELECT 1 FROM balancers m WHERE m.id = jobs.owner AND m.heartbeat_at >="                                    \
	" now() - make_interval(secs => $" N "::float8)))::int"

static const char *const SQL[N_STMTS] = {
	[Q_SAVE_JOB] = "INSERT INTO jobs (id, status, doc, finished, owner) VALUES ($1, $2, $3, $4, $5)"
		       " ON CONFLICT (id) DO UPDATE SET status = excluded.status, doc = excluded.doc,"
		       " finished = excluded.finished WHERE jobs.owner IS NOT DISTINCT FROM excluded.owner",
	[Q_SAVE_BACKEND] = "INSERT INTO backends (id, doc) VALUES ($1, $2)"
			   " ON CONFLICT (id) DO UPDATE SET doc = excluded.doc, saved = nextval('backends_saved'),"
			   " heartbeat_at = now()",
	[Q_DELETE_BACKEND] = "DELETE FROM backends WHERE id = $1",
	[Q_EXPIRE_IMAGES] = "WITH gone AS (DELETE FROM images WHERE finished < $1 RETURNING bytes)"
			    " SELECT coalesce(sum(bytes), 0)::bigint FROM gone",
	[Q_EXPIRE_JOBS] = "DELETE FROM jobs WHERE status IN ('done', 'failed', 'cancelled') AND finished < $1",
	[Q_INSERT_IMAGE] = "INSERT INTO images (job_id, n, mime, bytes, client, finished, data)"
			   " VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (job_id, n) DO UPDATE SET"
			   " mime = excluded.mime, bytes = excluded.bytes, client = excluded.client,"
			   " finished = excluded.finished, data = excluded.data",
	[Q_TOTAL_BYTES] = "SELECT coalesce(sum(bytes), 0)::bigint FROM images",
	[Q_CLIENT_BYTES] = "SELECT coalesce(sum(bytes), 0)::bigint FROM images WHERE client = $1",
	[Q_OLDEST] = "SELECT job_id FROM images ORDER BY finished, job_id LIMIT 1",
	[Q_OLDEST_OF_CLIENT] = "SELECT job_id FROM images WHERE client = $1 ORDER BY finished, job_id LIMIT 1",
	[Q_DROP_IMAGES] = "WITH gone AS (DELETE FROM images WHERE job_id = $1 RETURNING bytes)"
			  " SELECT coalesce(sum(bytes), 0)::bigint FROM gone",
	[Q_READ_IMAGE] = "SELECT octet_length(data), substring(data FROM $3 FOR $4) FROM images"
			 " WHERE job_id = $1 AND n = $2",
	[Q_JOIN] = "INSERT INTO balancers (id) VALUES ($1) ON CONFLICT (id) DO UPDATE SET heartbeat_at = now()",
	[Q_BEAT] = "UPDATE balancers SET heartbeat_at = now() WHERE id = $1",
	[Q_REAP] = "DELETE FROM balancers WHERE heartbeat_at < now() - make_interval(secs => $1::float8)",
	[Q_CLAIM] = "UPDATE jobs SET owner = $1 WHERE id IN (SELECT id FROM jobs j"
		    " WHERE status IN ('queued', 'running') AND (owner IS NULL OR NOT EXISTS"
		    " (SELECT 1 FROM balancers m WHERE m.id = j.owner)) ORDER BY created LIMIT $2"
		    " FOR UPDATE SKIP LOCKED) RETURNING doc, 0",
	[Q_FIND_JOB] = "SELECT doc, " ROW_FLAGS("2") " FROM jobs WHERE id = $1",
	[Q_FIND_IDEMPOTENT] = "SELECT doc, " ROW_FLAGS(
		"3") " FROM jobs"
		     " WHERE doc->>'client' = $1 AND doc->>'idempotency_key' = $2",
	[Q_TOUCH_BACKEND] = "UPDATE backends SET heartbeat_at = now() WHERE id = $1",
	[Q_LIST_BACKENDS] = "SELECT doc, least(extract(epoch FROM now() - heartbeat_at) * 1000, 2e9)::int"
			    " FROM backends ORDER BY saved",
	[Q_LEASE_SLOT] = "INSERT INTO slot_leases (backend, slot, holder) VALUES ($1, $2, $3)"
			 " ON CONFLICT (backend, slot) DO UPDATE SET holder = excluded.holder"
			 " WHERE slot_leases.holder IS NULL OR slot_leases.holder = excluded.holder OR NOT EXISTS"
			 " (SELECT 1 FROM balancers m WHERE m.id = slot_leases.holder AND m.heartbeat_at >="
			 " now() - make_interval(secs => $4::float8))",
	[Q_RELEASE_SLOT] = "UPDATE slot_leases SET holder = NULL WHERE backend = $1 AND slot = $2 AND holder = $3",
	[Q_NOTIFY] = "SELECT pg_notify('" PG_CHANNEL "', $1)",
	/* The notice ($3, NULL: none) in the row's statement: published at its commit. */
	[Q_SAVE_OPTIONS] = "WITH saved AS (INSERT INTO client_options (client, doc, updated_at) VALUES ($1, $2, now())"
			   " ON CONFLICT (client) DO UPDATE SET doc = excluded.doc, updated_at = excluded.updated_at"
			   " RETURNING 1) SELECT pg_notify('" PG_CHANNEL "', $3::text) FROM saved"
			   " WHERE $3::text IS NOT NULL",
	[Q_EXPIRE_OPTIONS] = "DELETE FROM client_options WHERE updated_at < now() - make_interval(secs => $1::float8)"
			     " OR client IN (SELECT client FROM client_options ORDER BY updated_at DESC, client"
			     " OFFSET $2::int)",
	[Q_LOAD_OPTIONS] = "SELECT json_build_object('client', client, 'doc', doc, 'age_s',"
			   " extract(epoch FROM now() - updated_at))::text, 0 FROM (SELECT client, doc, updated_at"
			   " FROM client_options WHERE updated_at >= now() - make_interval(secs => $2::float8)"
			   " ORDER BY updated_at DESC, client LIMIT $1::int) o ORDER BY updated_at, client",
};

/* Version 1. Later versions (active-active: a job's owner and lease,
 * shared Idempotency-Keys, an events table) are new entries, each its own
 * transaction. */
static const char *const MIGRATIONS[] = {
	"CREATE TABLE schema_migrations (version integer PRIMARY KEY,"
	" applied_at timestamptz NOT NULL DEFAULT now());"
	"CREATE SEQUENCE jobs_created;"
	"CREATE TABLE jobs (id text PRIMARY KEY, status text NOT NULL,"
	" finished double precision NOT NULL DEFAULT 0,"
	" created bigint NOT NULL DEFAULT nextval('jobs_created'), doc json NOT NULL);"
	"ALTER SEQUENCE jobs_created OWNED BY jobs.created;"
	"CREATE INDEX jobs_finished ON jobs (status, finished);"
	"CREATE INDEX jobs_by_created ON jobs (created);"
	"CREATE SEQUENCE backends_saved;"
	"CREATE TABLE backends (id text PRIMARY KEY, saved bigint NOT NULL DEFAULT nextval('backends_saved'),"
	" doc json NOT NULL);"
	"ALTER SEQUENCE backends_saved OWNED BY backends.saved;"
	"CREATE TABLE images (job_id text NOT NULL, n integer NOT NULL, mime text NOT NULL,"
	" bytes bigint NOT NULL, client text NOT NULL, finished double precision NOT NULL,"
	" data bytea NOT NULL, PRIMARY KEY (job_id, n));"
	"ALTER TABLE images ALTER COLUMN data SET STORAGE EXTERNAL;"
	"CREATE INDEX images_finished ON images (finished, job_id);"
	"CREATE INDEX images_client ON images (client, finished, job_id) INCLUDE (bytes);",
	/* 2: several balancers on one database (store.h). */
	"CREATE TABLE balancers (id text PRIMARY KEY, started_at timestamptz NOT NULL DEFAULT now(),"
	" heartbeat_at timestamptz NOT NULL DEFAULT now());"
	"ALTER TABLE jobs ADD COLUMN owner text;"
	"ALTER TABLE backends ADD COLUMN heartbeat_at timestamptz NOT NULL DEFAULT now();"
	"CREATE TABLE slot_leases (backend text NOT NULL, slot integer NOT NULL, holder text,"
	" PRIMARY KEY (backend, slot));"
	"CREATE INDEX jobs_unfinished ON jobs (created) WHERE status IN ('queued', 'running');"
	"CREATE UNIQUE INDEX jobs_idempotency ON jobs ((doc->>'client'), (doc->>'idempotency_key'))"
	" WHERE doc->>'idempotency_key' IS NOT NULL;",
	/* 3: the façade clients' options (store.h), one row per client. */
	"CREATE TABLE client_options (client text PRIMARY KEY, doc json NOT NULL,"
	" updated_at timestamptz NOT NULL DEFAULT now());"
	"CREATE INDEX client_options_updated ON client_options (updated_at);",
};

struct store_conn {
	PGconn *pg;
	char label[512];   /* the URL, password masked */
	unsigned prepared; /* bit k: stmt k is prepared on this connection */
	int in_tx;         /* a transaction was open when last seen */
	int lost;          /* the loss was logged */
};

/* libpq's message, first line only (the rest is hints over several lines). */
#define FIRST_LINE(m) (int)strcspn((m), "\n"), (m)

/* After a failed call: a lost connection is logged once, any other error
 * each time. */
static void failed(struct store_conn *c, const char *what)
{
	if (PQstatus(c->pg) == CONNECTION_BAD) {
		if (!c->lost)
			log_error("db %s: connection lost (%.*s); the next task reconnects", c->label,
				  FIRST_LINE(PQerrorMessage(c->pg)));
		c->lost = 1;
		return;
	}
	log_error("db: %.200s: %.*s", what, FIRST_LINE(PQerrorMessage(c->pg)));
}

/* The connection, reconnected if it was lost and no transaction was open
 * on it; 0 when unusable. */
static int usable(struct store_conn *c)
{
	if (PQstatus(c->pg) == CONNECTION_OK)
		return 1;
	if (c->in_tx)
		return 0;
	PQreset(c->pg);
	if (PQstatus(c->pg) != CONNECTION_OK)
		return 0;
	log_info("db %s: reconnected", c->label);
	c->prepared = 0;
	c->lost = 0;
	return 1;
}

static int result_ok(PGresult *r)
{
	ExecStatusType st = PQresultStatus(r);
	return st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
}

static int pg_exec(struct store_conn *c, const char *sql)
{
	int ends = strcmp(sql, "COMMIT") == 0 || strcmp(sql, "ROLLBACK") == 0;
	if (strcmp(sql, "ROLLBACK") == 0 && !c->in_tx)
		return 1; /* a failed COMMIT ended it already */
	if (!usable(c)) {
		if (ends)
			c->in_tx = 0;
		return 0;
	}
	PGresult *r = PQexec(c->pg, sql);
	/* A COMMIT of a transaction that had failed answers "ROLLBACK". */
	int ok = result_ok(r) && !(strcmp(sql, "COMMIT") == 0 && strcmp(PQcmdStatus(r), "ROLLBACK") == 0);
	if (!ok)
		failed(c, sql);
	PQclear(r);
	if (ends) {
		c->in_tx = 0;
	} else if (PQstatus(c->pg) == CONNECTION_OK) {
		PGTransactionStatusType ts = PQtransactionStatus(c->pg);
		c->in_tx = ts == PQTRANS_INTRANS || ts == PQTRANS_INERROR;
	} /* lost: what was known stays, so that no reconnect lands inside it */
	return ok;
}

/* Runs statement k with n text parameters (binary where lens[i] > 0);
 * the result (caller clears), NULL on failure (logged). */
static PGresult *run(struct store_conn *c, enum stmt_kind k, int n, const char *const *vals, const int *lens,
		     int binary_result)
{
	if (!usable(c))
		return NULL;
	char name[16];
	snprintf(name, sizeof name, "sdgate_%d", (int)k);
	if (!(c->prepared & (1u << k))) {
		PGresult *p = PQprepare(c->pg, name, SQL[k], 0, NULL);
		int ok = result_ok(p);
		PQclear(p);
		if (!ok) {
			failed(c, SQL[k]);
			return NULL;
		}
		c->prepared |= 1u << k;
	}
	int fmts[8] = {0};
	for (int i = 0; lens && i < n; i++)
		fmts[i] = lens[i] > 0;
	PGresult *r = PQexecPrepared(c->pg, name, n, vals, lens, fmts, binary_result);
	if (!result_ok(r)) {
		failed(c, SQL[k]);
		PQclear(r);
		return NULL;
	}
	return r;
}

static int run_ok(struct store_conn *c, enum stmt_kind k, int n, const char *const *vals)
{
	PGresult *r = run(c, k, n, vals, NULL, 0);
	PQclear(r);
	return r != NULL;
}

/* The first row's first column as an integer; -1 if it failed. */
static long long run_int(struct store_conn *c, enum stmt_kind k, int n, const char *const *vals)
{
	PGresult *r = run(c, k, n, vals, NULL, 0);
	long long v = r && PQntuples(r) > 0 && !PQgetisnull(r, 0, 0) ? strtoll(PQgetvalue(r, 0, 0), NULL, 10) : -1;
	PQclear(r);
	return v;
}

static long long query_int(struct store_conn *c, const char *sql)
{
	if (!usable(c))
		return -1;
	PGresult *r = PQexec(c->pg, sql);
	long long v = -1;
	if (result_ok(r) && PQntuples(r) > 0 && !PQgetisnull(r, 0, 0))
		v = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
	else
		failed(c, sql);
	PQclear(r);
	return v;
}

static void pg_close(struct store_conn *c)
{
	if (!c)
		return;
	PQfinish(c->pg);
	free(c);
}

static int pg_version(struct store_conn *c)
{
	long long has = query_int(c, "SELECT (to_regclass('schema_migrations') IS NOT NULL)::int");
	if (has <= 0)
		return (int)has;
	return (int)query_int(c, "SELECT coalesce(max(version), 0) FROM schema_migrations");
}

static int pg_lock(struct store_conn *c)
{
	return pg_exec(c, "SET lock_timeout = 0") &&
	       query_int(c, "SELECT 1 FROM pg_advisory_lock(" PG_MIGRATION_LOCK ")") == 1;
}

static void pg_unlock(struct store_conn *c)
{
	query_int(c, "SELECT pg_advisory_unlock(" PG_MIGRATION_LOCK ")::int");
	pg_exec(c, "RESET lock_timeout");
}

static void real_text(double v, char out[32]) { snprintf(out, 32, "%.17g", v); }

/* Rows a statement touched; -1 if it failed. */
static long long run_count(struct store_conn *c, enum stmt_kind k, int n, const char *const *vals)
{
	PGresult *r = run(c, k, n, vals, NULL, 0);
	long long v = r ? strtoll(PQcmdTuples(r), NULL, 10) : -1;
	PQclear(r);
	return v;
}

static int pg_save_job(struct store_conn *c, const char *id, const char *status, double finished, const char *doc,
		       const char *owner)
{
	char f[32];
	real_text(finished, f);
	const char *v[] = {id, status, doc, f, owner};
	long long n = run_count(c, Q_SAVE_JOB, 5, v);
	if (n == 0)
		log_warn("db: job %s is owned by another balancer now: not saved", id);
	return n == 1;
}

static int pg_beat(struct store_conn *c, const char *member, int first)
{
	const char *v[] = {member};
	long long n = run_count(c, first ? Q_JOIN : Q_BEAT, 1, v);
	return n < 0 ? -1 : n > 0;
}

/* Each row of statement k (doc, flags) to row; the count, -1 on failure. */
static int run_rows(struct store_conn *c, enum stmt_kind k, int n, const char *const *vals, store_row_fn row,
		    void *user)
{
	PGresult *r = run(c, k, n, vals, NULL, 0);
	if (!r)
		return -1;
	int rows = PQntuples(r);
	for (int i = 0; i < rows; i++)
		row(PQgetvalue(r, i, 0), atoi(PQgetvalue(r, i, 1)), user);
	PQclear(r);
	return rows;
}

static int pg_claim(struct store_conn *c, const char *member, double dead_after_s, int max, store_row_fn row,
		    void *user)
{
	char dead[32], lim[16];
	real_text(dead_after_s, dead);
	snprintf(lim, sizeof lim, "%d", max);
	const char *reap[] = {dead};
	const char *v[] = {member, lim};
	if (run_count(c, Q_REAP, 1, reap) < 0)
		return -1;
	return run_rows(c, Q_CLAIM, 2, v, row, user);
}

static int pg_find_job(struct store_conn *c, const char *id, double dead_after_s, store_row_fn row, void *user)
{
	char dead[32];
	real_text(dead_after_s, dead);
	const char *v[] = {id, dead};
	return run_rows(c, Q_FIND_JOB, 2, v, row, user);
}

static int pg_touch_backend(struct store_conn *c, const char *id)
{
	const char *v[] = {id};
	return run_count(c, Q_TOUCH_BACKEND, 1, v) >= 0;
}

static int pg_list_backends(struct store_conn *c, store_row_fn row, void *user)
{
	return run_rows(c, Q_LIST_BACKENDS, 0, NULL, row, user);
}

static int pg_slot(struct store_conn *c, int lease, const char *backend, int slot, const char *member,
		   double dead_after_s)
{
	char n[16], dead[32];
	snprintf(n, sizeof n, "%d", slot);
	real_text(dead_after_s, dead);
	const char *v[] = {backend, n, member, dead};
	long long rows = run_count(c, lease ? Q_LEASE_SLOT : Q_RELEASE_SLOT, lease ? 4 : 3, v);
	return rows < 0 ? -1 : rows > 0;
}

static int pg_find_idempotent(struct store_conn *c, const char *client, const char *key, double dead_after_s,
			      store_row_fn row, void *user)
{
	char dead[32];
	real_text(dead_after_s, dead);
	const char *v[] = {client, key, dead};
	return run_rows(c, Q_FIND_IDEMPOTENT, 3, v, row, user);
}

static int pg_save_backend(struct store_conn *c, const char *id, const char *doc)
{
	const char *v[] = {id, doc};
	return run_ok(c, Q_SAVE_BACKEND, 2, v);
}

static int pg_delete_backend(struct store_conn *c, const char *id)
{
	const char *v[] = {id};
	return run_ok(c, Q_DELETE_BACKEND, 1, v);
}

static long long pg_expire(struct store_conn *c, double before)
{
	char b[32];
	real_text(before, b);
	const char *v[] = {b};
	long long gone = run_int(c, Q_EXPIRE_IMAGES, 1, v);
	return gone >= 0 && run_ok(c, Q_EXPIRE_JOBS, 1, v) ? gone : -1;
}

static long long pg_total_bytes(struct store_conn *c) { return run_int(c, Q_TOTAL_BYTES, 0, NULL); }

static long long pg_client_bytes(struct store_conn *c, const char *client)
{
	const char *v[] = {client};
	return run_int(c, Q_CLIENT_BYTES, 1, v);
}

static int pg_oldest(struct store_conn *c, const char *client, char id[STORE_ID_MAX])
{
	const char *v[] = {client};
	PGresult *r = client ? run(c, Q_OLDEST_OF_CLIENT, 1, v, NULL, 0) : run(c, Q_OLDEST, 0, NULL, NULL, 0);
	if (!r)
		return -1;
	int found = PQntuples(r) > 0;
	if (found)
		snprintf(id, STORE_ID_MAX, "%s", PQgetvalue(r, 0, 0));
	PQclear(r);
	return found;
}

static long long pg_drop_images(struct store_conn *c, const char *job_id)
{
	const char *v[] = {job_id};
	return run_int(c, Q_DROP_IMAGES, 1, v);
}

static int pg_insert_image(struct store_conn *c, const struct store_image_row *r)
{
	if (r->len > (size_t)INT32_MAX)
		return 0;
	char n[16], bytes[24], finished[32];
	snprintf(n, sizeof n, "%d", r->n);
	snprintf(bytes, sizeof bytes, "%zu", r->len);
	real_text(r->finished, finished);
	const char *v[] = {r->job_id, n, r->mime, bytes, r->client, finished, (const char *)r->data};
	const int lens[] = {0, 0, 0, 0, 0, 0, (int)r->len};
	PGresult *res = run(c, Q_INSERT_IMAGE, 7, v, lens, 0);
	PQclear(res);
	return res != NULL;
}

static long long pg_read_image(struct store_conn *c, const char *job_id, int n, long long offset, unsigned char *buf,
			       size_t cap, size_t *len)
{
	*len = 0;
	if (offset < 0 || offset >= INT32_MAX || cap > (size_t)INT32_MAX)
		return -1;
	char num[16], from[24], count[24];
	snprintf(num, sizeof num, "%d", n);
	snprintf(from, sizeof from, "%lld", offset + 1); /* substring() counts from 1 */
	snprintf(count, sizeof count, "%zu", cap);
	const char *v[] = {job_id, num, from, count};
	PGresult *r = run(c, Q_READ_IMAGE, 4, v, NULL, 1);
	if (!r)
		return -1;
	long long total = -1;
	if (PQntuples(r) > 0 && PQgetlength(r, 0, 0) == 4) {
		uint32_t be;
		memcpy(&be, PQgetvalue(r, 0, 0), 4);
		total = ntohl(be);
		size_t got = (size_t)PQgetlength(r, 0, 1);
		if (got <= cap) {
			memcpy(buf, PQgetvalue(r, 0, 1), got);
			*len = got;
		}
	}
	PQclear(r);
	return total;
}

/* Streams the rows of sql (single-row mode: the result set is never held
 * whole); the number of rows, -1 on failure. */
static int load(struct store_conn *c, const char *sql, store_row_fn row, void *user)
{
	if (!usable(c))
		return -1;
	if (!PQsendQuery(c->pg, sql) || !PQsetSingleRowMode(c->pg)) {
		failed(c, sql);
		return -1;
	}
	int n = 0, ok = 1;
	PGresult *r;
	while ((r = PQgetResult(c->pg)) != NULL) {
		ExecStatusType st = PQresultStatus(r);
		if (st == PGRES_SINGLE_TUPLE) {
			row(PQgetvalue(r, 0, 0), PQgetvalue(r, 0, 1)[0] == 't', user);
			n++;
		} else if (st != PGRES_TUPLES_OK) {
			ok = 0;
			failed(c, sql);
		}
		PQclear(r);
	}
	return ok ? n : -1;
}

static int pg_load_jobs(struct store_conn *c, store_row_fn row, void *user)
{
	return load(c,
		    "SELECT doc, EXISTS (SELECT 1 FROM images WHERE images.job_id = jobs.id) FROM jobs"
		    " ORDER BY created",
		    row, user);
}

static int pg_load_backends(struct store_conn *c, store_row_fn row, void *user)
{
	return load(c, "SELECT doc, false FROM backends ORDER BY saved", row, user);
}

static int pg_save_options(struct store_conn *c, const char *client, const char *doc, const char *notice)
{
	const char *v[] = {client, doc, notice};
	return run_ok(c, Q_SAVE_OPTIONS, 3, v);
}

static int pg_expire_options(struct store_conn *c, double max_age_s, int keep)
{
	char age[32], k[16];
	real_text(max_age_s, age);
	snprintf(k, sizeof k, "%d", keep);
	const char *v[] = {age, k};
	return run_ok(c, Q_EXPIRE_OPTIONS, 2, v);
}

static int pg_load_options(struct store_conn *c, int max, double max_age_s, store_row_fn row, void *user)
{
	char m[16], age[32];
	snprintf(m, sizeof m, "%d", max);
	real_text(max_age_s, age);
	const char *v[] = {m, age};
	return run_rows(c, Q_LOAD_OPTIONS, 2, v, row, user);
}

static int pg_notify(struct store_conn *c, const char *payload)
{
	const char *v[] = {payload};
	return run_ok(c, Q_NOTIFY, 1, v);
}

static PGconn *connect_once(const char *url);
static void on_notice(void *arg, const char *message);

/* The listener: a connection of its own, LISTENing, read when its socket
 * is; a dead server is found by the keepalives (CONNECT_DEFAULTS). */
struct store_listener {
	struct store_conn c; /* its label, for on_notice */
};

static void pg_listen_close(struct store_listener *l)
{
	if (!l)
		return;
	PQfinish(l->c.pg);
	free(l);
}

static struct store_listener *pg_listen_open(const char *db, int log_failure)
{
	struct store_listener *l = calloc(1, sizeof *l);
	if (!l)
		return NULL;
	store_db_label(db, l->c.label, sizeof l->c.label);
	l->c.pg = connect_once(db);
	PGresult *r = NULL;
	if (l->c.pg && PQstatus(l->c.pg) == CONNECTION_OK) {
		PQsetNoticeProcessor(l->c.pg, on_notice, &l->c);
		r = PQexec(l->c.pg, "LISTEN " PG_CHANNEL);
	}
	if (!result_ok(r)) {
		if (log_failure)
			log_error("db %s: cannot listen for the other balancers' notices (%.*s); trying again",
				  l->c.label, FIRST_LINE(l->c.pg ? PQerrorMessage(l->c.pg) : "out of memory"));
		PQclear(r);
		pg_listen_close(l);
		return NULL;
	}
	PQclear(r);
	log_info("db %s: listening for the other balancers' notices", l->c.label);
	return l;
}

static int pg_listen_wait(struct store_listener *l, int stop_fd, int timeout_ms,
			  void (*fn)(const char *payload, void *user), void *user)
{
	struct pollfd p[2] = {{PQsocket(l->c.pg), POLLIN, 0}, {stop_fd, POLLIN, 0}};
	int n = poll(p, 2, timeout_ms);
	if (n < 0 && errno != EINTR)
		return -1;
	if (n > 0 && p[1].revents)
		return 0;
	if (n > 0 && p[0].revents && !PQconsumeInput(l->c.pg)) {
		log_error("db %s: the notices' connection was lost (%.*s); reconnecting", l->c.label,
			  FIRST_LINE(PQerrorMessage(l->c.pg)));
		return -1;
	}
	PGnotify *note;
	while ((note = PQnotifies(l->c.pg)) != NULL) {
		fn(note->extra, user);
		PQfreemem(note);
	}
	return 1;
}

static const struct store_engine PG_ENGINE = {
	.name = "postgresql",
	.migrations = MIGRATIONS,
	.n_migrations = (int)(sizeof MIGRATIONS / sizeof MIGRATIONS[0]),
	.close = pg_close,
	.exec = pg_exec,
	.begin_sql = "BEGIN",
	.version = pg_version,
	.lock = pg_lock,
	.unlock = pg_unlock,
	.save_job = pg_save_job,
	.save_backend = pg_save_backend,
	.delete_backend = pg_delete_backend,
	.expire = pg_expire,
	.total_bytes = pg_total_bytes,
	.client_bytes = pg_client_bytes,
	.oldest = pg_oldest,
	.drop_images = pg_drop_images,
	.insert_image = pg_insert_image,
	.read_image = pg_read_image,
	.load_jobs = pg_load_jobs,
	.load_backends = pg_load_backends,
	.save_options = pg_save_options,
	.expire_options = pg_expire_options,
	.load_options = pg_load_options,
	.beat = pg_beat,
	.claim = pg_claim,
	.find_job = pg_find_job,
	.find_idempotent = pg_find_idempotent,
	.touch_backend = pg_touch_backend,
	.list_backends = pg_list_backends,
	.slot = pg_slot,
	.notify = pg_notify,
	.listen_open = pg_listen_open,
	.listen_wait = pg_listen_wait,
	.listen_close = pg_listen_close,
};

static void on_notice(void *arg, const char *message)
{
	const struct store_conn *c = arg;
	log_warn("db %s: %.*s", c->label, FIRST_LINE(message));
}

static double mono_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Defaults before the URL's own settings, which win (expand_dbname);
 * options, in every session, a reconnected one too: no notices (CREATE ...
 * IF NOT EXISTS and the like); a session left idle inside a transaction for
 * 1 s is ended by the server (a balancer frozen or cut off mid-batch must
 * not hold its row locks: the others' takeover and heartbeats would wait
 * on them), and no statement waits for a lock more than 2 s (it fails, and
 * its task with it; the migrations' lock waits as long as it takes). */
static const char *const CONNECT_KEYS[] = {"connect_timeout",  "keepalives",
					   "keepalives_idle",  "keepalives_interval",
					   "keepalives_count", "tcp_user_timeout",
					   "application_name", "options",
					   "dbname",           NULL};
#define CONNECT_DEFAULTS                                                                                        \
	"10", "1", "30", "10", "3", "60000", "sdgate-balancer",                                                  \
	"-c client_min_messages=warning -c idle_in_transaction_session_timeout=1000 -c lock_timeout=2000"

static PGconn *connect_once(const char *url)
{
	const char *const vals[] = {CONNECT_DEFAULTS, url, NULL};
	return PQconnectdbParams(CONNECT_KEYS, vals, 1);
}

/* 1 if the server does not answer (down, starting, stopping): worth
 * waiting for; 0 if it answers (then it refused us: password, database) or
 * the URL itself is wrong. */
static int server_down(const char *url)
{
	const char *const vals[] = {CONNECT_DEFAULTS, url, NULL};
	PGPing p = PQpingParams(CONNECT_KEYS, vals, 1);
	return p == PQPING_NO_RESPONSE || p == PQPING_REJECT;
}

struct store_conn *store_pg_open(const char *url, double wait_s, const struct store_engine **engine)
{
	struct store_conn *c = calloc(1, sizeof *c);
	if (!c)
		return NULL;
	store_db_label(url, c->label, sizeof c->label);
	double deadline = mono_now() + wait_s, pause = PG_RETRY_FIRST_S;
	for (int tries = 1;; tries++) {
		c->pg = connect_once(url);
		if (c->pg && PQstatus(c->pg) == CONNECTION_OK)
			break;
		/* A server that answers but refuses us (password, database) will
		 * not change its mind: only one that is down is waited for. */
		int down = server_down(url);
		if (!down || mono_now() + pause > deadline) {
			log_error("db %s: cannot connect%s (%d tries): %.*s", c->label,
				  down ? " within --db-wait-s" : "", tries,
				  FIRST_LINE(c->pg ? PQerrorMessage(c->pg) : "out of memory"));
			pg_close(c);
			return NULL;
		}
		if (tries == 1)
			log_warn("db %s: not answering (%.*s); trying again for up to %.0f s", c->label,
				 FIRST_LINE(PQerrorMessage(c->pg)), wait_s);
		PQfinish(c->pg);
		c->pg = NULL;
		struct timespec ts = {(time_t)pause, (long)((pause - (double)(time_t)pause) * 1e9)};
		nanosleep(&ts, NULL);
		pause = pause * 2 < PG_RETRY_MAX_S ? pause * 2 : PG_RETRY_MAX_S;
	}
	/* The server's warnings go to the log, not raw to stderr; notices
	 * (CREATE ... IF NOT EXISTS and the like) are not asked for. */
	PQsetNoticeProcessor(c->pg, on_notice, c);
	*engine = &PG_ENGINE;
	return c;
}
