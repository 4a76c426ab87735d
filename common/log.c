/* log.c — see log.h. */
#include "log.h"

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

void log_msg(enum log_level level, const char *fmt, ...)
{
	if (level < log_min)
		return;
	char msg[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	/* Network text can reach a log line: keep it on one line. */
	for (char *c = msg; *c; c++)
		if (*c == '\n' || *c == '\r')
			*c = ' ';

	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	struct tm tm;
	gmtime_r(&ts.tv_sec, &tm);
	char when[32];
	strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
	fprintf(stderr, "%s.%03ldZ %s %s: %s\n", when, ts.tv_nsec / 1000000, LEVEL_NAMES[level], log_program, msg);
}
