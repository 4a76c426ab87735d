/* answer.h — what a backend answers, read as hostile input: the txt2img
 * answer (A1111's {"images", "parameters", "info"}) and the progress answer
 * (A1111's ProgressResponse). Pure functions on bytes; dispatch.c calls them
 * on the loop thread, tests/fuzz/fuzz_balancer_answer.c calls them directly. */
#ifndef SDGATE_ANSWER_H
#define SDGATE_ANSWER_H

#include "image.h"

#include <jansson.h>
#include <stddef.h>

/* The answer object when "images" is a non-empty list of base64 PNG, JPEG or
 * WebP files (each decoded and checked whole by image_check; a "data:"
 * prefix is allowed and its declared type ignored) and "info" is a string or
 * object (or none); else NULL. New reference, re-wrapped: "images" holds the
 * bare base64 of each (A1111's shape, no prefix) and "image_types" the MIME
 * type image_check found for each, in the same order. The decoded files go
 * to *files when it is not NULL (caller frees them with image_files_free;
 * left empty when NULL is returned). */
json_t *answer_parse_txt2img(const char *body, size_t len, struct image_files *files);

/* The answer's info as an object (A1111 sends it as a JSON string): a new
 * reference, {} when absent or unreadable. */
json_t *answer_info(const json_t *answer);

/* info.sdgate.inference_time when it is a number in [0, 1e6]; else -1. */
double answer_reported_inference(const json_t *info);

struct answer_progress {
	int valid;       /* state.sampling_step(s) were usable numbers */
	int step, steps; /* 0 <= step <= steps, 1 <= steps <= 100000 */
	double progress; /* clamped to [0, 1] */
	/* current_image when it is a checked image (as for txt2img): its bare
	 * base64, borrowed from the parsed JSON, and its MIME type (static);
	 * NULL both when absent or not an image (a bad preview is dropped). */
	const char *preview;
	const char *preview_type;
	int idle; /* state.job_count == 0: nothing running (A1111's idle) */
};

/* Parses a progress answer into *out; returns the parsed JSON (which owns
 * out->preview; caller decrefs) or NULL when it is not a JSON object. */
json_t *answer_parse_progress(const char *body, size_t len, struct answer_progress *out);

#endif
