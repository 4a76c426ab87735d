/* log.h — one line per event on stderr: "2026-11-22T18:20:01.123Z INFO backend: message"
 * (control characters and bytes that are not UTF-8 in the message escaped as \xNN).
 * Thread-safe (one fprintf per line). Used by every program. */
#ifndef SDGATE_LOG_H
#define SDGATE_LOG_H

enum log_level { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR };

/* Sets the program name printed on each line (borrowed; keep it alive). */
void log_init(const char *program, enum log_level min_level);
/* Parses "debug", "info", "warn", "error"; returns -1 if unknown. */
int log_level_parse(const char *name);
void log_msg(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARN, __VA_ARGS__)
#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)

#endif
