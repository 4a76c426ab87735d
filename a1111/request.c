/* request.c — see a1111.h. One table lists every field of A1111 1.10's
 * txt2img and img2img request models (modules/processing.py's dataclasses
 * through modules/api/models.py) with its type, default and sdgate's bound;
 * the parse walks it once, coercing as pydantic v1 does (numbers as strings,
 * 20.0 as 20, "yes"/"off" as booleans, numbers as strings where a string is
 * expected), and reports every problem at once. Unknown keys are ignored (and
 * never serialised). The error items keep the shape this project documents
 * (common/error.h). */
#include "internal.h"

#include "error.h"

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>

enum ftype { F_STR, F_INT, F_NUM, F_BOOL, F_LIST, F_DICT, F_STYLES, F_IMAGES };
enum { K_T = 1 << A1111_TXT2IMG, K_I = 1 << A1111_IMG2IMG, K_TI = K_T | K_I };

struct field {
	const char *name;
	enum ftype type;
	unsigned kinds;
	double lo, hi;   /* numbers: bounds; strings: hi is the most bytes */
	const char *def; /* A1111's default, as JSON text: null, true, false, [], {}, "text" or a number */
};

#define NAME A1111_MAX_NAME
#define PROMPT A1111_MAX_PROMPT
#define BIG A1111_MAX_IMG2IMG_BODY

static const struct field FIELDS[] = {
	{"prompt", F_STR, K_TI, 0, PROMPT, "\"\""},
	{"negative_prompt", F_STR, K_TI, 0, PROMPT, "\"\""},
	{"styles", F_STYLES, K_TI, 0, 0, "[]"},
	{"seed", F_INT, K_TI, -1, A1111_MAX_SEED, "-1"},
	{"subseed", F_INT, K_TI, -1, A1111_MAX_SEED, "-1"},
	{"subseed_strength", F_NUM, K_TI, 0, 1, "0"},
	{"seed_resize_from_h", F_INT, K_TI, -1, A1111_MAX_HR_SIZE, "-1"},
	{"seed_resize_from_w", F_INT, K_TI, -1, A1111_MAX_HR_SIZE, "-1"},
	{"sampler_name", F_STR, K_TI, 0, NAME, "null"},
	{"scheduler", F_STR, K_TI, 0, NAME, "null"},
	{"batch_size", F_INT, K_TI, 1, A1111_MAX_BATCH, "1"},
	{"n_iter", F_INT, K_TI, 1, A1111_MAX_ITER, "1"},
	{"steps", F_INT, K_TI, A1111_MIN_STEPS, A1111_MAX_STEPS, "50"},
	{"cfg_scale", F_NUM, K_TI, A1111_MIN_CFG, A1111_MAX_CFG, "7.0"},
	{"width", F_INT, K_TI, A1111_MIN_SIZE, A1111_MAX_SIZE, "512"},
	{"height", F_INT, K_TI, A1111_MIN_SIZE, A1111_MAX_SIZE, "512"},
	{"restore_faces", F_BOOL, K_TI, 0, 0, "null"},
	{"tiling", F_BOOL, K_TI, 0, 0, "null"},
	{"do_not_save_samples", F_BOOL, K_TI, 0, 0, "false"},
	{"do_not_save_grid", F_BOOL, K_TI, 0, 0, "false"},
	{"eta", F_NUM, K_TI, 0, 10, "null"},
	{"denoising_strength", F_NUM, K_T, 0, 1, "null"},
	{"denoising_strength", F_NUM, K_I, 0, 1, "0.75"},
	{"s_min_uncond", F_NUM, K_TI, 0, 1000, "null"},
	{"s_churn", F_NUM, K_TI, 0, 100, "null"},
	{"s_tmax", F_NUM, K_TI, 0, 1e9, "null"},
	{"s_tmin", F_NUM, K_TI, 0, 1000, "null"},
	{"s_noise", F_NUM, K_TI, 0, 10, "null"},
	{"override_settings", F_DICT, K_TI, 0, 0, "{}"},
	{"override_settings_restore_afterwards", F_BOOL, K_TI, 0, 0, "true"},
	{"refiner_checkpoint", F_STR, K_TI, 0, NAME, "null"},
	{"refiner_switch_at", F_NUM, K_TI, 0, 1, "null"},
	{"disable_extra_networks", F_BOOL, K_TI, 0, 0, "false"},
	{"firstpass_image", F_STR, K_T, 0, BIG, "null"},
	{"comments", F_DICT, K_TI, 0, 0, "null"},
	{"enable_hr", F_BOOL, K_T, 0, 0, "false"},
	{"firstphase_width", F_INT, K_T, 0, A1111_MAX_HR_SIZE, "0"},
	{"firstphase_height", F_INT, K_T, 0, A1111_MAX_HR_SIZE, "0"},
	{"hr_scale", F_NUM, K_T, 1, 8, "2.0"},
	{"hr_upscaler", F_STR, K_T, 0, NAME, "null"},
	{"hr_second_pass_steps", F_INT, K_T, 0, A1111_MAX_STEPS, "0"},
	{"hr_resize_x", F_INT, K_T, 0, A1111_MAX_HR_SIZE, "0"},
	{"hr_resize_y", F_INT, K_T, 0, A1111_MAX_HR_SIZE, "0"},
	{"hr_checkpoint_name", F_STR, K_T, 0, NAME, "null"},
	{"hr_sampler_name", F_STR, K_T, 0, NAME, "null"},
	{"hr_scheduler", F_STR, K_T, 0, NAME, "null"},
	{"hr_prompt", F_STR, K_T, 0, PROMPT, "\"\""},
	{"hr_negative_prompt", F_STR, K_T, 0, PROMPT, "\"\""},
	{"init_images", F_IMAGES, K_I, 0, 0, "null"},
	{"resize_mode", F_INT, K_I, 0, 3, "0"},
	{"image_cfg_scale", F_NUM, K_I, 0, A1111_MAX_CFG, "null"},
	{"mask", F_STR, K_I, 0, BIG, "null"},
	{"mask_blur_x", F_INT, K_I, 0, 64, "4"},
	{"mask_blur_y", F_INT, K_I, 0, 64, "4"},
	{"mask_blur", F_INT, K_I, 0, 64, "null"},
	{"mask_round", F_BOOL, K_I, 0, 0, "true"},
	{"inpainting_fill", F_INT, K_I, 0, 3, "0"},
	{"inpaint_full_res", F_BOOL, K_I, 0, 0, "true"},
	{"inpaint_full_res_padding", F_INT, K_I, 0, 256, "0"},
	{"inpainting_mask_invert", F_INT, K_I, 0, 1, "0"},
	{"initial_noise_multiplier", F_NUM, K_I, 0, 2, "null"},
	{"latent_mask", F_STR, K_I, 0, BIG, "null"},
	{"include_init_images", F_BOOL, K_I, 0, 0, "false"},
	{"force_task_id", F_STR, K_TI, 0, NAME, "null"},
	{"sampler_index", F_STR, K_TI, 0, NAME, "\"Euler\""},
	{"script_name", F_STR, K_TI, 0, NAME, "null"},
	{"script_args", F_LIST, K_TI, 0, 0, "[]"},
	{"send_images", F_BOOL, K_TI, 0, 0, "true"},
	{"save_images", F_BOOL, K_TI, 0, 0, "false"},
	{"alwayson_scripts", F_DICT, K_TI, 0, 0, "{}"},
	{"infotext", F_STR, K_TI, 0, 4 * PROMPT, "null"},
};

