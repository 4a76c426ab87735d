/* Unit tests of common/json and common/error: typed reads and the
 * documented error shapes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "error.h"
#include "json.h"

static void test_typed_reads(void **state)
{
	(void)state;
	json_error_t err;
	const char *text = "{\"a\": 3, \"b\": 2.0, \"c\": 2.5, \"d\": \"x\", \"e\": null, \"f\": true}";
	json_t *o = json_parse_object(text, strlen(text), &err);
	assert_non_null(o);
	long long i;
	double d;
	const char *s;
	int b;
	assert_int_equal(json_get_int(o, "a", &i), JSON_GET_OK);
	assert_int_equal(i, 3);
	assert_int_equal(json_get_int(o, "b", &i), JSON_GET_OK); /* 2.0 is an int to pydantic */
	assert_int_equal(json_get_int(o, "c", &i), JSON_GET_WRONG_TYPE);
	assert_int_equal(json_get_int(o, "d", &i), JSON_GET_WRONG_TYPE);
	assert_int_equal(json_get_int(o, "e", &i), JSON_GET_ABSENT);
	assert_int_equal(json_get_int(o, "zz", &i), JSON_GET_ABSENT);
	assert_int_equal(json_get_number(o, "c", &d), JSON_GET_OK);
	assert_int_equal(json_get_string(o, "d", &s), JSON_GET_OK);
	assert_string_equal(s, "x");
	assert_int_equal(json_get_bool(o, "f", &b), JSON_GET_OK);
	assert_true(b);
	json_decref(o);
}

static void test_parse_rejects(void **state)
{
	(void)state;
	json_error_t err;
	assert_null(json_parse_object("[1,2]", 5, &err));
	assert_null(json_parse_object("{\"a\":1,\"a\":2}", 13, &err));
	assert_null(json_parse_object("{\"a\":", 5, &err));
	assert_null(json_parse_object("", 0, &err));
}

static void test_error_shapes(void **state)
{
	(void)state;
	json_t *e = sd_error_json(SDE_QUEUE_FULL, "queue is full", "gpus");
	assert_string_equal(json_string_value(json_object_get(e, "detail")), "queue is full");
	json_t *inner = json_object_get(e, "error");
	assert_string_equal(json_string_value(json_object_get(inner, "code")), "queue_full");
	assert_string_equal(json_string_value(json_object_get(inner, "field")), "gpus");
	assert_int_equal(sd_error_status(SDE_QUEUE_FULL), 429);
	assert_int_equal(sd_error_status(SDE_SAMPLER_NOT_FOUND), 404);
	assert_int_equal(sd_error_status(SDE_RESULT_GONE), 410);
	assert_string_equal(sd_error_code(SDE_RESULT_GONE), "result_gone");
	assert_int_equal(sd_error_status(SDE_NOT_READY), 409);
	assert_string_equal(sd_error_code(SDE_NOT_READY), "not_ready");
	json_decref(e);

	json_t *list = json_array();
	json_t *in = json_integer(500);
	sd_validation_add(list, "steps", "less_than_equal", "Input should be less than or equal to 150", in);
	json_t *item = json_array_get(list, 0);
	assert_string_equal(json_string_value(json_array_get(json_object_get(item, "loc"), 1)), "steps");
	assert_int_equal(json_integer_value(json_object_get(item, "input")), 500);
	json_decref(in);
	json_decref(list);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_typed_reads),
		cmocka_unit_test(test_parse_rejects),
		cmocka_unit_test(test_error_shapes),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
