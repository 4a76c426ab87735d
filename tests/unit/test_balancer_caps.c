/* Unit tests of balancer/caps.c: what a backend can run, read from A1111's
 * listings or a native backend's declaration (hostile input bounded), what
 * a job needs, the matching of the two, and the listings' unions. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "a1111.h"
#include "caps.h"

static json_t *load(const char *text)
{
	json_error_t e;
	json_t *j = json_loads(text, 0, &e);
	if (!j)
		fprintf(stderr, "bad test JSON: %s\n", e.text);
	assert_non_null(j);
	return j;
}

static void take(struct caps *c, int (*fn)(struct caps *, const json_t *), const char *text)
{
	json_t *j = load(text);
	assert_int_equal(fn(c, j), 0);
	json_decref(j);
}

static void take_list(struct caps *c, enum caps_list l, const char *text)
{
	json_t *j = load(text);
	assert_int_equal(caps_take_list(c, l, j), 0);
	json_decref(j);
}

/* A plain A1111 1.10 with the SDXL base and refiner, as its listings say. */
static void plain_a1111(struct caps *c)
{
	caps_init(c);
	json_t *all = a1111_samplers_json(NULL), *sched = a1111_schedulers_json(NULL);
	assert_int_equal(caps_take_samplers(c, all), 0);
	assert_int_equal(caps_take_schedulers(c, sched), 0);
	json_decref(all);
	json_decref(sched);
	take_list(c, CAPS_SD_MODELS,
		  "[{\"title\": \"sd_xl_base_1.0.safetensors [31e35c80fc]\", \"model_name\": \"sd_xl_base_1.0\","
		  " \"hash\": \"31e35c80fc\", \"sha256\": "
		  "\"31e35c80fc4829d14f90153f4c74cd59c90b779f6afe05a74cd6120b893f7e5b\","
		  " \"filename\": \"/m/sd_xl_base_1.0.safetensors\", \"config\": null},"
		  " {\"title\": \"sd_xl_refiner_1.0.safetensors [7440042bbd]\", \"model_name\": \"sd_xl_refiner_1.0\","
		  " \"hash\": \"7440042bbd\", \"sha256\": null, \"filename\": \"/m/sd_xl_refiner_1.0.safetensors\","
		  " \"config\": null}]");
	take_list(c, CAPS_UPSCALERS, "[{\"name\": \"None\"}, {\"name\": \"R-ESRGAN 4x+\", \"scale\": 4}]");
	take_list(c, CAPS_LATENT_UPSCALE_MODES, "[{\"name\": \"Latent\"}, {\"name\": \"Latent (bicubic)\"}]");
	take_list(c, CAPS_SD_VAE, "[{\"model_name\": \"sdxl_vae.safetensors\", \"filename\": \"/m/v\"}]");
}

/* A native backend's /sdgate/v1/info "capabilities". */
static void native(struct caps *c)
{
	caps_init(c);
	take(c, caps_take_declared,
	     "{\"samplers\": [\"Euler\", \"Euler a\", \"DPM++ 2M\"], \"schedulers\": [\"automatic\", \"karras\"],"
	     " \"sd-models\": [{\"title\": \"tiny.safetensors [0123456789]\", \"model_name\": \"tiny\","
	     " \"hash\": \"0123456789\"}], \"refiners\": [], \"max_size\": 1024, \"max_steps\": 100,"
	     " \"features\": {\"img2img\": false, \"hires_fix\": false}}");
}

static json_t *request(const char *text) { return load(text); }

static const char *cannot(const struct caps *c, const char *req)
{
	json_t *r = request(req);
	struct caps_need n;
	caps_need_of(r, 0, &n);
	const char *f = caps_cannot(c, &n);
	json_decref(r);
	return f;
}

static void test_plain_a1111_runs_what_it_lists(void **state)
{
	(void)state;
	struct caps c;
	plain_a1111(&c);
	assert_int_equal(c.known, 3);
	assert_null(cannot(&c, "{\"sampler_name\": \"UniPC\", \"scheduler\": \"beta\"}"));
	assert_null(cannot(&c, "{\"sampler_name\": \"DPM++ 2M\", \"width\": 2048, \"height\": 1024}"));
	assert_null(cannot(&c, "{\"refiner_checkpoint\": \"sd_xl_refiner_1.0.safetensors [7440042bbd]\"}"));
	assert_null(cannot(&c, "{\"enable_hr\": true, \"hr_upscaler\": \"Latent (bicubic)\", \"width\": 512}"));
	assert_null(cannot(&c, "{\"enable_hr\": true, \"hr_upscaler\": \"R-ESRGAN 4x+\", \"hr_sampler_name\": "
			       "\"UniPC\"}"));
	assert_null(cannot(&c, "{\"override_settings\": {\"sd_vae\": \"sdxl_vae.safetensors\"}}"));
	assert_null(cannot(&c, "{\"override_settings\": {\"sd_vae\": \"Automatic\"}}"));
	assert_string_equal(cannot(&c, "{\"enable_hr\": true, \"hr_upscaler\": \"4x-UltraSharp\"}"), "hr_upscaler");
	assert_string_equal(cannot(&c, "{\"override_settings\": {\"sd_vae\": \"other.pt\"}}"),
			    "override_settings.sd_vae");
	assert_string_equal(cannot(&c, "{\"enable_hr\": true, \"hr_sampler_name\": \"Bogus\"}"), "hr_sampler_name");
	/* hires fix to 2 x 1536 = 3072: past sdgate's largest side */
	assert_string_equal(cannot(&c, "{\"enable_hr\": true, \"width\": 1536, \"height\": 512}"), "width");
	/* A1111's other names of a checkpoint */
	assert_true(caps_has_checkpoint(&c, "7440042bbd"));
	assert_true(caps_has_checkpoint(&c, "sd_xl_base_1.0.safetensors"));
	assert_true(caps_has_checkpoint(&c, "31e35c80fc4829d14f90153f4c74cd59c90b779f6afe05a74cd6120b893f7e5b"));
	assert_false(caps_has_checkpoint(&c, "sd_xl_turbo"));
	caps_free(&c);
}

