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
 * with jobs that another balancer now runs. Loop thread. */
#include "balancer.h"

#include "log.h"

#define CLAIM_MAX 64

static void on_claimed(void *user, int r, json_t *rows)
{
	(void)r;
	struct balancer *b = user;
	b->beating = 0;
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
