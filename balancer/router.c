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
#define BASE_SAMPLE 64 /* router_base_spp: the first 64 measured, plenty for a median */

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
	if (j->need && k->can_run && !k->can_run(k->ctx, j->need))
		return 0;
	return 1;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

/* router_base_spp, each backend's class prior given (NULL: gpu_prior). */
static double base_spp(const struct router_bk *bks, int nb, int skip, const double *prior)
{
	double v[BASE_SAMPLE];
	int n = 0;
	for (int i = 0; i < nb && n < (int)(sizeof v / sizeof v[0]); i++)
		if (bks[i].spp > 0 && i != skip)
			v[n++] = bks[i].spp * (prior ? prior[i] : gpu_prior(bks[i].gpu_class));
	if (n == 0)
		return GPU_PRIOR_BASE_SPP;
	qsort(v, (size_t)n, sizeof v[0], cmp_double);
	return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

double router_base_spp(const struct router_bk *bks, int nb, int skip) { return base_spp(bks, nb, skip, NULL); }

/* prior[k] = gpu_prior(bks[k].gpu_class), one string match per class name
 * seen (a pool has a few classes and may have thousands of backends). */
static void read_priors(const struct router_bk *bks, int nb, double *prior)
{
	enum { SEEN = 16 };
	const char *cls[SEEN];
	double val[SEEN];
	int n = 0, next = 0;
	for (int k = 0; k < nb; k++) {
		const char *c = bks[k].gpu_class;
		int i = 0;
		while (i < n && !(c == cls[i] || (c && cls[i] && strcmp(c, cls[i]) == 0)))
			i++;
		if (i < n) {
			prior[k] = val[i];
			continue;
		}
		prior[k] = gpu_prior(c);
		i = n < SEEN ? n++ : next++ % SEEN; /* more classes than SEEN: replace in turn */
		cls[i] = c;
		val[i] = prior[k];
	}
}

static double retry_s(const struct router_bk *k) { return k->retry_s > 0 ? k->retry_s : ROUTER_RETRY_S; }

/* router_spp with k's class prior given (gpu_prior(k->gpu_class)): the
 * planner reads each backend's prior once per plan, not once per job. */
static double spp_at(const struct router_bk *k, double base, double class_prior)
{
	double prior = base / class_prior;
	if (k->idle_s < retry_s(k))
		return k->spp > 0 ? k->spp : prior;
	if (k->spp > 0)
		return fmin(k->spp, prior);
	return base / gpu_prior_best(); /* never tried: once as the fastest class there is */
}

double router_spp(const struct router_bk *k, double base) { return spp_at(k, base, gpu_prior(k->gpu_class)); }

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

/* The slot of n (times until each is free) that frees first. */
static int earliest_of(const double *free_in, int n)
{
	int best = 0;
	for (int s = 1; s < n; s++)
		if (free_in[s] < free_in[best])
			best = s;
	return best;
}

static int earliest_slot(const struct router_bk *k) { return earliest_of(k->free_in, k->slots); }

/* Within TIE_REL of each other, or abs (seconds: timer noise). */
static int tied(double a, double b, double abs) { return fabs(a - b) <= fmax(abs, TIE_REL * fmin(a, b)); }

/* One backend's offer for a job, and the rule that compares two. */
struct offer {
	int k, slot, free_now;
	double finish, cost, price, idle_s;
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
	if (o->price != best->price)
		return o->price < best->price;
	return o->idle_s > best->idle_s; /* equal providers share the work: the one idle the longest */
}

static int stale(const struct router_bk *k) { return k->spp > 0 && k->idle_s >= retry_s(k); }

/* The planner's view of the pool while it plans: the slots' times (a copy
 * of free_in that a look-ahead may change) and the speeds the plan uses. */
struct plan {
	struct router_bk *bks;
	int nb;
	const double *base;  /* per backend: the base spp its estimate uses */
	const double *prior; /* per backend: gpu_prior of its class (a string match: read once) */
};

/* router_estimate(&p->bks[k], j, p->base[k]), the prior read once a plan. */
static double run_s(const struct plan *p, int k, const struct router_job *j)
{
	const struct router_bk *v = &p->bks[k];
	return spp_at(v, p->base[k], p->prior[k]) * j->work + router_switch_s(v, j);
}

/* Where job j, arriving at `at` seconds from now, would finish earliest on
 * the slots `free` (nb x ROUTER_MAX_SLOTS); takes that slot and returns the
 * finish, or -1 when no usable backend is eligible. */
static double take_earliest(const struct plan *p, double *slots, const struct router_job *j, double at)
{
	int bk = -1, bs = 0;
	double bf = 0;
	for (int k = 0; k < p->nb; k++) {
		const struct router_bk *v = &p->bks[k];
		if (!v->usable || !router_eligible(v, j))
			continue;
		double *f = slots + (size_t)k * ROUTER_MAX_SLOTS;
		int s = earliest_of(f, v->slots);
		double finish = fmax(f[s], at) + run_s(p, k, j);
		if (bk < 0 || finish < bf) {
			bk = k;
			bs = s;
			bf = finish;
		}
	}
	if (bk < 0)
		return -1;
	slots[(size_t)bk * ROUTER_MAX_SLOTS + bs] = bf;
	return bf;
}

/* The sum of the latencies, from now, of the jobs behind jobs[i] in the
 * queue (at most ROUTER_LOOKAHEAD_JOBS) and of the arrivals expected over
 * the next `horizon` seconds (like jobs[i], at the measured rate), each
 * planned at its earliest finish on `slots`. */
static double lookahead(const struct plan *p, double *slots, const struct router_job *jobs, int i, int nj, double rate,
			double horizon)
{
	double sum = 0;
	for (int x = i + 1; x < nj && x <= i + ROUTER_LOOKAHEAD_JOBS; x++) {
		if (jobs[x].prefer != ROUTER_PREFER_FASTEST)
			continue;
		double f = take_earliest(p, slots, &jobs[x], 0);
		if (f >= 0)
			sum += f;
	}
	int expected = rate > 0 ? (int)fmin(rate * horizon, ROUTER_LOOKAHEAD_JOBS) : 0;
	for (int x = 1; x <= expected; x++) {
		double at = x / rate, f = take_earliest(p, slots, &jobs[i], at);
		if (f >= 0)
			sum += f - at;
	}
	return sum;
}

/* Should jobs[i], whose earliest finish is on a busy backend (`wait`),
 * start now on an idle one (`now`) instead? Yes when that lowers the sum of
 * the latencies of this job, the jobs behind it and the arrivals expected
 * while the idle backend would run it: waiting for the fast backend delays
 * everyone who would have had it next. */
static int start_now_instead(const struct plan *p, double *scratch, const struct router_job *jobs, int i, int nj,
			     double rate, int wait_k, int wait_slot, double wait_finish, int now_k, int now_slot,
			     double now_finish)
{
	size_t n = (size_t)p->nb * ROUTER_MAX_SLOTS;
	double *slots = scratch, *orig = scratch + n;
	for (int k = 0; k < p->nb; k++)
		memcpy(orig + (size_t)k * ROUTER_MAX_SLOTS, p->bks[k].free_in, sizeof p->bks[k].free_in);
	double horizon = 2 * now_finish;
	memcpy(slots, orig, n * sizeof *slots);
	slots[(size_t)wait_k * ROUTER_MAX_SLOTS + wait_slot] = wait_finish;
	double cost_wait = wait_finish + lookahead(p, slots, jobs, i, nj, rate, horizon);
	memcpy(slots, orig, n * sizeof *slots);
	slots[(size_t)now_k * ROUTER_MAX_SLOTS + now_slot] = now_finish;
	double cost_now = now_finish + lookahead(p, slots, jobs, i, nj, rate, horizon);
	return cost_now < cost_wait;
}

void router_plan(struct router_bk *bks, int nb, const struct router_job *jobs, int nj, int *assign)
{
	router_plan_load(bks, nb, jobs, nj, 0, assign, NULL);
}

void router_plan_load(struct router_bk *bks, int nb, const struct router_job *jobs, int nj, double rate, int *assign,
		      struct router_pick *picks)
{
	for (int i = 0; picks && i < nj; i++)
		picks[i] = (struct router_pick){.k = -1};
	/* A stale backend is re-tried at the prior the others imply: its own
	 * slow measurement must not pull its prior down with it. */
	double *base = malloc(2 * (size_t)nb * sizeof *base), *prior = base ? base + nb : NULL;
	double *scratch = malloc(2 * (size_t)nb * ROUTER_MAX_SLOTS * sizeof *scratch);
	if (!base) {
		for (int i = 0; i < nj; i++)
			assign[i] = ROUTER_WAIT; /* planned again at the next turn */
		free(scratch);
		return;
	}
	read_priors(bks, nb, prior);
	double b0 = base_spp(bks, nb, -1, prior);
	/* The median takes the first BASE_SAMPLE measured backends: leaving out
	 * one that comes after them changes nothing, so only the stale ones
	 * among them need their own (a pool of thousands may have thousands of
	 * stale backends, each a median of BASE_SAMPLE otherwise). */
	int sample_end = nb, measured = 0;
	for (int k = 0; k < nb; k++)
		if (bks[k].spp > 0 && ++measured == BASE_SAMPLE) {
			sample_end = k + 1;
			break;
		}
	for (int k = 0; k < nb; k++)
		base[k] = k < sample_end && stale(&bks[k]) ? base_spp(bks, nb, k, prior) : b0;
	struct plan p = {bks, nb, base, prior};
	double budget = ROUTER_LOOKAHEAD_WORK;
	for (int i = 0; i < nj; i++) {
		const struct router_job *j = &jobs[i];
		struct offer best = {.k = -1}, idle = {.k = -1};
		for (int k = 0; k < nb; k++) {
			if (!bks[k].usable || !router_eligible(&bks[k], j))
				continue;
			int s = earliest_slot(&bks[k]);
			double run = run_s(&p, k, j);
			struct offer o = {.k = k,
					  .slot = s,
					  .free_now = bks[k].free_in[s] <= 0,
					  .finish = bks[k].free_in[s] + run,
					  .cost = bks[k].price * run / 3600.0,
					  .price = bks[k].price,
					  .idle_s = bks[k].idle_s};
			if (better(&o, &best, j->prefer))
				best = o;
			if (o.free_now && better(&o, &idle, j->prefer))
				idle = o;
		}
		if (best.k < 0) {
			assign[i] = ROUTER_NONE;
			continue;
		}
		if (!best.free_now && idle.k >= 0 && j->prefer == ROUTER_PREFER_FASTEST && scratch) {
			/* backends visited by the look-ahead, both ways */
			double work = 2.0 * nb *
				      (fmin(nj - i - 1, ROUTER_LOOKAHEAD_JOBS) +
				       fmin(rate * 2 * idle.finish, ROUTER_LOOKAHEAD_JOBS));
			if (work <= budget) {
				budget -= work;
				if (start_now_instead(&p, scratch, jobs, i, nj, rate, best.k, best.slot, best.finish,
						      idle.k, idle.slot, idle.finish))
					best = idle;
			}
		}
		struct router_bk *k = &bks[best.k];
		assign[i] = best.free_now ? best.k : ROUTER_WAIT;
		if (picks)
			picks[i] = (struct router_pick){best.k, best.slot, fmax(k->free_in[best.slot], 0)};
		k->free_in[best.slot] = fmax(best.finish, 1e-6); /* taken, even by a job of unknown length */
		k->idle_s = 0;                                   /* one re-try per plan, not one per slot */
	}
	free(base);
	free(scratch);
}

void router_rate_add(struct router_rate *r, double now)
{
	r->count = router_rate_get(r, now) * ROUTER_RATE_TAU_S + 1;
	r->at = now;
}

double router_rate_get(const struct router_rate *r, double now)
{
	if (r->count <= 0)
		return 0;
	return r->count * exp(-fmax(now - r->at, 0) / ROUTER_RATE_TAU_S) / ROUTER_RATE_TAU_S;
}
