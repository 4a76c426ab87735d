/* Unit tests of common/netaddr: which addresses the balancer refuses to
 * call for a registered backend (loopback, private, link-local, CGNAT,
 * unspecified, multicast, documentation, v4 inside v6) and which it calls. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

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

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_private),
		cmocka_unit_test(test_public),
		cmocka_unit_test(test_not_an_address),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
