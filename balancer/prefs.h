/* prefs.h — what each façade client chose with POST /sdapi/v1/options: its
 * default checkpoint, used for routing and checkpoint affinity when a later
 * txt2img names none (A1111 keeps one global setting; the marketplace keeps
 * one per client, so that one client's choice never changes another's
 * images). Held in memory, the read path: at most PREFS_MAX clients, each
 * forgotten PREFS_TTL_S after it was last set or used, the least recently
 * used first when full. options.c saves each choice in the store and
 * shares it with the other balancers of one database. Loop thread only
 * (no locks). */
#ifndef SDGATE_BALANCER_PREFS_H
#define SDGATE_BALANCER_PREFS_H

#include <stddef.h>

#define PREFS_MAX 4096          /* clients remembered */
#define PREFS_TTL_S (24 * 3600) /* seconds idle before a client's choice is forgotten */
#define PREFS_MAX_NAME 256      /* bytes of a checkpoint name (A1111_MAX_NAME) */

struct prefs;

struct prefs *prefs_new(void);
void prefs_free(struct prefs *p);
/* Sets client's default checkpoint (copied; "" forgets it). now: monotonic
 * seconds. 0, or -1 when out of memory or name is longer than PREFS_MAX_NAME. */
int prefs_set_checkpoint(struct prefs *p, const char *client, const char *name, double now);
/* client's default checkpoint, or NULL (none, or expired). Borrowed: valid
 * until the next prefs_* call. Refreshes its age. */
const char *prefs_checkpoint(struct prefs *p, const char *client, double now);
/* The same without counting a use: its age stays. */
const char *prefs_peek(const struct prefs *p, const char *client, double now);
/* How many clients are remembered (for tests and /metrics). */
size_t prefs_count(const struct prefs *p);

#endif
