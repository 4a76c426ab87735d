/* Unit tests of the img2img request model (a1111/request.c, image.c):
 * init_images as base64 with or without a data: URL prefix, PNG/JPEG/WebP
 * told by their magic bytes, non-image base64, bad base64, too many images,
 * too large decoded, missing init_images (A1111's 404), denoising_strength,
 * resize_mode and mask (accepted, and reported unsupported); A1111_EITHER
 * (the jobs API's kind) read as img2img only with init_images, and the kind
 * it was read as kept on a rejection. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "a1111.h"
#include "b64.h"

/* base64 of n bytes starting with magic (the rest zeros). Caller frees. */
static char *image_b64(const char *magic, size_t magic_len, size_t n)
{
	unsigned char *buf = calloc(1, n);
	memcpy(buf, magic, magic_len);
	char *s = b64_encode_new(buf, n);
	free(buf);
	return s;
}

/* {"init_images": [images...] + extra}. Caller frees. */
static char *body_with(const char *const *images, int count, const char *extra)
{
	json_t *list = json_array();
	for (int i = 0; i < count; i++)
		json_array_append_new(list, json_string(images[i]));
	json_t *o = json_pack("{s:o,s:s}", "init_images", list, "prompt", "a cat");
	if (extra) {
		json_t *more = json_loads(extra, 0, NULL);
		json_object_update(o, more);
		json_decref(more);
	}
	char *s = json_dumps(o, JSON_COMPACT);
	json_decref(o);
	return s;
}

static int parse(const char *body, struct a1111_request *r, int *status, json_t **reply)
{
	*reply = NULL;
	return a1111_parse(A1111_IMG2IMG, body, strlen(body), &A1111_NATIVE, r, status, reply);
}

static void expect_422(const char *body, const char *field, const char *type)
{
	struct a1111_request r;
	int status;
	json_t *reply;
	assert_int_equal(parse(body, &r, &status, &reply), A1111_REJECTED);
	assert_int_equal(status, 422);
	json_t *item = json_array_get(json_object_get(reply, "detail"), 0);
	assert_string_equal(json_string_value(json_array_get(json_object_get(item, "loc"), 1)), field);
	assert_string_equal(json_string_value(json_object_get(item, "type")), type);
	json_decref(reply);
}

static void test_image_types(void **state)
{
	(void)state;
	char *png = image_b64("\x89PNG\r\n\x1a\n", 8, 100), *jpeg = image_b64("\xff\xd8\xff\xe0", 4, 64),
	     *webp = image_b64("RIFF\0\0\0\0WEBPVP8 ", 16, 50);
	char data_url[256];
	snprintf(data_url, sizeof data_url, "data:image/png;base64,%s", png);
	const char *images[] = {png, jpeg, webp, data_url};
	char *body = body_with(images, 4, "{\"denoising_strength\": \"0.3\", \"resize_mode\": 1}");
	struct a1111_request r;
	int status;
	json_t *reply;
	assert_int_equal(parse(body, &r, &status, &reply), A1111_OK);
	assert_int_equal(r.kind, A1111_IMG2IMG);
	assert_int_equal(r.init_image_count, 4);
	assert_string_equal(r.init_images[0].type, "png");
	assert_int_equal(r.init_images[0].bytes, 100);
	assert_string_equal(r.init_images[1].type, "jpeg");
	assert_string_equal(r.init_images[2].type, "webp");
	assert_int_equal(r.init_images[2].bytes, 50);
	assert_string_equal(r.init_images[3].type, "png");
	assert_true(r.denoising_strength == 0.3);
	assert_int_equal(r.resize_mode, 1);
	assert_false(r.has_mask);
	assert_false(r.include_init_images);
	assert_null(a1111_unsupported(&r));
	/* the serialised body keeps the images; the defaults are img2img's */
	json_t *out = a1111_request_body(&r);
	assert_int_equal(json_array_size(json_object_get(out, "init_images")), 4);
	json_decref(out);
	assert_int_equal(json_integer_value(json_object_get(r.parameters, "mask_blur_x")), 4);
	assert_null(json_object_get(r.parameters, "enable_hr")); /* txt2img's only */
	printf("# PNG, JPEG, WebP and a data: URL accepted; %zu img2img parameters\n", json_object_size(r.parameters));
	a1111_request_free(&r);
	free(body);
	/* defaults: denoising_strength 0.75, as A1111's img2img */
	body = body_with(images, 1, "{\"mask\": \"abcd\", \"include_init_images\": true}");
	assert_int_equal(parse(body, &r, &status, &reply), A1111_OK);
	assert_true(r.denoising_strength == 0.75);
	assert_true(r.has_mask);
	assert_true(r.include_init_images);
	json_t *unsupported = a1111_unsupported(&r);
	json_t *item = json_array_get(json_object_get(unsupported, "detail"), 0);
	assert_string_equal(json_string_value(json_object_get(item, "type")), "unsupported");
	assert_string_equal(json_string_value(json_array_get(json_object_get(item, "loc"), 1)), "mask");
	json_decref(unsupported);
	a1111_request_free(&r);
	free(body);
	/* the same types by the first bytes alone, for a request already parsed */
	assert_string_equal(a1111_image_type(png, strlen(png)), "png");
	assert_string_equal(a1111_image_type(jpeg, strlen(jpeg)), "jpeg");
	assert_string_equal(a1111_image_type(webp, strlen(webp)), "webp");
	assert_string_equal(a1111_image_type(data_url, strlen(data_url)), "png");
	assert_null(a1111_image_type("UklGRg==", 8)); /* too short to tell */
	assert_null(a1111_image_type("just some text, long enough", 27));
	free(png);
	free(jpeg);
	free(webp);
}

