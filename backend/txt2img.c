/* txt2img.c — see txt2img.h. libsdgate-a1111 does the parsing and the
 * answers; this file maps A1111's names onto the engine's enums and
 * checkpoint indexes, and nothing else. */
#include "txt2img.h"

#include "initimage.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

_Static_assert(A1111_MAX_STEPS <= ENGINE_MAX_STEPS && A1111_MIN_SIZE >= ENGINE_MIN_SIZE &&
		       A1111_MAX_SIZE <= ENGINE_MAX_SIZE && A1111_MAX_BATCH <= ENGINE_MAX_BATCH &&
		       A1111_MAX_ITER <= ENGINE_MAX_ITER && A1111_MAX_PROMPT <= ENGINE_MAX_PROMPT,
	       "the request model's bounds are within the engine's");

/* What each check_names asks for. Upstream mode (0) checks no names: the
 * upstream server (A1111, Forge, SD.Next) runs what it has. */
static const struct a1111_runnable CHECK_NONE = {NULL, NULL, NULL, 1};
static const struct a1111_runnable CHECK_SAMPLERS = {A1111_NATIVE_SAMPLERS, A1111_NATIVE_SCHEDULERS, NULL, 0};
static const struct a1111_runnable CHECK_MODELS = {NULL, NULL, engine_model_find, 1};
static const struct a1111_runnable CHECK_ALL = {A1111_NATIVE_SAMPLERS, A1111_NATIVE_SCHEDULERS, engine_model_find, 0};

static void set_if(float *dest, double v)
{
	if (!isnan(v))
		*dest = (float)v;
}

/* Hires fix's latent upscalers by A1111's names (shared.latent_upscale_modes);
 * every other upscaler (None, Lanczos, ESRGAN...) works in pixels in A1111
 * and is run here as "Latent (bicubic)": the engine has no pixel upscaler. */
static enum engine_upscale upscaler_of(const char *name)
{
	static const struct {
		const char *name;
		enum engine_upscale mode;
	} LATENT[] = {
		{"Latent", ENGINE_UPSCALE_BILINEAR},          {"Latent (antialiased)", ENGINE_UPSCALE_BILINEAR},
		{"Latent (bicubic)", ENGINE_UPSCALE_BICUBIC}, {"Latent (bicubic antialiased)", ENGINE_UPSCALE_BICUBIC},
		{"Latent (nearest)", ENGINE_UPSCALE_NEAREST}, {"Latent (nearest-exact)", ENGINE_UPSCALE_NEAREST_EXACT},
	};
	if (!name || !*name)
		return ENGINE_UPSCALE_BILINEAR; /* A1111's default: "Latent" */
	for (size_t i = 0; i < sizeof LATENT / sizeof LATENT[0]; i++)
		if (!strcasecmp(name, LATENT[i].name))
			return LATENT[i].mode;
	return ENGINE_UPSCALE_BICUBIC;
}

/* Hires fix's target size as A1111's (hr_resize_x/y when set, one of them
 * scaled by the first pass's aspect when the other is 0; else hr_scale),
 * rounded down to multiples of 8. Returns NULL, or a 422 naming the field. */
static json_t *hires_of(struct txt2img *t)
{
	struct a1111_request *a = &t->a;
	struct engine_params *p = &t->ep;
	const json_t *set = a->parameters;
	long long rx = json_integer_value(json_object_get(set, "hr_resize_x"));
	long long ry = json_integer_value(json_object_get(set, "hr_resize_y"));
	double scale = json_number_value(json_object_get(set, "hr_scale"));
	const char *field = rx || ry ? "hr_resize_x" : "hr_scale";
	long long w, h;
	if (rx || ry) {
		w = rx ? rx : ry * a->width / a->height;
		h = ry ? ry : rx * a->height / a->width;
	} else {
		w = (long long)(a->width * scale);
		h = (long long)(a->height * scale);
	}
	w -= w % 8;
	h -= h % 8;
	if (w < A1111_MIN_SIZE || h < A1111_MIN_SIZE || w > A1111_MAX_SIZE || h > A1111_MAX_SIZE)
		return a1111_error_422(field, "hires_size",
				       "Hires fix's size should be within 64..2048 on each side for this backend",
				       NULL);
	if ((unsigned long long)(a->batch_size * a->n_iter) * (unsigned long long)(w * h) > A1111_MAX_PIXELS)
		return a1111_error_422(field, "hires_pixels",
				       "batch_size * n_iter * hires width * height should be at most 33554432", NULL);
	p->hr_width = (int)w;
	p->hr_height = (int)h;
	p->hr_steps = (int)json_integer_value(json_object_get(set, "hr_second_pass_steps"));
	p->hr_upscale = upscaler_of(json_string_value(json_object_get(set, "hr_upscaler")));
	p->denoising_strength = (float)a1111_denoising_strength(a);
	return NULL;
}

