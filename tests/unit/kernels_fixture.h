/* kernels_fixture.h — what the engine's cmocka tests share: one CPU engine
 * for the group (setup/teardown) and gen(), which runs engine_generate and
 * asserts it made every image; fixture_params, a small job. Included once, by a test's .c file, after
 * cmocka.h and engine.h. */
#ifndef SDGATE_KERNELS_FIXTURE_H
#define SDGATE_KERNELS_FIXTURE_H

#include <stdint.h>
#include <stdio.h>

static struct engine *E;

static int setup(void **state)
{
	char why[256] = "";
	struct engine_config cfg = {.force_cpu = 1};
	(void)state;
	E = engine_create(&cfg, why, sizeof why);
	printf("# %s\n", why);
	return E ? 0 : -1;
}

static int teardown(void **state)
{
	(void)state;
	engine_destroy(E);
	return 0;
}

/* A small job's parameters: 128x128, 12 steps, the given seeds. */
static void fixture_params(struct engine_params *p, const char *prompt, uint64_t seed, uint64_t subseed)
{
	engine_params_default(p);
	p->prompt = prompt;
	p->width = p->height = 128;
	p->steps = 12;
	p->seed = seed;
	p->subseed = subseed;
}

/* engine_generate on E without callbacks; prints why it failed. */
static int gen_rc(const struct engine_params *p, struct engine_result *r)
{
	char err[256] = "";
	int rc = engine_generate(E, p, NULL, NULL, NULL, NULL, r, err, sizeof err);
	if (rc)
		printf("# engine_generate: %s\n", err);
	return rc;
}

static void gen(const struct engine_params *p, struct engine_result *r)
{
	assert_int_equal(gen_rc(p, r), ENGINE_OK);
	assert_int_equal(r->count, p->batch_size * p->n_iter);
}

#endif
