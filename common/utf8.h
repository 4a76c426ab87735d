/* utf8.h — UTF-8 from the network, read as hostile input: the length of one
 * well-formed character, and a bounded copy that keeps only whole, valid
 * characters (what jansson's json_string and a log line can take). Pure
 * functions, thread-safe; used by log.c and by the balancer where a
 * backend's text becomes a job's error message. */
#ifndef SDGATE_UTF8_H
#define SDGATE_UTF8_H

#include <stddef.h>

/* 1..4 when s[0..len) starts with a well-formed character (no overlong form,
 * no surrogate, at most U+10FFFF, not NUL); 0 otherwise. */
size_t utf8_char_len(const unsigned char *s, size_t len);

/* Copies src[0..len) into dst (cap >= 1 bytes, always NUL-terminated): whole
 * well-formed characters only, each byte of anything else replaced by '?',
 * stopping before a character that would not fit. Returns the bytes written
 * (without the NUL). */
size_t utf8_copy(char *dst, size_t cap, const char *src, size_t len);

#endif
