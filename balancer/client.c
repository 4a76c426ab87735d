/* client.c — who is calling the balancer, and from where.
 *
 * Identity (docs/security.md, "Who can do what"):
 *  - the gateway, with the admin token, names its end client
 *    (X-Sdgate-Client);
 *  - an A1111 client that sends an API key (Authorization: Bearer <key>, or
 *    Basic credentials as A1111's --api-auth clients send them) is that key,
 *    kept only as a hash ("key:" + 32 hex digits of SHA-256);
 *  - anyone else is its address: the peer, or behind a --trusted-proxy the
 *    address that proxy names (X-Real-IP, else the last X-Forwarded-For);
 *    IPv6 by its /64 (one subscriber's prefix), IPv4-mapped as IPv4.
 * Queue limits and Idempotency-Keys use all three. An address is never an
 * identity for the façade's progress and interrupt: many clients share one
 * behind a NAT or a proxy, so anonymous clients see and stop nothing there.
 *
 * Requests are screened before any route (bal_guard): X-Sdgate-Client with
 * a Bearer token that is not the admin token gets 401.
 * Cross-site requests: a web page can make a browser POST to the balancer
 * without asking it first (a CORS "simple" request: a form or text/plain
 * body). Such bodies are refused (415), and so is any request that carries
 * an Origin not in --allowed-origin (403); A1111 clients, the gateway and
 * providers send no Origin. Loop thread. */
#include "balancer.h"

#include "b64.h"
#include "error.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* text (len bytes, not NUL-terminated) as an IPv6 address, IPv4 mapped
 * into ::ffff:0:0/96. Returns 0, or -1 when it is not an address. */
static int parse_addr(const char *text, size_t len, struct in6_addr *out)
{
	char buf[INET6_ADDRSTRLEN];
	if (len == 0 || len >= sizeof buf)
		return -1;
	memcpy(buf, text, len);
	buf[len] = '\0';
	struct in_addr v4;
	if (inet_pton(AF_INET, buf, &v4) == 1) {
		memset(out, 0, sizeof *out);
		out->s6_addr[10] = out->s6_addr[11] = 0xff;
		memcpy(&out->s6_addr[12], &v4, 4);
		return 0;
	}
	return inet_pton(AF_INET6, buf, out) == 1 ? 0 : -1;
}

int bal_valid_address(const char *text) { return text && parse_addr(text, strlen(text), &(struct in6_addr){0}) == 0; }

static int peer_addr(h2o_req_t *req, struct in6_addr *out)
{
	struct sockaddr_storage ss;
	socklen_t sl = req->conn->callbacks->get_peername(req->conn, (struct sockaddr *)&ss);
	if (sl == 0)
		return -1;
	if (ss.ss_family == AF_INET) {
		memset(out, 0, sizeof *out);
		out->s6_addr[10] = out->s6_addr[11] = 0xff;
		memcpy(&out->s6_addr[12], &((struct sockaddr_in *)&ss)->sin_addr, 4);
		return 0;
	}
	if (ss.ss_family == AF_INET6) {
		*out = ((struct sockaddr_in6 *)&ss)->sin6_addr;
		return 0;
	}
	return -1;
}

static int is_trusted(struct balancer *b, const struct in6_addr *a)
{
	for (char **p = b->cfg.trusted_proxies; p && *p; p++) {
		struct in6_addr t;
		if (parse_addr(*p, strlen(*p), &t) == 0 && memcmp(&t, a, sizeof t) == 0)
			return 1;
	}
	return 0;
}

/* The address a trusted proxy names: its X-Real-IP, else the last entry of
 * X-Forwarded-For (the one it appended; earlier ones are the client's to
 * forge). Leaves *a as it is when neither holds an address. */
static void forwarded_addr(h2o_req_t *req, struct in6_addr *a)
{
	h2o_iovec_t v = httpd_header(req, "x-real-ip");
	if (!v.len) {
		v = httpd_header(req, "x-forwarded-for");
		const char *comma = v.len ? memrchr(v.base, ',', v.len) : NULL;
		if (comma) {
			v.len -= (size_t)(comma + 1 - v.base);
			v.base = (char *)comma + 1;
		}
	}
	while (v.len && (*v.base == ' ' || *v.base == '\t'))
		v.base++, v.len--;
	while (v.len && (v.base[v.len - 1] == ' ' || v.base[v.len - 1] == '\t'))
		v.len--;
	struct in6_addr f;
	if (parse_addr(v.base, v.len, &f) == 0)
		*a = f;
}

/* "203.0.113.7", or "2001:db8:1:2::/64" for any address of that /64. */
static void format_addr(const struct in6_addr *a, char *out, size_t len)
{
	static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
	if (memcmp(a->s6_addr, mapped, sizeof mapped) == 0) {
		inet_ntop(AF_INET, &a->s6_addr[12], out, (socklen_t)len);
		return;
	}
	struct in6_addr net = *a;
	memset(&net.s6_addr[8], 0, 8);
	char text[INET6_ADDRSTRLEN];
	inet_ntop(AF_INET6, &net, text, sizeof text);
	snprintf(out, len, "%s/64", text);
}

/* "key:" + hex of SHA-256(scheme, credentials); 0, or -1 when the request
 * carries no usable key (none, another scheme, or empty Basic credentials:
 * SillyTavern sends "Basic " with nothing when no auth is set). */
