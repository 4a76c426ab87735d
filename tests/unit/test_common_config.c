/* Unit tests of common/config: flags, a JSON config file overridden by
 * flags, ranges, repeatable options, listen addresses. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"

static const char *name;
static long port;
static double price;
static int verbose;
static char **backends;

static const struct config_option OPTIONS[] = {
	{"provider", CONFIG_STRING, &name, "NAME", "provider name", 0, 0},
	{"port", CONFIG_INT, &port, "N", "port", 1, 65535},
	{"price-per-hour", CONFIG_DOUBLE, &price, "X", "price", 0, 1000},
	{"verbose", CONFIG_BOOL, &verbose, NULL, "more logs", 0, 0},
	{"backend", CONFIG_LIST, &backends, "URL", "a backend", 0, 0},
};
static const struct config_program PROG = {"test", "a test", OPTIONS, 5, NULL};

static void reset(void)
{
	config_free(&PROG);
	name = "default";
	port = 7861;
	price = 0;
	verbose = 0;
	backends = NULL;
}

static void test_flags(void **state)
{
	(void)state;
	reset();
	char *argv[] = {"t",    "--provider", "acme",     "--port=9000", "--verbose", "--price-per-hour",
			"1.25", "--backend",  "http://a", "--backend",   "http://b",  NULL};
	assert_int_equal(config_parse(&PROG, 11, argv), CONFIG_OK);
	assert_string_equal(name, "acme");
	assert_int_equal(port, 9000);
	assert_true(verbose);
	assert_true(price > 1.24 && price < 1.26);
	assert_string_equal(backends[0], "http://a");
	assert_string_equal(backends[1], "http://b");
	assert_null(backends[2]);
}

static void test_file_then_flags(void **state)
{
	(void)state;
	reset();
	char path[] = "/tmp/sdgate-config-XXXXXX";
	int fd = mkstemp(path);
	const char *text = "{\"provider\": \"from-file\", \"port\": 8000, \"price_per_hour\": 2,"
			   " \"backend\": [\"http://x\", \"http://y\"]}";
	assert_int_equal(write(fd, text, strlen(text)), (int)strlen(text));
	close(fd);
	char *argv[] = {"t", "--config", path, "--port", "8001", NULL};
	assert_int_equal(config_parse(&PROG, 5, argv), CONFIG_OK);
	assert_string_equal(name, "from-file");
	assert_int_equal(port, 8001); /* the flag wins */
	assert_true(price == 2.0);
	assert_string_equal(backends[1], "http://y");
	unlink(path);
}

static void test_errors(void **state)
{
	(void)state;
	reset();
	char *a1[] = {"t", "--port", "70000", NULL};
	assert_int_equal(config_parse(&PROG, 3, a1), CONFIG_ERROR);
	char *a2[] = {"t", "--port", "12x", NULL};
	assert_int_equal(config_parse(&PROG, 3, a2), CONFIG_ERROR);
	char *a3[] = {"t", "--nope", NULL};
	assert_int_equal(config_parse(&PROG, 2, a3), CONFIG_ERROR);
	char *a4[] = {"t", "--provider", NULL};
	assert_int_equal(config_parse(&PROG, 2, a4), CONFIG_ERROR);
	char *a5[] = {"t", "--config", "/nonexistent/file.json", NULL};
	assert_int_equal(config_parse(&PROG, 3, a5), CONFIG_ERROR);
}

static void test_listen(void **state)
{
	(void)state;
	char host[64];
	int p;
	assert_int_equal(config_split_listen("0.0.0.0:7860", host, sizeof host, &p), 0);
	assert_string_equal(host, "0.0.0.0");
	assert_int_equal(p, 7860);
	assert_int_equal(config_split_listen("[::1]:80", host, sizeof host, &p), 0);
	assert_string_equal(host, "::1");
	assert_int_equal(config_split_listen(":7861", host, sizeof host, &p), 0);
	assert_string_equal(host, "127.0.0.1");
	assert_int_equal(config_split_listen("7862", host, sizeof host, &p), 0);
	assert_int_equal(p, 7862);
	assert_int_equal(config_split_listen("host:99999", host, sizeof host, &p), -1);
	assert_int_equal(config_split_listen("[::1]80", host, sizeof host, &p), -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_flags),
		cmocka_unit_test(test_file_then_flags),
		cmocka_unit_test(test_errors),
		cmocka_unit_test(test_listen),
	};
	int rc = cmocka_run_group_tests(tests, NULL, NULL);
	config_free(&PROG);
	return rc;
}
