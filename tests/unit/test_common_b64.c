/* Unit tests of common/b64: RFC 4648 vectors, round trips across the
 * encoder's internal chunk size, and rejection of malformed text. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "b64.h"

static void test_rfc4648_vectors(void **state)
{
	(void)state;
	const char *in[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
	const char *out[] = {"", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};
	for (int i = 0; i < 7; i++) {
		char *e = b64_encode_new((const unsigned char *)in[i], strlen(in[i]));
		assert_string_equal(e, out[i]);
		size_t n;
		unsigned char *d = b64_decode_new(e, strlen(e), &n);
		assert_non_null(d);
		assert_int_equal(n, strlen(in[i]));
		assert_memory_equal(d, in[i], n);
		free(d);
		free(e);
	}
}

static void test_large_round_trip(void **state)
{
	(void)state;
	size_t n = (3u << 20) * 2 + 7; /* crosses the 3 MiB chunk twice */
	unsigned char *buf = malloc(n);
	for (size_t i = 0; i < n; i++)
		buf[i] = (unsigned char)(i * 2654435761u >> 13);
	char *e = b64_encode_new(buf, n);
	assert_int_equal(strlen(e), b64_encoded_len(n));
	size_t m;
	unsigned char *d = b64_decode_new(e, strlen(e), &m);
	assert_int_equal(m, n);
	assert_memory_equal(d, buf, n);
	free(d);
	free(e);
	free(buf);
}

static void test_rejects_garbage(void **state)
{
	(void)state;
	size_t n;
	assert_null(b64_decode_new("abc", 3, &n));  /* not a multiple of 4 */
	assert_null(b64_decode_new("ab!d", 4, &n)); /* bad character */
	unsigned char *d = b64_decode_new("data:image/png;base64,Zm9v", 26, &n);
	assert_non_null(d);
	assert_int_equal(n, 3);
	assert_memory_equal(d, "foo", 3);
	free(d);
}

static void test_is_valid_and_payload(void **state)
{
	(void)state;
	const char *good[] = {"", "Zg==", "Zm8=", "Zm9v", "Zm9vYmFy", "+/+/"};
	const char *bad[] = {"Zg=", "Zm9", "Zm 9v", "Z===", "Zg=a", "Zm9v\n", "Zm-_"};
	for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
		assert_true(b64_is_valid(good[i], strlen(good[i])));
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
		if (b64_is_valid(bad[i], strlen(bad[i])))
			fail_msg("accepted: \"%s\"", bad[i]);
	const char *url = "data:image/png;base64,Zm9v";
	size_t len = strlen(url);
	const char *p = b64_payload(url, &len);
	assert_int_equal(len, 4);
	assert_memory_equal(p, "Zm9v", 4);
	const char *plain = "Zm9v";
	len = 4;
	assert_ptr_equal(b64_payload(plain, &len), plain);
	assert_int_equal(len, 4);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_rfc4648_vectors),
		cmocka_unit_test(test_large_round_trip),
		cmocka_unit_test(test_rejects_garbage),
		cmocka_unit_test(test_is_valid_and_payload),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
