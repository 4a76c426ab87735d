/* Unit tests of balancer/image.c: a file is typed only when it is one
 * well-formed PNG, JPEG or WebP from its first byte to its last. Valid files
 * come from the backend's own PNG encoder or are small hand-made JPEG and
 * WebP headers; every refusal case is one of those, broken in one place
 * (truncated, a bad CRC, something appended, HTML behind a magic number). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "image.h"
#include "png.h"

static unsigned char *png_new(int w, int h, size_t *len)
{
	uint8_t *rgb = calloc((size_t)w * (size_t)h, 3);
	for (int i = 0; i < w * h * 3; i++)
		rgb[i] = (uint8_t)(i * 7);
	unsigned char *png = png_encode(rgb, w, h, "a prompt\nSteps: 8", len);
	free(rgb);
	assert_non_null(png);
	return png;
}

static enum image_type check(const void *p, size_t len) { return image_check(p, len, NULL); }

static void put_be32(unsigned char *p, uint32_t v)
{
	p[0] = (unsigned char)(v >> 24);
	p[1] = (unsigned char)(v >> 16);
	p[2] = (unsigned char)(v >> 8);
	p[3] = (unsigned char)v;
}

/* Rewrites the IHDR (at offset 8) with width w, height h, depth d, colour c
 * and a correct CRC. */
static void set_ihdr(unsigned char *png, uint32_t w, uint32_t h, int d, int c)
{
	put_be32(png + 16, w);
	put_be32(png + 20, h);
	png[24] = (unsigned char)d;
	png[25] = (unsigned char)c;
	put_be32(png + 29, (uint32_t)crc32(0L, png + 12, 17));
}

static void test_png(void **state)
{
	(void)state;
	size_t n;
	unsigned char *png = png_new(64, 32, &n);
	struct image_facts f;
	assert_int_equal(image_check(png, n, &f), IMAGE_PNG);
	assert_int_equal(f.type, IMAGE_PNG);
	assert_int_equal(f.width, 64);
	assert_int_equal(f.height, 32);
	assert_string_equal(image_mime(IMAGE_PNG), "image/png");

	/* truncated anywhere, even by the last byte */
	size_t cuts[] = {0, 7, 8, 20, 33, n / 2, n - 12, n - 1};
	for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++)
		if (check(png, cuts[i]) != IMAGE_NONE)
			fail_msg("accepted a PNG cut to %zu of %zu bytes", cuts[i], n);

	/* a byte changed in the pixel data: its chunk's CRC no longer matches */
	unsigned char *bad = malloc(n + 64);
	memcpy(bad, png, n);
	bad[n - 20] ^= 1;
	assert_int_equal(check(bad, n), IMAGE_NONE);

	/* HTML appended after IEND (a polyglot) */
	memcpy(bad, png, n);
	memcpy(bad + n, "<script>alert(1)</script>", 25);
	assert_int_equal(check(bad, n + 25), IMAGE_NONE);

	/* IHDR with a bad CRC; then sizes and depths out of range, CRC right */
	memcpy(bad, png, n);
	bad[17] ^= 1;
	assert_int_equal(check(bad, n), IMAGE_NONE);
	const struct {
		uint32_t w, h;
		int d, c, ok;
	} hdr[] = {{64, 32, 8, 2, 1},    {0, 32, 8, 2, 0},        {64, 0, 8, 2, 0},  {16385, 32, 8, 2, 0},
		   {64, 16385, 8, 2, 0}, {16384, 16384, 8, 2, 1}, {64, 32, 4, 2, 0}, {64, 32, 16, 3, 0},
		   {64, 32, 8, 5, 0},    {64, 32, 1, 0, 1},       {64, 32, 0, 0, 0}, {64, 32, 8, 6, 1}};
	for (size_t i = 0; i < sizeof hdr / sizeof hdr[0]; i++) {
		memcpy(bad, png, n);
		set_ihdr(bad, hdr[i].w, hdr[i].h, hdr[i].d, hdr[i].c);
		if ((check(bad, n) == IMAGE_PNG) != hdr[i].ok)
			fail_msg("IHDR %ux%u depth %d colour %d: expected %s", hdr[i].w, hdr[i].h, hdr[i].d, hdr[i].c,
				 hdr[i].ok ? "accepted" : "refused");
	}

	/* HTML behind the PNG signature (what the probe sent as data:text/html) */
	static const char html[] = "\x89PNG\r\n\x1a\n<html><body><script>alert(document.cookie)</script></body></html>";
	assert_int_equal(check(html, sizeof html - 1), IMAGE_NONE);
	/* signature + a valid IHDR, then HTML instead of the next chunks */
	memcpy(bad, png, 33);
	memcpy(bad + 33, "<html><script>alert(1)</script></html>", 38);
	assert_int_equal(check(bad, 71), IMAGE_NONE);
	/* IHDR, then IEND with no IDAT */
	memcpy(bad, png, 33);
	memcpy(bad + 33, "\0\0\0\0IEND\xae\x42\x60\x82", 12);
	assert_int_equal(check(bad, 45), IMAGE_NONE);
	free(bad);
	free(png);
	assert_int_equal(check(NULL, 0), IMAGE_NONE);
}

