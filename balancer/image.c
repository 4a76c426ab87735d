/* image.c — see image.h. */
#include "image.h"

#include <string.h>

enum image_type image_check(const unsigned char *p, size_t len, struct image_facts *out)
{
	enum image_type t = IMAGE_NONE;
	if (len >= 8 && memcmp(p, "\x89PNG\r\n\x1a\n", 8) == 0)
		t = IMAGE_PNG;
	else if (len >= 3 && memcmp(p, "\xff\xd8\xff", 3) == 0)
		t = IMAGE_JPEG;
	else if (len >= 12 && memcmp(p, "RIFF", 4) == 0 && memcmp(p + 8, "WEBP", 4) == 0)
		t = IMAGE_WEBP;
	if (out) {
		out->type = t;
		out->width = out->height = 0;
	}
	return t;
}

const char *image_mime(enum image_type t)
{
	switch (t) {
	case IMAGE_PNG:
		return "image/png";
	case IMAGE_JPEG:
		return "image/jpeg";
	case IMAGE_WEBP:
		return "image/webp";
	default:
		return NULL;
	}
}
