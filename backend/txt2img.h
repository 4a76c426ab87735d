/* txt2img.h — the engine's adapter over the A1111 request model (a1111.h):
 * a txt2img or img2img body parsed by libsdgate-a1111 against the engine's
 * names and checkpoints, mapped onto engine parameters (hires fix and the
 * init image included), and the answer's "info" and infotexts with the
 * engine's checkpoint names.
 *
 * Used on the loop thread (parse) and the worker thread (info); a request
 * object belongs to one thread at a time. */
#ifndef SDGATE_TXT2IMG_H
#define SDGATE_TXT2IMG_H

#include "a1111.h"
#include "engine.h"

#include <jansson.h>

/* Limits of this backend, printed by --help: A1111's bounds (a1111.h),
 * which the engine's own bounds cover. */
#define TXT2IMG_MAX_BODY A1111_MAX_BODY
#define TXT2IMG_MAX_PROMPT A1111_MAX_PROMPT
#define TXT2IMG_MIN_STEPS A1111_MIN_STEPS
#define TXT2IMG_MAX_STEPS A1111_MAX_STEPS
#define TXT2IMG_MIN_CFG A1111_MIN_CFG
#define TXT2IMG_MAX_CFG A1111_MAX_CFG
#define TXT2IMG_MIN_SIZE A1111_MIN_SIZE
#define TXT2IMG_MAX_SIZE A1111_MAX_SIZE
#define TXT2IMG_MAX_BATCH A1111_MAX_BATCH
#define TXT2IMG_MAX_ITER A1111_MAX_ITER
#define TXT2IMG_MAX_PIXELS A1111_MAX_PIXELS

struct txt2img {
	struct a1111_request a;  /* the parsed request (owned) */
	struct engine_params ep; /* strings point into `a` */
	json_t *request;         /* the body as sent (a.body, borrowed): upstream mode sends it on */
	json_t *parameters;      /* the request with A1111's defaults filled (a.parameters, borrowed) */
	int send_images;
	int seed_was_random;
	const char *sampler_label;  /* A1111's sampler name, "DPM++ 2M" */
	const char *schedule_label; /* "Karras" */
	uint8_t *init_rgb;          /* img2img: the decoded init image (owned), after txt2img_load_init */
};

enum txt2img_result { TXT2IMG_OK = 0, TXT2IMG_REJECTED = -1 };
enum { TXT2IMG_CHECK_SAMPLERS = 1, TXT2IMG_CHECK_MODELS = 2, TXT2IMG_CHECK_ALL = 3 };

/* Parses and validates body. On TXT2IMG_REJECTED, *status and *reply hold the
 * answer (404 sampler not found, 422 validation list); caller owns *reply.
 * default_model: the checkpoint index used when the request names none.
 * check_names: which names to resolve against the built-in engine: samplers
 * and schedulers, checkpoints, both (TXT2IMG_CHECK_ALL), or none (0: upstream
 * mode, where the upstream server judges them).
 * On success the caller frees with txt2img_free. */
enum txt2img_result txt2img_parse(const char *body, size_t len, int default_model, int check_names, struct txt2img *out,
				  int *status, json_t **reply);
void txt2img_free(struct txt2img *t);

/* The same for an img2img body (A1111's Img2ImgProcessingAPI): a mask is
 * refused (a1111_unsupported), the init image is decoded later, on the jobs
 * lane, by txt2img_load_init. */
enum txt2img_result img2img_parse(const char *body, size_t len, int default_model, int check_names, struct txt2img *out,
				  int *status, json_t **reply);

/* img2img, native engine: decodes the first init image into t->ep (jobs
 * lane). Returns 0, or -1 with *reply set to a 422 {"detail": [...]} naming
 * init_images.0 (caller owns it). */
int txt2img_load_init(struct txt2img *t, json_t **reply);

/* Fixes seed -1 (and subseed -1) to concrete random seeds, as A1111 does
 * before sampling. */
void txt2img_fix_seeds(struct txt2img *t);

/* A1111's infotext for image i. Caller frees. */
char *txt2img_infotext(const struct txt2img *t, int image);

/* info (a1111_info) with the engine's checkpoint names; sdgate is stolen.
 * New reference. */
json_t *txt2img_info(const struct txt2img *t, int count, const char *job_timestamp, json_t *sdgate);

#endif
