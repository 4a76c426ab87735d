/* Unit tests of balancer/router: earliest expected finish, GPU/price/
 * checkpoint filters, no head-of-line blocking, ties, unknown speeds; the
 * GPU class priors (gpu_prior.c), calibration, re-tries of stale estimates,
 * "prefer", and the work of a job (samplers, hires). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <string.h>
#include <strings.h>

#include "gpu_prior.h"
#include "router.h"

static int offers_base_only(const void *ctx, const char *model) { return strcasecmp(model, "base") == 0; }

static struct router_bk bk(const char *cls, double spp, double price)
{
	struct router_bk k;
	memset(&k, 0, sizeof k);
	k.usable = 1;
	k.gpu_class = cls;
	k.spp = spp;
	k.price = price;
	k.slots = 1;
	k.offers = offers_base_only;
	return k;
}

static struct router_job job(double work)
{
	struct router_job j;
	memset(&j, 0, sizeof j);
	j.work = work;
	return j;
}

static void test_fastest_idle_wins(void **state)
{
	struct router_bk k[2] = {bk("rtx3090", 4e-3, 0), bk("h100", 1e-3, 0)};
	struct router_job j = job(100);
	int a;
	router_plan(k, 2, &j, 1, &a);
	assert_int_equal(a, 1);
}

static void test_waits_for_a_fast_backend_about_to_free(void **state)
{
	/* slow idle: 1.0 s; fast busy for 0.1 s more, then 0.25 s: wait. */
	struct router_bk k[2] = {bk("rtx3090", 1e-2, 0), bk("h100", 2.5e-3, 0)};
	k[1].free_in[0] = 0.1;
	struct router_job j = job(100);
	int a;
	router_plan(k, 2, &j, 1, &a);
	assert_int_equal(a, ROUTER_WAIT);
	/* ...but not when the fast one is busy for long. */
	k[1].free_in[0] = 5;
	router_plan(k, 2, &j, 1, &a);
	assert_int_equal(a, 0);
}

/* The look-ahead: the same job that waits for the fast backend when nobody
 * else is coming starts on the idle slow one when arrivals are expected that
 * would otherwise queue behind it; a job queued behind counts the same way. */
static void test_lookahead_starts_on_idle_when_others_come(void **state)
{
	struct router_bk k[2] = {bk("rtx3090", 2e-3, 0), bk("h100", 1e-3, 0)};
	k[1].free_in[0] = 0.08; /* h100: 0.18 s; rtx3090 idle: 0.2 s */
	struct router_job j = job(100);
	int a;
	router_plan_load(k, 2, &j, 1, 0, &a, NULL);
	assert_int_equal(a, ROUTER_WAIT);
	k[1].free_in[0] = 0.08;
	router_plan_load(k, 2, &j, 1, 20, &a, NULL); /* one new job every 50 ms */
	assert_int_equal(a, 0);
	/* Preferring the cheapest is the client's choice: no look-ahead. */
	k[0].free_in[0] = 0;
	k[1].free_in[0] = 0.08;
	k[0].price = 0.4;
	k[1].price = 2.5;
	j.prefer = ROUTER_PREFER_CHEAPEST;
	router_plan_load(k, 2, &j, 1, 20, &a, NULL);
	assert_int_equal(a, 0);
	k[0].price = 9;
	k[0].free_in[0] = 0;
	k[1].free_in[0] = 0.08;
	router_plan_load(k, 2, &j, 1, 20, &a, NULL);
	assert_int_equal(a, ROUTER_WAIT);
}

/* Equal backends share the work: a full tie goes to the one idle the longest. */
static void test_ties_share_the_work(void **state)
{
	struct router_bk k[3] = {bk("a100", 1e-3, 1), bk("a100", 1e-3, 1), bk("a100", 1e-3, 1)};
	k[0].idle_s = 1;
	k[1].idle_s = 5;
	k[2].idle_s = 3;
	struct router_job j = job(100);
	int a;
	router_plan(k, 3, &j, 1, &a);
	assert_int_equal(a, 1);
	struct router_job js[3] = {job(100), job(100), job(100)};
	int as[3];
	for (int i = 0; i < 3; i++)
		k[i].free_in[0] = 0;
	router_plan(k, 3, js, 3, as); /* k[1] was just given one (idle 0): the other two first, then it */
	assert_int_equal(as[0], 2);
	assert_int_equal(as[1], 0);
	assert_int_equal(as[2], 1);
}