static void test_bad_images(void **state)
{
	(void)state;
	char *png = image_b64("\x89PNG\r\n\x1a\n", 8, 100), *gif = image_b64("GIF89a", 6, 100);
	const char *one[] = {gif};
	char *body = body_with(one, 1, NULL);
	expect_422(body, "init_images.0", "image_type");
	free(body);
	const char *bad[] = {png, "not base64!"};
	body = body_with(bad, 2, NULL);
	expect_422(body, "init_images.1", "base64_decode");
	free(body);
	const char *five[] = {png, png, png, png, png};
	body = body_with(five, 5, NULL);
	expect_422(body, "init_images", "too_long");
	free(body);
	expect_422("{\"init_images\": []}", "init_images", "too_long");
	expect_422("{\"init_images\": \"x\"}", "init_images", "list_type");
	expect_422("{\"init_images\": [3]}", "init_images.0", "string_type");
	const char *ok1[] = {png};
	body = body_with(ok1, 1, "{\"denoising_strength\": 1.5}");
	expect_422(body, "denoising_strength", "less_than_equal");
	free(body);
	body = body_with(ok1, 1, "{\"resize_mode\": 4}");
	expect_422(body, "resize_mode", "less_than_equal");
	free(body);
	/* 8 MiB + 3 bytes decoded: too large, refused without decoding it */
	char *big = image_b64("\x89PNG\r\n\x1a\n", 8, A1111_MAX_INIT_IMAGE_BYTES + 3);
	const char *large[] = {big};
	body = body_with(large, 1, NULL);
	expect_422(body, "init_images.0", "image_too_large");
	printf("# an init image of %u bytes decoded (%zu base64 characters) is refused\n",
	       A1111_MAX_INIT_IMAGE_BYTES + 3, strlen(big));
	free(body);
	free(big);
	free(png);
	free(gif);
}

static void test_missing_init_images(void **state)
{
	(void)state;
	struct a1111_request r;
	int status;
	json_t *reply;
	assert_int_equal(parse("{\"prompt\": \"a cat\"}", &r, &status, &reply), A1111_REJECTED);
	assert_int_equal(status, 404);
	assert_string_equal(json_string_value(json_object_get(reply, "detail")), "Init image not found");
	json_decref(reply);
}

static void test_either(void **state)
{
	(void)state;
	char *png = image_b64("\x89PNG\r\n\x1a\n", 8, 100);
	const char *images[] = {png};
	struct a1111_request r;
	int status;
	json_t *reply = NULL;
	char *body = body_with(images, 1, "{\"denoising_strength\": 0.4}");
	assert_int_equal(a1111_parse(A1111_EITHER, body, strlen(body), &A1111_NATIVE, &r, &status, &reply), A1111_OK);
	assert_int_equal(r.kind, A1111_IMG2IMG);
	assert_int_equal(r.init_image_count, 1);
	a1111_request_free(&r);
	free(body);
	static const char txt[] = "{\"prompt\": \"a cat\", \"init_images\": null}";
	assert_int_equal(a1111_parse(A1111_EITHER, txt, strlen(txt), &A1111_NATIVE, &r, &status, &reply), A1111_OK);
	assert_int_equal(r.kind, A1111_TXT2IMG);
	a1111_request_free(&r);
	/* rejected: the kind it was read as stays */
	body = body_with(images, 1, "{\"steps\": 0}");
	assert_int_equal(a1111_parse(A1111_EITHER, body, strlen(body), &A1111_NATIVE, &r, &status, &reply),
			 A1111_REJECTED);
	assert_int_equal(r.kind, A1111_IMG2IMG);
	json_decref(reply);
	reply = NULL;
	static const char bad[] = "{\"prompt\": \"a cat\", \"steps\": 0}";
	assert_int_equal(a1111_parse(A1111_EITHER, bad, strlen(bad), &A1111_NATIVE, &r, &status, &reply),
			 A1111_REJECTED);
	assert_int_equal(r.kind, A1111_TXT2IMG);
	json_decref(reply);
	free(body);
	free(png);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_either),
		cmocka_unit_test(test_image_types),
		cmocka_unit_test(test_bad_images),
		cmocka_unit_test(test_missing_init_images),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
