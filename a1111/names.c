/* names.c — A1111 1.10's sampler and scheduler names (modules/sd_samplers_*.py,
 * modules/sd_schedulers.py), the native engine's subset, the resolver for
 * both naming styles and the /samplers and /schedulers listings. Pure data
 * and pure functions: thread-safe. */
#include "a1111.h"

#include <string.h>
#include <strings.h>

#define ALIASES(...) ((const char *const[]){__VA_ARGS__, NULL})

const struct a1111_sampler A1111_SAMPLERS[A1111_SAMPLER_COUNT] = {
	{"DPM++ 2M", ALIASES("k_dpmpp_2m")},
	{"DPM++ SDE", ALIASES("k_dpmpp_sde")},
	{"DPM++ 2M SDE", ALIASES("k_dpmpp_2m_sde")},
	{"DPM++ 2M SDE Heun", ALIASES("k_dpmpp_2m_sde_heun")},
	{"DPM++ 2S a", ALIASES("k_dpmpp_2s_a")},
	{"DPM++ 3M SDE", ALIASES("k_dpmpp_3m_sde")},
	{"Euler a", ALIASES("k_euler_a", "k_euler_ancestral")},
	{"Euler", ALIASES("k_euler")},
	{"LMS", ALIASES("k_lms")},
	{"Heun", ALIASES("k_heun")},
	{"DPM2", ALIASES("k_dpm_2")},
	{"DPM2 a", ALIASES("k_dpm_2_a")},
	{"DPM fast", ALIASES("k_dpm_fast")},
	{"DPM adaptive", ALIASES("k_dpm_ad")},
	{"Restart", ALIASES("restart")},
	{"DDIM", ALIASES("ddim")},
	{"DDIM CFG++", ALIASES("ddim_cfgpp")},
	{"PLMS", ALIASES("plms")},
	{"UniPC", ALIASES("unipc")},
	{"LCM", ALIASES("k_lcm")},
};

const struct a1111_scheduler A1111_SCHEDULERS[A1111_SCHEDULER_COUNT] = {
	{"automatic", "Automatic", -1, 0, NULL},
	{"uniform", "Uniform", -1, 1, NULL},
	{"karras", "Karras", 7.0, 0, NULL},
	{"exponential", "Exponential", -1, 0, NULL},
	{"polyexponential", "Polyexponential", 1.0, 0, NULL},
	{"sgm_uniform", "SGM Uniform", -1, 1, "SGMUniform"},
	{"kl_optimal", "KL Optimal", -1, 0, NULL},
	{"align_your_steps", "Align Your Steps", -1, 0, NULL},
	{"simple", "Simple", -1, 1, NULL},
	{"normal", "Normal", -1, 1, NULL},
	{"ddim", "DDIM", -1, 1, NULL},
	{"beta", "Beta", -1, 1, NULL},
};

/* The engine's enum engine_sampler and enum engine_schedule follow these. */
const char *const A1111_NATIVE_SAMPLERS[A1111_NATIVE_SAMPLER_COUNT + 1] = {
	"Euler", "Euler a", "Heun", "LMS", "DPM++ 2M", "DPM++ SDE", "DPM++ 2M SDE", "DDIM", NULL};
const char *const A1111_NATIVE_SCHEDULERS[A1111_NATIVE_SCHEDULER_COUNT + 1] = {
	"automatic", "uniform", "karras", "exponential", "sgm_uniform", "normal", NULL};
const struct a1111_runnable A1111_NATIVE = {A1111_NATIVE_SAMPLERS, A1111_NATIVE_SCHEDULERS, NULL, 0};

int a1111_name_index(const char *const *list, const char *name)
{
	for (int i = 0; list && name && list[i]; i++)
		if (!strcmp(list[i], name))
			return i;
	return -1;
}

static int same(const char *s, size_t len, const char *name)
{
	return strlen(name) == len && strncasecmp(s, name, len) == 0;
}

int a1111_sampler_find(const char *s, size_t len)
{
	for (int i = 0; i < A1111_SAMPLER_COUNT; i++) {
		if (same(s, len, A1111_SAMPLERS[i].name))
			return i;
		for (const char *const *a = A1111_SAMPLERS[i].aliases; *a; a++)
			if (same(s, len, *a))
				return i;
	}
	return -1;
}