struct checker {
	json_t *errors; /* FastAPI detail list */
	json_t *set;    /* coerced values */
};

static void reject(struct checker *c, const char *field, const char *type, const char *msg, json_t *input)
{
	sd_validation_add(c->errors, field, type, msg, input);
}

/* v's text without the ASCII whitespace around it (Python's int() and
 * float() strip it), NUL-terminated in buf; 0 when empty or too long. */
static int stripped(const json_t *v, char *buf, size_t size)
{
	const char *s = json_string_value(v);
	size_t n = strlen(s);
	while (n && strchr(" \t\r\n", s[n - 1]))
		n--;
	while (n && strchr(" \t\r\n", *s))
		s++, n--;
	if (n == 0 || n >= size)
		return 0;
	memcpy(buf, s, n);
	buf[n] = '\0';
	return 1;
}

/* pydantic v1's int: an integer, a boolean, a number (truncated, as int()
 * does) or a string holding a decimal integer. */
static int to_int(struct checker *c, const char *name, json_t *v, long long *out)
{
	if (json_is_integer(v)) {
		*out = json_integer_value(v);
	} else if (json_is_boolean(v)) {
		*out = json_is_true(v);
	} else if (json_is_real(v)) {
		double d = json_real_value(v);
		if (!isfinite(d) || fabs(d) > 9e15) {
			reject(c, name, "int_from_float", "Input should be a finite integer", v);
			return 0;
		}
		*out = (long long)d;
	} else if (json_is_string(v)) {
		char buf[32] = "", *end = buf;
		errno = 0;
		if (stripped(v, buf, sizeof buf))
			*out = strtoll(buf, &end, 10);
		if (errno || *end || end == buf) {
			reject(c, name, "int_parsing",
			       "Input should be a valid integer, unable to parse string as an integer", v);
			return 0;
		}
	} else {
		reject(c, name, "int_type", "Input should be a valid integer", v);
		return 0;
	}
	return 1;
}

