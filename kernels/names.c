/* names.c — sampler and scheduler names as A1111 spells them, their aliases,
 * the resolver for both naming styles, and the built-in checkpoints table.
 * Pure data and pure functions: thread-safe. */
#include "engine.h"

#include <stddef.h>
#include <string.h>
#include <strings.h>

static const char *const ALIAS_EULER[] = {"k_euler", NULL};
static const char *const ALIAS_EULER_A[] = {"k_euler_a", "k_euler_ancestral", NULL};
static const char *const ALIAS_HEUN[] = {"k_heun", NULL};
static const char *const ALIAS_LMS[] = {"k_lms", NULL};
static const char *const ALIAS_2M[] = {"k_dpmpp_2m", NULL};
static const char *const ALIAS_SDE[] = {"k_dpmpp_sde", NULL};
static const char *const ALIAS_2M_SDE[] = {"k_dpmpp_2m_sde", NULL};
static const char *const ALIAS_DDIM[] = {"ddim", NULL};

static const struct {
	const char *name;
	const char *const *aliases;
} SAMPLERS[ENGINE_SAMPLER_COUNT] = {
	[ENGINE_SAMPLER_EULER] = {"Euler", ALIAS_EULER},
	[ENGINE_SAMPLER_EULER_A] = {"Euler a", ALIAS_EULER_A},
	[ENGINE_SAMPLER_HEUN] = {"Heun", ALIAS_HEUN},
	[ENGINE_SAMPLER_LMS] = {"LMS", ALIAS_LMS},
	[ENGINE_SAMPLER_DPMPP_2M] = {"DPM++ 2M", ALIAS_2M},
	[ENGINE_SAMPLER_DPMPP_SDE] = {"DPM++ SDE", ALIAS_SDE},
	[ENGINE_SAMPLER_DPMPP_2M_SDE] = {"DPM++ 2M SDE", ALIAS_2M_SDE},
	[ENGINE_SAMPLER_DDIM] = {"DDIM", ALIAS_DDIM},
};

static const struct {
	const char *name, *label;
} SCHEDULES[ENGINE_SCHEDULE_COUNT] = {
	[ENGINE_SCHEDULE_AUTOMATIC] = {"automatic", "Automatic"},
	[ENGINE_SCHEDULE_UNIFORM] = {"uniform", "Uniform"},
	[ENGINE_SCHEDULE_KARRAS] = {"karras", "Karras"},
	[ENGINE_SCHEDULE_EXPONENTIAL] = {"exponential", "Exponential"},
	[ENGINE_SCHEDULE_SGM_UNIFORM] = {"sgm_uniform", "SGM Uniform"},
	[ENGINE_SCHEDULE_NORMAL] = {"normal", "Normal"},
};

const char *engine_sampler_name(enum engine_sampler s)
{
	return (int)s >= 0 && s < ENGINE_SAMPLER_COUNT ? SAMPLERS[s].name : NULL;
}

const char *const *engine_sampler_aliases(enum engine_sampler s)
{
	return (int)s >= 0 && s < ENGINE_SAMPLER_COUNT ? SAMPLERS[s].aliases : NULL;
}

const char *engine_schedule_name(enum engine_schedule s)
{
	return (int)s >= 0 && s < ENGINE_SCHEDULE_COUNT ? SCHEDULES[s].name : NULL;
}

const char *engine_schedule_label(enum engine_schedule s)
{
	return (int)s >= 0 && s < ENGINE_SCHEDULE_COUNT ? SCHEDULES[s].label : NULL;
}

/* Name or alias, the first len bytes of s, case-insensitive; -1 if none. */
static int find_sampler(const char *s, size_t len)
{
	for (int i = 0; i < ENGINE_SAMPLER_COUNT; i++) {
		if (strlen(SAMPLERS[i].name) == len && strncasecmp(s, SAMPLERS[i].name, len) == 0)
			return i;
		for (const char *const *a = SAMPLERS[i].aliases; *a; a++)
			if (strlen(*a) == len && strncasecmp(s, *a, len) == 0)
				return i;
	}
	return -1;
}

