/* sse_parse.h — an incremental parser of Server-Sent Events (the balancer's
 * GET /v1/jobs/{id}/events), fed with whatever chunks the network delivers.
 * Bounded: a line or an event's data past `max` bytes is an overflow, after
 * which the parser takes nothing more. Handles "\n" and "\r\n" line ends,
 * comments, multi-line data, fields without a value. Pure; one parser per
 * stream; the fuzz target tests/fuzz/fuzz_sse.c drives it directly. */
#ifndef SDGATE_SSE_PARSE_H
#define SDGATE_SSE_PARSE_H

#include <stddef.h>

/* Called for each complete event (name "message" when none was given); data
 * is NUL-terminated, len bytes. Return non-zero to stop the stream. */
typedef int (*sse_event_fn)(void *user, const char *name, const char *data, size_t len);

struct sse_parser {
	char *line;
	size_t line_len, line_cap;
	char name[32];
	char id[24]; /* the last event ID (the "id" field, kept across events as the SSE spec says): up to 23
			bytes; a longer one, or one with a NUL, is ignored */
	char *data;
	size_t data_len, data_cap;
	int any;      /* a field of the current event was seen */
	int overflow; /* a line or event exceeded max */
	int stopped;  /* the callback asked to stop */
	size_t max;
	sse_event_fn on_event;
	void *user;
};

void sse_parser_init(struct sse_parser *s, size_t max, sse_event_fn on_event, void *user);
void sse_parser_free(struct sse_parser *s);
/* Returns 0 while the stream may go on, -1 once it overflowed or stopped. */
int sse_parser_feed(struct sse_parser *s, const char *p, size_t n);

/* Appends n bytes to a NUL-terminated growing buffer, never past max bytes
 * in all; -1 (nothing appended) past it or without memory. */
int sse_buf_append(char **buf, size_t *len, size_t *cap, const char *p, size_t n, size_t max);

#endif
