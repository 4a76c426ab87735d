/* Unit tests of backend/regfile: the registration file written and read
 * back, its mode, and every kind of file that must be refused. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "regfile.h"

#define FP "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"

static char dir[64];
static char path[128];

static const struct regfile GOOD = {
	.balancer = "http://127.0.0.1:7860",
	.id = "0123456789abcdef0123456789abcdef",
	.secret = "secret-0123456789abcdef",
	.backend_token = "token-0123456789abcdef",
	.heartbeat_interval_s = 10,
	.registered_as = FP, /* SHA-256 of "abc" */
};

static int setup(void **state)
{
	(void)state;
	snprintf(dir, sizeof dir, "/tmp/regfile-XXXXXX");
	if (!mkdtemp(dir))
		return -1;
	snprintf(path, sizeof path, "%s/registration.json", dir);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	unlink(path);
	rmdir(dir);
	return 0;
}

static void put(const char *text)
{
	unlink(path);
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

static void test_round_trip(void **state)
{
	(void)state;
	assert_int_equal(regfile_write(path, &GOOD), 0);
	struct stat st;
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	struct regfile rf;
	assert_int_equal(regfile_read(path, &rf), REGFILE_OK);
	assert_string_equal(rf.balancer, GOOD.balancer);
	assert_string_equal(rf.id, GOOD.id);
	assert_string_equal(rf.secret, GOOD.secret);
	assert_string_equal(rf.backend_token, GOOD.backend_token);
	assert_int_equal(rf.heartbeat_interval_s, 10);
	assert_string_equal(rf.registered_as, GOOD.registered_as);
	/* Rewriting replaces it (no temporary file left behind). */
	struct regfile again = GOOD;
	snprintf(again.id, sizeof again.id, "%s", "another-id");
	assert_int_equal(regfile_write(path, &again), 0);
	assert_int_equal(regfile_read(path, &rf), REGFILE_OK);
	assert_string_equal(rf.id, "another-id");
	char tmp[160];
	snprintf(tmp, sizeof tmp, "ls %s | wc -l | grep -qx 1", dir);
	assert_int_equal(system(tmp), 0);
	regfile_remove(path);
	assert_int_equal(regfile_read(path, &rf), REGFILE_ABSENT);
	regfile_remove(path); /* a missing file is fine */
}

static void test_refused(void **state)
{
	(void)state;
	static const char *const bad[] = {
		"",
		"not json",
		"[]",
		"{\"balancer\": \"http://b\", \"id\": \"ab\"",
		/* each field missing or out of bounds */
		"{\"id\": \"abc\", \"secret\": \"secret-0123456789\", \"backend_token\": \"token-0123456789ab\"}",
		"{\"balancer\": \"ftp://b\", \"id\": \"abc\", \"secret\": \"secret-0123456789\", "
		"\"backend_token\": \"token-0123456789ab\"}",
		"{\"balancer\": \"http://b\", \"id\": \"../x\", \"secret\": \"secret-0123456789\", "
		"\"backend_token\": \"token-0123456789ab\"}",
		"{\"balancer\": \"http://b\", \"id\": \"\", \"secret\": \"secret-0123456789\", "
		"\"backend_token\": \"token-0123456789ab\"}",
		"{\"balancer\": \"http://b\", \"id\": \"abc\", \"secret\": \"short\", \"backend_token\": "
		"\"token-0123456789ab\"}",
		"{\"balancer\": \"http://b\", \"id\": \"abc\", \"secret\": \"secret with spaces 0123\", "
		"\"backend_token\": \"token-0123456789ab\"}",
		"{\"balancer\": \"http://b\", \"id\": \"abc\", \"secret\": \"secret-0123456789\", \"backend_token\": "
		"7}",
		"{\"balancer\": \"http://b\", \"id\": \"abc\", \"secret\": \"secret-0123456789\", "
		"\"backend_token\": \"token-0123456789ab\", \"heartbeat_interval_s\": 0}",
		"{\"balancer\": \"http://b\", \"id\": \"abc\", \"secret\": \"secret-0123456789\", "
		"\"backend_token\": \"token-0123456789ab\", \"heartbeat_interval_s\": \"10\"}",
		/* a duplicated key, too many keys */
		"{\"balancer\": \"http://b\", \"id\": \"abc\", \"id\": \"abd\", \"secret\": \"secret-0123456789\", "
		"\"backend_token\": \"token-0123456789ab\"}",
		"{\"balancer\": \"http://b\", \"id\": \"abc\", \"secret\": \"secret-0123456789\", "
		"\"backend_token\": \"token-0123456789ab\", \"a\": 1, \"b\": 2, \"c\": 3, \"d\": 4, \"e\": 5}",
	};
	/* registered_as missing, too short, in capitals */
	static const char *const bad_fp[] = {
		"", "\"registered_as\": \"ba78\", ",
		"\"registered_as\": \"BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD\", "};
	struct regfile rf;
	for (size_t i = 0; i < sizeof bad_fp / sizeof bad_fp[0]; i++) {
		char text[512];
		snprintf(text, sizeof text,
			 "{%s\"balancer\": \"https://b\", \"id\": \"abc\", \"secret\": \"secret-0123456789\", "
			 "\"backend_token\": \"token-0123456789ab\"}",
			 bad_fp[i]);
		put(text);
		assert_int_equal(regfile_read(path, &rf), REGFILE_BAD);
	}
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		put(bad[i]);
		assert_int_equal(regfile_read(path, &rf), REGFILE_BAD);
		assert_string_equal(rf.secret, ""); /* nothing half-read is left */
	}
	/* The smallest good file (no heartbeat_interval_s) is taken. */
	put("{\"balancer\": \"https://b\", \"id\": \"a_b-C9\", \"secret\": \"secret-0123456789\", "
	    "\"backend_token\": \"token-0123456789ab\", \"registered_as\": \"" FP "\"}");
	assert_int_equal(regfile_read(path, &rf), REGFILE_OK);
	assert_int_equal(rf.heartbeat_interval_s, 0);
}

