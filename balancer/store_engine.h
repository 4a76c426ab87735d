/* store_engine.h — internal to the store: what store.c (the lane, the
 * batches, the caps and their eviction, the migrations' order, the
 * documents) asks of a database engine. Two engines implement it:
 * store_sqlite.c (a file) and store_pg.c (a PostgreSQL server, libpq).
 *
 * An engine's connection is used by one thread at a time: store.c holds its
 * lock around every call (the main thread while loading, the store's thread
 * for a batch). Every call that can fail logs why (once per lost
 * connection, not once per task) and returns 0 or -1; store.c decides. The
 * SQL lives only in the engine files; the rules (what a result, an expiry
 * or an eviction does, in which transaction) only in store.c. */
#ifndef SDGATE_STORE_ENGINE_H
#define SDGATE_STORE_ENGINE_H

#include <stddef.h>

#define STORE_ID_MAX 80 /* bytes of a job id, with its NUL */

struct store_conn;     /* an engine's connection and statements */
struct store_listener; /* a connection that waits for notices */

/* A loaded row: its document's text (borrowed) and, for a job, whether any
 * of its images are kept (0 for a backend). */
typedef void (*store_row_fn)(const char *doc, int has_images, void *user);

/* One image row of a result. */
struct store_image_row {
	const char *job_id, *mime, *client;
	int n;
	double finished;
	const unsigned char *data;
	size_t len;
};

struct store_engine {
	const char *name; /* "sqlite", "postgresql" */
	/* Migrations, in order: migrations[i] takes the schema from version i
	 * to i + 1. Each runs in one transaction with its row in
	 * schema_migrations. Never edit a shipped one: append. */
	const char *const *migrations;
	int n_migrations;

	void (*close)(struct store_conn *c);
	/* SQL without parameters or rows (several statements allowed); 1 if
	 * it ran (a COMMIT that the server turned into a rollback did not). */
	int (*exec)(struct store_conn *c, const char *sql);
	const char *begin_sql; /* a write transaction */

	/* Migrations: the schema's version (0: empty database; -1: error),
	 * and a lock held across them so that balancers starting together on
	 * one database do not race (NULL: none needed). */
	int (*version)(struct store_conn *c);
	int (*lock)(struct store_conn *c);
	void (*unlock)(struct store_conn *c);
	/* Once migrated, before anything is read (may be NULL). */
	int (*ready)(struct store_conn *c);

	/* Rows. 1 (or the value) if done, 0 / -1 if it failed. save_job's
	 * owner (a shared database's member, else NULL) fences: a job saved
	 * by another owner since is left alone, and that is a failure (0). */
	int (*save_job)(struct store_conn *c, const char *id, const char *status, double finished, const char *doc,
			const char *owner);
	int (*save_backend)(struct store_conn *c, const char *id, const char *doc);
	int (*delete_backend)(struct store_conn *c, const char *id);
	/* Deletes finished jobs and the images finished before `before`;
	 * the images' bytes, -1 on failure. */
	long long (*expire)(struct store_conn *c, double before);
	long long (*total_bytes)(struct store_conn *c);
	long long (*client_bytes)(struct store_conn *c, const char *client);
	/* The job whose kept images are the oldest (of client, when not
	 * NULL) into id: 1, 0 when none is kept, -1 on failure. */
	int (*oldest)(struct store_conn *c, const char *client, char id[STORE_ID_MAX]);
	/* Deletes a job's images: their bytes, -1 on failure. */
	long long (*drop_images)(struct store_conn *c, const char *job_id);
	int (*insert_image)(struct store_conn *c, const struct store_image_row *r);
	/* Up to cap bytes of image n of job_id from offset into buf: the
	 * image's size (-1: not kept, or failed), *len = bytes read. */
	long long (*read_image)(struct store_conn *c, const char *job_id, int n, long long offset, unsigned char *buf,
				size_t cap, size_t *len);
	/* Each job's document (oldest first, with whether it has kept
	 * images), each backend's (in the order they were last saved):
	 * the number of rows, -1 on failure. */
	int (*load_jobs)(struct store_conn *c, store_row_fn row, void *user);
	int (*load_backends)(struct store_conn *c, store_row_fn row, void *user);

	/* The façade clients' options (store.h): saves client's doc, its time
	 * the database's clock, and publishes notice (when not NULL; a shared
	 * database's) in the same statement; deletes those saved more than max_age_s ago
	 * and all but the newest keep; the newest max saved within max_age_s,
	 * oldest first, each row the JSON text {"client", "doc", "age_s"}
	 * (seconds since saved). 1 (or the number of rows), 0 / -1 on failure. */
	int (*save_options)(struct store_conn *c, const char *client, const char *doc, const char *notice);
	int (*expire_options)(struct store_conn *c, double max_age_s, int keep);
	int (*load_options)(struct store_conn *c, int max, double max_age_s, store_row_fn row, void *user);

	/* A database several balancers share (store.h "Several balancers");
	 * all NULL on an engine that is one balancer's. A member is alive
	 * while its heartbeat is younger than dead_after_s, by the database's
	 * clock. Rows found give store.h's STORE_JOB_* flags. */
	/* The member's heartbeat (first: it joins): 1, 0 when its membership
	 * is gone (the others took it for dead), -1 on failure. */
	int (*beat)(struct store_conn *c, const char *member, int first);
	/* Ends the memberships past dead_after_s, then makes member the owner
	 * of up to max unfinished jobs that no live member owns (oldest
	 * first, rows another claimant holds skipped): each claimed job's row,
	 * then the count; -1 on failure. */
	int (*claim)(struct store_conn *c, const char *member, double dead_after_s, int max, store_row_fn row,
		     void *user);
	/* A job by id, or by (client, Idempotency-Key): its row (0 or 1). */
	int (*find_job)(struct store_conn *c, const char *id, double dead_after_s, store_row_fn row, void *user);
	int (*find_idempotent)(struct store_conn *c, const char *client, const char *key, double dead_after_s,
			       store_row_fn row, void *user);
	/* A registered backend's heartbeat; every backend's row, given the
	 * milliseconds since its last heartbeat (through any member). */
	int (*touch_backend)(struct store_conn *c, const char *id);
	int (*list_backends)(struct store_conn *c, store_row_fn row, void *user);
	/* lease 1: member takes a backend's slot if nobody live holds it
	 * (1, 0 when another live member does); lease 0: gives it back. -1 on
	 * failure. */
	int (*slot)(struct store_conn *c, int lease, const char *backend, int slot, const char *member,
		    double dead_after_s);
	/* Notices (store.h): publishes payload when the transaction commits
	 * (at once outside one): 1, 0 on failure. */
	int (*notify)(struct store_conn *c, const char *payload);
	/* A connection of its own that listens for notices: NULL on failure
	 * (logged only when log_failure). Wait runs fn for each notice that
	 * came, waiting up to timeout_ms for one: 1, 0 when stop_fd became
	 * readable, -1 when the connection was lost (logged). */
	struct store_listener *(*listen_open)(const char *db, int log_failure);
	int (*listen_wait)(struct store_listener *l, int stop_fd, int timeout_ms,
			   void (*fn)(const char *payload, void *user), void *user);
	void (*listen_close)(struct store_listener *l);
};

/* Open: the engine and its connection, NULL with the reason logged. */
struct store_conn *store_sqlite_open(const char *path, const struct store_engine **engine);
/* wait_s: how long a server that refuses connections is retried. */
struct store_conn *store_pg_open(const char *url, double wait_s, const struct store_engine **engine);

#endif
