/* libFuzzer target: the gateway's Server-Sent Events parser
 * (gateway/sse_parse.c), fed the input in chunks whose sizes the input's
 * first byte chooses, as the network would split it. */
#include "sse_parse.h"

#include <stddef.h>
#include <stdint.h>
#include <string.h>

static int on_event(void *user, const char *name, const char *data, size_t len)
{
	size_t *count = user;
	/* Touch what the parser hands over, so the sanitizers check it. */
	(*count) += strlen(name) + (len ? (unsigned char)data[len - 1] : 0) + (strlen(data) == len);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size == 0)
		return 0;
	size_t chunk = (size_t)data[0] % 17 + 1, count = 0;
	struct sse_parser s;
	sse_parser_init(&s, 4096, on_event, &count);
	for (size_t off = 1; off < size; off += chunk) {
		size_t n = size - off < chunk ? size - off : chunk;
		if (sse_parser_feed(&s, (const char *)data + off, n) != 0)
			break;
	}
	sse_parser_free(&s);
	return 0;
}