static int find_schedule(const char *s)
{
	for (int i = 0; i < ENGINE_SCHEDULE_COUNT; i++)
		if (strcasecmp(s, SCHEDULES[i].name) == 0 || strcasecmp(s, SCHEDULES[i].label) == 0)
			return i;
	return -1;
}

int engine_resolve_sampler(const char *sampler_name, const char *scheduler, enum engine_sampler *sampler_out,
			   enum engine_schedule *schedule_out)
{
	int sampler = ENGINE_SAMPLER_EULER, named = ENGINE_SCHEDULE_AUTOMATIC, explicit_ = ENGINE_SCHEDULE_AUTOMATIC;
	if (sampler_name && *sampler_name) {
		size_t len = strlen(sampler_name);
		sampler = find_sampler(sampler_name, len);
		/* "DPM++ 2M Karras", "LMS Karras", "DPM++ 2M SDE Exponential",
		 * and the old "k_dpmpp_2m_ka" / "k_lms_ka" aliases. */
		for (int s = 1; sampler < 0 && s < ENGINE_SCHEDULE_COUNT; s++) {
			size_t l = strlen(SCHEDULES[s].label);
			if (len > l + 1 && sampler_name[len - l - 1] == ' ' &&
			    strcasecmp(sampler_name + len - l, SCHEDULES[s].label) == 0) {
				sampler = find_sampler(sampler_name, len - l - 1);
				named = s;
			}
		}
		if (sampler < 0 && len > 3 && strcasecmp(sampler_name + len - 3, "_ka") == 0) {
			sampler = find_sampler(sampler_name, len - 3);
			named = ENGINE_SCHEDULE_KARRAS;
		}
		if (sampler < 0)
			return -1;
	}
	if (scheduler && *scheduler) {
		explicit_ = find_schedule(scheduler);
		if (explicit_ < 0)
			return -2;
	}
	*sampler_out = (enum engine_sampler)sampler;
	*schedule_out = (enum engine_schedule)(explicit_ != ENGINE_SCHEDULE_AUTOMATIC ? explicit_ : named);
	return 0;
}

/* The built-in checkpoints. sha256 is not a file digest (there is no file):
 * it is splitmix64(fnv1a64(name) + i) for i = 0..3 in hex, and hash its first
 * 10 digits, as A1111's short hash; test_kernels_engine re-derives them. */
static const struct engine_model_info MODELS[] = {
	{"sdgate-procedural-base-v1.builtin [9917535daf]", "sdgate-procedural-base-v1", "9917535daf",
	 "9917535dafebe4efcc7e55239d4fc11171cefb8c6c66d51005880f9f8a4acf7d", "builtin:sdgate-procedural-base-v1", 0},
	{"sdgate-procedural-refiner-v1.builtin [aabc9e72a1]", "sdgate-procedural-refiner-v1", "aabc9e72a1",
	 "aabc9e72a165d041596f316678b96ec09b4163619b0096682c11c56a38921fde", "builtin:sdgate-procedural-refiner-v1", 1},
};

int engine_model_count(void) { return (int)(sizeof MODELS / sizeof MODELS[0]); }

const struct engine_model_info *engine_model_get(int index)
{
	return index >= 0 && index < engine_model_count() ? &MODELS[index] : NULL;
}

int engine_model_find(const char *name)
{
	if (!name)
		return -1;
	for (int i = 0; i < engine_model_count(); i++) {
		const struct engine_model_info *m = &MODELS[i];
		if (strcmp(name, m->title) == 0 || strcmp(name, m->model_name) == 0 || strcasecmp(name, m->hash) == 0 ||
		    strcasecmp(name, m->sha256) == 0 || strcmp(name, m->filename) == 0)
			return i;
	}
	/* A1111 also accepts "name.builtin" and "name [hash]" */
	for (int i = 0; i < engine_model_count(); i++) {
		size_t n = strlen(MODELS[i].model_name);
		if (strncmp(name, MODELS[i].model_name, n) == 0 &&
		    (strcmp(name + n, ".builtin") == 0 || (name[n] == ' ' && strstr(name + n, MODELS[i].hash))))
			return i;
	}
	return -1;
}
