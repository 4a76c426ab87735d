/* Unit tests of common/netaddr: which addresses the balancer refuses to
 * call for a registered backend (loopback, private, link-local, CGNAT,
 * unspecified, multicast, documentation, v4 inside v6) and which it calls;
 * what a client address counts as for the balancer's and the gateway's
 * per-client limits (IPv4 as written, IPv4-mapped IPv6 as IPv4, IPv6 by its
 * /64) and the one spelling of an address. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

#include "netaddr.h"

static void test_private(void **state)
{
	(void)state;
	const char *private[] = {"127.0.0.1",
				 "127.1.2.3",
				 "10.0.0.1",
				 "172.16.0.1",
				 "172.31.255.255",
				 "192.168.1.1",
				 "169.254.169.254",
				 "100.64.0.1",
				 "0.0.0.0",
				 "255.255.255.255",
				 "224.0.0.1",
				 "198.18.0.1",
				 "192.0.2.1",
				 "::1",
				 "::",
				 "[::1]",
				 "fe80::1",
				 "fe80::1%eth0",
				 "fc00::1",
				 "fd12:3456::1",
				 "ff02::1",
				 "::ffff:127.0.0.1",
				 "::ffff:10.0.0.1",
				 "64:ff9b::a00:1",
				 "2001:db8::1"};
	for (size_t i = 0; i < sizeof private / sizeof private[0]; i++) {
		print_message("private: %s\n", private[i]);
		assert_int_equal(netaddr_is_private(private[i]), 1);
	}
}

static void test_public(void **state)
{
	(void)state;
	const char *public[] = {"8.8.8.8",  "1.1.1.1",      "172.32.0.1",        "100.128.0.1",
				"11.0.0.1", "2a00:1450::1", "[2606:4700::1111]", "::ffff:8.8.8.8"};
	for (size_t i = 0; i < sizeof public / sizeof public[0]; i++) {
		print_message("public: %s\n", public[i]);
		assert_int_equal(netaddr_is_private(public[i]), 0);
	}
}

static void test_not_an_address(void **state)
{
	(void)state;
	assert_int_equal(netaddr_is_private("localhost"), -1);
	assert_int_equal(netaddr_is_private("example.org"), -1);
	assert_int_equal(netaddr_is_private(""), -1);
	assert_int_equal(netaddr_is_private("127.1"), -1); /* not dotted-quad: curl's URL parser normalises it first */
	assert_int_equal(netaddr_is_private("[::1"), -1);
}

/* The client key of an address written as text. */
static const char *key_of(const char *text)
{
	static char out[64];
	netaddr_client_key(text, out, sizeof out);
	printf("%-40s -> %s\n", text, out);
	return out;
}

static void test_client_key(void **state)
{
	(void)state;
	const char *cases[][2] = {
		{"203.0.113.7", "203.0.113.7"},
		{"::ffff:203.0.113.7", "203.0.113.7"},
		{"::FFFF:203.0.113.7", "203.0.113.7"},
		/* two addresses of one /64 are one client; the next /64 is another */
		{"2001:db8:1:2::1", "2001:db8:1:2::/64"},
		{"2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"},
		{"2001:0db8:0001:0002:0000:0000:0000:0001", "2001:db8:1:2::/64"},
		{"2001:db8:1:3::1", "2001:db8:1:3::/64"},
		{"::1", "::/64"},
		{"fe80::1", "fe80::/64"},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
		assert_string_equal(key_of(cases[i][0]), cases[i][1]);
	/* Not an address: no parse; as a key, the text itself. */
	const char *bad[] = {"",
			     "unknown",
			     "nginx.local",
			     "203.0.113",
			     "203.0.113.7.1",
			     "2001:db8::1::2",
			     "1.2.3.4 ",
			     "2001:0db8:0000:0000:0000:0000:0000:0001:1"};
	struct in6_addr a;
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		assert_int_equal(netaddr_parse(bad[i], strlen(bad[i]), &a), -1);
		assert_string_equal(key_of(bad[i]), bad[i]);
	}
	/* Not NUL-terminated input: only len bytes count. */
	assert_int_equal(netaddr_parse("10.0.0.1garbage", 8, &a), 0);
	char out[64];
	netaddr_key(&a, out, sizeof out);
	assert_string_equal(out, "10.0.0.1");
	char longer[200];
	memset(longer, '1', sizeof longer - 1);
	longer[sizeof longer - 1] = '\0';
	assert_int_equal(netaddr_parse(longer, strlen(longer), &a), -1);
	/* One spelling, for comparing addresses (a gateway's --trusted-proxy). */
	netaddr_canonical("::ffff:127.0.0.1", out, sizeof out);
	assert_string_equal(out, "127.0.0.1");
	netaddr_canonical("2001:0db8::0001", out, sizeof out);
	assert_string_equal(out, "2001:db8::1");
	netaddr_canonical("unknown", out, sizeof out);
	assert_string_equal(out, "unknown");
}

static void test_sockaddr(void **state)
{
	(void)state;
	struct sockaddr_in v4 = {.sin_family = AF_INET};
	inet_pton(AF_INET, "198.51.100.9", &v4.sin_addr);
	struct in6_addr a;
	char out[64];
	assert_int_equal(netaddr_from_sockaddr((struct sockaddr *)&v4, &a), 0);
	netaddr_key(&a, out, sizeof out);
	assert_string_equal(out, "198.51.100.9");
	struct sockaddr_in6 v6 = {.sin6_family = AF_INET6};
	inet_pton(AF_INET6, "2001:db8:aa:bb:1:2:3:4", &v6.sin6_addr);
	assert_int_equal(netaddr_from_sockaddr((struct sockaddr *)&v6, &a), 0);
	netaddr_key(&a, out, sizeof out);
	assert_string_equal(out, "2001:db8:aa:bb::/64");
	struct sockaddr unix_sa = {.sa_family = AF_UNIX};
	assert_int_equal(netaddr_from_sockaddr(&unix_sa, &a), -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_private),        cmocka_unit_test(test_public),
		cmocka_unit_test(test_not_an_address), cmocka_unit_test(test_client_key),
		cmocka_unit_test(test_sockaddr),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
