/* clientkey.c — see clientkey.h. */
#include "clientkey.h"

#include <arpa/inet.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

static void map_v4(const void *v4, struct in6_addr *out)
{
	memset(out, 0, sizeof *out);
	out->s6_addr[10] = out->s6_addr[11] = 0xff;
	memcpy(&out->s6_addr[12], v4, 4);
}

int clientkey_parse_addr(const char *text, size_t len, struct in6_addr *out)
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

int clientkey_from_sockaddr(const struct sockaddr *sa, struct in6_addr *out)
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

void clientkey_of_addr(const struct in6_addr *a, char *out, size_t len)
{
	static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
	if (memcmp(a->s6_addr, mapped, sizeof mapped) == 0) {
		char text[INET_ADDRSTRLEN];
		inet_ntop(AF_INET, &a->s6_addr[12], text, sizeof text);
		snprintf(out, len, "%s", text);
		return;
	}
	struct in6_addr net = *a;
	memset(&net.s6_addr[8], 0, 8);
	char text[INET6_ADDRSTRLEN];
	inet_ntop(AF_INET6, &net, text, sizeof text);
	snprintf(out, len, "%s/64", text);
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
