/* bench_scale — the scale simulation (issue 13): the real router (router.c,
 * gpu_prior.c) deciding for N simulated backends under Poisson arrivals of R
 * jobs/s, in virtual time, beside a least-loaded pick (NGINX least_conn's
 * rule) over the same pool and the same arrivals. Prints markdown tables;
 * not a test. The store's write rate is the other half (bench_scale_store.c).
 *
 * The balancer is one loop on one core, so the simulation is coupled to the
 * router's real cost: each scheduling turn is timed (thread CPU time) and the
 * virtual clock moves on by that time, so that arrivals and completions that
 * come meanwhile wait for the next turn, as they would on the h2o loop. One
 * turn mirrors dispatch_schedule (balancer/dispatch.c): the views of every
 * backend (fill_view, fill_free_in: a busy slot's time left from the
 * estimate, plus a job sent behind it), router_base_spp, router_plan_load over
 * the whole queue with the measured arrival rate, then the starts, including
 * a job sent behind a busy slot that frees within --prefetch-ms. A turn runs
 * when something changed (an arrival, a finish) or every 20 ms while jobs
 * queue, as dispatch_tick does. Not simulated: HTTP, JSON, the store, progress
 * polls (a busy slot's time left comes from the estimate, never the pace),
 * failures; backends have 1 slot; the queue holds --max-queue jobs (the
 * balancer's default 1000; an arrival past it is refused, as with 429).
 * Measured: the jobs that arrive within the window, and the turns in it.
 *
 * Usage: bench_scale [router|snapshot|store|all] [--quick] [--backends 100,1000,10000]
 *        [--rates 100,1000,5000] [--seconds 10] [--seed 1] (and see --help) */
#include "bench_scale.h"
#include "gpu_prior.h"
#include "router.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define SCHEDULE_EVERY_S 0.02 /* dispatch.c */
#define DRAIN_MAX_S 60.0
#define MAX_LIST 8
#define N_MODELS 4

/* The pool: GPU classes in these shares (a marketplace of cloud and
 * consumer cards), each backend's true speed its class's prior x a
 * log-normal factor (sigma BK_SIGMA), each job's x another (JOB_SIGMA). */
static const struct {
	const char *cls;
	double share, price;
} CLASSES[] = {
	{"h100", 0.10, 2.49},    {"a100", 0.15, 1.29},    {"l40s", 0.10, 0.99},
	{"rtx4090", 0.25, 0.69}, {"rtx3090", 0.25, 0.39}, {"t4", 0.10, 0.20},
};
#define N_CLASSES (sizeof CLASSES / sizeof CLASSES[0])
#define BK_SIGMA 0.15
#define JOB_SIGMA 0.05
static const char *const MODELS[N_MODELS] = {"sd15", "sdxl", "flux", "pony"};

struct rng {
	uint64_t s;
};

static uint64_t rng_next(struct rng *r)
{
	uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}
static double rng_unit(struct rng *r) { return ((double)(rng_next(r) >> 11) + 0.5) / 9007199254740992.0; }
static double rng_exp(struct rng *r, double rate) { return -log(rng_unit(r)) / rate; }
static double rng_lognormal(struct rng *r, double sigma)
{
	double z = sqrt(-2 * log(rng_unit(r))) * cos(2 * M_PI * rng_unit(r));
	return exp(sigma * z - 0.5 * sigma * sigma);
}

struct sim_job {
	double arrive, work, started, sent, switch_s, true_noise;
	const char *model;
	const char *gpus[2];
	int n_gpus;
	double max_price;
	enum router_prefer prefer;
	struct sim_job *next; /* the balancer's queue, or a backend's FIFO (reference) */
	int in_window;
};

struct sim_bk {
	const char *cls;
	double price, true_spp;
	unsigned models; /* bit m: offers MODELS[m] */
	double spp;      /* the router's estimate, as struct bk */
	long samples;
	double last_used;
	const char *loaded_model;
	struct sim_job *job, *behind;     /* running; sent behind it */
	struct sim_job *fifo, *fifo_tail; /* reference: jobs queued on the backend */
	int running;                      /* jobs on it (reference: with its FIFO) */
	double end_at;                    /* when the running job ends */
	int heap_at;                      /* index in the completion heap, -1 = none */
};

struct cfg {
	int quick, seed, max_queue;
	int free_router; /* --free-router: decisions cost no virtual time (the router's ideal) */
	double cheapest; /* --cheapest: the share of jobs that prefer the cheapest backend */
	double seconds, warmup, tail, prefetch_s;
	int backends[MAX_LIST], n_backends;
	double rates[MAX_LIST];
	int n_rates;
};

/* Completion times of busy backends: a binary min-heap of indices. */
struct heap {
	int *v, n;
	struct sim_bk *bks;
};

