/* router.c — see router.h. */
#include "router.h"

#include "gpu_prior.h"

#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define TIE_ABS_S 1e-3
#define TIE_REL 0.02

double router_work(const struct router_work_in *w)
{
	double work = w->steps * w->calls_per_step * w->width * w->height * w->n_images;
	if (w->hr_steps > 0)
		work += w->hr_steps * w->hr_calls * w->hr_width * w->hr_height * w->n_images;
	return work;
}

double router_sampler_calls(const char *sampler)
{
	static const char *const TWO_CALLS[] = {"heun", "dpm2", "dpm++ 2s", "dpm++ sde", "restart"};
	if (!sampler)
		return 1;
	for (size_t i = 0; i < sizeof TWO_CALLS / sizeof TWO_CALLS[0]; i++)
		if (strncasecmp(sampler, TWO_CALLS[i], strlen(TWO_CALLS[i])) == 0)
			return 2;
	return 1;
}

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

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

double router_base_spp(const struct router_bk *bks, int nb, int skip)
{
	double v[64]; /* the first 64 measured: plenty for a median */
	int n = 0;
	for (int i = 0; i < nb && n < (int)(sizeof v / sizeof v[0]); i++)
		if (bks[i].spp > 0 && i != skip)
			v[n++] = bks[i].spp * gpu_prior(bks[i].gpu_class);
	if (n == 0)
		return GPU_PRIOR_BASE_SPP;
	qsort(v, (size_t)n, sizeof v[0], cmp_double);
	return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static double retry_s(const struct router_bk *k) { return k->retry_s > 0 ? k->retry_s : ROUTER_RETRY_S; }

double router_spp(const struct router_bk *k, double base)
{
	double prior = base / gpu_prior(k->gpu_class);
	if (k->idle_s < retry_s(k))
		return k->spp > 0 ? k->spp : prior;
	if (k->spp > 0)
		return fmin(k->spp, prior);
	return base / gpu_prior_best(); /* never tried: once as the fastest class there is */
}

double router_switch_s(const struct router_bk *k, const struct router_job *j)
{
	double t = 0;
	if (j->model && (!k->loaded_model || strcasecmp(k->loaded_model, j->model) != 0))
		t += ROUTER_SWITCH_PENALTY_S;
	/* A1111 swaps the refiner in during the job (and the base back after). */
	if (j->refiner && (!j->model || strcasecmp(j->refiner, j->model) != 0))
		t += ROUTER_SWITCH_PENALTY_S;
	return t;
}

double router_estimate(const struct router_bk *k, const struct router_job *j, double base)
{
	return router_spp(k, base) * j->work + router_switch_s(k, j);
}

double router_learn(double spp, long measured, double observed)
{
	if (!(observed > 0) || !isfinite(observed))
		return spp;
	if (spp <= 0 || measured <= 0)
		return observed;
	double clipped = fmin(fmax(observed, spp / ROUTER_LEARN_CLIP), spp * ROUTER_LEARN_CLIP);
	double alpha = fmax(ROUTER_LEARN_ALPHA, 1.0 / (double)(measured + 1));
	return (1 - alpha) * spp + alpha * clipped;
}

static int earliest_slot(const struct router_bk *k)
{
	int best = 0;
	for (int s = 1; s < k->slots; s++)
		if (k->free_in[s] < k->free_in[best])
			best = s;
	return best;
}

/* Within TIE_REL of each other, or abs (seconds: timer noise). */
static int tied(double a, double b, double abs) { return fabs(a - b) <= fmax(abs, TIE_REL * fmin(a, b)); }

/* One backend's offer for a job, and the rule that compares two. */
struct offer {
	int k, slot, free_now;
	double finish, cost, price;
};

static int better(const struct offer *o, const struct offer *best, enum router_prefer prefer)
{
	if (best->k < 0)
		return 1;
	if (prefer == ROUTER_PREFER_CHEAPEST && !tied(o->cost, best->cost, 0))
		return o->cost < best->cost;
	if (!tied(o->finish, best->finish, TIE_ABS_S))
		return o->finish < best->finish;
	if (o->free_now != best->free_now)
		return o->free_now > best->free_now;
	return o->price < best->price;
}

static int stale(const struct router_bk *k) { return k->spp > 0 && k->idle_s >= retry_s(k); }

void router_plan(struct router_bk *bks, int nb, const struct router_job *jobs, int nj, int *assign)
{
	double base = router_base_spp(bks, nb, -1);
	/* A stale backend is re-tried at the prior the others imply: its own
	 * slow measurement must not pull its prior down with it. */
	double *own = NULL;
	for (int k = 0; k < nb && !own; k++)
		if (stale(&bks[k]))
			own = malloc((size_t)nb * sizeof *own);
	for (int k = 0; own && k < nb; k++)
		own[k] = stale(&bks[k]) ? router_base_spp(bks, nb, k) : base;
	for (int i = 0; i < nj; i++) {
		const struct router_job *j = &jobs[i];
		struct offer best = {.k = -1};
		for (int k = 0; k < nb; k++) {
			if (!bks[k].usable || !router_eligible(&bks[k], j))
				continue;
			int s = earliest_slot(&bks[k]);
			double run = router_estimate(&bks[k], j, own ? own[k] : base);
			struct offer o = {.k = k,
					  .slot = s,
					  .free_now = bks[k].free_in[s] <= 0,
					  .finish = bks[k].free_in[s] + run,
					  .cost = bks[k].price * run / 3600.0,
					  .price = bks[k].price};
			if (better(&o, &best, j->prefer))
				best = o;
		}
		if (best.k < 0) {
			assign[i] = ROUTER_NONE;
			continue;
		}
		struct router_bk *k = &bks[best.k];
		assign[i] = best.free_now ? best.k : ROUTER_WAIT;
		k->free_in[best.slot] = fmax(best.finish, 1e-6); /* taken, even by a job of unknown length */
		k->idle_s = 0;                                   /* one re-try per plan, not one per slot */
	}
	free(own);
}
