/* client.c — who is calling the balancer, and from where: reads the
 * request (peer, headers) and makes its client key with clientkey.h and
 * netaddr.h (an address's key, the gateway's rule too).
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

#include "apiauth.h"
#include "clientkey.h"
#include "error.h"
#include "netaddr.h"

#include <ctype.h>
#include <string.h>
#include <strings.h>

int bal_valid_address(const char *text)
{
	struct in6_addr a;
	return text && netaddr_parse(text, strlen(text), &a) == 0;
}

static int is_trusted(struct balancer *b, const struct in6_addr *a)
{
	for (char **p = b->cfg.trusted_proxies; p && *p; p++) {
		struct in6_addr t;
		if (netaddr_parse(*p, strlen(*p), &t) == 0 && memcmp(&t, a, sizeof t) == 0)
			return 1;
	}
	return 0;
}

/* The peer's address, or from a trusted proxy the one it names: its
 * X-Real-IP, else the last entry of X-Forwarded-For (the one it appended;
 * earlier ones are the client's to forge). -1 when there is no peer. */
static int client_addr(struct balancer *b, h2o_req_t *req, struct in6_addr *a)
{
	struct sockaddr_storage ss;
	if (req->conn->callbacks->get_peername(req->conn, (struct sockaddr *)&ss) == 0 ||
	    netaddr_from_sockaddr((struct sockaddr *)&ss, a) != 0)
		return -1;
	if (!is_trusted(b, a))
		return 0;
	h2o_iovec_t v = httpd_header(req, "x-real-ip");
	if (!v.len)
		v = httpd_header(req, "x-forwarded-for");
	const char *text = v.base;
	size_t len = v.len;
	clientkey_last_entry(&text, &len);
	struct in6_addr named;
	if (netaddr_parse(text, len, &named) == 0)
		*a = named;
	return 0;
}

int bal_from_trusted_proxy(struct balancer *b, h2o_req_t *req)
{
	struct sockaddr_storage ss;
	struct in6_addr a;
	return req->conn->callbacks->get_peername(req->conn, (struct sockaddr *)&ss) != 0 &&
	       netaddr_from_sockaddr((struct sockaddr *)&ss, &a) == 0 && is_trusted(b, &a);
}

enum bal_client_kind bal_client_of(struct balancer *b, h2o_req_t *req, char *out, size_t len)
{
	h2o_iovec_t named = httpd_header(req, "x-sdgate-client");
	if (named.len && named.len < len && bal_bearer_ok(req, b->cfg.admin_token)) {
		struct in6_addr a; /* the gateway names browsers by address: IPv6 by its /64 here too */
		if (netaddr_parse(named.base, named.len, &a) == 0) {
			netaddr_key(&a, out, len);
		} else {
			memcpy(out, named.base, named.len);
			out[named.len] = '\0';
		}
		return BAL_CLIENT_NAMED;
	}
	h2o_iovec_t auth = httpd_header(req, "authorization");
	if (auth.len && clientkey_of_authorization(auth.base, auth.len, out, len) == 0)
		return BAL_CLIENT_KEY;
	struct in6_addr a;
	out[0] = '\0';
	if (client_addr(b, req, &a) == 0)
		netaddr_key(&a, out, len);
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

/* --api-auth covers the A1111 façade, as A1111's covers its API. */
static int needs_api_auth(struct balancer *b, h2o_req_t *req)
{
	static const char prefix[] = "/sdapi/";
	return b->api_auth && req->path_normalized.len >= sizeof prefix - 1 &&
	       memcmp(req->path_normalized.base, prefix, sizeof prefix - 1) == 0;
}

int bal_guard(struct httpd *h, h2o_req_t *req, const char *rest)
{
	(void)rest;
	struct balancer *b = httpd_user(h);
	h2o_iovec_t auth = httpd_header(req, "authorization");
	if (needs_api_auth(b, req) && !apiauth_check(b->api_auth, auth.base, auth.len)) {
		/* A1111's answer, word for word (modules/api/api.py, auth) */
		h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_WWW_AUTHENTICATE, NULL, H2O_STRLIT("Basic"));
		httpd_reply_detail(req, 401, "Incorrect username or password");
		return 0;
	}
	/* Naming a client is the admin's: a Bearer token that is not the admin
	 * token would otherwise be taken as an API key, a client of its own. */
	if (httpd_header(req, "x-sdgate-client").len && auth.len > 7 && strncasecmp(auth.base, "Bearer ", 7) == 0 &&
	    !bal_bearer_ok(req, b->cfg.admin_token)) {
		bal_reply_error(req, SDE_UNAUTHORIZED,
				"X-Sdgate-Client needs the admin token (Authorization: Bearer)", "X-Sdgate-Client");
		return 0;
	}
	for (ssize_t i = -1; (i = h2o_find_header_by_str(&req->headers, H2O_STRLIT("origin"), i)) != -1;) {
		if (!origin_allowed(b, req->headers.entries[i].value)) {
			bal_reply_error(req, SDE_FORBIDDEN_ORIGIN,
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
		bal_reply_error(req, SDE_MEDIA_TYPE,
				"Send the body as application/json (a form or text/plain body is what a cross-site web "
				"page can send)",
				"Content-Type");
		return 0;
	}
	return -1;
}
