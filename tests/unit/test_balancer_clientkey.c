/* Unit tests of balancer/clientkey.c: the keys that tell the balancer's
 * clients apart. IPv4 as written, IPv4-mapped IPv6 as IPv4, IPv6 by its /64;
 * the last X-Forwarded-For entry; API keys from Bearer and Basic headers,
 * hashed, none from empty credentials or other schemes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

#include "clientkey.h"

/* The client key of an address written as text, or "-" when it is not one. */
static const char *key_of(const char *text)
{
	static char out[64];
	struct in6_addr a;
	if (clientkey_parse_addr(text, strlen(text), &a) != 0)
		return "-";
	clientkey_of_addr(&a, out, sizeof out);
	printf("%-40s -> %s\n", text, out);
	return out;
}

static void test_addresses(void **state)
{
	(void)state;
	assert_string_equal(key_of("203.0.113.7"), "203.0.113.7");
	assert_string_equal(key_of("::ffff:203.0.113.7"), "203.0.113.7");
	assert_string_equal(key_of("2001:db8:1:2::1"), "2001:db8:1:2::/64");
	assert_string_equal(key_of("2001:db8:1:2:ffff:ffff:ffff:ffff"), "2001:db8:1:2::/64");
	assert_string_equal(key_of("2001:db8:1:3::1"), "2001:db8:1:3::/64");
	assert_string_equal(key_of("::1"), "::/64");
	assert_string_equal(key_of("fe80::1"), "fe80::/64");
	const char *bad[] = {"",
			     "nginx.local",
			     "203.0.113",
			     "203.0.113.7.1",
			     "2001:db8::1::2",
			     "1.2.3.4 ",
			     "2001:0db8:0000:0000:0000:0000:0000:0001:1"};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
		assert_string_equal(key_of(bad[i]), "-");
	/* Not NUL-terminated input: only len bytes count. */
	struct in6_addr a;
	assert_int_equal(clientkey_parse_addr("10.0.0.1garbage", 8, &a), 0);
	char out[64];
	clientkey_of_addr(&a, out, sizeof out);
	assert_string_equal(out, "10.0.0.1");
	char longer[200];
	memset(longer, '1', sizeof longer - 1);
	longer[sizeof longer - 1] = '\0';
	assert_int_equal(clientkey_parse_addr(longer, strlen(longer), &a), -1);
}

static void test_sockaddr(void **state)
{
	(void)state;
	struct sockaddr_in v4 = {.sin_family = AF_INET};
	inet_pton(AF_INET, "198.51.100.9", &v4.sin_addr);
	struct in6_addr a;
	char out[64];
	assert_int_equal(clientkey_from_sockaddr((struct sockaddr *)&v4, &a), 0);
	clientkey_of_addr(&a, out, sizeof out);
	assert_string_equal(out, "198.51.100.9");
	struct sockaddr_in6 v6 = {.sin6_family = AF_INET6};
	inet_pton(AF_INET6, "2001:db8:aa:bb:1:2:3:4", &v6.sin6_addr);
	assert_int_equal(clientkey_from_sockaddr((struct sockaddr *)&v6, &a), 0);
	clientkey_of_addr(&a, out, sizeof out);
	assert_string_equal(out, "2001:db8:aa:bb::/64");
	struct sockaddr unix_sa = {.sa_family = AF_UNIX};
	assert_int_equal(clientkey_from_sockaddr(&unix_sa, &a), -1);
}

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

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_addresses),
		cmocka_unit_test(test_sockaddr),
		cmocka_unit_test(test_last_entry),
		cmocka_unit_test(test_api_keys),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
