/* api_backends.c — providers join and leave: POST /v1/backends (register,
 * with a provider token), POST /v1/backends/{id}/heartbeat and
 * DELETE /v1/backends/{id} (with that registration's secret); GET
 * /v1/backends is the public board. Registered backends are kept in the
 * store so that a restarted balancer still knows them (they must heartbeat
 * within the usual window). Loop thread.
 *
 * Who may register what (docs/security.md "How a provider is trusted"):
 * - a --provider-tokens token registers under its own name only, as many
 *   backends as it likes; a --provider-token (shared) registration names
 *   itself, and a name held by a live registration is not given to another
 *   (409 name_taken), nor is a name of --provider-tokens;
 * - a URL held by a static backend or by another provider's live
 *   registration is not given away (409 url_taken); the same named provider
 *   registering its URL again replaces its old registration;
 * - the URL is http(s) to a host (and port, and an optional path prefix),
 *   without userinfo, query or fragment, not the balancer itself, and not a
 *   non-public address unless --allow-private-backends (checked here for IP
 *   literals and "localhost", and again by fetch.c on every call for the
 *   address actually connected to).
 * Each registration gets two secrets, answered once: "secret" (its Bearer
 * for heartbeat and DELETE; only its SHA-256 is kept) and "backend_token"
 * (what the balancer sends the backend as Bearer on every call). */
#include "balancer.h"

#include "config.h"
#include "error.h"
#include "log.h"
#include "netaddr.h"

#include <openssl/crypto.h>
#include <string.h>
#include <strings.h>

static struct balancer *bal(struct httpd *h) { return httpd_user(h); }

static void reply(h2o_req_t *req, enum sd_error e, const char *message, const char *field)
{
	bal_reply_error(req, e, message, field);
}

static int bad(h2o_req_t *req, const char *field, const char *msg)
{
	reply(req, SDE_INVALID, msg, field);
	return -1;
}

/* The --provider-tokens name of this token, or NULL (every entry is
 * compared, in constant time, whatever matches). */
static const char *named_provider(const struct balancer *b, const char *token)
{
	const char *name = NULL;
	size_t tlen = strlen(token);
	for (size_t i = 0; i < b->n_ptokens; i++) {
		const struct provider_token *p = &b->ptokens[i];
		if (strlen(p->token) == tlen && CRYPTO_memcmp(p->token, token, tlen) == 0)
			name = p->name;
	}
	return name;
}

static int is_named(const struct balancer *b, const char *name)
{
	for (size_t i = 0; i < b->n_ptokens; i++)
		if (!strcmp(b->ptokens[i].name, name))
			return 1;
	return 0;
}

/* Who registers: sets *named to the token's name (--provider-tokens) or
 * NULL (the shared token). 0, or answers and returns -1. */
static int provider_auth(struct balancer *b, h2o_req_t *req, const char **named)
{
	if (!b->cfg.provider_token && !b->n_ptokens) {
		reply(req, SDE_REGISTRATION_OFF,
		      "This balancer takes no registrations (no --provider-token or --provider-tokens configured)",
		      NULL);
		return -1;
	}
	const char *token = bal_bearer(req);
	*named = token ? named_provider(b, token) : NULL;
	if (*named || (token && bal_bearer_ok(req, b->cfg.provider_token)))
		return 0;
	reply(req, SDE_UNAUTHORIZED, "A valid provider token is required (Authorization: Bearer)", NULL);
	return -1;
}

/* Copies the registration's identity fields, checking each; nothing else
 * of the body is kept. */
