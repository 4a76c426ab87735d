/* image.c — the checks on an img2img init image, without decoding it whole:
 * the base64 is checked as text, its decoded size computed, and only the
 * first 12 bytes decoded for the magic bytes. Pure; thread-safe. */
#include "internal.h"

#include "b64.h"

#include <stdlib.h>
#include <string.h>

static const char *image_type(const unsigned char *p, size_t n)
{
	if (n >= 8 && !memcmp(p, "\x89PNG\r\n\x1a\n", 8))
		return "png";
	if (n >= 3 && p[0] == 0xff && p[1] == 0xd8 && p[2] == 0xff)
		return "jpeg";
	if (n >= 12 && !memcmp(p, "RIFF", 4) && !memcmp(p + 8, "WEBP", 4))
		return "webp";
	return NULL;
}

/* The type by the magic bytes of base64 payload (at least 16 characters). */
static const char *head_type(const char *payload)
{
	size_t n = 0;
	unsigned char *head = b64_decode_new(payload, 16, &n);
	const char *kind = head ? image_type(head, n) : NULL;
	free(head);
	return kind;
}

const char *a1111_image_type(const char *text, size_t len)
{
	const char *payload = b64_payload(text, &len);
	return len >= 16 ? head_type(payload) : NULL;
}

int a1111_image_check(const char *text, size_t len, struct a1111_init_image *out, const char **type, const char **msg)
{
	const char *payload = b64_payload(text, &len);
	if (len < 16 || !b64_is_valid(payload, len)) {
		*type = "base64_decode";
		*msg = "Input should be a base64-encoded PNG, JPEG or WebP image (padded standard base64, optionally "
		       "after a data: URL prefix)";
		return -1;
	}
	size_t bytes = len / 4 * 3 - (payload[len - 1] == '=') - (payload[len - 2] == '=');
	if (bytes > A1111_MAX_INIT_IMAGE_BYTES) {
		*type = "image_too_large";
		*msg = "Image should be at most 8388608 bytes decoded";
		return -1;
	}
	const char *kind = head_type(payload);
	if (!kind) {
		*type = "image_type";
		*msg = "Input should be a PNG, JPEG or WebP image";
		return -1;
	}
	out->bytes = bytes;
	out->type = kind;
	return 0;
}