static void test_arrival_rate(void **state)
{
	struct router_rate r = {0};
	assert_true(router_rate_get(&r, 100) == 0);
	for (int i = 0; i < 50; i++)
		router_rate_add(&r, 100 + i * 0.1); /* 10 a second for 5 s */
	double now = router_rate_get(&r, 105);
	assert_true(now > 5 && now < 7); /* (1 - 1/e) of 10 a second, the count's memory being 5 s */
	assert_true(fabs(router_rate_get(&r, 110) - now / M_E) < 1e-9);
}

static void test_gpu_filter_and_none(void **state)
{
	struct router_bk k[2] = {bk("rtx3090", 1e-3, 0), bk("a100", 1e-2, 0)};
	const char *gpus[] = {"A100"};
	struct router_job j = job(100);
	j.gpus = gpus;
	j.n_gpus = 1;
	int a;
	router_plan(k, 2, &j, 1, &a);
	assert_int_equal(a, 1);
	const char *h100[] = {"h100"};
	j.gpus = h100;
	router_plan(k, 2, &j, 1, &a);
	assert_int_equal(a, ROUTER_NONE);
	/* Down backends are not usable. */
	j.gpus = gpus;
	k[1].usable = 0;
	router_plan(k, 2, &j, 1, &a);
	assert_int_equal(a, ROUTER_NONE);
}

static void test_no_head_of_line_blocking(void **state)
{
	struct router_bk k[2] = {bk("a100", 1e-3, 0), bk("rtx3090", 1e-3, 0)};
	k[0].free_in[0] = 10; /* the a100 is busy */
	const char *gpus[] = {"a100"};
	struct router_job j[2] = {job(100), job(100)};
	j[0].gpus = gpus;
	j[0].n_gpus = 1;
	int a[2];
	router_plan(k, 2, j, 2, a);
	assert_int_equal(a[0], ROUTER_WAIT);
	assert_int_equal(a[1], 1);
}

static void test_price_and_ties(void **state)
{
	struct router_bk k[3] = {bk("a100", 1e-3, 3.0), bk("a100", 1e-3, 1.0), bk("a100", 1e-3, 2.0)};
	struct router_job j = job(100);
	int a;
	router_plan(k, 3, &j, 1, &a);
	assert_int_equal(a, 1); /* same speed: the cheapest */
	struct router_bk k2[2] = {bk("a100", 1e-3, 3.0), bk("a100", 1e-3, 1.0)};
	j.max_price = 2.0;
	k2[1].usable = 0;
	router_plan(k2, 2, &j, 1, &a);
	assert_int_equal(a, ROUTER_NONE); /* the only one within price is down */
}

static void test_unknown_speeds_spread(void **state)
{
	struct router_bk k[3] = {bk("cpu", 0, 0), bk("cpu", 0, 0), bk("cpu", 0, 0)};
	struct router_job j[4] = {job(100), job(100), job(100), job(100)};
	int a[4];
	router_plan(k, 3, j, 4, a);
	assert_true(a[0] >= 0 && a[1] >= 0 && a[2] >= 0);
	assert_true(a[0] != a[1] && a[1] != a[2] && a[0] != a[2]);
	assert_int_equal(a[3], ROUTER_WAIT); /* never a second job on a busy slot */
}

static void test_checkpoints_and_switching(void **state)
{
	struct router_bk k[2] = {bk("a100", 1e-3, 0), bk("a100", 1e-3, 0)};
	struct router_job j = job(100);
	j.model = "base";
	k[1].loaded_model = "base";
	int a;
	router_plan(k, 2, &j, 1, &a);
	assert_int_equal(a, 1); /* already loaded: no switch penalty */
	j.model = "other";
	router_plan(k, 2, &j, 1, &a);
	assert_int_equal(a, ROUTER_NONE);
	j.model = NULL;
	j.refiner = "other";
	router_plan(k, 2, &j, 1, &a);
	assert_int_equal(a, ROUTER_NONE);
}

/* The capability check: the caller's can_run (balancer/caps.h) decides;
 * here a need is a required "feature" bit a backend's ctx holds. */
