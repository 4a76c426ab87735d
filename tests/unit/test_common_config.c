/* Unit tests of common/config: flags, a JSON config file overridden by
 * flags, ranges, repeatable options, listen addresses, secrets (flag, file,
 * environment, refused values). */
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
static const char *token;

static const struct config_option OPTIONS[] = {
	{"provider", CONFIG_STRING, &name, "NAME", "provider name", 0, 0},
	{"port", CONFIG_INT, &port, "N", "port", 1, 65535},
	{"price-per-hour", CONFIG_DOUBLE, &price, "X", "price", 0, 1000},
	{"verbose", CONFIG_BOOL, &verbose, NULL, "more logs", 0, 0},
	{"backend", CONFIG_LIST, &backends, "URL", "a backend", 0, 0},
	{"token", CONFIG_SECRET, &token, "T", "a token", 0, 0},
};
static const struct config_program PROG = {"test", "a test", OPTIONS, sizeof OPTIONS / sizeof OPTIONS[0], NULL};

static void reset(void)
{
	config_free(&PROG);
	name = "default";
	port = 7861;
	price = 0;
	verbose = 0;
	backends = NULL;
	token = NULL;
	unsetenv("SDGATE_TOKEN");
}

/* A temp file holding text; path is filled in. */
static void temp_file(char path[32], const char *text)
{
	snprintf(path, 32, "/tmp/sdgate-config-XXXXXX");
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, strlen(text)), (int)strlen(text));
	close(fd);
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

static void test_secrets(void **state)
{
	(void)state;
	reset();
	setenv("SDGATE_TOKEN", "from-the-environment-1", 1);
	char *a1[] = {"t", NULL};
	assert_int_equal(config_parse(&PROG, 1, a1), CONFIG_OK);
	assert_string_equal(token, "from-the-environment-1"); /* SDGATE_<NAME> */
	char path[32];
	temp_file(path, "from-a-file-0123456789\nsecond line\n");
	char *a2[] = {"t", "--token-file", path, NULL};
	assert_int_equal(config_parse(&PROG, 3, a2), CONFIG_OK);
	assert_string_equal(token, "from-a-file-0123456789"); /* the file's first line beats the environment */
	char *a3[] = {"t", "--token", "from-the-flag-0123456", NULL};
	assert_int_equal(config_parse(&PROG, 3, a3), CONFIG_OK);
	assert_string_equal(token, "from-the-flag-0123456");
	char cfg[32], json[128];
	snprintf(json, sizeof json, "{\"token-file\": \"%s\"}", path);
	temp_file(cfg, json);
	reset();
	char *a4[] = {"t", "--config", cfg, NULL};
	assert_int_equal(config_parse(&PROG, 3, a4), CONFIG_OK);
	assert_string_equal(token, "from-a-file-0123456789"); /* "NAME-file" in the JSON config */
	unlink(cfg);
	unlink(path);

	reset();
	setenv("SDGATE_TOKEN", "", 1);
	assert_int_equal(config_parse(&PROG, 1, a1), CONFIG_OK);
	assert_null(token); /* empty: not set */
	const char *refused[] = {"CHANGE_ME", "change_me", "short-token", "has a space in it 0123", ""};
	for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
		reset();
		char value[64];
		snprintf(value, sizeof value, "%s", refused[i]);
		char *a[] = {"t", "--token", value, NULL};
		assert_int_equal(config_parse(&PROG, 3, a), i == 4 ? CONFIG_OK : CONFIG_ERROR);
	}
	reset();
	setenv("SDGATE_TOKEN", "CHANGE_ME", 1);
	assert_int_equal(config_parse(&PROG, 1, a1), CONFIG_ERROR); /* from the environment too */
	reset();
	char *a5[] = {"t", "--token-file", "/nonexistent/token", NULL};
	assert_int_equal(config_parse(&PROG, 3, a5), CONFIG_ERROR);
	char *a6[] = {"t", "--provider-file", "/dev/null", NULL};
	assert_int_equal(config_parse(&PROG, 3, a6), CONFIG_ERROR); /* only secrets have a -file form */
	reset();
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
		cmocka_unit_test(test_flags),  cmocka_unit_test(test_file_then_flags), cmocka_unit_test(test_errors),
		cmocka_unit_test(test_listen), cmocka_unit_test(test_secrets),
	};
	int rc = cmocka_run_group_tests(tests, NULL, NULL);
	config_free(&PROG);
	return rc;
}
