/* engine.c — engine_create/destroy (device choice), engine_generate (scenes
 * for the prompt, then per image: initial noise, sampling, decoding) and
 * engine_params_default. Names and models live in names.c.
 *
 * Device choice: CUDA when built with it, not forced off, and
 * cudaGetDeviceCount and a probe succeed; otherwise the CPU reference, with
 * the reason in engine_create's `why`. A CUDA failure in the middle of a job
 * fails that job with ENGINE_EDEVICE and moves the engine to the CPU for the
 * jobs after it (engine_uses_gpu() then answers 0). */
#include "engine.h"
#include "ops.h"
#include "philox.h"
#include "sampler.h"
#include "scene.h"
#include "schedule.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define ENGINE_SCENES 12       /* mixture components per prompt */
#define ENGINE_S_BASE 0.12f    /* component std, latent units: the fine grain */
#define ENGINE_S_REFINER 0.08f /* the refiner's finer grain */
#ifndef ENGINE_UNCOND_BLEND
#define ENGINE_UNCOND_BLEND 0.08f /* share of the negative prompt's scene in the uncond means */
#endif

struct engine {
	struct ops *ops;
	int gpu;
	char device[128];
};

static void say(char *buf, size_t len, const char *prefix, const char *text)
{
	if (buf && len)
		snprintf(buf, len, "%s%s", prefix, text);
}

struct engine *engine_create(const struct engine_config *cfg, char *why, size_t why_len)
{
	struct engine *e = calloc(1, sizeof *e);
	if (!e)
		return NULL;
	char reason[256] = "built without CUDA";
#ifdef SDGATE_HAVE_CUDA
	if (cfg && cfg->force_cpu) {
		snprintf(reason, sizeof reason, "CUDA disabled by configuration");
	} else {
		e->ops = ops_cuda_new(cfg ? cfg->cuda_device : 0, reason, sizeof reason);
		if (e->ops) {
			e->gpu = 1;
			snprintf(e->device, sizeof e->device, "%s", e->ops->name);
			char line[200];
			snprintf(line, sizeof line, "CUDA device %d: %s", cfg ? cfg->cuda_device : 0, e->device);
			say(why, why_len, "", line);
			return e;
		}
	}
#else
	(void)cfg;
#endif
	e->ops = ops_cpu_new();
	if (!e->ops) {
		free(e);
		return NULL;
	}
	snprintf(e->device, sizeof e->device, "cpu");
	say(why, why_len, "CPU reference: ", reason);
	return e;
}

void engine_destroy(struct engine *e)
{
	if (!e)
		return;
	e->ops->destroy(e->ops);
	free(e);
}

const char *engine_device_name(const struct engine *e) { return e->device; }

int engine_uses_gpu(const struct engine *e) { return e->gpu; }

void engine_params_default(struct engine_params *p)
{
	*p = (struct engine_params){
		.prompt = "",
		.negative_prompt = "",
		.sampler = ENGINE_SAMPLER_EULER,
		.schedule = ENGINE_SCHEDULE_AUTOMATIC,
		.steps = 20,
		.cfg_scale = 7.0f,
		.width = 512,
		.height = 512,
		.batch_size = 1,
		.n_iter = 1,
		.eta = -1.0f,
		.s_noise = 1.0f,
		.model = -1,
		.refiner_model = -1,
		.refiner_switch_at = 0.8f,
	};
}

void engine_result_free(struct engine_result *r)
{
	if (!r)
		return;
	for (int i = 0; r->images && i < r->count; i++)
		free(r->images[i].rgb);
	free(r->images);
	memset(r, 0, sizeof *r);
}

