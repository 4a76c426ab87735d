/* validate.c — every websocket message is checked here before anything else
 * sees it: UTF-8, size, a JSON object, a known type, and for generate the
 * request itself. The txt2img rules are not repeated: the request is run
 * through the A1111 request model (a1111.h, as the balancer and the
 * backend do), so the
 * limits agree everywhere; this file adds what only the gateway knows (ids,
 * prompt length in code points, GPU classes the balancer lists) and turns
 * FastAPI-shaped answers into one clear error {code, message, field}.
 * A generate with an init_image is an img2img: the image (bare base64 or a
 * data: URL of image/png, image/jpeg or image/webp) goes to the balancer as
 * A1111's init_images, checked by the same model (magic bytes, 8 MiB
 * decoded); its errors name the protocol's field, init_image.
 * Pure functions; service thread. */
#include "gateway.h"

#include "error.h"

#include "utf8.h"

#include "a1111.h"
#include "json.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The fields of generate passed on to the balancer; the rest are ignored. */
static const char *const FORWARDED[] = {"prompt", "negative_prompt",  "sampler_name", "scheduler",
					"steps",  "cfg_scale",        "width",        "height",
					"seed",   "refiner_switch_at"};

void validate_error_set(struct gw_error *err, const char *id, const char *code, const char *field, const char *fmt, ...)
{
	snprintf(err->id, sizeof err->id, "%s", id ? id : "");
	snprintf(err->code, sizeof err->code, "%s", code);
	snprintf(err->field, sizeof err->field, "%s", field ? field : "");
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err->message, sizeof err->message, fmt, ap);
	va_end(ap);
	/* a cut may have split a multi-byte character: JSON needs valid UTF-8 */
	size_t n = strlen(err->message);
	while (n && !validate_utf8((const unsigned char *)err->message, n))
		err->message[--n] = '\0';
}

int validate_utf8(const unsigned char *s, size_t len)
{
	/* common/utf8.c judges each character; a NUL is valid UTF-8 here (the
	 * JSON parser refuses it where it matters). */
	for (size_t i = 0, n; i < len; i += n) {
		n = s[i] ? utf8_char_len(s + i, len - i) : 1;
		if (!n)
			return 0;
	}
	return 1;
}

static size_t code_points(const char *s)
{
	size_t n = 0;
	for (; *s; s++)
		n += ((unsigned char)*s & 0xc0) != 0x80;
	return n;
}

/* An id: 1..GW_MAX_ID printable ASCII bytes (it is echoed and logged). */
static int check_id(const json_t *msg, char *out, struct gw_error *err)
{
	json_t *v = json_object_get(msg, "id");
	if (!v || !json_is_string(v)) {
		validate_error_set(err, NULL, sd_error_code(SDE_INVALID), "id", "id: a string is required");
		return -1;
	}
	const char *s = json_string_value(v);
	size_t n = json_string_length(v);
	if (n == 0 || n > GW_MAX_ID) {
		validate_error_set(err, NULL, sd_error_code(SDE_INVALID), "id", "id: 1 to %d characters", GW_MAX_ID);
		return -1;
	}
	for (size_t i = 0; i < n; i++) {
		if (s[i] < 0x21 || s[i] > 0x7e) {
			validate_error_set(err, NULL, sd_error_code(SDE_INVALID), "id",
					   "id: printable ASCII characters only");
			return -1;
		}
	}
	memcpy(out, s, n + 1);
	return 0;
}

static int check_prompt(const json_t *msg, const char *field, long max, int required, const char *id,
			struct gw_error *err)
{
	json_t *v = json_object_get(msg, field);
	if (!v || json_is_null(v)) {
		if (required)
			validate_error_set(err, id, sd_error_code(SDE_INVALID), field, "%s: write a prompt", field);
		return required ? -1 : 0;
	}
	if (!json_is_string(v)) {
		validate_error_set(err, id, sd_error_code(SDE_INVALID), field, "%s: must be a string", field);
		return -1;
	}
	const char *s = json_string_value(v);
	if (strlen(s) != json_string_length(v)) {
		validate_error_set(err, id, sd_error_code(SDE_INVALID), field, "%s: must not contain NUL characters",
				   field);
		return -1;
	}
	size_t n = code_points(s);
	if ((long)n > max) {
		validate_error_set(err, id, sd_error_code(SDE_INVALID), field, "%s: at most %ld characters (got %zu)",
				   field, max, n);
		return -1;
	}
	if (required && s[strspn(s, " \t\r\n")] == '\0') {
		validate_error_set(err, id, sd_error_code(SDE_INVALID), field, "%s: write a prompt", field);
		return -1;
	}
	return 0;
}

