/* engine.h — the public API of libsdgate-kernels, sdgate's diffusion engine.
 *
 * One engine per process (or per GPU). The backend's worker thread calls
 * engine_generate(); nothing here touches the network or an event loop.
 * The engine runs on a CUDA device when one is usable, else on the CPU
 * reference; both give the same image for the same parameters within a
 * stated tolerance (see tests/kernels_check).
 *
 * Thread rules: engine_create/engine_destroy from one thread; engine_generate
 * is not re-entrant on one engine (the backend runs one job per slot).
 * The lookup functions (names, models) are pure and thread-safe.
 */
#ifndef SDGATE_ENGINE_H
#define SDGATE_ENGINE_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Bounds the engine enforces itself (the backend validates earlier and
 * answers 422; these protect the engine from any other caller). */
#define ENGINE_MIN_SIZE 64
#define ENGINE_MAX_SIZE 2048
#define ENGINE_MAX_STEPS 150
#define ENGINE_MAX_BATCH 8     /* batch_size */
#define ENGINE_MAX_ITER 16     /* n_iter */
#define ENGINE_MAX_PROMPT 8192 /* bytes */
#define ENGINE_LATENT_CHANNELS 4
#define ENGINE_LATENT_FACTOR 8 /* latent is width/8 x height/8, as in SD */

enum engine_sampler {
	ENGINE_SAMPLER_EULER,
	ENGINE_SAMPLER_EULER_A,
	ENGINE_SAMPLER_HEUN,
	ENGINE_SAMPLER_LMS,
	ENGINE_SAMPLER_DPMPP_2M,
	ENGINE_SAMPLER_DPMPP_SDE,
	ENGINE_SAMPLER_DPMPP_2M_SDE,
	ENGINE_SAMPLER_DDIM,
	ENGINE_SAMPLER_COUNT
};

/* A1111 1.9+ scheduler names: automatic, uniform, karras, exponential,
 * sgm_uniform, normal(=uniform in sigma-of-timestep space, see schedule.c). */
enum engine_schedule {
	ENGINE_SCHEDULE_AUTOMATIC, /* the sampler's own default */
	ENGINE_SCHEDULE_UNIFORM,
	ENGINE_SCHEDULE_KARRAS,
	ENGINE_SCHEDULE_EXPONENTIAL,
	ENGINE_SCHEDULE_SGM_UNIFORM,
	ENGINE_SCHEDULE_NORMAL,
	ENGINE_SCHEDULE_COUNT
};

/* Hires fix's latent upscalers, as A1111's latent_upscale_modes: "Latent"
 * (bilinear), "Latent (antialiased)" (= bilinear: antialiasing changes only
 * a downscale), "Latent (bicubic)", "Latent (bicubic antialiased)" (=
 * bicubic), "Latent (nearest)", "Latent (nearest-exact)". */
enum engine_upscale {
	ENGINE_UPSCALE_BILINEAR,
	ENGINE_UPSCALE_BICUBIC,
	ENGINE_UPSCALE_NEAREST,
	ENGINE_UPSCALE_NEAREST_EXACT,
};

/* A1111's sampler names. name: "Euler a", "DPM++ 2M", ...; aliases: a
 * NULL-terminated list such as {"k_euler_a", "k_euler_ancestral", NULL}. */
const char *engine_sampler_name(enum engine_sampler s);
const char *const *engine_sampler_aliases(enum engine_sampler s);
/* name: "automatic", "karras", ...; label: "Automatic", "Karras", ... */
const char *engine_schedule_name(enum engine_schedule s);
const char *engine_schedule_label(enum engine_schedule s);

/* Resolves what a client sent, both naming styles:
 *   ("DPM++ 2M", "karras"), ("DPM++ 2M Karras", NULL), ("k_dpmpp_2m", NULL),
 *   ("Euler a", "Automatic"), case-insensitive.
 * A scheduler named inside sampler_name wins over ENGINE_SCHEDULE_AUTOMATIC
 * only; an explicit scheduler argument wins otherwise (as A1111 does).
 * sampler_name NULL or "" means the default (Euler, as A1111's API).
 * Returns 0, -1 for an unknown sampler, -2 for an unknown scheduler. */
int engine_resolve_sampler(const char *sampler_name, const char *scheduler, enum engine_sampler *sampler_out,
			   enum engine_schedule *schedule_out);

/* Built-in checkpoints. They are procedural models (see README): their names
 * say so and impersonate no real checkpoint. */
struct engine_model_info {
	const char *title;      /* "sdgate-procedural-base-v1.builtin [0123456789]" as A1111's titles */
	const char *model_name; /* "sdgate-procedural-base-v1" */
	const char *hash;       /* 10 hex digits, as A1111's short hash */
	const char *sha256;     /* 64 hex digits */
	const char *filename;   /* "builtin:sdgate-procedural-base-v1" */
	int is_refiner;         /* 1 for the refiner checkpoint */
};
int engine_model_count(void);
const struct engine_model_info *engine_model_get(int index);
/* By title, model_name, or hash (as A1111 matches sd_model_checkpoint).
 * Returns the index or -1. */
int engine_model_find(const char *name);

struct engine_config {
	int force_cpu;   /* 1: never use CUDA */
	int cuda_device; /* device ordinal, default 0 */
};

struct engine;

/* Creates an engine. why (may be NULL) receives one human-readable line on
 * the device choice, e.g. "CUDA device 0: NVIDIA H100 80GB HBM3" or
 * "CPU reference: cudaGetDeviceCount: CUDA driver version is insufficient ...".
 * Returns NULL only on allocation failure. Caller frees with engine_destroy. */
