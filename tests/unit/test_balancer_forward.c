/* Unit tests of balancer/forward.c: what a provider is sent is rebuilt from
 * the client's request. Generation fields go through; settings only from the
 * allow-list (restored afterwards); never save_images, unknown keys or a
 * client's credentials; scripts only to a backend that allows them. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "forward.h"

/* A request as hostile as the probe's: everything A1111 would act on. */
static const char *HOSTILE =
	"{\"prompt\": \"a red fox\", \"negative_prompt\": \"blur\", \"seed\": 42, \"subseed\": 7, \"steps\": 20,"
	" \"cfg_scale\": 7.5, \"width\": 512, \"height\": 768, \"sampler_name\": \"DPM++ 2M\", \"scheduler\": "
	"\"Karras\", \"batch_size\": 2, \"n_iter\": 1, \"styles\": [\"cinematic\"], \"refiner_checkpoint\": "
	"\"refiner.safetensors\", \"refiner_switch_at\": 0.8, \"enable_hr\": false,"
	" \"override_settings\": {\"sd_model_checkpoint\": \"sdxl.safetensors\", \"sd_vae\": \"Automatic\","
	" \"CLIP_stop_at_last_layers\": 2, \"outdir_samples\": \"/etc\", \"samples_filename_pattern\": \"../x\","
	" \"save_to_dirs\": true},"
	" \"override_settings_restore_afterwards\": false, \"save_images\": true, \"send_images\": false,"
	" \"do_not_save_samples\": false, \"do_not_save_grid\": false,"
	" \"script_name\": \"x/y/z plot\", \"script_args\": [1, \"a\"], \"alwayson_scripts\": {\"controlnet\": "
	"{\"args\": [{\"model\": \"m\"}]}},"
	" \"auth\": \"alice:secret\", \"url\": \"http://127.0.0.1:7860\", \"api_key\": \"k\", \"force_task_id\": "
	"\"task(1)\", \"infotext\": \"Steps: 99\", \"comments\": {\"a\": 1}, \"firstpass_image\": \"AAAA\", "
	"\"unknown_extension_field\": {\"x\": 1}}";

static json_t *load(const char *text)
{
	json_error_t e;
	json_t *j = json_loads(text, 0, &e);
	assert_non_null(j);
	return j;
}

static void test_generation_fields_kept(void **state)
{
	(void)state;
	json_t *in = load(HOSTILE);
	json_t *out = forward_request(in, 0);
	assert_non_null(out);
	const char *same[] = {"prompt",           "negative_prompt", "seed",   "subseed",      "steps",
			      "cfg_scale",        "width",           "height", "sampler_name", "scheduler",
			      "batch_size",       "n_iter",          "styles", "enable_hr",    "refiner_checkpoint",
			      "refiner_switch_at"};
	for (size_t i = 0; i < sizeof same / sizeof same[0]; i++) {
		printf("kept %s\n", same[i]);
		assert_true(json_equal(json_object_get(out, same[i]), json_object_get(in, same[i])));
	}
	json_decref(out);
	json_decref(in);
}

static void test_nothing_else(void **state)
{
	(void)state;
	json_t *in = load(HOSTILE);
	json_t *copy = json_deep_copy(in);
	json_t *out = forward_request(in, 0);
	const char *gone[] = {"auth",
			      "url",
			      "api_key",
			      "force_task_id",
			      "infotext",
			      "comments",
			      "firstpass_image",
			      "unknown_extension_field",
			      "do_not_save_samples",
			      "do_not_save_grid",
			      "script_name",
			      "script_args",
			      "alwayson_scripts"};
	for (size_t i = 0; i < sizeof gone / sizeof gone[0]; i++) {
		printf("dropped %s\n", gone[i]);
		assert_null(json_object_get(out, gone[i]));
	}
	json_t *ov = json_object_get(out, "override_settings");
	assert_int_equal(json_object_size(ov), 3);
	assert_string_equal(json_string_value(json_object_get(ov, "sd_model_checkpoint")), "sdxl.safetensors");
	assert_string_equal(json_string_value(json_object_get(ov, "sd_vae")), "Automatic");
	assert_int_equal(json_integer_value(json_object_get(ov, "CLIP_stop_at_last_layers")), 2);
	assert_true(json_is_true(json_object_get(out, "override_settings_restore_afterwards")));
	assert_true(json_is_false(json_object_get(out, "save_images")));
	assert_true(json_is_true(json_object_get(out, "send_images")));
	/* Every key of the rebuild is accounted for above. */
	assert_int_equal(json_object_size(out), 16 + 4);
	assert_true(json_equal(in, copy)); /* the job keeps what the client sent */
	json_decref(copy);
	json_decref(out);
	json_decref(in);
}

/* A checkpoint asked for alone stays loaded (no reload after every job);
 * with any other setting, everything is restored. */