/* The protocol sends numbers as JSON numbers, whole ones where A1111 has an
 * int: "20" and 2.5 steps are refused here even though A1111 (pydantic v1)
 * would coerce them, so that a UI bug shows up. */
static int check_number_types(const json_t *msg, const char *id, struct gw_error *err)
{
	/* the whole ones first (WHOLE of them) */
	static const char *const NUMBERS[] = {"steps",
					      "width",
					      "height",
					      "seed",
					      "resize_mode",
					      "cfg_scale",
					      "refiner_switch_at",
					      "denoising_strength"};
	enum { WHOLE = 5 };
	for (size_t i = 0; i < sizeof NUMBERS / sizeof NUMBERS[0]; i++) {
		json_t *v = json_object_get(msg, NUMBERS[i]);
		if (v && !json_is_null(v) && !json_is_number(v)) {
			validate_error_set(err, id, sd_error_code(SDE_INVALID), NUMBERS[i], "%s: must be a number",
					   NUMBERS[i]);
			return -1;
		}
		double d = json_number_value(v);
		if (i < WHOLE && json_is_real(v) && d != floor(d)) {
			validate_error_set(err, id, sd_error_code(SDE_INVALID), NUMBERS[i],
					   "%s: must be a whole number", NUMBERS[i]);
			return -1;
		}
	}
	static const char *const STRINGS[] = {"sampler_name", "scheduler"};
	for (size_t i = 0; i < 2; i++) {
		json_t *v = json_object_get(msg, STRINGS[i]);
		if (v && !json_is_null(v) && !json_is_string(v)) {
			validate_error_set(err, id, sd_error_code(SDE_INVALID), STRINGS[i], "%s: must be a string",
					   STRINGS[i]);
			return -1;
		}
	}
	json_t *r = json_object_get(msg, "refiner_switch_at");
	if (r && json_is_number(r) && !(json_number_value(r) > 0)) {
		validate_error_set(err, id, sd_error_code(SDE_INVALID), "refiner_switch_at",
				   "refiner_switch_at: greater than 0 and at most 1 (leave it out for no refiner)");
		return -1;
	}
	return 0;
}

static int known_class(const json_t *known, const char *cls)
{
	size_t i;
	json_t *v;
	json_array_foreach(known, i, v)
	{
		if (json_is_string(v) && !strcmp(json_string_value(v), cls))
			return 1;
	}
	return 0;
}

/* gpus: absent or [] = any; else short class names the balancer lists. */
static int check_gpus(const json_t *msg, const json_t *known, const char *id, json_t *body, struct gw_error *err)
{
	json_t *g = json_object_get(msg, "gpus");
	if (!g || json_is_null(g))
		return 0;
	if (!json_is_array(g)) {
		validate_error_set(err, id, sd_error_code(SDE_INVALID), "gpus",
				   "gpus: a list of GPU classes (empty = any)");
		return -1;
	}
	if (json_array_size(g) > GW_MAX_GPUS) {
		validate_error_set(err, id, sd_error_code(SDE_INVALID), "gpus", "gpus: at most %d classes",
				   GW_MAX_GPUS);
		return -1;
	}
	json_t *out = json_array();
	size_t i;
	json_t *v;
	json_array_foreach(g, i, v)
	{
		const char *s = json_is_string(v) ? json_string_value(v) : NULL;
		size_t n = s ? json_string_length(v) : 0;
		if (!s || n == 0 || n > GW_MAX_GPU_CLASS || strlen(s) != n ||
		    s[strspn(s, "abcdefghijklmnopqrstuvwxyz0123456789_-.")] != '\0') {
			validate_error_set(
				err, id, sd_error_code(SDE_INVALID), "gpus",
				"gpus: each entry is a GPU class such as \"a100\" (lower case, at most %d characters)",
				GW_MAX_GPU_CLASS);
			json_decref(out);
			return -1;
		}
		if (known && !known_class(known, s)) {
			char list[160] = "";
			size_t k, used = 0;
			json_t *c;
			json_array_foreach(known, k, c)
			{
				if (!json_is_string(c) || used >= sizeof list - 40)
					continue;
				used += (size_t)snprintf(list + used, sizeof list - used, "%s%s", used ? ", " : "",
							 json_string_value(c));
			}
			validate_error_set(err, id, sd_error_code(SDE_UNKNOWN_GPU), "gpus",
					   "gpus: no provider offers \"%s\" (known: %s)", s, used ? list : "none yet");
			json_decref(out);
			return -1;
		}
		json_array_append(out, v);
	}
	json_object_set_new(body, "gpus", out);
	return 0;
}