static int api_key(h2o_req_t *req, char *out, size_t len)
{
	h2o_iovec_t v = httpd_header(req, "authorization");
	const char *scheme;
	size_t skip;
	if (v.len > 7 && strncasecmp(v.base, "Bearer ", 7) == 0)
		scheme = "bearer", skip = 7;
	else if (v.len > 6 && strncasecmp(v.base, "Basic ", 6) == 0)
		scheme = "basic", skip = 6;
	else
		return -1;
	const char *cred = v.base + skip;
	size_t n = v.len - skip;
	while (n && *cred == ' ')
		cred++, n--;
	while (n && cred[n - 1] == ' ')
		n--;
	if (n == 0 || (scheme[1] == 'a' && n == 4 && memcmp(cred, "Og==", 4) == 0)) /* base64(":") */
		return -1;
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned mdlen = 0;
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	int ok = ctx && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) &&
		 EVP_DigestUpdate(ctx, scheme, strlen(scheme) + 1) && EVP_DigestUpdate(ctx, cred, n) &&
		 EVP_DigestFinal_ex(ctx, md, &mdlen);
	EVP_MD_CTX_free(ctx);
	if (!ok || mdlen < 16 || len < 4 + 32 + 1)
		return -1;
	static const char hex[] = "0123456789abcdef";
	memcpy(out, "key:", 4);
	for (int i = 0; i < 16; i++) {
		out[4 + 2 * i] = hex[md[i] >> 4];
		out[5 + 2 * i] = hex[md[i] & 15];
	}
	out[36] = '\0';
	return 0;
}

enum bal_client_kind bal_client_of(struct balancer *b, h2o_req_t *req, char *out, size_t len)
{
	h2o_iovec_t named = httpd_header(req, "x-sdgate-client");
	if (named.len && named.len < len && bal_bearer_ok(req, b->cfg.admin_token)) {
		struct in6_addr a; /* the gateway names browsers by address: IPv6 by its /64 here too */
		if (parse_addr(named.base, named.len, &a) == 0) {
			format_addr(&a, out, len);
		} else {
			memcpy(out, named.base, named.len);
			out[named.len] = '\0';
		}
		return BAL_CLIENT_NAMED;
	}
	if (api_key(req, out, len) == 0)
		return BAL_CLIENT_KEY;
	out[0] = '\0';
	struct in6_addr a;
	if (peer_addr(req, &a) != 0)
		return BAL_CLIENT_ADDRESS;
	if (is_trusted(b, &a))
		forwarded_addr(req, &a);
	format_addr(&a, out, len);
	return BAL_CLIENT_ADDRESS;
}

/* The media type of Content-Type, lower-cased, without parameters. */
static void media_type(h2o_req_t *req, char *out, size_t len)
{
	h2o_iovec_t v = httpd_header(req, "content-type");
	size_t n = 0;
	for (size_t i = 0; i < v.len && v.base[i] != ';' && n + 1 < len; i++)
		if (v.base[i] != ' ' && v.base[i] != '\t')
			out[n++] = (char)tolower((unsigned char)v.base[i]);
	out[n] = '\0';
}

static int origin_allowed(struct balancer *b, h2o_iovec_t origin)
{
	for (char **p = b->cfg.allowed_origins; p && *p; p++)
		if (strlen(*p) == origin.len && strncasecmp(*p, origin.base, origin.len) == 0)
			return 1;
	return 0;
}

int bal_guard(struct httpd *h, h2o_req_t *req, const char *rest)
{
	(void)rest;
	struct balancer *b = httpd_user(h);
	/* Naming a client is the admin's: a Bearer token that is not the admin
	 * token would otherwise be taken as an API key, a client of its own. */
	h2o_iovec_t auth = httpd_header(req, "authorization");
	if (httpd_header(req, "x-sdgate-client").len && auth.len > 7 && strncasecmp(auth.base, "Bearer ", 7) == 0 &&
	    !bal_bearer_ok(req, b->cfg.admin_token)) {
		bal_reply_error(req, sd_error_status(SDE_UNAUTHORIZED), sd_error_code(SDE_UNAUTHORIZED),
				"X-Sdgate-Client needs the admin token (Authorization: Bearer)", "X-Sdgate-Client");
		return 0;
	}
	for (ssize_t i = -1; (i = h2o_find_header_by_str(&req->headers, H2O_STRLIT("origin"), i)) != -1;) {
		if (!origin_allowed(b, req->headers.entries[i].value)) {
			bal_reply_error(
				req, sd_error_status(SDE_FORBIDDEN_ORIGIN), sd_error_code(SDE_FORBIDDEN_ORIGIN),
				"Requests from this web origin are not allowed (the balancer's --allowed-origin)",
				"Origin");
			return 0;
		}
	}
	if (httpd_method_is(req, "GET") || httpd_method_is(req, "HEAD"))
		return -1;
	char type[64];
	media_type(req, type, sizeof type);
	if (!strcmp(type, "text/plain") || !strcmp(type, "application/x-www-form-urlencoded") ||
	    !strcmp(type, "multipart/form-data")) {
		bal_reply_error(req, sd_error_status(SDE_MEDIA_TYPE), sd_error_code(SDE_MEDIA_TYPE),
				"Send the body as application/json (a form or text/plain body is what a cross-site web "
				"page can send)",
				"Content-Type");
		return 0;
	}
	return -1;
}
