/* txt2img.c — see txt2img.h. The field list, defaults and lax type coercion
 * follow A1111's pydantic model (StableDiffusionTxt2ImgProcessingAPI, pydantic
 * v2): numbers given as numeric strings are accepted, unknown keys ignored,
 * and every problem in a body is reported at once. */
#include "txt2img.h"

#include "error.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

/* A1111's API defaults (modules/processing.py + modules/api/models.py). */
static json_t *defaults_new(void)
{
	json_t *d = json_pack(
		"{s:s,s:s,s:[],s:i,s:i,s:f,s:i,s:i,s:n,s:n,s:i,s:i,s:i,s:f,s:i,s:i,s:n,s:n,s:b,s:b,"
		"s:n,s:n,s:n,s:n,s:n,s:n,s:{},s:b,s:n,s:n,s:b,s:n,s:n}",
		"prompt", "", "negative_prompt", "", "styles", "seed", -1, "subseed", -1, "subseed_strength", 0.0,
		"seed_resize_from_h", -1, "seed_resize_from_w", -1, "sampler_name", "scheduler", "batch_size", 1,
		"n_iter", 1, "steps", 50, "cfg_scale", 7.0, "width", 512, "height", 512, "restore_faces", "tiling",
		"do_not_save_samples", 0, "do_not_save_grid", 0, "eta", "denoising_strength", "s_min_uncond", "s_churn",
		"s_tmax", "s_tmin", "override_settings", "override_settings_restore_afterwards", 1,
		"refiner_checkpoint", "refiner_switch_at", "disable_extra_networks", 0, "firstpass_image", "comments");
	json_t *more = json_pack(
		"{s:n,s:b,s:i,s:i,s:f,s:n,s:i,s:i,s:i,s:n,s:n,s:n,s:s,s:s,s:n,s:s,s:n,s:[],s:b,s:b,s:{},s:n}",
		"s_noise", "enable_hr", 0, "firstphase_width", 0, "firstphase_height", 0, "hr_scale", 2.0,
		"hr_upscaler", "hr_second_pass_steps", 0, "hr_resize_x", 0, "hr_resize_y", 0, "hr_checkpoint_name",
		"hr_sampler_name", "hr_scheduler", "hr_prompt", "", "hr_negative_prompt", "", "force_task_id",
		"sampler_index", "Euler", "script_name", "script_args", "send_images", 1, "save_images", 0,
		"alwayson_scripts", "infotext");
	json_object_update(d, more);
	json_decref(more);
	return d;
}

struct checker {
	json_t *body;
	json_t *errors; /* FastAPI detail list */
};

static void reject(struct checker *c, const char *field, const char *type, const char *msg)
{
	sd_validation_add(c->errors, field, type, msg, json_object_get(c->body, field));
}

/* Lax int, as pydantic: 20, 20.0, "20". Returns 1 if present and valid. */
static int get_int(struct checker *c, const char *field, long long lo, long long hi, long long *out)
{
	json_t *v = json_object_get(c->body, field);
	char msg[96];
	if (!v || json_is_null(v))
		return 0;
	if (json_is_integer(v)) {
		*out = json_integer_value(v);
	} else if (json_is_real(v)) {
		double d = json_real_value(v);
		if (!isfinite(d) || d != floor(d) || fabs(d) > 9e15) {
			reject(c, field, "int_from_float",
			       "Input should be a valid integer, got a number with a fractional part");
			return 0;
		}
		*out = (long long)d;
	} else if (json_is_string(v)) {
		const char *s = json_string_value(v);
		char *end;
		errno = 0;
		long long x = strtoll(s, &end, 10);
		while (*end == ' ')
			end++;
		if (errno || end == s || *end) {
			reject(c, field, "int_parsing",
			       "Input should be a valid integer, unable to parse string as an integer");
			return 0;
		}
		*out = x;
	} else {
		reject(c, field, "int_type", "Input should be a valid integer");
		return 0;
	}
	if (*out < lo) {
		snprintf(msg, sizeof msg, "Input should be greater than or equal to %lld", lo);
		reject(c, field, "greater_than_equal", msg);
		return 0;
	}
	if (*out > hi) {
		snprintf(msg, sizeof msg, "Input should be less than or equal to %lld", hi);
		reject(c, field, "less_than_equal", msg);
		return 0;
	}
	return 1;
}