static int read_identity(h2o_req_t *req, json_t *body, json_t *fixed)
{
	static const char *const strings[] = {"provider",  "location", "country", "gpu",
					      "gpu_class", "engine",   "version", "device"};
	for (size_t i = 0; i < sizeof strings / sizeof strings[0]; i++) {
		json_t *v = json_object_get(body, strings[i]);
		if (!v || json_is_null(v))
			continue;
		if (!json_is_string(v) || json_string_length(v) > BAL_MAX_FIELD)
			return bad(req, strings[i], "must be a string of at most 256 bytes");
		json_object_set(fixed, strings[i], v);
	}
	if (!json_is_string(json_object_get(fixed, "gpu_class")))
		return bad(req, "gpu_class", "gpu_class is required");
	char cls[64];
	snprintf(cls, sizeof cls, "%s", json_string_value(json_object_get(fixed, "gpu_class")));
	for (char *p = cls; *p; p++)
		*p = (char)(*p >= 'A' && *p <= 'Z' ? *p - 'A' + 'a' : *p);
	json_object_set_new(fixed, "gpu_class", json_string(cls));
	static const char *const numbers[] = {"lat", "lon", "price_per_hour"};
	static const double lo[] = {-90, -180, 0}, hi[] = {90, 180, 1e6};
	for (size_t i = 0; i < 3; i++) {
		json_t *v = json_object_get(body, numbers[i]);
		if (!v || json_is_null(v))
			continue;
		if (!json_is_number(v) || json_number_value(v) < lo[i] || json_number_value(v) > hi[i])
			return bad(req, numbers[i], "out of range");
		json_object_set(fixed, numbers[i], v);
	}
	json_t *sim = json_object_get(body, "simulated");
	if (json_is_boolean(sim))
		json_object_set(fixed, "simulated", sim);
	json_t *slots = json_object_get(body, "slots");
	if (slots && !json_is_null(slots)) {
		if (!json_is_integer(slots) || json_integer_value(slots) < 1 ||
		    json_integer_value(slots) > BAL_MAX_SLOTS)
			return bad(req, "slots", "slots: 1 to 8");
		json_object_set(fixed, "slots", slots);
	}
	json_t *models = json_object_get(body, "models");
	if (models && !json_is_null(models)) {
		size_t i;
		json_t *m;
		if (!json_is_array(models) || json_array_size(models) > 1024)
			return bad(req, "models", "models: a list of at most 1024 checkpoint titles");
		json_array_foreach(models, i, m)
		{
			if (!json_is_string(m) || json_string_length(m) > BAL_MAX_FIELD)
				return bad(req, "models", "models: each a string of at most 256 bytes");
		}
		json_object_set(fixed, "models", models);
	}
	return 0;
}

/* Is the URL this balancer's own listen address? (The instance id check in
 * fetch.c catches every other way back to it.) */
static int is_self(const struct balancer *b, const struct bal_url *u)
{
	char host[64];
	int port;
	if (config_split_listen(b->cfg.listen, host, sizeof host, &port) != 0 || port != u->port)
		return 0;
	char bracketed[70];
	snprintf(bracketed, sizeof bracketed, "[%s]", host);
	if (!strcasecmp(u->host, host) || !strcasecmp(u->host, bracketed))
		return 1;
	int wildcard = !strcmp(host, "0.0.0.0") || !strcmp(host, "::");
	return wildcard && (netaddr_is_private(u->host) == 1 || !strcmp(u->host, "localhost"));
}

/* 0 and the URL's parts, or answers 422 (field "url") and returns -1. */
static int check_url(struct balancer *b, h2o_req_t *req, const char *url, struct bal_url *u)
{
	if (!url || strlen(url) > BAL_MAX_URL || bal_url_parse(url, u) != 0)
		return bad(req, "url", "url: an http:// or https:// URL to a host, of at most 512 bytes");
	for (const unsigned char *p = (const unsigned char *)url; *p; p++)
		if (*p <= ' ' || *p >= 127 || *p == '\\')
			return bad(req, "url", "url: no spaces, control or non-ASCII characters");
	if (u->userinfo || strchr(url, '@'))
		return bad(req, "url", "url: no user name or password (they would show to whoever reads it)");
	if (u->query || u->fragment || strpbrk(url, "?#"))
		return bad(req, "url", "url: no query or fragment (a base URL; the balancer adds the paths)");
	if (is_self(b, u))
		return bad(req, "url", "url: this is the balancer itself");
	const char *h = u->host;
	size_t hl = strlen(h);
	int local_name = !strcmp(h, "localhost") || (hl > 10 && !strcmp(h + hl - 10, ".localhost"));
	if (!b->cfg.allow_private_backends && (netaddr_is_private(h) == 1 || local_name))
		return bad(req, "url",
			   "url: a loopback, private or link-local address (the balancer takes only public ones)");
	return 0;
}

