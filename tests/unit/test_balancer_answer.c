/* Unit tests of balancer/answer.c: a backend's txt2img answer is taken only
 * when every image is base64 of a PNG, JPEG or WebP file; everything a broken
 * or hostile provider might send instead is refused. */
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

/* {"images": [<base64 of bytes>], "info": "{}"} (caller frees). */
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
	json_t *a = answer_parse_txt2img(text, strlen(text));
	json_decref(a);
	return a != NULL;
}

static void test_image_formats(void **state)
{
	(void)state;
	unsigned char png[40] = "\x89PNG\r\n\x1a\n\0\0\0\rIHDR";
	unsigned char jpg[40] = "\xff\xd8\xff\xe0\0\x10JFIF";
	unsigned char webp[40] = "RIFF\x10\0\0\0WEBPVP8 ";
	unsigned char text[40] = "<html>502 Bad Gateway</html>........";
	const struct {
		const unsigned char *b;
		const char *prefix;
		int ok;
	} cases[] = {{png, "", 1}, {jpg, "", 1}, {webp, "", 1}, {png, "data:image/png;base64,", 1}, {text, "", 0}};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		char *a = answer_with(cases[i].b, sizeof png, cases[i].prefix);
		assert_int_equal(accepted(a), cases[i].ok);
		free(a);
	}
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
		"{\"images\": [\"iVBORw0KGgoAAAANSUhEUgAAAAA=\"], \"info\": 5}",
		"{\"images\": [null]}",
		"[\"iVBORw0KGgoAAAANSUhEUgAAAAA=\"]",
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		if (accepted(bad[i]))
			fail_msg("accepted: %s", bad[i]);
	}
	assert_true(accepted("{\"images\": [\"iVBORw0KGgoAAAANSUhEUgAAAAA=\"], \"info\": \"{}\"}"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_image_formats),
		cmocka_unit_test(test_garbage_refused),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
