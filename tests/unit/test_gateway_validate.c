/* Unit tests of gateway/validate.c and gateway/ratelimit.c: UTF-8 edge
 * cases, each message-level and field-level error with its code and field,
 * the balancer body and work of a valid generate (an init_image makes it an
 * img2img: A1111's init_images), the welcome's sampler
 * names, and the work token bucket (burst, refill, never-fits, refund,
 * bounded table). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gateway.h"

static const struct gw_config CFG = {
	.max_message = 65536,
	.max_image_message = 12 << 20,
	.max_prompt = 2000,
	.max_jobs_per_connection = 4,
	.rate_burst = 640,
	.rate_refill = 2.5,
};

static int utf8(const char *s) { return validate_utf8((const unsigned char *)s, strlen(s)); }

static void test_utf8(void **state)
{
	(void)state;
	assert_true(utf8(""));
	assert_true(utf8("plain ascii"));
	assert_true(utf8("ü€😀"));
	assert_true(utf8("\xf4\x8f\xbf\xbf"));  /* U+10FFFF */
	assert_false(utf8("\xc3\x28"));         /* bad continuation */
	assert_false(utf8("\xc0\xaf"));         /* overlong '/' */
	assert_false(utf8("\xe0\x80\xaf"));     /* overlong, 3 bytes */
	assert_false(utf8("\xed\xa0\x80"));     /* surrogate D800 */
	assert_false(utf8("\xf4\x90\x80\x80")); /* above U+10FFFF */
	assert_false(utf8("\xe2\x82"));         /* truncated */
	assert_false(utf8("\xff"));
	assert_false(utf8("\x80"));
}

/* Validates text; returns the error code ("" when valid). */
static const char *check(const char *text, const json_t *gpus, struct gw_request *r, struct gw_error *e)
{
	if (validate_message(text, strlen(text), &CFG, gpus, r, e) == 0)
		return "";
	return e->code;
}

static void expect(const char *text, const char *code, const char *field)
{
	struct gw_request r;
	struct gw_error e;
	json_t *gpus = json_pack("[s,s]", "a100", "rtx3090");
	const char *got = check(text, gpus, &r, &e);
	if (strcmp(got, code) || (field && strcmp(e.field, field))) {
		print_error("%s: expected %s/%s, got %s/%s (%s)\n", text, code, field ? field : "-", got, e.field,
			    e.message);
		fail();
	}
	if (!*got)
		validate_request_free(&r);
	else
		assert_true(validate_utf8((const unsigned char *)e.message, strlen(e.message)) && e.message[0]);
	json_decref(gpus);
}

#define GEN(extra)                                                                                                     \
	"{\"type\":\"generate\",\"id\":\"j1\",\"prompt\":\"a cat\",\"steps\":20,\"width\":512,\"height\":512" extra "}"

static void test_message_errors(void **state)
{
	(void)state;
	expect("{\"type\":\"hello\"}", "", NULL);
	expect("{\"type\":\"hello\"", "bad_json", NULL);
	expect("[1]", "not_object", NULL);
	expect("42", "not_object", NULL);
	expect("{}", "invalid", "type");
	expect("{\"type\":\"nope\"}", "unknown_type", "type");
	expect("{\"type\":\"hello\",\"type\":\"hello\"}", "bad_json", NULL);
	expect("{\"type\":\"cancel\"}", "invalid", "id");
	expect("{\"type\":\"cancel\",\"id\":\"\"}", "invalid", "id");
	expect("{\"type\":\"cancel\",\"id\":\"x y\"}", "invalid", "id");
	expect("{\"type\":\"cancel\",\"id\":\"j1\"}", "", NULL);
	char *big = malloc(70000);
	memset(big, ' ', 69999);
	big[69999] = '\0';
	expect(big, "too_large", NULL);
	free(big);
}

