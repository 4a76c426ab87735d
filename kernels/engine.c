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
#include "latent.h"
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
	else if (p->init_rgb && (p->init_width < 1 || p->init_width > ENGINE_MAX_INIT_SIZE || p->init_height < 1 ||
				 p->init_height > ENGINE_MAX_INIT_SIZE))
		bad = "the init image must be 1..4096 pixels wide and high";
	else if (p->init_rgb && (p->resize_mode < 0 || p->resize_mode > 3))
		bad = "resize_mode must be in 0..3";
	else if ((p->init_rgb || p->hr_width > 0) && !(p->denoising_strength >= 0 && p->denoising_strength <= 1))
		bad = "denoising_strength must be in 0..1";
	else if (p->hr_width > 0 && p->init_rgb)
		bad = "hires fix is for txt2img only";
	else if (p->hr_width > 0 &&
		 (p->hr_width < ENGINE_MIN_SIZE || p->hr_width > ENGINE_MAX_SIZE || p->hr_width % 8 ||
		  p->hr_height < ENGINE_MIN_SIZE || p->hr_height > ENGINE_MAX_SIZE || p->hr_height % 8))
		bad = "hires width and height must be multiples of 8 in 64..2048";
	else if (p->hr_width > 0 && (p->hr_steps < 0 || p->hr_steps > ENGINE_MAX_STEPS))
		bad = "hires steps must be in 0..150";
	else if (p->hr_width > 0 && ((int)p->hr_upscale < 0 || p->hr_upscale > ENGINE_UPSCALE_NEAREST_EXACT))
		bad = "unknown latent upscaler";
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

/* Everything one pass of a job holds (hires fix has two, at two sizes);
 * freed by job_free whatever happened. */
struct job {
	struct engine *e;
	const struct engine_params *p;
	int lw, lh;
	size_t n;
	float *means[2]; /* base, refiner (device) */
	struct sampler_model model[2];
	float *x, *work[SAMPLER_WORK];
	float *init; /* img2img / hires: the latent to start from (device), or NULL */
	uint8_t *preview;
	double *sigmas;
	int first, steps; /* the schedule index this pass starts at, and the steps it runs */
	/* progress */
	engine_progress_fn progress;
	void *user;
	const atomic_int *interrupt;
	atomic_int *skip;
	int image, images;
	int step0, total; /* steps of the passes before this one; of all passes */
};

static void job_free(struct job *j)
{
	const struct ops *o = j->e->ops;
	for (int i = 0; i < 2; i++)
		if (j->means[i])
			o->free(o->ctx, j->means[i]);
	if (j->x)
		o->free(o->ctx, j->x);
	if (j->init)
		o->free(o->ctx, j->init);
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
	struct engine_progress pr = {
		.image = j->image, .images = j->images, .step = j->step0 + step, .steps = j->total};
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

/* x = slerp(strength, noise(seed), noise(subseed)) * sigma0 (+ init when
 * the pass starts from a latent), as A1111. */
static void initial_noise(struct job *j, uint64_t seed, uint64_t subseed, double sigma0, uint32_t kind)
{
	const struct ops *o = j->e->ops;
	uint32_t stream = noise_stream(kind, 0, 0);
	o->noise(o->ctx, j->x, j->n, seed, stream);
	double t = j->p->subseed_strength, a = 1 - t, b = t;
	const float *src[3] = {j->x, j->x, j->init};
	float coef[3] = {(float)sigma0, 0, 1};
	int count = 1;
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
		src[1] = hi;
		coef[0] = (float)(a * sigma0);
		coef[1] = (float)(b * sigma0);
		count = 2;
	}
	if (j->init) {
		src[count] = j->init;
		coef[count] = 1;
		count++;
	}
	o->lincomb(o->ctx, j->x, j->n, count, src, coef);
}

/* A1111's img2img step split (setup_img2img_steps without
 * img2img_fix_steps): a schedule of `steps`, the last t_enc + 1 run. */
static void img2img_range(int steps, float strength, int *sched, int *first, int *run)
{
	int t_enc = (int)(fminf(strength, 0.999f) * (float)steps);
	*sched = steps;
	*first = steps - t_enc - 1;
	*run = t_enc + 1;
}

/* Hires fix's second pass (sample_img2img with steps given): a schedule of
 * int(hr / strength) steps, the last hr run; none at strength 0. */
static void hires_range(const struct engine_params *p, int *sched, int *first, int *run)
{
	int hr = p->hr_steps > 0 ? p->hr_steps : p->steps;
	if (!(p->denoising_strength > 0)) {
		*sched = *first = *run = 0;
		return;
	}
	double n = floor((double)hr / fmin(p->denoising_strength, 0.999));
	*sched = n > ENGINE_MAX_HR_SCHEDULE ? ENGINE_MAX_HR_SCHEDULE : n < hr ? hr : (int)n;
	*first = *sched - hr;
	*run = hr;
}

