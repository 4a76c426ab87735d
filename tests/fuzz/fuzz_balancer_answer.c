/* libFuzzer target: what a backend answers, as the balancer reads it
 * (balancer/answer.c): a txt2img answer with its info string, and a progress
 * answer. A malicious provider controls these bytes completely. */
#include "answer.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	json_t *a = answer_parse_txt2img((const char *)data, size);
	if (a) {
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
	struct answer_progress p;
	json_t *pj = answer_parse_progress((const char *)data, size, &p);
	if (p.valid && (p.step < 0 || p.step > p.steps || p.steps < 1))
		abort();
	if (p.progress < 0 || p.progress > 1)
		abort();
	if (p.preview)
		(void)strlen(p.preview);
	json_decref(pj);
	return 0;
}