struct engine *engine_create(const struct engine_config *cfg, char *why, size_t why_len);
void engine_destroy(struct engine *e);
/* "cpu" or the CUDA device name ("NVIDIA H100 80GB HBM3"). Owned by e. */
const char *engine_device_name(const struct engine *e);
int engine_uses_gpu(const struct engine *e);

struct engine_params {
	const char *prompt;          /* A1111 attention syntax: (word:1.3), (word), [word] */
	const char *negative_prompt; /* the unconditional side of CFG; NULL = "" */
	uint64_t seed;               /* concrete: the caller turns -1 into a seed */
	uint64_t subseed;
	float subseed_strength; /* 0..1: slerp between seed and subseed noise */
	enum engine_sampler sampler;
	enum engine_schedule schedule;
	int steps;
	float cfg_scale;
	int width, height;                      /* multiples of 8 */
	int batch_size, n_iter;                 /* images = batch_size * n_iter; seeds seed+i, as A1111 */
	float eta;                              /* ancestral noise scale (Euler a, DPM++ SDE, DDIM); <0 = default */
	float s_churn, s_tmin, s_tmax, s_noise; /* k-diffusion extras; s_noise 1.0 by default */
	int model;                              /* index from engine_model_find, -1 = default base */
	int refiner_model;                      /* -1 = no refiner */
	float refiner_switch_at;                /* fraction of steps after which the refiner takes over */
	int preview_every;                      /* fill engine_progress.preview every N steps; 0 = never */

	/* img2img: an init image (RGB8, row-major, init_width x init_height, each
	 * in 1..ENGINE_MAX_INIT_SIZE), resized by resize_mode (A1111's: 0 just
	 * resize, 1 crop and resize, 2 resize and fill, 3 latent upscale),
	 * encoded to latents and noised to denoising_strength: as A1111 (without
	 * img2img_fix_steps) the sampler runs the last int(min(strength, 0.999)
	 * * steps) + 1 steps of the schedule, from the init latent plus the
	 * seed's noise at that step's sigma. NULL: txt2img. Every image of the
	 * batch starts from it. */
	const uint8_t *init_rgb;
	int init_width, init_height;
	int resize_mode;
	float denoising_strength; /* 0..1: img2img, and hires fix's second pass */

	/* Hires fix (txt2img only; hr_width 0 = off): the first pass's latent
	 * resampled to hr_width x hr_height (multiples of 8) by hr_upscale, then
	 * a second pass as A1111's: hr_steps (0 = steps) steps, the last ones of
	 * a schedule of int(hr_steps / min(strength, 0.999)) steps (at most
	 * ENGINE_MAX_HR_SCHEDULE), started from that latent plus fresh noise
	 * (its own Philox stream) at their first sigma. Strength 0 decodes the
	 * upscaled latent as it is. */
	int hr_width, hr_height;
	int hr_steps;
	enum engine_upscale hr_upscale;
};
#define ENGINE_MAX_INIT_SIZE 4096   /* an init image's width and height */
#define ENGINE_MAX_HR_SCHEDULE 1000 /* the second pass's schedule length */

/* Fills p with A1111's defaults (steps 20, cfg 7, 512x512, Euler, ...). */
void engine_params_default(struct engine_params *p);

struct engine_progress {
	int image;  /* 0-based index of the image being sampled */
	int images; /* batch_size * n_iter */
	int step;   /* steps done for this image, 1..steps (both passes of a hires fix) */
	int steps;
	/* When this step is a preview step: the current denoised estimate decoded
	 * at latent resolution (width/8 x height/8), RGB8, valid only during the
	 * callback. NULL otherwise. */
	const uint8_t *preview;
	int preview_width, preview_height;
};
/* The sampler steps engine_generate runs per image for p: steps for
 * txt2img, fewer for img2img, plus the second pass of a hires fix. */
int engine_steps_total(const struct engine_params *p);

/* Called on the generating thread after each step. */
typedef void (*engine_progress_fn)(void *user, const struct engine_progress *p);

struct engine_image {
	int width, height;
	uint8_t *rgb;  /* width*height*3 bytes, row-major; owned by the result */
	uint64_t seed; /* the seed this image was made with */
	uint64_t subseed;
};

struct engine_result {
	int count; /* images produced (fewer when interrupted) */
	struct engine_image *images;
	int interrupted; /* 1 if *interrupt stopped the job */
	double seconds;  /* sampling + decode time, wall clock */
};
void engine_result_free(struct engine_result *r);

enum engine_status {
	ENGINE_OK = 0,
	ENGINE_EINVAL = -1, /* a parameter out of bounds; err says which */
	ENGINE_ENOMEM = -2,
	ENGINE_EDEVICE = -3, /* a CUDA error mid-job; err says which */
};

/* Generates batch_size*n_iter images. interrupt: when it becomes non-zero the
 * engine stops sampling and returns what it has (the current image decoded
 * from its current denoised estimate, as A1111). skip: when non-zero the
 * current image ends early in the same way, the engine clears *skip and goes
 * on with the next one. Both may be NULL. On success *out is filled and the
 * caller frees it with engine_result_free. */
int engine_generate(struct engine *e, const struct engine_params *p, engine_progress_fn progress, void *user,
		    const atomic_int *interrupt, atomic_int *skip, struct engine_result *out, char *err,
		    size_t err_len);

#ifdef __cplusplus
}
#endif
#endif
