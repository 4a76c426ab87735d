/* libFuzzer target: one websocket text message as the gateway validates it
 * (gateway/validate.c): UTF-8, JSON, message types, every generate field. */
#include "gateway.h"

#include <stddef.h>
#include <stdint.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct gw_config cfg;
	static json_t *gpus;
	if (!gpus) {
		cfg.max_message = 65536;
		cfg.max_prompt = 2000;
		cfg.max_jobs_per_connection = 4;
		gpus = json_pack("[s,s,s]", "a100", "rtx3090", "h100");
	}
	struct gw_request r;
	struct gw_error e;
	memset(&r, 0, sizeof r);
	if (validate_message((const char *)data, size, &cfg, size % 2 ? gpus : NULL, &r, &e) == 0)
		validate_request_free(&r);
	return 0;
}