/* prefer: absent = the balancer's default ("fastest", the earliest finish),
 * else "fastest" or "cheapest"; passed on to the balancer as is. */
static int check_prefer(const json_t *msg, const char *id, json_t *body, struct gw_error *err)
{
	json_t *v = json_object_get(msg, "prefer");
	if (!v || json_is_null(v))
		return 0;
	const char *s = json_string_value(v);
	if (!s || (strcmp(s, "fastest") && strcmp(s, "cheapest"))) {
		validate_error_set(err, id, sd_error_code(SDE_INVALID), "prefer",
				   "prefer: \"fastest\" (the default) or \"cheapest\"");
		return -1;
	}
	json_object_set(body, "prefer", v);
	return 0;
}

/* init_image: absent (a txt2img), else a string: bare base64, or a data:
 * URL of one of the image types the balancer takes. Sets body's
 * init_images to the bare base64 (checked with the rest by check_a1111),
 * and passes denoising_strength and resize_mode on with it. */
static int check_init_image(const json_t *msg, const char *id, json_t *body, struct gw_error *err)
{
	static const char *const PREFIXES[] = {"data:image/png;base64,", "data:image/jpeg;base64,",
					       "data:image/webp;base64,"};
	json_t *v = json_object_get(msg, "init_image");
	if (!v || json_is_null(v))
		return 0;
	if (!json_is_string(v)) {
		validate_error_set(err, id, sd_error_code(SDE_INVALID), "init_image",
				   "init_image: a string (base64, or a data: URL of a PNG, JPEG or WebP image)");
		return -1;
	}
	const char *s = json_string_value(v);
	size_t len = json_string_length(v);
	if (!strncmp(s, "data:", 5)) {
		size_t i = 0, n = 0;
		for (; i < sizeof PREFIXES / sizeof PREFIXES[0]; i++)
			if (!strncmp(s, PREFIXES[i], n = strlen(PREFIXES[i])))
				break;
		if (i == sizeof PREFIXES / sizeof PREFIXES[0]) {
			validate_error_set(err, id, sd_error_code(SDE_BAD_IMAGE), "init_image",
					   "init_image: a data: URL must be data:image/png, image/jpeg or image/webp "
					   "with ;base64,");
			return -1;
		}
		s += n;
		len -= n;
	}
	json_object_set_new(body, "init_images", json_pack("[s%]", s, len));
	static const char *const WITH_IMAGE[] = {"denoising_strength", "resize_mode"};
	for (size_t i = 0; i < 2; i++) {
		json_t *x = json_object_get(msg, WITH_IMAGE[i]);
		if (x && !json_is_null(x))
			json_object_set(body, WITH_IMAGE[i], x);
	}
	return 0;
}

/* A1111's complaint about an init image (a1111/image.c's types) as ours. */
static const char *image_code(const char *type)
{
	if (type && !strcmp(type, "image_too_large"))
		return sd_error_code(SDE_IMAGE_TOO_LARGE);
	if (type && (!strcmp(type, "base64_decode") || !strcmp(type, "image_type") || !strcmp(type, "too_long")))
		return sd_error_code(SDE_BAD_IMAGE);
	return sd_error_code(SDE_INVALID);
}

/* Runs the A1111 request model (a1111.h) on body, with the native engine's
 * names as the balancer does; its first complaint becomes err. An img2img
 * when body holds init_images. */
