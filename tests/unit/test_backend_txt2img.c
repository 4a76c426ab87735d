/* Unit tests of backend/txt2img, the engine's adapter over a1111/: A1111's
 * defaults and lax types reaching engine parameters, the engine's names and
 * checkpoints, upstream mode's unchecked names, info with the engine's
 * checkpoint names. The request model's own rules: test_a1111_*.c. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "txt2img.h"

static int parse(const char *body, struct txt2img *t, int *status, json_t **reply)
{
	*reply = NULL;
	return txt2img_parse(body, strlen(body), -1, TXT2IMG_CHECK_ALL, t, status, reply);
}

static void test_defaults(void **state)
{
	(void)state;
	struct txt2img t;
	int status;
	json_t *reply;
	assert_int_equal(parse("{\"prompt\": \"a cat\"}", &t, &status, &reply), TXT2IMG_OK);
	assert_string_equal(t.ep.prompt, "a cat");
	assert_string_equal(t.ep.negative_prompt, "");
	assert_int_equal(t.ep.steps, 50);
	assert_int_equal(t.ep.width, 512);
	assert_int_equal(t.ep.height, 512);
	assert_int_equal(t.ep.batch_size, 1);
	assert_int_equal(t.ep.n_iter, 1);
	assert_true(t.ep.cfg_scale == 7.0f);
	assert_int_equal(t.ep.sampler, ENGINE_SAMPLER_EULER);
	assert_true(t.seed_was_random);
	assert_true(t.send_images);
	/* parameters echoes the request over A1111's defaults */
	assert_string_equal(json_string_value(json_object_get(t.parameters, "prompt")), "a cat");
	assert_int_equal(json_integer_value(json_object_get(t.parameters, "steps")), 50);
	assert_string_equal(json_string_value(json_object_get(t.parameters, "sampler_index")), "Euler");
	txt2img_fix_seeds(&t);
	assert_true(t.ep.seed < 4294967294u);
	txt2img_free(&t);
}

static void test_akash_request(void **state)
{
	(void)state;
	const struct engine_model_info *refiner = NULL;
	for (int i = 0; i < engine_model_count(); i++)
		if (engine_model_get(i)->is_refiner)
			refiner = engine_model_get(i);
	assert_non_null(refiner);
	char body[1024];
	snprintf(body, sizeof body,
		 "{\"prompt\": \"futuristic city with neon lights, rainy streets, bright colors, detailed\","
		 " \"negative_prompt\": \"blurry\", \"batch_size\": 1, \"steps\": 20, \"cfg_scale\": 7,"
		 " \"sampler_name\": \"DPM++ 2M Karras\", \"width\": 1024, \"height\": 1024,"
		 " \"refiner_checkpoint\": \"%s\", \"refiner_switch_at\": 0.8, \"unknown_field\": [1,2]}",
		 refiner->title);
	struct txt2img t;
	int status;
	json_t *reply;
	assert_int_equal(parse(body, &t, &status, &reply), TXT2IMG_OK);
	assert_int_equal(t.ep.sampler, ENGINE_SAMPLER_DPMPP_2M);
	assert_int_equal(t.ep.schedule, ENGINE_SCHEDULE_KARRAS);
	assert_int_equal(t.ep.steps, 20);
	assert_int_equal(t.ep.width, 1024);
	assert_true(t.ep.refiner_model >= 0);
	assert_true(t.ep.refiner_switch_at > 0.79f && t.ep.refiner_switch_at < 0.81f);
	assert_null(json_object_get(t.parameters, "unknown_field"));
	t.a.seed = 42; /* as txt2img_fix_seeds would */
	json_t *info = txt2img_info(&t, 1, "20261122000000", json_pack("{s:s}", "provider", "p"));
	assert_int_equal(json_integer_value(json_object_get(info, "seed")), 42);
	assert_string_equal(json_string_value(json_object_get(info, "sampler_name")), "DPM++ 2M");
	const char *it = json_string_value(json_array_get(json_object_get(info, "infotexts"), 0));
	assert_non_null(strstr(it, "Negative prompt: blurry"));
	assert_non_null(strstr(it, "Seed: 42"));
	assert_non_null(strstr(it, "Schedule type: Karras"));
	assert_string_equal(json_string_value(json_object_get(json_object_get(info, "sdgate"), "provider")), "p");
	json_decref(info);
	txt2img_free(&t);
}