static void test_checkpoint_alone_stays_loaded(void **state)
{
	(void)state;
	json_t *in = load("{\"prompt\": \"x\", \"override_settings\": {\"sd_model_checkpoint\": \"a.safetensors\","
			  " \"outdir_samples\": \"/tmp\"}, \"override_settings_restore_afterwards\": true}");
	json_t *out = forward_request(in, 0);
	assert_int_equal(json_object_size(json_object_get(out, "override_settings")), 1);
	assert_true(json_is_false(json_object_get(out, "override_settings_restore_afterwards")));
	json_decref(out);
	json_decref(in);
	in = load("{\"prompt\": \"x\", \"override_settings\": {\"sd_vae\": \"Automatic\"}}");
	out = forward_request(in, 0);
	assert_true(json_is_true(json_object_get(out, "override_settings_restore_afterwards")));
	json_decref(out);
	json_decref(in);
	in = load("{\"prompt\": \"x\"}");
	out = forward_request(in, 0);
	assert_true(json_is_true(json_object_get(out, "override_settings_restore_afterwards")));
	json_decref(out);
	json_decref(in);
}

static void test_scripts_only_where_allowed(void **state)
{
	(void)state;
	json_t *in = load(HOSTILE);
	json_t *out = forward_request(in, 1);
	assert_string_equal(json_string_value(json_object_get(out, "script_name")), "x/y/z plot");
	assert_true(json_equal(json_object_get(out, "script_args"), json_object_get(in, "script_args")));
	assert_true(json_equal(json_object_get(out, "alwayson_scripts"), json_object_get(in, "alwayson_scripts")));
	/* Still no credentials, settings or saving, even there. */
	assert_null(json_object_get(out, "auth"));
	assert_null(json_object_get(out, "url"));
	assert_null(json_object_get(json_object_get(out, "override_settings"), "outdir_samples"));
	assert_true(json_is_false(json_object_get(out, "save_images")));
	json_decref(out);
	json_decref(in);
}

static void test_wrong_shapes_dropped(void **state)
{
	(void)state;
	json_t *in = load("{\"prompt\": {\"nested\": 1}, \"negative_prompt\": [\"x\"], \"hr_upscaler\": {\"a\": 1},"
			  " \"styles\": [1, 2], \"override_settings\": {\"sd_vae\": {\"path\": \"/\"}},"
			  " \"script_name\": [\"x\"], \"script_args\": {\"a\": 1}, \"alwayson_scripts\": [1],"
			  " \"steps\": \"20\", \"seed\": null}");
	json_t *out = forward_request(in, 1);
	assert_null(json_object_get(out, "prompt"));
	assert_null(json_object_get(out, "negative_prompt"));
	assert_null(json_object_get(out, "hr_upscaler"));
	assert_null(json_object_get(out, "styles"));
	assert_null(json_object_get(out, "override_settings"));
	assert_null(json_object_get(out, "script_name"));
	assert_null(json_object_get(out, "script_args"));
	assert_null(json_object_get(out, "alwayson_scripts"));
	/* A1111's lax forms of plain values stay: the backend judges them. */
	assert_string_equal(json_string_value(json_object_get(out, "steps")), "20");
	assert_true(json_is_null(json_object_get(out, "seed")));
	json_decref(out);
	json_decref(in);
}

static void test_long_strings_dropped(void **state)
{
	(void)state;
	size_t n = FORWARD_MAX_STRING + 1;
	char *big = malloc(n + 1);
	memset(big, 'a', n);
	big[n] = '\0';
	json_t *in = json_pack("{s:s,s:s#}", "hr_prompt", big, "prompt", big, (int)FORWARD_MAX_STRING);
	json_t *out = forward_request(in, 0);
	assert_null(json_object_get(out, "hr_prompt"));
	assert_int_equal(json_string_length(json_object_get(out, "prompt")), FORWARD_MAX_STRING);
	json_decref(out);
	json_decref(in);
	free(big);
}

/* intake.c keeps forward_request(request, 1); dispatch.c rebuilds that. */
static void test_rebuild_of_rebuild(void **state)
{
	(void)state;
	json_t *in = load(HOSTILE);
	json_t *kept = forward_request(in, 1);
	for (int allow = 0; allow <= 1; allow++) {
		json_t *once = forward_request(in, allow), *twice = forward_request(kept, allow);
		assert_true(json_equal(once, twice));
		json_decref(once);
		json_decref(twice);
	}
	json_decref(kept);
	json_decref(in);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_generation_fields_kept),
		cmocka_unit_test(test_nothing_else),
		cmocka_unit_test(test_scripts_only_where_allowed),
		cmocka_unit_test(test_wrong_shapes_dropped),
		cmocka_unit_test(test_checkpoint_alone_stays_loaded),
		cmocka_unit_test(test_long_strings_dropped),
		cmocka_unit_test(test_rebuild_of_rebuild),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