static int to_number(struct checker *c, const char *name, json_t *v, double *out)
{
	if (json_is_number(v)) {
		*out = json_number_value(v);
	} else if (json_is_boolean(v)) {
		*out = json_is_true(v);
	} else if (json_is_string(v)) {
		char buf[64] = "", *end = buf;
		if (stripped(v, buf, sizeof buf))
			*out = strtod(buf, &end);
		if (*end || end == buf) {
			reject(c, name, "float_parsing",
			       "Input should be a valid number, unable to parse string as a number", v);
			return 0;
		}
	} else {
		reject(c, name, "float_type", "Input should be a valid number", v);
		return 0;
	}
	if (!isfinite(*out)) {
		reject(c, name, "finite_number", "Input should be a finite number", v);
		return 0;
	}
	return 1;
}

static int in_range(struct checker *c, const struct field *f, json_t *v, double x)
{
	char msg[96];
	if (x < f->lo) {
		snprintf(msg, sizeof msg, "Input should be greater than or equal to %.15g", f->lo);
		reject(c, f->name, "greater_than_equal", msg, v);
		return 0;
	}
	if (x > f->hi) {
		snprintf(msg, sizeof msg, "Input should be less than or equal to %.15g", f->hi);
		reject(c, f->name, "less_than_equal", msg, v);
		return 0;
	}
	return 1;
}

/* pydantic v1's bool: true/false, 0/1, and "1"/"0", "true"/"false",
 * "yes"/"no", "on"/"off", "t"/"f", "y"/"n" in any case. */
static json_t *to_bool(struct checker *c, const char *name, json_t *v)
{
	static const char *const YES[] = {"1", "on", "t", "true", "y", "yes"};
	static const char *const NO[] = {"0", "off", "f", "false", "n", "no"};
	if (json_is_boolean(v))
		return json_incref(v);
	if (json_is_number(v) && (json_number_value(v) == 0 || json_number_value(v) == 1))
		return json_boolean(json_number_value(v) == 1);
	for (size_t i = 0; json_is_string(v) && i < sizeof YES / sizeof YES[0]; i++) {
		if (!strcasecmp(json_string_value(v), YES[i]))
			return json_true();
		if (!strcasecmp(json_string_value(v), NO[i]))
			return json_false();
	}
	reject(c, name, "bool_type", "Input should be a valid boolean", v);
	return NULL;
}

/* pydantic v1's str: a string, or a number written as Python would. */
static json_t *to_string(struct checker *c, const struct field *f, json_t *v)
{
	char buf[64], msg[96];
	if (json_is_integer(v)) {
		snprintf(buf, sizeof buf, "%lld", (long long)json_integer_value(v));
		return json_string(buf);
	}
	if (json_is_real(v)) {
		snprintf(buf, sizeof buf, "%.17g", json_real_value(v));
		if (!strpbrk(buf, ".en"))
			strcat(buf, ".0");
		return json_string(buf);
	}
	if (!json_is_string(v)) {
		reject(c, f->name, "string_type", "Input should be a valid string", v);
		return NULL;
	}
	if (json_string_length(v) > (size_t)f->hi) {
		snprintf(msg, sizeof msg, "String should have at most %zu characters", (size_t)f->hi);
		reject(c, f->name, "string_too_long", msg, NULL);
		return NULL;
	}
	/* jansson allows \u0000 inside strings; every consumer takes C strings. */
	if (strlen(json_string_value(v)) != json_string_length(v)) {
		reject(c, f->name, "string_type", "Input should be a valid string without NUL characters", NULL);
		return NULL;
	}
	return json_incref(v);
}

static json_t *to_styles(struct checker *c, const char *name, json_t *v)
{
	size_t i;
	json_t *s;
	if (!json_is_array(v) || json_array_size(v) > A1111_MAX_STYLES) {
		reject(c, name, "list_type", "Input should be a list of at most 64 style names", v);
		return NULL;
	}
	json_array_foreach(v, i, s)
	{
		if (!json_is_string(s) || json_string_length(s) > A1111_MAX_NAME ||
		    strlen(json_string_value(s)) != json_string_length(s)) {
			reject(c, name, "string_type", "Input should be a list of style names (strings)", NULL);
			return NULL;
		}
	}
	return json_incref(v);
}

