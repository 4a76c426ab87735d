/* a1111.h — AUTOMATIC1111 1.10's request model, on its own: the txt2img and
 * img2img bodies (StableDiffusionTxt2ImgProcessingAPI and
 * Img2ImgProcessingAPI) parsed, validated, coerced as A1111's pydantic v1
 * models coerce them, normalised and serialised again; A1111's sampler and
 * scheduler names; the answer's "parameters", "info" and infotext; the
 * FastAPI error shapes (422 {"detail": [...]}, 404 {"detail": "Sampler not
 * found"}). See docs/ for the façade's differences from A1111.
 *
 * Depends on jansson and common/ only — never on the engine (kernels/) or
 * CUDA: the gateway and the balancer link it without the engine, and the
 * backend maps its names onto the engine's (backend/txt2img.c).
 *
 * Which samplers and schedulers a caller can *run* is the caller's business:
 * a1111_parse takes a struct a1111_runnable (NULL: every A1111 name). This
 * is the hook for backends' capabilities (issue 12 item 2).
 *
 * Pure functions and constant tables: thread-safe; a request object belongs
 * to one thread at a time. */
#ifndef SDGATE_A1111_H
#define SDGATE_A1111_H

#include <jansson.h>
#include <stddef.h>

/* Bounds of every request, as sdgate enforces them (422 past them). */
#define A1111_MAX_BODY (1u << 20)          /* a txt2img body: 1 MiB */
#define A1111_MAX_IMG2IMG_BODY (48u << 20) /* an img2img body, init images included */
#define A1111_MAX_PROMPT 8192              /* bytes, each prompt */
#define A1111_MAX_NAME 256                 /* bytes: sampler, scheduler, checkpoint, upscaler, script names */
#define A1111_MAX_STYLES 64                /* names in "styles" */
#define A1111_MIN_STEPS 1
#define A1111_MAX_STEPS 150
#define A1111_MIN_CFG 1.0
#define A1111_MAX_CFG 30.0
#define A1111_MIN_SIZE 64
#define A1111_MAX_SIZE 2048
#define A1111_MAX_HR_SIZE 8192                /* hr_resize_x/y, firstphase_width/height */
#define A1111_MAX_BATCH 8                     /* batch_size */
#define A1111_MAX_ITER 16                     /* n_iter */
#define A1111_MAX_PIXELS (32ull << 20)        /* batch_size * n_iter * width * height */
#define A1111_MAX_SEED ((1LL << 53) - 1)      /* seeds survive a JSON double */
#define A1111_MAX_INIT_IMAGES 4               /* img2img init_images */
#define A1111_MAX_INIT_IMAGE_BYTES (8u << 20) /* each, decoded */

/* ---- names ---------------------------------------------------------- */

struct a1111_sampler {
	const char *name;           /* "DPM++ 2M" */
	const char *const *aliases; /* NULL-terminated: {"k_dpmpp_2m", NULL} */
};
struct a1111_scheduler {
	const char *name, *label; /* "karras", "Karras" */
	double default_rho;       /* -1: none */
	int need_inner_model;
	const char *alias; /* NULL or one more accepted spelling ("SGMUniform") */
};

/* A1111 1.10's 20 samplers and 12 schedulers, in A1111's order. */
#define A1111_SAMPLER_COUNT 20
#define A1111_SCHEDULER_COUNT 12
extern const struct a1111_sampler A1111_SAMPLERS[A1111_SAMPLER_COUNT];
extern const struct a1111_scheduler A1111_SCHEDULERS[A1111_SCHEDULER_COUNT];

/* What a caller can run: NULL-terminated lists of A1111's canonical names
 * (A1111_SAMPLERS[i].name, A1111_SCHEDULERS[i].name); a NULL list accepts
 * every A1111 name. find_checkpoint (may be NULL: not checked) returns the
 * caller's index for a checkpoint name, or -1 (422 checkpoint_not_found).
 * unchecked: names A1111 does not know pass too (a server behind, such as
 * Forge, judges them); the request's sampler is then Euler, automatic. */
