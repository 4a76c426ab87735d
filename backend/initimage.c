/* initimage.c — see initimage.h. stb_image is compiled here with PNG and
 * JPEG only (no stdio, HDR or linear float), its dimension bound set to ours
 * past ours as a second line: ours is checked
 * from the header before any pixel is decoded. */
#include "initimage.h"

#include "b64.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STB_IMAGE_IMPLEMENTATION
#define STBI_ONLY_PNG
#define STBI_ONLY_JPEG
#define STBI_NO_STDIO
#define STBI_NO_LINEAR
#define STBI_NO_HDR
#define STBI_NO_FAILURE_STRINGS
/* stb's own bound, past ours: our check reads the header first and names
 * the size; this one guards any path that would skip it. */
#define STBI_MAX_DIMENSIONS 65535
#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wshadow"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wimplicit-fallthrough"
#pragma GCC diagnostic ignored "-Wunused-parameter"
#pragma GCC diagnostic ignored "-Wcast-qual"
#pragma GCC diagnostic ignored "-Wdouble-promotion"
#pragma GCC diagnostic ignored "-Wconversion"
#endif
#include <stb_image.h>
#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif

uint8_t *initimage_decode(const char *text, size_t len, int *width, int *height, char *why, size_t why_len)
{
	size_t n = 0;
	unsigned char *bytes = b64_decode_new(text, len, &n);
	if (!bytes || n == 0 || n > (size_t)INT32_MAX) {
		free(bytes);
		snprintf(why, why_len, "Input should be a base64-encoded PNG or JPEG image");
		return NULL;
	}
	if (n >= 12 && !memcmp(bytes, "RIFF", 4) && !memcmp(bytes + 8, "WEBP", 4)) {
		free(bytes);
		snprintf(why, why_len, "WebP init images are not supported by the native engine; send PNG or JPEG");
		return NULL;
	}
	int w = 0, h = 0, comp = 0;
	if (!stbi_info_from_memory(bytes, (int)n, &w, &h, &comp)) {
		free(bytes);
		snprintf(why, why_len, "Input should be a PNG or JPEG image (its header could not be read)");
		return NULL;
	}
	if (w < 1 || h < 1 || w > INITIMAGE_MAX_SIDE || h > INITIMAGE_MAX_SIDE) {
		free(bytes);
		snprintf(why, why_len, "Image is %dx%d; each side should be at most %d pixels", w, h,
			 INITIMAGE_MAX_SIDE);
		return NULL;
	}
	uint8_t *rgb = stbi_load_from_memory(bytes, (int)n, &w, &h, &comp, 3);
	free(bytes);
	if (!rgb) {
		snprintf(why, why_len, "Image could not be decoded (corrupt or truncated PNG/JPEG)");
		return NULL;
	}
	*width = w;
	*height = h;
	return rgb;
}