static void test_generate_errors(void **state)
{
	(void)state;
	expect(GEN(""), "", NULL);
	expect(GEN(",\"prompt\":\"\""), "bad_json", NULL); /* duplicate key */
	expect("{\"type\":\"generate\",\"id\":\"j1\"}", "invalid", "prompt");
	expect("{\"type\":\"generate\",\"id\":\"j1\",\"prompt\":\" \\n\"}", "invalid", "prompt");
	expect(GEN(",\"negative_prompt\":5"), "invalid", "negative_prompt");
	expect(GEN(",\"cfg_scale\":\"7\""), "invalid", "cfg_scale");
	expect(GEN(",\"cfg_scale\":30.5"), "invalid", "cfg_scale");
	expect(GEN(",\"seed\":true"), "invalid", "seed");
	expect(GEN(",\"sampler_name\":\"Nope\""), "sampler_not_found", "sampler_name");
	expect(GEN(",\"sampler_name\":\"DPM++ 2M Karras\""), "", NULL);
	expect(GEN(",\"sampler_name\":\"DPM++ 2M\",\"scheduler\":\"karras\""), "", NULL);
	expect(GEN(",\"scheduler\":\"never\""), "scheduler_not_found", "scheduler");
	expect(GEN(",\"refiner_switch_at\":0.8"), "", NULL);
	expect(GEN(",\"refiner_switch_at\":-1"), "invalid", "refiner_switch_at");
	expect(GEN(",\"gpus\":[]"), "", NULL);
	expect(GEN(",\"gpus\":[\"a100\",\"rtx3090\"]"), "", NULL);
	expect(GEN(",\"gpus\":[\"A100\"]"), "invalid", "gpus");
	expect(GEN(",\"gpus\":[\"h100\"]"), "unknown_gpu", "gpus");
	expect(GEN(",\"gpus\":{}"), "invalid", "gpus");
	expect(GEN(",\"prefer\":\"fastest\""), "", NULL);
	expect(GEN(",\"prefer\":\"cheapest\""), "", NULL);
	expect(GEN(",\"prefer\":null"), "", NULL);
	expect(GEN(",\"prefer\":\"slowest\""), "invalid", "prefer");
	expect(GEN(",\"prefer\":1"), "invalid", "prefer");
	/* init_image: bare base64 or a data: URL of a PNG, JPEG or WebP (magic bytes) */
#define PNG_B64 "iVBORw0KGgoAAAANSUhEUgAAAEAAAABA"
	expect(GEN(",\"init_image\":\"" PNG_B64 "\""), "", NULL);
	expect(GEN(",\"init_image\":\"data:image/png;base64," PNG_B64
		   "\",\"denoising_strength\":0.3,\"resize_mode\":2"),
	       "", NULL);
	expect(GEN(",\"init_image\":\"data:image/webp;base64," PNG_B64 "\""), "", NULL); /* the bytes decide */
	expect(GEN(",\"init_image\":\"data:text/html;base64," PNG_B64 "\""), "bad_image", "init_image");
	expect(GEN(",\"init_image\":\"data:image/png," PNG_B64 "\""), "bad_image", "init_image");
	expect(GEN(",\"init_image\":\"aGVsbG8gd29ybGQsIGhlbGxvIQ==\""), "bad_image", "init_image");
	expect(GEN(",\"init_image\":\"not base64 at all!\""), "bad_image", "init_image");
	expect(GEN(",\"init_image\":\"\""), "bad_image", "init_image");
	expect(GEN(",\"init_image\":[\"" PNG_B64 "\"]"), "invalid", "init_image");
	expect(GEN(",\"init_image\":\"" PNG_B64 "\",\"denoising_strength\":\"0.5\""), "invalid", "denoising_strength");
	expect(GEN(",\"init_image\":\"" PNG_B64 "\",\"denoising_strength\":1.01"), "invalid", "denoising_strength");
	expect(GEN(",\"init_image\":\"" PNG_B64 "\",\"resize_mode\":4"), "invalid", "resize_mode");
	expect(GEN(",\"init_image\":\"" PNG_B64 "\",\"resize_mode\":0.5"), "invalid", "resize_mode");
	/* the id is echoed on field errors */
	struct gw_request r;
	struct gw_error e;
	assert_string_equal(check("{\"type\":\"generate\",\"id\":\"j1\",\"prompt\":\"p\",\"steps\":0}", NULL, &r, &e),
			    "invalid");
	assert_string_equal(e.id, "j1");
	assert_string_equal(e.field, "steps");
	/* with no board yet, any well-formed class goes on to the balancer */
	assert_string_equal(check(GEN(",\"gpus\":[\"h100\"]"), NULL, &r, &e), "");
	validate_request_free(&r);
}

