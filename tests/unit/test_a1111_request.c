/* Unit tests of a1111/request.c: A1111's defaults, sampler_index as the
 * fallback, combined names, pydantic v1's coercions (numbers as strings,
 * "-1" seeds, booleans), the 422 list and the 404 shape, the checkpoint
 * hook, and the serialised body (no unknown keys, concrete seeds). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "a1111.h"

static int parse_as(enum a1111_kind kind, const char *body, const struct a1111_runnable *run, struct a1111_request *r,
		    int *status, json_t **reply)
{
	*reply = NULL;
	return a1111_parse(kind, body, strlen(body), run, r, status, reply);
}

static void ok(const char *body, struct a1111_request *r)
{
	int status;
	json_t *reply;
	if (parse_as(A1111_TXT2IMG, body, &A1111_NATIVE, r, &status, &reply) != A1111_OK) {
		char *s = json_dumps(reply, 0);
		fail_msg("%s rejected: %d %s", body, status, s);
	}
}

/* The 422 list: returns it (caller frees) after checking its shape. */
static json_t *expect_422(const char *body, const char *field, const char *type)
{
	struct a1111_request r;
	int status;
	json_t *reply;
	assert_int_equal(parse_as(A1111_TXT2IMG, body, &A1111_NATIVE, &r, &status, &reply), A1111_REJECTED);
	assert_int_equal(status, 422);
	json_t *item = json_array_get(json_object_get(reply, "detail"), 0);
	assert_non_null(item);
	json_t *loc = json_object_get(item, "loc");
	assert_string_equal(json_string_value(json_array_get(loc, 0)), "body");
	if (field)
		assert_string_equal(json_string_value(json_array_get(loc, 1)), field);
	assert_string_equal(json_string_value(json_object_get(item, "type")), type);
	assert_non_null(json_string_value(json_object_get(item, "msg")));
	return reply;
}

static void test_defaults(void **state)
{
	(void)state;
	struct a1111_request r;
	ok("{\"prompt\": \"a cat\"}", &r);
	assert_string_equal(r.prompt, "a cat");
	assert_string_equal(r.negative_prompt, "");
	assert_int_equal(r.steps, 50);
	assert_int_equal(r.width, 512);
	assert_int_equal(r.height, 512);
	assert_int_equal(r.batch_size * r.n_iter, 1);
	assert_true(r.cfg_scale == 7.0);
	assert_string_equal(A1111_SAMPLERS[r.sampler].name, "Euler");
	assert_int_equal(r.scheduler, 0);
	assert_true(r.seed_was_random && r.seed == -1);
	assert_true(r.send_images && !r.save_images && !r.enable_hr);
	assert_true(isnan(r.eta));
	/* parameters: every field of the model, with A1111's defaults */
	json_t *p = r.parameters;
	assert_string_equal(json_string_value(json_object_get(p, "sampler_index")), "Euler");
	assert_true(json_is_null(json_object_get(p, "denoising_strength")));
	assert_true(json_is_true(json_object_get(p, "override_settings_restore_afterwards")));
	assert_int_equal(json_real_value(json_object_get(p, "hr_scale")), 2);
	assert_null(json_object_get(p, "init_images")); /* img2img's only */
	printf("# txt2img parameters: %zu fields\n", json_object_size(p));
	assert_true(json_object_size(p) >= 55);
	a1111_request_free(&r);
}