static int heap_less(const struct heap *h, int a, int b) { return h->bks[h->v[a]].end_at < h->bks[h->v[b]].end_at; }
static void heap_swap(struct heap *h, int a, int b)
{
	int t = h->v[a];
	h->v[a] = h->v[b];
	h->v[b] = t;
	h->bks[h->v[a]].heap_at = a;
	h->bks[h->v[b]].heap_at = b;
}
static void heap_push(struct heap *h, int k)
{
	int i = h->n++;
	h->v[i] = k;
	h->bks[k].heap_at = i;
	while (i > 0 && heap_less(h, i, (i - 1) / 2)) {
		heap_swap(h, i, (i - 1) / 2);
		i = (i - 1) / 2;
	}
}
static int heap_pop(struct heap *h)
{
	int top = h->v[0];
	h->bks[top].heap_at = -1;
	if (--h->n > 0) {
		h->v[0] = h->v[h->n];
		h->bks[h->v[0]].heap_at = 0;
		for (int i = 0;;) {
			int l = 2 * i + 1, r = l + 1, m = i;
			if (l < h->n && heap_less(h, l, m))
				m = l;
			if (r < h->n && heap_less(h, r, m))
				m = r;
			if (m == i)
				break;
			heap_swap(h, i, m);
			i = m;
		}
	}
	return top;
}

static double cpu_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Samples, for percentiles. */
struct samples {
	double *v;
	size_t n, cap;
};
static void samples_add(struct samples *s, double x)
{
	if (s->n == s->cap) {
		s->cap = s->cap ? 2 * s->cap : 1024;
		double *v = realloc(s->v, s->cap * sizeof *v);
		if (!v) {
			perror("realloc");
			exit(1);
		}
		s->v = v;
	}
	s->v[s->n++] = x;
}
static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}
static double pct(struct samples *s, double p)
{
	if (!s->n)
		return NAN;
	qsort(s->v, s->n, sizeof *s->v, cmp_double);
	size_t i = (size_t)ceil(p / 100.0 * (double)s->n);
	return s->v[i ? i - 1 : 0];
}

/* One run's state and what it measured. */
struct sim {
	const struct cfg *cfg;
	int nb;
	double rate, now, end;
	struct sim_bk *bks;
	struct heap heap;
	struct rng arrivals_rng;
	double next_arrival;
	struct sim_job *qhead, *qtail;
	int queued, fifo_queued; /* in the balancer's queue; on backends (reference) */
	struct router_rate arrivals;
	int reschedule;
	double last_schedule;
	/* measured in the window [warmup, warmup + seconds) */
	struct samples turn_cpu, latency, wait;
	double cpu_sum, plan_cpu_sum, q_area, q_max, busy_area;
	long turns, dispatched, arrived, refused, done, unfinished;
};

static double window_start(const struct sim *s) { return s->cfg->warmup; }
static double window_end(const struct sim *s) { return s->cfg->warmup + s->cfg->seconds; }
static int in_window(const struct sim *s, double t) { return t >= window_start(s) && t < window_end(s); }

/* Backend-seconds busy inside the window, for the utilisation. */
static void count_busy(struct sim *s, double from, double to)
{
	double a = fmax(from, window_start(s)), b = fmin(to, window_end(s));
	if (b > a)
		s->busy_area += b - a;
}

static void pool_init(struct sim *s)
{
	struct rng r = {(uint64_t)s->cfg->seed * 7919u + (uint64_t)s->nb};
	for (int i = 0; i < s->nb; i++) {
		struct sim_bk *k = &s->bks[i];
		double u = rng_unit(&r), acc = 0;
		size_t c = 0;
		for (; c + 1 < N_CLASSES; c++)
			if (u < (acc += CLASSES[c].share))
				break;
		k->cls = CLASSES[c].cls;
		k->price = CLASSES[c].price * (0.8 + 0.4 * rng_unit(&r));
		k->true_spp = GPU_PRIOR_BASE_SPP / gpu_prior(k->cls) * rng_lognormal(&r, BK_SIGMA);
		/* sd15 everywhere, sdxl on most, flux and pony on some */
		k->models = 1u | (rng_unit(&r) < 0.8 ? 2u : 0) | (rng_unit(&r) < 0.3 ? 4u : 0) |
			    (rng_unit(&r) < 0.3 ? 8u : 0);
		k->loaded_model = MODELS[0];
		/* A marketplace that has run a while: measured, within 10 % of the truth;
		 * last used some time in the last minute (some are stale: router.h). */
		k->spp = k->true_spp * rng_lognormal(&r, 0.1);
		k->samples = 5;
		k->last_used = -60 * rng_unit(&r);
		k->heap_at = -1;
	}
}

static int offers_cb(const void *ctx, const char *model)
{
	const struct sim_bk *k = ctx;
	for (int m = 0; m < N_MODELS; m++)
		if (strcmp(model, MODELS[m]) == 0)
			return (k->models >> m) & 1;
	return 0;
}

/* The next arrival's job, from the arrivals' own stream (the same for the
 * router and the reference): half SD 1.5 at 512² x 25 steps, 40 % SDXL at
 * 1024² x 30, 10 % four SD 1.5 images; a quarter name a checkpoint, one in
 * ten accepts only some GPU classes, one in ten sets a max price; --cheapest
 * of them (default none) prefer the cheapest backend. */
