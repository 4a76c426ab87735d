/* sampler.h — the denoiser (exact posterior mean of the scene mixture, with
 * classifier-free guidance) and the k-diffusion samplers, written once
 * against ops.h so the same code drives the CPU and the GPU. */
#ifndef SDGATE_SAMPLER_H
#define SDGATE_SAMPLER_H

#include "engine.h"
#include "ops.h"

#define SAMPLER_WORK 12 /* scratch vectors a job needs */

/* One prior on the device: means[0..kc) are the prompt's scenes (the
 * conditional prior, weights 1/kc), means[kc..kc+ku) the unconditional
 * prior's (engine.c: each prompt scene blended a little with the negative
 * prompt's scene of the same index). SAMPLER_UNCOND_SHARE > 0 would also put
 * the prompt's own scenes into the unconditional prior with that mass; 0
 * (the default) leaves them out, so that guidance keeps acting at low noise. */
#ifndef SAMPLER_UNCOND_SHARE
#define SAMPLER_UNCOND_SHARE 0.0
#endif
struct sampler_model {
	const float *means;
	int kc, ku;
	float s; /* each component's standard deviation */
};

struct sampler_job {
	const struct ops *ops;
	enum engine_sampler sampler;
	const double *sigmas; /* steps+1, the last 0 */
	int steps;
	float eta; /* resolved: >= 0 */
	float s_churn, s_tmin, s_tmax, s_noise;
	uint64_t seed; /* the image's seed: per-step noise */
	const struct sampler_model *base, *refiner;
	int switch_step; /* steps >= switch_step use the refiner (if any) */
	float cfg;
	size_t n;                  /* latent floats */
	float *x;                  /* in: x_T (noise * sigma_0); out: the sample */
	float *work[SAMPLER_WORK]; /* device scratch, n floats each */
	/* After each step (1-based): den is that step's denoised estimate. */
	void (*progress)(void *user, int step, const float *den);
	/* Asked before each step: non-zero stops sampling; x then becomes the
	 * latest denoised estimate (or stays as it is before the first step). */
	int (*stop)(void *user);
	void *user;
	int model_calls; /* out: denoiser evaluations */
};

/* Returns 0 when all steps ran, 1 when stopped early, -1 on a device error
 * (ops->error() says which). */
int sampler_run(struct sampler_job *j);

/* The eta a sampler uses when the request gives none (eta < 0). */
float sampler_default_eta(enum engine_sampler s);

/* k-diffusion's get_ancestral_step. */
void sampler_ancestral_step(double sigma, double sigma_next, double eta, double *down, double *up);

/* The denoiser alone, for tests: den = D_cfg(x, sigma). Returns 0 or -1. */
int sampler_denoise(const struct ops *ops, const struct sampler_model *m, float cfg, const float *x, double sigma,
		    size_t n, float *den);

#endif
