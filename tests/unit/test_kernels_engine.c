/* test_kernels_engine.c — engine_generate end to end on the CPU engine:
 * determinism, seeds, prompt colours, negative prompt, interrupt/skip,
 * batches, refiner, names and models. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "engine.h"
#include "kernels_fixture.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void params(struct engine_params *p, const char *prompt) { fixture_params(p, prompt, 1234, 99); }

static size_t bytes(const struct engine_image *im) { return (size_t)im->width * im->height * 3; }

static void mean_rgb(const struct engine_image *im, double m[3])
{
	m[0] = m[1] = m[2] = 0;
	size_t n = (size_t)im->width * im->height;
	for (size_t i = 0; i < n; i++)
		for (int c = 0; c < 3; c++)
			m[c] += im->rgb[i * 3 + c];
	for (int c = 0; c < 3; c++)
		m[c] /= (double)n;
}

static double mean_absdiff(const struct engine_image *a, const struct engine_image *b)
{
	double s = 0;
	for (size_t i = 0; i < bytes(a); i++)
		s += abs((int)a->rgb[i] - (int)b->rgb[i]);
	return s / (double)bytes(a);
}

static void test_determinism_and_seeds(void **state)
{
	struct engine_params p;
	struct engine_result a, b, c;
	params(&p, "a green triangle on a gray background");
	for (int s = 0; s < ENGINE_SAMPLER_COUNT; s++) {
		p.sampler = (enum engine_sampler)s;
		p.seed = 1234;
		gen(&p, &a);
		gen(&p, &b);
		assert_int_equal(a.images[0].width, 128);
		assert_memory_equal(a.images[0].rgb, b.images[0].rgb, bytes(&a.images[0]));
		p.seed = 1235;
		gen(&p, &c);
		double d = mean_absdiff(&a.images[0], &c.images[0]);
		printf("# %-12s seed 1234 vs 1235: mean |diff| %.2f\n", engine_sampler_name(p.sampler), d);
		assert_true(d > 1.0);
		engine_result_free(&a);
		engine_result_free(&b);
		engine_result_free(&c);
	}
}

static void test_colour_words(void **state)
{
	struct engine_params p;
	struct engine_result r, b;
	double mr[3], mb[3];
	for (uint64_t seed = 1; seed <= 4; seed++) {
		params(&p, "a red circle");
		p.seed = seed;
		gen(&p, &r);
		params(&p, "a blue square");
		p.seed = seed;
		gen(&p, &b);
		mean_rgb(&r.images[0], mr);
		mean_rgb(&b.images[0], mb);
		printf("# seed %d red %.0f %.0f %.0f | blue %.0f %.0f %.0f\n", (int)seed, mr[0], mr[1], mr[2], mb[0],
		       mb[1], mb[2]);
		assert_true(mr[0] > mr[1] + 40 && mr[0] > mr[2] + 40);
		assert_true(mb[2] > mb[0] + 40 && mb[2] > mb[1] + 40);
		engine_result_free(&r);
		engine_result_free(&b);
	}
}

static void test_negative_prompt(void **state)
{
	struct engine_params p;
	struct engine_result a, b;
	params(&p, "a circle and a square");
	gen(&p, &a);
	p.negative_prompt = "red, blurry";
	gen(&p, &b);
	double d = mean_absdiff(&a.images[0], &b.images[0]);
	printf("# negative prompt: mean |diff| %.2f\n", d);
	assert_true(d > 1.0);
	engine_result_free(&a);
	engine_result_free(&b);
	/* cfg 1: the negative prompt has no effect, as A1111 skips uncond */
	p.cfg_scale = 1;
	p.negative_prompt = "";
	gen(&p, &a);
	p.negative_prompt = "red, blurry";
	gen(&p, &b);
	assert_memory_equal(a.images[0].rgb, b.images[0].rgb, bytes(&a.images[0]));
	engine_result_free(&a);
	engine_result_free(&b);
}

struct counter {
	int calls, previews, last_step, stop_at;
	atomic_int *flag;
	int w, h;
};

static void on_progress(void *user, const struct engine_progress *pr)
{
	struct counter *c = user;
	c->calls++;
	c->last_step = pr->step;
	if (pr->preview) {
		c->previews++;
		c->w = pr->preview_width;
		c->h = pr->preview_height;
	}
	if (c->flag && c->calls == c->stop_at)
		atomic_store(c->flag, 1);
}

static void test_progress_and_interrupt(void **state)
{
	struct engine_params p;
	struct engine_result r;
	char err[128];
	params(&p, "stars at night");
	p.preview_every = 3;
	p.batch_size = 2;
	struct counter c = {0};
	assert_int_equal(engine_generate(E, &p, on_progress, &c, NULL, NULL, &r, err, sizeof err), 0);
	assert_int_equal(c.calls, 24);
	assert_int_equal(c.previews, 8);
	assert_int_equal(c.w, 16);
	assert_int_equal(c.h, 16);
	assert_int_equal(r.interrupted, 0);
	engine_result_free(&r);

	atomic_int stop = 0;
	struct counter ci = {.flag = &stop, .stop_at = 5};
	assert_int_equal(engine_generate(E, &p, on_progress, &ci, &stop, NULL, &r, err, sizeof err), 0);
	assert_int_equal(r.interrupted, 1);
	assert_int_equal(r.count, 1);
	assert_int_equal(ci.calls, 5);
	assert_non_null(r.images[0].rgb);
	engine_result_free(&r);
}