static int can_run_bits(const void *ctx, const void *need)
{
	unsigned have = *(const unsigned *)ctx, want = *(const unsigned *)need;
	return (have & want) == want;
}

static void test_capabilities(void **state)
{
	struct router_bk k[2] = {bk("h100", 1e-3, 0), bk("t4", 8e-3, 0)};
	unsigned fast_has = 1, slow_has = 3, need = 2;
	k[0].can_run = k[1].can_run = can_run_bits;
	k[0].ctx = &fast_has;
	k[1].ctx = &slow_has;
	struct router_job j = job(100);
	int a;
	router_plan(k, 2, &j, 1, &a);
	assert_int_equal(a, 0); /* no need: the fastest */
	k[0].free_in[0] = 0;
	j.need = &need;
	assert_false(router_eligible(&k[0], &j));
	assert_true(router_eligible(&k[1], &j));
	router_plan(k, 2, &j, 1, &a);
	assert_int_equal(a, 1); /* only the slow one can run it */
	slow_has = 1;
	router_plan(k, 2, &j, 1, &a);
	assert_int_equal(a, ROUTER_NONE);
	k[1].can_run = NULL; /* a backend with no check is not judged */
	k[1].free_in[0] = 0; /* the plan above reserved its slot */
	router_plan(k, 2, &j, 1, &a);
	assert_int_equal(a, 1);
}

static void test_slots(void **state)
{
	struct router_bk k = bk("a100", 1e-3, 0);
	k.slots = 2;
	struct router_job j[3] = {job(100), job(100), job(100)};
	int a[3];
	router_plan(&k, 1, j, 3, a);
	assert_int_equal(a[0], 0);
	assert_int_equal(a[1], 0);
	assert_int_equal(a[2], ROUTER_WAIT);
}

#define SD15_JOB (20.0 * 512 * 512) /* 20 steps at 512x512: ~1 s on an A100 */

static void test_priors(void **state)
{
	assert_true(gpu_prior("h100") > gpu_prior("a100"));
	assert_true(gpu_prior("a100") > gpu_prior("rtx3090"));
	assert_true(gpu_prior("rtx4090") > gpu_prior("rtx3090"));
	assert_true(gpu_prior("l40s") > gpu_prior("l40"));
	assert_true(gpu_prior("rtx3090") > gpu_prior("t4"));
	assert_true(gpu_prior("a10g") > gpu_prior("t4"));
	assert_true(gpu_prior("t4") > gpu_prior("cpu"));
	assert_true(gpu_prior("v100") > gpu_prior("rtx8000"));
	assert_true(gpu_prior("rtxa6000") > 0 && gpu_prior("a10") > 0);
	/* Spellings: case, separators, vendor prefixes, longest known name. */
	assert_true(gpu_prior("NVIDIA A100-80GB") == gpu_prior("a100"));
	assert_true(gpu_prior("Tesla T4") == gpu_prior("t4"));
	assert_true(gpu_prior("NVIDIA GeForce RTX 4090") == gpu_prior("rtx4090"));
	assert_true(gpu_prior("a10g") != gpu_prior("a100")); /* a10g is not an a100 */
	assert_true(gpu_prior("A100 40GB") < gpu_prior("a100"));
	assert_true(gpu_prior("H100 SXM5") > gpu_prior("H100 PCIe"));
	/* Every class sdgate-backend detects (backend/identity.c) has its own. */
	static const char *const DETECTED[] = {"h200",    "h100",    "gh200",   "a100",       "a10g",    "a10",
					       "l40s",    "l40",     "l4",      "rtx6000ada", "a6000",   "a5000",
					       "a4000",   "rtx5090", "rtx4090", "rtx4080",    "rtx3090", "rtx3080",
					       "rtx8000", "v100",    "t4",      "p100",       "cpu"};
	for (size_t i = 0; i < sizeof DETECTED / sizeof DETECTED[0]; i++)
		assert_true(gpu_prior(DETECTED[i]) != GPU_PRIOR_UNKNOWN);
	/* Unknown classes: the documented default. */
	assert_true(gpu_prior("unknown") == GPU_PRIOR_UNKNOWN);
	assert_true(gpu_prior("zz9000") == GPU_PRIOR_UNKNOWN);
	assert_true(gpu_prior(NULL) == GPU_PRIOR_UNKNOWN);
	assert_true(gpu_prior("") == GPU_PRIOR_UNKNOWN);
}

