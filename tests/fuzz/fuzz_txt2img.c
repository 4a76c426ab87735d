/* libFuzzer target: A1111 txt2img request validation (backend/txt2img.c),
 * which the backend, the balancer and the gateway all run on network input. */
#include "txt2img.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct txt2img t;
	int status = 0;
	json_t *reply = NULL;
	if (txt2img_parse((const char *)data, size, 0, TXT2IMG_CHECK_ALL, &t, &status, &reply) == TXT2IMG_OK) {
		txt2img_fix_seeds(&t);
		char *info = txt2img_infotext(&t, 0);
		free(info);
		txt2img_free(&t);
	} else {
		json_decref(reply);
	}
	return 0;
}