static void test_skip(void **state)
{
	struct engine_params p;
	struct engine_result r;
	char err[128];
	params(&p, "a yellow sun");
	p.batch_size = 3;
	atomic_int skip = 0;
	struct counter c = {.flag = &skip, .stop_at = 4};
	assert_int_equal(engine_generate(E, &p, on_progress, &c, NULL, &skip, &r, err, sizeof err), 0);
	assert_int_equal(r.count, 3);
	assert_int_equal(r.interrupted, 0);
	assert_int_equal(c.calls, 4 + 12 + 12); /* the first image ended after 4 steps */
	assert_int_equal(atomic_load(&skip), 0);
	engine_result_free(&r);
}

static void test_batch_seeds(void **state)
{
	struct engine_params p;
	struct engine_result batch, one;
	params(&p, "a purple ring");
	p.batch_size = 2;
	p.n_iter = 2;
	gen(&p, &batch);
	for (int i = 0; i < 4; i++) {
		assert_true(batch.images[i].seed == 1234 + (uint64_t)i);
		assert_true(batch.images[i].subseed == 99 + (uint64_t)i);
	}
	/* image 2 of the batch is the single image of seed+2 */
	params(&p, "a purple ring");
	p.seed = 1236;
	gen(&p, &one);
	assert_memory_equal(batch.images[2].rgb, one.images[0].rgb, bytes(&one.images[0]));
	engine_result_free(&one);
	/* subseed_strength moves the image towards the subseed's */
	p.subseed_strength = 0.5f;
	gen(&p, &one);
	assert_true(mean_absdiff(&batch.images[2], &one.images[0]) > 0.5);
	engine_result_free(&one);
	engine_result_free(&batch);
}

static void test_refiner(void **state)
{
	struct engine_params p;
	struct engine_result a, b, other;
	params(&p, "a white sphere on a checkerboard");
	p.width = p.height = 256;
	p.steps = 20;
	gen(&p, &a);
	p.refiner_model = engine_model_find("sdgate-procedural-refiner-v1");
	p.refiner_switch_at = 0.6f;
	gen(&p, &b);
	params(&p, "a white sphere on a checkerboard");
	p.width = p.height = 256;
	p.steps = 20;
	p.seed = 777;
	gen(&p, &other);
	double d = mean_absdiff(&a.images[0], &b.images[0]), far = mean_absdiff(&a.images[0], &other.images[0]);
	printf("# refiner: mean |diff| %.2f (another seed: %.2f)\n", d, far);
	assert_true(d > 0.5);     /* the refiner changed it */
	assert_true(d < far / 2); /* but kept the layout */
	engine_result_free(&a);
	engine_result_free(&b);
	engine_result_free(&other);
}

static void test_invalid(void **state)
{
	struct engine_params p;
	struct engine_result r;
	char err[128] = "";
	params(&p, "x");
	p.width = 100;
	assert_int_equal(engine_generate(E, &p, NULL, NULL, NULL, NULL, &r, err, sizeof err), ENGINE_EINVAL);
	assert_non_null(strstr(err, "width"));
	params(&p, "x");
	p.steps = 0;
	assert_int_equal(engine_generate(E, &p, NULL, NULL, NULL, NULL, &r, err, sizeof err), ENGINE_EINVAL);
	params(&p, "x");
	p.model = 7;
	assert_int_equal(engine_generate(E, &p, NULL, NULL, NULL, NULL, &r, err, sizeof err), ENGINE_EINVAL);
}