int engine_steps_total(const struct engine_params *p)
{
	int sched, first, run = p->steps;
	if (p->init_rgb)
		img2img_range(p->steps, p->denoising_strength, &sched, &first, &run);
	int total = run;
	if (p->hr_width > 0 && !p->init_rgb) {
		hires_range(p, &sched, &first, &run);
		total += run;
	}
	return total;
}

/* Allocates one pass at lw x lh over a schedule of sched steps and renders
 * its priors. Returns 0, or -1 (out of memory or a device error). */
static int job_setup(struct job *j, int lw, int lh, int sched, int with_init)
{
	const struct ops *o = j->e->ops;
	const struct engine_params *p = j->p;
	j->lw = lw;
	j->lh = lh;
	j->n = (size_t)ENGINE_LATENT_CHANNELS * lw * lh;
	j->sigmas = malloc(sizeof *j->sigmas * (size_t)(sched + 1));
	j->preview = malloc((size_t)lw * lh * 3);
	j->x = o->alloc(o->ctx, j->n);
	if (with_init)
		j->init = o->alloc(o->ctx, j->n);
	for (int i = 0; i < SAMPLER_WORK; i++)
		j->work[i] = o->alloc(o->ctx, j->n);
	if (!j->sigmas || !j->preview || o->error(o->ctx) || (with_init && !j->init) ||
	    job_prior(j, 0, p->model >= 0 ? p->model : 0) ||
	    (p->refiner_model >= 0 && job_prior(j, 1, p->refiner_model)))
		return -1;
	if (sched > 0)
		schedule_sigmas(p->sampler, p->schedule, sched, j->sigmas);
	return 0;
}

/* The sampler over j's part of its schedule. */
static struct sampler_job sampler_for(struct job *j)
{
	const struct engine_params *p = j->p;
	struct sampler_job sj = {
		.ops = j->e->ops,
		.sampler = p->sampler,
		.sigmas = j->sigmas + j->first,
		.steps = j->steps,
		.eta = p->eta >= 0 ? p->eta : sampler_default_eta(p->sampler),
		.s_churn = p->s_churn,
		.s_tmin = p->s_tmin,
		.s_tmax = p->s_tmax,
		.s_noise = p->s_noise,
		.base = &j->model[0],
		.refiner = p->refiner_model >= 0 ? &j->model[1] : NULL,
		.switch_step = (int)floor(p->refiner_switch_at * j->steps + 1e-6),
		.cfg = p->cfg_scale,
		.n = j->n,
		.x = j->x,
		.progress = job_step,
		.stop = job_stop,
		.user = j,
	};
	memcpy(sj.work, j->work, sizeof sj.work);
	return sj;
}

/* Uploads the init image's latent into j->init. */
static int load_init(struct job *j)
{
	const struct engine_params *p = j->p;
	float *host = malloc(j->n * sizeof *host);
	if (!host ||
	    latent_encode_image(p->init_rgb, p->init_width, p->init_height, p->resize_mode, j->lw, j->lh, host)) {
		free(host);
		return -1;
	}
	j->e->ops->upload(j->e->ops->ctx, j->init, host, j->n);
	free(host);
	return 0;
}

