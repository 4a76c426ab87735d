/* netaddr.c — see netaddr.h. Private ranges: RFC 6890's special-purpose
 * registries (the ones that are not globally reachable) plus multicast. */
#include "netaddr.h"

#include <arpa/inet.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

static const unsigned char v4mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff}; /* ::ffff:0:0/96 */

static int v4_private(uint32_t a)
{
	static const struct {
		uint32_t net;
		int bits;
	} ranges[] = {
		{0x00000000, 8},  /* 0/8 "this network" */
		{0x0a000000, 8},  /* 10/8 */
		{0x64400000, 10}, /* 100.64/10 shared (CGNAT) */
		{0x7f000000, 8},  /* 127/8 loopback */
		{0xa9fe0000, 16}, /* 169.254/16 link-local (cloud metadata) */
		{0xac100000, 12}, /* 172.16/12 */
		{0xc0000000, 24}, /* 192.0.0/24 protocol assignments */
		{0xc0000200, 24}, /* 192.0.2/24 documentation */
		{0xc0a80000, 16}, /* 192.168/16 */
		{0xc6120000, 15}, /* 198.18/15 benchmarking */
		{0xc6336400, 24}, /* 198.51.100/24 documentation */
		{0xcb007100, 24}, /* 203.0.113/24 documentation */
		{0xe0000000, 4},  /* 224/4 multicast */
		{0xf0000000, 4},  /* 240/4 reserved, broadcast */
	};
	for (size_t i = 0; i < sizeof ranges / sizeof ranges[0]; i++)
		if ((a & (0xffffffffu << (32 - ranges[i].bits))) == ranges[i].net)
			return 1;
	return 0;
}

static int v6_private(const unsigned char *a)
{
	static const unsigned char zero[16];
	static const unsigned char nat64[12] = {0, 0x64, 0xff, 0x9b};
	if (!memcmp(a, v4mapped, 12) || !memcmp(a, nat64, 12) || !memcmp(a, zero, 12)) /* v4 inside */
		return v4_private((uint32_t)a[12] << 24 | (uint32_t)a[13] << 16 | (uint32_t)a[14] << 8 | a[15]) ||
		       !memcmp(a, zero, 12);
	if ((a[0] & 0xfe) == 0xfc) /* fc00::/7 unique local */
		return 1;
	if (a[0] == 0xfe && (a[1] & 0xc0) == 0x80) /* fe80::/10 link-local */
		return 1;
	if (a[0] == 0xfe && (a[1] & 0xc0) == 0xc0) /* fec0::/10 site-local (deprecated) */
		return 1;
	if (a[0] == 0xff) /* multicast */
		return 1;
	if (a[0] == 0x20 && a[1] == 0x01 && a[2] == 0x0d && a[3] == 0xb8) /* 2001:db8::/32 documentation */
		return 1;
	return 0;
}

int netaddr_is_private(const char *text)
{
	char buf[64];
	size_t n = strlen(text);
	if (n >= 2 && text[0] == '[' && text[n - 1] == ']') {
		text++;
		n -= 2;
	}
	if (n >= sizeof buf)
		return -1;
	memcpy(buf, text, n);
	buf[n] = '\0';
	char *zone = strchr(buf, '%'); /* fe80::1%eth0 */
	if (zone)
		*zone = '\0';
	struct in_addr v4;
	unsigned char v6[16];
	if (inet_pton(AF_INET, buf, &v4) == 1)
		return v4_private(ntohl(v4.s_addr));
	if (inet_pton(AF_INET6, buf, v6) == 1)
		return v6_private(v6) || zone != NULL;
	return -1;
}

/* ---------------------------------------------------------------- client keys */

static void map_v4(const void *v4, struct in6_addr *out)
{
	memcpy(out->s6_addr, v4mapped, sizeof v4mapped);
	memcpy(&out->s6_addr[12], v4, 4);
}

int netaddr_parse(const char *text, size_t len, struct in6_addr *out)
{
	char buf[INET6_ADDRSTRLEN];
	if (!text || len == 0 || len >= sizeof buf)
		return -1;
	memcpy(buf, text, len);
	buf[len] = '\0';
	struct in_addr v4;
	if (inet_pton(AF_INET, buf, &v4) == 1) {
		map_v4(&v4, out);
		return 0;
	}
	return inet_pton(AF_INET6, buf, out) == 1 ? 0 : -1;
}

int netaddr_from_sockaddr(const struct sockaddr *sa, struct in6_addr *out)
{
	if (sa->sa_family == AF_INET) {
		map_v4(&((const struct sockaddr_in *)sa)->sin_addr, out);
		return 0;
	}
	if (sa->sa_family == AF_INET6) {
		*out = ((const struct sockaddr_in6 *)sa)->sin6_addr;
		return 0;
	}
	return -1;
}

/* a as text: IPv4-mapped as IPv4, else IPv6 compressed. */
static void spell(const struct in6_addr *a, char *out, size_t len, const char *suffix)
{
	char text[INET6_ADDRSTRLEN];
	if (memcmp(a->s6_addr, v4mapped, sizeof v4mapped) == 0)
		inet_ntop(AF_INET, &a->s6_addr[12], text, sizeof text);
	else
		inet_ntop(AF_INET6, a, text, sizeof text);
	snprintf(out, len, "%s%s", text, suffix);
}

void netaddr_key(const struct in6_addr *a, char *out, size_t len)
{
	if (memcmp(a->s6_addr, v4mapped, sizeof v4mapped) == 0) {
		spell(a, out, len, "");
		return;
	}
	struct in6_addr net = *a;
	memset(&net.s6_addr[8], 0, 8);
	spell(&net, out, len, "/64");
}

void netaddr_client_key(const char *addr, char *out, size_t len)
{
	struct in6_addr a;
	if (netaddr_parse(addr, strlen(addr), &a) == 0)
		netaddr_key(&a, out, len);
	else
		snprintf(out, len, "%s", addr);
}

void netaddr_canonical(const char *addr, char *out, size_t len)
{
	struct in6_addr a;
	if (netaddr_parse(addr, strlen(addr), &a) == 0)
		spell(&a, out, len, "");
	else
		snprintf(out, len, "%s", addr);
}