static int check(const struct engine_params *p, char *err, size_t len)
{
	const char *bad = NULL;
	if (!p->prompt || strlen(p->prompt) > ENGINE_MAX_PROMPT)
		bad = "prompt missing or too long";
	else if (p->negative_prompt && strlen(p->negative_prompt) > ENGINE_MAX_PROMPT)
		bad = "negative_prompt too long";
	else if (p->width < ENGINE_MIN_SIZE || p->width > ENGINE_MAX_SIZE || p->width % 8)
		bad = "width must be a multiple of 8 in 64..2048";
	else if (p->height < ENGINE_MIN_SIZE || p->height > ENGINE_MAX_SIZE || p->height % 8)
		bad = "height must be a multiple of 8 in 64..2048";
	else if (p->steps < 1 || p->steps > ENGINE_MAX_STEPS)
		bad = "steps must be in 1..150";
	else if (p->batch_size < 1 || p->batch_size > ENGINE_MAX_BATCH)
		bad = "batch_size must be in 1..8";
	else if (p->n_iter < 1 || p->n_iter > ENGINE_MAX_ITER)
		bad = "n_iter must be in 1..16";
	else if ((int)p->sampler < 0 || p->sampler >= ENGINE_SAMPLER_COUNT)
		bad = "unknown sampler";
	else if ((int)p->schedule < 0 || p->schedule >= ENGINE_SCHEDULE_COUNT)
		bad = "unknown schedule";
	else if (!isfinite(p->cfg_scale) || fabsf(p->cfg_scale) > 100)
		bad = "cfg_scale must be finite, |cfg_scale| <= 100";
	else if (!(p->subseed_strength >= 0 && p->subseed_strength <= 1))
		bad = "subseed_strength must be in 0..1";
	else if (p->model < -1 || p->model >= engine_model_count())
		bad = "unknown model";
	else if (p->refiner_model < -1 || p->refiner_model >= engine_model_count())
		bad = "unknown refiner model";
	else if (!(p->refiner_switch_at >= 0 && p->refiner_switch_at <= 1))
		bad = "refiner_switch_at must be in 0..1";
	else if (!isfinite(p->eta) || p->eta > 100 || !isfinite(p->s_noise) || !isfinite(p->s_churn) ||
		 !isfinite(p->s_tmin) || isnan(p->s_tmax))
		bad = "eta, s_churn, s_tmin, s_tmax or s_noise not a number";
	if (bad)
		snprintf(err, len, "%s", bad);
	return bad ? -1 : 0;
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Everything one job holds; freed by job_free whatever happened. */
struct job {
	struct engine *e;
	const struct engine_params *p;
	int lw, lh;
	size_t n;
	float *means[2]; /* base, refiner (device) */
	struct sampler_model model[2];
	float *x, *work[SAMPLER_WORK];
	uint8_t *preview;
	double *sigmas;
	/* progress */
	engine_progress_fn progress;
	void *user;
	const atomic_int *interrupt;
	atomic_int *skip;
	int image, images;
};

static void job_free(struct job *j)
{
	const struct ops *o = j->e->ops;
	for (int i = 0; i < 2; i++)
		if (j->means[i])
			o->free(o->ctx, j->means[i]);
	if (j->x)
		o->free(o->ctx, j->x);
	for (int i = 0; i < SAMPLER_WORK; i++)
		if (j->work[i])
			o->free(o->ctx, j->work[i]);
	free(j->preview);
	free(j->sigmas);
}

/* Renders and uploads one checkpoint's prior for the job's prompts. */
static int job_prior(struct job *j, int slot, int model)
{
	const struct ops *o = j->e->ops;
	const struct engine_params *p = j->p;
	int refiner = engine_model_get(model)->is_refiner;
	int K = 2 * ENGINE_SCENES;
	float *host = malloc((size_t)K * j->n * sizeof *host);
	j->means[slot] = o->alloc(o->ctx, (size_t)K * j->n);
	if (!host || !j->means[slot] || scene_render(p->prompt, 0, ENGINE_SCENES, j->lw, j->lh, refiner, host) ||
	    scene_render(p->negative_prompt ? p->negative_prompt : "", 0, ENGINE_SCENES, j->lw, j->lh, refiner,
			 host + (size_t)ENGINE_SCENES * j->n)) {
		free(host);
		return -1;
	}
	/* The unconditional side sees each scene mostly as the prompt draws it,
	 * blended a little with the negative prompt's: at low noise D_u then
	 * follows the same layout as D_c and CFG pushes along their difference
	 * (away from the negative's colours and shapes; with an empty negative,
	 * away from the generic scenes: more contrast), as guidance does with a
	 * trained model. A larger blend over-saturates at cfg 7 (measured: 0.15
	 * clips 10-17% of the pixels, 0.08 about 1%). */
	float *c = host, *u = host + (size_t)ENGINE_SCENES * j->n;
	for (size_t i = 0; i < (size_t)ENGINE_SCENES * j->n; i++)
		u[i] = ENGINE_UNCOND_BLEND * u[i] + (1 - ENGINE_UNCOND_BLEND) * c[i];
	o->upload(o->ctx, j->means[slot], host, (size_t)K * j->n);
	free(host);
	j->model[slot] = (struct sampler_model){j->means[slot], ENGINE_SCENES, ENGINE_SCENES,
						refiner ? ENGINE_S_REFINER : ENGINE_S_BASE};
	return 0;
}

static int job_stop(void *user)
{
	struct job *j = user;
	return (j->interrupt && atomic_load(j->interrupt)) || (j->skip && atomic_load(j->skip));
}

static void job_step(void *user, int step, const float *den)
{
	struct job *j = user;
	const struct ops *o = j->e->ops;
	if (!j->progress)
		return;
	struct engine_progress pr = {.image = j->image, .images = j->images, .step = step, .steps = j->p->steps};
	if (j->p->preview_every > 0 && step % j->p->preview_every == 0 && den) {
		o->decode(o->ctx, j->preview, den, j->lw, j->lh, 1);
		if (!o->error(o->ctx)) {
			pr.preview = j->preview;
			pr.preview_width = j->lw;
			pr.preview_height = j->lh;
		}
	}
	j->progress(j->user, &pr);
}

/* x = slerp(strength, noise(seed), noise(subseed)) * sigma0, as A1111. */
static void initial_noise(struct job *j, uint64_t seed, uint64_t subseed, double sigma0)
{
	const struct ops *o = j->e->ops;
	uint32_t stream = noise_stream(NOISE_INITIAL, 0, 0);
	o->noise(o->ctx, j->x, j->n, seed, stream);
	double t = j->p->subseed_strength, a = 1 - t, b = t;
	if (t > 0) {
		float *hi = j->work[4];
		o->noise(o->ctx, hi, j->n, subseed, stream);
		double ll = o->dot(o->ctx, j->x, j->x, j->n), hh = o->dot(o->ctx, hi, hi, j->n);
		double dot = o->dot(o->ctx, j->x, hi, j->n) / sqrt(ll * hh);
		if (fabs(dot) <= 0.9995) {
			double om = acos(dot), so = sin(om);
			a = sin((1 - t) * om) / so;
			b = sin(t * om) / so;
		}
		const float *src[2] = {j->x, hi};
		const float coef[2] = {(float)(a * sigma0), (float)(b * sigma0)};
		o->lincomb(o->ctx, j->x, j->n, 2, src, coef);
		return;
	}
	const float *src[1] = {j->x};
	const float coef[1] = {(float)sigma0};
	o->lincomb(o->ctx, j->x, j->n, 1, src, coef);
}

/* A CUDA failure: report it and continue on the CPU for later jobs. */
static int device_failed(struct engine *e, struct job *j, struct engine_result *out, char *err, size_t len)
{
	snprintf(err, len, "%s: %s", e->gpu ? "CUDA" : "engine", e->ops->error(e->ops->ctx));
	job_free(j);
	engine_result_free(out);
	if (e->gpu) {
		struct ops *cpu = ops_cpu_new();
		if (cpu) {
			e->ops->destroy(e->ops);
			e->ops = cpu;
			e->gpu = 0;
			snprintf(e->device, sizeof e->device, "cpu");
		}
		return ENGINE_EDEVICE;
	}
	return ENGINE_ENOMEM;
}

int engine_generate(struct engine *e, const struct engine_params *p, engine_progress_fn progress, void *user,
		    const atomic_int *interrupt, atomic_int *skip, struct engine_result *out, char *err, size_t err_len)
{
	memset(out, 0, sizeof *out);
	if (check(p, err, err_len))
		return ENGINE_EINVAL;
	double t0 = now();
	const struct ops *o = e->ops;
	struct job j = {.e = e, .p = p, .progress = progress, .user = user, .interrupt = interrupt, .skip = skip};
	j.lw = p->width / ENGINE_LATENT_FACTOR;
	j.lh = p->height / ENGINE_LATENT_FACTOR;
	j.n = (size_t)ENGINE_LATENT_CHANNELS * j.lw * j.lh;
	j.images = p->batch_size * p->n_iter;
	int base = p->model >= 0 ? p->model : 0;
	int refiner = p->refiner_model;
	j.sigmas = malloc(sizeof *j.sigmas * (size_t)(p->steps + 1));
	j.preview = malloc((size_t)j.lw * j.lh * 3);
	out->images = calloc((size_t)j.images, sizeof *out->images);
	j.x = o->alloc(o->ctx, j.n);
	for (int i = 0; i < SAMPLER_WORK; i++)
		j.work[i] = o->alloc(o->ctx, j.n);
	if (!j.sigmas || !j.preview || !out->images || o->error(o->ctx) || job_prior(&j, 0, base) ||
	    (refiner >= 0 && job_prior(&j, 1, refiner))) {
		if (o->error(o->ctx))
			return device_failed(e, &j, out, err, err_len);
		job_free(&j);
		engine_result_free(out);
		snprintf(err, err_len, "out of memory");
		return ENGINE_ENOMEM;
	}
	schedule_sigmas(p->sampler, p->schedule, p->steps, j.sigmas);
	struct sampler_job sj = {
		.ops = o,
		.sampler = p->sampler,
		.sigmas = j.sigmas,
		.steps = p->steps,
		.eta = p->eta >= 0 ? p->eta : sampler_default_eta(p->sampler),
		.s_churn = p->s_churn,
		.s_tmin = p->s_tmin,
		.s_tmax = p->s_tmax,
		.s_noise = p->s_noise,
		.base = &j.model[0],
		.refiner = refiner >= 0 ? &j.model[1] : NULL,
		.switch_step = (int)floor(p->refiner_switch_at * p->steps + 1e-6),
		.cfg = p->cfg_scale,
		.n = j.n,
		.x = j.x,
		.progress = job_step,
		.stop = job_stop,
		.user = &j,
	};
	memcpy(sj.work, j.work, sizeof sj.work);
	for (int i = 0; i < j.images; i++) {
		if (interrupt && atomic_load(interrupt)) {
			out->interrupted = 1;
			break;
		}
		j.image = i;
		uint64_t seed = p->seed + (uint64_t)i, subseed = p->subseed + (uint64_t)i;
		sj.seed = seed;
		initial_noise(&j, seed, subseed, j.sigmas[0]);
		int rc = sampler_run(&sj);
		if (rc < 0 || o->error(o->ctx))
			return device_failed(e, &j, out, err, err_len);
		struct engine_image *img = &out->images[out->count];
		img->width = p->width;
		img->height = p->height;
		img->seed = seed;
		img->subseed = subseed;
		img->rgb = malloc((size_t)p->width * p->height * 3);
		if (!img->rgb) {
			job_free(&j);
			engine_result_free(out);
			snprintf(err, err_len, "out of memory");
			return ENGINE_ENOMEM;
		}
		o->decode(o->ctx, img->rgb, j.x, j.lw, j.lh, ENGINE_LATENT_FACTOR);
		out->count++;
		if (o->error(o->ctx))
			return device_failed(e, &j, out, err, err_len);
		if (rc == 1 && interrupt && atomic_load(interrupt)) {
			out->interrupted = 1;
			break;
		}
		if (rc == 1 && skip)
			atomic_store(skip, 0);
	}
	job_free(&j);
	out->seconds = now() - t0;
	return ENGINE_OK;
}
