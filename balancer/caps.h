/* caps.h — what one backend can run, and what one job needs (issue 12 item
 * 2, balancer/README.md "Routing by capability"): the A1111 samplers and
 * schedulers it has, its checkpoints, refiners, VAEs, upscalers, LoRAs and
 * the other A1111 listings (kept in A1111's shapes for the façade's unions),
 * its largest side and step count, and its features (img2img, hires fix).
 *
 * Where they come from: a native sdgate backend declares them in
 * /sdgate/v1/info's "capabilities" (caps_take_declared); a plain A1111 (or a
 * backend that does not declare them) answers its own /sdapi/v1/... listings
 * (caps_take_samplers, caps_take_schedulers, caps_take_list). Everything is
 * hostile input: only known keys are kept, each listing at most
 * CAPS_MAX_ITEMS entries, names at most A1111_MAX_NAME bytes, other strings
 * at most CAPS_MAX_TEXT, nested objects emptied; a listing of the wrong
 * shape is refused (-1) and the last good one stays.
 *
 * Pure data and functions (no I/O): unit-tested in tests/unit/test_balancer_caps.c. */
#ifndef SDGATE_BALANCER_CAPS_H
#define SDGATE_BALANCER_CAPS_H

#include <jansson.h>
#include <stddef.h>

#define CAPS_MAX_ITEMS 256        /* entries kept of one listing of one backend */
#define CAPS_MAX_UNION_ITEMS 1024 /* entries in a listing's union over backends */
#define CAPS_MAX_TEXT 1024        /* bytes of a kept string that is not a name (paths, prompts of a style) */

/* The listings kept as the backend answered them (sanitised). */
enum caps_list {
	CAPS_SD_MODELS,
	CAPS_SD_VAE,
	CAPS_UPSCALERS,
	CAPS_LATENT_UPSCALE_MODES,
	CAPS_LORAS,
	CAPS_EMBEDDINGS,
	CAPS_SCRIPTS,
	CAPS_PROMPT_STYLES,
	CAPS_FACE_RESTORERS,
	CAPS_N_LISTS
};

struct caps {
	int known;                     /* samplers and schedulers were read (else: nothing is assumed) */
	int declared;                  /* from /sdgate/v1/info (a native backend), not from listings */
	unsigned samplers, schedulers; /* bit i: A1111_SAMPLERS[i], A1111_SCHEDULERS[i] */
	int max_size, max_steps;       /* largest side (px) of any pass, most steps of a pass */
	int img2img, hires_fix;        /* features */
	int img2img_webp;              /* decodes a WebP init image (A1111 does; the native engine does not) */
	json_t *refiners;              /* checkpoint names usable as refiner; NULL: any checkpoint it has (A1111) */
	json_t *lists[CAPS_N_LISTS];   /* NULL until read */
};

/* What a job needs. Strings point into the job's request. */
struct caps_need {
	int sampler, scheduler;       /* A1111_SAMPLERS / A1111_SCHEDULERS indexes */
	int hr_sampler, hr_scheduler; /* -1: the first pass's */
	int size, steps;              /* largest side of any pass; most steps of a pass */
	int img2img, hires_fix;
	int webp; /* an init image is a WebP */
	const char *hr_upscaler, *vae, *refiner; /* NULL: not asked */
};

void caps_init(struct caps *c);
void caps_free(struct caps *c);
/* "/sdapi/v1/sd-models" ... */
const char *caps_path(enum caps_list l);

/* GET /sdapi/v1/samplers, /schedulers answers (objects with "name", or bare
 * names). 0, or -1 when not a list (nothing changes). */
int caps_take_samplers(struct caps *c, const json_t *answer);
int caps_take_schedulers(struct caps *c, const json_t *answer);
/* A listing's answer; 0 or -1 (wrong shape: the last good one stays). */
int caps_take_list(struct caps *c, enum caps_list l, const json_t *answer);
/* A listing the backend does not have (404): empty. */
void caps_take_none(struct caps *c, enum caps_list l);
/* /sdgate/v1/info's "capabilities" object: samplers, schedulers, the
 * listings by their path's last part ("sd-models", "sd-vae", "upscalers",
 * "loras", ...), "refiners", "max_size", "max_steps", "features":
 * {"img2img", "hires_fix"}. 0, or -1 when it is not an object. */
int caps_take_declared(struct caps *c, const json_t *declared);
/* The operator's word (a --backend fragment): "max_size", "max_steps"
 * (integers or decimal strings) win over the backend's. */
void caps_apply_fixed(struct caps *c, const json_t *fixed);

/* What a request (the job's parsed, normalised A1111 body) needs. */
void caps_need_of(const json_t *request, int img2img, struct caps_need *n);
/* The request fields a backend may be unable to run, in the order
 * caps_cannot checks them (NULL-terminated). */
extern const char *const CAPS_FIELDS[];
/* NULL when c can run n (or knows nothing yet), else the first field of
 * CAPS_FIELDS it cannot run ("sampler_name", "width", "enable_hr", ...). */
const char *caps_cannot(const struct caps *c, const struct caps_need *n);
/* The index of a caps_cannot answer in CAPS_FIELDS, or -1. */
int caps_field_rank(const char *field);
/* Does c list this checkpoint under another of A1111's names for it (short
 * hash, sha256, file name)? */
int caps_has_checkpoint(const struct caps *c, const char *name);

/* The union of listing l over n backends' caps, in A1111's shape (a list,
 * or the object of /embeddings and /scripts), first seen first, at most
 * CAPS_MAX_UNION_ITEMS entries. New reference. */
json_t *caps_union(const struct caps *const *cs, size_t n, enum caps_list l);
/* NULL-terminated canonical names of the samplers / schedulers in mask, in
 * A1111's order, into out (room for A1111_SAMPLER_COUNT + 1 / A1111_SCHEDULER_COUNT + 1). */
void caps_sampler_names(unsigned mask, const char **out);
void caps_scheduler_names(unsigned mask, const char **out);

#endif