static void test_sampler_index_and_combined(void **state)
{
	(void)state;
	struct a1111_request r;
	ok("{\"sampler_index\": \"DPM++ 2M Karras\"}", &r);
	assert_string_equal(A1111_SAMPLERS[r.sampler].name, "DPM++ 2M");
	assert_string_equal(A1111_SCHEDULERS[r.scheduler].name, "karras");
	json_t *body = a1111_request_body(&r);
	assert_string_equal(json_string_value(json_object_get(body, "sampler_name")), "DPM++ 2M");
	assert_string_equal(json_string_value(json_object_get(body, "scheduler")), "karras");
	assert_null(json_object_get(body, "sampler_index"));
	json_decref(body);
	a1111_request_free(&r);
	/* sampler_name wins over sampler_index; "" falls back to it, as A1111's `or` */
	ok("{\"sampler_name\": \"Euler a\", \"sampler_index\": \"DDIM\"}", &r);
	assert_string_equal(A1111_SAMPLERS[r.sampler].name, "Euler a");
	a1111_request_free(&r);
	ok("{\"sampler_name\": \"\", \"sampler_index\": \"k_dpmpp_2m\"}", &r);
	assert_string_equal(A1111_SAMPLERS[r.sampler].name, "DPM++ 2M");
	a1111_request_free(&r);
}

static void test_coercions(void **state)
{
	(void)state;
	struct a1111_request r;
	ok("{\"steps\": \"20\", \"cfg_scale\": \" 6.5 \", \"width\": 256.0, \"height\": \"384\", \"seed\": \"-1\","
	   " \"subseed\": \"7\", \"send_images\": \"yes\", \"enable_hr\": \"off\", \"restore_faces\": 0,"
	   " \"batch_size\": true, \"prompt\": 42, \"n_iter\": 2.7}",
	   &r);
	assert_int_equal(r.steps, 20);
	assert_true(r.cfg_scale == 6.5);
	assert_int_equal(r.width, 256);
	assert_int_equal(r.height, 384);
	assert_true(r.seed == -1 && r.seed_was_random);
	assert_int_equal(r.subseed, 7);
	assert_true(r.send_images);
	assert_false(r.enable_hr);
	assert_int_equal(r.batch_size, 1);
	assert_int_equal(r.n_iter, 2); /* int(2.7), as pydantic v1 */
	assert_string_equal(r.prompt, "42");
	assert_true(json_is_false(json_object_get(r.parameters, "restore_faces")));
	/* the string "-1" seed becomes a concrete seed once, in every view */
	a1111_fix_seeds(&r);
	assert_true(r.seed >= 0 && r.seed < 4294967294LL);
	json_t *body = a1111_request_body(&r);
	assert_true(json_is_integer(json_object_get(body, "seed")));
	assert_int_equal(json_integer_value(json_object_get(body, "seed")), r.seed);
	assert_int_equal(json_integer_value(json_object_get(body, "subseed")), 7);
	assert_int_equal(json_integer_value(json_object_get(body, "steps")), 20);
	assert_true(json_is_true(json_object_get(body, "send_images")));
	printf("# \"seed\": \"-1\" -> %lld; \"steps\": \"20\" -> %lld\n", r.seed,
	       (long long)json_integer_value(json_object_get(body, "steps")));
	json_decref(body);
	a1111_request_free(&r);
}

static void test_body_has_no_unknown_keys(void **state)
{
	(void)state;
	struct a1111_request r;
	ok("{\"prompt\": \"p\", \"auth\": \"user:password\", \"url\": \"http://x\", \"sdgate\": {\"gpus\": [\"a\"]},"
	   " \"override_settings\": {\"sd_model_checkpoint\": \"x\"}, \"steps\": 5}",
	   &r);
	json_t *body = a1111_request_body(&r);
	assert_null(json_object_get(body, "auth"));
	assert_null(json_object_get(body, "url"));
	assert_null(json_object_get(body, "sdgate"));
	assert_non_null(json_object_get(body, "override_settings"));
	/* the caller can still read its own extension keys from the parsed object */
	assert_non_null(json_object_get(r.body, "sdgate"));
	assert_string_equal(r.checkpoint, "x");
	json_decref(body);
	a1111_request_free(&r);
}

