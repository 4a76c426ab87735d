/* clientkey.h — the strings that tell a balancer's clients apart, made from
 * what a request carries: its address ("203.0.113.7"; IPv6 by its /64,
 * "2001:db8:1:2::/64"; IPv4-mapped IPv6 as IPv4) or its API key
 * (Authorization: Bearer or Basic, kept only as "key:" + 32 hex digits of
 * SHA-256). client.c reads them off requests; these are pure, thread-safe
 * functions, unit-tested in tests/unit/test_balancer_clientkey.c. */
#ifndef SDGATE_BALANCER_CLIENTKEY_H
#define SDGATE_BALANCER_CLIENTKEY_H

#include <netinet/in.h>
#include <stddef.h>
#include <sys/socket.h>

#define CLIENTKEY_KEY_LEN 36 /* "key:" + 32 hex digits */

/* text (len bytes, not NUL-terminated) as an IPv6 address, IPv4 mapped into
 * ::ffff:0:0/96. Returns 0, or -1 when it is not an address. */
int clientkey_parse_addr(const char *text, size_t len, struct in6_addr *out);
/* The same for a socket address (AF_INET or AF_INET6); -1 for others. */
int clientkey_from_sockaddr(const struct sockaddr *sa, struct in6_addr *out);
/* The last entry of a comma-separated list (X-Forwarded-For), without the
 * spaces or tabs around it: updates *text and *len. */
void clientkey_last_entry(const char **text, size_t *len);
/* The client key of an address: IPv4 as written, IPv6 as its /64. out gets
 * at most len - 1 characters (64 always suffice). */
void clientkey_of_addr(const struct in6_addr *a, char *out, size_t len);
/* The client key of an Authorization header's value (len bytes): 0, or -1
 * when it holds no usable key: none, another scheme than Bearer or Basic, or
 * empty Basic credentials ("Basic ", "Basic Og==" for ":", what clients send
 * when no auth is set). out needs CLIENTKEY_KEY_LEN + 1 bytes. */
int clientkey_of_authorization(const char *value, size_t len, char *out, size_t out_len);

#endif