static void test_names(void **state)
{
	enum engine_sampler s;
	enum engine_schedule sc;
	assert_int_equal(engine_resolve_sampler("DPM++ 2M", "karras", &s, &sc), 0);
	assert_int_equal(s, ENGINE_SAMPLER_DPMPP_2M);
	assert_int_equal(sc, ENGINE_SCHEDULE_KARRAS);
	assert_int_equal(engine_resolve_sampler("DPM++ 2M Karras", NULL, &s, &sc), 0);
	assert_int_equal(s, ENGINE_SAMPLER_DPMPP_2M);
	assert_int_equal(sc, ENGINE_SCHEDULE_KARRAS);
	assert_int_equal(engine_resolve_sampler("dpm++ sde karras", "Automatic", &s, &sc), 0);
	assert_int_equal(s, ENGINE_SAMPLER_DPMPP_SDE);
	assert_int_equal(sc, ENGINE_SCHEDULE_KARRAS);
	assert_int_equal(engine_resolve_sampler("DPM++ 2M Karras", "exponential", &s, &sc), 0);
	assert_int_equal(sc, ENGINE_SCHEDULE_EXPONENTIAL); /* explicit wins */
	assert_int_equal(engine_resolve_sampler("k_dpmpp_2m", NULL, &s, &sc), 0);
	assert_int_equal(s, ENGINE_SAMPLER_DPMPP_2M);
	assert_int_equal(sc, ENGINE_SCHEDULE_AUTOMATIC);
	assert_int_equal(engine_resolve_sampler("Euler a", "Automatic", &s, &sc), 0);
	assert_int_equal(s, ENGINE_SAMPLER_EULER_A);
	assert_int_equal(engine_resolve_sampler("k_euler_a", "", &s, &sc), 0);
	assert_int_equal(s, ENGINE_SAMPLER_EULER_A);
	assert_int_equal(engine_resolve_sampler("k_dpmpp_2m_sde", "sgm_uniform", &s, &sc), 0);
	assert_int_equal(s, ENGINE_SAMPLER_DPMPP_2M_SDE);
	assert_int_equal(sc, ENGINE_SCHEDULE_SGM_UNIFORM);
	assert_int_equal(engine_resolve_sampler("k_lms_ka", NULL, &s, &sc), 0);
	assert_int_equal(s, ENGINE_SAMPLER_LMS);
	assert_int_equal(sc, ENGINE_SCHEDULE_KARRAS);
	assert_int_equal(engine_resolve_sampler("ddim", "SGM Uniform", &s, &sc), 0);
	assert_int_equal(s, ENGINE_SAMPLER_DDIM);
	assert_int_equal(engine_resolve_sampler(NULL, NULL, &s, &sc), 0);
	assert_int_equal(s, ENGINE_SAMPLER_EULER);
	assert_int_equal(engine_resolve_sampler("Euler Karras Karras", NULL, &s, &sc), -1);
	assert_int_equal(engine_resolve_sampler("UniPC", NULL, &s, &sc), -1);
	assert_int_equal(engine_resolve_sampler("Euler", "beta", &s, &sc), -2);
	assert_int_equal(engine_resolve_sampler("Nope", "beta", &s, &sc), -1);
	for (int i = 0; i < ENGINE_SAMPLER_COUNT; i++) {
		assert_int_equal(engine_resolve_sampler(engine_sampler_name(i), NULL, &s, &sc), 0);
		assert_int_equal(s, i);
		for (const char *const *a = engine_sampler_aliases(i); *a; a++) {
			assert_int_equal(engine_resolve_sampler(*a, NULL, &s, &sc), 0);
			assert_int_equal(s, i);
		}
	}
	for (int i = 0; i < ENGINE_SCHEDULE_COUNT; i++) {
		assert_int_equal(engine_resolve_sampler("Euler", engine_schedule_label(i), &s, &sc), 0);
		assert_int_equal(sc, i);
		assert_int_equal(engine_resolve_sampler("Euler", engine_schedule_name(i), &s, &sc), 0);
		assert_int_equal(sc, i);
	}
}

/* The documented derivation: sha256 = splitmix64(fnv1a64(name) + i), i < 4. */
static uint64_t mix64(uint64_t z)
{
	z += 0x9E3779B97F4A7C15ULL;
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
	return z ^ (z >> 31);
}

static void test_models(void **state)
{
	assert_int_equal(engine_model_count(), 2);
	for (int i = 0; i < engine_model_count(); i++) {
		const struct engine_model_info *m = engine_model_get(i);
		assert_int_equal(engine_model_find(m->title), i);
		assert_int_equal(engine_model_find(m->model_name), i);
		assert_int_equal(engine_model_find(m->hash), i);
		assert_int_equal(m->is_refiner, i == 1);
		uint64_t h = 0xcbf29ce484222325ULL;
		for (const char *c = m->model_name; *c; c++)
			h = (h ^ (unsigned char)*c) * 0x100000001b3ULL;
		char sha[65];
		for (int k = 0; k < 4; k++)
			snprintf(sha + 16 * k, 17, "%016llx", (unsigned long long)mix64(h + (uint64_t)k));
		assert_string_equal(m->sha256, sha);
		assert_memory_equal(m->hash, sha, 10);
		char title[128];
		snprintf(title, sizeof title, "%s.builtin [%s]", m->model_name, m->hash);
		assert_string_equal(m->title, title);
	}
	assert_int_equal(engine_model_find("sdgate-procedural-base-v1.builtin"), 0);
	assert_int_equal(engine_model_find("v1-5-pruned-emaonly.safetensors"), -1);
	assert_int_equal(engine_model_find(NULL), -1);
	assert_null(engine_model_get(2));
	assert_string_equal(engine_device_name(E), "cpu");
	assert_int_equal(engine_uses_gpu(E), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_names),
		cmocka_unit_test(test_models),
		cmocka_unit_test(test_invalid),
		cmocka_unit_test(test_determinism_and_seeds),
		cmocka_unit_test(test_colour_words),
		cmocka_unit_test(test_negative_prompt),
		cmocka_unit_test(test_progress_and_interrupt),
		cmocka_unit_test(test_skip),
		cmocka_unit_test(test_batch_seeds),
		cmocka_unit_test(test_refiner),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
