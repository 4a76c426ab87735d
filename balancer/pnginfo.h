/* pnginfo.h — POST /sdapi/v1/png-info, as A1111 1.10 answers it
 * (modules/api/api.py pnginfoapi): the text chunks of a PNG sent as base64,
 * its "parameters" chunk as "info", the other text chunks as "items", and
 * the infotext parsed into "parameters" as A1111's
 * infotext_utils.parse_generation_parameters does (prompt, negative prompt,
 * "Key: value" pairs of the last line, sizes split into -1/-2, A1111's
 * defaults for the keys it adds when missing). The image is hostile input:
 * checked whole first (image.h), at most PNGINFO_MAX_CHUNKS text chunks of
 * at most PNGINFO_MAX_TEXT bytes each, compressed ones inflated only that
 * far. Pure; thread-safe; unit-tested in tests/unit/test_balancer_pnginfo.c. */
#ifndef SDGATE_BALANCER_PNGINFO_H
#define SDGATE_BALANCER_PNGINFO_H

#include <jansson.h>
#include <stddef.h>

#define PNGINFO_MAX_CHUNKS 64        /* text chunks read; later ones are ignored */
#define PNGINFO_MAX_TEXT (64u << 10) /* bytes of one chunk's text, inflated; a longer one is skipped */

/* {"info", "items", "parameters"} for image (base64, optionally as a data:
 * URL) of len bytes; "" gives A1111's empty answer. NULL when it is not a
 * well-formed PNG, JPEG or WebP (why: a static message). A JPEG or WebP
 * has no PNG text: its answer is empty. New reference. */
json_t *pnginfo_json(const char *image, size_t len, const char **why);
/* A1111's parse_generation_parameters(infotext: UTF-8, as a PNG's text is
 * once read; other bytes give an empty prompt, never invalid JSON). New
 * reference. */
json_t *pnginfo_parameters(const char *infotext);

#endif
