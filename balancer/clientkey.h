/* clientkey.h — the balancer's parts of telling its clients apart, made from
 * what a request carries: its API key (Authorization: Bearer or Basic, kept
 * only as "key:" + 32 hex digits of SHA-256) and the address a trusted proxy
 * names (X-Forwarded-For). An address's own key ("203.0.113.7"; IPv6 by its
 * /64) is common/netaddr.h's, shared with the gateway. client.c reads them
 * off requests; these are pure, thread-safe functions, unit-tested in
 * tests/unit/test_balancer_clientkey.c. */
#ifndef SDGATE_BALANCER_CLIENTKEY_H
#define SDGATE_BALANCER_CLIENTKEY_H

#include <stddef.h>

#define CLIENTKEY_KEY_LEN 36 /* "key:" + 32 hex digits */

/* The last entry of a comma-separated list (X-Forwarded-For), without the
 * spaces or tabs around it: updates *text and *len. */
void clientkey_last_entry(const char **text, size_t *len);
/* The client key of an Authorization header's value (len bytes): 0, or -1
 * when it holds no usable key: none, another scheme than Bearer or Basic, or
 * empty Basic credentials ("Basic ", "Basic Og==" for ":", what clients send
 * when no auth is set). out needs CLIENTKEY_KEY_LEN + 1 bytes. */
int clientkey_of_authorization(const char *value, size_t len, char *out, size_t out_len);

#endif
