/* netaddr.h — IP addresses as the programs judge them:
 *  - which are "public": the balancer refuses to call a registered backend
 *    at a loopback, private, link-local, shared (CGNAT), unspecified,
 *    multicast or reserved address unless --allow-private-backends (fetch.c
 *    checks the address curl actually connected to; api_backends.c the
 *    literal host of a registration URL);
 *  - what a client address counts as (the balancer's and the gateway's
 *    per-client limits): an IPv4 address is one client; IPv6 addresses count
 *    by their /64 ("2001:db8:1:2::/64": one subscriber's prefix, where a
 *    host may pick a new address per connection); IPv4-mapped IPv6
 *    (::ffff:a.b.c.d, from a dual-stack listener) counts as the IPv4 address.
 * Addresses are held as struct in6_addr, IPv4 mapped into ::ffff:0:0/96.
 * Pure functions; thread-safe. Unit-tested in tests/unit/test_common_netaddr.c. */
#ifndef SDGATE_NETADDR_H
#define SDGATE_NETADDR_H

#include <netinet/in.h>
#include <stddef.h>
#include <sys/socket.h>

/* 1 if text is an IPv4 or IPv6 literal (brackets allowed) that is not public,
 * 0 if it is a public address, -1 if it is not an IP literal. */
int netaddr_is_private(const char *text);

/* text (len bytes, not NUL-terminated) as an address, IPv4 mapped into
 * ::ffff:0:0/96. Returns 0, or -1 when it is not an address. */
int netaddr_parse(const char *text, size_t len, struct in6_addr *out);
/* The same for a socket address (AF_INET or AF_INET6); -1 for others. */
int netaddr_from_sockaddr(const struct sockaddr *sa, struct in6_addr *out);
/* The client key of an address: IPv4 (and IPv4-mapped) as dotted quad, IPv6
 * as its /64. out gets at most len - 1 characters (64 always suffice). */
void netaddr_key(const struct in6_addr *a, char *out, size_t len);
/* The client key of an address written as text; text that is not an address
 * ("unknown") is its own key. */
void netaddr_client_key(const char *addr, char *out, size_t len);
/* The address as one spelling: IPv4-mapped IPv6 as IPv4, IPv6 compressed;
 * text that is not an address is copied as it is. */
void netaddr_canonical(const char *addr, char *out, size_t len);

#endif
