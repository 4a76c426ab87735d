/* libFuzzer target: the A1111 request model (a1111/), which the backend, the
 * balancer and the gateway all run on network input. Each input is parsed
 * as txt2img and as img2img (every A1111 name accepted, or the native
 * engine's only, by the input's length), then seeds, the serialised body,
 * infotext and info are made as a caller would ask for them. */
#include "a1111.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

static void one(enum a1111_kind kind, const uint8_t *data, size_t size)
{
	const struct a1111_runnable *run = size & 1 ? &A1111_NATIVE : NULL;
	struct a1111_request r;
	int status = 0;
	json_t *reply = NULL;
	if (a1111_parse(kind, (const char *)data, size, run, &r, &status, &reply) == A1111_OK) {
		a1111_fix_seeds(&r);
		json_decref(a1111_request_body(&r));
		struct a1111_models m = {"m", "0123456789", "r", "9876543210"};
		free(a1111_infotext(&r, &m, 0));
		json_decref(a1111_info(&r, &m, 1, "20260101000000", NULL));
		a1111_request_free(&r);
	} else {
		json_decref(reply);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	one(A1111_TXT2IMG, data, size);
	one(A1111_IMG2IMG, data, size);
	return 0;
}