static struct sim_job *job_new(struct sim *s, double at)
{
	struct rng *r = &s->arrivals_rng;
	struct sim_job *j = calloc(1, sizeof *j);
	if (!j) {
		perror("calloc");
		exit(1);
	}
	j->arrive = at;
	double u = rng_unit(r);
	struct router_work_in w = {.steps = 25, .width = 512, .height = 512, .n_images = 1, .calls_per_step = 1};
	if (u >= 0.5 && u < 0.9) {
		w.steps = 30;
		w.width = w.height = 1024;
	} else if (u >= 0.9) {
		w.n_images = 4;
	}
	j->work = router_work(&w);
	j->true_noise = rng_lognormal(r, JOB_SIGMA);
	if (rng_unit(r) < 0.25)
		j->model = MODELS[(int)(rng_unit(r) * N_MODELS) % N_MODELS];
	if (rng_unit(r) < 0.1) {
		j->gpus[0] = "h100";
		j->gpus[1] = rng_unit(r) < 0.5 ? "a100" : "rtx4090";
		j->n_gpus = 2;
	}
	if (!j->n_gpus && rng_unit(r) < 0.1)
		j->max_price = 1.0; /* never both: a job no backend can serve is refused at its submission */
	j->prefer = rng_unit(r) < s->cfg->cheapest ? ROUTER_PREFER_CHEAPEST : ROUTER_PREFER_FASTEST;
	j->in_window = in_window(s, at);
	return j;
}

static void fill_job(const struct sim_job *j, struct router_job *v)
{
	memset(v, 0, sizeof *v);
	v->gpus = j->gpus;
	v->n_gpus = j->n_gpus;
	v->max_price = j->max_price;
	v->model = j->model;
	v->work = j->work;
	v->prefer = j->prefer;
}

static void fill_view(struct sim_bk *k, struct router_bk *v, double now)
{
	memset(v, 0, sizeof *v);
	v->usable = 1;
	v->gpu_class = k->cls;
	v->price = k->price;
	v->spp = k->spp;
	v->idle_s = k->running ? 0 : now - k->last_used;
	v->retry_s = ROUTER_RETRY_S;
	v->slots = 1;
	v->loaded_model = k->loaded_model;
	v->offers = offers_cb;
	v->ctx = k;
}

/* dispatch.c's expected_s and remaining_s, without the pace (no polls here). */
static double expected_s(const struct router_bk *v, const struct sim_job *j, double base)
{
	return router_spp(v, base) * j->work + j->switch_s;
}

static double remaining_s(const struct router_bk *v, const struct sim_job *j, double now, double base)
{
	double expected = expected_s(v, j, base), elapsed = now - j->started;
	if (elapsed < expected)
		return expected - elapsed;
	return 0.5 * (elapsed - expected) + 0.05 * expected + 1e-3;
}

/* The true time of j on k: its speed, the job's noise, a checkpoint switch
 * at ROUTER_SWITCH_PENALTY_S. */
static double true_run_s(const struct sim_bk *k, const struct sim_job *j)
{
	return k->true_spp * j->work * j->true_noise + j->switch_s;
}

static void begin_running(struct sim *s, int ki, struct sim_job *j, double now)
{
	struct sim_bk *k = &s->bks[ki];
	j->started = now;
	k->job = j;
	k->end_at = now + true_run_s(k, j);
	heap_push(&s->heap, ki);
	if (j->in_window)
		samples_add(&s->wait, now - j->arrive);
}

static void queue_push(struct sim *s, struct sim_job *j)
{
	j->next = NULL;
	if (s->qtail)
		s->qtail->next = j;
	else
		s->qhead = j;
	s->qtail = j;
	s->queued++;
}

/* dispatch.c's start(): into the free slot, or behind the running job. */
static void start(struct sim *s, int ki, struct sim_job *j, double switch_s, int behind, double now)
{
	struct sim_bk *k = &s->bks[ki];
	k->running++;
	j->switch_s = switch_s;
	j->sent = now;
	if (k->running == 1 && now - k->last_used >= ROUTER_RETRY_S)
		k->samples = 0;
	k->last_used = now;
	if (j->model)
		k->loaded_model = j->model;
	if (behind)
		k->behind = j;
	else
		begin_running(s, ki, j, now);
	s->dispatched += in_window(s, now);
}