static void test_422_shapes(void **state)
{
	(void)state;
	static const char *const NOT_OBJECTS[] = {"[1, 2]", "\"a cat\"", "42", "null"};
	for (size_t i = 0; i < 4; i++)
		json_decref(expect_422(NOT_OBJECTS[i], NULL, "model_attributes_type"));
	json_decref(expect_422("{\"steps\": ", NULL, "json_invalid"));
	json_decref(expect_422("{\"prompt\": \"a\\u0000b\"}", NULL, "json_invalid")); /* jansson refuses NUL */
	json_decref(expect_422("{\"steps\": 1e300}", "steps", "int_from_float"));
	json_decref(expect_422("{\"cfg_scale\": 31}", "cfg_scale", "less_than_equal"));
	json_decref(expect_422("{\"height\": 4096}", "height", "less_than_equal"));
	json_decref(expect_422("{\"width\": 32}", "width", "greater_than_equal"));
	json_decref(expect_422("{\"batch_size\": 9}", "batch_size", "less_than_equal"));
	json_decref(expect_422("{\"n_iter\": 17}", "n_iter", "less_than_equal"));
	json_decref(expect_422("{\"steps\": \"abc\"}", "steps", "int_parsing"));
	json_decref(expect_422("{\"steps\": [1]}", "steps", "int_type"));
	json_decref(expect_422("{\"steps\": 0}", "steps", "greater_than_equal"));
	json_decref(expect_422("{\"steps\": 151}", "steps", "less_than_equal"));
	json_decref(expect_422("{\"cfg_scale\": \"x\"}", "cfg_scale", "float_parsing"));
	json_decref(expect_422("{\"cfg_scale\": \"inf\"}", "cfg_scale", "finite_number"));
	json_decref(expect_422("{\"width\": 500}", "width", "multiple_of"));
	json_decref(expect_422("{\"seed\": -2}", "seed", "greater_than_equal"));
	json_decref(expect_422("{\"seed\": \"-1.5\"}", "seed", "int_parsing"));
	json_decref(expect_422("{\"send_images\": \"maybe\"}", "send_images", "bool_type"));
	json_decref(expect_422("{\"prompt\": {}}", "prompt", "string_type"));
	json_decref(expect_422("{\"styles\": \"a\"}", "styles", "list_type"));
	json_decref(expect_422("{\"override_settings\": 3}", "override_settings", "dict_type"));
	json_decref(expect_422("{\"scheduler\": \"wobbly\"}", "scheduler", "scheduler_not_found"));
	json_decref(expect_422("{\"scheduler\": \"beta\"}", "scheduler", "scheduler_not_found")); /* not native */
	json_decref(expect_422("{\"batch_size\": 8, \"n_iter\": 16, \"width\": 2048, \"height\": 2048}", "batch_size",
			       "too_many_pixels"));
	char *big = malloc(A1111_MAX_PROMPT + 32);
	strcpy(big, "{\"prompt\": \"");
	memset(big + 12, 'a', A1111_MAX_PROMPT + 1);
	strcpy(big + 12 + A1111_MAX_PROMPT + 1, "\"}");
	json_decref(expect_422(big, "prompt", "string_too_long"));
	free(big);
	/* every problem at once, in one list */
	json_t *all = expect_422("{\"steps\": 0, \"width\": 7, \"cfg_scale\": \"x\", \"sampler_name\": \"Nope\"}",
				 "steps", "greater_than_equal");
	assert_int_equal(json_array_size(json_object_get(all, "detail")), 3);
	json_decref(all);
	printf("# 422 {\"detail\": [...]} lists every bad field at once\n");
}

