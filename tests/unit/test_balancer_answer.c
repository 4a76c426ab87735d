/* Unit tests of balancer/answer.c: a backend's txt2img answer is taken only
 * when every image is base64 of a whole PNG, JPEG or WebP file, and comes
 * back re-wrapped (bare base64 and the types the balancer found); a preview
 * that is no image is dropped; everything a broken or hostile provider might
 * send instead is refused. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "answer.h"
#include "b64.h"
#include "png.h"

/* {"images": [<prefix><base64 of bytes>]} with an info string (caller frees). */
static char *answer_with(const unsigned char *bytes, size_t n, const char *prefix)
{
	char *b = b64_encode_new(bytes, n);
	size_t len = strlen(b) + strlen(prefix) + 64;
	char *out = malloc(len);
	snprintf(out, len, "{\"images\": [\"%s%s\"], \"info\": \"{}\"}", prefix, b);
	free(b);
	return out;
}

static int accepted(const char *text)
{
	json_t *a = answer_parse_txt2img(text, strlen(text), NULL);
	json_decref(a);
	return a != NULL;
}

/* A real PNG from the backend's encoder (caller frees). */
static unsigned char *real_png(size_t *n)
{
	uint8_t rgb[16 * 8 * 3];
	for (size_t i = 0; i < sizeof rgb; i++)
		rgb[i] = (uint8_t)i;
	unsigned char *png = png_encode(rgb, 16, 8, "parameters", n);
	assert_non_null(png);
	return png;
}

static void test_image_formats(void **state)
{
	(void)state;
	size_t n;
	unsigned char *png = real_png(&n);
	unsigned char *html = malloc(n);
	memcpy(html, "\x89PNG\r\n\x1a\n", 8);
	memset(html + 8, 'x', n - 8);
	memcpy(html + 8, "<html><script>alert(1)</script>", 31);
	const struct {
		const unsigned char *b;
		const char *prefix;
		int ok;
	} cases[] = {{png, "", 1},
		     {png, "data:image/png;base64,", 1},
		     {png, "data:text/html;base64,", 1}, /* the declared type is ignored: it is re-typed */
		     {html, "", 0},
		     {html, "data:text/html;base64,", 0}};
	char *bare = b64_encode_new(png, n);
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		char *text = answer_with(cases[i].b, n, cases[i].prefix);
		struct image_files files;
		json_t *a = answer_parse_txt2img(text, strlen(text), &files);
		assert_int_equal(a != NULL, cases[i].ok);
		if (a) { /* re-wrapped: bare base64, and the type the balancer found */
			assert_string_equal(json_string_value(json_array_get(json_object_get(a, "images"), 0)), bare);
			assert_string_equal(json_string_value(json_array_get(json_object_get(a, "image_types"), 0)),
					    "image/png");
			/* the decoded file goes on as it is (the store keeps it without decoding again) */
			assert_int_equal(files.n, 1);
			assert_int_equal(files.v[0].len, n);
			assert_memory_equal(files.v[0].data, png, n);
			assert_int_equal(files.v[0].facts.type, IMAGE_PNG);
			assert_int_equal(files.v[0].facts.width, 16);
			assert_int_equal(files.v[0].facts.height, 8);
		} else {
			assert_int_equal(files.n, 0);
			assert_null(files.v);
		}
		image_files_free(&files);
		json_decref(a);
		free(text);
	}
	free(bare);
	free(html);
	free(png);
}

static void test_garbage_refused(void **state)
{
	(void)state;
	const char *bad[] = {
		"<html>oops</html>",
		"{\"images\": 42}",
		"{\"images\": []}",
		"{\"images\": [\"iVBOR",
		"{\"images\": [\"not base64 at all, not even close!!\"]}",
		"{\"images\": [\"iVBORw0KGgoAAAANSUhEUgAA!!AA\"]}", /* bad character after a PNG start */
		"{\"images\": [\"iVBORw0KGgoAAAANSUhEUgAAAA\"]}",   /* not padded to a multiple of 4 */
		"{\"images\": [\"iVBORw0KGgoAAAANSUhEUgAAAAA=\"]}", /* a PNG's first bytes only */
		"{\"images\": [null]}",
		"[\"iVBORw0KGgoAAAANSUhEUgAAAAA=\"]",
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		if (accepted(bad[i]))
			fail_msg("accepted: %s", bad[i]);
	}
	size_t n;
	unsigned char *png = real_png(&n);
	char *b = b64_encode_new(png, n);
	char text[4096];
	snprintf(text, sizeof text, "{\"images\": [\"%s\"], \"info\": 5}", b); /* info neither string nor object */
	assert_false(accepted(text));
	snprintf(text, sizeof text, "{\"images\": [\"%s\", \"%.40s\"], \"info\": \"{}\"}", b,
		 b); /* one good, one cut */
	assert_false(accepted(text));
	snprintf(text, sizeof text, "{\"images\": [\"%s\", \"%s\"], \"info\": \"{}\"}", b, b);
	assert_true(accepted(text));
	free(b);
	free(png);
}

/* A progress answer's preview is kept only when it is an image: given as bare
 * base64 with the type found; anything else is dropped (NULL). */
static void test_preview(void **state)
{
	(void)state;
	size_t n;
	unsigned char *png = real_png(&n);
	char *b = b64_encode_new(png, n);
	char *html = b64_encode_new((const unsigned char *)"\x89PNG\r\n\x1a\n<html><script>alert(1)</script>", 39);
	const struct {
		const char *prefix, *b64;
		int ok;
	} cases[] = {{"", b, 1}, {"data:text/html;base64,", b, 1}, {"", html, 0}, {"data:image/png;base64,", html, 0}};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		char text[4096];
		snprintf(text, sizeof text,
			 "{\"progress\": 0.5, \"state\": {\"sampling_step\": 4, \"sampling_steps\": 8, \"job_count\": "
			 "1},"
			 " \"current_image\": \"%s%s\"}",
			 cases[i].prefix, cases[i].b64);
		struct answer_progress p;
		json_t *pj = answer_parse_progress(text, strlen(text), &p);
		assert_non_null(pj);
		assert_true(p.valid);
		if (cases[i].ok) {
			assert_string_equal(p.preview, b);
			assert_string_equal(p.preview_type, "image/png");
		} else {
			assert_null(p.preview);
			assert_null(p.preview_type);
		}
		json_decref(pj);
	}
	free(html);
	free(b);
	free(png);
}

int main(void)
{
	png_init();
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_image_formats),
		cmocka_unit_test(test_garbage_refused),
		cmocka_unit_test(test_preview),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