/* One turn of dispatch_schedule; returns its CPU seconds. */
static double schedule(struct sim *s)
{
	double t0 = cpu_now(), plan_s = 0;
	s->reschedule = 0;
	int nb = s->nb, nj = s->queued;
	struct router_bk *views = calloc((size_t)nb, sizeof *views);
	struct router_job *rjobs = calloc((size_t)nj, sizeof *rjobs);
	struct sim_job **jobs = calloc((size_t)nj, sizeof *jobs);
	int *assign = calloc((size_t)nj, sizeof *assign), *starts = calloc((size_t)nj, sizeof *starts);
	struct router_pick *picks = calloc((size_t)nj, sizeof *picks);
	double *switch_s = calloc((size_t)nj, sizeof *switch_s);
	char *behind_taken = calloc((size_t)nb, 1);
	const char **loaded = calloc((size_t)nb, sizeof *loaded);
	if (!views || !rjobs || !jobs || !assign || !starts || !picks || !switch_s || !behind_taken || !loaded) {
		perror("calloc");
		exit(1);
	}
	double now = s->now;
	for (int i = 0; i < nb; i++)
		fill_view(&s->bks[i], &views[i], now);
	double base = router_base_spp(views, nb, -1);
	for (int i = 0; i < nb; i++) {
		struct sim_bk *k = &s->bks[i];
		views[i].free_in[0] = k->job ? remaining_s(&views[i], k->job, now, base) : 0;
		if (k->behind)
			views[i].free_in[0] += expected_s(&views[i], k->behind, base);
	}
	int i = 0;
	for (struct sim_job *j = s->qhead; j; j = j->next, i++) {
		jobs[i] = j;
		fill_job(j, &rjobs[i]);
	}
	double tp = cpu_now();
	router_plan_load(views, nb, rjobs, nj, router_rate_get(&s->arrivals, now), assign, picks);
	plan_s = cpu_now() - tp;
	for (i = 0; i < nj; i++) {
		const struct router_pick *p = &picks[i];
		struct sim_bk *pk = p->k >= 0 ? &s->bks[p->k] : NULL;
		int can_behind = s->cfg->prefetch_s > 0 && assign[i] == ROUTER_WAIT && pk && pk->spp > 0 && pk->job &&
				 !pk->behind && !behind_taken[p->k] &&
				 now - pk->job->started < expected_s(&views[p->k], pk->job, base);
		starts[i] = assign[i] >= 0 ? 1 : can_behind && p->start_in <= s->cfg->prefetch_s ? 2 : 0;
		if (starts[i] == 2)
			behind_taken[p->k] = 1;
		if (starts[i]) {
			struct router_bk *v = &views[p->k];
			v->loaded_model = loaded[p->k] ? loaded[p->k]
						       : pk->loaded_model; /* changed by an earlier start */
			switch_s[i] = router_switch_s(v, &rjobs[i]);
			if (rjobs[i].model)
				loaded[p->k] = rjobs[i].model;
		}
	}
	double cpu = cpu_now() - t0;
	/* The decisions take effect once the turn is over: the loop was busy. */
	double at = now + (s->cfg->free_router ? 0 : cpu);
	s->qhead = s->qtail = NULL;
	s->queued = 0;
	for (i = 0; i < nj; i++)
		if (starts[i])
			start(s, picks[i].k, jobs[i], switch_s[i], starts[i] == 2, at);
		else
			queue_push(s, jobs[i]);
	free(views);
	free(rjobs);
	free(jobs);
	free(assign);
	free(picks);
	free(starts);
	free(switch_s);
	free(behind_taken);
	free(loaded);
	if (in_window(s, now)) {
		samples_add(&s->turn_cpu, cpu);
		s->cpu_sum += cpu;
		s->plan_cpu_sum += plan_s;
		s->turns++;
	}
	return cpu;
}

/* The least-loaded reference: each arrival goes at once to the eligible
 * backend with the fewest jobs (running and queued on it), ties in turn from
 * a rotating start (NGINX least_conn); it queues there, FIFO. Returns the
 * decision's CPU seconds. */
static int rr_next;
static double pick_least_loaded(struct sim *s, struct sim_job *j)
{
	double t0 = cpu_now();
	struct router_job rj;
	fill_job(j, &rj);
	int best = -1;
	for (int x = 0; x < s->nb; x++) {
		int ki = (rr_next + x) % s->nb;
		struct sim_bk *k = &s->bks[ki];
		struct router_bk v;
		v.gpu_class = k->cls;
		v.price = k->price;
		v.offers = offers_cb;
		v.can_run = NULL;
		v.ctx = k;
		if (!router_eligible(&v, &rj))
			continue;
		if (best < 0 || k->running < s->bks[best].running)
			best = ki;
		if (k->running == 0)
			break;
	}
	rr_next = (rr_next + 1) % s->nb;
	if (best >= 0) {
		struct sim_bk *k = &s->bks[best];
		j->switch_s = j->model && strcmp(j->model, k->loaded_model) ? ROUTER_SWITCH_PENALTY_S : 0;
		if (j->model)
			k->loaded_model = j->model;
		if (k->running++ == 0) {
			begin_running(s, best, j, s->now);
		} else {
			j->next = NULL;
			s->fifo_queued++;
			if (k->fifo_tail)
				k->fifo_tail->next = j;
			else
				k->fifo = j;
			k->fifo_tail = j;
		}
		s->dispatched += in_window(s, s->now);
	}
	double cpu = cpu_now() - t0;
	if (in_window(s, s->now)) {
		samples_add(&s->turn_cpu, cpu);
		s->cpu_sum += cpu;
		s->turns++;
	}
	if (best < 0) {
		s->refused += j->in_window;
		free(j);
	}
	return cpu;
}