static int get_number(struct checker *c, const char *field, double lo, double hi, double *out)
{
	json_t *v = json_object_get(c->body, field);
	char msg[96];
	if (!v || json_is_null(v))
		return 0;
	if (json_is_number(v)) {
		*out = json_number_value(v);
	} else if (json_is_string(v)) {
		const char *s = json_string_value(v);
		char *end;
		errno = 0;
		*out = strtod(s, &end);
		if (errno || end == s || *end) {
			reject(c, field, "float_parsing",
			       "Input should be a valid number, unable to parse string as a number");
			return 0;
		}
	} else {
		reject(c, field, "float_type", "Input should be a valid number");
		return 0;
	}
	if (!isfinite(*out)) {
		reject(c, field, "finite_number", "Input should be a finite number");
		return 0;
	}
	if (*out < lo) {
		snprintf(msg, sizeof msg, "Input should be greater than or equal to %g", lo);
		reject(c, field, "greater_than_equal", msg);
		return 0;
	}
	if (*out > hi) {
		snprintf(msg, sizeof msg, "Input should be less than or equal to %g", hi);
		reject(c, field, "less_than_equal", msg);
		return 0;
	}
	return 1;
}

static int get_string(struct checker *c, const char *field, size_t max_len, const char **out)
{
	json_t *v = json_object_get(c->body, field);
	char msg[96];
	if (!v || json_is_null(v))
		return 0;
	if (!json_is_string(v)) {
		reject(c, field, "string_type", "Input should be a valid string");
		return 0;
	}
	if (json_string_length(v) > max_len) {
		snprintf(msg, sizeof msg, "String should have at most %zu characters", max_len);
		reject(c, field, "string_too_long", msg);
		return 0;
	}
	/* jansson allows \u0000 inside strings; the engine takes C strings. */
	if (strlen(json_string_value(v)) != json_string_length(v)) {
		reject(c, field, "string_type", "Input should be a valid string without NUL characters");
		return 0;
	}
	*out = json_string_value(v);
	return 1;
}

static int get_bool(struct checker *c, const char *field, int *out)
{
	json_t *v = json_object_get(c->body, field);
	if (!v || json_is_null(v))
		return 0;
	if (json_is_boolean(v)) {
		*out = json_is_true(v);
		return 1;
	}
	if (json_is_integer(v) && (json_integer_value(v) == 0 || json_integer_value(v) == 1)) {
		*out = (int)json_integer_value(v);
		return 1;
	}
	if (json_is_string(v)) {
		const char *s = json_string_value(v);
		if (!strcmp(s, "true") || !strcmp(s, "1")) {
			*out = 1;
			return 1;
		}
		if (!strcmp(s, "false") || !strcmp(s, "0")) {
			*out = 0;
			return 1;
		}
	}
	reject(c, field, "bool_type", "Input should be a valid boolean");
	return 0;
}

static void check_size(struct checker *c, const char *field, int *dest)
{
	long long v;
	if (!get_int(c, field, TXT2IMG_MIN_SIZE, TXT2IMG_MAX_SIZE, &v))
		return;
	if (v % 8 != 0) {
		reject(c, field, "multiple_of", "Input should be a multiple of 8");
		return;
	}
	*dest = (int)v;
}

/* Resolves a checkpoint name; reports an error on field if unknown. */
static int resolve_model(struct checker *c, const char *field, json_t *holder, const char *key, int *dest)
{
	json_t *v = json_object_get(holder, key);
	if (!v || json_is_null(v))
		return 0;
	if (!json_is_string(v)) {
		sd_validation_add(c->errors, field, "string_type", "Input should be a valid string", v);
		return 0;
	}
	int m = engine_model_find(json_string_value(v));
	if (m < 0) {
		sd_validation_add(c->errors, field, "checkpoint_not_found",
				  "Checkpoint not found; see GET /sdapi/v1/sd-models", v);
		return 0;
	}
	*dest = m;
	return 1;
}

