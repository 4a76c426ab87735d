/* store.h — the balancer's SQLite file (WAL): jobs and registered backends,
 * each row a JSON document plus the columns that queries need. Loading runs
 * on the main thread before the loop starts; every write afterwards runs on
 * the store's own thread (a lane), in submission order, so the loop never
 * waits on the disk. All SQL goes through prepared statements.
 *
 * Durability: synchronous=NORMAL in WAL mode survives a process crash
 * (kill -9) with every committed write; a power loss may lose the last ones. */
#ifndef SDGATE_STORE_H
#define SDGATE_STORE_H

#include "httpd.h"

#include <jansson.h>

struct store;

/* Opens (creating if needed) the file; NULL with the reason logged. */
struct store *store_open(const char *path);
/* Starts the writer thread; call once the loop exists. */
int store_start(struct store *s, struct httpd *h);
/* Runs every pending write, then closes. */
void store_close(struct store *s);

/* Startup: calls fn for each stored job/backend document (borrowed), oldest first. */
int store_load_jobs(struct store *s, void (*fn)(json_t *doc, void *user), void *user);
int store_load_backends(struct store *s, void (*fn)(json_t *doc, void *user), void *user);

/* Writes. doc is stolen. done (may be NULL) runs on the loop thread with
 * ok = 1 once the row is committed, 0 if it failed. */
typedef void (*store_done_fn)(void *user, int ok);
void store_save_job(struct store *s, const char *id, const char *status, double finished, json_t *doc,
		    store_done_fn done, void *user);
void store_save_backend(struct store *s, const char *id, json_t *doc);
void store_delete_backend(struct store *s, const char *id);
/* Deletes finished jobs whose finish time (unix seconds) is before `before`. */
void store_expire_jobs(struct store *s, double before);

#endif
