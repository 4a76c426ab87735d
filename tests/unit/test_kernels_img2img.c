/* test_kernels_img2img.c — img2img and hires fix on the CPU engine: output
 * sizes, determinism, denoising_strength's two ends (near 0: the init image
 * back; 1: the txt2img of the same seed), A1111's resize modes, hires fix's
 * size, steps and strength 0, and the bounds. Metric: mean absolute
 * difference per RGB8 channel value (0..255), printed. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "engine.h"
#include "kernels_fixture.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void params(struct engine_params *p, const char *prompt) { fixture_params(p, prompt, 4321, 7); }

static double mad(const uint8_t *a, const uint8_t *b, size_t n)
{
	double s = 0;
	for (size_t i = 0; i < n; i++)
		s += abs((int)a[i] - (int)b[i]);
	return s / (double)n;
}

static double img_mad(const struct engine_image *a, const struct engine_image *b)
{
	assert_int_equal(a->width, b->width);
	assert_int_equal(a->height, b->height);
	return mad(a->rgb, b->rgb, (size_t)a->width * a->height * 3);
}

/* An init image from the engine itself (a different prompt and seed), so
 * that its pixels lie in the decoder's range. */
static struct engine_result init_image(int w, int h)
{
	struct engine_params p;
	struct engine_result r;
	params(&p, "a red circle on a blue background");
	p.width = w;
	p.height = h;
	p.seed = 99;
	gen(&p, &r);
	return r;
}

static void use_init(struct engine_params *p, const struct engine_image *im, float strength)
{
	p->init_rgb = im->rgb;
	p->init_width = im->width;
	p->init_height = im->height;
	p->denoising_strength = strength;
}

static void test_img2img_size_and_determinism(void **state)
{
	struct engine_result init = init_image(128, 128), a, b, c;
	struct engine_params p;
	params(&p, "a green triangle on a gray background");
	p.width = 128;
	p.height = 96;
	use_init(&p, &init.images[0], 0.5f);
	gen(&p, &a);
	gen(&p, &b);
	p.seed++;
	gen(&p, &c);
	assert_int_equal(a.images[0].width, 128);
	assert_int_equal(a.images[0].height, 96);
	double same = img_mad(&a.images[0], &b.images[0]), other = img_mad(&a.images[0], &c.images[0]);
	printf("# img2img 128x96 at 0.5: same seed mad %.3f, next seed %.3f\n", same, other);
	assert_true(same == 0);
	assert_true(other > 0);
	assert_int_equal(engine_steps_total(&p), 7); /* int(0.5 * 12) + 1, as A1111 */
	engine_result_free(&a);
	engine_result_free(&b);
	engine_result_free(&c);
	engine_result_free(&init);
}

static void test_strength_ends(void **state)
{
	struct engine_result init = init_image(128, 128), lo, hi, t2i, t2i_next;
	struct engine_params p;
	params(&p, "a green triangle on a gray background");
	gen(&p, &t2i);
	p.seed++;
	gen(&p, &t2i_next);
	p.seed--;
	use_init(&p, &init.images[0], 0.02f);
	gen(&p, &lo);
	use_init(&p, &init.images[0], 1.0f);
	gen(&p, &hi);
	double lo_init = img_mad(&lo.images[0], &init.images[0]);
	double hi_t2i = img_mad(&hi.images[0], &t2i.images[0]);
	double init_t2i = img_mad(&init.images[0], &t2i.images[0]);
	double seeds = img_mad(&t2i_next.images[0], &t2i.images[0]);
	printf("# strength 0.02: mad to the init image %.2f; strength 1: mad to txt2img of the same seed %.2f "
	       "(init vs that txt2img %.2f, txt2img of the next seed vs it %.2f; per channel value, 0..255)\n",
	       lo_init, hi_t2i, init_t2i, seeds);
	assert_true(lo_init < 8);
	/* At sigma_max (14.6) the init latent (|z| ~ 1 over 1024 values) still
	 * tilts which scenes the posterior favours, so strength 1 is not equal
	 * to the txt2img (nor is it with a trained model, where the init's
	 * colours show through at 1.0); measured here: about 3/4 of the way
	 * from another seed's image to the same seed's. It must be far closer
	 * to that txt2img than to the init image. */
	assert_true(hi_t2i < 0.5 * init_t2i);
	assert_true(hi_t2i < seeds);
	assert_true(img_mad(&hi.images[0], &init.images[0]) > 5 * lo_init);
	engine_result_free(&lo);
	engine_result_free(&hi);
	engine_result_free(&t2i);
	engine_result_free(&t2i_next);
	engine_result_free(&init);
}