static void finish_job(struct sim *s, struct sim_job *j, double now)
{
	if (j->in_window) {
		samples_add(&s->latency, now - j->arrive);
		s->done++;
	}
	free(j);
}

/* The running job of backend ki ends now. */
static void complete(struct sim *s, int ki, int reference)
{
	struct sim_bk *k = &s->bks[ki];
	struct sim_job *j = k->job;
	double now = k->end_at, took = now - j->started;
	count_busy(s, j->started, now);
	k->job = NULL;
	k->running--;
	if (!reference) {
		double run = fmax(took - j->switch_s, 0.5 * took);
		k->spp = router_learn(k->spp, k->samples++, run / fmax(j->work, 1));
		if (k->behind) {
			struct sim_job *b = k->behind;
			k->behind = NULL;
			/* not before it was sent: the job ahead may have ended during the turn that sent it */
			begin_running(s, ki, b, fmax(now, b->sent));
		}
		s->reschedule = 1;
	} else if (k->fifo) {
		struct sim_job *b = k->fifo;
		s->fifo_queued--;
		k->fifo = b->next;
		if (!k->fifo)
			k->fifo_tail = NULL;
		begin_running(s, ki, b, now);
	}
	finish_job(s, j, now);
}

/* The whole run, router (reference 0) or least-loaded (1). */
static void sim_run(struct sim *s, int reference)
{
	/* Arrivals go on for --tail seconds after the window, then stop, and the
	 * run goes on until every job of the window is done (at most DRAIN_MAX_S
	 * more), so that its latencies include the long ones. */
	double arrivals_end = window_end(s) + s->cfg->tail;
	s->end = arrivals_end + DRAIN_MAX_S;
	s->next_arrival = rng_exp(&s->arrivals_rng, s->rate);
	s->last_schedule = -1;
	while (s->now < s->end && (s->now < arrivals_end || s->arrived > s->refused + s->done)) {
		/* everything due by now, in time order */
		for (;;) {
			double next_done = s->heap.n ? s->bks[s->heap.v[0]].end_at : INFINITY;
			if (fmin(next_done, s->next_arrival) > s->now)
				break;
			if (next_done <= s->next_arrival) {
				complete(s, heap_pop(&s->heap), reference);
				continue;
			}
			double at = s->next_arrival;
			s->next_arrival += rng_exp(&s->arrivals_rng, s->rate);
			if (s->next_arrival > arrivals_end)
				s->next_arrival = INFINITY;
			struct sim_job *j = job_new(s, at);
			s->arrived += j->in_window;
			if (reference) {
				double cpu = pick_least_loaded(s, j);
				if (!s->cfg->free_router)
					s->now += cpu; /* the loop is busy while it decides */
				continue;
			}
			if (s->queued >= s->cfg->max_queue) {
				s->refused += j->in_window;
				free(j);
				continue;
			}
			queue_push(s, j);
			router_rate_add(&s->arrivals, at);
			s->reschedule = 1;
		}
		int due = !reference && (s->reschedule || (s->qhead && s->now - s->last_schedule >= SCHEDULE_EVERY_S));
		double step;
		if (due) {
			s->last_schedule = s->now;
			step = schedule(s);
		} else {
			double next_done = s->heap.n ? s->bks[s->heap.v[0]].end_at : INFINITY;
			double next = fmin(next_done, s->next_arrival);
			if (!reference && s->qhead)
				next = fmin(next, s->last_schedule + SCHEDULE_EVERY_S);
			step = fmax(fmin(next, s->end) - s->now, 0);
		}
		double a = fmax(s->now, window_start(s)), b = fmin(s->now + step, window_end(s));
		if (b > a) {
			double q = reference ? s->fifo_queued : s->queued;
			s->q_area += q * (b - a);
			s->q_max = fmax(s->q_max, q);
		}
		s->now += step;
		if (step == 0 && !due)
			s->now = nextafter(s->now, INFINITY);
	}
}

/* Jobs of the window still queued or running at the end. */
static void count_unfinished(struct sim *s)
{
	for (struct sim_job *j = s->qhead, *n; j; j = n) {
		n = j->next;
		s->unfinished += j->in_window;
		free(j);
	}
	for (int i = 0; i < s->nb; i++) {
		struct sim_bk *k = &s->bks[i];
		if (k->job)
			count_busy(s, k->job->started, s->now);
		struct sim_job *list[2] = {k->job, k->behind};
		for (int x = 0; x < 2; x++)
			if (list[x]) {
				s->unfinished += list[x]->in_window;
				free(list[x]);
			}
		for (struct sim_job *j = k->fifo, *n; j; j = n) {
			n = j->next;
			s->unfinished += j->in_window;
			free(j);
		}
	}
}

/* Jobs/s the pool can serve: the sum over backends of 1 / mean service time. */
static double capacity(const struct sim *s)
{
	/* the job mix's mean work, from job_new's shares */
	double w512 = 25.0 * 512 * 512, w1024 = 30.0 * 1024 * 1024;
	double mean_work = 0.5 * w512 + 0.4 * w1024 + 0.1 * 4 * w512;
	double c = 0;
	for (int i = 0; i < s->nb; i++)
		c += 1.0 / (s->bks[i].true_spp * mean_work);
	return c;
}

