/* apiauth.h — optional HTTP Basic auth on the A1111 façade, as A1111's
 * `--api-auth user:pass[,user2:pass2]`: the balancer's --api-auth (or
 * --api-auth-file, $SDGATE_API_AUTH, so that it need not show in `ps`).
 * Credentials are kept only as SHA-256 digests and a request's are compared
 * with every one of them in constant time (CRYPTO_memcmp on digests: neither
 * the length nor the content of a password leaks through timing). client.c
 * calls it from bal_guard; pure functions, unit-tested in
 * tests/unit/test_balancer_clientkey.c. */
#ifndef SDGATE_BALANCER_APIAUTH_H
#define SDGATE_BALANCER_APIAUTH_H

#include <stddef.h>

#define APIAUTH_MAX_USERS 64   /* credentials in one --api-auth */
#define APIAUTH_MIN_PASSWORD 8 /* bytes of each password */

struct apiauth;

/* Parses "user:pass[,user2:pass2]". NULL with *why set (static text) when
 * the list is malformed: an entry without ':', an empty user, a password
 * shorter than APIAUTH_MIN_PASSWORD, more than APIAUTH_MAX_USERS entries. */
struct apiauth *apiauth_new(const char *spec, const char **why);
void apiauth_free(struct apiauth *a);
/* 1 when the Authorization header value (len bytes; NULL/0 when absent)
 * holds Basic credentials equal to one of a's, else 0. */
int apiauth_check(const struct apiauth *a, const char *value, size_t len);

#endif
