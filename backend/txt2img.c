/* txt2img.c — see txt2img.h. libsdgate-a1111 does the parsing and the
 * answers; this file maps A1111's names onto the engine's enums and
 * checkpoint indexes, and nothing else. */
#include "txt2img.h"

#include <math.h>
#include <string.h>

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

enum txt2img_result txt2img_parse(const char *body, size_t len, int default_model, int check_names, struct txt2img *out,
				  int *status, json_t **reply)
{
	static const struct a1111_runnable *const CHECKS[] = {&CHECK_NONE, &CHECK_SAMPLERS, &CHECK_MODELS, &CHECK_ALL};
	memset(out, 0, sizeof *out);
	if (a1111_parse(A1111_TXT2IMG, body, len, CHECKS[check_names & TXT2IMG_CHECK_ALL], &out->a, status, reply) !=
	    A1111_OK)
		return TXT2IMG_REJECTED;
	to_engine(out, default_model);
	out->request = out->a.body;
	out->parameters = out->a.parameters;
	out->send_images = out->a.send_images;
	out->seed_was_random = out->a.seed_was_random;
	out->sampler_label = A1111_SAMPLERS[out->a.sampler].name;
	out->schedule_label = A1111_SCHEDULERS[out->a.scheduler].label;
	return TXT2IMG_OK;
}

void txt2img_free(struct txt2img *t)
{
	a1111_request_free(&t->a);
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
