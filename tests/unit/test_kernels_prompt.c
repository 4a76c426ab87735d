/* test_kernels_prompt.c — A1111 attention syntax and the word classes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "prompt.h"

#include <math.h>
#include <string.h>

static float weight_of(const struct prompt *p, const char *word)
{
	for (int i = 0; i < p->count; i++)
		if (strcmp(p->words[i].text, word) == 0)
			return p->words[i].weight;
	return -1.0f;
}

#define assert_weight(p, w, expect) assert_true(fabsf(weight_of(p, w) - (float)(expect)) < 1e-4f)

static void test_plain_and_case(void **state)
{
	struct prompt p;
	assert_int_equal(prompt_parse("A Red  circle, on grass", &p), 5);
	assert_string_equal(p.words[0].text, "a");
	assert_string_equal(p.words[1].text, "red");
	assert_weight(&p, "circle", 1.0);
	assert_int_equal(prompt_parse("", &p), 0);
	assert_int_equal(prompt_parse(NULL, &p), 0);
}

static void test_weights(void **state)
{
	struct prompt p;
	prompt_parse("(red:1.3) (blue) ((green)) [gray] [[black]] plain", &p);
	assert_weight(&p, "red", 1.3);
	assert_weight(&p, "blue", 1.1);
	assert_weight(&p, "green", 1.21);
	assert_weight(&p, "gray", 1 / 1.1);
	assert_weight(&p, "black", 1 / 1.21);
	assert_weight(&p, "plain", 1.0);
	prompt_parse("((sky:1.5) sea)", &p); /* nested: 1.5 * 1.1 */
	assert_weight(&p, "sky", 1.65);
	assert_weight(&p, "sea", 1.1);
	prompt_parse("(a b:0.5) c", &p);
	assert_weight(&p, "a", 0.5);
	assert_weight(&p, "b", 0.5);
	assert_weight(&p, "c", 1.0);
	prompt_parse("( star : 2 )", &p); /* spaces around the number */
	assert_weight(&p, "star", 2.0);
}

static void test_escapes_and_unbalanced(void **state)
{
	struct prompt p;
	prompt_parse("\\(moon\\) sun", &p); /* escaped: plain words */
	assert_weight(&p, "moon", 1.0);
	assert_weight(&p, "sun", 1.0);
	prompt_parse("(open forever", &p); /* unclosed: x1.1 to the end */
	assert_weight(&p, "open", 1.1);
	assert_weight(&p, "forever", 1.1);
	prompt_parse("[half", &p);
	assert_weight(&p, "half", 1 / 1.1);
	prompt_parse("closed) ] too", &p); /* stray closers are text */
	assert_weight(&p, "closed", 1.0);
	assert_weight(&p, "too", 1.0);
	prompt_parse("(x:abc)", &p); /* not a weight: ':' is text, ')' closes */
	assert_weight(&p, "x", 1.1);
	assert_weight(&p, "abc", 1.1);
	prompt_parse("red BREAK blue", &p);
	assert_int_equal(p.count, 2);
	/* Deep nesting and long words stay in bounds. */
	char deep[3000];
	memset(deep, '(', 1500);
	memset(deep + 1500, 'w', 1499);
	deep[2999] = '\0';
	assert_int_equal(prompt_parse(deep, &p), 1);
	assert_true(strlen(p.words[0].text) < PROMPT_WORD_LEN);
	char many[4000] = "";
	for (int i = 0; i < 500; i++)
		strcat(many, "ab ");
	assert_int_equal(prompt_parse(many, &p), PROMPT_MAX_WORDS);
}

static void test_classes(void **state)
{
	float rgb[3];
	assert_true(prompt_colour("red", rgb));
	assert_true(rgb[0] > 0.7f && rgb[1] < 0.2f && rgb[2] < 0.2f);
	assert_true(prompt_colour("blue", rgb));
	assert_true(rgb[2] > 0.7f && rgb[0] < 0.2f);
	assert_true(prompt_colour("grey", rgb) && prompt_colour("gray", rgb));
	assert_false(prompt_colour("cat", rgb));
	assert_int_equal(prompt_shape("circle"), SHAPE_CIRCLE);
	assert_int_equal(prompt_shape("circles"), SHAPE_CIRCLE);
	assert_int_equal(prompt_shape("boxes"), SHAPE_SQUARE);
	assert_int_equal(prompt_shape("pyramid"), SHAPE_TRIANGLE);
	assert_int_equal(prompt_shape("mountains"), SHAPE_MOUNTAIN);
	assert_int_equal(prompt_shape("checkerboard"), SHAPE_CHECKER);
	assert_int_equal(prompt_shape("city"), SHAPE_CITY);
	assert_int_equal(prompt_shape("cat"), -1);
	assert_int_equal(prompt_scene("ocean"), SCENE_SEA);
	assert_int_equal(prompt_scene("sunset"), SCENE_SUNSET);
	assert_int_equal(prompt_scene("red"), -1);
	assert_true(prompt_is_stopword("the"));
	assert_false(prompt_is_stopword("red"));
	assert_true(prompt_hash(PROMPT_HASH_INIT, "a") != prompt_hash(PROMPT_HASH_INIT, "b"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_plain_and_case),
		cmocka_unit_test(test_weights),
		cmocka_unit_test(test_escapes_and_unbalanced),
		cmocka_unit_test(test_classes),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