static void test_generate_body(void **state)
{
	(void)state;
	struct gw_request r;
	struct gw_error e;
	assert_string_equal(check(GEN(",\"cfg_scale\":6.5,\"seed\":-1,\"gpus\":[\"a100\"],\"evil\":{\"x\":1},"
				      "\"override_settings\":{\"sd_model_checkpoint\":\"x\"}"),
				  NULL, &r, &e),
			    "");
	assert_int_equal(r.type, GW_MSG_GENERATE);
	assert_string_equal(r.id, "j1");
	assert_true(fabs(r.work - 20.0 * 512 * 512 / 1e6) < 1e-9);
	assert_string_equal(json_string_value(json_object_get(r.body, "prompt")), "a cat");
	assert_int_equal(json_integer_value(json_object_get(r.body, "steps")), 20);
	assert_string_equal(json_string_value(json_array_get(json_object_get(r.body, "gpus"), 0)), "a100");
	assert_null(json_object_get(r.body, "prefer")); /* absent: the balancer's default */
	/* only the protocol's fields reach the balancer */
	assert_null(json_object_get(r.body, "evil"));
	assert_null(json_object_get(r.body, "override_settings"));
	assert_null(json_object_get(r.body, "type"));
	assert_null(json_object_get(r.body, "id"));
	validate_request_free(&r);
	/* prefer is passed on as is */
	assert_string_equal(check(GEN(",\"prefer\":\"cheapest\""), NULL, &r, &e), "");
	assert_string_equal(json_string_value(json_object_get(r.body, "prefer")), "cheapest");
	validate_request_free(&r);
	/* an init_image: the balancer's img2img body, bare base64 */
	assert_string_equal(
		check(GEN(",\"init_image\":\"data:image/png;base64," PNG_B64 "\",\"denoising_strength\":0.4"), NULL, &r,
		      &e),
		"");
	assert_true(r.img2img);
	assert_string_equal(json_string_value(json_array_get(json_object_get(r.body, "init_images"), 0)), PNG_B64);
	assert_true(fabs(json_number_value(json_object_get(r.body, "denoising_strength")) - 0.4) < 1e-9);
	assert_null(json_object_get(r.body, "init_image"));
	validate_request_free(&r);
	/* denoising_strength and resize_mode go only with an image */
	assert_string_equal(check(GEN(",\"denoising_strength\":0.4,\"resize_mode\":1"), NULL, &r, &e), "");
	assert_false(r.img2img);
	assert_null(json_object_get(r.body, "denoising_strength"));
	assert_null(json_object_get(r.body, "resize_mode"));
	validate_request_free(&r);
	/* past max_message only a generate with an init_image */
	size_t n = 100001; /* with the 11 characters before: a multiple of 4 */
	char *big = malloc(n + 200);
	int k = snprintf(big, n + 200, "{\"type\":\"hello\",\"pad\":\"");
	memset(big + k, 'x', n);
	strcpy(big + k + n, "\"}");
	assert_string_equal(check(big, NULL, &r, &e), "too_large");
	k = snprintf(big, n + 200, "{\"type\":\"generate\",\"id\":\"j\",\"prompt\":\"p\",\"init_image\":\"iVBORw0KGgo");
	memset(big + k, 'A', n);
	strcpy(big + k + n, "\"}");
	assert_string_equal(check(big, NULL, &r, &e), "");
	assert_true(r.img2img);
	validate_request_free(&r);
	free(big);
	/* defaults: A1111's 50 steps at 512x512 */
	assert_string_equal(check("{\"type\":\"generate\",\"id\":\"j\",\"prompt\":\"p\"}", NULL, &r, &e), "");
	assert_true(fabs(r.work - 50.0 * 512 * 512 / 1e6) < 1e-9);
	validate_request_free(&r);
}