/* A baseline JPEG's structure: SOI, APP0, SOF0 (w x h, 3 components), SOS,
 * two bytes of "scan data", EOI. */
static size_t jpeg_make(unsigned char *out, unsigned char sof, unsigned w, unsigned h)
{
	const unsigned char head[] = {0xff, 0xd8, 0xff, 0xe0, 0, 16, 'J', 'F', 'I', 'F', 0, 1, 1, 0, 0, 1, 0, 1, 0, 0};
	const unsigned char frame[] = {0xff,
				       sof,
				       0,
				       17,
				       8,
				       (unsigned char)(h >> 8),
				       (unsigned char)h,
				       (unsigned char)(w >> 8),
				       (unsigned char)w,
				       3,
				       1,
				       0x22,
				       0,
				       2,
				       0x11,
				       1,
				       3,
				       0x11,
				       1};
	const unsigned char scan[] = {0xff, 0xda, 0, 12, 3, 1, 0, 2, 0x11, 3, 0x11, 0, 0x3f, 0, 0x12, 0x34, 0xff, 0xd9};
	size_t n = 0;
	memcpy(out + n, head, sizeof head);
	n += sizeof head;
	memcpy(out + n, frame, sizeof frame);
	n += sizeof frame;
	memcpy(out + n, scan, sizeof scan);
	return n + sizeof scan;
}

static void test_jpeg(void **state)
{
	(void)state;
	unsigned char j[128];
	size_t n = jpeg_make(j, 0xc0, 640, 480);
	struct image_facts f;
	assert_int_equal(image_check(j, n, &f), IMAGE_JPEG);
	assert_int_equal(f.width, 640);
	assert_int_equal(f.height, 480);
	assert_string_equal(image_mime(IMAGE_JPEG), "image/jpeg");
	n = jpeg_make(j, 0xc2, 16384, 1); /* progressive */
	assert_int_equal(check(j, n), IMAGE_JPEG);

	assert_int_equal(check(j, n - 1), IMAGE_NONE); /* no EOI */
	assert_int_equal(check(j, 30), IMAGE_NONE);    /* cut in a segment */
	n = jpeg_make(j, 0xc4, 640, 480);              /* DHT where the frame header should be */
	assert_int_equal(check(j, n), IMAGE_NONE);
	n = jpeg_make(j, 0xcc, 640, 480); /* DAC */
	assert_int_equal(check(j, n), IMAGE_NONE);
	n = jpeg_make(j, 0xc0, 640, 0); /* height 0 (DNL) */
	assert_int_equal(check(j, n), IMAGE_NONE);
	n = jpeg_make(j, 0xc0, 16385, 16);
	assert_int_equal(check(j, n), IMAGE_NONE);
	n = jpeg_make(j, 0xc0, 640, 480);
	j[5] = 200; /* APP0 longer than the file */
	assert_int_equal(check(j, n), IMAGE_NONE);

	static const char html[] = "\xff\xd8\xff<html><script>alert(1)</script></html>\xff\xd9";
	assert_int_equal(check(html, sizeof html - 1), IMAGE_NONE);
}