static void test_native_runs_what_it_declares(void **state)
{
	(void)state;
	struct caps c;
	native(&c);
	assert_true(c.declared);
	assert_null(cannot(&c, "{\"sampler_name\": \"DPM++ 2M Karras\", \"width\": 1024, \"steps\": 100}"));
	assert_null(cannot(&c, "{\"sampler_index\": \"Euler a\"}"));
	assert_null(cannot(&c, "{}")); /* Euler, automatic, 512, 50 steps */
	assert_string_equal(cannot(&c, "{\"sampler_name\": \"UniPC\"}"), "sampler_name");
	assert_string_equal(cannot(&c, "{\"scheduler\": \"exponential\"}"), "scheduler");
	assert_string_equal(cannot(&c, "{\"width\": 1032}"), "width");
	assert_string_equal(cannot(&c, "{\"height\": 2048}"), "width");
	assert_string_equal(cannot(&c, "{\"steps\": 101}"), "steps");
	assert_string_equal(cannot(&c, "{\"enable_hr\": true, \"width\": 256, \"height\": 256}"), "enable_hr");
	assert_string_equal(cannot(&c, "{\"refiner_checkpoint\": \"tiny\"}"), "refiner_checkpoint");
	struct caps_need n;
	json_t *r = request("{}");
	caps_need_of(r, 1, &n);
	assert_string_equal(caps_cannot(&c, &n), "init_images");
	json_decref(r);
	/* The operator's word wins: a --backend fragment's max_size. */
	json_t *fixed = load("{\"max_size\": \"768\", \"max_steps\": 20}");
	caps_apply_fixed(&c, fixed);
	json_decref(fixed);
	assert_int_equal(c.max_size, 768);
	assert_int_equal(c.max_steps, 20);
	assert_string_equal(cannot(&c, "{\"width\": 1024}"), "width");
	assert_string_equal(cannot(&c, "{\"steps\": 21}"), "steps");
	caps_free(&c);
}

static void test_unknown_runs_anything(void **state)
{
	(void)state;
	struct caps c;
	caps_init(&c);
	assert_null(cannot(&c, "{\"sampler_name\": \"UniPC\", \"width\": 2048, \"enable_hr\": true}"));
	caps_free(&c);
}

