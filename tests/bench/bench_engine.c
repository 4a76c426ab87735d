/* bench_engine.c — seconds per image of engine_generate by sampler at 512²
 * and 1024², 25 steps, cfg 7, on the CPU engine and, when one is usable, on
 * the GPU engine. Sampling + decoding only (no PNG). Not a ctest.
 *
 *   bench_engine            the sampler table
 *   bench_engine img2img    img2img at 512² (0.5, 20 steps) and a hires fix
 *                           512 -> 1024 (0.5, 20 + 20 steps) beside the
 *                           txt2img at 512² and 1024², Euler */
#include "engine.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Best of reps seconds of one configuration. */
static double best_of(struct engine *e, struct engine_params *p, int reps)
{
	double best = 1e9;
	for (int r = 0; r < reps; r++) {
		struct engine_result res;
		char err[256];
		p->seed = 1000 + (uint64_t)r;
		if (engine_generate(e, p, NULL, NULL, NULL, NULL, &res, err, sizeof err)) {
			fprintf(stderr, "engine_generate: %s\n", err);
			exit(1);
		}
		if (res.seconds < best)
			best = res.seconds;
		engine_result_free(&res);
	}
	return best;
}

static double run(struct engine *e, enum engine_sampler s, int size, int reps)
{
	struct engine_params p;
	engine_params_default(&p);
	p.prompt = "a red circle and a blue square under a (starry:1.2) night sky, mountains";
	p.negative_prompt = "blurry";
	p.sampler = s;
	p.width = p.height = size;
	p.steps = 25;
	return best_of(e, &p, reps);
}

static void second_passes(struct engine *const devs[2])
{
	static uint8_t init[512 * 512 * 3];
	for (size_t i = 0; i < sizeof init; i++)
		init[i] = (uint8_t)((i * 37) >> 8); /* bands of colour */
	printf("| job                                       | device | engine s/img (best of 3) |\n");
	printf("|-------------------------------------------|--------|--------------------------|\n");
	for (int d = 0; d < 2; d++) {
		if (!devs[d])
			continue;
		struct engine_params p;
		for (int k = 0; k < 4; k++) {
			engine_params_default(&p);
			p.prompt = "a red circle and a blue square under a (starry:1.2) night sky, mountains";
			p.steps = 20;
			p.width = p.height = k == 1 ? 1024 : 512;
			if (k == 2) {
				p.init_rgb = init;
				p.init_width = p.init_height = 512;
				p.denoising_strength = 0.5f;
			} else if (k == 3) {
				p.hr_width = p.hr_height = 1024;
				p.denoising_strength = 0.5f;
			}
			static const char *const NAME[] = {"txt2img 512x512, 20 steps", "txt2img 1024x1024, 20 steps",
							   "img2img 512x512, 20 steps at 0.5 (11 run)",
							   "hires fix 512->1024, 20 + 20 steps, 0.5"};
			best_of(devs[d], &p, 1); /* warm-up */
			printf("| %-41s | %-6s | %24.4f |\n", NAME[k], d ? "gpu" : "cpu", best_of(devs[d], &p, 3));
			fflush(stdout);
		}
	}
}

int main(int argc, char **argv)
{
	char why[256];
	struct engine *cpu = engine_create(&(struct engine_config){.force_cpu = 1}, NULL, 0);
	struct engine *gpu = engine_create(&(struct engine_config){0}, why, sizeof why);
	printf("# %s\n", why);
	if (!engine_uses_gpu(gpu)) {
		engine_destroy(gpu);
		gpu = NULL;
	}
	struct engine *devs[2] = {cpu, gpu};
	if (argc > 1 && !strcmp(argv[1], "img2img")) {
		second_passes(devs);
		engine_destroy(cpu);
		engine_destroy(gpu);
		return 0;
	}
	printf("| sampler      | size      | device | engine s/img (best of 3) |\n");
	printf("|--------------|-----------|--------|--------------------------|\n");
	for (int size = 512; size <= 1024; size *= 2)
		for (int s = 0; s < ENGINE_SAMPLER_COUNT; s++)
			for (int d = 0; d < 2; d++) {
				if (!devs[d])
					continue;
				run(devs[d], s, size, 1); /* warm-up */
				printf("| %-12s | %4dx%-4d | %-6s | %24.4f |\n", engine_sampler_name(s), size, size,
				       d ? "gpu" : "cpu", run(devs[d], s, size, 3));
				fflush(stdout);
			}
	engine_destroy(cpu);
	engine_destroy(gpu);
	return 0;
}
