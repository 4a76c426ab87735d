/* test_kernels_schedule.c — every schedule: steps+1 sigmas, strictly
 * decreasing, from about sigma_max (DDIM: its first timestep) down to 0. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "schedule.h"

#include <math.h>

static void test_model_range(void **state)
{
	assert_true(fabs(schedule_sigma_min() - 0.0292) < 0.0005);
	assert_true(fabs(schedule_sigma_max() - 14.6146) < 0.01);
	for (double t = 0; t <= 999; t += 37.5)
		assert_true(fabs(schedule_sigma_to_t(schedule_t_to_sigma(t)) - t) < 1e-6);
}

static void test_all_schedules(void **state)
{
	static const int counts[] = {1, 2, 3, 10, 25, 150};
	double s[152];
	for (int sm = 0; sm < ENGINE_SAMPLER_COUNT; sm++)
		for (int sc = 0; sc < ENGINE_SCHEDULE_COUNT; sc++)
			for (int c = 0; c < 6; c++) {
				int n = counts[c];
				s[n + 1] = -123; /* must stay untouched */
				assert_int_equal(schedule_sigmas(sm, sc, n, s), 0);
				assert_true(s[n + 1] == -123);
				assert_true(s[n] == 0.0);
				for (int i = 0; i < n; i++)
					assert_true(s[i] > s[i + 1]);
				int ddim = sm == ENGINE_SAMPLER_DDIM && sc == ENGINE_SCHEDULE_AUTOMATIC;
				double first = ddim ? schedule_t_to_sigma(1 + (n - 1) * (1000 / n))
						    : schedule_sigma_max();
				assert_true(fabs(s[0] - first) / first < 0.01);
				if (n > 1 && sc != ENGINE_SCHEDULE_SGM_UNIFORM && !ddim)
					assert_true(fabs(s[n - 1] - schedule_sigma_min()) < 1e-3);
			}
	assert_int_equal(schedule_sigmas(0, ENGINE_SCHEDULE_KARRAS, 0, s), -1);
	assert_int_equal(schedule_sigmas(0, ENGINE_SCHEDULE_COUNT, 5, s), -1);
}

static void test_shapes(void **state)
{
	double k[11], u[11], e[11];
	schedule_sigmas(ENGINE_SAMPLER_EULER, ENGINE_SCHEDULE_KARRAS, 10, k);
	schedule_sigmas(ENGINE_SAMPLER_EULER, ENGINE_SCHEDULE_UNIFORM, 10, u);
	schedule_sigmas(ENGINE_SAMPLER_EULER, ENGINE_SCHEDULE_EXPONENTIAL, 10, e);
	/* Karras spends more steps at low noise than uniform; exponential has a
	 * constant ratio. */
	assert_true(k[5] < u[5]);
	for (int i = 1; i < 9; i++)
		assert_true(fabs(e[i + 1] / e[i] - e[1] / e[0]) < 1e-9);
	/* automatic = the sampler's default */
	double a[11], b[11];
	schedule_sigmas(ENGINE_SAMPLER_DPMPP_2M, ENGINE_SCHEDULE_AUTOMATIC, 10, a);
	schedule_sigmas(ENGINE_SAMPLER_DPMPP_2M, ENGINE_SCHEDULE_KARRAS, 10, b);
	for (int i = 0; i <= 10; i++)
		assert_true(a[i] == b[i]);
	assert_int_equal(schedule_default(ENGINE_SAMPLER_EULER_A), ENGINE_SCHEDULE_UNIFORM);
	assert_int_equal(schedule_default(ENGINE_SAMPLER_DPMPP_2M_SDE), ENGINE_SCHEDULE_EXPONENTIAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_model_range),
		cmocka_unit_test(test_all_schedules),
		cmocka_unit_test(test_shapes),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
