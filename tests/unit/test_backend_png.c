/* Unit tests of backend/png: the PNG decodes (zlib inflate + unfiltering,
 * written here independently of stb) to exactly the pixels given, and carries
 * A1111's "parameters" text chunk with a valid CRC. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "b64.h"
#include "png.h"

static uint32_t be32(const unsigned char *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static int paeth(int a, int b, int c)
{
	int p = a + b - c, pa = abs(p - a), pb = abs(p - b), pc = abs(p - c);
	return pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
}

/* Decodes an 8-bit RGB PNG; returns malloc'd pixels and the text chunk. */
static unsigned char *decode(const unsigned char *png, size_t len, int *w, int *h, char *text, size_t text_len)
{
	assert_memory_equal(png, "\x89PNG\r\n\x1a\n", 8);
	size_t pos = 8;
	unsigned char *idat = NULL;
	size_t idat_len = 0;
	text[0] = '\0';
	while (pos + 12 <= len) {
		uint32_t n = be32(png + pos);
		const unsigned char *type = png + pos + 4, *data = png + pos + 8;
		assert_true(pos + 12 + n <= len);
		assert_int_equal(crc32(0, type, n + 4), be32(data + n));
		if (!memcmp(type, "IHDR", 4)) {
			*w = (int)be32(data);
			*h = (int)be32(data + 4);
			assert_int_equal(data[8], 8); /* bit depth */
			assert_int_equal(data[9], 2); /* RGB */
		} else if (!memcmp(type, "tEXt", 4)) {
			size_t k = n < text_len - 1 ? n : text_len - 1;
			memcpy(text, data, k);
			text[k] = '\0';
		} else if (!memcmp(type, "IDAT", 4)) {
			idat = realloc(idat, idat_len + n);
			memcpy(idat + idat_len, data, n);
			idat_len += n;
		}
		pos += 12 + n;
	}
	size_t stride = (size_t)*w * 3;
	uLongf raw_len = (uLongf)((stride + 1) * (size_t)*h);
	unsigned char *raw = malloc(raw_len);
	assert_int_equal(uncompress(raw, &raw_len, idat, idat_len), Z_OK);
	assert_int_equal(raw_len, (stride + 1) * (size_t)*h);
	unsigned char *px = malloc(stride * (size_t)*h);
	for (int y = 0; y < *h; y++) {
		int f = raw[(size_t)y * (stride + 1)];
		const unsigned char *in = raw + (size_t)y * (stride + 1) + 1;
		unsigned char *row = px + (size_t)y * stride, *up = y ? row - stride : NULL;
		for (size_t x = 0; x < stride; x++) {
			int a = x >= 3 ? row[x - 3] : 0, b = up ? up[x] : 0, c = up && x >= 3 ? up[x - 3] : 0;
			int pred = f == 0 ? 0 : f == 1 ? a : f == 2 ? b : f == 3 ? (a + b) / 2 : paeth(a, b, c);
			assert_true(f >= 0 && f <= 4);
			row[x] = (unsigned char)(in[x] + pred);
		}
	}
	free(raw);
	free(idat);
	return px;
}

static void test_round_trip(void **state)
{
	(void)state;
	const int W = 96, H = 40;
	unsigned char *rgb = malloc((size_t)W * H * 3);
	for (int i = 0; i < W * H * 3; i++)
		rgb[i] = (unsigned char)(i * 7 + (i / 97) * 13);
	size_t len;
	unsigned char *png = png_encode(rgb, W, H, "a prompt\nSteps: 20, Seed: 1", &len);
	assert_non_null(png);
	int w = 0, h = 0;
	char text[256];
	unsigned char *px = decode(png, len, &w, &h, text, sizeof text);
	assert_int_equal(w, W);
	assert_int_equal(h, H);
	assert_memory_equal(px, rgb, (size_t)W * H * 3);
	assert_string_equal(text, "parameters");
	assert_string_equal(text + 11, "a prompt\nSteps: 20, Seed: 1");

	char *b64 = png_encode_b64(rgb, W, H, "a prompt\nSteps: 20, Seed: 1");
	size_t n;
	unsigned char *back = b64_decode_new(b64, strlen(b64), &n);
	assert_int_equal(n, len);
	assert_memory_equal(back, png, len);
	free(back);
	free(b64);
	free(px);
	free(png);
	free(rgb);
}

int main(void)
{
	png_init();
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_round_trip),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
