/* Unit tests of backend/identity: CUDA device names to GPU classes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <string.h>

#include "identity.h"

static void expect_class(const char *name, const char *cls)
{
	char out[32];
	identity_gpu_class(name, out, sizeof out);
	assert_string_equal(out, cls);
}

static void test_gpu_classes(void **state)
{
	(void)state;
	expect_class("NVIDIA H100 80GB HBM3", "h100");
	expect_class("NVIDIA H100 PCIe", "h100");
	expect_class("NVIDIA A100-SXM4-80GB", "a100");
	expect_class("NVIDIA A100 80GB PCIe", "a100");
	expect_class("NVIDIA L40S", "l40s");
	expect_class("NVIDIA L40", "l40");
	expect_class("NVIDIA L4", "l4");
	expect_class("NVIDIA GeForce RTX 3090", "rtx3090");
	expect_class("NVIDIA GeForce RTX 4090", "rtx4090");
	expect_class("NVIDIA RTX A6000", "a6000");
	expect_class("Tesla V100-SXM2-16GB", "v100");
	expect_class("Quadro RTX 8000", "rtx8000");
	expect_class("Tesla T4", "t4");
	expect_class("cpu", "cpu");
	expect_class("", "cpu");
	expect_class(NULL, "cpu");
	expect_class("NVIDIA Foo-Bar 9", "foobar9");
}

static void test_simulated(void **state)
{
	(void)state;
	struct identity id = {.provider = "p", .location = "l", .lat = NAN, .lon = NAN};
	strcpy(id.gpu, "cpu");
	strcpy(id.gpu_class, "a100");
	id.gpu_class_overridden = 1;
	assert_true(identity_is_simulated(&id));
	strcpy(id.gpu, "NVIDIA A100-SXM4-80GB");
	assert_false(identity_is_simulated(&id));
	id.pace_ms_per_step = 10;
	assert_true(identity_is_simulated(&id));
	json_t *j = identity_json(&id);
	assert_true(json_is_true(json_object_get(j, "simulated")));
	assert_null(json_object_get(j, "lat"));
	json_decref(j);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_gpu_classes),
		cmocka_unit_test(test_simulated),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
