/* caps.c — see caps.h. Listings are sanitised against one table of their
 * A1111 shapes (models.py: SDModelItem, SDVaeItem, UpscalerItem, ...):
 * known keys only, bounded counts and lengths, nested objects emptied. */
#include "caps.h"

#include "a1111.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define MAX_KEYS 6

/* One listing: its path, the key that names an entry (NULL: an object, see
 * the kind), the keys kept. */
enum shape { LIST_OF_OBJECTS, EMBEDDINGS, SCRIPTS };
struct spec {
	const char *path;
	enum shape shape;
	const char *key;
	const char *keys[MAX_KEYS + 1];
};

static const struct spec SPECS[CAPS_N_LISTS] = {
	[CAPS_SD_MODELS] = {"/sdapi/v1/sd-models",
			    LIST_OF_OBJECTS,
			    "title",
			    {"title", "model_name", "hash", "sha256", "filename", "config"}},
	[CAPS_SD_VAE] = {"/sdapi/v1/sd-vae", LIST_OF_OBJECTS, "model_name", {"model_name", "filename"}},
	[CAPS_UPSCALERS] = {"/sdapi/v1/upscalers",
			    LIST_OF_OBJECTS,
			    "name",
			    {"name", "model_name", "model_path", "model_url", "scale"}},
	[CAPS_LATENT_UPSCALE_MODES] = {"/sdapi/v1/latent-upscale-modes", LIST_OF_OBJECTS, "name", {"name"}},
	[CAPS_LORAS] = {"/sdapi/v1/loras", LIST_OF_OBJECTS, "name", {"name", "alias", "path", "metadata"}},
	[CAPS_EMBEDDINGS] = {"/sdapi/v1/embeddings",
			     EMBEDDINGS,
			     NULL,
			     {"step", "sd_checkpoint", "sd_checkpoint_name", "shape", "vectors"}},
	[CAPS_SCRIPTS] = {"/sdapi/v1/scripts", SCRIPTS, NULL, {"txt2img", "img2img"}},
	[CAPS_PROMPT_STYLES] = {"/sdapi/v1/prompt-styles",
				LIST_OF_OBJECTS,
				"name",
				{"name", "prompt", "negative_prompt"}},
	[CAPS_FACE_RESTORERS] = {"/sdapi/v1/face-restorers", LIST_OF_OBJECTS, "name", {"name", "cmd_dir"}},
};

const char *caps_path(enum caps_list l) { return SPECS[l].path; }

void caps_init(struct caps *c)
{
	memset(c, 0, sizeof *c);
	c->max_size = A1111_MAX_SIZE;
	c->max_steps = A1111_MAX_STEPS;
	c->img2img = c->hires_fix = c->img2img_webp = 1; /* A1111 has them; a native backend says what it lacks */
}

void caps_free(struct caps *c)
{
	json_decref(c->refiners);
	for (int i = 0; i < CAPS_N_LISTS; i++)
		json_decref(c->lists[i]);
	memset(c, 0, sizeof *c);
}

static int is_name(const json_t *v)
{
	return json_is_string(v) && json_string_length(v) > 0 && json_string_length(v) <= A1111_MAX_NAME &&
	       strlen(json_string_value(v)) == json_string_length(v);
}

/* A kept value: scalars as they are (strings bounded, else null), objects
 * and lists emptied. New reference. */
static json_t *scalar(json_t *v)
{
	if (json_is_string(v))
		return json_string_length(v) <= CAPS_MAX_TEXT ? json_incref(v) : json_null();
	if (json_is_number(v) || json_is_boolean(v))
		return json_incref(v);
	if (json_is_object(v))
		return json_object();
	if (json_is_array(v))
		return json_array();
	return json_null();
}

static json_t *item(const struct spec *s, json_t *in)
{
	if (!json_is_object(in) || !is_name(json_object_get(in, s->key)))
		return NULL;
	json_t *out = json_object();
	for (const char *const *k = s->keys; *k; k++) {
		json_t *v = json_object_get(in, *k);
		json_object_set_new(out, *k, !strcmp(*k, "metadata") ? json_object() : scalar(v));
	}
	return out;
}

