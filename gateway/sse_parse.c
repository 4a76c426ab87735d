/* sse_parse.c — see sse_parse.h. */
#include "sse_parse.h"

#include <stdlib.h>
#include <string.h>

int sse_buf_append(char **buf, size_t *len, size_t *cap, const char *p, size_t n, size_t max)
{
	if (*len + n + 1 > max)
		return -1;
	if (*len + n + 1 > *cap) {
		size_t c = *cap ? *cap : 256;
		while (c < *len + n + 1)
			c *= 2;
		if (c > max)
			c = max;
		char *nb = realloc(*buf, c);
		if (!nb)
			return -1;
		*buf = nb;
		*cap = c;
	}
	memcpy(*buf + *len, p, n);
	*len += n;
	(*buf)[*len] = '\0';
	return 0;
}

void sse_parser_init(struct sse_parser *s, size_t max, sse_event_fn on_event, void *user)
{
	memset(s, 0, sizeof *s);
	s->max = max;
	s->on_event = on_event;
	s->user = user;
}

void sse_parser_free(struct sse_parser *s)
{
	free(s->line);
	free(s->data);
	s->line = s->data = NULL;
	s->line_len = s->line_cap = s->data_len = s->data_cap = 0;
}

/* One complete line (no newline, '\r' stripped). */
static void sse_line(struct sse_parser *s, char *line, size_t n)
{
	if (n == 0) {
		if (s->any &&
		    s->on_event(s->user, s->name[0] ? s->name : "message", s->data ? s->data : "", s->data_len))
			s->stopped = 1;
		s->name[0] = '\0';
		s->data_len = 0;
		if (s->data)
			s->data[0] = '\0';
		s->any = 0;
		return;
	}
	if (line[0] == ':')
		return;
	char *colon = memchr(line, ':', n);
	size_t flen = colon ? (size_t)(colon - line) : n;
	const char *value = colon ? colon + 1 : line + n;
	size_t vlen = colon ? n - flen - 1 : 0;
	if (vlen && *value == ' ')
		value++, vlen--;
	if (flen == 5 && !memcmp(line, "event", 5)) {
		size_t k = vlen < sizeof s->name - 1 ? vlen : sizeof s->name - 1;
		memcpy(s->name, value, k);
		s->name[k] = '\0';
		s->any = 1;
	} else if (flen == 2 && !memcmp(line, "id", 2)) {
		if (vlen < sizeof s->id && !memchr(value, '\0', vlen)) {
			memcpy(s->id, value, vlen);
			s->id[vlen] = '\0';
		}
	} else if (flen == 4 && !memcmp(line, "data", 4)) {
		if ((s->data_len && sse_buf_append(&s->data, &s->data_len, &s->data_cap, "\n", 1, s->max)) ||
		    sse_buf_append(&s->data, &s->data_len, &s->data_cap, value, vlen, s->max))
			s->overflow = 1;
		s->any = 1;
	}
}

int sse_parser_feed(struct sse_parser *s, const char *p, size_t n)
{
	while (n && !s->overflow && !s->stopped) {
		const char *nl = memchr(p, '\n', n);
		size_t seg = nl ? (size_t)(nl - p) : n;
		if (sse_buf_append(&s->line, &s->line_len, &s->line_cap, p, seg, s->max)) {
			s->overflow = 1;
			break;
		}
		if (!nl)
			break;
		size_t l = s->line_len;
		if (l && s->line[l - 1] == '\r')
			s->line[--l] = '\0';
		s->line_len = 0; /* before the callback: the line stays readable in it */
		sse_line(s, s->line, l);
		p += seg + 1;
		n -= seg + 1;
	}
	return s->overflow || s->stopped ? -1 : 0;
}
