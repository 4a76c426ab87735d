/* bench_png — what the backend adds after sampling: PNG encoding and base64,
 * timed separately, beside stb_image_write's default settings as the
 * reference, on real images from the built-in model at 512² and 1024².
 * Prints a table; not a test. Usage: bench_png [repeats] */
#include "b64.h"
#include "engine.h"
#include "png.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

unsigned char *bench_stb_default_png(const unsigned char *rgb, int w, int h, int *len);

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

static double median(double *v, int n)
{
	qsort(v, (size_t)n, sizeof *v, cmp);
	return v[n / 2];
}

int main(int argc, char **argv)
{
	int reps = argc > 1 ? atoi(argv[1]) : 5;
	if (reps < 1 || reps > 100)
		reps = 5;
	png_init();
	struct engine_config ec = {.force_cpu = 1};
	char why[256];
	struct engine *e = engine_create(&ec, why, sizeof why);
	if (!e)
		return 1;
	printf("bench_png: median of %d runs; image from the built-in model (DPM++ 2M Karras, 25 steps, CPU)\n\n",
	       reps);
	printf("| size | engine s | PNG ms (sdgate: zlib L1, Paeth) | PNG KiB | PNG ms (stb defaults, reference) | PNG "
	       "KiB | base64 ms |\n");
	printf("|---|---|---|---|---|---|---|\n");
	const int sizes[] = {512, 1024};
	for (int s = 0; s < 2; s++) {
		struct engine_params p;
		engine_params_default(&p);
		p.prompt = "futuristic city with neon lights, rainy streets, bright colors, detailed";
		p.negative_prompt = "blurry";
		p.seed = 1234;
		p.steps = 25;
		p.width = p.height = sizes[s];
		engine_resolve_sampler("DPM++ 2M Karras", NULL, &p.sampler, &p.schedule);
		struct engine_result r;
		char err[256];
		double t0 = now();
		if (engine_generate(e, &p, NULL, NULL, NULL, NULL, &r, err, sizeof err) != ENGINE_OK) {
			fprintf(stderr, "engine: %s\n", err);
			return 1;
		}
		double engine_s = now() - t0;
		const unsigned char *rgb = r.images[0].rgb;
		double t_ours[100], t_ref[100], t_b64[100];
		size_t ours_len = 0;
		int ref_len = 0;
		for (int i = 0; i < reps; i++) {
			t0 = now();
			unsigned char *png = png_encode(rgb, sizes[s], sizes[s], "parameters text", &ours_len);
			t_ours[i] = now() - t0;
			t0 = now();
			char *b = b64_encode_new(png, ours_len);
			t_b64[i] = now() - t0;
			t0 = now();
			unsigned char *ref = bench_stb_default_png(rgb, sizes[s], sizes[s], &ref_len);
			t_ref[i] = now() - t0;
			free(png);
			free(b);
			free(ref);
		}
		printf("| %d² | %.3f | %.1f | %zu | %.1f | %d | %.2f |\n", sizes[s], engine_s,
		       median(t_ours, reps) * 1e3, ours_len / 1024, median(t_ref, reps) * 1e3, ref_len / 1024,
		       median(t_b64, reps) * 1e3);
		engine_result_free(&r);
	}
	engine_destroy(e);
	return 0;
}
