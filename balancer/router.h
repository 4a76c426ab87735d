/* router.h — which job goes to which backend: a pure function over a
 * snapshot, so that it can be unit-tested without processes.
 *
 * Policy (balancer/README.md "Routing"): jobs are taken in queue order; each
 * goes to the eligible backend (GPU class accepted, price within max_price,
 * checkpoints offered, not down) where the client's job finishes earliest,
 * where a busy backend counts from when its slot is expected to free up. If
 * that backend has a free slot now, the job is dispatched; otherwise the job
 * waits and reserves the slot's time, so later jobs plan around it (no
 * head-of-line blocking: a job that must wait never stops the ones behind it).
 * One exception to "earliest finish for this job" (router_plan_load): when
 * the job's earliest finish is on a busy backend and another eligible one is
 * idle, the planner looks ahead — it plans the jobs behind this one (up to
 * ROUTER_LOOKAHEAD_JOBS) and the arrivals expected at the measured rate
 * (router_rate) over twice the idle backend's run, both ways — and starts
 * the job on the idle backend now when that lowers the sum of everyone's
 * latency: the job that waits for the fast GPU delays each job that would
 * have had it next. With nobody behind and nobody arriving it is earliest
 * finish. (balancer/README.md "Routing" has the measured effect.)
 * Price decides only true ties (within 1 ms or 2 %: then a slot free now,
 * then the cheaper backend, then the one idle the longest, so that equal
 * providers share the work), unless the job asks for the cheapest
 * (ROUTER_PREFER_CHEAPEST): then the lowest expected cost of running it
 * (price per hour x expected seconds) wins, the earliest finish among ties.
 *
 * Speeds: a backend's expected seconds per unit of work (router_spp) is its
 * measured one once it ran a job (router_learn), before that its GPU class's
 * prior (gpu_prior.h) scaled by the backends already measured: if an A100
 * was measured at X, an H100 is assumed at X x prior(A100) / prior(H100)
 * seconds. A measured backend not given a job for retry_s (ROUTER_RETRY_S) counts at
 * the better of its measured and its prior speed, so that one that got
 * faster, or was measured on a bad day, or mislabelled, is tried again now
 * and then (at most one job per ROUTER_RETRY_S while it stays slow); one
 * never measured ROUTER_RETRY_S after the router first saw it counts once as
 * the fastest class there is (gpu_prior_best), so that a fast card labelled
 * as a slow one is found even in a pool that is never busy. */
#ifndef SDGATE_ROUTER_H
#define SDGATE_ROUTER_H

#define ROUTER_MAX_SLOTS 8
#define ROUTER_SWITCH_PENALTY_S 5.0 /* loading another checkpoint (A1111: seconds) */
#define ROUTER_RETRY_S 30.0         /* default of router_bk.retry_s (--retry-after-s) */
#define ROUTER_LEARN_ALPHA 0.3      /* EWMA weight of a new measurement, after the first ones */
#define ROUTER_LEARN_CLIP 3.0       /* a measurement counts at most 3x away from the estimate */
#define ROUTER_LOOKAHEAD_JOBS 64    /* jobs behind, and arrivals expected, a look-ahead plans */
#define ROUTER_LOOKAHEAD_WORK 5e4   /* backends a router_plan_load's look-aheads may visit in all */
#define ROUTER_RATE_TAU_S 5.0       /* router_rate's memory (seconds) */

enum router_prefer { ROUTER_PREFER_FASTEST = 0, ROUTER_PREFER_CHEAPEST = 1 };

struct router_bk {
	int usable; /* up and not down/probing */
	const char *gpu_class;
	double price;                     /* per hour */
	double spp;                       /* measured seconds per unit of work; 0 = not measured yet */
	double idle_s;                    /* seconds since it was last given a job, or first seen; 0 while busy */
	double retry_s;                   /* re-tried once idle_s reaches it (see the top); 0 = ROUTER_RETRY_S */
	int slots;                        /* 1..ROUTER_MAX_SLOTS */
	double free_in[ROUTER_MAX_SLOTS]; /* seconds until each slot is free; 0 = free now */
	const char *loaded_model;         /* may be NULL */
	/* Does it offer this checkpoint? (model is never NULL) */
	int (*offers)(const void *ctx, const char *model);
	/* Can it run what the job needs (router_job.need, never NULL)? NULL: yes. */
	int (*can_run)(const void *ctx, const void *need);
	const void *ctx;
};