static void test_prompt_code_points(void **state)
{
	(void)state;
	/* 2000 two-byte characters pass (4000 bytes); 2001 do not */
	size_t n = 2001;
	char *p = malloc(n * 2 + 128);
	char *q = p + sprintf(p, "{\"type\":\"generate\",\"id\":\"j\",\"prompt\":\"");
	for (size_t i = 0; i < n - 1; i++)
		q += sprintf(q, "\xc3\xa9");
	strcpy(q, "\"}");
	expect(p, "", NULL);
	q = p + strlen(p) - 2;
	strcpy(q, "\xc3\xa9\"}");
	expect(p, "invalid", "prompt");
	free(p);
}

static void test_sampler_names(void **state)
{
	(void)state;
	json_t *names = validate_sampler_names(NULL);
	int sde_karras = 0, euler = 0, euler_karras = 0;
	size_t i;
	json_t *v;
	json_array_foreach(names, i, v)
	{
		sde_karras |= !strcmp(json_string_value(v), "DPM++ SDE Karras");
		euler |= !strcmp(json_string_value(v), "Euler a");
		euler_karras |= !strcmp(json_string_value(v), "Euler Karras");
	}
	assert_true(sde_karras && euler && !euler_karras);
	json_decref(names);
	/* from the balancer's list: its names only, plus their combined forms */
	json_t *bal = json_pack("[{s:s},{s:s}]", "name", "Euler", "name", "DPM++ 2M");
	names = validate_sampler_names(bal);
	assert_int_equal(json_array_size(names), 3); /* Euler, DPM++ 2M, DPM++ 2M Karras */
	json_decref(names);
	json_decref(bal);
}

static void test_ratelimit(void **state)
{
	(void)state;
	struct ratelimit *rl = ratelimit_new(10, 1, 4);
	double retry;
	assert_int_equal(ratelimit_take(rl, "a", 6, 0, &retry), 0);
	assert_int_equal(ratelimit_take(rl, "a", 6, 0, &retry), -1);
	assert_true(fabs(retry - 2) < 1e-6);                          /* 4 left, 2 s to 6 */
	assert_int_equal(ratelimit_take(rl, "b", 6, 0, &retry), 0);   /* per address */
	assert_int_equal(ratelimit_take(rl, "a", 6, 2.0, &retry), 0); /* refilled */
	assert_int_equal(ratelimit_take(rl, "a", 11, 100, &retry), -1);
	assert_true(retry < 0);                                        /* never fits */
	assert_int_equal(ratelimit_take(rl, "a", 6, 2.0, &retry), -1); /* spent */
	ratelimit_refund(rl, "a", 6, 2.0);                             /* the balancer refused that job */
	assert_int_equal(ratelimit_take(rl, "a", 6, 2.0, &retry), 0);
	/* a bounded table (4 addresses): 100 more addresses evict, never fail */
	char addr[32];
	for (int i = 0; i < 100; i++) {
		snprintf(addr, sizeof addr, "10.0.0.%d", i);
		assert_int_equal(ratelimit_take(rl, addr, 0.5, 1000.0 + i * 100, &retry), 0);
	}
	ratelimit_free(rl);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_utf8),
		cmocka_unit_test(test_message_errors),
		cmocka_unit_test(test_generate_errors),
		cmocka_unit_test(test_generate_body),
		cmocka_unit_test(test_prompt_code_points),
		cmocka_unit_test(test_sampler_names),
		cmocka_unit_test(test_ratelimit),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