/* Issue 11: a fresh pool (nothing measured) of deploy/run-local.sh's
 * h100/a100/rtx3090 at 2.49/1.29/0.39 per hour: the h100, not the cheapest. */
static void test_fresh_pool_prefers_the_fastest_class(void **state)
{
	struct router_bk k[3] = {bk("rtx3090", 0, 0.39), bk("a100", 0, 1.29), bk("h100", 0, 2.49)};
	struct router_job j[3] = {job(SD15_JOB), job(SD15_JOB), job(SD15_JOB)};
	int a[3];
	router_plan(k, 3, j, 3, a);
	assert_int_equal(a[0], 2);           /* h100 */
	assert_int_equal(a[1], 1);           /* then the a100 (1/1.0 < 2/1.8) */
	assert_int_equal(a[2], ROUTER_WAIT); /* waiting for the h100 (2/1.8) beats the rtx3090 (1/0.55) */
	/* A large job lets the rtx3090 help: the h100 is booked for long. */
	struct router_bk k2[3] = {bk("rtx3090", 0, 0.39), bk("a100", 0, 1.29), bk("h100", 0, 2.49)};
	k2[2].free_in[0] = 60;
	k2[1].free_in[0] = 60;
	router_plan(k2, 3, j, 1, a);
	assert_int_equal(a[0], 0);
}

static void test_unmeasured_scaled_by_measured(void **state)
{
	/* The a100 was measured at 4e-6 s a unit: an unmeasured h100 is assumed
	 * at 4e-6 x prior(a100) / prior(h100), an rtx3090 at the same ratio. */
	struct router_bk k[3] = {bk("a100", 4e-6, 1.29), bk("h100", 0, 2.49), bk("rtx3090", 0, 0.39)};
	double base = router_base_spp(k, 3, -1);
	assert_float_equal(base, 4e-6 * gpu_prior("a100"), 1e-12);
	assert_float_equal(router_spp(&k[1], base), 4e-6 * gpu_prior("a100") / gpu_prior("h100"), 1e-12);
	assert_float_equal(router_spp(&k[2], base), 4e-6 * gpu_prior("a100") / gpu_prior("rtx3090"), 1e-12);
	assert_float_equal(router_spp(&k[0], base), 4e-6, 1e-12); /* measured: its own */
	/* Nothing measured: the absolute anchor. */
	struct router_bk fresh = bk("a100", 0, 0);
	assert_float_equal(router_base_spp(&fresh, 1, -1), GPU_PRIOR_BASE_SPP, 1e-15);
	/* A mislabelled backend does not drag the others: the median. */
	struct router_bk m[4] = {bk("a100", 4e-6, 0), bk("l40s", 3.9e-6, 0), bk("h100", 40e-6, 0), bk("t4", 0, 0)};
	base = router_base_spp(m, 4, -1);
	assert_true(base > 3.9e-6 && base < 4.3e-6);
	/* Which decides: a100 measured slow-ish, the unmeasured h100 wins when
	 * both are idle, and a busy h100 loses to the idle a100 when it is busy long. */
	struct router_job jb = job(1000);
	int a;
	router_plan(k, 3, &jb, 1, &a);
	assert_int_equal(a, 1);
	k[1].free_in[0] = 1.0;
	router_plan(k, 3, &jb, 1, &a);
	assert_int_equal(a, 0);
}

static void test_learning(void **state)
{
	/* The first job is taken as is; the next weigh 1/2, 1/3, then 0.3. */
	assert_float_equal(router_learn(0, 0, 2e-6), 2e-6, 1e-15);
	assert_float_equal(router_learn(2e-6, 1, 4e-6), 3e-6, 1e-15);
	assert_float_equal(router_learn(3e-6, 2, 6e-6), 4e-6, 1e-15);
	assert_float_equal(router_learn(1e-6, 10, 2e-6), 1.3e-6, 1e-15);
	/* An outlier counts at most 3x away: 100x slower once moves it 1.6x. */
	assert_float_equal(router_learn(1e-6, 10, 100e-6), 1.6e-6, 1e-15);
	assert_float_equal(router_learn(1e-6, 10, 1e-9), (0.7 + 0.3 / 3) * 1e-6, 1e-15);
	/* Nonsense does not count. */
	assert_float_equal(router_learn(1e-6, 3, 0), 1e-6, 1e-15);
	assert_float_equal(router_learn(1e-6, 3, -1), 1e-6, 1e-15);
	/* A lasting 3x slow-down is followed within a few jobs. */
	double spp = 1e-6;
	for (int i = 0; i < 8; i++)
		spp = router_learn(spp, 10 + i, 3e-6);
	assert_true(spp > 2.8e-6 && spp <= 3e-6);
}

