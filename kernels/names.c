/* names.c — the engine's sampler and scheduler names, which are A1111's
 * (a1111/names.c holds the one list: A1111_NATIVE_SAMPLERS and
 * A1111_NATIVE_SCHEDULERS follow enum engine_sampler and enum
 * engine_schedule), the resolver onto the enums, and the built-in
 * checkpoints table. Pure data and pure functions: thread-safe. */
#include "engine.h"

#include "a1111.h"

#include <stddef.h>
#include <string.h>
#include <strings.h>

_Static_assert(A1111_NATIVE_SAMPLER_COUNT == ENGINE_SAMPLER_COUNT &&
		       A1111_NATIVE_SCHEDULER_COUNT == ENGINE_SCHEDULE_COUNT,
	       "one A1111 name per engine sampler and schedule");

const char *engine_sampler_name(enum engine_sampler s)
{
	return (int)s >= 0 && s < ENGINE_SAMPLER_COUNT ? A1111_NATIVE_SAMPLERS[s] : NULL;
}

const char *const *engine_sampler_aliases(enum engine_sampler s)
{
	const char *name = engine_sampler_name(s);
	return name ? A1111_SAMPLERS[a1111_sampler_find(name, strlen(name))].aliases : NULL;
}

const char *engine_schedule_name(enum engine_schedule s)
{
	return (int)s >= 0 && s < ENGINE_SCHEDULE_COUNT ? A1111_NATIVE_SCHEDULERS[s] : NULL;
}

const char *engine_schedule_label(enum engine_schedule s)
{
	const char *name = engine_schedule_name(s);
	return name ? A1111_SCHEDULERS[a1111_scheduler_find(name)].label : NULL;
}

int engine_resolve_sampler(const char *sampler_name, const char *scheduler, enum engine_sampler *sampler_out,
			   enum engine_schedule *schedule_out)
{
	int sampler, schedule;
	int rc = a1111_resolve_sampler(sampler_name, scheduler, &A1111_NATIVE, &sampler, &schedule);
	if (rc)
		return rc;
	*sampler_out = (enum engine_sampler)a1111_name_index(A1111_NATIVE_SAMPLERS, A1111_SAMPLERS[sampler].name);
	*schedule_out = (enum engine_schedule)a1111_name_index(A1111_NATIVE_SCHEDULERS,
							       A1111_SCHEDULERS[schedule].name);
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
