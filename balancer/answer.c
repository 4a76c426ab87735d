/* answer.c — see answer.h. */
#include "answer.h"

#include "b64.h"

#include <stdlib.h>
#include <string.h>

#define MAX_STEPS 100000

/* An image as A1111 sends it: padded standard base64 (after an optional
 * "data:...;base64," prefix) of a PNG, JPEG or WebP file (A1111's
 * samples_format). Only the first bytes are decoded, for the file's magic
 * number; the rest is checked for the alphabet, so a broken or hostile
 * provider cannot hand clients text that is not an image. */
static int is_image_b64(const char *s, size_t len)
{
	s = b64_payload(s, &len);
	if (len < 24 || !b64_is_valid(s, len))
		return 0;
	size_t n = 0;
	unsigned char *head = b64_decode_new(s, 24, &n);
	int ok = head && n == 18 &&
		 (memcmp(head, "\x89PNG\r\n\x1a\n", 8) == 0 || memcmp(head, "\xff\xd8\xff", 3) == 0 ||
		  (memcmp(head, "RIFF", 4) == 0 && memcmp(head + 8, "WEBP", 4) == 0));
	free(head);
	return ok;
}

json_t *answer_parse_txt2img(const char *body, size_t len)
{
	json_error_t err;
	json_t *a = json_loadb(body, len, 0, &err);
	json_t *images = json_object_get(a, "images");
	int ok = json_is_object(a) && json_is_array(images) && json_array_size(images) > 0;
	size_t i;
	json_t *v;
	json_array_foreach(images, i, v)
		ok = ok && json_is_string(v) && is_image_b64(json_string_value(v), json_string_length(v));
	json_t *info = json_object_get(a, "info");
	ok = ok && (!info || json_is_string(info) || json_is_object(info));
	if (!ok) {
		json_decref(a);
		return NULL;
	}
	return a;
}

json_t *answer_info(const json_t *answer)
{
	json_t *v = json_object_get(answer, "info");
	json_error_t err;
	json_t *info = json_is_string(v)   ? json_loadb(json_string_value(v), json_string_length(v), 0, &err)
		       : json_is_object(v) ? json_deep_copy(v)
					   : NULL;
	if (!json_is_object(info)) {
		json_decref(info);
		info = json_object();
	}
	return info;
}

double answer_reported_inference(const json_t *info)
{
	json_t *t = json_object_get(json_object_get(info, "sdgate"), "inference_time");
	double v = json_is_number(t) ? json_number_value(t) : -1;
	return v >= 0 && v <= 1e6 ? v : -1;
}

json_t *answer_parse_progress(const char *body, size_t len, struct answer_progress *out)
{
	memset(out, 0, sizeof *out);
	json_error_t err;
	json_t *p = json_loadb(body, len, 0, &err);
	if (!json_is_object(p)) {
		json_decref(p);
		return NULL;
	}
	json_t *state = json_object_get(p, "state");
	json_t *step = json_object_get(state, "sampling_step"), *steps = json_object_get(state, "sampling_steps");
	json_t *count = json_object_get(state, "job_count");
	out->idle = json_is_integer(count) && json_integer_value(count) == 0;
	if (json_is_integer(step) && json_is_integer(steps) && json_integer_value(steps) >= 1 &&
	    json_integer_value(steps) <= MAX_STEPS && json_integer_value(step) >= 0 &&
	    json_integer_value(step) <= json_integer_value(steps)) {
		out->valid = 1;
		out->step = (int)json_integer_value(step);
		out->steps = (int)json_integer_value(steps);
	}
	double pr = json_number_value(json_object_get(p, "progress"));
	out->progress = pr > 0 ? (pr < 1 ? pr : 1) : 0;
	out->preview = json_string_value(json_object_get(p, "current_image"));
	return p;
}
