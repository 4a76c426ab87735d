/* identity.c — see identity.h. */
#include "identity.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

/* Order matters: the first pattern found in the upper-cased name wins, so
 * longer names come before their prefixes (L40S before L40, ...). */
static const struct {
	const char *pattern;
	const char *cls;
} GPU_CLASSES[] = {
	{"H200", "h200"},
	{"H100", "h100"},
	{"GH200", "gh200"},
	{"A100", "a100"},
	{"A10G", "a10g"},
	{"A10", "a10"},
	{"L40S", "l40s"},
	{"L40", "l40"},
	{"L4", "l4"},
	{"RTX 6000 ADA", "rtx6000ada"},
	{"A6000", "a6000"},
	{"A5000", "a5000"},
	{"A4000", "a4000"},
	{"RTX 5090", "rtx5090"},
	{"RTX 4090", "rtx4090"},
	{"RTX 4080", "rtx4080"},
	{"RTX 3090", "rtx3090"},
	{"RTX 3080", "rtx3080"},
	{"RTX 8000", "rtx8000"},
	{"V100", "v100"},
	{"T4", "t4"},
	{"P100", "p100"},
};

void identity_gpu_class(const char *device_name, char *out, size_t out_len)
{
	if (!device_name || !*device_name || !strcmp(device_name, "cpu")) {
		snprintf(out, out_len, "cpu");
		return;
	}
	char upper[128];
	size_t n = 0;
	for (const char *c = device_name; *c && n + 1 < sizeof upper; c++)
		upper[n++] = (char)toupper((unsigned char)*c);
	upper[n] = '\0';
	for (size_t i = 0; i < sizeof GPU_CLASSES / sizeof GPU_CLASSES[0]; i++) {
		if (strstr(upper, GPU_CLASSES[i].pattern)) {
			snprintf(out, out_len, "%s", GPU_CLASSES[i].cls);
			return;
		}
	}
	/* Unknown: keep letters and digits, dropping the vendor word. */
	const char *start = device_name;
	if (!strncmp(upper, "NVIDIA ", 7))
		start += 7;
	size_t k = 0;
	for (const char *c = start; *c && k + 1 < out_len; c++)
		if (isalnum((unsigned char)*c))
			out[k++] = (char)tolower((unsigned char)*c);
	out[k] = '\0';
	if (k == 0)
		snprintf(out, out_len, "unknown");
}

int identity_is_simulated(const struct identity *id)
{
	/* A GPU class claimed by a CPU engine, or a paced engine, is an emulation. */
	return id->pace_ms_per_step > 0 || (id->gpu_class_overridden && !strcmp(id->gpu, "cpu"));
}

json_t *identity_json(const struct identity *id)
{
	json_t *j = json_pack("{s:s,s:s,s:f,s:s,s:s,s:b}", "provider", id->provider, "location", id->location,
			      "price_per_hour", id->price_per_hour, "gpu", id->gpu, "gpu_class", id->gpu_class,
			      "simulated", identity_is_simulated(id));
	if (id->country && *id->country)
		json_object_set_new(j, "country", json_string(id->country));
	if (!isnan(id->lat) && !isnan(id->lon)) {
		json_object_set_new(j, "lat", json_real(id->lat));
		json_object_set_new(j, "lon", json_real(id->lon));
	}
	return j;
}
