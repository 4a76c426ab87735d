/* cluster.c — several balancers on one shared database (store.h: a
 * PostgreSQL server; nothing here runs on a SQLite file).
 *
 * Each balancer is a member under its instance id. Every --lease-s / 4 it
 * beats (its row's heartbeat, by the database's clock), then claims the
 * unfinished jobs of members silent for --lease-s (ending their membership
 * first), up to 64 at a time, and queues them as jobs_load queues a
 * restarted balancer's: so a job whose balancer died is taken over within
 * lease + lease / 4 (+ the time the claimant's beat takes). A job that was
 * running there may run again here: that is the one case a backend runs a
 * job twice, and its client still sees one outcome, because every save is
 * fenced by owner (store.h): the dead one's late writes change nothing.
 *
 * A member that finds its membership gone (it was stopped or cut off
 * longer than the lease, and its jobs were taken) stops at once, exit code
 * 3, and its supervisor starts it again as a new member: it never goes on
 * with jobs that another balancer now runs.
 *
 * Registrations are shared the same way: after each claim the member reads
 * every registered backend's row, takes in those registered through
 * another balancer, lets go of those deregistered or expired elsewhere
 * (rows gone), and takes the freshest heartbeat, so that a provider may
 * register and beat through any balancer. Loop thread. */
#include "balancer.h"

#include "log.h"

#include <string.h>

#define CLAIM_MAX 64

static void on_backends(void *user, int r, json_t *rows)
{
	(void)r;
	struct balancer *b = user;
	b->beating = 0;
	if (!rows || b->stopping)
		return;
	double now = bal_now(), asked = b->next_beat - b->cfg.lease_s / 4;
	size_t i;
	json_t *row;
	json_t *ids = json_object(); /* the rows' backend ids (a hash table: one pass, not backends x rows) */
	json_array_foreach(rows, i, row)
	{
		const char *id = json_string_value(json_object_get(json_object_get(row, "doc"), "id"));
		if (id)
			json_object_set_new(ids, id, json_true());
	}
	/* Gone from the store: let go (first, so that a re-registration's new
	 * row, on the same URL, can come in below). */
	for (struct bk *k = b->backends, *next; k; k = next) {
		next = k->next;
		if (k->registered && k->added < asked && !json_object_get(ids, k->id)) /* not static, nor newer */
			registry_remove(b, k, "deregistered, or expired, through another balancer");
	}
	json_decref(ids);
	json_array_foreach(rows, i, row)
	{
		json_t *doc = json_object_get(row, "doc");
		const char *id = json_string_value(json_object_get(doc, "id"));
		struct bk *k = id ? registry_find(b, id) : NULL;
		if (!k && id && (k = registry_load_doc(b, doc)) != NULL)
			log_info("backend %s (%s): registered through another balancer", k->id, k->key);
		double beat = now - (double)json_integer_value(json_object_get(row, "age_ms")) / 1000.0;
		if (k && beat > k->last_heartbeat)
			k->last_heartbeat = beat;
	}
}

static void on_claimed(void *user, int r, json_t *rows)
{
	(void)r;
	struct balancer *b = user;
	size_t i, n = 0;
	json_t *row;
	json_array_foreach(rows, i, row)
	{
		json_t *doc = json_object_get(row, "doc");
		const char *id = json_string_value(json_object_get(doc, "id"));
		if (!id || jobs_find(b, id))
			continue;
		jobs_adopt(b, doc, 0);
		if (jobs_find(b, id)) {
			log_info("job %s: taken over from a balancer that stopped beating", id);
			n++;
		}
	}
	b->taken_over += (long)n;
	if (n)
		dispatch_schedule(b);
	store_list_backends(b->store, on_backends, b);
}

static void on_beat(void *user, int r, json_t *rows)
{
	(void)rows;
	struct balancer *b = user;
	if (r == 0 && !b->fenced) {
		b->fenced = 1;
		b->beating = 0;
		log_error("the other balancers ended this one's membership (no heartbeat for --lease-s %.1f s: stopped "
			  "or cut off) and took over its jobs; stopping (exit code 3) so that none runs twice",
			  b->cfg.lease_s);
		httpd_stop(b->httpd);
		return;
	}
	if (r < 0 || b->fenced || b->stopping) {
		b->beating = 0; /* the store logged why; the next tick tries again */
		return;
	}
	store_claim_orphans(b->store, b->cfg.lease_s, CLAIM_MAX, on_claimed, b);
}

void cluster_tick(struct balancer *b, double now)
{
	if (!store_shared(b->store) || b->beating || b->fenced || b->stopping || now < b->next_beat)
		return;
	b->next_beat = now + b->cfg.lease_s / 4;
	b->beating = 1;
	store_beat(b->store, on_beat, b);
}
