/* identity.h — who this backend is, as the marketplace reports it: provider,
 * location, price, and the GPU normalised to a class ("h100", "a100",
 * "rtx3090", ..., "cpu"). Filled once in main(), read-only afterwards. */
#ifndef SDGATE_IDENTITY_H
#define SDGATE_IDENTITY_H

#include <jansson.h>

struct identity {
	const char *provider;
	const char *location;
	const char *country; /* ISO 3166 alpha-2, may be NULL */
	double lat, lon;     /* NAN when unknown */
	double price_per_hour;
	char gpu[128];      /* "NVIDIA H100 80GB HBM3" or "cpu" */
	char gpu_class[32]; /* normalised, or the operator's override */
	int gpu_class_overridden;
	long pace_ms_per_step; /* testing aid; > 0 marks the speed as simulated */
	const char *engine;    /* "native" or "upstream" */
	char url[256];         /* how this backend calls itself: "http://127.0.0.1:7861" */
};

/* Normalises a CUDA device name to a class: "NVIDIA A100-SXM4-80GB" -> "a100",
 * "NVIDIA GeForce RTX 3090" -> "rtx3090", "NVIDIA L40S" -> "l40s",
 * "cpu"/""/NULL -> "cpu"; unknown names -> lower-case letters and digits. */
void identity_gpu_class(const char *device_name, char *out, size_t out_len);

/* 1 when the speed or the GPU class is emulated (--pace-ms-per-step, or
 * --gpu-class on the CPU engine): the board shows it as simulated. */
int identity_is_simulated(const struct identity *id);

/* {"provider", "location", "country"?, "lat"?, "lon"?, "price_per_hour", "gpu",
 * "gpu_class", "simulated"}: the part of /sdgate/v1/info that is identity. New reference. */
json_t *identity_json(const struct identity *id);

#endif