static int check_a1111(json_t *body, const char *id, struct gw_error *err, double *work)
{
	size_t len;
	char *text = json_dump_compact(body, &len);
	if (!text) {
		validate_error_set(err, id, sd_error_code(SDE_INTERNAL), NULL, "out of memory");
		return -1;
	}
	struct a1111_request t;
	int status = 0;
	json_t *reply = NULL;
	enum a1111_result r = a1111_parse(A1111_EITHER, text, len, &A1111_NATIVE, &t, &status, &reply);
	free(text);
	if (r == A1111_OK) {
		*work = (double)t.steps * t.width * t.height * t.batch_size * t.n_iter / 1e6;
		a1111_request_free(&t);
		return 0;
	}
	json_t *detail = json_object_get(reply, "detail");
	if (json_is_string(detail)) {
		validate_error_set(err, id, sd_error_code(SDE_SAMPLER_NOT_FOUND), "sampler_name",
				   "sampler_name: unknown sampler \"%s\"",
				   json_string_value(json_object_get(body, "sampler_name")));
	} else {
		json_t *first = json_array_get(detail, 0);
		const char *msg = json_string_value(json_object_get(first, "msg"));
		const char *type = json_string_value(json_object_get(first, "type"));
		json_t *loc = json_object_get(first, "loc");
		const char *field = json_string_value(json_array_get(loc, json_array_size(loc) - 1));
		if (!field || !strcmp(field, "body"))
			field = NULL;
		const char *code = sd_error_code(type && !strcmp(type, "scheduler_not_found") ? SDE_SCHEDULER_NOT_FOUND
											      : SDE_INVALID);
		if (field && !strncmp(field, "init_images", 11)) {
			field = "init_image";
			code = image_code(type);
		}
		validate_error_set(err, id, code, field, "%s%s%s", field ? field : "", field ? ": " : "",
				   msg ? msg : "invalid request");
	}
	json_decref(reply);
	return -1;
}

static int check_generate(const json_t *msg, const struct gw_config *cfg, const json_t *known_gpus,
			  struct gw_request *out, struct gw_error *err)
{
	if (check_id(msg, out->id, err))
		return -1;
	const char *id = out->id;
	if (check_prompt(msg, "prompt", cfg->max_prompt, 1, id, err) ||
	    check_prompt(msg, "negative_prompt", cfg->max_prompt, 0, id, err) || check_number_types(msg, id, err))
		return -1;
	json_t *body = json_object();
	for (size_t i = 0; i < sizeof FORWARDED / sizeof FORWARDED[0]; i++) {
		json_t *v = json_object_get(msg, FORWARDED[i]);
		if (v && !json_is_null(v))
			json_object_set(body, FORWARDED[i], v);
	}
	if (check_init_image(msg, id, body, err) || check_a1111(body, id, err, &out->work) ||
	    check_gpus(msg, known_gpus, id, body, err) || check_prefer(msg, id, body, err)) {
		json_decref(body);
		return -1;
	}
	out->img2img = json_object_get(body, "init_images") != NULL;
	out->body = body;
	return 0;
}