/* Appends items of in to out unless their name is in seen, up to max. */
static void merge_items(const struct spec *s, json_t *out, json_t *seen, const json_t *in, size_t max)
{
	size_t i;
	json_t *v;
	json_array_foreach(in, i, v)
	{
		if (json_array_size(out) >= max)
			return;
		json_t *it = item(s, v);
		if (!it)
			continue;
		const char *name = json_string_value(json_object_get(it, s->key));
		if (json_object_get(seen, name)) {
			json_decref(it);
			continue;
		}
		json_object_set_new(seen, name, json_true());
		json_array_append_new(out, it);
	}
}

static void merge_names(json_t *out, const json_t *in, size_t max)
{
	size_t i;
	json_t *v, *w;
	json_array_foreach(in, i, v)
	{
		if (json_array_size(out) >= max)
			return;
		if (!is_name(v))
			continue;
		size_t j;
		int dup = 0;
		json_array_foreach(out, j, w) dup |= json_equal(v, w);
		if (!dup)
			json_array_append(out, v);
	}
}

/* {"loaded": {name: {...}}, "skipped": {...}} */
static void merge_embeddings(const struct spec *s, json_t *out, const json_t *in, size_t max)
{
	static const char *const parts[] = {"loaded", "skipped"};
	for (int p = 0; p < 2; p++) {
		json_t *dst = json_object_get(out, parts[p]);
		const char *name;
		json_t *e;
		json_object_foreach((json_t *)json_object_get(in, parts[p]), name, e)
		{
			if (json_object_size(dst) >= max || strlen(name) > A1111_MAX_NAME || !*name ||
			    json_object_get(dst, name) || !json_is_object(e))
				continue;
			json_t *kept = json_object();
			for (const char *const *k = s->keys; *k; k++)
				json_object_set_new(kept, *k, scalar(json_object_get(e, *k)));
			json_object_set_new(dst, name, kept);
		}
	}
}

static json_t *empty_of(const struct spec *s)
{
	if (s->shape == EMBEDDINGS)
		return json_pack("{s:{},s:{}}", "loaded", "skipped");
	if (s->shape == SCRIPTS)
		return json_pack("{s:[],s:[]}", "txt2img", "img2img");
	return json_array();
}

/* Merges one backend's answer (or kept listing) into out. */
static void merge(const struct spec *s, json_t *out, json_t *seen, const json_t *in, size_t max)
{
	if (s->shape == LIST_OF_OBJECTS)
		merge_items(s, out, seen, in, max);
	else if (s->shape == EMBEDDINGS)
		merge_embeddings(s, out, in, max);
	else
		for (int p = 0; p < 2; p++)
			merge_names(json_object_get(out, s->keys[p]), json_object_get(in, s->keys[p]), max);
}

static int shape_ok(const struct spec *s, const json_t *answer)
{
	return s->shape == LIST_OF_OBJECTS ? json_is_array(answer) : json_is_object(answer);
}

int caps_take_list(struct caps *c, enum caps_list l, const json_t *answer)
{
	const struct spec *s = &SPECS[l];
	if (!shape_ok(s, answer))
		return -1;
	json_t *out = empty_of(s), *seen = json_object();
	merge(s, out, seen, answer, CAPS_MAX_ITEMS);
	json_decref(seen);
	json_decref(c->lists[l]);
	c->lists[l] = out;
	return 0;
}

void caps_take_none(struct caps *c, enum caps_list l)
{
	json_decref(c->lists[l]);
	c->lists[l] = empty_of(&SPECS[l]);
}

json_t *caps_union(const struct caps *const *cs, size_t n, enum caps_list l)
{
	const struct spec *s = &SPECS[l];
	json_t *out = empty_of(s), *seen = json_object();
	for (size_t i = 0; i < n; i++)
		if (cs[i]->lists[l])
			merge(s, out, seen, cs[i]->lists[l], CAPS_MAX_UNION_ITEMS);
	json_decref(seen);
	return out;
}