/* Hires fix: the first pass's latent (from->x) resampled into to->init. */
static int upscale_into(struct job *from, struct job *to)
{
	const struct ops *o = from->e->ops;
	float *a = malloc(from->n * sizeof *a), *b = malloc(to->n * sizeof *b);
	if (!a || !b) {
		free(a);
		free(b);
		return -1;
	}
	o->download(o->ctx, a, from->x, from->n);
	latent_resample(a, from->lw, from->lh, b, to->lw, to->lh, from->p->hr_upscale);
	o->upload(o->ctx, to->init, b, to->n);
	free(a);
	free(b);
	return 0;
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

static int out_of_memory(struct job *jobs, int count, struct engine_result *out, char *err, size_t len)
{
	for (int i = 0; i < count; i++)
		job_free(&jobs[i]);
	engine_result_free(out);
	snprintf(err, len, "out of memory");
	return ENGINE_ENOMEM;
}

/* One image: pass 1 (txt2img, or img2img from the init latent), then the
 * hires pass when there is one. Returns the pass whose x is the image, or
 * NULL on a device error; *rc is sampler_run's (1: stopped early). */
static struct job *run_image(struct job *pass, int passes, uint64_t seed, uint64_t subseed, int *rc)
{
	const struct ops *o = pass[0].e->ops;
	struct sampler_job sj = sampler_for(&pass[0]);
	sj.seed = seed;
	initial_noise(&pass[0], seed, subseed, pass[0].sigmas[pass[0].first], NOISE_INITIAL);
	*rc = sampler_run(&sj);
	if (*rc < 0 || o->error(o->ctx))
		return NULL;
	if (passes == 1)
		return &pass[0];
	struct job *hr = &pass[1];
	if (upscale_into(&pass[0], hr) || o->error(o->ctx))
		return NULL;
	if (*rc == 0 && hr->steps > 0) {
		sj = sampler_for(hr);
		sj.seed = seed;
		initial_noise(hr, seed, subseed, hr->sigmas[hr->first], NOISE_HIRES);
		*rc = sampler_run(&sj);
	} else {
		/* stopped during the first pass, or strength 0: the upscaled latent */
		const float one = 1.0f;
		const float *src = hr->init;
		o->lincomb(o->ctx, hr->x, hr->n, 1, &src, &one);
	}
	return *rc < 0 || o->error(o->ctx) ? NULL : hr;
}

int engine_generate(struct engine *e, const struct engine_params *p, engine_progress_fn progress, void *user,
		    const atomic_int *interrupt, atomic_int *skip, struct engine_result *out, char *err, size_t err_len)
{
	memset(out, 0, sizeof *out);
	if (check(p, err, err_len))
		return ENGINE_EINVAL;
	double t0 = now();
	const struct ops *o = e->ops;
	struct job pass[2];
	int passes = p->hr_width > 0 ? 2 : 1;
	for (int i = 0; i < 2; i++)
		pass[i] = (struct job){.e = e,
				       .p = p,
				       .progress = progress,
				       .user = user,
				       .interrupt = interrupt,
				       .skip = skip,
				       .images = p->batch_size * p->n_iter,
				       .total = engine_steps_total(p)};
	int sched = p->steps;
	pass[0].steps = p->steps;
	if (p->init_rgb)
		img2img_range(p->steps, p->denoising_strength, &sched, &pass[0].first, &pass[0].steps);
	int hr_sched = 0;
	if (passes == 2) {
		hires_range(p, &hr_sched, &pass[1].first, &pass[1].steps);
		pass[1].step0 = pass[0].steps;
	}
	out->images = calloc((size_t)pass[0].images, sizeof *out->images);
	int fail = !out->images || job_setup(&pass[0], p->width / ENGINE_LATENT_FACTOR,
					     p->height / ENGINE_LATENT_FACTOR, sched, p->init_rgb != NULL);
	if (!fail && passes == 2)
		fail = job_setup(&pass[1], p->hr_width / ENGINE_LATENT_FACTOR, p->hr_height / ENGINE_LATENT_FACTOR,
				 hr_sched, 1);
	if (!fail && p->init_rgb)
		fail = load_init(&pass[0]);
	if (fail) {
		if (o->error(o->ctx)) {
			job_free(&pass[1]);
			return device_failed(e, &pass[0], out, err, err_len);
		}
		return out_of_memory(pass, 2, out, err, err_len);
	}
	for (int i = 0; i < pass[0].images; i++) {
		if (interrupt && atomic_load(interrupt)) {
			out->interrupted = 1;
			break;
		}
		pass[0].image = pass[1].image = i;
		uint64_t seed = p->seed + (uint64_t)i, subseed = p->subseed + (uint64_t)i;
		int rc;
		struct job *last = run_image(pass, passes, seed, subseed, &rc);
		if (!last) {
			job_free(&pass[1]);
			return device_failed(e, &pass[0], out, err, err_len);
		}
		int w = last->lw * ENGINE_LATENT_FACTOR, h = last->lh * ENGINE_LATENT_FACTOR;
		struct engine_image *img = &out->images[out->count];
		img->width = w;
		img->height = h;
		img->seed = seed;
		img->subseed = subseed;
		img->rgb = malloc((size_t)w * h * 3);
		if (!img->rgb)
			return out_of_memory(pass, 2, out, err, err_len);
		o->decode(o->ctx, img->rgb, last->x, last->lw, last->lh, ENGINE_LATENT_FACTOR);
		out->count++;
		if (o->error(o->ctx)) {
			job_free(&pass[1]);
			return device_failed(e, &pass[0], out, err, err_len);
		}
		if (rc == 1 && interrupt && atomic_load(interrupt)) {
			out->interrupted = 1;
			break;
		}
		if (rc == 1 && skip)
			atomic_store(skip, 0);
	}
	job_free(&pass[0]);
	job_free(&pass[1]);
	out->seconds = now() - t0;
	return ENGINE_OK;
}
