/* Unit tests of common/utf8.c (well-formed characters, a bounded copy that
 * keeps whole characters) and of common/log.c's escaping, which relies on it:
 * what a backend or client sends can reach a log line or a JSON string. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "utf8.h"

static size_t len_of(const char *s) { return utf8_char_len((const unsigned char *)s, strlen(s)); }

static void test_char_len(void **state)
{
	(void)state;
	assert_int_equal(len_of("a"), 1);
	assert_int_equal(len_of("\xc3\xa9"), 2);         /* é */
	assert_int_equal(len_of("\xe2\x82\xac"), 3);     /* € */
	assert_int_equal(len_of("\xf0\x9f\x98\x80"), 4); /* 😀 */
	assert_int_equal(len_of("\xf4\x8f\xbf\xbf"), 4); /* U+10FFFF */
	assert_int_equal(len_of("\xe2\x82"), 0);         /* cut */
	assert_int_equal(len_of("\x82\xac"), 0);         /* a continuation byte first */
	assert_int_equal(len_of("\xc0\xaf"), 0);         /* overlong '/' */
	assert_int_equal(len_of("\xe0\x80\xaf"), 0);     /* overlong */
	assert_int_equal(len_of("\xed\xa0\x80"), 0);     /* surrogate U+D800 */
	assert_int_equal(len_of("\xf4\x90\x80\x80"), 0); /* U+110000 */
	assert_int_equal(len_of("\xff"), 0);
	assert_int_equal(utf8_char_len((const unsigned char *)"", 1), 0); /* NUL */
}

static void test_copy(void **state)
{
	(void)state;
	char out[8];
	/* "ab€€": the second € does not fit in 8 bytes with the NUL: cut before it */
	assert_int_equal(utf8_copy(out, sizeof out, "ab\xe2\x82\xac\xe2\x82\xac", 8), 5);
	assert_string_equal(out, "ab\xe2\x82\xac");
	/* the source itself cut inside a character, NUL and a stray byte: '?' each */
	assert_int_equal(utf8_copy(out, sizeof out, "a\0b\xff\xe2\x82", 6), 6);
	assert_memory_equal(out, "a?b???", 7);
	assert_int_equal(utf8_copy(out, 1, "abc", 3), 0);
	assert_string_equal(out, "");
}

/* log_msg's line, as written to stderr. */
static void logged(char *out, size_t cap, const char *msg)
{
	fflush(stderr);
	int saved = dup(2);
	FILE *tmp = tmpfile();
	assert_non_null(tmp);
	dup2(fileno(tmp), 2);
	log_info("%s", msg);
	fflush(stderr);
	dup2(saved, 2);
	close(saved);
	rewind(tmp);
	size_t n = fread(out, 1, cap - 1, tmp);
	out[n] = '\0';
	fclose(tmp);
}

static void test_log_escapes(void **state)
{
	(void)state;
	log_init("test", LOG_INFO);
	char line[512];
	logged(line, sizeof line,
	       "Evil\x1b[31mRED\x07 two\nlines\r\x7f caf\xc3\xa9 \xc2\x9b"
	       "31m cut\xe2\x82");
	const char *msg = strstr(line, "INFO test: ");
	assert_non_null(msg);
	assert_string_equal(msg + 11,
			    "Evil\\x1b[31mRED\\x07 two\\x0alines\\x0d\\x7f caf\xc3\xa9 \\xc2\\x9b31m cut\\xe2\\x82\n");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_char_len),
		cmocka_unit_test(test_copy),
		cmocka_unit_test(test_log_escapes),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
