/* bench_engine.c — seconds per image of engine_generate by sampler at 512²
 * and 1024², 25 steps, cfg 7, on the CPU engine and, when one is usable, on
 * the GPU engine. Sampling + decoding only (no PNG). Not a ctest. */
#include "engine.h"

#include <stdio.h>
#include <stdlib.h>

static double run(struct engine *e, enum engine_sampler s, int size, int reps)
{
	struct engine_params p;
	engine_params_default(&p);
	p.prompt = "a red circle and a blue square under a (starry:1.2) night sky, mountains";
	p.negative_prompt = "blurry";
	p.sampler = s;
	p.width = p.height = size;
	p.steps = 25;
	double best = 1e9;
	for (int r = 0; r < reps; r++) {
		struct engine_result res;
		char err[256];
		p.seed = 1000 + (uint64_t)r;
		if (engine_generate(e, &p, NULL, NULL, NULL, NULL, &res, err, sizeof err)) {
			fprintf(stderr, "engine_generate: %s\n", err);
			exit(1);
		}
		if (res.seconds < best)
			best = res.seconds;
		engine_result_free(&res);
	}
	return best;
}

int main(void)
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