int a1111_scheduler_find(const char *s)
{
	for (int i = 0; i < A1111_SCHEDULER_COUNT; i++) {
		const struct a1111_scheduler *k = &A1111_SCHEDULERS[i];
		if (!strcasecmp(s, k->name) || !strcasecmp(s, k->label) || (k->alias && !strcasecmp(s, k->alias)))
			return i;
	}
	return -1;
}

/* A sampler name with a scheduler's label at its end: "DPM++ 2M Karras",
 * "DPM++ 2M SDE Exponential", and the old "k_lms_ka". Sets the scheduler
 * named; returns the sampler or -1. */
static int find_combined(const char *name, size_t len, int *named)
{
	for (int s = 1; s < A1111_SCHEDULER_COUNT; s++) {
		size_t l = strlen(A1111_SCHEDULERS[s].label);
		if (len > l + 1 && name[len - l - 1] == ' ' && !strcasecmp(name + len - l, A1111_SCHEDULERS[s].label)) {
			int sampler = a1111_sampler_find(name, len - l - 1);
			if (sampler >= 0) {
				*named = s;
				return sampler;
			}
		}
	}
	if (len > 3 && !strcasecmp(name + len - 3, "_ka")) {
		*named = 2; /* karras */
		return a1111_sampler_find(name, len - 3);
	}
	return -1;
}

int a1111_resolve_sampler(const char *sampler_name, const char *scheduler, const struct a1111_runnable *runnable,
			  int *sampler_out, int *scheduler_out)
{
	int sampler = a1111_sampler_find("Euler", 5); /* A1111's API default */
	int named = 0, explicit_ = 0;
	if (sampler_name && *sampler_name) {
		size_t len = strlen(sampler_name);
		sampler = a1111_sampler_find(sampler_name, len);
		if (sampler < 0)
			sampler = find_combined(sampler_name, len, &named);
		if (sampler < 0)
			return -1;
	}
	if (scheduler && *scheduler) {
		explicit_ = a1111_scheduler_find(scheduler);
		if (explicit_ < 0)
			return -2;
	}
	int chosen = explicit_ ? explicit_ : named;
	if (runnable && runnable->samplers && a1111_name_index(runnable->samplers, A1111_SAMPLERS[sampler].name) < 0)
		return -1;
	if (runnable && runnable->schedulers &&
	    a1111_name_index(runnable->schedulers, A1111_SCHEDULERS[chosen].name) < 0)
		return -2;
	*sampler_out = sampler;
	*scheduler_out = chosen;
	return 0;
}

json_t *a1111_samplers_json(const struct a1111_runnable *runnable)
{
	json_t *list = json_array();
	for (int s = 0; s < A1111_SAMPLER_COUNT; s++) {
		if (runnable && runnable->samplers && a1111_name_index(runnable->samplers, A1111_SAMPLERS[s].name) < 0)
			continue;
		json_t *aliases = json_array();
		for (const char *const *a = A1111_SAMPLERS[s].aliases; *a; a++)
			json_array_append_new(aliases, json_string(*a));
		json_array_append_new(list, json_pack("{s:s,s:o,s:{}}", "name", A1111_SAMPLERS[s].name, "aliases",
						      aliases, "options"));
	}
	return list;
}

json_t *a1111_schedulers_json(const struct a1111_runnable *runnable)
{
	json_t *list = json_array();
	for (int s = 0; s < A1111_SCHEDULER_COUNT; s++) {
		const struct a1111_scheduler *k = &A1111_SCHEDULERS[s];
		if (runnable && runnable->schedulers && a1111_name_index(runnable->schedulers, k->name) < 0)
			continue;
		json_t *aliases = k->alias ? json_pack("[s]", k->alias) : json_null();
		json_array_append_new(list, json_pack("{s:s,s:s,s:o,s:f,s:b}", "name", k->name, "label", k->label,
						      "aliases", aliases, "default_rho", k->default_rho,
						      "need_inner_model", k->need_inner_model));
	}
	return list;
}
