/* Unit tests of balancer/router: earliest expected finish, GPU/price/
 * checkpoint filters, no head-of-line blocking, ties, unknown speeds. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>
#include <strings.h>

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

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_fastest_idle_wins),
		cmocka_unit_test(test_waits_for_a_fast_backend_about_to_free),
		cmocka_unit_test(test_gpu_filter_and_none),
		cmocka_unit_test(test_no_head_of_line_blocking),
		cmocka_unit_test(test_price_and_ties),
		cmocka_unit_test(test_unknown_speeds_spread),
		cmocka_unit_test(test_checkpoints_and_switching),
		cmocka_unit_test(test_slots),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
