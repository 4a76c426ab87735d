/* txt2img.h — A1111's txt2img request: parsing and validation of the JSON
 * body into engine parameters, with FastAPI-shaped errors, and the answer's
 * "parameters" and "info" objects.
 *
 * Used on the loop thread (parse) and the worker thread (info); a request
 * object belongs to one thread at a time. */
#ifndef SDGATE_TXT2IMG_H
#define SDGATE_TXT2IMG_H

#include "engine.h"

#include <jansson.h>

/* Limits of this backend, printed by --help. */
#define TXT2IMG_MAX_BODY (1u << 20) /* 1 MiB */
#define TXT2IMG_MAX_PROMPT 8192     /* bytes, prompt and negative_prompt each */
#define TXT2IMG_MIN_STEPS 1
#define TXT2IMG_MAX_STEPS ENGINE_MAX_STEPS
#define TXT2IMG_MIN_CFG 1.0
#define TXT2IMG_MAX_CFG 30.0
#define TXT2IMG_MIN_SIZE ENGINE_MIN_SIZE
#define TXT2IMG_MAX_SIZE ENGINE_MAX_SIZE
#define TXT2IMG_MAX_BATCH ENGINE_MAX_BATCH
#define TXT2IMG_MAX_ITER ENGINE_MAX_ITER
#define TXT2IMG_MAX_PIXELS (32ull << 20) /* batch_size * n_iter * width * height */

struct txt2img {
	struct engine_params ep; /* strings point into `request` below */
	json_t *request;         /* the body as sent (owned) */
	json_t *parameters;      /* the request with A1111's defaults filled (owned) */
	int send_images;
	int seed_was_random;
	const char *sampler_label;  /* A1111's sampler name, "DPM++ 2M" */
	const char *schedule_label; /* "Karras" */
};

enum txt2img_result { TXT2IMG_OK = 0, TXT2IMG_REJECTED = -1 };
enum { TXT2IMG_CHECK_SAMPLERS = 1, TXT2IMG_CHECK_MODELS = 2, TXT2IMG_CHECK_ALL = 3 };

/* Parses and validates body. On TXT2IMG_REJECTED, *status and *reply hold the
 * answer (404 sampler not found, 422 validation list); caller owns *reply.
 * default_model: the checkpoint index used when the request names none.
 * check_names: which names to resolve against the built-in engine: samplers
 * and schedulers, checkpoints, both (TXT2IMG_CHECK_ALL), or none (0: upstream
 * mode, where the upstream server judges them). The balancer checks samplers
 * only: checkpoints are its backends' business.
 * On success the caller frees with txt2img_free. */
enum txt2img_result txt2img_parse(const char *body, size_t len, int default_model, int check_names, struct txt2img *out,
				  int *status, json_t **reply);
void txt2img_free(struct txt2img *t);

/* Fixes seed -1 (and subseed -1) to concrete random seeds, as A1111 does
 * before sampling; updates parameters' view too. */
void txt2img_fix_seeds(struct txt2img *t);

/* A1111's infotext for image i ("prompt\nNegative prompt: ...\nSteps: 20,
 * Sampler: ..."). Caller frees. */
char *txt2img_infotext(const struct txt2img *t, int image);

/* info: A1111's keys (prompt, all_prompts, seed, all_seeds, ..., infotexts,
 * job_timestamp, version) for count images. sdgate (stolen) is added as
 * "sdgate". New reference. */
json_t *txt2img_info(const struct txt2img *t, int count, const char *job_timestamp, json_t *sdgate);

/* A1111's lists, GET /sdapi/v1/samplers and /schedulers, for the built-in
 * engine's names (the balancer answers the same). New references. */
json_t *txt2img_samplers_json(void);
json_t *txt2img_schedulers_json(void);

/* A1111's ProgressResponse. */
struct txt2img_progress {
	double progress, eta_relative;
	int active, job_count, job_no, sampling_step, sampling_steps;
	const char *job_timestamp;
	int interrupted, skipped;
};
/* current_image is stolen (a base64 string or json_null()). New reference. */
json_t *txt2img_progress_json(const struct txt2img_progress *p, json_t *current_image);

#endif