/* The registration's owner: its token's name, or (shared token) the name it
 * gives, else its host. 0, or answers and returns -1. */
static int owner_of(struct balancer *b, h2o_req_t *req, const char *named, json_t *fixed, const struct bal_url *u,
		    char out[BAL_MAX_FIELD + 1])
{
	const char *given = json_string_value(json_object_get(fixed, "provider"));
	if (named) {
		if (given && strcmp(given, named) != 0) {
			reply(req, SDE_FORBIDDEN, "This provider token registers only under its own name", "provider");
			return -1;
		}
		snprintf(out, BAL_MAX_FIELD + 1, "%s", named);
	} else if (given) {
		snprintf(out, BAL_MAX_FIELD + 1, "%s", given);
	} else {
		snprintf(out, BAL_MAX_FIELD + 1, "%s:%ld", u->host, u->port);
	}
	json_object_set_new(fixed, "provider", json_string(out));
	if (!named && (is_named(b, out) || registry_find_owner(b, out))) {
		reply(req, SDE_NAME_TAKEN, "A live registration (or a named provider token) holds this provider name",
		      "provider");
		return -1;
	}
	return 0;
}

/* A live backend at the same URL: a static one or another provider's
 * registration refuses (409); the same named provider's is replaced. */
static int take_url(struct balancer *b, h2o_req_t *req, const char *named, const char *owner, const char *url)
{
	struct bk *old = registry_find_url(b, url);
	if (!old)
		return 0;
	if (!old->registered || !named || strcmp(old->auth.owner, owner) != 0) {
		reply(req, SDE_URL_TAKEN, "Another backend (static or registered) already has this URL", "url");
		return -1;
	}
	registry_remove(b, old, "registered again by its provider");
	return 0;
}

static int on_register(struct httpd *h, h2o_req_t *req, const char *rest)
{
	struct balancer *b = bal(h);
	const char *named;
	if (provider_auth(b, req, &named) != 0)
		return 0;
	if (req->entity.len > BAL_MAX_REGISTRATION) {
		reply(req, SDE_BODY_TOO_LARGE, "A registration is at most 16384 bytes", NULL);
		return 0;
	}
	json_error_t err;
	json_t *body = json_loadb(req->entity.base, req->entity.len, JSON_REJECT_DUPLICATES, &err);
	if (!json_is_object(body)) {
		json_decref(body);
		reply(req, SDE_BAD_JSON, "The body must be a JSON object", NULL);
		return 0;
	}
	struct bal_url u;
	struct bk_auth auth;
	memset(&auth, 0, sizeof auth);
	json_t *fixed = json_object();
	int rc = check_url(b, req, json_string_value(json_object_get(body, "url")), &u);
	if (rc == 0)
		rc = read_identity(req, body, fixed);
	json_decref(body);
	if (rc == 0)
		rc = owner_of(b, req, named, fixed, &u, auth.owner);
	if (rc == 0)
		rc = take_url(b, req, named, auth.owner, u.base);
	if (rc == 0 && b->n_backends >= BAL_MAX_BACKENDS) {
		reply(req, SDE_TOO_MANY_BACKENDS, "The balancer's backend list is full", NULL);
		rc = -1;
	}
	if (rc != 0) {
		json_decref(fixed);
		return 0;
	}
	char secret[BAL_SECRET_HEX + 1];
	bal_random_secret(secret);
	bal_sha256_hex(secret, auth.secret_sha256);
	bal_random_secret(auth.call_token);
	struct bk *k = registry_add(b, u.base, fixed, &auth, NULL);
	if (!k) {
		reply(req, SDE_INTERNAL, "Out of memory", NULL);
		return 0;
	}
	store_save_backend(b->store, k->id,
			   json_pack("{s:s,s:s,s:O,s:s,s:s,s:s}", "id", k->id, "url", k->url, "fixed", k->fixed,
				     "owner", auth.owner, "secret_sha256", auth.secret_sha256, "call_token",
				     auth.call_token));
	log_info("backend %s registered: %s (%s%s, gpu %s)", k->id, k->url, auth.owner, named ? ", named token" : "",
		 bk_str(k, "gpu_class"));
	httpd_reply_json(req, 201,
			 json_pack("{s:s,s:s,s:s,s:s,s:I}", "id", k->id, "provider", auth.owner, "secret", secret,
				   "backend_token", auth.call_token, "heartbeat_interval_s",
				   (json_int_t)b->cfg.heartbeat_interval_s));
	return 0;
}