struct a1111_runnable {
	const char *const *samplers;
	const char *const *schedulers;
	int (*find_checkpoint)(const char *name);
	int unchecked;
};

/* The native engine's names, in the order of its enums (kernels/engine.h
 * maps onto these: one list). The balancer and the gateway accept these
 * until capabilities come (issue 12 item 2). */
#define A1111_NATIVE_SAMPLER_COUNT 8
#define A1111_NATIVE_SCHEDULER_COUNT 6
extern const char *const A1111_NATIVE_SAMPLERS[A1111_NATIVE_SAMPLER_COUNT + 1];     /* NULL-terminated */
extern const char *const A1111_NATIVE_SCHEDULERS[A1111_NATIVE_SCHEDULER_COUNT + 1]; /* NULL-terminated */
extern const struct a1111_runnable A1111_NATIVE; /* the two lists, no checkpoint check */

/* Index of name in a NULL-terminated list, or -1. */
int a1111_name_index(const char *const *list, const char *name);
/* A sampler by name or alias (case-insensitive, the first len bytes of s); -1. */
int a1111_sampler_find(const char *s, size_t len);
/* A scheduler by name, label or alias (case-insensitive); -1. */
int a1111_scheduler_find(const char *s);

/* Resolves what a client sent, both naming styles: ("DPM++ 2M", "karras"),
 * ("DPM++ 2M Karras", NULL), ("k_dpmpp_2m", NULL), ("k_lms_ka", NULL).
 * A scheduler named inside sampler_name wins over "automatic" only; an
 * explicit scheduler wins otherwise (as A1111). NULL or "" sampler: Euler.
 * runnable may be NULL (every name). Sets indexes into A1111_SAMPLERS and
 * A1111_SCHEDULERS. Returns 0, -1 (unknown or not runnable sampler: 404),
 * -2 (unknown or not runnable scheduler: 422). */
int a1111_resolve_sampler(const char *sampler_name, const char *scheduler, const struct a1111_runnable *runnable,
			  int *sampler_out, int *scheduler_out);

/* GET /sdapi/v1/samplers and /schedulers for runnable (NULL: all). New references. */
json_t *a1111_samplers_json(const struct a1111_runnable *runnable);
json_t *a1111_schedulers_json(const struct a1111_runnable *runnable);

/* ---- requests ------------------------------------------------------- */

/* A1111_EITHER (a1111_parse only): img2img when the body sets init_images
 * (not null), else txt2img; the parsed request's kind says which (sdgate's
 * jobs API, POST /v1/jobs, takes both on one route). */
enum a1111_kind { A1111_TXT2IMG, A1111_IMG2IMG, A1111_EITHER };
enum a1111_result { A1111_OK = 0, A1111_REJECTED = -1 };

struct a1111_init_image {
	size_t bytes;     /* decoded size */
	const char *type; /* "png", "jpeg", "webp" */
};

/* An init image's type by its first bytes only (base64, with or without a
 * data: URL prefix): "png", "jpeg", "webp", or NULL. Cheap: the parse
 * checks the whole image; this is for who reads a request already parsed. */
const char *a1111_image_type(const char *text, size_t len);

/* A parsed request. Strings point into `set` (or are ""), valid until
 * a1111_request_free. Doubles that are NAN were not set. */
struct a1111_request {
	enum a1111_kind kind;
	json_t *body;       /* the object as sent (owned): sdgate's own extension keys are read from it */
	json_t *set;        /* the model's fields the client set, coerced (owned) */
	json_t *parameters; /* every field of the model: A1111's defaults, then `set` (owned) */

	const char *prompt, *negative_prompt;
	long long seed, subseed; /* -1 until a1111_fix_seeds */
	int seed_was_random, subseed_was_random;
	double subseed_strength;
	int sampler, scheduler; /* A1111_SAMPLERS / A1111_SCHEDULERS indexes; scheduler 0 = automatic */
	int steps;
	double cfg_scale;
	int width, height, batch_size, n_iter;
	double eta, s_churn, s_tmin, s_tmax, s_noise;
	const char *checkpoint;         /* override_settings.sd_model_checkpoint, or NULL */
	int checkpoint_index;           /* find_checkpoint's answer, -1 when not set or not checked */
	const char *refiner_checkpoint; /* or NULL */
	int refiner_index;
	double refiner_switch_at;
	int send_images, save_images, enable_hr;