struct result {
	double load, turn_p50, turn_p99, turn_max, per_job_us, jobs_per_core_s, core_busy, plan_share;
	double q_mean, q_max, util, lat_p50, lat_p99, wait_p99;
	long turns, dispatched, arrived, refused, unfinished;
};

static struct result simulate(const struct cfg *cfg, int nb, double rate, int reference)
{
	struct sim s;
	memset(&s, 0, sizeof s);
	s.cfg = cfg;
	s.nb = nb;
	s.rate = rate;
	s.bks = calloc((size_t)nb, sizeof *s.bks);
	s.heap.v = calloc((size_t)nb, sizeof *s.heap.v);
	if (!s.bks || !s.heap.v) {
		perror("calloc");
		exit(1);
	}
	s.heap.bks = s.bks;
	s.arrivals_rng.s = (uint64_t)cfg->seed * 104729u + (uint64_t)(rate * 1000);
	pool_init(&s);
	rr_next = 0;
	sim_run(&s, reference);
	count_unfinished(&s);
	struct result r = {0};
	r.load = rate / capacity(&s);
	r.turns = s.turns;
	r.dispatched = s.dispatched;
	r.arrived = s.arrived;
	r.refused = s.refused;
	r.unfinished = s.unfinished;
	r.turn_p50 = pct(&s.turn_cpu, 50) * 1e6;
	r.turn_p99 = pct(&s.turn_cpu, 99) * 1e6;
	r.turn_max = pct(&s.turn_cpu, 100) * 1e6;
	r.per_job_us = s.dispatched ? s.cpu_sum / (double)s.dispatched * 1e6 : NAN;
	r.jobs_per_core_s = s.cpu_sum > 0 ? (double)s.dispatched / s.cpu_sum : NAN;
	r.core_busy = s.cpu_sum / cfg->seconds;
	r.plan_share = s.cpu_sum > 0 ? s.plan_cpu_sum / s.cpu_sum : 0;
	r.q_mean = s.q_area / cfg->seconds;
	r.q_max = s.q_max;
	r.util = s.busy_area / ((double)nb * cfg->seconds);
	r.lat_p50 = pct(&s.latency, 50);
	r.lat_p99 = pct(&s.latency, 99);
	r.wait_p99 = pct(&s.wait, 99);
	free(s.turn_cpu.v);
	free(s.latency.v);
	free(s.wait.v);
	free(s.bks);
	free(s.heap.v);
	return r;
}

static int parse_list(const char *arg, double *out, int cap)
{
	int n = 0;
	char *copy = strdup(arg), *save = NULL;
	for (char *t = strtok_r(copy, ",", &save); t && n < cap; t = strtok_r(NULL, ",", &save))
		out[n++] = atof(t);
	free(copy);
	return n;
}

static void usage(void)
{
	printf("usage: bench_scale [router|snapshot|store|all] [--quick] [--backends LIST] [--rates LIST] [--seconds "
	       "S]\n"
	       "       [--warmup S] [--tail S] [--seed N] [--max-queue N] [--prefetch-ms N] [--free-router]\n"
	       "       [--cheapest SHARE]\n"
	       "       [store options]\n"
	       "snapshot: one router_plan_load over N backends and 1..1000 queued jobs, timed.\n"
	       "router: snapshot, then the real router over N simulated backends (default 100,1000,10000) at R jobs/s\n"
	       "  (default 100,1000,5000), S virtual seconds measured (default 10), beside least-loaded.\n"
	       "store: job state writes on SQLite (and PostgreSQL when SDGATE_BENCH_PG is set); see\n"
	       "  tests/bench/README.md.\n");
}

/* One plan over a fixed snapshot: nb backends (a third busy, for up to a
 * job's time), nq queued jobs; router_plan_load timed alone, the median of
 * repeats. What one turn costs apart from the arrivals' dynamics. */
