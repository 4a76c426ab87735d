/* Unit tests of the gateway's front-door rules: gateway/origin.c (which
 * pages may open a websocket) and gateway/outq.c (a connection's bounded,
 * coalescing output queue). What an address counts as for the per-address
 * limits is common/netaddr's (test_common_netaddr). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gateway.h"

static void test_origin(void **state)
{
	(void)state;
	char *allowed[] = {"https://sd.example.org", "http://localhost:3000", NULL};
	/* no Origin: a program, not a page */
	assert_true(origin_allowed(NULL, "http", "127.0.0.1:8080", NULL));
	assert_true(origin_allowed("", "http", "127.0.0.1:8080", NULL));
	/* the same origin, spelled differently */
	assert_true(origin_allowed("http://127.0.0.1:8080", "http", "127.0.0.1:8080", NULL));
	assert_true(origin_allowed("HTTP://Sd.Example.ORG", "http", "sd.example.org:80", NULL));
	assert_true(origin_allowed("https://sd.example.org:443", "https", "sd.example.org", NULL));
	assert_true(origin_allowed("http://[::1]:8080", "http", "[::1]:8080", NULL));
	/* another port, host or scheme is another origin */
	assert_false(origin_allowed("http://127.0.0.1:9999", "http", "127.0.0.1:8080", NULL));
	assert_false(origin_allowed("http://evil.example", "http", "127.0.0.1:8080", NULL));
	assert_false(origin_allowed("https://127.0.0.1:8080", "http", "127.0.0.1:8080", NULL));
	assert_false(origin_allowed("http://sd.example.org", "https", "sd.example.org", NULL));
	/* no Host to compare with: only the listed ones */
	assert_false(origin_allowed("http://127.0.0.1:8080", "http", "", NULL));
	/* malformed or opaque origins never pass */
	assert_false(origin_allowed("null", "http", "127.0.0.1:8080", allowed));
	assert_false(origin_allowed("http://127.0.0.1:8080@evil", "http", "127.0.0.1:8080", NULL));
	assert_false(origin_allowed("http://127.0.0.1:8080/x", "http", "127.0.0.1:8080", NULL));
	assert_false(origin_allowed("http://127.0.0.1:0", "http", "127.0.0.1:0", NULL));
	assert_false(origin_allowed("http://127.0.0.1:99999", "http", "127.0.0.1:99999", NULL));
	assert_false(origin_allowed("http://a,http://b", "http", "a", NULL));
	assert_false(origin_allowed("ftp://127.0.0.1", "ftp", "127.0.0.1", NULL));
	assert_false(origin_allowed("http://[::1", "http", "[::1", NULL));
	/* --allowed-origin */
	assert_true(origin_allowed("https://sd.example.org", "http", "10.0.0.5:8080", allowed));
	assert_true(origin_allowed("http://LOCALHOST:3000", "http", "10.0.0.5:8080", allowed));
	assert_false(origin_allowed("http://sd.example.org", "http", "10.0.0.5:8080", allowed));
	assert_false(origin_allowed("http://localhost:3001", "http", "10.0.0.5:8080", allowed));
	assert_true(origin_valid("https://sd.example.org"));
	assert_true(origin_valid("http://[2001:db8::1]:8080/"));
	assert_false(origin_valid("sd.example.org"));
	assert_false(origin_valid("https://sd.example.org/app"));
	assert_false(origin_valid(NULL));
}

/* Drains q as ws.c does; returns the messages joined with '|'. */
static char *drain(struct outq *q)
{
	static char out[1 << 20];
	size_t n = 0;
	const char *text;
	int first, last;
	size_t len;
	while ((len = outq_chunk(q, &text, &first, &last)) > 0) {
		if (first && n)
			out[n++] = '|';
		if (n + len < sizeof out) {
			memcpy(out + n, text, len);
			n += len;
		}
		outq_advance(q, len);
	}
	out[n] = '\0';
	assert_int_equal(q->bytes, 0);
	return out;
}

static void push(struct outq *q, const char *text, enum outq_class cls, const char *id, enum outq_result want)
{
	assert_int_equal(outq_push(q, text, strlen(text), cls, id), want);
}

static void test_outq_coalesce(void **state)
{
	(void)state;
	struct outq q = {0};
	push(&q, "w1", OUTQ_WELCOME, NULL, OUTQ_QUEUED);
	push(&q, "b1", OUTQ_BOARD, NULL, OUTQ_QUEUED);
	push(&q, "p1a", OUTQ_PROGRESS, "a", OUTQ_QUEUED);
	push(&q, "p1b", OUTQ_PROGRESS, "b", OUTQ_QUEUED);
	push(&q, "done-a", OUTQ_JOB, "a", OUTQ_QUEUED);
	assert_true(outq_waiting(&q, OUTQ_WELCOME));
	assert_false(outq_waiting(&q, OUTQ_CONTROL));
	push(&q, "w2", OUTQ_WELCOME, NULL, OUTQ_REPLACED);
	push(&q, "b2", OUTQ_BOARD, NULL, OUTQ_REPLACED);
	push(&q, "p2a", OUTQ_PROGRESS, "a", OUTQ_REPLACED);
	push(&q, "e1", OUTQ_CONTROL, NULL, OUTQ_QUEUED);
	push(&q, "e2", OUTQ_CONTROL, NULL, OUTQ_QUEUED);
	assert_int_equal(q.control, 4);
	assert_string_equal(drain(&q), "w2|b2|p2a|p1b|done-a|e1|e2");
	assert_int_equal(q.control, 0);
	outq_clear(&q);
}

