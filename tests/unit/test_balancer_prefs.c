/* Unit tests of balancer/prefs.c: each client's default checkpoint is its
 * own, "" forgets it, an idle one expires after PREFS_TTL_S, and at most
 * PREFS_MAX clients are held (the least recently used goes first). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "prefs.h"

static void test_own_choice(void **state)
{
	(void)state;
	struct prefs *p = prefs_new();
	assert_int_equal(prefs_set_checkpoint(p, "key:a", "sd_xl_base_1.0", 1), 0);
	assert_int_equal(prefs_set_checkpoint(p, "203.0.113.7", "other [abc]", 1), 0);
	assert_string_equal(prefs_checkpoint(p, "key:a", 2), "sd_xl_base_1.0");
	assert_string_equal(prefs_checkpoint(p, "203.0.113.7", 2), "other [abc]");
	assert_null(prefs_checkpoint(p, "key:b", 2));
	assert_int_equal(prefs_set_checkpoint(p, "key:a", "second", 3), 0); /* replaced */
	assert_string_equal(prefs_checkpoint(p, "key:a", 3), "second");
	assert_int_equal(prefs_count(p), 2);
	assert_int_equal(prefs_set_checkpoint(p, "key:a", "", 4), 0); /* forgotten */
	assert_null(prefs_checkpoint(p, "key:a", 4));
	assert_int_equal(prefs_count(p), 1);
	char longname[PREFS_MAX_NAME + 2];
	memset(longname, 'x', sizeof longname - 1);
	longname[sizeof longname - 1] = '\0';
	assert_int_equal(prefs_set_checkpoint(p, "key:a", longname, 5), -1);
	prefs_free(p);
}

static void test_expiry_and_bound(void **state)
{
	(void)state;
	struct prefs *p = prefs_new();
	prefs_set_checkpoint(p, "old", "m", 0);
	prefs_set_checkpoint(p, "used", "m", 0);
	assert_non_null(prefs_checkpoint(p, "used", PREFS_TTL_S - 1)); /* a use refreshes it */
	/* a peek does not */
	assert_non_null(prefs_peek(p, "old", PREFS_TTL_S - 1));
	assert_null(prefs_peek(p, "old", PREFS_TTL_S + 1));
	assert_null(prefs_checkpoint(p, "old", PREFS_TTL_S + 1));
	assert_non_null(prefs_checkpoint(p, "used", PREFS_TTL_S + 1));
	char client[32];
	for (int i = 0; i < PREFS_MAX + 10; i++) {
		snprintf(client, sizeof client, "key:%d", i);
		assert_int_equal(prefs_set_checkpoint(p, client, "m", PREFS_TTL_S + 2 + i), 0);
	}
	printf("%zu clients held after %d set\n", prefs_count(p), PREFS_MAX + 11);
	assert_int_equal(prefs_count(p), PREFS_MAX);
	assert_null(prefs_checkpoint(p, "used", PREFS_TTL_S + 5000)); /* the least recently used went first */
	assert_null(prefs_checkpoint(p, "key:0", PREFS_TTL_S + 5000));
	snprintf(client, sizeof client, "key:%d", PREFS_MAX + 9);
	assert_non_null(prefs_checkpoint(p, client, PREFS_TTL_S + 5000));
	prefs_free(p);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_own_choice),
		cmocka_unit_test(test_expiry_and_bound),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
