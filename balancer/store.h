/* store.h — the balancer's database: jobs and registered backends, each
 * row a JSON document plus the columns that queries need, and the images of
 * finished jobs (one row each, never held in RAM). Two engines behind this
 * one interface: a SQLite file (WAL, mode 0600), or a PostgreSQL server when
 * --db is a postgresql:// URL (store_engine.h). Opening brings the schema to
 * this binary's version (versioned migrations, docs/operators.md). Loading
 * runs on the main thread before the loop starts; every read and write
 * afterwards runs on the store's own thread (a lane), in submission order,
 * so the loop never waits on the database, and an image read submitted
 * after the write that stored it always finds it. All SQL goes through
 * prepared statements.
 *
 * Kept images are bounded: in all (max_bytes) and per client
 * (max_bytes_per_client). Storing a result that would pass a bound first
 * drops the oldest kept results (the client's own for its bound, then
 * anyone's); a dropped result's job document stays.
 *
 * Durability: a write is acknowledged (its callback runs with ok = 1) only
 * once committed. SQLite: synchronous=NORMAL in WAL mode survives a process
 * crash (kill -9) with every committed write; a power loss may lose the
 * last ones. PostgreSQL: a commit is as durable as the server makes it
 * (with its defaults, fsync and synchronous_commit on, it survives a crash
 * of the balancer and of the server). A connection lost to PostgreSQL fails
 * the task that met it through its callback (logged once); the next task
 * reconnects. */
#ifndef SDGATE_STORE_H
#define SDGATE_STORE_H

#include "httpd.h"
#include "image.h"

#include <jansson.h>

struct store;

/* Opens db: a postgresql:// or postgres:// URL (libpq's), retried for
 * wait_s while the server does not answer; anything else is a SQLite file
 * (created if needed, private to the user). Then migrates the schema (a
 * database newer than this binary is refused). NULL with the reason logged.
 * The caps are in bytes of decoded images. */
struct store *store_open(const char *db, double wait_s, long long max_bytes, long long max_bytes_per_client);
/* 1 if db names a PostgreSQL server. */
int store_is_url(const char *db);
/* db as it may be logged, into out (size n): a URL's password (user:PASS@
 * or password=PASS) masked as ***. */
void store_db_label(const char *db, char *out, size_t n);
/* Starts the store's thread; call once the loop exists. */
int store_start(struct store *s, struct httpd *h);
/* Runs every pending task, then closes. */
void store_close(struct store *s);

/* Startup, main thread: deletes finished jobs (and their images) that
 * finished before `before`, and the oldest images past max_bytes, so that
 * nothing expired is ever loaded. */
void store_prune(struct store *s, double before);
/* Startup: calls fn for each stored job/backend document (borrowed), oldest
 * first; for jobs, has_images says whether any of its images are kept. The
 * documents hold no image bytes. */
int store_load_jobs(struct store *s, void (*fn)(json_t *doc, int has_images, void *user), void *user);
int store_load_backends(struct store *s, void (*fn)(json_t *doc, void *user), void *user);

/* The façade clients' options (POST /sdapi/v1/options; prefs.h), one row
 * per client, so that a restarted balancer, and every balancer on one
 * database, knows them. Save: client's doc (stolen), at the database's
 * time, in submission order with the other writes; on a shared database
 * with notice (NULL: none; copied) published in the row's own transaction,
 * so that the members get the notices of one client's rows in the order
 * the rows were written. Expire: deletes those saved more than max_age_s
 * ago, and all but the newest keep. Load (startup, main thread, as above):
 * the newest max saved within max_age_s, oldest first; fn gets each doc
 * (borrowed) and the seconds since it was saved. */
void store_save_options(struct store *s, const char *client, json_t *doc, const char *notice);
void store_expire_options(struct store *s, double max_age_s, int keep);
int store_load_options(struct store *s, int max, double max_age_s,
		       void (*fn)(const char *client, json_t *doc, double age_s, void *user), void *user);
/* The same rows read on the store's lane, once the loop runs: done (on the
 * loop thread; a store_rows_fn, below) gets r = 0 and rows [{client, doc,
 * age_s}] (borrowed; NULL when it failed). */
void store_read_options(struct store *s, int max, double max_age_s, void (*done)(void *user, int r, json_t *rows),
			void *user);

/* Writes. doc is stolen. done (may be NULL) runs on the loop thread with
 * ok = 1 once the row is committed, 0 if it failed. Every task below, given
 * a NULL store (closed at shutdown), fails at once through its callback. */
typedef void (*store_done_fn)(void *user, int ok);
void store_save_job(struct store *s, const char *id, const char *status, double finished, json_t *doc,
		    store_done_fn done, void *user);
void store_save_backend(struct store *s, const char *id, json_t *doc);
void store_delete_backend(struct store *s, const char *id);
/* Deletes finished jobs, and images, whose finish time (unix seconds) is
 * before `before`. */
void store_expire_jobs(struct store *s, double before);

/* A finished job's result, stored in one transaction: its images (checked
 * files, as answer.c decoded them), the evictions the caps ask for, and its
 * document with doc.result.images set to the images' metadata. */