/* The engine's parameters from the parsed request. */
static void to_engine(struct txt2img *t, int default_model)
{
	struct a1111_request *a = &t->a;
	struct engine_params *p = &t->ep;
	engine_params_default(p);
	p->prompt = a->prompt;
	p->negative_prompt = a->negative_prompt;
	p->seed = (uint64_t)a->seed;
	p->subseed = (uint64_t)a->subseed;
	p->subseed_strength = (float)a->subseed_strength;
	p->steps = a->steps;
	p->cfg_scale = (float)a->cfg_scale;
	p->width = a->width;
	p->height = a->height;
	p->batch_size = a->batch_size;
	p->n_iter = a->n_iter;
	set_if(&p->eta, a->eta);
	set_if(&p->s_churn, a->s_churn);
	set_if(&p->s_tmin, a->s_tmin);
	set_if(&p->s_tmax, a->s_tmax);
	set_if(&p->s_noise, a->s_noise);
	p->model = a->checkpoint_index >= 0 ? a->checkpoint_index : default_model;
	p->refiner_model = a->refiner_index;
	if (a->refiner_index >= 0 && isnan(a->refiner_switch_at))
		a->refiner_switch_at = 0.8; /* A1111's UI default */
	set_if(&p->refiner_switch_at, a->refiner_switch_at);
	int s = a1111_name_index(A1111_NATIVE_SAMPLERS, A1111_SAMPLERS[a->sampler].name);
	int k = a1111_name_index(A1111_NATIVE_SCHEDULERS, A1111_SCHEDULERS[a->scheduler].name);
	p->sampler = s >= 0 ? (enum engine_sampler)s : ENGINE_SAMPLER_EULER;
	p->schedule = k >= 0 ? (enum engine_schedule)k : ENGINE_SCHEDULE_AUTOMATIC;
}

static enum txt2img_result parse(enum a1111_kind kind, const char *body, size_t len, int default_model, int check_names,
				 struct txt2img *out, int *status, json_t **reply)
{
	static const struct a1111_runnable *const CHECKS[] = {&CHECK_NONE, &CHECK_SAMPLERS, &CHECK_MODELS, &CHECK_ALL};
	memset(out, 0, sizeof *out);
	if (a1111_parse(kind, body, len, CHECKS[check_names & TXT2IMG_CHECK_ALL], &out->a, status, reply) != A1111_OK)
		return TXT2IMG_REJECTED;
	to_engine(out, default_model);
	out->request = out->a.body;
	out->parameters = out->a.parameters;
	out->send_images = out->a.send_images;
	out->seed_was_random = out->a.seed_was_random;
	out->sampler_label = A1111_SAMPLERS[out->a.sampler].name;
	out->schedule_label = A1111_SCHEDULERS[out->a.scheduler].label;
	/* Native mode only: behind --upstream the A1111 judges masks and hires
	 * sizes itself. */
	int native = check_names != 0;
	json_t *bad = native ? a1111_unsupported(&out->a) : NULL;
	if (!bad && native && kind == A1111_TXT2IMG && out->a.enable_hr)
		bad = hires_of(out);
	if (kind == A1111_IMG2IMG) {
		out->ep.resize_mode = out->a.resize_mode;
		out->ep.denoising_strength = (float)out->a.denoising_strength;
	}
	if (bad) {
		txt2img_free(out);
		*status = 422;
		*reply = bad;
		return TXT2IMG_REJECTED;
	}
	return TXT2IMG_OK;
}

enum txt2img_result txt2img_parse(const char *body, size_t len, int default_model, int check_names, struct txt2img *out,
				  int *status, json_t **reply)
{
	return parse(A1111_TXT2IMG, body, len, default_model, check_names, out, status, reply);
}

enum txt2img_result img2img_parse(const char *body, size_t len, int default_model, int check_names, struct txt2img *out,
				  int *status, json_t **reply)
{
	return parse(A1111_IMG2IMG, body, len, default_model, check_names, out, status, reply);
}

int txt2img_load_init(struct txt2img *t, json_t **reply)
{
	const json_t *first = json_array_get(json_object_get(t->a.set, "init_images"), 0);
	char why[160] = "";
	int w = 0, h = 0;
	free(t->init_rgb);
	t->init_rgb = json_is_string(first) ? initimage_decode(json_string_value(first), json_string_length(first), &w,
							       &h, why, sizeof why)
					    : NULL;
	if (!t->init_rgb) {
		*reply = a1111_error_422("init_images.0", "image_decode", why[0] ? why : "Input should be an image",
					 NULL);
		return -1;
	}
	t->ep.init_rgb = t->init_rgb;
	t->ep.init_width = w;
	t->ep.init_height = h;
	return 0;
}

void txt2img_free(struct txt2img *t)
{
	a1111_request_free(&t->a);
	free(t->init_rgb);
	memset(t, 0, sizeof *t);
}

void txt2img_fix_seeds(struct txt2img *t)
{
	a1111_fix_seeds(&t->a);
	t->ep.seed = (uint64_t)t->a.seed;
	t->ep.subseed = (uint64_t)t->a.subseed;
}

static struct a1111_models models_of(const struct txt2img *t)
{
	const struct engine_model_info *m = engine_model_get(t->ep.model), *r = engine_model_get(t->ep.refiner_model);
	return (struct a1111_models){m ? m->model_name : "", m ? m->hash : "", r ? r->model_name : NULL,
				     r ? r->hash : NULL};
}

char *txt2img_infotext(const struct txt2img *t, int image)
{
	struct a1111_models m = models_of(t);
	return a1111_infotext(&t->a, &m, image);
}

json_t *txt2img_info(const struct txt2img *t, int count, const char *job_timestamp, json_t *sdgate)
{
	struct a1111_models m = models_of(t);
	return a1111_info(&t->a, &m, count, job_timestamp, sdgate);
}
