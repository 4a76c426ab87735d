/* answer.c — see answer.h. */
#include "answer.h"

#include "b64.h"
#include "image.h"

#include <stdlib.h>
#include <string.h>

#define MAX_STEPS 100000

/* An image as A1111 sends it: padded standard base64 (after an optional
 * "data:...;base64," prefix, whose declared type means nothing) of a PNG,
 * JPEG or WebP file (A1111's samples_format). The whole file is decoded and
 * checked (image.c), so a broken or hostile provider cannot hand clients
 * text, or a page with an image's magic number in front, as an image.
 * *payload and *plen give the bare base64 (no prefix) inside text. The file
 * goes to *file when it is not NULL and the image is one (caller frees its
 * data); else it is freed here. */
static enum image_type image_of_b64(const char *text, size_t len, const char **payload, size_t *plen,
				    struct image_file *file)
{
	text = b64_payload(text, &len);
	*payload = text;
	*plen = len;
	if (!b64_is_valid(text, len))
		return IMAGE_NONE;
	size_t n = 0;
	unsigned char *bytes = b64_decode_new(text, len, &n);
	struct image_facts facts;
	enum image_type t = image_check(bytes, n, &facts);
	if (file && t != IMAGE_NONE) {
		*file = (struct image_file){bytes, n, facts};
		return t;
	}
	free(bytes);
	return t;
}

/* Replaces the answer's "images" with the bare base64 of each (checked)
 * image and adds "image_types"; 0 when an image is not one. The decoded
 * files go to *files when it is not NULL. */
static int rewrap_images(json_t *a, struct image_files *files)
{
	json_t *images = json_object_get(a, "images");
	if (!json_is_array(images) || json_array_size(images) == 0)
		return 0;
	json_t *bare = json_array(), *types = json_array();
	size_t i;
	json_t *v;
	int ok = bare && types;
	if (ok && files) {
		files->v = calloc(json_array_size(images), sizeof *files->v);
		ok = files->v != NULL;
	}
	json_array_foreach(images, i, v)
	{
		const char *payload;
		size_t plen;
		struct image_file *file = files && files->v ? &files->v[i] : NULL;
		enum image_type t = ok && json_is_string(v) ? image_of_b64(json_string_value(v), json_string_length(v),
									   &payload, &plen, file)
							    : IMAGE_NONE;
		if (file && t != IMAGE_NONE)
			files->n = i + 1;
		ok = t != IMAGE_NONE &&
		     json_array_append_new(bare, payload == json_string_value(v) ? json_incref(v)
										 : json_stringn(payload, plen)) == 0 &&
		     json_array_append_new(types, json_string(image_mime(t))) == 0;
		if (!ok)
			break;
	}
	if (ok) {
		json_object_set_new(a, "images", bare);
		json_object_set_new(a, "image_types", types);
		return 1;
	}
	json_decref(bare);
	json_decref(types);
	if (files)
		image_files_free(files);
	return 0;
}

json_t *answer_parse_txt2img(const char *body, size_t len, struct image_files *files)
{
	if (files)
		*files = (struct image_files){NULL, 0};
	json_error_t err;
	json_t *a = json_loadb(body, len, 0, &err);
	json_t *info = json_object_get(a, "info");
	int ok = json_is_object(a) && (!info || json_is_string(info) || json_is_object(info)) &&
		 rewrap_images(a, files);
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
	json_t *preview = json_object_get(p, "current_image");
	const char *payload;
	size_t plen;
	enum image_type t = json_is_string(preview) ? image_of_b64(json_string_value(preview),
								   json_string_length(preview), &payload, &plen, NULL)
						    : IMAGE_NONE;
	if (t != IMAGE_NONE) { /* the bare base64 ends where the JSON string does: NUL-terminated */
		out->preview = payload;
		out->preview_type = image_mime(t);
	}
	return p;
}