struct store_result {
	const char *job_id, *client;
	double finished;           /* unix seconds */
	struct image_files images; /* stolen: each passed image_check */
	json_t *doc;               /* stolen: the job's document; doc.result must be its own object */
};
struct store_kept {
	int ok;          /* the images are stored (0: none is) */
	json_t *meta;    /* borrowed: [{type, bytes, width, height}] per image (all of them only when ok) */
	json_t *evicted; /* borrowed: ids of the jobs whose results were dropped (may include this
			    one, when it alone passes a bound) */
	/* ok = 0: the images handed in, which done may take (moving them out,
	 * leaving it empty) to try again; freed after done. */
	struct image_files *images;
};
typedef void (*store_kept_fn)(void *user, const struct store_kept *k);
void store_put_result(struct store *s, const struct store_result *r, store_kept_fn done, void *user);
/* An image file's metadata as a result's "images" lists it: {type, bytes,
 * width, height}. New reference. */
json_t *store_image_meta(const struct image_file *file);

/* Reads up to cap bytes of image n of job_id from offset into buf (which
 * must stay valid until done runs). done runs on the loop thread with
 * total = the image's size (-1: no such image kept) and len = bytes read. */
typedef void (*store_read_fn)(void *user, long long total, size_t len);
void store_read_image(struct store *s, const char *job_id, int n, long long offset, unsigned char *buf, size_t cap,
		      store_read_fn done, void *user);

/* Several balancers on one database (PostgreSQL; a SQLite file is one
 * balancer's). Each balancer is a member, alive while its heartbeat is
 * younger than dead_after_s by the database's clock. A job is owned by the
 * member that saved it first (or claimed it): a save by any other member
 * fails and changes nothing (fencing), so a balancer taken for dead cannot
 * overwrite what its successor does with its jobs. Idempotency-Keys are
 * unique per client across all members. */
int store_shared(const struct store *s);
/* Shared: the balancer's member id (its instance id), before any task. */
void store_set_member(struct store *s, const char *member);
/* What a shared database's task found, on the loop thread: r (store_beat
 * only: 1 alive, 0 its membership is gone, -1 failed) and rows (borrowed;
 * NULL when the database failed): [{"doc": job document, "flags":
 * STORE_JOB_IMAGES | STORE_JOB_OWNER_ALIVE}]. Every task below, on a store
 * that is not shared, fails at once (-1, NULL). */
#define STORE_JOB_IMAGES 1      /* the job has kept images */
#define STORE_JOB_OWNER_ALIVE 2 /* its owner is a live member */
typedef void (*store_rows_fn)(void *user, int r, json_t *rows);
/* The member's heartbeat (the first joins). */
void store_beat(struct store *s, store_rows_fn done, void *user);
/* Ends the memberships past dead_after_s and makes this member the owner
 * of up to max unfinished jobs that no live member owns (oldest first):
 * their documents. */
void store_claim_orphans(struct store *s, double dead_after_s, int max, store_rows_fn done, void *user);
/* A job by id, or by its client and Idempotency-Key: 0 or 1 rows. */
void store_find_job(struct store *s, const char *id, double dead_after_s, store_rows_fn done, void *user);
void store_find_idempotent(struct store *s, const char *client, const char *key, double dead_after_s,
			   store_rows_fn done, void *user);
/* Registrations are shared too: a heartbeat through any member is written
 * (touch), and each member reads every registered backend's document with
 * the milliseconds since its last heartbeat: [{"doc", "age_ms"}]. */
void store_touch_backend(struct store *s, const char *id);
void store_list_backends(struct store *s, store_rows_fn done, void *user);
/* A backend's slot, leased so that two balancers never send one slot a job
 * each; the backend is named by its base URL (the same on every balancer,
 * static or registered): r = 1 this member holds it now (it was free, its
 * holder dead, or this member's already), 0 another live member holds it,
 * -1 failed. Release gives it back (nothing if another member took it
 * since). */
void store_lease_slot(struct store *s, const char *backend, int slot, double dead_after_s, store_rows_fn done,
		      void *user);
void store_release_slot(struct store *s, const char *backend, int slot);

/* Notices between the members of a shared database (PostgreSQL's
 * LISTEN/NOTIFY, one channel per database). store_notify publishes payload
 * (text, at most STORE_NOTICE_MAX bytes; longer is dropped and logged) when
 * the batch it joins commits, so that a notice never arrives before a
 * write this member submitted before it. store_listen starts a thread with
 * a connection of its own: fn runs on the loop thread for every notice any
 * member publishes (this one's too), each member's in the order they
 * committed; and with NULL once the listener (re)connected, after which
 * notices published while it was away are lost: a member reads again what
 * it waits for. A lost connection is tried again every few seconds; notices
 * cost nothing while nobody publishes. Neither does anything on a store
 * that is not shared (store_listen returns -1). */
#define STORE_NOTICE_MAX 7900
void store_notify(struct store *s, const char *payload);
typedef void (*store_notice_fn)(void *user, const char *payload);
int store_listen(struct store *s, store_notice_fn fn, void *user);

/* Gauges, any thread: bytes of images kept, results dropped by the caps. */
long long store_results_bytes(const struct store *s);
long long store_results_evicted(const struct store *s);

#endif
