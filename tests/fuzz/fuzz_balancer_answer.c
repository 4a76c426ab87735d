/* libFuzzer target: what a backend answers, as the balancer reads it
 * (balancer/answer.c): a txt2img answer with its info string, and a progress
 * answer (images and previews checked by image.c, re-wrapped as bare base64
 * with their types). A malicious provider controls these bytes completely. */
#include "answer.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct image_files files;
	json_t *a = answer_parse_txt2img((const char *)data, size, &files);
	if (!a && (files.n || files.v))
		abort();
	if (a) { /* re-wrapped: bare base64 images, each with the type found, and its checked file */
		json_t *images = json_object_get(a, "images"), *types = json_object_get(a, "image_types");
		if (json_array_size(images) < 1 || json_array_size(images) != json_array_size(types) ||
		    files.n != json_array_size(images))
			abort();
		for (size_t i = 0; i < json_array_size(images); i++) {
			const char *img = json_string_value(json_array_get(images, i));
			const char *type = json_string_value(json_array_get(types, i));
			if (!img || strncmp(img, "data:", 5) == 0 || !type || strncmp(type, "image/", 6) != 0 ||
			    image_check(files.v[i].data, files.v[i].len, NULL) != files.v[i].facts.type ||
			    strcmp(image_mime(files.v[i].facts.type), type) != 0)
				abort();
		}
		json_t *info = answer_info(a);
		double t = answer_reported_inference(info);
		if (!json_is_object(info) || !(t == -1 || (t >= 0 && t <= 1e6)))
			abort();
		json_object_set_new(info, "sdgate", json_pack("{s:f}", "inference_time", t));
		char *text = json_dumps(info, JSON_COMPACT);
		free(text);
		json_decref(info);
		json_decref(a);
	}
	image_files_free(&files);
	struct answer_progress p;
	json_t *pj = answer_parse_progress((const char *)data, size, &p);
	if (p.valid && (p.step < 0 || p.step > p.steps || p.steps < 1))
		abort();
	if (p.progress < 0 || p.progress > 1)
		abort();
	if (!p.preview != !p.preview_type || (p.preview && strncmp(p.preview, "data:", 5) == 0))
		abort();
	if (p.preview)
		(void)strlen(p.preview);
	json_decref(pj);
	return 0;
}
