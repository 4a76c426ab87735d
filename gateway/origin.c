/* origin.c — whether a websocket upgrade's Origin may open a socket.
 *
 * A browser sends the page's origin with every websocket upgrade, and a page
 * on another site can open sockets to the gateway from its visitors'
 * browsers (spending their rate limit and connection cap). So an upgrade is
 * accepted only when its Origin is the gateway's own (the scheme, host and
 * port the browser used to reach it) or one the operator listed
 * (--allowed-origin). An upgrade without Origin comes from a program, not a
 * page a visitor happened to open, and passes.
 *
 * Origins compare as RFC 6454 tuples: the scheme and host case-insensitively,
 * the port with the scheme's default filled in. Pure functions, any thread. */
#include "gateway.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct origin {
	char scheme[8];
	char host[256];
	unsigned port;
};

static unsigned default_port(const char *scheme)
{
	return !strcmp(scheme, "https") || !strcmp(scheme, "wss") ? 443 : 80;
}

/* host[:port] of s[0..n) into o (scheme already set): a DNS name or an IPv4
 * address, or an IPv6 address in brackets. 0, or -1 when malformed. */
static int parse_authority(const char *s, size_t n, struct origin *o)
{
	size_t host_end;
	if (n && s[0] == '[') {
		const char *close = memchr(s, ']', n);
		if (!close)
			return -1;
		host_end = (size_t)(close - s) + 1;
		for (size_t i = 1; i + 1 < host_end; i++)
			if (!isxdigit((unsigned char)s[i]) && s[i] != ':' && s[i] != '.')
				return -1;
	} else {
		const char *colon = memchr(s, ':', n);
		host_end = colon ? (size_t)(colon - s) : n;
		for (size_t i = 0; i < host_end; i++)
			if (!isalnum((unsigned char)s[i]) && s[i] != '.' && s[i] != '-' && s[i] != '_')
				return -1;
	}
	if (host_end == 0 || host_end >= sizeof o->host)
		return -1;
	for (size_t i = 0; i < host_end; i++)
		o->host[i] = (char)tolower((unsigned char)s[i]);
	o->host[host_end] = '\0';
	o->port = default_port(o->scheme);
	if (host_end == n)
		return 0;
	if (s[host_end] != ':' || host_end + 1 == n || n - host_end - 1 > 5)
		return -1;
	unsigned port = 0;
	for (size_t i = host_end + 1; i < n; i++) {
		if (!isdigit((unsigned char)s[i]))
			return -1;
		port = port * 10 + (unsigned)(s[i] - '0');
	}
	if (port == 0 || port > 65535)
		return -1;
	o->port = port;
	return 0;
}

/* "scheme://host[:port]" (nothing after it but an optional "/") into o. */
static int parse_origin(const char *s, struct origin *o)
{
	const char *sep = strstr(s, "://");
	if (!sep || sep == s || (size_t)(sep - s) >= sizeof o->scheme)
		return -1;
	size_t i = 0;
	for (; s + i < sep; i++) {
		if (!isalpha((unsigned char)s[i]))
			return -1;
		o->scheme[i] = (char)tolower((unsigned char)s[i]);
	}
	o->scheme[i] = '\0';
	if (strcmp(o->scheme, "http") && strcmp(o->scheme, "https"))
		return -1;
	const char *auth = sep + 3;
	size_t n = strlen(auth);
	if (n && auth[n - 1] == '/')
		n--;
	return parse_authority(auth, n, o);
}

static int same(const struct origin *a, const struct origin *b)
{
	return !strcmp(a->scheme, b->scheme) && !strcmp(a->host, b->host) && a->port == b->port;
}

int origin_valid(const char *origin)
{
	struct origin o;
	return origin && parse_origin(origin, &o) == 0;
}

int origin_allowed(const char *origin, const char *scheme, const char *host, char *const *allowed)
{
	if (!origin || !origin[0])
		return 1;
	struct origin o, own;
	if (parse_origin(origin, &o) != 0)
		return 0;
	if (scheme && host && strlen(scheme) < sizeof own.scheme) {
		size_t i = 0;
		for (; scheme[i]; i++)
			own.scheme[i] = (char)tolower((unsigned char)scheme[i]);
		own.scheme[i] = '\0';
		if (parse_authority(host, strlen(host), &own) == 0 && same(&o, &own))
			return 1;
	}
	for (char *const *a = allowed; a && *a; a++) {
		struct origin listed;
		if (parse_origin(*a, &listed) == 0 && same(&o, &listed))
			return 1;
	}
	return 0;
}