static void test_lax_types(void **state)
{
	(void)state;
	struct txt2img t;
	int status;
	json_t *reply;
	assert_int_equal(parse("{\"steps\": \"30\", \"cfg_scale\": \"5.5\", \"width\": 256.0, \"seed\": 7,"
			       " \"send_images\": false, \"sampler_name\": \"DPM++ 2M\", \"scheduler\": \"karras\"}",
			       &t, &status, &reply),
			 TXT2IMG_OK);
	assert_int_equal(t.ep.steps, 30);
	assert_true(t.ep.cfg_scale == 5.5f);
	assert_int_equal(t.ep.width, 256);
	assert_int_equal(t.ep.seed, 7);
	assert_false(t.seed_was_random);
	assert_false(t.send_images);
	assert_int_equal(t.ep.schedule, ENGINE_SCHEDULE_KARRAS);
	txt2img_free(&t);
	/* pydantic v1, as A1111 1.10: 12.5 steps are int(12.5) = 12, a number is a string prompt */
	assert_int_equal(parse("{\"steps\": 12.5, \"prompt\": 5}", &t, &status, &reply), TXT2IMG_OK);
	assert_int_equal(t.ep.steps, 12);
	assert_string_equal(t.ep.prompt, "5");
	txt2img_free(&t);
}

/* What the adapter adds to the library's checks (tests/unit/test_a1111_*.c
 * hold the rest): checkpoints resolved against the engine's, all at once. */
static void test_checkpoint_rejections(void **state)
{
	(void)state;
	struct txt2img t;
	int status;
	json_t *reply;
	const char *body = "{\"refiner_checkpoint\": \"sd_xl_refiner_1.0\", \"override_settings\": "
			   "{\"sd_model_checkpoint\": \"nope\"}, \"steps\": 0}";
	assert_int_equal(parse(body, &t, &status, &reply), TXT2IMG_REJECTED);
	assert_int_equal(status, 422);
	json_t *d = json_object_get(reply, "detail");
	assert_int_equal(json_array_size(d), 3);
	static const char *const FIELDS[] = {"steps", "override_settings.sd_model_checkpoint", "refiner_checkpoint"};
	for (size_t i = 0; i < 3; i++) {
		json_t *item = json_array_get(d, i);
		assert_string_equal(json_string_value(json_array_get(json_object_get(item, "loc"), 1)), FIELDS[i]);
		if (i > 0)
			assert_string_equal(json_string_value(json_object_get(item, "type")), "checkpoint_not_found");
	}
	json_decref(reply);
}

static void test_unknown_sampler_is_404(void **state)
{
	(void)state;
	struct txt2img t;
	int status;
	json_t *reply;
	assert_int_equal(parse("{\"sampler_name\": \"Wobbly 3000\"}", &t, &status, &reply), TXT2IMG_REJECTED);
	assert_int_equal(status, 404);
	assert_string_equal(json_string_value(json_object_get(reply, "detail")), "Sampler not found");
	json_decref(reply);
	/* upstream mode leaves names to the upstream server */
	const char *body = "{\"sampler_name\": \"Wobbly 3000\", \"refiner_checkpoint\": \"real.safetensors\"}";
	assert_int_equal(txt2img_parse(body, strlen(body), -1, 0, &t, &status, &reply), TXT2IMG_OK);
	txt2img_free(&t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_akash_request),
		cmocka_unit_test(test_lax_types),
		cmocka_unit_test(test_checkpoint_rejections),
		cmocka_unit_test(test_unknown_sampler_is_404),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
