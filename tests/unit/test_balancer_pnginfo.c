/* Unit tests of balancer/pnginfo.c: POST /sdapi/v1/png-info's answer for
 * PNGs with tEXt, zTXt and iTXt chunks (Latin-1 and UTF-8, compressed),
 * hostile ones (a zTXt bomb, broken chunks, non-images), and A1111's
 * parse_generation_parameters on infotexts as A1111 1.10 writes them. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "b64.h"
#include "png.h"
#include "pnginfo.h"

static const char INFOTEXT[] = "a red fox, \"quoted\"\nin snow\nNegative prompt: blurry\nugly\n"
			       "Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 965400086, "
			       "Size: 512x768, Model hash: 31e35c80fc, Model: sd_xl_base_1.0, "
			       "Lora hashes: \"add_detail: 7254be9f, x: y\", Version: v1.10.1";

static const char *str(json_t *o, const char *k) { return json_string_value(json_object_get(o, k)); }

static void test_parameters(void **state)
{
	(void)state;
	json_t *p = pnginfo_parameters(INFOTEXT);
	char *text = json_dumps(p, JSON_COMPACT);
	printf("%s\n", text);
	free(text);
	assert_string_equal(str(p, "Prompt"), "a red fox, \"quoted\"\nin snow");
	assert_string_equal(str(p, "Negative prompt"), "blurry\nugly");
	assert_string_equal(str(p, "Steps"), "20");
	assert_string_equal(str(p, "Sampler"), "DPM++ 2M");
	assert_string_equal(str(p, "Schedule type"), "Karras");
	assert_string_equal(str(p, "Size-1"), "512");
	assert_string_equal(str(p, "Size-2"), "768");
	assert_null(json_object_get(p, "Size"));
	assert_string_equal(str(p, "Lora hashes"), "add_detail: 7254be9f, x: y"); /* unquoted */
	assert_string_equal(str(p, "Version"), "v1.10.1");
	assert_string_equal(str(p, "Clip skip"), "1"); /* A1111's defaults */
	assert_int_equal(json_integer_value(json_object_get(p, "Hires resize-1")), 0);
	assert_string_equal(str(p, "RNG"), "GPU");
	json_decref(p);
	/* A last line with fewer than 3 pairs is part of the prompt. */
	p = pnginfo_parameters("  just a prompt: with a colon\nSteps: 5  ");
	assert_string_equal(str(p, "Prompt"), "just a prompt: with a colon\nSteps: 5");
	assert_null(json_object_get(p, "Steps"));
	json_decref(p);
	p = pnginfo_parameters("");
	assert_string_equal(str(p, "Prompt"), "");
	assert_string_equal(str(p, "Schedule type"), "Automatic");
	json_decref(p);
	/* An unterminated quote is read as a plain value. */
	p = pnginfo_parameters("x\nAa: \"open, Bb: 2, Cc: 3");
	assert_string_equal(str(p, "Aa"), "\"open");
	assert_string_equal(str(p, "Cc"), "3");
	json_decref(p);
	/* A key is 2 characters at least (re_param's \w[\w \-/]+). */
	p = pnginfo_parameters("x\nA: 1, B: 2, C: 3");
	assert_string_equal(str(p, "Prompt"), "x\nA: 1, B: 2, C: 3");
	json_decref(p);
}

/* png with one more chunk (type, data) before IEND. */
static unsigned char *with_chunk(const unsigned char *png, size_t len, const char *type, const void *data, size_t n,
				 size_t *out_len)
{
	unsigned char *out = malloc(len + n + 12);
	size_t head = len - 12; /* IEND is the last 12 bytes */
	memcpy(out, png, head);
	unsigned char *c = out + head;
	c[0] = (unsigned char)(n >> 24), c[1] = (unsigned char)(n >> 16), c[2] = (unsigned char)(n >> 8),
	c[3] = (unsigned char)n;
	memcpy(c + 4, type, 4);
	memcpy(c + 8, data, n);
	uLong crc = crc32(crc32(0, Z_NULL, 0), c + 4, (uInt)(4 + n));
	c[8 + n] = (unsigned char)(crc >> 24), c[9 + n] = (unsigned char)(crc >> 16),
	      c[10 + n] = (unsigned char)(crc >> 8), c[11 + n] = (unsigned char)crc;
	memcpy(c + 12 + n, png + head, 12);
	*out_len = len + n + 12;
	return out;
}

