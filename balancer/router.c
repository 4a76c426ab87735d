/* router.c — see router.h. */
#include "router.h"

#include <math.h>
#include <stddef.h>
#include <string.h>
#include <strings.h>

int router_eligible(const struct router_bk *k, const struct router_job *j)
{
	if (j->n_gpus > 0) {
		int ok = 0;
		for (int i = 0; i < j->n_gpus && !ok; i++)
			ok = k->gpu_class && strcasecmp(j->gpus[i], k->gpu_class) == 0;
		if (!ok)
			return 0;
	}
	if (j->max_price > 0 && k->price > j->max_price)
		return 0;
	if (j->model && !(k->offers && k->offers(k->ctx, j->model)))
		return 0;
	if (j->refiner && !(k->offers && k->offers(k->ctx, j->refiner)))
		return 0;
	return 1;
}

double router_estimate(const struct router_bk *k, const struct router_job *j, double spp_default)
{
	double spp = k->spp > 0 ? k->spp : spp_default;
	double t = spp * j->work;
	if (j->model && (!k->loaded_model || strcasecmp(k->loaded_model, j->model) != 0))
		t += ROUTER_SWITCH_PENALTY_S;
	return t;
}

static int earliest_slot(const struct router_bk *k)
{
	int best = 0;
	for (int s = 1; s < k->slots; s++)
		if (k->free_in[s] < k->free_in[best])
			best = s;
	return best;
}

/* Unknown backends are assumed as fast as the fastest known one, so that a
 * new backend gets work and its speed is learned. */
static double default_spp(const struct router_bk *bks, int nb)
{
	double best = 0;
	for (int i = 0; i < nb; i++)
		if (bks[i].spp > 0 && (best == 0 || bks[i].spp < best))
			best = bks[i].spp;
	return best;
}

void router_plan(struct router_bk *bks, int nb, const struct router_job *jobs, int nj, int *assign)
{
	double spp0 = default_spp(bks, nb);
	for (int i = 0; i < nj; i++) {
		const struct router_job *j = &jobs[i];
		int best = -1, best_slot = 0, best_free = 0;
		double best_finish = INFINITY;
		for (int k = 0; k < nb; k++) {
			if (!bks[k].usable || !router_eligible(&bks[k], j))
				continue;
			int s = earliest_slot(&bks[k]);
			int free_now = bks[k].free_in[s] <= 0;
			double finish = bks[k].free_in[s] + router_estimate(&bks[k], j, spp0);
			/* Within 1 ms or 2% counts as a tie: then a free slot now
			 * wins, then the cheaper backend. */
			double margin = fmax(1e-3, 0.02 * fmin(finish, best_finish));
			int tie = best >= 0 && fabs(finish - best_finish) <= margin;
			int better = best < 0 || (!tie && finish < best_finish) || (tie && free_now > best_free) ||
				     (tie && free_now == best_free && bks[k].price < bks[best].price);
			if (better) {
				best = k;
				best_slot = s;
				best_free = free_now;
				best_finish = finish;
			}
		}
		if (best < 0) {
			assign[i] = ROUTER_NONE;
			continue;
		}
		struct router_bk *k = &bks[best];
		assign[i] = best_free ? best : ROUTER_WAIT;
		k->free_in[best_slot] = fmax(best_finish, 1e-6); /* taken, even by a job of unknown length */
	}
}
