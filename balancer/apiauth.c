/* apiauth.c — see apiauth.h. */
#include "apiauth.h"

#include "b64.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define DIGEST 32

struct apiauth {
	size_t n;
	unsigned char digest[APIAUTH_MAX_USERS][DIGEST];
};

static int sha256(const void *p, size_t n, unsigned char out[DIGEST])
{
	unsigned len = 0;
	return EVP_Digest(p, n, out, &len, EVP_sha256(), NULL) && len == DIGEST ? 0 : -1;
}

struct apiauth *apiauth_new(const char *spec, const char **why)
{
	struct apiauth *a = calloc(1, sizeof *a);
	if (!a) {
		*why = "out of memory";
		return NULL;
	}
	const char *p = spec;
	*why = NULL;
	while (!*why) {
		size_t n = strcspn(p, ",");
		const char *colon = memchr(p, ':', n);
		if (!colon || colon == p)
			*why = "expected user:password[,user2:password2]";
		else if ((size_t)(p + n - colon - 1) < APIAUTH_MIN_PASSWORD)
			*why = "each password must be at least 8 bytes";
		else if (a->n >= APIAUTH_MAX_USERS)
			*why = "at most 64 user:password pairs";
		else if (sha256(p, n, a->digest[a->n++]) != 0)
			*why = "cannot hash the credentials";
		if (!p[n])
			break;
		p += n + 1;
	}
	if (*why) {
		OPENSSL_cleanse(a, sizeof *a);
		free(a);
		return NULL;
	}
	return a;
}

void apiauth_free(struct apiauth *a)
{
	if (a)
		OPENSSL_cleanse(a, sizeof *a);
	free(a);
}

int apiauth_check(const struct apiauth *a, const char *value, size_t len)
{
	if (!a || !value || len <= 6 || strncasecmp(value, "Basic ", 6) != 0)
		return 0;
	const char *cred = value + 6;
	size_t n = len - 6;
	while (n && (*cred == ' ' || *cred == '\t'))
		cred++, n--;
	while (n && (cred[n - 1] == ' ' || cred[n - 1] == '\t'))
		n--;
	size_t plain_len = 0;
	unsigned char *plain = n ? b64_decode_new(cred, n, &plain_len) : NULL;
	unsigned char d[DIGEST];
	int ok = plain && sha256(plain, plain_len, d) == 0;
	if (plain) {
		OPENSSL_cleanse(plain, plain_len);
		free(plain);
	}
	if (!ok)
		return 0;
	int match = 0;
	for (size_t i = 0; i < a->n; i++) /* every entry, whichever matches */
		match |= CRYPTO_memcmp(d, a->digest[i], DIGEST) == 0;
	OPENSSL_cleanse(d, sizeof d);
	return match;
}
