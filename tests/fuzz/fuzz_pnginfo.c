/* libFuzzer target: POST /sdapi/v1/png-info's reading of a client's image
 * (balancer/pnginfo.c). The bytes are the image file (sent base64 as a client
 * would) and, as text, an infotext for parse_generation_parameters. Both are
 * hostile: no read outside them (ASan), and a answer, when there is one,
 * always has A1111's three keys. */
#include "b64.h"
#include "pnginfo.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *b64 = b64_encode_new(data, size);
	if (!b64)
		return 0;
	const char *why = NULL;
	json_t *r = pnginfo_json(b64, strlen(b64), &why);
	free(b64);
	if (r ? !json_is_string(json_object_get(r, "info")) || !json_is_object(json_object_get(r, "items")) ||
			    !json_is_object(json_object_get(r, "parameters"))
	      : !why)
		abort();
	json_decref(r);
	char *text = malloc(size + 1);
	if (!text)
		return 0;
	memcpy(text, data, size);
	text[size] = '\0';
	json_t *p = pnginfo_parameters(text);
	if (!json_is_object(p) || !json_object_get(p, "Prompt"))
		abort();
	json_decref(p);
	free(text);
	return 0;
}