/* RIFF/WEBP around one first chunk (id, payload) and an optional second. */
static size_t webp_make(unsigned char *out, const char *id, const unsigned char *d, size_t dn, int riff_delta)
{
	memcpy(out, "RIFF\0\0\0\0WEBP", 12);
	memcpy(out + 12, id, 4);
	out[16] = (unsigned char)dn;
	out[17] = out[18] = out[19] = 0;
	memcpy(out + 20, d, dn);
	size_t n = 20 + dn + (dn & 1);
	if (dn & 1)
		out[20 + dn] = 0;
	uint32_t riff = (uint32_t)(n - 8 + (size_t)riff_delta);
	out[4] = (unsigned char)riff;
	out[5] = (unsigned char)(riff >> 8);
	out[6] = out[7] = 0;
	return n;
}

static void test_webp(void **state)
{
	(void)state;
	unsigned char w[128];
	struct image_facts f;
	/* VP8L: signature, 14 bits width-1 = 99, 14 bits height-1 = 49, version 0 */
	uint32_t bits = 99u | 49u << 14;
	unsigned char vp8l[] = {0x2f,
				(unsigned char)bits,
				(unsigned char)(bits >> 8),
				(unsigned char)(bits >> 16),
				(unsigned char)(bits >> 24),
				0,
				0};
	size_t n = webp_make(w, "VP8L", vp8l, sizeof vp8l, 0);
	assert_int_equal(image_check(w, n, &f), IMAGE_WEBP);
	assert_int_equal(f.width, 100);
	assert_int_equal(f.height, 50);
	assert_string_equal(image_mime(IMAGE_WEBP), "image/webp");
	/* VP8 key frame 320 x 240 */
	unsigned char vp8[] = {0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x40, 0x01, 0xf0, 0x00, 0, 0};
	n = webp_make(w, "VP8 ", vp8, sizeof vp8, 0);
	assert_int_equal(image_check(w, n, &f), IMAGE_WEBP);
	assert_int_equal(f.width, 320);
	assert_int_equal(f.height, 240);
	/* VP8X canvas 1024 x 768 */
	unsigned char vp8x[] = {0x10, 0, 0, 0, 0xff, 0x03, 0x00, 0xff, 0x02, 0x00};
	n = webp_make(w, "VP8X", vp8x, sizeof vp8x, 0);
	assert_int_equal(image_check(w, n, &f), IMAGE_WEBP);
	assert_int_equal(f.width, 1024);
	assert_int_equal(f.height, 768);

	n = webp_make(w, "VP8L", vp8l, sizeof vp8l, 0);
	assert_int_equal(check(w, n - 1), IMAGE_NONE); /* cut */
	n = webp_make(w, "VP8L", vp8l, sizeof vp8l, 2);
	assert_int_equal(check(w, n), IMAGE_NONE); /* RIFF size not the length */
	n = webp_make(w, "VP8L", vp8l, sizeof vp8l, 0);
	memcpy(w + n, "<html>", 6); /* something appended (RIFF size now wrong too) */
	assert_int_equal(check(w, n + 6), IMAGE_NONE);
	vp8l[0] = 0x2e; /* not the VP8L signature */
	n = webp_make(w, "VP8L", vp8l, sizeof vp8l, 0);
	assert_int_equal(check(w, n), IMAGE_NONE);
	vp8[3] = 0x9c; /* not the VP8 start code */
	n = webp_make(w, "VP8 ", vp8, sizeof vp8, 0);
	assert_int_equal(check(w, n), IMAGE_NONE);
	unsigned char big[] = {0x10, 0, 0, 0, 0x00, 0x40, 0x00, 0xff, 0x02, 0x00}; /* 16385 wide */
	n = webp_make(w, "VP8X", big, sizeof big, 0);
	assert_int_equal(check(w, n), IMAGE_NONE);
	static const char text[] = "<html><script>alert(1)</script>";
	n = webp_make(w, "HTML", (const unsigned char *)text, sizeof text - 1, 0);
	assert_int_equal(check(w, n), IMAGE_NONE); /* a RIFF/WEBP whose first chunk is no image */
	assert_null(image_mime(IMAGE_NONE));
}

int main(void)
{
	png_init();
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_png),
		cmocka_unit_test(test_jpeg),
		cmocka_unit_test(test_webp),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