static json_t *to_images(struct checker *c, const char *name, json_t *v, struct a1111_request *r)
{
	size_t i;
	json_t *s;
	char msg[96];
	if (!json_is_array(v)) {
		reject(c, name, "list_type", "Input should be a valid list", NULL);
		return NULL;
	}
	if (json_array_size(v) == 0 || json_array_size(v) > A1111_MAX_INIT_IMAGES) {
		snprintf(msg, sizeof msg, "List should have at least 1 and at most %d images", A1111_MAX_INIT_IMAGES);
		reject(c, name, "too_long", msg, NULL);
		return NULL;
	}
	json_array_foreach(v, i, s)
	{
		const char *type = "string_type", *why = "Input should be a base64-encoded image";
		if (!json_is_string(s) ||
		    a1111_image_check(json_string_value(s), json_string_length(s), &r->init_images[i], &type, &why)) {
			char field[32];
			snprintf(field, sizeof field, "%s.%zu", name, i);
			reject(c, field, type, why, NULL);
			return NULL;
		}
	}
	r->init_image_count = (int)json_array_size(v);
	return json_incref(v);
}

/* Coerces and checks one present, non-null value; its coerced value or NULL. */
static json_t *coerce(struct checker *c, const struct field *f, json_t *v, struct a1111_request *r)
{
	long long i = 0;
	double d = 0;
	switch (f->type) {
	case F_INT:
		return to_int(c, f->name, v, &i) && in_range(c, f, v, (double)i) ? json_integer(i) : NULL;
	case F_NUM:
		return to_number(c, f->name, v, &d) && in_range(c, f, v, d) ? json_real(d) : NULL;
	case F_BOOL:
		return to_bool(c, f->name, v);
	case F_STR:
		return to_string(c, f, v);
	case F_LIST:
		if (json_is_array(v))
			return json_incref(v);
		reject(c, f->name, "list_type", "Input should be a valid list", NULL);
		return NULL;
	case F_DICT:
		if (json_is_object(v))
			return json_incref(v);
		reject(c, f->name, "dict_type", "Input should be a valid dictionary", NULL);
		return NULL;
	case F_STYLES:
		return to_styles(c, f->name, v);
	case F_IMAGES:
		return to_images(c, f->name, v, r);
	}
	return NULL;
}

/* f's default as a value, without running the JSON parser on it (this is
 * on every request's path). */
static json_t *default_of(const struct field *f)
{
	const char *d = f->def;
	switch (d[0]) {
	case 'n':
		return json_null();
	case 't':
		return json_true();
	case 'f':
		return json_false();
	case '[':
		return json_array();
	case '{':
		return json_object();
	case '"':
		return json_stringn(d + 1, strlen(d) - 2);
	default:
		return f->type == F_INT ? json_integer(strtoll(d, NULL, 10)) : json_real(strtod(d, NULL));
	}
}

static long long int_of(const json_t *o, const char *key) { return json_integer_value(json_object_get(o, key)); }

static double num_of(const json_t *o, const char *key)
{
	const json_t *v = json_object_get(o, key);
	return json_is_number(v) ? json_number_value(v) : NAN;
}

static const char *str_of(const json_t *o, const char *key)
{
	const char *s = json_string_value(json_object_get(o, key));
	return s ? s : "";
}