struct router_job {
	const char *const *gpus; /* accepted classes; n_gpus 0 = any */
	int n_gpus;
	double max_price;            /* 0 = any */
	const char *model, *refiner; /* NULL = any */
	const void *need;            /* capabilities it needs (the caller's, see can_run); NULL = none */
	double work;                 /* router_work() */
	enum router_prefer prefer;
};

enum { ROUTER_WAIT = -1, ROUTER_NONE = -2 };

/* Units of work of a txt2img job: model calls x pixels, summed over its
 * passes. steps at width x height for n_images with calls_per_step model
 * calls a step (router_sampler_calls); a hires pass (hr_steps > 0) adds
 * hr_steps x hr_calls at hr_width x hr_height. */
struct router_work_in {
	double steps, width, height, n_images, calls_per_step;
	double hr_steps, hr_width, hr_height, hr_calls;
};
double router_work(const struct router_work_in *w);

/* Model calls a step of an A1111 sampler: 2 for the second-order ones
 * (Heun, DPM2, DPM2 a, DPM++ 2S a, DPM++ SDE, Restart), else 1; NULL = 1. */
double router_sampler_calls(const char *sampler);

/* 1 if backend k could serve job j at all (ignoring whether it is up). */
int router_eligible(const struct router_bk *k, const struct router_job *j);

/* Seconds per unit of work of a 1.0-prior GPU in this pool: the median over
 * the measured backends (but bks[skip]; -1 = none) of spp x prior,
 * GPU_PRIOR_BASE_SPP when none is. */
double router_base_spp(const struct router_bk *bks, int nb, int skip);

/* The seconds per unit of work the router expects of k (see the top). */
double router_spp(const struct router_bk *k, double base);

/* Seconds of checkpoint loading j needs on k (0 when none). */
double router_switch_s(const struct router_bk *k, const struct router_job *j);

/* Expected seconds for job j on backend k, once it starts. */
double router_estimate(const struct router_bk *k, const struct router_job *j, double base);

/* The new estimate after a job measured observed seconds per unit of work,
 * from spp (0 = none yet) and the number of jobs measured before: the first
 * one is taken as is, the next ones weigh 1/(n+1) down to ROUTER_LEARN_ALPHA,
 * each clipped to within ROUTER_LEARN_CLIP x of the estimate (one outlier
 * moves it at most ~60 %, a lasting change is followed within a few jobs). */
double router_learn(double spp, long measured, double observed);

/* For each job (in queue order) writes to assign[i] the index of the backend
 * to dispatch it to now, ROUTER_WAIT, or ROUTER_NONE (no usable backend is
 * eligible). Modifies bks[].free_in and idle_s as its plan goes. rate: jobs
 * arriving per second (router_rate_get), for the look-ahead (see the top). */
struct router_pick {
	int k, slot;     /* the backend and slot the plan gives the job; k -1: none */
	double start_in; /* seconds until it would start there (0: now) */
};
/* picks (NULL: not wanted) gets, for each job, where and when the plan puts
 * it: a waiting job's backend and slot, and how soon that slot frees. */
void router_plan_load(struct router_bk *bks, int nb, const struct router_job *jobs, int nj, double rate, int *assign,
		      struct router_pick *picks);
/* router_plan_load with no arrivals expected, no picks. */
void router_plan(struct router_bk *bks, int nb, const struct router_job *jobs, int nj, int *assign);

/* The arrival rate, an exponentially decaying count (memory ROUTER_RATE_TAU_S):
 * router_rate_add at each new job, router_rate_get for jobs per second. */
struct router_rate {
	double count, at;
};
void router_rate_add(struct router_rate *r, double now);
double router_rate_get(const struct router_rate *r, double now);

#endif