static void test_404_sampler(void **state)
{
	(void)state;
	struct a1111_request r;
	int status;
	json_t *reply;
	assert_int_equal(parse_as(A1111_TXT2IMG, "{\"sampler_name\": \"UniPC\"}", &A1111_NATIVE, &r, &status, &reply),
			 A1111_REJECTED);
	assert_int_equal(status, 404);
	assert_string_equal(json_string_value(json_object_get(reply, "detail")), "Sampler not found");
	json_decref(reply);
	/* NULL runnable: every A1111 name */
	assert_int_equal(parse_as(A1111_TXT2IMG, "{\"sampler_name\": \"UniPC\", \"scheduler\": \"beta\"}", NULL, &r,
				  &status, &reply),
			 A1111_OK);
	assert_string_equal(A1111_SAMPLERS[r.sampler].name, "UniPC");
	a1111_request_free(&r);
	/* unchecked: a name A1111 does not know passes (a Forge behind judges it) */
	struct a1111_runnable any = {NULL, NULL, NULL, 1};
	assert_int_equal(parse_as(A1111_TXT2IMG, "{\"sampler_name\": \"Euler CFG++\"}", &any, &r, &status, &reply),
			 A1111_OK);
	assert_string_equal(A1111_SAMPLERS[r.sampler].name, "Euler");
	a1111_request_free(&r);
}

static int find_ckpt(const char *name) { return !strcmp(name, "base") ? 0 : !strcmp(name, "refiner") ? 1 : -1; }

static void test_checkpoints(void **state)
{
	(void)state;
	struct a1111_runnable run = {NULL, NULL, find_ckpt, 0};
	struct a1111_request r;
	int status;
	json_t *reply;
	const char *good = "{\"override_settings\": {\"sd_model_checkpoint\": \"base\"}, \"refiner_checkpoint\": "
			   "\"refiner\"}";
	assert_int_equal(parse_as(A1111_TXT2IMG, good, &run, &r, &status, &reply), A1111_OK);
	assert_int_equal(r.checkpoint_index, 0);
	assert_int_equal(r.refiner_index, 1);
	a1111_request_free(&r);
	const char *bad =
		"{\"override_settings\": {\"sd_model_checkpoint\": \"sd_xl\"}, \"refiner_checkpoint\": \"x\"}";
	assert_int_equal(parse_as(A1111_TXT2IMG, bad, &run, &r, &status, &reply), A1111_REJECTED);
	assert_int_equal(status, 422);
	json_t *d = json_object_get(reply, "detail");
	assert_int_equal(json_array_size(d), 2);
	assert_string_equal(json_string_value(json_object_get(json_array_get(d, 0), "type")), "checkpoint_not_found");
	json_decref(reply);
}

static void test_info(void **state)
{
	(void)state;
	struct a1111_request r;
	ok("{\"prompt\": \"p\", \"negative_prompt\": \"n\", \"seed\": 5, \"steps\": 3, \"sampler_name\": \"DPM++ 2M "
	   "Karras\", \"batch_size\": 2}",
	   &r);
	struct a1111_models m = {"base", "0123456789", NULL, NULL};
	char *text = a1111_infotext(&r, &m, 1);
	assert_non_null(strstr(text, "p\nNegative prompt: n\nSteps: 3, Sampler: DPM++ 2M, Schedule type: Karras"));
	assert_non_null(strstr(text, "Seed: 6,"));
	assert_non_null(strstr(text, "Model hash: 0123456789, Model: base"));
	free(text);
	json_t *info = a1111_info(&r, &m, 2, "20260101000000", json_pack("{s:i}", "attempt", 1));
	assert_int_equal(json_integer_value(json_array_get(json_object_get(info, "all_seeds"), 1)), 6);
	assert_int_equal(json_array_size(json_object_get(info, "infotexts")), 2);
	assert_string_equal(json_string_value(json_object_get(info, "scheduler")), "Karras");
	assert_non_null(json_object_get(info, "sdgate"));
	json_decref(info);
	a1111_request_free(&r);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_defaults),    cmocka_unit_test(test_sampler_index_and_combined),
		cmocka_unit_test(test_coercions),   cmocka_unit_test(test_body_has_no_unknown_keys),
		cmocka_unit_test(test_422_shapes),  cmocka_unit_test(test_404_sampler),
		cmocka_unit_test(test_checkpoints), cmocka_unit_test(test_info),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
