/* libFuzzer target: an image file from a backend, as the balancer checks it
 * (balancer/image.c) before a client may see it. A malicious provider
 * controls these bytes completely; a typed file must have sane dimensions,
 * and the check must not read outside them (ASan) or depend on what follows
 * them (the same bytes in a larger buffer give the same answer). */
#include "image.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct image_facts f;
	enum image_type t = image_check(data, size, &f);
	if (f.type != t)
		abort();
	if (t == IMAGE_NONE && (f.width || f.height || image_mime(t)))
		abort();
	if (t != IMAGE_NONE &&
	    (f.width < 1 || f.width > IMAGE_MAX_SIDE || f.height < 1 || f.height > IMAGE_MAX_SIDE || !image_mime(t)))
		abort();
	unsigned char *copy = malloc(size + 16);
	if (!copy)
		return 0;
	memcpy(copy, data, size);
	memset(copy + size, 0xff, 16);
	if (image_check(copy, size, NULL) != t)
		abort();
	free(copy);
	return 0;
}
