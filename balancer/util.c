/* util.c — small helpers every balancer module uses: clocks, random ids,
 * token checks, and sdgate's error reply. (Who the client is: client.c.) */
#include "balancer.h"

#include "error.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <netinet/in.h>
#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

struct balancer *balancer_of(struct httpd *h) { return httpd_user(h); }

double bal_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

double bal_unix_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void to_hex(const unsigned char *raw, size_t n, char *out)
{
	static const char hex[] = "0123456789abcdef";
	for (size_t i = 0; i < n; i++) {
		out[2 * i] = hex[raw[i] >> 4];
		out[2 * i + 1] = hex[raw[i] & 15];
	}
	out[2 * n] = '\0';
}

/* n random bytes as 2n hex chars + NUL. */
static void random_hex(char *out, size_t n)
{
	unsigned char raw[BAL_SECRET_HEX / 2];
	size_t got = 0;
	while (got < n) {
		ssize_t r = getrandom(raw + got, n - got, 0);
		if (r > 0)
			got += (size_t)r;
	}
	to_hex(raw, n, out);
}

void bal_random_id(char out[BAL_ID_LEN + 1]) { random_hex(out, BAL_ID_LEN / 2); }

void bal_random_secret(char out[BAL_SECRET_HEX + 1]) { random_hex(out, BAL_SECRET_HEX / 2); }

void bal_sha256_hex(const char *text, char out[BAL_SECRET_HEX + 1])
{
	unsigned char md[SHA256_DIGEST_LENGTH];
	SHA256((const unsigned char *)text, strlen(text), md);
	to_hex(md, sizeof md, out);
}

const char *bal_bearer(h2o_req_t *req)
{
	h2o_iovec_t v = httpd_header(req, "authorization");
	static const char prefix[] = "Bearer ";
	size_t plen = sizeof prefix - 1;
	if (v.len <= plen || v.len > plen + 1024 || strncasecmp(v.base, prefix, plen) != 0)
		return NULL;
	return h2o_strdup(&req->pool, v.base + plen, v.len - plen).base;
}

int bal_bearer_ok(h2o_req_t *req, const char *token)
{
	if (!token || !*token)
		return 0;
	h2o_iovec_t v = httpd_header(req, "authorization");
	static const char prefix[] = "Bearer ";
	size_t plen = sizeof prefix - 1, tlen = strlen(token);
	if (v.len != plen + tlen || strncasecmp(v.base, prefix, plen) != 0)
		return 0;
	return CRYPTO_memcmp(v.base + plen, token, tlen) == 0;
}

void bal_reply_error(h2o_req_t *req, enum sd_error e, const char *message, const char *field)
{
	httpd_reply_json(req, sd_error_status(e), sd_error_json(e, message, field && *field ? field : NULL));
}

/* Copies one part of the URL (NULL when absent). */
static char *url_part(CURLU *u, CURLUPart what, unsigned flags)
{
	char *v = NULL;
	if (curl_url_get(u, what, &v, flags) != CURLUE_OK)
		return NULL;
	return v;
}

int bal_url_parse(const char *url, struct bal_url *out)
{
	memset(out, 0, sizeof *out);
	CURLU *u = curl_url();
	if (!u || strlen(url) > BAL_MAX_URL || curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK) {
		curl_url_cleanup(u);
		return -1;
	}
	char *scheme = url_part(u, CURLUPART_SCHEME, 0), *host = url_part(u, CURLUPART_HOST, 0);
	char *port = url_part(u, CURLUPART_PORT, CURLU_DEFAULT_PORT), *path = url_part(u, CURLUPART_PATH, 0);
	char *user = url_part(u, CURLUPART_USER, 0), *password = url_part(u, CURLUPART_PASSWORD, 0);
	char *options = url_part(u, CURLUPART_OPTIONS, 0), *query = url_part(u, CURLUPART_QUERY, 0);
	char *fragment = url_part(u, CURLUPART_FRAGMENT, 0);
	int rc = -1;
	if (scheme && host && *host && port && (!strcmp(scheme, "http") || !strcmp(scheme, "https")) &&
	    strlen(host) < sizeof out->host) {
		size_t plen = path ? strlen(path) : 0;
		while (plen > 0 && path[plen - 1] == '/')
			plen--;
		snprintf(out->host, sizeof out->host, "%s", host);
		for (char *p = out->host; *p; p++)
			*p = (char)(*p >= 'A' && *p <= 'Z' ? *p - 'A' + 'a' : *p);
		out->port = strtol(port, NULL, 10);
		snprintf(out->base, sizeof out->base, "%s://%s:%ld%.*s", scheme, out->host, out->port, (int)plen,
			 path ? path : "");
		out->userinfo = user || password || options;
		out->query = query != NULL;
		out->fragment = fragment != NULL;
		rc = 0;
	}
	curl_free(scheme);
	curl_free(host);
	curl_free(port);
	curl_free(path);
	curl_free(user);
	curl_free(password);
	curl_free(options);
	curl_free(query);
	curl_free(fragment);
	curl_url_cleanup(u);
	return rc;
}
