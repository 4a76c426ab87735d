/* Unit tests of backend/initimage: a PNG (png.c's encoder) and a JPEG
 * (stb_image_write's, stored in init48x32_jpg.h) decode to their pixels, with or
 * without a data: prefix; images past 4096 a side, WebP, text and empty
 * input are refused with a reason; and 3000 mutations (bit flips, byte
 * overwrites, truncations) of both are decoded or refused without a fault
 * under ASan/UBSan, each in bounded time. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "b64.h"
#include "initimage.h"
#include "png.h"

#include "init48x32_jpg.h"

struct bytes {
	const unsigned char *p;
	size_t n;
};

static uint8_t *picture(int w, int h)
{
	uint8_t *rgb = malloc((size_t)w * h * 3);
	for (int y = 0; y < h; y++)
		for (int x = 0; x < w; x++) {
			uint8_t *p = rgb + ((size_t)y * w + x) * 3;
			p[0] = (uint8_t)(x * 255 / w);
			p[1] = (uint8_t)(y * 255 / h);
			p[2] = (uint8_t)(x < w / 2 ? 40 : 220);
		}
	return rgb;
}

static uint8_t *decode_bytes(const unsigned char *p, size_t n, int *w, int *h, char *why, size_t why_len)
{
	char *text = b64_encode_new(p, n);
	uint8_t *rgb = initimage_decode(text, strlen(text), w, h, why, why_len);
	free(text);
	return rgb;
}

static void test_png_and_jpeg(void **state)
{
	uint8_t *rgb = picture(40, 24);
	size_t n = 0;
	unsigned char *png = png_encode(rgb, 40, 24, NULL, &n);
	int w = 0, h = 0;
	char why[160] = "";
	uint8_t *got = decode_bytes(png, n, &w, &h, why, sizeof why);
	assert_non_null(got);
	assert_int_equal(w, 40);
	assert_int_equal(h, 24);
	assert_memory_equal(got, rgb, 40 * 24 * 3);
	free(got);

	char *text = b64_encode_new(png, n), prefixed[8192];
	snprintf(prefixed, sizeof prefixed, "data:image/png;base64,%s", text);
	got = initimage_decode(prefixed, strlen(prefixed), &w, &h, why, sizeof why);
	assert_non_null(got);
	free(got);
	free(text);

	free(png);
	free(rgb);

	rgb = picture(48, 32);
	got = decode_bytes(INIT_JPG, INIT_JPG_LEN, &w, &h, why, sizeof why);
	assert_non_null(got);
	assert_int_equal(w, 48);
	assert_int_equal(h, 32);
	double diff = 0;
	for (size_t i = 0; i < 48 * 32 * 3; i++)
		diff += abs((int)got[i] - (int)rgb[i]);
	printf("# JPEG q90 48x32: mean |diff| %.2f levels\n", diff / (48 * 32 * 3));
	assert_true(diff / (48 * 32 * 3) < 8);
	free(got);
	free(rgb);
}

static void test_refused(void **state)
{
	int w, h;
	char why[160];
	/* a 4097x1 PNG: refused from its header */
	uint8_t *rgb = picture(4097, 1);
	size_t n = 0;
	unsigned char *png = png_encode(rgb, 4097, 1, NULL, &n);
	why[0] = '\0';
	assert_null(decode_bytes(png, n, &w, &h, why, sizeof why));
	printf("# 4097x1: %s\n", why);
	assert_non_null(strstr(why, "4097x1"));
	free(png);
	free(rgb);
	static const unsigned char webp[] = "RIFF\x24\x00\x00\x00WEBPVP8 \x00\x00\x00\x00\x00\x00";
	assert_null(decode_bytes(webp, sizeof webp - 1, &w, &h, why, sizeof why));
	assert_non_null(strstr(why, "WebP"));
	assert_null(decode_bytes((const unsigned char *)"plain text, no image", 20, &w, &h, why, sizeof why));
	assert_null(initimage_decode("", 0, &w, &h, why, sizeof why));
	assert_null(initimage_decode("!!!!", 4, &w, &h, why, sizeof why));
}

static uint64_t next(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

static void test_mutations(void **state)
{
	uint8_t *rgb = picture(48, 32);
	size_t png_n = 0;
	unsigned char *png = png_encode(rgb, 48, 32, "parameters text", &png_n);
	const struct bytes src[2] = {{png, png_n}, {INIT_JPG, INIT_JPG_LEN}};
	uint64_t seed = 0x9e3779b97f4a7c15ull;
	int decoded = 0, refused = 0;
	double worst = 0;
	for (int i = 0; i < 3000; i++) {
		const struct bytes *s = &src[i % 2];
		unsigned char *m = malloc(s->n);
		memcpy(m, s->p, s->n);
		size_t n = s->n;
		int edits = 1 + (int)(next(&seed) % 4);
		for (int e = 0; e < edits && n > 9; e++) {
			size_t at = 8 + next(&seed) % (n - 8); /* keep the magic bytes: the rest is hostile */
			switch (next(&seed) % 3) {
			case 0:
				m[at] ^= (unsigned char)(1u << (next(&seed) % 8));
				break;
			case 1:
				m[at] = (unsigned char)next(&seed);
				break;
			default:
				n = at;
				break;
			}
		}
		int w = 0, h = 0;
		char why[160];
		clock_t t0 = clock();
		uint8_t *out = decode_bytes(m, n, &w, &h, why, sizeof why);
		double sec = (double)(clock() - t0) / CLOCKS_PER_SEC;
		worst = sec > worst ? sec : worst;
		if (out) {
			assert_true(w >= 1 && w <= INITIMAGE_MAX_SIDE && h >= 1 && h <= INITIMAGE_MAX_SIDE);
			decoded++;
		} else {
			refused++;
		}
		free(out);
		free(m);
	}
	printf("# 3000 mutated PNG/JPEG: %d decoded, %d refused, slowest %.3f s\n", decoded, refused, worst);
	assert_true(worst < 5);
	free(png);
	free(rgb);
}

int main(void)
{
	png_init();
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_png_and_jpeg),
		cmocka_unit_test(test_refused),
		cmocka_unit_test(test_mutations),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
