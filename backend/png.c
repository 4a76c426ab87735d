/* png.c — see png.h.
 *
 * Speed is chosen deliberately: stb's own deflate is slow at 1024², so stb is
 * given zlib's deflate (STBIW_ZLIB_COMPRESS) at level 1, and the row filter is
 * fixed to Paeth instead of stb trying all five per row. The built-in model's
 * images are smooth, where Paeth + fast deflate compresses well; measured in
 * tests/bench/bench_png. */
#include "png.h"

#include "b64.h"

#include <stdlib.h>
#include <string.h>
#include <zlib.h>

static unsigned char *zlib_compress(unsigned char *data, int len, int *out_len, int quality);

#define STB_IMAGE_WRITE_IMPLEMENTATION
#define STBI_WRITE_NO_STDIO
#define STBIW_ZLIB_COMPRESS zlib_compress
#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wshadow"
#pragma GCC diagnostic ignored "-Wsign-compare"
#endif
#include <stb_image_write.h>
#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif

#define PNG_ZLIB_LEVEL 1
#define PNG_FILTER_PAETH 4

static unsigned char *zlib_compress(unsigned char *data, int len, int *out_len, int quality)
{
	(void)quality;
	uLongf cap = compressBound((uLong)len);
	unsigned char *out = malloc(cap);
	if (!out)
		return NULL;
	if (compress2(out, &cap, data, (uLong)len, PNG_ZLIB_LEVEL) != Z_OK) {
		free(out);
		return NULL;
	}
	*out_len = (int)cap;
	return out;
}

void png_init(void) { stbi_write_force_png_filter = PNG_FILTER_PAETH; }

struct sink {
	unsigned char *buf;
	size_t len, cap;
	int failed;
};

static void on_bytes(void *ctx, void *data, int size)
{
	struct sink *s = ctx;
	size_t n = (size_t)size;
	if (s->failed)
		return;
	if (s->len + n > s->cap) {
		size_t cap = s->cap ? s->cap * 2 : 65536;
		while (cap < s->len + n)
			cap *= 2;
		unsigned char *grown = realloc(s->buf, cap);
		if (!grown) {
			s->failed = 1;
			return;
		}
		s->buf = grown;
		s->cap = cap;
	}
	memcpy(s->buf + s->len, data, n);
	s->len += n;
}

static void put_be32(unsigned char *p, uint32_t v)
{
	p[0] = (unsigned char)(v >> 24);
	p[1] = (unsigned char)(v >> 16);
	p[2] = (unsigned char)(v >> 8);
	p[3] = (unsigned char)v;
}

/* Inserts a tEXt chunk right after IHDR (signature 8 + IHDR 25 bytes). */
static int insert_text(struct sink *s, const char *keyword, const char *text)
{
	const size_t at = 33;
	size_t klen = strlen(keyword), tlen = strlen(text);
	size_t data_len = klen + 1 + tlen;
	size_t chunk = 12 + data_len;
	if (s->len < at || data_len > 0x7fffffff)
		return -1;
	unsigned char *out = malloc(s->len + chunk);
	if (!out)
		return -1;
	memcpy(out, s->buf, at);
	unsigned char *c = out + at;
	put_be32(c, (uint32_t)data_len);
	memcpy(c + 4, "tEXt", 4);
	memcpy(c + 8, keyword, klen + 1);
	memcpy(c + 8 + klen + 1, text, tlen);
	uLong crc = crc32(0L, c + 4, (uInt)(4 + data_len));
	put_be32(c + 8 + data_len, (uint32_t)crc);
	memcpy(out + at + chunk, s->buf + at, s->len - at);
	free(s->buf);
	s->buf = out;
	s->len += chunk;
	return 0;
}

unsigned char *png_encode(const uint8_t *rgb, int width, int height, const char *parameters, size_t *out_len)
{
	struct sink s = {0};
	if (!stbi_write_png_to_func(on_bytes, &s, width, height, 3, rgb, width * 3) || s.failed) {
		free(s.buf);
		return NULL;
	}
	if (parameters && insert_text(&s, "parameters", parameters) != 0) {
		free(s.buf);
		return NULL;
	}
	*out_len = s.len;
	return s.buf;
}

char *png_encode_b64(const uint8_t *rgb, int width, int height, const char *parameters)
{
	size_t len;
	unsigned char *png = png_encode(rgb, width, height, parameters, &len);
	if (!png)
		return NULL;
	char *b64 = b64_encode_new(png, len);
	free(png);
	return b64;
}