int validate_message(const char *buf, size_t len, const struct gw_config *cfg, const json_t *known_gpus,
		     struct gw_request *out, struct gw_error *err)
{
	memset(out, 0, sizeof *out);
	memset(err, 0, sizeof *err);
	long image_bound = cfg->max_image_message > cfg->max_message ? cfg->max_image_message : cfg->max_message;
	if ((long)len > image_bound) {
		validate_error_set(err, NULL, sd_error_code(SDE_TOO_LARGE), NULL,
				   "message too large: %zu bytes, at most %ld (%ld for a generate with an init_image)",
				   len, cfg->max_message, image_bound);
		return -1;
	}
	if (!validate_utf8((const unsigned char *)buf, len)) {
		validate_error_set(err, NULL, sd_error_code(SDE_BAD_UTF8), NULL, "a text message must be valid UTF-8");
		return -1;
	}
	json_error_t jerr;
	json_t *msg = json_loadb(buf, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
	/* past max_message: a generate with an init_image, or nothing */
	const char *type = json_string_value(json_object_get(msg, "type"));
	if ((long)len > cfg->max_message &&
	    !(type && !strcmp(type, "generate") && json_is_string(json_object_get(msg, "init_image")))) {
		json_decref(msg);
		validate_error_set(err, NULL, sd_error_code(SDE_TOO_LARGE), NULL,
				   "message too large: %zu bytes, at most %ld (more only for a generate with an "
				   "init_image)",
				   len, cfg->max_message);
		return -1;
	}
	if (!msg) {
		validate_error_set(err, NULL, sd_error_code(SDE_BAD_JSON), NULL, "not valid JSON: %s (at byte %d)",
				   jerr.text, jerr.position);
		return -1;
	}
	int rc = -1;
	if (!json_is_object(msg)) {
		validate_error_set(err, NULL, sd_error_code(SDE_NOT_OBJECT), NULL,
				   "a message must be a JSON object with a \"type\"");
		goto done;
	}
	if (!type) {
		validate_error_set(err, NULL, sd_error_code(SDE_INVALID), "type",
				   "type: a string is required (hello, generate, cancel)");
		goto done;
	}
	if (!strcmp(type, "hello")) {
		out->type = GW_MSG_HELLO;
		rc = 0;
	} else if (!strcmp(type, "generate")) {
		out->type = GW_MSG_GENERATE;
		rc = check_generate(msg, cfg, known_gpus, out, err);
	} else if (!strcmp(type, "cancel")) {
		out->type = GW_MSG_CANCEL;
		rc = check_id(msg, out->id, err);
	} else {
		char shown[41];
		snprintf(shown, sizeof shown, "%s", type);
		for (char *p = shown; *p; p++)
			if ((unsigned char)*p < 0x20 || (unsigned char)*p >= 0x7f)
				*p = '?';
		validate_error_set(err, NULL, sd_error_code(SDE_UNKNOWN_TYPE), "type",
				   "unknown message type \"%s\" (expected hello, generate or cancel)", shown);
	}
done:
	json_decref(msg);
	return rc;
}

void validate_request_free(struct gw_request *r)
{
	json_decref(r->body);
	r->body = NULL;
}

static void add_name(json_t *list, const char *name)
{
	size_t i;
	json_t *v;
	json_array_foreach(list, i, v)
	{
		if (!strcmp(json_string_value(v), name))
			return;
	}
	json_array_append_new(list, json_string(name));
}

json_t *validate_sampler_names(const json_t *balancer_samplers)
{
	json_t *base = json_array();
	size_t i;
	json_t *v;
	json_array_foreach(balancer_samplers, i, v)
	{
		const char *name = json_string_value(json_object_get(v, "name"));
		if (!name)
			name = json_string_value(v);
		if (name && strlen(name) < 64)
			add_name(base, name);
	}
	if (json_array_size(base) == 0) {
		json_t *local = a1111_samplers_json(&A1111_NATIVE);
		json_array_foreach(local, i, v) { add_name(base, json_string_value(json_object_get(v, "name"))); }
		json_decref(local);
	}
	/* A1111's combined names, which the web UI sends: the ones A1111's own
	 * list had ("DPM++ SDE Karras", "LMS Karras", "DPM++ 2M SDE Exponential");
	 * any other combination is accepted too, just not offered. */
	static const char *const COMBINED[] = {"Karras", "Exponential"};
	json_t *names = json_array();
	json_array_foreach(base, i, v)
	{
		const char *name = json_string_value(v);
		add_name(names, name);
		int karras = !strncmp(name, "DPM++", 5) || !strcmp(name, "LMS");
		int exponential = !strcmp(name, "DPM++ 2M SDE");
		for (size_t k = 0; k < 2; k++) {
			if (!(k == 0 ? karras : exponential))
				continue;
			char combined[128];
			int s, sch;
			snprintf(combined, sizeof combined, "%s %s", name, COMBINED[k]);
			if (a1111_resolve_sampler(combined, NULL, &A1111_NATIVE, &s, &sch) == 0 &&
			    !strcmp(A1111_SCHEDULERS[sch].label, COMBINED[k]) && !strcmp(A1111_SAMPLERS[s].name, name))
				add_name(names, combined);
		}
	}
	json_decref(base);
	return names;
}

json_t *validate_limits_json(const struct gw_config *cfg)
{
	return json_pack(
		"{s:i,s:i,s:f,s:f,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:f,s:f,s:s,s:I,s:I,s:[sss]}", "min_steps",
		A1111_MIN_STEPS, "max_steps", A1111_MAX_STEPS, "min_cfg", A1111_MIN_CFG, "max_cfg", A1111_MAX_CFG,
		"min_size", A1111_MIN_SIZE, "max_width", A1111_MAX_SIZE, "max_height", A1111_MAX_SIZE, "size_multiple",
		8, "max_prompt", (json_int_t)cfg->max_prompt, "max_message", (json_int_t)cfg->max_message,
		"max_jobs_per_connection", (json_int_t)cfg->max_jobs_per_connection, "max_gpus", GW_MAX_GPUS,
		"rate_burst", cfg->rate_burst, "rate_refill_per_s", cfg->rate_refill, "work_unit",
		"megapixel-steps (steps x width x height / 1e6)", "max_image_message",
		(json_int_t)cfg->max_image_message, "max_init_image_bytes", (json_int_t)A1111_MAX_INIT_IMAGE_BYTES,
		"init_image_types", "image/png", "image/jpeg", "image/webp");
}
