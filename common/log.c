/* log.c — see log.h. */
#include "log.h"

#include "utf8.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

static const char *log_program = "sdgate";
static enum log_level log_min = LOG_INFO;
static const char *const LEVEL_NAMES[] = {"DEBUG", "INFO", "WARN", "ERROR"};

void log_init(const char *program, enum log_level min_level)
{
	log_program = program;
	log_min = min_level;
}

int log_level_parse(const char *name)
{
	for (int i = 0; i < 4; i++)
		if (strcasecmp(name, LEVEL_NAMES[i]) == 0)
			return i;
	if (strcasecmp(name, "warning") == 0)
		return LOG_WARN;
	return -1;
}

/* Network text reaches log lines (a provider's name, a backend's error):
 * C0 controls (newlines included), DEL, C1 controls (U+0080..U+009F, which
 * some terminals read as escapes) and bytes that are not well-formed UTF-8
 * are written as \xNN, so a line stays one line and cannot drive the
 * terminal or a log viewer. out holds at least 4 * strlen(in) + 1 bytes. */
static void escape_line(char *out, const char *in)
{
	static const char HEX[] = "0123456789abcdef";
	const unsigned char *s = (const unsigned char *)in;
	size_t len = strlen(in);
	for (size_t i = 0; i < len;) {
		size_t n = utf8_char_len(s + i, len - i);
		int c1 = n == 2 && s[i] == 0xc2 && s[i + 1] < 0xa0;
		if (n == 0 || c1 || s[i] < 0x20 || s[i] == 0x7f) {
			size_t bad = c1 ? 2 : 1;
			for (size_t k = 0; k < bad; k++, i++) {
				*out++ = '\\';
				*out++ = 'x';
				*out++ = HEX[s[i] >> 4];
				*out++ = HEX[s[i] & 15];
			}
			continue;
		}
		memcpy(out, s + i, n);
		out += n;
		i += n;
	}
	*out = '\0';
}

void log_msg(enum log_level level, const char *fmt, ...)
{
	if (level < log_min)
		return;
	char msg[1024], line[4 * sizeof msg];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	escape_line(line, msg);

	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	struct tm tm;
	gmtime_r(&ts.tv_sec, &tm);
	char when[32];
	strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
	fprintf(stderr, "%s.%03ldZ %s %s: %s\n", when, ts.tv_nsec / 1000000, LEVEL_NAMES[level], log_program, line);
}
