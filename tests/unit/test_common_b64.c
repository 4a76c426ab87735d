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

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_rfc4648_vectors),
		cmocka_unit_test(test_large_round_trip),
		cmocka_unit_test(test_rejects_garbage),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
