/* api_backends.c — providers join and leave: POST /v1/backends (register),
 * POST /v1/backends/{id}/heartbeat, DELETE /v1/backends/{id}, all with the
 * provider token; GET /v1/backends is the public board. Registered backends
 * are kept in the store so that a restarted balancer still knows them (they
 * must heartbeat within the usual window). Loop thread. */
#include "balancer.h"

#include "log.h"

#include <string.h>
#include <strings.h>

#define MAX_URL 512

static struct balancer *bal(struct httpd *h) { return httpd_user(h); }

/* 1 if the request carries the provider token; else answers and returns 0. */
static int provider_ok(struct balancer *b, h2o_req_t *req)
{
	if (!b->cfg.provider_token || !*b->cfg.provider_token) {
		bal_reply_error(req, 403, "registration_disabled",
				"This balancer takes no registrations (no --provider-token configured)", NULL);
		return 0;
	}
	if (!bal_bearer_ok(req, b->cfg.provider_token)) {
		bal_reply_error(req, 401, "unauthorized", "A valid provider token is required (Authorization: Bearer)",
				NULL);
		return 0;
	}
	return 1;
}

static int bad(h2o_req_t *req, const char *field, const char *msg)
{
	bal_reply_error(req, 422, "invalid", msg, field);
	return -1;
}

/* Copies the registration's identity fields, checking each. */
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
		if (!json_is_array(models) || json_array_size(models) > 1024)
			return bad(req, "models", "models: a list of at most 1024 checkpoint titles");
		json_object_set(fixed, "models", models);
	}
	return 0;
}

static int on_register(struct httpd *h, h2o_req_t *req, const char *rest)
{
	struct balancer *b = bal(h);
	if (!provider_ok(b, req))
		return 0;
	json_error_t err;
	json_t *body = json_loadb(req->entity.base, req->entity.len, JSON_REJECT_DUPLICATES, &err);
	if (!json_is_object(body)) {
		json_decref(body);
		bal_reply_error(req, 422, "bad_json", "The body must be a JSON object", NULL);
		return 0;
	}
	const char *url = json_string_value(json_object_get(body, "url"));
	json_t *fixed = json_object();
	int rc = 0;
	if (!url || strlen(url) > MAX_URL ||
	    (strncasecmp(url, "http://", 7) != 0 && strncasecmp(url, "https://", 8) != 0) || strchr(url, '#') ||
	    strpbrk(url, " \r\n\t"))
		rc = bad(req, "url", "url: an http:// or https:// URL of at most 512 bytes");
	else
		rc = read_identity(req, body, fixed);
	if (rc == 0 && b->n_backends >= BAL_MAX_BACKENDS && !registry_find_url(b, url)) {
		bal_reply_error(req, 429, "too_many_backends", "The balancer's backend list is full", NULL);
		rc = -1;
	}
	if (rc != 0) {
		json_decref(body);
		json_decref(fixed);
		return 0;
	}
	struct bk *old = registry_find_url(b, url);
	if (old)
		registry_remove(b, old, "registered again");
	struct bk *k = registry_add(b, url, fixed, 1, NULL);
	json_decref(body);
	if (!k) {
		bal_reply_error(req, 500, "internal", "Out of memory", NULL);
		return 0;
	}
	store_save_backend(b->store, k->id, json_pack("{s:s,s:s,s:O}", "id", k->id, "url", k->url, "fixed", k->fixed));
	log_info("backend %s registered: %s (%s, gpu %s)", k->id, k->url, bk_str(k, "provider"),
		 bk_str(k, "gpu_class"));
	httpd_reply_json(
		req, 201,
		json_pack("{s:s,s:I}", "id", k->id, "heartbeat_interval_s", (json_int_t)b->cfg.heartbeat_interval_s));
	return 0;
}

static int on_backend(struct httpd *h, h2o_req_t *req, const char *rest)
{
	struct balancer *b = bal(h);
	if (!provider_ok(b, req))
		return 0;
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
		bal_reply_error(req, 404, "not_found", "No such registered backend; register again", NULL);
		return 0;
	}
	if (!strcmp(tail, "/heartbeat") && httpd_method_is(req, "POST")) {
		k->last_heartbeat = bal_now();
		httpd_reply_json(req, 200, json_pack("{s:s}", "id", k->id));
		return 0;
	}
	if (!*tail && httpd_method_is(req, "DELETE")) {
		registry_remove(b, k, "deregistered by its provider");
		httpd_reply_json(req, 200, json_pack("{s:s}", "id", id));
		return 0;
	}
	bal_reply_error(req, 405, "method_not_allowed", "Method Not Allowed", NULL);
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