/* The checks across fields, once each field is valid on its own. */
static void check_whole(struct checker *c, const struct a1111_runnable *run, struct a1111_request *r)
{
	const json_t *set = c->set;
	static const char *const SIZES[] = {"width", "height"};
	for (int k = 0; k < 2; k++) {
		json_t *v = json_object_get(set, SIZES[k]);
		if (v && json_integer_value(v) % 8)
			reject(c, SIZES[k], "multiple_of", "Input should be a multiple of 8", v);
	}
	json_t *ov = json_object_get(set, "override_settings");
	json_t *ckpt = json_object_get(ov, "sd_model_checkpoint");
	if (ckpt && !json_is_null(ckpt) && (!json_is_string(ckpt) || json_string_length(ckpt) > A1111_MAX_NAME))
		reject(c, "override_settings.sd_model_checkpoint", "string_type",
		       "Input should be a checkpoint's name (a string)", NULL);
	else if (json_is_string(ckpt))
		r->checkpoint = json_string_value(ckpt);
	const char *refiner = json_string_value(json_object_get(set, "refiner_checkpoint"));
	if (refiner && *refiner)
		r->refiner_checkpoint = refiner;
	if (run && run->find_checkpoint) {
		if (r->checkpoint && (r->checkpoint_index = run->find_checkpoint(r->checkpoint)) < 0)
			reject(c, "override_settings.sd_model_checkpoint", "checkpoint_not_found",
			       "Checkpoint not found; see GET /sdapi/v1/sd-models", ckpt);
		if (r->refiner_checkpoint && (r->refiner_index = run->find_checkpoint(r->refiner_checkpoint)) < 0)
			reject(c, "refiner_checkpoint", "checkpoint_not_found",
			       "Checkpoint not found; see GET /sdapi/v1/sd-models",
			       json_object_get(set, "refiner_checkpoint"));
	}
	if (json_array_size(c->errors) == 0) {
		unsigned long long images = (unsigned long long)int_of(r->parameters, "batch_size") *
					    (unsigned long long)int_of(r->parameters, "n_iter");
		if (images * (unsigned long long)int_of(r->parameters, "width") *
			    (unsigned long long)int_of(r->parameters, "height") >
		    A1111_MAX_PIXELS) {
			char msg[160];
			snprintf(msg, sizeof msg, "batch_size * n_iter * width * height must be at most %llu pixels",
				 A1111_MAX_PIXELS);
			reject(c, "batch_size", "too_many_pixels", msg, NULL);
		}
	}
}

/* Fills the typed view from parameters (defaults + the coerced values). */
static void fill_typed(struct a1111_request *r)
{
	const json_t *p = r->parameters;
	r->prompt = str_of(p, "prompt");
	r->negative_prompt = str_of(p, "negative_prompt");
	r->seed = int_of(p, "seed");
	r->subseed = int_of(p, "subseed");
	r->seed_was_random = r->seed == -1;
	r->subseed_was_random = r->subseed == -1;
	r->subseed_strength = num_of(p, "subseed_strength");
	r->steps = (int)int_of(p, "steps");
	r->cfg_scale = num_of(p, "cfg_scale");
	r->width = (int)int_of(p, "width");
	r->height = (int)int_of(p, "height");
	r->batch_size = (int)int_of(p, "batch_size");
	r->n_iter = (int)int_of(p, "n_iter");
	r->eta = num_of(p, "eta");
	r->s_churn = num_of(p, "s_churn");
	r->s_tmin = num_of(p, "s_tmin");
	r->s_tmax = num_of(p, "s_tmax");
	r->s_noise = num_of(p, "s_noise");
	r->refiner_switch_at = num_of(p, "refiner_switch_at");
	r->send_images = json_is_true(json_object_get(p, "send_images"));
	r->save_images = json_is_true(json_object_get(p, "save_images"));
	r->enable_hr = json_is_true(json_object_get(p, "enable_hr"));
	r->denoising_strength = num_of(p, "denoising_strength");
	r->resize_mode = (int)int_of(p, "resize_mode");
	r->has_mask = json_is_string(json_object_get(p, "mask"));
	r->include_init_images = json_is_true(json_object_get(p, "include_init_images"));
}

static enum a1111_result rejected(struct a1111_request *r, int code, json_t *answer, int *status, json_t **reply)
{
	*status = code;
	*reply = answer;
	enum a1111_kind kind = r->kind;
	a1111_request_free(r);
	r->kind = kind; /* what A1111_EITHER was read as, for the caller's bounds */
	return A1111_REJECTED;
}

static json_t *bad_body(json_t *req, const json_error_t *jerr)
{
	json_t *item = json_pack(
		"{s:s,s:o,s:s}", "type", req ? "model_attributes_type" : "json_invalid", "loc",
		req ? json_pack("[s]", "body") : json_pack("[s,i]", "body", (json_int_t)jerr->position), "msg",
		req ? "Input should be a valid dictionary or object to extract fields from" : "JSON decode error");
	if (!req)
		json_object_set_new(item, "ctx", json_pack("{s:s}", "error", jerr->text));
	return json_pack("{s:[o]}", "detail", item);
}