static void test_stale_estimates_are_retried(void **state)
{
	/* The h100 was measured 10x slower than its class (a bad day, or a
	 * mislabelled card); the a100 next to it is as expected. */
	double a100 = 4e-6, h100_prior = a100 * gpu_prior("a100") / gpu_prior("h100");
	struct router_bk k[2] = {bk("a100", a100, 1.29), bk("h100", 10 * h100_prior, 2.49)};
	struct router_job j = job(1000);
	int a;
	k[1].idle_s = 5; /* measured recently: believed */
	router_plan(k, 2, &j, 1, &a);
	assert_int_equal(a, 0);
	k[1].idle_s = ROUTER_RETRY_S; /* not tried for a while: once at its prior */
	router_plan(k, 2, &j, 1, &a);
	assert_int_equal(a, 1);
	assert_true(k[1].idle_s == 0); /* planned: no second re-try in this plan */
	/* Two jobs in one plan: the re-try takes one, the other goes by the
	 * measured speeds. */
	struct router_bk k2[2] = {bk("a100", a100, 1.29), bk("h100", 10 * h100_prior, 2.49)};
	k2[1].slots = 2;
	k2[1].idle_s = 100;
	struct router_job j2[2] = {job(1000), job(1000)};
	int a2[2];
	router_plan(k2, 2, j2, 2, a2);
	assert_int_equal(a2[0], 1);
	assert_int_equal(a2[1], 0);
	/* A card labelled t4 but never tried is assumed slow at first, and
	 * tried once as the fastest class there is after ROUTER_RETRY_S. */
	struct router_bk k3[2] = {bk("a100", a100, 1.29), bk("t4", 0, 0.2)};
	k3[1].idle_s = 1;
	router_plan(k3, 2, &j, 1, &a);
	assert_int_equal(a, 0);
	k3[0].free_in[0] = 0;
	k3[1].idle_s = ROUTER_RETRY_S + 1;
	router_plan(k3, 2, &j, 1, &a);
	assert_int_equal(a, 1);
	assert_true(gpu_prior_best() >= gpu_prior("h100"));
	/* A measured speed better than the prior is kept, stale or not. */
	struct router_bk fast = bk("rtx3090", 1e-7, 0);
	fast.idle_s = 1000;
	assert_float_equal(router_spp(&fast, router_base_spp(&fast, 1, -1)), 1e-7, 1e-15);
}

static void test_prefer_and_true_ties(void **state)
{
	/* Nothing measured: fastest (the default) is the h100 whatever its price. */
	struct router_bk k[2] = {bk("h100", 0, 2.49), bk("rtx3090", 0, 0.39)};
	struct router_job j = job(SD15_JOB);
	int a;
	router_plan(k, 2, &j, 1, &a);
	assert_int_equal(a, 0);
	k[0].free_in[0] = 0;
	/* Cheapest: the lowest price x expected time (0.39 x 3.3 < 2.49 x 1). */
	j.prefer = ROUTER_PREFER_CHEAPEST;
	router_plan(k, 2, &j, 1, &a);
	assert_int_equal(a, 1);
	/* ... and it waits for the cheapest one rather than take the dear one. */
	k[1].free_in[0] = 3;
	router_plan(k, 2, &j, 1, &a);
	assert_int_equal(a, ROUTER_WAIT);
	/* ... within max_price as always. */
	struct router_bk k2[2] = {bk("h100", 0, 2.49), bk("rtx3090", 0, 3.0)};
	j.max_price = 2.5;
	router_plan(k2, 2, &j, 1, &a);
	assert_int_equal(a, 0);
	/* Cheapest among equal costs: the earlier finish. */
	struct router_bk k3[2] = {bk("a100", 2e-6, 0), bk("a100", 1e-6, 0)};
	j = job(SD15_JOB);
	j.prefer = ROUTER_PREFER_CHEAPEST;
	router_plan(k3, 2, &j, 1, &a);
	assert_int_equal(a, 1);
	/* Fastest: a 3 % slower backend is not a tie, even 6x cheaper. */
	struct router_bk k4[2] = {bk("a100", 1.03e-3, 0.5), bk("a100", 1e-3, 3.0)};
	j = job(100);
	router_plan(k4, 2, &j, 1, &a);
	assert_int_equal(a, 1);
	/* ... but within 1 % it is: the cheaper. */
	k4[0].spp = 1.005e-3;
	router_plan(k4, 2, &j, 1, &a);
	assert_int_equal(a, 0);
}

