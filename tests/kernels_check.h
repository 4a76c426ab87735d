/* kernels_check.h — what the two halves of tests/kernels_check share:
 * kernels_check.c (main; the CPU reference against the CUDA ops) and
 * kernels_reference.c (the CPU images against the stored reference in
 * tests/data/kernels, which needs no GPU). */
#ifndef SDGATE_KERNELS_CHECK_H
#define SDGATE_KERNELS_CHECK_H

#include "engine.h"

#define KC_SIZE 256 /* the test images' width and height */

/* The test image of sampler s: 256x256, 25 steps, cfg 7, seed 4242, one
 * fixed prompt and negative prompt. Returns engine_generate's status (and
 * prints why when it fails); on success the caller frees r. */
int kc_generate(struct engine *e, enum engine_sampler s, struct engine_result *r);

/* Compares cpu's test image of every sampler with DIR/<sampler>.ppm and
 * prints one line per sampler. Returns the number of failures. */
int kc_reference_check(struct engine *cpu, const char *dir);

/* Writes DIR/<sampler>.ppm for every sampler (after an intended change to the
 * engine's images). Returns the number of failures. */
int kc_reference_write(struct engine *cpu, const char *dir);

#endif