/* A list of names or of objects with "name", each found by find: a mask. */
static int take_mask(const json_t *answer, unsigned *mask, int (*find)(const char *name))
{
	if (!json_is_array(answer))
		return -1;
	unsigned m = 0;
	size_t i;
	json_t *v;
	json_array_foreach(answer, i, v)
	{
		if (i >= CAPS_MAX_ITEMS)
			break;
		json_t *name = json_is_object(v) ? json_object_get(v, "name") : v;
		int idx = is_name(name) ? find(json_string_value(name)) : -1;
		if (idx >= 0)
			m |= 1u << idx;
	}
	*mask = m;
	return 0;
}

static int find_sampler(const char *name) { return a1111_sampler_find(name, strlen(name)); }

int caps_take_samplers(struct caps *c, const json_t *answer)
{
	if (take_mask(answer, &c->samplers, find_sampler))
		return -1;
	c->known |= 1;
	return 0;
}

int caps_take_schedulers(struct caps *c, const json_t *answer)
{
	if (take_mask(answer, &c->schedulers, a1111_scheduler_find))
		return -1;
	c->schedulers |= 1u; /* "automatic" is the sampler's own: always there */
	c->known |= 2;
	return 0;
}

/* An integer (or a decimal string) within [lo, hi], or -1. */
static long bounded_int(const json_t *v, long lo, long hi)
{
	long x;
	if (json_is_integer(v)) {
		json_int_t i = json_integer_value(v);
		x = i < lo || i > hi ? -1 : (long)i;
	} else if (json_is_string(v) && json_string_length(v) > 0 && json_string_length(v) < 12) {
		char *end;
		x = strtol(json_string_value(v), &end, 10);
		if (*end || x < lo || x > hi)
			x = -1;
	} else {
		x = -1;
	}
	return x;
}

static void take_limits(struct caps *c, const json_t *from)
{
	long size = bounded_int(json_object_get(from, "max_size"), A1111_MIN_SIZE, A1111_MAX_SIZE);
	long steps = bounded_int(json_object_get(from, "max_steps"), A1111_MIN_STEPS, A1111_MAX_STEPS);
	if (size > 0)
		c->max_size = (int)size;
	if (steps > 0)
		c->max_steps = (int)steps;
}

int caps_take_declared(struct caps *c, const json_t *d)
{
	if (!json_is_object(d))
		return -1;
	struct caps was = *c;
	if (caps_take_samplers(c, json_object_get(d, "samplers")) ||
	    caps_take_schedulers(c, json_object_get(d, "schedulers"))) {
		c->samplers = was.samplers;
		c->schedulers = was.schedulers;
		c->known = was.known;
		return -1;
	}
	for (int l = 0; l < CAPS_N_LISTS; l++) {
		const char *name = strrchr(SPECS[l].path, '/') + 1;
		json_t *v = json_object_get(d, name);
		if (!v || caps_take_list(c, l, v)) /* not declared: it has none */
			caps_take_none(c, l);
	}
	json_t *refiners = json_array();
	merge_names(refiners, json_object_get(d, "refiners"), CAPS_MAX_ITEMS);
	json_decref(c->refiners);
	c->refiners = refiners;
	take_limits(c, d);
	json_t *f = json_object_get(d, "features");
	c->img2img = json_is_true(json_object_get(f, "img2img"));
	c->hires_fix = json_is_true(json_object_get(f, "hires_fix"));
	c->img2img_webp = json_is_true(json_object_get(f, "img2img_webp"));
	c->declared = 1;
	return 0;
}

void caps_apply_fixed(struct caps *c, const json_t *fixed) { take_limits(c, fixed); }

static const char *sampler_name(int i) { return A1111_SAMPLERS[i].name; }
static const char *scheduler_name(int i) { return A1111_SCHEDULERS[i].name; }

static void names_in(unsigned mask, int count, const char *(*name)(int), const char **out)
{
	int n = 0;
	for (int i = 0; i < count; i++)
		if (mask & (1u << i))
			out[n++] = name(i);
	out[n] = NULL;
}

