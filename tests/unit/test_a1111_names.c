/* Unit tests of a1111/names.c: A1111 1.10's 20 samplers and 12 schedulers,
 * both naming styles (combined "DPM++ 2M Karras", aliases, the old "_ka"),
 * the runnable subset (the native engine's, or every name), the listings. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "a1111.h"

static void expect(const char *name, const char *sched, const struct a1111_runnable *run, const char *want_sampler,
		   const char *want_sched)
{
	int s = -1, k = -1;
	assert_int_equal(a1111_resolve_sampler(name, sched, run, &s, &k), 0);
	assert_string_equal(A1111_SAMPLERS[s].name, want_sampler);
	assert_string_equal(A1111_SCHEDULERS[k].name, want_sched);
}

static void test_combined_names(void **state)
{
	(void)state;
	expect("DPM++ 2M Karras", NULL, &A1111_NATIVE, "DPM++ 2M", "karras");
	expect("DPM++ 2M", "karras", &A1111_NATIVE, "DPM++ 2M", "karras");
	expect("dpm++ sde karras", "Automatic", &A1111_NATIVE, "DPM++ SDE", "karras");
	expect("DPM++ 2M Karras", "exponential", &A1111_NATIVE, "DPM++ 2M", "exponential");
	expect("DPM++ 2M SDE Exponential", NULL, &A1111_NATIVE, "DPM++ 2M SDE", "exponential");
	expect("k_lms_ka", NULL, &A1111_NATIVE, "LMS", "karras");
	expect("k_euler_ancestral", "", &A1111_NATIVE, "Euler a", "automatic");
	expect("ddim", "SGM Uniform", &A1111_NATIVE, "DDIM", "sgm_uniform");
	expect(NULL, NULL, &A1111_NATIVE, "Euler", "automatic");
	/* "DPM++ 2M SDE Heun" is a sampler of its own, not DPM++ 2M SDE + a scheduler */
	expect("DPM++ 2M SDE Heun", NULL, NULL, "DPM++ 2M SDE Heun", "automatic");
	expect("DPM2 a Karras", NULL, NULL, "DPM2 a", "karras");
	expect("UniPC", "SGMUniform", NULL, "UniPC", "sgm_uniform");
	expect("Euler", "Align Your Steps", NULL, "Euler", "align_your_steps");
	int s, k;
	assert_int_equal(a1111_resolve_sampler("Euler Karras Karras", NULL, NULL, &s, &k), -1);
	assert_int_equal(a1111_resolve_sampler("Nope", "beta", NULL, &s, &k), -1);
	assert_int_equal(a1111_resolve_sampler("Euler", "wobbly", NULL, &s, &k), -2);
	printf("# combined names, aliases and both scheduler spellings resolve\n");
}

static void test_runnable(void **state)
{
	(void)state;
	int s, k;
	/* every A1111 name, but the native engine runs a subset */
	assert_int_equal(a1111_resolve_sampler("UniPC", NULL, NULL, &s, &k), 0);
	assert_int_equal(a1111_resolve_sampler("UniPC", NULL, &A1111_NATIVE, &s, &k), -1);
	assert_int_equal(a1111_resolve_sampler("Euler", "beta", NULL, &s, &k), 0);
	assert_int_equal(a1111_resolve_sampler("Euler", "beta", &A1111_NATIVE, &s, &k), -2);
	static const char *const ONLY[] = {"UniPC", NULL};
	struct a1111_runnable run = {ONLY, NULL, NULL, 0};
	assert_int_equal(a1111_resolve_sampler("Euler", NULL, &run, &s, &k), -1);
	assert_int_equal(a1111_resolve_sampler("unipc", "kl_optimal", &run, &s, &k), 0);
	int n = 0;
	for (int i = 0; i < A1111_SAMPLER_COUNT; i++) {
		const char *name = A1111_SAMPLERS[i].name;
		assert_int_equal(a1111_sampler_find(name, strlen(name)), i);
		for (const char *const *a = A1111_SAMPLERS[i].aliases; *a; a++)
			assert_int_equal(a1111_sampler_find(*a, strlen(*a)), i);
		n += a1111_resolve_sampler(name, NULL, &A1111_NATIVE, &s, &k) == 0;
	}
	for (int i = 0; i < A1111_SCHEDULER_COUNT; i++) {
		assert_int_equal(a1111_scheduler_find(A1111_SCHEDULERS[i].name), i);
		assert_int_equal(a1111_scheduler_find(A1111_SCHEDULERS[i].label), i);
	}
	assert_int_equal(n, 8);
	printf("# %d A1111 samplers, %d schedulers; the native engine runs %d samplers\n", A1111_SAMPLER_COUNT,
	       A1111_SCHEDULER_COUNT, n);
}

static void test_listings(void **state)
{
	(void)state;
	json_t *all = a1111_samplers_json(NULL), *native = a1111_samplers_json(&A1111_NATIVE);
	json_t *sch = a1111_schedulers_json(NULL), *nsch = a1111_schedulers_json(&A1111_NATIVE);
	assert_int_equal(json_array_size(all), 20);
	assert_int_equal(json_array_size(native), 8);
	assert_int_equal(json_array_size(sch), 12);
	assert_int_equal(json_array_size(nsch), 6);
	json_t *first = json_array_get(native, 0);
	assert_string_equal(json_string_value(json_object_get(first, "name")), "DPM++ 2M");
	assert_string_equal(json_string_value(json_array_get(json_object_get(first, "aliases"), 0)), "k_dpmpp_2m");
	json_t *karras = json_array_get(sch, 2);
	assert_string_equal(json_string_value(json_object_get(karras, "label")), "Karras");
	assert_true(json_real_value(json_object_get(karras, "default_rho")) == 7.0);
	json_decref(all);
	json_decref(native);
	json_decref(sch);
	json_decref(nsch);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_combined_names),
		cmocka_unit_test(test_runnable),
		cmocka_unit_test(test_listings),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