static double snapshot_plan_us(const struct cfg *cfg, int nb, int nq, double rate)
{
	struct sim s;
	memset(&s, 0, sizeof s);
	s.cfg = cfg;
	s.nb = nb;
	s.bks = calloc((size_t)nb, sizeof *s.bks);
	struct router_bk *views = calloc((size_t)nb, sizeof *views), *work = calloc((size_t)nb, sizeof *work);
	struct router_job *rjobs = calloc((size_t)nq, sizeof *rjobs);
	struct sim_job **jobs = calloc((size_t)nq, sizeof *jobs);
	int *assign = calloc((size_t)nq, sizeof *assign);
	if (!s.bks || !views || !work || !rjobs || !jobs || !assign) {
		perror("calloc");
		exit(1);
	}
	pool_init(&s);
	s.arrivals_rng.s = (uint64_t)cfg->seed;
	struct rng r = {(uint64_t)cfg->seed + 17};
	for (int i = 0; i < nb; i++) {
		fill_view(&s.bks[i], &views[i], 0);
		if (rng_unit(&r) < 1.0 / 3)
			views[i].free_in[0] = 3 * rng_unit(&r);
	}
	for (int i = 0; i < nq; i++) {
		jobs[i] = job_new(&s, 0);
		fill_job(jobs[i], &rjobs[i]);
	}
	int reps = nb * (nq + 1) > 1000000 ? 5 : 21;
	double *t = calloc((size_t)reps, sizeof *t);
	for (int x = 0; x < reps; x++) {
		memcpy(work, views, (size_t)nb * sizeof *work); /* the plan changes free_in and idle_s */
		double t0 = cpu_now();
		router_plan_load(work, nb, rjobs, nq, rate, assign, NULL);
		t[x] = cpu_now() - t0;
	}
	qsort(t, (size_t)reps, sizeof *t, cmp_double);
	double us = t[reps / 2] * 1e6;
	for (int i = 0; i < nq; i++)
		free(jobs[i]);
	free(t);
	free(jobs);
	free(assign);
	free(rjobs);
	free(work);
	free(views);
	free(s.bks);
	return us;
}

static void print_snapshot(const struct cfg *cfg)
{
	static const int QUEUED[] = {1, 10, 100, 1000};
	printf("## Router: one router_plan_load over a snapshot (a third of the backends busy; CPU µs, median)\n\n");
	printf("| backends | queued 1 | queued 10 | queued 100 | queued 1000 | ns per (job, backend), 100 queued |\n");
	printf("|---:|---:|---:|---:|---:|---:|\n");
	for (int b = 0; b < cfg->n_backends; b++) {
		int nb = cfg->backends[b];
		double us[4];
		for (int q = 0; q < 4; q++)
			us[q] = snapshot_plan_us(cfg, nb, QUEUED[q], 0);
		printf("| %d | %.0f | %.0f | %.0f | %.0f | %.1f |\n", nb, us[0], us[1], us[2], us[3],
		       us[2] * 1e3 / (100.0 * nb));
		fflush(stdout);
	}
	printf("\n");
}

/* The balancer's other walks over every backend, mirrored (balancer.h's
 * struct bk is not linkable here): registry_find (each heartbeat, a strcmp of
 * 32-hex ids down the list) and the loop turn's walk of every backend's slots
 * (dispatch.c's poll_progress and dispatch_tick). Nodes of struct bk's size
 * (904 bytes on x86-64, measured against balancer.h), each its own malloc. */
#define BK_BYTES 904
#define HEARTBEAT_S 10.0 /* --heartbeat-interval-s's default */
struct walk_bk {
	struct walk_bk *next;
	char id[33];
	void *jobs[ROUTER_MAX_SLOTS];
	char rest[BK_BYTES - sizeof(void *) * (1 + ROUTER_MAX_SLOTS) - 40];
};

static void print_walks(const struct cfg *cfg)
{
	printf("## Registry: walks over every backend (a mirror of registry_find and the loop turn's slot walk)\n\n");
	printf("| backends | registry_find (µs) | heartbeats/s at %g s | their core share | slot walk per loop "
	       "turn (µs) |\n",
	       HEARTBEAT_S);
	printf("|---:|---:|---:|---:|---:|\n");
	for (int b = 0; b < cfg->n_backends; b++) {
		int nb = cfg->backends[b];
		struct walk_bk *head = NULL, **all = calloc((size_t)nb, sizeof *all);
		struct rng r = {(uint64_t)cfg->seed};
		for (int i = 0; i < nb; i++) {
			struct walk_bk *k = calloc(1, sizeof *k);
			if (!k || !all) {
				perror("calloc");
				exit(1);
			}
			snprintf(k->id, sizeof k->id, "%016llx%016llx", (unsigned long long)rng_next(&r),
				 (unsigned long long)rng_next(&r));
			k->jobs[0] = rng_unit(&r) < 0.4 ? k : NULL;
			k->next = head;
			head = k;
			all[i] = k;
		}
		int lookups = 2000;
		volatile long found = 0;
		double t0 = cpu_now();
		for (int x = 0; x < lookups; x++) {
			const char *id = all[rng_next(&r) % (uint64_t)nb]->id;
			for (struct walk_bk *k = head; k; k = k->next)
				if (strcmp(k->id, id) == 0) {
					found++;
					break;
				}
		}
		double find_us = (cpu_now() - t0) / lookups * 1e6;
		int walks = 200;
		t0 = cpu_now();
		for (int x = 0; x < walks; x++)
			for (struct walk_bk *k = head; k; k = k->next)
				for (int sl = 0; sl < ROUTER_MAX_SLOTS; sl++)
					found += k->jobs[sl] != NULL;
		double walk_us = (cpu_now() - t0) / walks * 1e6;
		double hb = nb / HEARTBEAT_S;
		printf("| %d | %.1f | %.0f | %.1f %% | %.1f |\n", nb, find_us, hb, hb * find_us * 1e-4, walk_us);
		fflush(stdout);
		for (int i = 0; i < nb; i++)
			free(all[i]);
		free(all);
	}
	printf("\n");
}

