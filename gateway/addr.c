/* addr.c — what a client address counts as for the per-address limits (the
 * rate limiter's bucket, --max-connections-per-address, the client name the
 * balancer's per-client cap sees).
 *
 * An IPv4 address is one client. An IPv6 host is normally given a whole /64
 * (SLAAC, privacy addresses), so one machine can pick a new address per
 * connection: IPv6 addresses count by their /64. IPv4-mapped IPv6 addresses
 * (::ffff:a.b.c.d, from a dual-stack listener) count as the IPv4 address.
 * Pure functions, any thread. */
#include "gateway.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

static void copy(char *out, size_t len, const char *s) { snprintf(out, len, "%s", s); }

/* Parses addr as IPv4 (into v4) or IPv6 (into v6, v4-mapped turned into
 * v4): 4, 6, or 0 when it is neither. */
static int parse(const char *addr, struct in_addr *v4, struct in6_addr *v6)
{
	if (inet_pton(AF_INET, addr, v4) == 1)
		return 4;
	if (inet_pton(AF_INET6, addr, v6) != 1)
		return 0;
	if (IN6_IS_ADDR_V4MAPPED(v6)) {
		memcpy(&v4->s_addr, &v6->s6_addr[12], 4);
		return 4;
	}
	return 6;
}

void addr_canonical(const char *addr, char *out, size_t len)
{
	struct in_addr v4;
	struct in6_addr v6;
	char text[INET6_ADDRSTRLEN];
	int family = parse(addr, &v4, &v6);
	if (family == 4 && inet_ntop(AF_INET, &v4, text, sizeof text))
		copy(out, len, text);
	else if (family == 6 && inet_ntop(AF_INET6, &v6, text, sizeof text))
		copy(out, len, text);
	else
		copy(out, len, addr);
}

void addr_key(const char *addr, char *out, size_t len)
{
	struct in_addr v4;
	struct in6_addr v6;
	int family = parse(addr, &v4, &v6);
	if (family == 6) {
		char text[INET6_ADDRSTRLEN];
		memset(&v6.s6_addr[8], 0, 8);
		if (inet_ntop(AF_INET6, &v6, text, sizeof text)) {
			snprintf(out, len, "%s/64", text);
			return;
		}
	}
	addr_canonical(addr, out, len);
}