static void test_not_a_small_regular_file(void **state)
{
	(void)state;
	struct regfile rf;
	/* Over 4096 bytes, even when it is otherwise good JSON. */
	char *big = malloc(REGFILE_MAX_BYTES + 64);
	assert_non_null(big);
	int n = snprintf(big, 300,
			 "{\"balancer\": \"http://b\", \"id\": \"abc\", \"secret\": \"secret-0123456789\", "
			 "\"backend_token\": \"token-0123456789ab\", \"registered_as\": \"" FP "\"}");
	memset(big + n, ' ', REGFILE_MAX_BYTES + 1 - (size_t)n);
	big[REGFILE_MAX_BYTES + 1] = '\0';
	put(big);
	free(big);
	assert_int_equal(regfile_read(path, &rf), REGFILE_BAD);
	/* A symbolic link to a good file, and a folder. */
	char target[160];
	snprintf(target, sizeof target, "%s/target.json", dir);
	assert_int_equal(regfile_write(target, &GOOD), 0);
	unlink(path);
	assert_int_equal(symlink(target, path), 0);
	assert_int_equal(regfile_read(path, &rf), REGFILE_BAD);
	unlink(path);
	unlink(target);
	assert_int_equal(mkdir(path, 0700), 0);
	assert_int_equal(regfile_read(path, &rf), REGFILE_BAD);
	rmdir(path);
	/* A folder that does not exist cannot be written: -1, no crash. */
	assert_int_equal(regfile_write("/nonexistent-sdgate/registration.json", &GOOD), -1);
}

static void test_validators(void **state)
{
	(void)state;
	char fp[REGFILE_FINGERPRINT_HEX + 1];
	regfile_fingerprint("abc", fp);
	assert_string_equal(fp, FP);
	assert_true(regfile_secret_valid("0123456789abcdef"));
	assert_false(regfile_secret_valid("0123456789abcde"));
	assert_false(regfile_secret_valid(NULL));
	assert_false(regfile_secret_valid("0123456789abcdef\x7f"));
	char long_secret[REGFILE_MAX_SECRET + 2];
	memset(long_secret, 'a', sizeof long_secret - 1);
	long_secret[sizeof long_secret - 1] = '\0';
	assert_false(regfile_secret_valid(long_secret));
	long_secret[REGFILE_MAX_SECRET] = '\0';
	assert_true(regfile_secret_valid(long_secret));
	assert_true(regfile_id_valid("abcDEF012_-"));
	assert_false(regfile_id_valid("a/b"));
	assert_false(regfile_id_valid("a?b"));
	assert_false(regfile_id_valid(""));
	assert_false(regfile_id_valid(NULL));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_round_trip, setup, teardown),
		cmocka_unit_test_setup_teardown(test_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_not_a_small_regular_file, setup, teardown),
		cmocka_unit_test(test_validators),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