static void test_work_of_a_job(void **state)
{
	assert_true(router_sampler_calls("Euler") == 1);
	assert_true(router_sampler_calls("Euler a") == 1);
	assert_true(router_sampler_calls("DPM++ 2M") == 1);
	assert_true(router_sampler_calls("DPM++ 2M SDE") == 1);
	assert_true(router_sampler_calls("DPM++ 2M SDE Heun") == 1);
	assert_true(router_sampler_calls("DPM++ 3M SDE") == 1);
	assert_true(router_sampler_calls("Heun") == 2);
	assert_true(router_sampler_calls("DPM2") == 2);
	assert_true(router_sampler_calls("DPM2 a") == 2);
	assert_true(router_sampler_calls("DPM++ 2S a") == 2);
	assert_true(router_sampler_calls("DPM++ SDE") == 2);
	assert_true(router_sampler_calls("dpm++ sde karras") == 2);
	assert_true(router_sampler_calls("Restart") == 2);
	assert_true(router_sampler_calls(NULL) == 1);
	struct router_work_in w = {.steps = 20, .width = 512, .height = 512, .n_images = 2, .calls_per_step = 2};
	assert_float_equal(router_work(&w), 20 * 2 * 512 * 512 * 2.0, 1);
	w.hr_steps = 10;
	w.hr_width = 1024;
	w.hr_height = 1024;
	w.hr_calls = 1;
	assert_float_equal(router_work(&w), 20 * 2 * 512 * 512 * 2.0 + 10 * 1024 * 1024 * 2.0, 1);
	/* Checkpoint switches: the model when another is loaded, a refiner always. */
	struct router_bk k = bk("a100", 1e-3, 0);
	struct router_job j = job(100);
	j.model = "base";
	assert_float_equal(router_switch_s(&k, &j), ROUTER_SWITCH_PENALTY_S, 1e-9);
	k.loaded_model = "BASE";
	assert_float_equal(router_switch_s(&k, &j), 0, 1e-9);
	j.refiner = "refiner";
	assert_float_equal(router_switch_s(&k, &j), ROUTER_SWITCH_PENALTY_S, 1e-9);
	assert_float_equal(router_estimate(&k, &j, 1e-3), 0.1 + ROUTER_SWITCH_PENALTY_S, 1e-9);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_fastest_idle_wins),
		cmocka_unit_test(test_waits_for_a_fast_backend_about_to_free),
		cmocka_unit_test(test_lookahead_starts_on_idle_when_others_come),
		cmocka_unit_test(test_arrival_rate),
		cmocka_unit_test(test_ties_share_the_work),
		cmocka_unit_test(test_gpu_filter_and_none),
		cmocka_unit_test(test_no_head_of_line_blocking),
		cmocka_unit_test(test_price_and_ties),
		cmocka_unit_test(test_unknown_speeds_spread),
		cmocka_unit_test(test_checkpoints_and_switching),
		cmocka_unit_test(test_capabilities),
		cmocka_unit_test(test_slots),
		cmocka_unit_test(test_priors),
		cmocka_unit_test(test_fresh_pool_prefers_the_fastest_class),
		cmocka_unit_test(test_unmeasured_scaled_by_measured),
		cmocka_unit_test(test_learning),
		cmocka_unit_test(test_stale_estimates_are_retried),
		cmocka_unit_test(test_prefer_and_true_ties),
		cmocka_unit_test(test_work_of_a_job),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