static json_t *info_of(const unsigned char *png, size_t len, const char **why)
{
	char *b64 = b64_encode_new(png, len);
	json_t *r = pnginfo_json(b64, strlen(b64), why);
	free(b64);
	return r;
}

static unsigned char *deflated(const char *text, size_t *n)
{
	uLongf cap = compressBound(strlen(text));
	unsigned char *z = malloc(cap);
	compress(z, &cap, (const Bytef *)text, strlen(text));
	*n = cap;
	return z;
}

static void test_chunks(void **state)
{
	(void)state;
	png_init();
	uint8_t rgb[4 * 4 * 3] = {0};
	size_t len, l2, l3, l4, zn;
	unsigned char *png = png_encode(rgb, 4, 4, INFOTEXT, &len);
	unsigned char latin[] = "Comment\0caf\xe9";
	unsigned char *a = with_chunk(png, len, "tEXt", latin, sizeof latin - 1, &l2);
	unsigned char *z = deflated("zipped text", &zn);
	unsigned char zt[64] = "Zipped\0\0";
	memcpy(zt + 8, z, zn);
	unsigned char *b = with_chunk(a, l2, "zTXt", zt, 8 + zn, &l3);
	unsigned char it[] = "Title\0\0\0en\0Titel\0\xc3\xa9t\xc3\xa9";
	unsigned char *c = with_chunk(b, l3, "iTXt", it, sizeof it - 1, &l4);
	const char *why = NULL;
	json_t *r = info_of(c, l4, &why);
	char *text = json_dumps(r, JSON_COMPACT);
	printf("%s\n", text);
	free(text);
	assert_non_null(r);
	assert_string_equal(str(r, "info"), INFOTEXT);
	json_t *items = json_object_get(r, "items");
	assert_string_equal(str(items, "Comment"), "caf\xc3\xa9"); /* Latin-1 as UTF-8 */
	assert_string_equal(str(items, "Zipped"), "zipped text");
	assert_string_equal(str(items, "Title"), "\xc3\xa9t\xc3\xa9");
	assert_null(json_object_get(items, "parameters"));
	assert_string_equal(str(json_object_get(r, "parameters"), "Seed"), "965400086");
	json_decref(r);

	/* A zTXt bomb (1 MiB of zeros inflated from ~1 KB) is skipped, not inflated whole. */
	char *big = calloc(1, (1 << 20) + 1);
	memset(big, 'a', 1 << 20);
	free(z);
	z = deflated(big, &zn);
	free(big);
	unsigned char *bomb = malloc(8 + zn);
	memcpy(bomb, "Bomb\0\0", 6);
	memcpy(bomb + 6, z, zn);
	unsigned char *d = with_chunk(png, len, "zTXt", bomb, 6 + zn, &l2);
	r = info_of(d, l2, &why);
	printf("a zTXt of %zu bytes inflating to 1 MiB: %s\n", zn,
	       json_object_get(json_object_get(r, "items"), "Bomb") ? "read" : "skipped");
	assert_non_null(r);
	assert_null(json_object_get(json_object_get(r, "items"), "Bomb"));
	json_decref(r);

	/* Not an image, a broken PNG, a URL: NULL with a reason. */
	const char *bad[] = {"bm90IGFuIGltYWdl", "!!!!", "aGVsbG8", "http://169.254.169.254/latest"};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		assert_null(pnginfo_json(bad[i], strlen(bad[i]), &why));
		printf("\"%s\": %s\n", bad[i], why);
	}
	c[l4 - 20] ^= 1; /* a CRC no longer matches */
	assert_null(info_of(c, l4, &why));
	r = pnginfo_json("  ", 2, &why); /* empty: A1111's empty answer */
	assert_string_equal(str(r, "info"), "");
	json_decref(r);
	free(png), free(a), free(b), free(c), free(d), free(z), free(bomb);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parameters),
		cmocka_unit_test(test_chunks),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