static void test_hostile_listings_bounded(void **state)
{
	(void)state;
	struct caps c;
	caps_init(&c);
	/* wrong shapes: refused, the last good one stays */
	take_list(&c, CAPS_LORAS, "[{\"name\": \"a\", \"alias\": \"a\", \"path\": \"/p\", \"metadata\": {\"x\": 1}}]");
	json_t *bad = load("{\"name\": \"x\"}");
	assert_int_equal(caps_take_list(&c, CAPS_LORAS, bad), -1);
	assert_int_equal(caps_take_samplers(&c, bad), -1);
	json_decref(bad);
	assert_int_equal(json_array_size(c.lists[CAPS_LORAS]), 1);
	/* metadata emptied, unknown keys dropped */
	json_t *lora = json_array_get(c.lists[CAPS_LORAS], 0);
	assert_int_equal(json_object_size(json_object_get(lora, "metadata")), 0);
	assert_int_equal(json_object_size(lora), 4);

	/* 5000 entries, long names, duplicates, non-objects, NUL in a name */
	json_t *many = json_array();
	for (int i = 0; i < 5000; i++)
		json_array_append_new(many, json_pack("{s:o,s:i}", "name", json_sprintf("u%d", i), "scale", i));
	char longname[A1111_MAX_NAME + 2];
	memset(longname, 'x', sizeof longname - 1);
	longname[sizeof longname - 1] = '\0';
	json_array_insert_new(many, 0, json_pack("{s:s}", "name", longname));
	json_array_insert_new(many, 0, json_pack("{s:s}", "name", "u1"));
	json_array_insert_new(many, 0, json_string("just a string"));
	json_array_insert_new(many, 0, json_pack("{s:s#}", "name", "a\0b", (size_t)3));
	json_array_insert_new(many, 0, json_pack("{s:i}", "name", 7));
	assert_int_equal(caps_take_list(&c, CAPS_UPSCALERS, many), 0);
	json_decref(many);
	assert_int_equal(json_array_size(c.lists[CAPS_UPSCALERS]), CAPS_MAX_ITEMS);
	assert_string_equal(json_string_value(json_object_get(json_array_get(c.lists[CAPS_UPSCALERS], 0), "name")),
			    "u1");
	assert_string_equal(json_string_value(json_object_get(json_array_get(c.lists[CAPS_UPSCALERS], 1), "name")),
			    "u0");

	/* a long path is kept as null; samplers A1111 does not know are ignored */
	json_t *vae = json_array();
	char *path = malloc(CAPS_MAX_TEXT + 2);
	memset(path, '/', CAPS_MAX_TEXT + 1);
	path[CAPS_MAX_TEXT + 1] = '\0';
	json_array_append_new(vae, json_pack("{s:s,s:s}", "model_name", "v", "filename", path));
	free(path);
	assert_int_equal(caps_take_list(&c, CAPS_SD_VAE, vae), 0);
	json_decref(vae);
	assert_true(json_is_null(json_object_get(json_array_get(c.lists[CAPS_SD_VAE], 0), "filename")));
	take(&c, caps_take_samplers, "[{\"name\": \"Euler\"}, \"k_dpmpp_2m\", {\"name\": \"Forge Special\"}, 3, null]");
	assert_int_equal(c.samplers,
			 (1u << a1111_sampler_find("Euler", 5)) | (1u << a1111_sampler_find("DPM++ 2M", 8)));
	take(&c, caps_take_schedulers, "[]");
	assert_int_equal(c.schedulers, 1u); /* automatic is always there */

	/* a declaration of the wrong shape changes nothing */
	bad = load("[1]");
	assert_int_equal(caps_take_declared(&c, bad), -1);
	json_decref(bad);
	assert_false(c.declared);
	bad = load("{\"samplers\": 5}");
	assert_int_equal(caps_take_declared(&c, bad), -1);
	json_decref(bad);
	assert_int_equal(c.known, 3);
	/* limits out of range are ignored */
	bad = load("{\"max_size\": 999999, \"max_steps\": \"-3\"}");
	caps_apply_fixed(&c, bad);
	json_decref(bad);
	assert_int_equal(c.max_size, A1111_MAX_SIZE);
	assert_int_equal(c.max_steps, A1111_MAX_STEPS);

	/* embeddings and scripts: objects */
	take_list(&c, CAPS_EMBEDDINGS,
		  "{\"loaded\": {\"easyneg\": {\"step\": 1, \"shape\": 768, \"x\": [1]}},"
		  " \"skipped\": {\"\": {}, \"bad\": 3}}");
	assert_int_equal(json_object_size(json_object_get(c.lists[CAPS_EMBEDDINGS], "loaded")), 1);
	assert_int_equal(json_object_size(json_object_get(c.lists[CAPS_EMBEDDINGS], "skipped")), 0);
	take_list(&c, CAPS_SCRIPTS, "{\"txt2img\": [\"x/y/z plot\", 5, \"x/y/z plot\"], \"img2img\": \"no\"}");
	assert_int_equal(json_array_size(json_object_get(c.lists[CAPS_SCRIPTS], "txt2img")), 1);
	assert_int_equal(json_array_size(json_object_get(c.lists[CAPS_SCRIPTS], "img2img")), 0);
	caps_free(&c);
}

static void test_union(void **state)
{
	(void)state;
	struct caps a, b;
	plain_a1111(&a);
	native(&b);
	const struct caps *both[] = {&b, &a};
	json_t *models = caps_union(both, 2, CAPS_SD_MODELS);
	assert_int_equal(json_array_size(models), 3);
	assert_string_equal(json_string_value(json_object_get(json_array_get(models, 0), "title")),
			    "tiny.safetensors [0123456789]");
	json_decref(models);
	json_t *up = caps_union(both, 2, CAPS_UPSCALERS);
	assert_int_equal(json_array_size(up), 2);
	json_decref(up);
	json_t *scripts = caps_union(both, 2, CAPS_SCRIPTS); /* neither listed any: A1111's empty shape */
	assert_true(json_is_array(json_object_get(scripts, "txt2img")));
	json_decref(scripts);
	const struct caps *one[] = {&b};
	up = caps_union(one, 1, CAPS_UPSCALERS);
	assert_int_equal(json_array_size(up), 0);
	json_decref(up);

	const char *names[A1111_SAMPLER_COUNT + 1];
	caps_sampler_names(b.samplers, names);
	assert_string_equal(names[0], "DPM++ 2M");
	assert_string_equal(names[1], "Euler a");
	assert_string_equal(names[2], "Euler");
	assert_null(names[3]);
	caps_free(&a);
	caps_free(&b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_plain_a1111_runs_what_it_lists),
		cmocka_unit_test(test_native_runs_what_it_declares),
		cmocka_unit_test(test_unknown_runs_anything),
		cmocka_unit_test(test_hostile_listings_bounded),
		cmocka_unit_test(test_union),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
