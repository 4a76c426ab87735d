/* Unit tests of balancer/clientkey.c: the last X-Forwarded-For entry; API
 * keys from Bearer and Basic headers, hashed, none from empty credentials or
 * other schemes. (An address's key is common/netaddr's: test_common_netaddr.)
 * And balancer/apiauth.c: --api-auth lists, and the Basic headers they let
 * through. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "apiauth.h"
#include "clientkey.h"

static void test_last_entry(void **state)
{
	(void)state;
	const char *cases[][2] = {{"198.51.100.1", "198.51.100.1"},
				  {"6.6.6.6, 198.51.100.1", "198.51.100.1"},
				  {"6.6.6.6,198.51.100.1 ", "198.51.100.1"},
				  {" \t2001:db8::1\t", "2001:db8::1"},
				  {"6.6.6.6, ", ""},
				  {"", ""}};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		const char *p = cases[i][0];
		size_t n = strlen(p);
		clientkey_last_entry(&p, &n);
		printf("X-Forwarded-For: \"%s\" -> \"%.*s\"\n", cases[i][0], (int)n, p);
		assert_int_equal(n, strlen(cases[i][1]));
		assert_memory_equal(p, cases[i][1], n);
	}
}

static int key(const char *header, char out[CLIENTKEY_KEY_LEN + 1])
{
	int rc = clientkey_of_authorization(header, strlen(header), out, CLIENTKEY_KEY_LEN + 1);
	printf("Authorization: %-36s -> %s\n", header, rc == 0 ? out : "(no key)");
	return rc;
}

static void test_api_keys(void **state)
{
	(void)state;
	char a[CLIENTKEY_KEY_LEN + 1], b[CLIENTKEY_KEY_LEN + 1];
	assert_int_equal(key("Bearer k1-0123456789", a), 0);
	assert_int_equal(strlen(a), CLIENTKEY_KEY_LEN);
	assert_memory_equal(a, "key:", 4);
	for (size_t i = 4; i < CLIENTKEY_KEY_LEN; i++)
		assert_non_null(strchr("0123456789abcdef", a[i]));
	assert_null(strstr(a, "k1-0123456789")); /* only the hash */
	/* The same key is the same client, however the scheme is spelled. */
	assert_int_equal(key("bearer   k1-0123456789  ", b), 0);
	assert_string_equal(a, b);
	assert_int_equal(key("Bearer k2-0123456789", b), 0);
	assert_string_not_equal(a, b);
	/* Basic: webuiapi's set_auth("alice", "pw"). The same text as Bearer is another key. */
	assert_int_equal(key("Basic YWxpY2U6cHc=", a), 0);
	assert_int_equal(key("Bearer YWxpY2U6cHc=", b), 0);
	assert_string_not_equal(a, b);
	/* No key: nothing, empty credentials, other schemes. */
	const char *none[] = {"",           "Bearer",     "Bearer ",   "Bearer    ", "Basic ",
			      "Basic Og==", "Digest abc", "Token abc", "Bearerabc"};
	for (size_t i = 0; i < sizeof none / sizeof none[0]; i++)
		assert_int_equal(key(none[i], a), -1);
	/* Too small an output is refused, not overrun. */
	char small[8];
	assert_int_equal(clientkey_of_authorization("Bearer x", 8, small, sizeof small), -1);
}

static int check(const struct apiauth *a, const char *header) { return apiauth_check(a, header, strlen(header)); }

static void test_api_auth(void **state)
{
	(void)state;
	const char *why = NULL;
	const char *bad[] = {"alice", ":password1", "alice:short", "alice:password1,", "alice:password1,bob"};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		assert_null(apiauth_new(bad[i], &why));
		printf("--api-auth \"%s\" refused: %s\n", bad[i], why);
		assert_non_null(why);
	}
	struct apiauth *a = apiauth_new("alice:password1,bob:b:with:colons", &why);
	assert_non_null(a);
	assert_true(check(a, "Basic YWxpY2U6cGFzc3dvcmQx"));      /* alice:password1 */
	assert_true(check(a, "basic  YWxpY2U6cGFzc3dvcmQx "));    /* scheme case, blanks */
	assert_true(check(a, "Basic Ym9iOmI6d2l0aDpjb2xvbnM="));  /* bob:b:with:colons */
	assert_false(check(a, "Basic YWxpY2U6cGFzc3dvcmQy"));     /* alice:password2 */
	assert_false(check(a, "Basic YWxpY2U6cGFzc3dvcmQxMQ==")); /* alice:password11 */
	assert_false(check(a, "Bearer YWxpY2U6cGFzc3dvcmQx"));    /* another scheme */
	assert_false(check(a, "Basic "));
	assert_false(check(a, "Basic !!!!"));
	assert_false(check(a, "Basic YWxpY2U6cGFzc3dvcmQx=")); /* not padded base64 */
	assert_false(apiauth_check(a, NULL, 0));
	assert_false(apiauth_check(NULL, "Basic YWxpY2U6cGFzc3dvcmQx", 26));
	apiauth_free(a);
	/* 64 pairs at most */
	char many[65 * 16 + 1] = "";
	for (int i = 0; i < 65; i++)
		snprintf(many + strlen(many), sizeof many - strlen(many), "%su%02d:password", i ? "," : "", i);
	assert_null(apiauth_new(many, &why));
	many[64 * 13 - 1] = '\0'; /* the first 64 */
	a = apiauth_new(many, &why);
	assert_non_null(a);
	apiauth_free(a);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_last_entry),
		cmocka_unit_test(test_api_keys),
		cmocka_unit_test(test_api_auth),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