void caps_sampler_names(unsigned mask, const char **out) { names_in(mask, A1111_SAMPLER_COUNT, sampler_name, out); }

void caps_scheduler_names(unsigned mask, const char **out)
{
	names_in(mask, A1111_SCHEDULER_COUNT, scheduler_name, out);
}

/* ---- needs ------------------------------------------------------------ */

static long int_or(const json_t *r, const char *key, long def)
{
	json_t *v = json_object_get(r, key);
	return json_is_integer(v) ? (long)json_integer_value(v) : json_is_real(v) ? (long)json_real_value(v) : def;
}

static const char *str_or_null(const json_t *r, const char *key)
{
	const char *s = json_string_value(json_object_get(r, key));
	return s && *s && strcasecmp(s, "None") ? s : NULL;
}

static int max_int(int a, int b) { return a > b ? a : b; }

/* The hires pass's side and steps (A1111: hr_resize_x/y, else hr_scale x the size). */
static void need_hires(const json_t *r, struct caps_need *n, int w, int h, int steps)
{
	double scale = json_number_value(json_object_get(r, "hr_scale"));
	if (!(scale > 0))
		scale = 2.0;
	long x = int_or(r, "hr_resize_x", 0), y = int_or(r, "hr_resize_y", 0);
	double hw = x > 0 ? (double)x : w * scale, hh = y > 0 ? (double)y : h * scale;
	if (x > 0 && y <= 0)
		hh = (double)h * (double)x / w;
	if (y > 0 && x <= 0)
		hw = (double)w * (double)y / h;
	double side = hw > hh ? hw : hh;
	n->size = max_int(n->size, side > 1e6 ? 1000000 : (int)side);
	long hr_steps = int_or(r, "hr_second_pass_steps", 0);
	n->steps = max_int(steps, hr_steps > 1000000 ? 1000000 : (int)hr_steps);
	n->hr_upscaler = str_or_null(r, "hr_upscaler");
	const char *hs = str_or_null(r, "hr_sampler_name"), *hk = str_or_null(r, "hr_scheduler");
	int s = -1, k = -1;
	if ((hs || hk) && a1111_resolve_sampler(hs, hk, NULL, &s, &k) == 0) {
		n->hr_sampler = hs ? s : -1;
		n->hr_scheduler = hk || k ? k : -1;
	} else if (hs || hk) {
		n->hr_sampler = A1111_SAMPLER_COUNT; /* unknown: nobody runs it */
	}
}

/* Whether an init image is a WebP (a1111.h reads its first bytes). */
static int has_webp(const json_t *images)
{
	size_t i;
	json_t *v;
	json_array_foreach(images, i, v)
	{
		const char *type = json_is_string(v) ? a1111_image_type(json_string_value(v), json_string_length(v))
						     : NULL;
		if (type && !strcmp(type, "webp"))
			return 1;
	}
	return 0;
}

void caps_need_of(const json_t *r, int img2img, struct caps_need *n)
{
	memset(n, 0, sizeof *n);
	n->hr_sampler = n->hr_scheduler = -1;
	if (a1111_resolve_sampler(str_or_null(r, "sampler_name"), str_or_null(r, "scheduler"), NULL, &n->sampler,
				  &n->scheduler))
		n->sampler = n->scheduler = 0;
	int w = (int)int_or(r, "width", 512), h = (int)int_or(r, "height", 512), steps = (int)int_or(r, "steps", 50);
	if (w < 1)
		w = 1;
	if (h < 1)
		h = 1;
	n->size = max_int(w, h);
	n->steps = steps;
	n->img2img = img2img;
	n->webp = img2img && has_webp(json_object_get(r, "init_images"));
	n->hires_fix = !img2img && json_is_true(json_object_get(r, "enable_hr"));
	if (n->hires_fix)
		need_hires(r, n, w, h, steps);
	n->vae = str_or_null(json_object_get(r, "override_settings"), "sd_vae");
	if (n->vae && !strcasecmp(n->vae, "Automatic"))
		n->vae = NULL;
	n->refiner = str_or_null(r, "refiner_checkpoint");
}