enum txt2img_result txt2img_parse(const char *body, size_t len, int default_model, int check_names, struct txt2img *out,
				  int *status, json_t **reply)
{
	memset(out, 0, sizeof *out);
	json_error_t jerr;
	json_t *req = json_loadb(body ? body : "", len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
	if (!req || !json_is_object(req)) {
		json_t *list = json_array();
		json_t *loc = req ? json_pack("[s]", "body") : json_pack("[s,i]", "body", (json_int_t)jerr.position);
		json_t *item = json_pack("{s:s,s:o,s:s}", "type", req ? "model_attributes_type" : "json_invalid", "loc",
					 loc, "msg",
					 req ? "Input should be a valid dictionary or object to extract fields from"
					     : "JSON decode error");
		if (!req)
			json_object_set_new(item, "ctx", json_pack("{s:s}", "error", jerr.text));
		json_array_append_new(list, item);
		json_decref(req);
		*status = 422;
		*reply = json_pack("{s:o}", "detail", list);
		return TXT2IMG_REJECTED;
	}

	struct engine_params *p = &out->ep;
	engine_params_default(p);
	p->steps = 50; /* A1111's API default */
	p->model = default_model;
	p->refiner_model = -1;
	out->send_images = 1;
	struct checker c = {req, json_array()};
	long long v;
	double d;

	get_string(&c, "prompt", TXT2IMG_MAX_PROMPT, &p->prompt);
	get_string(&c, "negative_prompt", TXT2IMG_MAX_PROMPT, &p->negative_prompt);
	long long seed = -1, subseed = -1;
	get_int(&c, "seed", -1, (1LL << 53) - 1, &seed);
	get_int(&c, "subseed", -1, (1LL << 53) - 1, &subseed);
	if (get_number(&c, "subseed_strength", 0, 1, &d))
		p->subseed_strength = (float)d;
	if (get_int(&c, "steps", TXT2IMG_MIN_STEPS, TXT2IMG_MAX_STEPS, &v))
		p->steps = (int)v;
	if (get_number(&c, "cfg_scale", TXT2IMG_MIN_CFG, TXT2IMG_MAX_CFG, &d))
		p->cfg_scale = (float)d;
	check_size(&c, "width", &p->width);
	check_size(&c, "height", &p->height);
	if (get_int(&c, "batch_size", 1, TXT2IMG_MAX_BATCH, &v))
		p->batch_size = (int)v;
	if (get_int(&c, "n_iter", 1, TXT2IMG_MAX_ITER, &v))
		p->n_iter = (int)v;
	if (get_number(&c, "eta", 0, 10, &d))
		p->eta = (float)d;
	if (get_number(&c, "s_churn", 0, 100, &d))
		p->s_churn = (float)d;
	if (get_number(&c, "s_tmin", 0, 1000, &d))
		p->s_tmin = (float)d;
	if (get_number(&c, "s_tmax", 0, 1e9, &d))
		p->s_tmax = (float)d;
	if (get_number(&c, "s_noise", 0, 10, &d))
		p->s_noise = (float)d;
	if (get_number(&c, "refiner_switch_at", 0, 1, &d))
		p->refiner_switch_at = (float)d;
	get_bool(&c, "send_images", &out->send_images);
	int b;
	get_bool(&c, "enable_hr", &b);
	get_bool(&c, "save_images", &b);

	json_t *ov = json_object_get(req, "override_settings");
	if (ov && !json_is_null(ov) && !json_is_object(ov))
		reject(&c, "override_settings", "dict_type", "Input should be a valid dictionary");
	else if (ov && (check_names & TXT2IMG_CHECK_MODELS))
		resolve_model(&c, "override_settings.sd_model_checkpoint", ov, "sd_model_checkpoint", &p->model);
	if ((check_names & TXT2IMG_CHECK_MODELS) &&
	    resolve_model(&c, "refiner_checkpoint", req, "refiner_checkpoint", &p->refiner_model) &&
	    !json_object_get(req, "refiner_switch_at"))
		p->refiner_switch_at = 0.8f;

	if (json_array_size(c.errors) == 0) {
		unsigned long long images = (unsigned long long)p->batch_size * (unsigned long long)p->n_iter;
		if (images * (unsigned long long)p->width * (unsigned long long)p->height > TXT2IMG_MAX_PIXELS) {
			char msg[160];
			snprintf(msg, sizeof msg, "batch_size * n_iter * width * height must be at most %llu pixels",
				 TXT2IMG_MAX_PIXELS);
			reject(&c, "batch_size", "too_many_pixels", msg);
		}
	}

	/* The sampler last: A1111 answers 404 for it only once the body is valid. */
	const char *sampler_name = NULL, *scheduler = NULL;
	get_string(&c, "sampler_name", 128, &sampler_name);
	get_string(&c, "scheduler", 128, &scheduler);
	if (!sampler_name || !*sampler_name)
		get_string(&c, "sampler_index", 128, &sampler_name);
	if (json_array_size(c.errors) > 0) {
		*status = 422;
		*reply = json_pack("{s:o}", "detail", c.errors);
		json_decref(req);
		return TXT2IMG_REJECTED;
	}
	json_decref(c.errors);
	int rc = (check_names & TXT2IMG_CHECK_SAMPLERS)
			 ? engine_resolve_sampler(sampler_name, scheduler, &p->sampler, &p->schedule)
			 : 0;
	if (rc == -1) {
		*status = 404;
		*reply = json_pack("{s:s}", "detail", "Sampler not found");
		json_decref(req);
		return TXT2IMG_REJECTED;
	}
	if (rc == -2) {
		json_t *list = json_array();
		sd_validation_add(list, "scheduler", "scheduler_not_found",
				  "Scheduler not found; see GET /sdapi/v1/schedulers",
				  json_object_get(req, "scheduler"));
		*status = 422;
		*reply = json_pack("{s:o}", "detail", list);
		json_decref(req);
		return TXT2IMG_REJECTED;
	}
	if (!p->prompt)
		p->prompt = "";
	if (!p->negative_prompt)
		p->negative_prompt = "";
	out->seed_was_random = seed == -1;
	p->seed = (uint64_t)seed;
	p->subseed = (uint64_t)subseed;
	if (subseed == -1)
		p->subseed = (uint64_t)-1;
	out->sampler_label = engine_sampler_name(p->sampler);
	out->schedule_label = engine_schedule_label(p->schedule);
	out->request = req;

	/* parameters: A1111 echoes its request model, defaults filled in. */
	out->parameters = defaults_new();
	const char *key;
	json_t *val;
	json_object_foreach(req, key, val)
	{
		if (json_object_get(out->parameters, key))
			json_object_set(out->parameters, key, val);
	}
	return TXT2IMG_OK;
}

static uint64_t random_seed(void)
{
	uint32_t r = 0;
	if (getrandom(&r, sizeof r, 0) != (ssize_t)sizeof r)
		r = (uint32_t)time(NULL) * 2654435761u;
	return r % 4294967294u; /* A1111: random.randrange(4294967294) */
}

void txt2img_fix_seeds(struct txt2img *t)
{
	if (t->seed_was_random)
		t->ep.seed = random_seed();
	if (t->ep.subseed == (uint64_t)-1)
		t->ep.subseed = random_seed();
}

static const char *model_name(int index)
{
	const struct engine_model_info *m = engine_model_get(index);
	return m ? m->model_name : "";
}

static const char *model_hash(int index)
{
	const struct engine_model_info *m = engine_model_get(index);
	return m ? m->hash : "";
}

char *txt2img_infotext(const struct txt2img *t, int image)
{
	const struct engine_params *p = &t->ep;
	char *text = NULL;
	char neg[TXT2IMG_MAX_PROMPT + 32] = "";
	char refiner[256] = "";
	if (*p->negative_prompt)
		snprintf(neg, sizeof neg, "\nNegative prompt: %s", p->negative_prompt);
	if (p->refiner_model >= 0)
		snprintf(refiner, sizeof refiner, ", Refiner: %s [%s], Refiner switch at: %g",
			 model_name(p->refiner_model), model_hash(p->refiner_model), p->refiner_switch_at);
	int n = asprintf(&text,
			 "%s%s\nSteps: %d, Sampler: %s, Schedule type: %s, CFG scale: %g, Seed: %llu, "
			 "Size: %dx%d, Model hash: %s, Model: %s%s, Version: sdgate %s",
			 p->prompt, neg, p->steps, t->sampler_label, t->schedule_label, p->cfg_scale,
			 (unsigned long long)(p->seed + (uint64_t)image), p->width, p->height, model_hash(p->model),
			 model_name(p->model), refiner, SDGATE_VERSION);
	return n < 0 ? NULL : text;
}

json_t *txt2img_info(const struct txt2img *t, int count, const char *job_timestamp, json_t *sdgate)
{
	const struct engine_params *p = &t->ep;
	json_t *all_prompts = json_array(), *all_neg = json_array(), *all_seeds = json_array(),
	       *all_subseeds = json_array(), *infotexts = json_array();
	int total = p->batch_size * p->n_iter;
	for (int i = 0; i < total; i++) {
		json_array_append_new(all_prompts, json_string(p->prompt));
		json_array_append_new(all_neg, json_string(p->negative_prompt));
		json_array_append_new(all_seeds, json_integer((json_int_t)(p->seed + (uint64_t)i)));
		json_array_append_new(all_subseeds, json_integer((json_int_t)(p->subseed + (uint64_t)i)));
	}
	for (int i = 0; i < count; i++) {
		char *it = txt2img_infotext(t, i);
		json_array_append_new(infotexts, json_string(it ? it : ""));
		free(it);
	}
	json_t *info = json_pack(
		"{s:s,s:o,s:s,s:o,s:I,s:o,s:I,s:o,s:f,s:i,s:i,s:s,s:s,s:f,s:i,s:i,s:i,s:b,s:n,s:s,s:s,s:n,s:n}",
		"prompt", p->prompt, "all_prompts", all_prompts, "negative_prompt", p->negative_prompt,
		"all_negative_prompts", all_neg, "seed", (json_int_t)p->seed, "all_seeds", all_seeds, "subseed",
		(json_int_t)p->subseed, "all_subseeds", all_subseeds, "subseed_strength", (double)p->subseed_strength,
		"width", p->width, "height", p->height, "sampler_name", t->sampler_label, "scheduler",
		t->schedule_label, "cfg_scale", (double)p->cfg_scale, "steps", p->steps, "batch_size", p->batch_size,
		"n_iter", p->n_iter, "restore_faces", 0, "face_restoration_model", "sd_model_name",
		model_name(p->model), "sd_model_hash", model_hash(p->model), "sd_vae_name", "sd_vae_hash");
	json_object_set_new(info, "seed_resize_from_w", json_integer(-1));
	json_object_set_new(info, "seed_resize_from_h", json_integer(-1));
	json_object_set_new(info, "denoising_strength", json_null());
	json_object_set_new(info, "extra_generation_params", json_object());
	json_object_set_new(info, "index_of_first_image", json_integer(0));
	json_object_set_new(info, "infotexts", infotexts);
	json_object_set_new(info, "styles", json_array());
	json_object_set_new(info, "job_timestamp", json_string(job_timestamp));
	json_object_set_new(info, "clip_skip", json_integer(1));
	json_object_set_new(info, "is_using_inpainting_conditioning", json_false());
	json_object_set_new(info, "version", json_string("sdgate " SDGATE_VERSION));
	if (p->refiner_model >= 0) {
		json_object_set_new(json_object_get(info, "extra_generation_params"), "Refiner",
				    json_string(model_name(p->refiner_model)));
		json_object_set_new(json_object_get(info, "extra_generation_params"), "Refiner switch at",
				    json_real(p->refiner_switch_at));
	}
	if (sdgate)
		json_object_set_new(info, "sdgate", sdgate);
	return info;
}

void txt2img_free(struct txt2img *t)
{
	json_decref(t->request);
	json_decref(t->parameters);
	memset(t, 0, sizeof *t);
}

json_t *txt2img_samplers_json(void)
{
	json_t *list = json_array();
	for (int s = 0; s < ENGINE_SAMPLER_COUNT; s++) {
		json_t *aliases = json_array();
		for (const char *const *a = engine_sampler_aliases(s); a && *a; a++)
			json_array_append_new(aliases, json_string(*a));
		json_array_append_new(list, json_pack("{s:s,s:o,s:{}}", "name", engine_sampler_name(s), "aliases",
						      aliases, "options"));
	}
	return list;
}

json_t *txt2img_schedulers_json(void)
{
	json_t *list = json_array();
	for (int s = 0; s < ENGINE_SCHEDULE_COUNT; s++) {
		json_t *item = json_pack("{s:s,s:s,s:n,s:f,s:b}", "name", engine_schedule_name(s), "label",
					 engine_schedule_label(s), "aliases", "default_rho",
					 s == ENGINE_SCHEDULE_KARRAS ? 7.0 : -1.0, "need_inner_model", 0);
		json_array_append_new(list, item);
	}
	return list;
}

json_t *txt2img_progress_json(const struct txt2img_progress *p, json_t *current_image)
{
	json_t *state = json_pack(
		"{s:b,s:b,s:b,s:s,s:i,s:s,s:i,s:i,s:i}", "skipped", p->skipped, "interrupted", p->interrupted,
		"stopping_generation", 0, "job", p->active ? "txt2img" : "", "job_count", p->active ? p->job_count : 0,
		"job_timestamp", p->job_timestamp ? p->job_timestamp : "0", "job_no", p->active ? p->job_no : 0,
		"sampling_step", p->active ? p->sampling_step : 0, "sampling_steps", p->active ? p->sampling_steps : 0);
	return json_pack("{s:f,s:f,s:o,s:o,s:n}", "progress", p->progress, "eta_relative", p->eta_relative, "state",
			 state, "current_image", current_image ? current_image : json_null(), "textinfo");
}