/* 1 if the request carries this registration's secret; else answers (401
 * without a Bearer token, 403 with another one) and returns 0. */
static int secret_ok(h2o_req_t *req, const struct bk *k)
{
	const char *token = bal_bearer(req);
	if (!token) {
		reply(req, SDE_UNAUTHORIZED, "This registration's secret is required (Authorization: Bearer)", NULL);
		return 0;
	}
	char hash[BAL_SECRET_HEX + 1];
	bal_sha256_hex(token, hash);
	if (CRYPTO_memcmp(hash, k->auth.secret_sha256, BAL_SECRET_HEX) != 0) {
		reply(req, SDE_FORBIDDEN, "Only the registration's own secret may heartbeat or deregister it", NULL);
		return 0;
	}
	return 1;
}

static int on_backend(struct httpd *h, h2o_req_t *req, const char *rest)
{
	struct balancer *b = bal(h);
	char id[BAL_ID_LEN + 1];
	size_t n = strcspn(rest, "/");
	const char *tail = rest + n;
	struct bk *k = NULL;
	if (n == BAL_ID_LEN) {
		memcpy(id, rest, n);
		id[n] = '\0';
		k = registry_find(b, id);
	}
	if (!k || !k->registered) {
		reply(req, SDE_NOT_FOUND, "No such registered backend; register again", NULL);
		return 0;
	}
	int heartbeat = !strcmp(tail, "/heartbeat") && httpd_method_is(req, "POST");
	int leave = !*tail && httpd_method_is(req, "DELETE");
	if (!heartbeat && !leave) {
		bal_reply_error(req, SDE_METHOD_NOT_ALLOWED, "Method Not Allowed", NULL);
		return 0;
	}
	if (!secret_ok(req, k))
		return 0;
	if (heartbeat) {
		k->last_heartbeat = bal_now();
		store_touch_backend(b->store, k->id); /* the others see it (a shared database; else nothing) */
		httpd_reply_json(req, 200, json_pack("{s:s}", "id", k->id));
		return 0;
	}
	registry_remove(b, k, "deregistered by its provider");
	httpd_reply_json(req, 200, json_pack("{s:s}", "id", id));
	return 0;
}

static int on_board(struct httpd *h, h2o_req_t *req, const char *rest)
{
	httpd_reply_json(req, 200, registry_board(bal(h)));
	return 0;
}

const struct httpd_route API_BACKENDS_ROUTES[] = {
	{"POST", "/v1/backends", on_register},
	{"GET", "/v1/backends", on_board},
	{NULL, "/v1/backends/", on_backend},
};
const size_t API_BACKENDS_N = sizeof API_BACKENDS_ROUTES / sizeof API_BACKENDS_ROUTES[0];