static void test_resize_modes(void **state)
{
	/* a wide init (192x64) into a square 128x128 at a low strength */
	struct engine_result init = init_image(192, 64), out[4];
	struct engine_params p;
	params(&p, "a green triangle on a gray background");
	use_init(&p, &init.images[0], 0.05f);
	for (int m = 0; m < 4; m++) {
		p.resize_mode = m;
		gen(&p, &out[m]);
		assert_int_equal(out[m].images[0].width, 128);
		assert_int_equal(out[m].images[0].height, 128);
	}
	printf("# resize modes, mad of each to just-resize: crop %.2f, fill %.2f, latent %.2f\n",
	       img_mad(&out[1].images[0], &out[0].images[0]), img_mad(&out[2].images[0], &out[0].images[0]),
	       img_mad(&out[3].images[0], &out[0].images[0]));
	assert_true(img_mad(&out[1].images[0], &out[0].images[0]) > 1);
	assert_true(img_mad(&out[2].images[0], &out[0].images[0]) > 1);
	/* resize and fill: the top row repeats the init image's edge, so the
	 * rows above the picture are alike; crop: the middle third of a row of
	 * the init appears stretched over the whole width. */
	const uint8_t *f = out[2].images[0].rgb;
	double rows = mad(f, f + 128 * 3 * 8, 128 * 3);
	printf("# fill: mad between rows 0 and 8 %.2f\n", rows);
	assert_true(rows < 3);
	for (int m = 0; m < 4; m++)
		engine_result_free(&out[m]);
	engine_result_free(&init);
}

static int max_step;
static void count_steps(void *user, const struct engine_progress *pr)
{
	(void)user;
	if (pr->step > max_step)
		max_step = pr->step;
	assert_int_equal(pr->steps, 12 + 8);
}

static void test_hires(void **state)
{
	struct engine_params p;
	struct engine_result a, b, plain, zero;
	params(&p, "a green triangle on a gray background");
	p.width = p.height = 64;
	gen(&p, &plain);
	p.hr_width = 128;
	p.hr_height = 96;
	p.hr_steps = 8;
	p.denoising_strength = 0.5f;
	char err[256] = "";
	max_step = 0;
	assert_int_equal(engine_generate(E, &p, count_steps, NULL, NULL, NULL, &a, err, sizeof err), ENGINE_OK);
	assert_int_equal(max_step, 20);
	gen(&p, &b);
	assert_int_equal(a.images[0].width, 128);
	assert_int_equal(a.images[0].height, 96);
	double same = img_mad(&a.images[0], &b.images[0]);
	p.denoising_strength = 0;
	gen(&p, &zero);
	/* strength 0: the first pass's latent upscaled, decoded: close to the
	 * 64x64 image's own pixels at their places */
	double near = 0;
	for (int y = 0; y < 64; y++)
		for (int x = 0; x < 64; x++)
			for (int c = 0; c < 3; c++)
				near += abs((int)plain.images[0].rgb[(y * 64 + x) * 3 + c] -
					    (int)zero.images[0].rgb[((y * 3 / 2) * 128 + x * 2) * 3 + c]);
	near /= 64.0 * 64 * 3;
	printf("# hires 64->128x96: same seed mad %.3f; strength 0 vs the first pass at its places %.2f; "
	       "strength 0.5 vs 0 %.2f\n",
	       same, near, img_mad(&a.images[0], &zero.images[0]));
	assert_true(same == 0);
	assert_true(near < 12);
	assert_true(img_mad(&a.images[0], &zero.images[0]) > 0.5);
	p.hr_upscale = ENGINE_UPSCALE_NEAREST;
	engine_result_free(&b);
	gen(&p, &b);
	assert_true(img_mad(&b.images[0], &zero.images[0]) > 0);
	engine_result_free(&a);
	engine_result_free(&b);
	engine_result_free(&plain);
	engine_result_free(&zero);
}

static void test_bounds(void **state)
{
	struct engine_params p;
	struct engine_result r;
	uint8_t px[3] = {1, 2, 3};
	params(&p, "x");
	p.init_rgb = px;
	p.init_width = 0;
	p.init_height = 1;
	assert_int_equal(gen_rc(&p, &r), ENGINE_EINVAL);
	p.init_width = ENGINE_MAX_INIT_SIZE + 1;
	assert_int_equal(gen_rc(&p, &r), ENGINE_EINVAL);
	p.init_width = 1;
	p.resize_mode = 4;
	assert_int_equal(gen_rc(&p, &r), ENGINE_EINVAL);
	p.resize_mode = 0;
	p.denoising_strength = 1.5f;
	assert_int_equal(gen_rc(&p, &r), ENGINE_EINVAL);
	/* a 1x1 init image is fine */
	p.denoising_strength = 0.3f;
	for (int m = 0; m < 4; m++) {
		p.resize_mode = m;
		gen(&p, &r);
		engine_result_free(&r);
	}
	p.hr_width = p.hr_height = 256;
	assert_int_equal(gen_rc(&p, &r), ENGINE_EINVAL); /* hires with an init image */
	p.init_rgb = NULL;
	p.hr_width = 4096;
	assert_int_equal(gen_rc(&p, &r), ENGINE_EINVAL);
	p.hr_width = 100;
	assert_int_equal(gen_rc(&p, &r), ENGINE_EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_img2img_size_and_determinism),
		cmocka_unit_test(test_strength_ends),
		cmocka_unit_test(test_resize_modes),
		cmocka_unit_test(test_hires),
		cmocka_unit_test(test_bounds),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