static void print_router(const struct cfg *cfg)
{
	printf("## Router: %d..%d backends, %g..%g jobs/s, %g s measured after %g s warm-up (seed %d)\n\n",
	       cfg->backends[0], cfg->backends[cfg->n_backends - 1], cfg->rates[0], cfg->rates[cfg->n_rates - 1],
	       cfg->seconds, cfg->warmup, cfg->seed);
	printf("| backends | jobs/s | load | policy | turns | turn CPU p50 / p99 / max (µs) | CPU per job (µs) |"
	       " jobs/s one core decides | core busy | in plan | queue mean / max | utilisation |"
	       " latency p50 / p99 (s) | wait p99 (s) | refused | unfinished |\n");
	printf("|---:|---:|---:|---|---:|---|---:|---:|---:|---:|---|---:|---|---:|---:|---:|\n");
	for (int b = 0; b < cfg->n_backends; b++)
		for (int r = 0; r < cfg->n_rates; r++)
			for (int ref = 0; ref < 2; ref++) {
				struct result x = simulate(cfg, cfg->backends[b], cfg->rates[r], ref);
				printf("| %d | %g | %.2f | %s | %ld | %.0f / %.0f / %.0f | %.1f | %.0f | %.0f %% | "
				       "%.0f %% |"
				       " %.1f / %.0f | %.0f %% | %.2f / %.2f | %.2f | %ld | %ld |\n",
				       cfg->backends[b], cfg->rates[r], x.load, ref ? "least-loaded" : "router",
				       x.turns, x.turn_p50, x.turn_p99, x.turn_max, x.per_job_us, x.jobs_per_core_s,
				       100 * x.core_busy, 100 * x.plan_share, x.q_mean, x.q_max, 100 * x.util,
				       x.lat_p50, x.lat_p99, x.wait_p99, x.refused, x.unfinished);
				fflush(stdout);
			}
	printf("\n");
}

int main(int argc, char **argv)
{
	struct cfg cfg = {.seed = 1, .max_queue = 1000, .seconds = 10, .warmup = 3, .tail = 5, .prefetch_s = 0.03};
	const char *what = "all", *backends = "100,1000,10000", *rates = "100,1000,5000";
	int store_argc = 0;
	char **store_argv = calloc((size_t)argc + 1, sizeof *store_argv);
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (!strcmp(a, "router") || !strcmp(a, "snapshot") || !strcmp(a, "store") || !strcmp(a, "all"))
			what = a;
		else if (!strcmp(a, "--quick"))
			cfg.quick = 1;
		else if (!strcmp(a, "--backends") && v)
			backends = argv[++i];
		else if (!strcmp(a, "--rates") && v)
			rates = argv[++i];
		else if (!strcmp(a, "--seconds") && v)
			cfg.seconds = atof(argv[++i]);
		else if (!strcmp(a, "--warmup") && v)
			cfg.warmup = atof(argv[++i]);
		else if (!strcmp(a, "--tail") && v)
			cfg.tail = atof(argv[++i]);
		else if (!strcmp(a, "--seed") && v)
			cfg.seed = atoi(argv[++i]);
		else if (!strcmp(a, "--max-queue") && v)
			cfg.max_queue = atoi(argv[++i]);
		else if (!strcmp(a, "--cheapest") && v)
			cfg.cheapest = atof(argv[++i]);
		else if (!strcmp(a, "--free-router"))
			cfg.free_router = 1;
		else if (!strcmp(a, "--prefetch-ms") && v)
			cfg.prefetch_s = atof(argv[++i]) / 1000.0;
		else if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
			usage();
			free(store_argv);
			return 0;
		} else
			store_argv[store_argc++] = argv[i]; /* the store's own options */
	}
	if (cfg.quick) {
		cfg.seconds = 3;
		cfg.warmup = 1;
		cfg.tail = 2;
	}
	double list[MAX_LIST];
	cfg.n_backends = parse_list(backends, list, MAX_LIST);
	for (int i = 0; i < cfg.n_backends; i++)
		cfg.backends[i] = (int)list[i];
	cfg.n_rates = parse_list(rates, cfg.rates, MAX_LIST);
	if (!cfg.n_backends || !cfg.n_rates || cfg.seconds <= 0 || cfg.max_queue < 1) {
		usage();
		free(store_argv);
		return 2;
	}
	for (int i = 0; i < cfg.n_backends; i++)
		if (cfg.backends[i] < 1) {
			usage();
			free(store_argv);
			return 2;
		}
	int rc = 0;
	if (!strcmp(what, "snapshot") || !strcmp(what, "router") || !strcmp(what, "all"))
		print_snapshot(&cfg);
	if (!strcmp(what, "router") || !strcmp(what, "all")) {
		print_walks(&cfg);
		print_router(&cfg);
	}
	if (!strcmp(what, "store") || !strcmp(what, "all"))
		rc = bench_scale_store(store_argc, store_argv, cfg.quick);
	free(store_argv);
	return rc;
}