/* Is name the key of an entry of list l (or, for upscalers, a latent mode)? */
static int listed(const struct caps *c, enum caps_list l, const char *name)
{
	size_t i;
	json_t *v;
	json_array_foreach(c->lists[l], i, v)
	{
		const char *s = json_string_value(json_object_get(v, SPECS[l].key));
		if (s && !strcasecmp(s, name))
			return 1;
	}
	return 0;
}

int caps_has_checkpoint(const struct caps *c, const char *name)
{
	static const char *const keys[] = {"title", "model_name", "hash", "sha256"};
	size_t i;
	json_t *v;
	json_array_foreach(c->lists[CAPS_SD_MODELS], i, v)
	{
		for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++) {
			const char *s = json_string_value(json_object_get(v, keys[k]));
			if (s && *s && !strcasecmp(s, name))
				return 1;
		}
		const char *file = json_string_value(json_object_get(v, "filename"));
		const char *base = file ? strrchr(file, '/') : NULL;
		if (base && !strcasecmp(base + 1, name))
			return 1;
	}
	return 0;
}

static int refiner_ok(const struct caps *c, const char *refiner)
{
	if (!c->refiners)
		return 1; /* A1111: any checkpoint it has (the router checks that it has it) */
	size_t i;
	json_t *v;
	json_array_foreach(c->refiners, i, v) if (!strcasecmp(json_string_value(v), refiner)) return 1;
	return 0;
}

const char *const CAPS_FIELDS[] = {
	"sampler_name", "scheduler",   "hr_sampler_name",          "hr_scheduler",       "width", "steps", "enable_hr",
	"init_images",  "hr_upscaler", "override_settings.sd_vae", "refiner_checkpoint", NULL};
enum {
	F_SAMPLER,
	F_SCHEDULER,
	F_HR_SAMPLER,
	F_HR_SCHEDULER,
	F_SIZE,
	F_STEPS,
	F_HIRES,
	F_IMG2IMG,
	F_UPSCALER,
	F_VAE,
	F_REFINER
};

int caps_field_rank(const char *field)
{
	for (int i = 0; CAPS_FIELDS[i]; i++)
		if (CAPS_FIELDS[i] == field || !strcmp(CAPS_FIELDS[i], field))
			return i;
	return -1;
}

static int cannot(const struct caps *c, const struct caps_need *n)
{
	if (!(c->samplers & (1u << n->sampler)))
		return F_SAMPLER;
	if (!(c->schedulers & (1u << n->scheduler)))
		return F_SCHEDULER;
	if (n->hr_sampler >= A1111_SAMPLER_COUNT || (n->hr_sampler >= 0 && !(c->samplers & (1u << n->hr_sampler))))
		return F_HR_SAMPLER;
	if (n->hr_scheduler >= 0 && !(c->schedulers & (1u << n->hr_scheduler)))
		return F_HR_SCHEDULER;
	if (n->size > c->max_size)
		return F_SIZE;
	if (n->steps > c->max_steps)
		return F_STEPS;
	if (n->hires_fix && !c->hires_fix)
		return F_HIRES;
	if ((n->img2img && !c->img2img) || (n->webp && !c->img2img_webp))
		return F_IMG2IMG;
	if (n->hr_upscaler && !listed(c, CAPS_UPSCALERS, n->hr_upscaler) &&
	    !listed(c, CAPS_LATENT_UPSCALE_MODES, n->hr_upscaler))
		return F_UPSCALER;
	if (n->vae && !listed(c, CAPS_SD_VAE, n->vae))
		return F_VAE;
	if (n->refiner && !refiner_ok(c, n->refiner))
		return F_REFINER;
	return -1;
}

const char *caps_cannot(const struct caps *c, const struct caps_need *n)
{
	if (c->known != 3)
		return NULL;
	int f = cannot(c, n);
	return f < 0 ? NULL : CAPS_FIELDS[f];
}
