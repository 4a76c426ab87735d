/* router.h — which job goes to which backend: a pure function over a
 * snapshot, so that it can be unit-tested without processes.
 *
 * Policy (DESIGN.md "Routing rules"): jobs are taken in queue order; each
 * goes to the eligible backend (GPU class accepted, price within max_price,
 * checkpoints offered, not down) with the earliest expected finish, where a
 * busy backend counts from when its slot is expected to free up. If that
 * backend has a free slot now, the job is dispatched; otherwise the job waits
 * and reserves the slot's time, so later jobs plan around it (no
 * head-of-line blocking: a job that must wait never stops the ones behind it).
 * Ties go to the cheaper backend. */
#ifndef SDGATE_ROUTER_H
#define SDGATE_ROUTER_H

#define ROUTER_MAX_SLOTS 8
#define ROUTER_SWITCH_PENALTY_S 5.0 /* loading another checkpoint (A1111: seconds) */

struct router_bk {
	int usable; /* up and not down/probing */
	const char *gpu_class;
	double price;                     /* per hour */
	double spp;                       /* seconds per unit of work; 0 = not learned yet */
	int slots;                        /* 1..ROUTER_MAX_SLOTS */
	double free_in[ROUTER_MAX_SLOTS]; /* seconds until each slot is free; 0 = free now */
	const char *loaded_model;         /* may be NULL */
	/* Does it offer this checkpoint? (model is never NULL) */
	int (*offers)(const void *ctx, const char *model);
	const void *ctx;
};

struct router_job {
	const char *const *gpus; /* accepted classes; n_gpus 0 = any */
	int n_gpus;
	double max_price;            /* 0 = any */
	const char *model, *refiner; /* NULL = any */
	double work;                 /* steps x pixels x images */
};

enum { ROUTER_WAIT = -1, ROUTER_NONE = -2 };

/* 1 if backend k could serve job j at all (ignoring whether it is up). */
int router_eligible(const struct router_bk *k, const struct router_job *j);

/* Expected seconds for job j on backend k (spp_default when k's is unknown). */
double router_estimate(const struct router_bk *k, const struct router_job *j, double spp_default);

/* For each job (in queue order) writes to assign[i] the index of the backend
 * to dispatch it to now, ROUTER_WAIT, or ROUTER_NONE (no usable backend is
 * eligible). Modifies bks[].free_in as its plan goes. */
void router_plan(struct router_bk *bks, int nb, const struct router_job *jobs, int nj, int *assign);

#endif
