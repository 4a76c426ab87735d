/* clientkey.c — see clientkey.h. */
#include "clientkey.h"

#include <openssl/evp.h>
#include <string.h>
#include <strings.h>

static int blank(char c) { return c == ' ' || c == '\t'; }

void clientkey_last_entry(const char **text, size_t *len)
{
	const char *p = *text;
	size_t n = *len;
	const char *comma = n ? memrchr(p, ',', n) : NULL;
	if (comma) {
		n -= (size_t)(comma + 1 - p);
		p = comma + 1;
	}
	while (n && blank(*p))
		p++, n--;
	while (n && blank(p[n - 1]))
		n--;
	*text = p;
	*len = n;
}

int clientkey_of_authorization(const char *value, size_t len, char *out, size_t out_len)
{
	const char *scheme;
	size_t skip;
	if (len > 7 && strncasecmp(value, "Bearer ", 7) == 0)
		scheme = "bearer", skip = 7;
	else if (len > 6 && strncasecmp(value, "Basic ", 6) == 0)
		scheme = "basic", skip = 6;
	else
		return -1;
	const char *cred = value + skip;
	size_t n = len - skip;
	while (n && blank(*cred))
		cred++, n--;
	while (n && blank(cred[n - 1]))
		n--;
	if (n == 0 || (!strcmp(scheme, "basic") && n == 4 && memcmp(cred, "Og==", 4) == 0))
		return -1;
	if (out_len < CLIENTKEY_KEY_LEN + 1)
		return -1;
	/* The scheme (with its NUL) goes in first, so that one string sent as
	 * Bearer and as Basic are two keys. */
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned mdlen = 0;
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	int ok = ctx && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) &&
		 EVP_DigestUpdate(ctx, scheme, strlen(scheme) + 1) && EVP_DigestUpdate(ctx, cred, n) &&
		 EVP_DigestFinal_ex(ctx, md, &mdlen);
	EVP_MD_CTX_free(ctx);
	if (!ok || mdlen < 16)
		return -1;
	static const char hex[] = "0123456789abcdef";
	memcpy(out, "key:", 4);
	for (int i = 0; i < 16; i++) {
		out[4 + 2 * i] = hex[md[i] >> 4];
		out[5 + 2 * i] = hex[md[i] & 15];
	}
	out[CLIENTKEY_KEY_LEN] = '\0';
	return 0;
}
