/* answer.h — what a backend answers, read as hostile input: the txt2img
 * answer (A1111's {"images", "parameters", "info"}) and the progress answer
 * (A1111's ProgressResponse). Pure functions on bytes; dispatch.c calls them
 * on the loop thread, tests/fuzz/fuzz_balancer_answer.c calls them directly. */
#ifndef SDGATE_ANSWER_H
#define SDGATE_ANSWER_H

#include <jansson.h>
#include <stddef.h>

/* The answer object when "images" is a non-empty list of base64 PNG, JPEG or
 * WebP files (checked: the alphabet, the padding, the file's magic number)
 * and "info" is a string or object (or none); else NULL. New reference. */
json_t *answer_parse_txt2img(const char *body, size_t len);

/* The answer's info as an object (A1111 sends it as a JSON string): a new
 * reference, {} when absent or unreadable. */
json_t *answer_info(const json_t *answer);

/* info.sdgate.inference_time when it is a number in [0, 1e6]; else -1. */
double answer_reported_inference(const json_t *info);

struct answer_progress {
	int valid;           /* state.sampling_step(s) were usable numbers */
	int step, steps;     /* 0 <= step <= steps, 1 <= steps <= 100000 */
	double progress;     /* clamped to [0, 1] */
	const char *preview; /* current_image (base64), borrowed from the parsed JSON, or NULL */
	int idle;            /* state.job_count == 0: nothing running (A1111's idle) */
};

/* Parses a progress answer into *out; returns the parsed JSON (which owns
 * out->preview; caller decrefs) or NULL when it is not a JSON object. */
json_t *answer_parse_progress(const char *body, size_t len, struct answer_progress *out);

#endif