	/* img2img */
	int init_image_count;
	struct a1111_init_image init_images[A1111_MAX_INIT_IMAGES];
	double denoising_strength;
	int resize_mode; /* 0 just resize, 1 crop and resize, 2 resize and fill, 3 latent upscale */
	int has_mask;    /* a mask was sent: accepted here; inpainting is not supported yet (a1111_unsupported) */
	int include_init_images;
};

/* Parses body as kind. On A1111_REJECTED, *status and *reply hold A1111's
 * answer (422 {"detail": [...]} listing every problem, or 404 {"detail":
 * "Sampler not found"} once the rest is valid); the caller owns *reply, and
 * out->kind still says what the body was read as (A1111_EITHER resolved:
 * img2img only when it is a JSON object setting init_images). On
 * A1111_OK the caller frees out with a1111_request_free. */
enum a1111_result a1111_parse(enum a1111_kind kind, const char *body, size_t len, const struct a1111_runnable *runnable,
			      struct a1111_request *out, int *status, json_t **reply);
void a1111_request_free(struct a1111_request *r);

/* What a parsed request asks that sdgate cannot do yet, as A1111's 422
 * ({"detail": [{"type": "unsupported", "loc": ["body", field], "msg"}]}),
 * or NULL. Today: img2img's mask (inpainting). New reference. */
json_t *a1111_unsupported(const struct a1111_request *r);

/* Draws concrete seeds for -1 (A1111: random.randrange(4294967294)), once:
 * updates the typed fields, `set` and `parameters`. */
void a1111_fix_seeds(struct a1111_request *r);

/* The request as a body for another A1111: the fields the client set,
 * coerced, with sampler_name and scheduler resolved to A1111's canonical
 * names (sampler_index folded in), seed and subseed always present. Unknown
 * keys are never in it. New reference. */
json_t *a1111_request_body(const struct a1111_request *r);

/* ---- answers -------------------------------------------------------- */

/* The checkpoint names an answer reports (the caller's: the library knows none). */
struct a1111_models {
	const char *name, *hash;                 /* "" when unknown */
	const char *refiner_name, *refiner_hash; /* refiner_name NULL: no refiner */
};

/* Hires fix's denoising_strength where the request leaves it null (A1111
 * 1.10's StableDiffusionProcessingTxt2Img default). */
#define A1111_HR_DEFAULT_STRENGTH 0.75
/* The strength the request runs with: img2img's, a hires fix's (its default
 * when null), else NAN. */
double a1111_denoising_strength(const struct a1111_request *r);

/* A1111's infotext for image i ("prompt\nNegative prompt: ...\nSteps: 20,
 * Sampler: ..."). Caller frees. */
char *a1111_infotext(const struct a1111_request *r, const struct a1111_models *m, int image);
/* info: A1111's keys (prompt, all_prompts, seed, all_seeds, ..., infotexts,
 * job_timestamp, version) for count images; sdgate (stolen, may be NULL) is
 * added as "sdgate". New reference. */
json_t *a1111_info(const struct a1111_request *r, const struct a1111_models *m, int count, const char *job_timestamp,
		   json_t *sdgate);

/* A1111's ProgressResponse. */
struct a1111_progress {
	double progress, eta_relative;
	int active, job_count, job_no, sampling_step, sampling_steps;
	const char *job_timestamp;
	int interrupted, skipped;
};
/* current_image is stolen (a base64 string or NULL). New reference. */
json_t *a1111_progress_json(const struct a1111_progress *p, json_t *current_image);

/* FastAPI's shapes: {"detail": [one item]} (422) and {"detail": message}. New references. */
json_t *a1111_error_422(const char *field, const char *type, const char *msg, json_t *input);
json_t *a1111_error_detail(const char *message);

#endif