/* A progress with a preview is never replaced by one without: the preview
 * comes once (the balancer sends it only when new). A newer preview
 * supersedes the waiting progress and preview of its job; steps never go
 * down; other jobs' messages keep their places. */
static void test_outq_preview(void **state)
{
	(void)state;
	struct outq q = {0};
	push(&q, "p1a", OUTQ_PROGRESS, "a", OUTQ_QUEUED);
	push(&q, "v2a", OUTQ_PREVIEW, "a", OUTQ_REPLACED);
	push(&q, "p1b", OUTQ_PROGRESS, "b", OUTQ_QUEUED);
	push(&q, "p3a", OUTQ_PROGRESS, "a", OUTQ_QUEUED);
	push(&q, "p4a", OUTQ_PROGRESS, "a", OUTQ_REPLACED);
	assert_string_equal(drain(&q), "v2a|p1b|p4a");
	push(&q, "v5a", OUTQ_PREVIEW, "a", OUTQ_QUEUED);
	push(&q, "p6a", OUTQ_PROGRESS, "a", OUTQ_QUEUED);
	push(&q, "p1b", OUTQ_PROGRESS, "b", OUTQ_QUEUED);
	push(&q, "v7a", OUTQ_PREVIEW, "a", OUTQ_REPLACED);
	push(&q, "done-a", OUTQ_JOB, "a", OUTQ_QUEUED);
	assert_string_equal(drain(&q), "p1b|v7a|done-a");
	/* a preview that has started is not superseded */
	push(&q, "v8a", OUTQ_PREVIEW, "a", OUTQ_QUEUED);
	outq_advance(&q, 1);
	push(&q, "v9a", OUTQ_PREVIEW, "a", OUTQ_QUEUED);
	assert_string_equal(drain(&q), "8a|v9a");
	outq_clear(&q);
}

static void test_outq_bounds(void **state)
{
	(void)state;
	struct outq q = {0};
	/* replies to messages: GW_OUT_CONTROL bytes, then the client is over */
	char err[1024];
	memset(err, 'e', sizeof err - 1);
	err[sizeof err - 1] = '\0';
	size_t n = 0;
	while (outq_push(&q, err, strlen(err), OUTQ_CONTROL, NULL) == OUTQ_QUEUED)
		n++;
	assert_int_equal(n, GW_OUT_CONTROL / strlen(err));
	assert_true(q.control <= GW_OUT_CONTROL);
	/* a hello flood only ever keeps one welcome and one board */
	for (int i = 0; i < 10000; i++) {
		outq_push(&q, "{\"type\":\"welcome\"}", 18, OUTQ_WELCOME, NULL);
		outq_push(&q, "{\"type\":\"board\"}", 16, OUTQ_BOARD, NULL);
	}
	assert_int_equal(q.bytes, n * strlen(err) + 18 + 16);
	/* one message of the largest legit size fits; a second does not */
	size_t big = 23u << 20;
	char *image = malloc(big);
	assert_non_null(image);
	memset(image, 'i', big);
	assert_int_equal(outq_push(&q, image, big, OUTQ_JOB, "a"), OUTQ_QUEUED);
	assert_int_equal(outq_push(&q, image, big, OUTQ_JOB, "b"), OUTQ_OVER);
	/* written in fragments of GW_OUT_CHUNK; a started message is never replaced */
	outq_clear(&q);
	assert_int_equal(outq_push(&q, image, GW_OUT_CHUNK * 2 + 5, OUTQ_PROGRESS, "a"), OUTQ_QUEUED);
	const char *text;
	int first, last;
	assert_int_equal(outq_chunk(&q, &text, &first, &last), GW_OUT_CHUNK);
	assert_true(first && !last);
	outq_advance(&q, GW_OUT_CHUNK);
	assert_int_equal(outq_push(&q, "p2", 2, OUTQ_PROGRESS, "a"), OUTQ_QUEUED);
	assert_int_equal(outq_chunk(&q, &text, &first, &last), GW_OUT_CHUNK);
	assert_true(!first && !last);
	outq_advance(&q, GW_OUT_CHUNK);
	assert_int_equal(outq_chunk(&q, &text, &first, &last), 5);
	assert_true(!first && last);
	outq_advance(&q, 5);
	assert_int_equal(outq_chunk(&q, &text, &first, &last), 2);
	assert_true(first && last && !memcmp(text, "p2", 2));
	outq_clear(&q);
	assert_null(q.head);
	assert_int_equal(q.bytes, 0);
	free(image);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_origin),
		cmocka_unit_test(test_outq_coalesce),
		cmocka_unit_test(test_outq_preview),
		cmocka_unit_test(test_outq_bounds),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
