/* options.c — the façade clients' options (POST /sdapi/v1/options: a
 * client's default checkpoint), the same on every balancer of one database
 * and kept across a restart. Memory stays the read path (prefs.h,
 * b->prefs): a txt2img never waits on the database. A change is set here
 * at once, saved (store.h, table client_options) and, on a shared database,
 * published as an "options" notice {client, checkpoint} in the row's own
 * transaction (store_save_options), so it goes out when the row is
 * committed. Every balancer applies every options notice, its own too:
 * notices arrive in commit order, so when two balancers take one client's
 * choices at once, each ends with the one saved last, as the row does (a
 * notice sent behind the save, in a later transaction, could overtake
 * another balancer's save and leave every balancer on a choice the row no
 * longer holds). At start the newest PREFS_MAX choices saved within
 * PREFS_TTL_S are loaded; older rows are deleted with the expired jobs.
 *
 * Notices are best effort: those published while this balancer's listener
 * was away are lost, so each time it (re)connects the rows are read again
 * (on the store's lane) and what differs is set. A choice set here or
 * notified while that read is on its way is newer than what it read: the
 * read leaves those clients alone.
 *
 * A choice's age in the database is since it was last saved (each POST
 * saves it), in memory since it was last set or used: a balancer that
 * restarts forgets a choice not posted again for PREFS_TTL_S even if it was
 * used meanwhile. Loop thread (loading: main thread, before the loop). */
#include "balancer.h"

#include "log.h"
#include "prefs.h"

#include <stdlib.h>
#include <string.h>

/* The read after a (re)connect: while one is on its way, the clients set
 * since it was asked for (an object used as a set, at most PREFS_MAX;
 * past that the read is dropped and asked for again), and whether the
 * listener reconnected again meanwhile (then it is asked for again). */
static struct {
	json_t *touched; /* NULL: no read on its way */
	int again;
} reread;

static void reread_start(struct balancer *b);

/* A saved row's checkpoint (its doc, options_set_checkpoint's), or NULL. */
static const char *checkpoint_of(const json_t *doc)
{
	const char *name = json_string_value(json_object_get(doc, "sd_model_checkpoint"));
	return name && *name ? name : NULL;
}

static void mark_touched(const char *client)
{
	if (reread.touched && json_object_size(reread.touched) < PREFS_MAX)
		json_object_set_new(reread.touched, client, json_true());
	else if (reread.touched)
		reread.again = 1;
}

int options_set_checkpoint(struct balancer *b, const char *client, const char *name)
{
	if (prefs_set_checkpoint(b->prefs, client, name, bal_now()) != 0)
		return -1;
	mark_touched(client);
	char *notice = notices_text(b, "options", json_pack("{s:s,s:s}", "client", client, "checkpoint", name));
	store_save_options(b->store, client, json_pack("{s:s}", "sd_model_checkpoint", name), notice);
	free(notice);
	return 0;
}

void options_on_notice(struct balancer *b, json_t *n)
{
	if (!n) {
		reread_start(b);
		return;
	}
	const char *client = json_string_value(json_object_get(n, "client"));
	const char *name = json_string_value(json_object_get(n, "checkpoint"));
	if (!client || !name || !*name)
		return;
	/* prefs refuses a client key or a name past its bounds. */
	if (prefs_set_checkpoint(b->prefs, client, name, bal_now()) != 0)
		log_warn("an options notice for client %.64s was not applied (too long, or out of memory)", client);
	else
		mark_touched(client);
}

static void reread_done(void *user, int r, json_t *rows)
{
	(void)r;
	struct balancer *b = user;
	int set = 0;
	for (size_t i = 0; !b->stopping && !reread.again && i < json_array_size(rows); i++) {
		json_t *row = json_array_get(rows, i);
		const char *client = json_string_value(json_object_get(row, "client"));
		const char *name = checkpoint_of(json_object_get(row, "doc"));
		if (!client || !name || json_object_get(reread.touched, client))
			continue;
		const char *mine = prefs_peek(b->prefs, client, bal_now());
		if (mine && !strcmp(mine, name))
			continue;
		prefs_set_checkpoint(b->prefs, client, name, bal_now());
		set++;
	}
	if (set)
		log_info("%d façade client(s)' options set from the database (notices may have been missed)", set);
	json_decref(reread.touched);
	reread.touched = NULL;
	if (reread.again && !b->stopping)
		reread_start(b);
}

static void reread_start(struct balancer *b)
{
	if (reread.touched) { /* one on its way read before this reconnect */
		reread.again = 1;
		return;
	}
	reread.touched = json_object();
	reread.again = 0;
	store_read_options(b->store, PREFS_MAX, PREFS_TTL_S, reread_done, b);
}

static void loaded(const char *client, json_t *doc, double age_s, void *user)
{
	struct balancer *b = user;
	const char *name = checkpoint_of(doc);
	if (name)
		prefs_set_checkpoint(b->prefs, client, name, bal_now() - (age_s > 0 ? age_s : 0));
}

void options_load(struct balancer *b)
{
	int n = store_load_options(b->store, PREFS_MAX, PREFS_TTL_S, loaded, b);
	if (n < 0)
		log_warn("cannot load the façade clients' options: each client's default checkpoint is "
			 "unknown here until it posts one again");
	else if (n > 0)
		log_info("%zu façade client(s)' options loaded", prefs_count(b->prefs));
}

void options_expire(struct balancer *b) { store_expire_options(b->store, PREFS_TTL_S, PREFS_MAX); }