enum a1111_result a1111_parse(enum a1111_kind kind, const char *body, size_t len, const struct a1111_runnable *runnable,
			      struct a1111_request *out, int *status, json_t **reply)
{
	memset(out, 0, sizeof *out);
	out->kind = kind;
	out->checkpoint_index = out->refiner_index = -1;
	json_error_t jerr;
	json_t *req = json_loadb(body ? body : "", len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
	if (!req || !json_is_object(req)) {
		json_t *answer = bad_body(req, &jerr);
		json_decref(req);
		return rejected(out, 422, answer, status, reply);
	}
	if (kind == A1111_EITHER) {
		json_t *init = json_object_get(req, "init_images");
		kind = out->kind = init && !json_is_null(init) ? A1111_IMG2IMG : A1111_TXT2IMG;
	}
	out->body = req;
	out->set = json_object();
	out->parameters = json_object();
	struct checker c = {json_array(), out->set};
	for (size_t i = 0; i < sizeof FIELDS / sizeof FIELDS[0]; i++) {
		const struct field *f = &FIELDS[i];
		if (!(f->kinds & (1u << kind)))
			continue;
		json_object_set_new(out->parameters, f->name, default_of(f));
		json_t *v = json_object_get(req, f->name);
		json_t *coerced = v && !json_is_null(v) ? coerce(&c, f, v, out) : NULL;
		if (coerced) {
			json_object_set(out->parameters, f->name, coerced);
			json_object_set_new(out->set, f->name, coerced);
		}
	}
	check_whole(&c, runnable, out);
	if (kind == A1111_IMG2IMG && json_array_size(c.errors) == 0 && !out->init_image_count) {
		json_decref(c.errors);
		return rejected(out, 404, a1111_error_detail("Init image not found"), status, reply);
	}
	if (json_array_size(c.errors) > 0)
		return rejected(out, 422, json_pack("{s:o}", "detail", c.errors), status, reply);
	json_decref(c.errors);

	/* The sampler last: A1111 answers 404 for it only once the body is valid.
	 * sampler_index is the fallback, as A1111's `sampler_name or sampler_index`. */
	const char *sampler = json_string_value(json_object_get(out->set, "sampler_name"));
	if (!sampler || !*sampler)
		sampler = str_of(out->parameters, "sampler_index");
	const char *scheduler = json_string_value(json_object_get(out->set, "scheduler"));
	int rc = a1111_resolve_sampler(sampler, scheduler, runnable, &out->sampler, &out->scheduler);
	if (rc && runnable && runnable->unchecked) {
		rc = a1111_resolve_sampler(NULL, NULL, NULL, &out->sampler, &out->scheduler);
	}
	if (rc == -1)
		return rejected(out, 404, a1111_error_detail("Sampler not found"), status, reply);
	if (rc == -2)
		return rejected(out, 422,
				a1111_error_422("scheduler", "scheduler_not_found",
						"Scheduler not found; see GET /sdapi/v1/schedulers",
						json_object_get(out->set, "scheduler")),
				status, reply);
	fill_typed(out);
	return A1111_OK;
}

void a1111_request_free(struct a1111_request *r)
{
	json_decref(r->body);
	json_decref(r->set);
	json_decref(r->parameters);
	memset(r, 0, sizeof *r);
}

json_t *a1111_unsupported(const struct a1111_request *r)
{
	if (r->has_mask)
		return a1111_error_422("mask", "unsupported",
				       "Inpainting (a mask) is not supported yet; send img2img without a mask", NULL);
	return NULL;
}

static long long random_seed(void)
{
	uint32_t x = 0;
	if (getrandom(&x, sizeof x, 0) != (ssize_t)sizeof x)
		x = (uint32_t)time(NULL) * 2654435761u;
	return (long long)(x % 4294967294u);
}

void a1111_fix_seeds(struct a1111_request *r)
{
	if (r->seed == -1)
		r->seed = random_seed();
	if (r->subseed == -1)
		r->subseed = random_seed();
	json_object_set_new(r->set, "seed", json_integer(r->seed));
	json_object_set_new(r->set, "subseed", json_integer(r->subseed));
}

json_t *a1111_request_body(const struct a1111_request *r)
{
	json_t *out = json_deep_copy(r->set);
	if (!out)
		return NULL;
	json_object_del(out, "sampler_index");
	json_object_set_new(out, "sampler_name", json_string(A1111_SAMPLERS[r->sampler].name));
	if (r->scheduler)
		json_object_set_new(out, "scheduler", json_string(A1111_SCHEDULERS[r->scheduler].name));
	else
		json_object_del(out, "scheduler");
	json_object_set_new(out, "seed", json_integer(r->seed));
	json_object_set_new(out, "subseed", json_integer(r->subseed));
	return out;
}
