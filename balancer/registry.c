/* registry.c — the backends the balancer knows: static ones from --backend
 * and providers that registered; their identity, checkpoints and state, the
 * probes that learn them, the health checks that bring a down backend back,
 * and heartbeat expiry. Loop thread only.
 *
 * A backend's life: PROBING (GET /sdgate/v1/info when it exists, then
 * GET /sdapi/v1/sd-models) → UP (idle or busy by its running count) →
 * DOWN on a failed call (passive check) → GET /internal/ping every
 * --health-interval-ms → PROBING again. Only A1111's API is required; the
 * sdgate extra only fills in identity. A registered backend is removed as
 * soon as a call to it is refused for where it goes (fetch.h: a non-public
 * address, this balancer or another one: a registration is a backend, never
 * a balancer, so that balancers cannot be chained into a loop by
 * providers; an operator may still chain them with static --backend). */
#include "balancer.h"

#include "log.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define PROBE_TIMEOUT_MS 5000
#define PING_TIMEOUT_MS 2000

static const char *const IDENTITY_KEYS[] = {
	"provider",  "location",       "country", "lat",     "lon",    "gpu",          "gpu_class",
	"simulated", "price_per_hour", "engine",  "version", "device", "allow_scripts"};

const char *bk_str(const struct bk *k, const char *key)
{
	const char *s = json_string_value(json_object_get(k->identity, key));
	return s ? s : "";
}

double bk_price(const struct bk *k) { return json_number_value(json_object_get(k->identity, "price_per_hour")); }

const char *registry_state_name(const struct bk *k)
{
	if (k->state != BK_UP)
		return "down";
	return k->running > 0 || k->draining ? "busy" : "idle";
}

/* A1111 accepts a checkpoint by title ("name.safetensors [hash]"), by
 * model_name, or by title without the hash; so do we. */
int registry_offers(const struct bk *k, const char *model)
{
	if (caps_has_checkpoint(&k->caps, model)) /* its short hash, sha256 or file name too */
		return 1;
	size_t i;
	json_t *v;
	size_t mlen = strlen(model);
	json_array_foreach(k->models, i, v)
	{
		const char *t = json_string_value(v);
		if (!t)
			continue;
		if (strcasecmp(t, model) == 0)
			return 1;
		const char *br = strstr(t, " [");
		if (br && (size_t)(br - t) == mlen && strncasecmp(t, model, mlen) == 0)
			return 1;
	}
	return 0;
}

/* What a backend's self-report (/sdgate/v1/info) may fill in when its
 * registration or the operator left it empty: display fields only. The price
 * never comes from it (billing); neither do a registered backend's provider
 * name (its owner) and GPU class (routing), which its registration fixed. A
 * static backend is the operator's own: its name and class may. */
static int may_self_report(const struct bk *k, const char *key)
{
	if (!strcmp(key, "price_per_hour"))
		return 0;
	if (k->registered && (!strcmp(key, "provider") || !strcmp(key, "gpu_class")))
		return 0;
	return 1;
}

/* "http://user:pw@host:port/p" → "host:port" (no userinfo, no path), for a
 * board name when nobody gave one. */
static json_t *host_of(const char *url)
{
	struct bal_url u;
	if (bal_url_parse(url, &u) != 0)
		return json_string("backend");
	return json_sprintf("%s:%ld", u.host, u.port);
}

/* identity = what the backend says about itself (see may_self_report),
 * overridden by what the operator or the registration fixed. Unknown fields
 * get defaults, so the board is total. */
static void rebuild_identity(struct bk *k, json_t *reported)
{
	json_t *id = json_object();
	for (size_t i = 0; i < sizeof IDENTITY_KEYS / sizeof IDENTITY_KEYS[0]; i++) {
		json_t *v = json_object_get(k->fixed, IDENTITY_KEYS[i]);
		if (!v && may_self_report(k, IDENTITY_KEYS[i]))
			v = json_object_get(reported, IDENTITY_KEYS[i]);
		if (v && (json_is_string(v) || json_is_number(v) || json_is_boolean(v)) &&
		    !(json_is_string(v) && strlen(json_string_value(v)) > BAL_MAX_FIELD))
			json_object_set(id, IDENTITY_KEYS[i], v);
	}
	if (!json_is_string(json_object_get(id, "provider")))
		json_object_set_new(id, "provider", host_of(k->url));
	if (!json_is_string(json_object_get(id, "location")))
		json_object_set_new(id, "location", json_string(""));
	if (!json_is_string(json_object_get(id, "gpu_class")))
		json_object_set_new(id, "gpu_class", json_string("unknown"));
	if (!json_is_string(json_object_get(id, "gpu")))
		json_object_set(id, "gpu", json_object_get(id, "gpu_class"));
	if (!json_is_number(json_object_get(id, "price_per_hour")))
		json_object_set_new(id, "price_per_hour", json_real(0));
	if (!json_is_boolean(json_object_get(id, "simulated")))
		json_object_set_new(id, "simulated", json_false());
	json_decref(k->identity);
	k->identity = id;
}

/* Appends a name to one of k's lists (bounded), once. Only the list itself
 * is asked: a name its capabilities already know must still be listed here,
 * since a refresh clears these lists and fills them again. */
static void add_name(json_t *list, json_t *name)
{
	if (!json_is_string(name) || json_string_length(name) > BAL_MAX_FIELD || json_array_size(list) >= 1024)
		return;
	size_t i;
	json_t *t;
	json_array_foreach(list, i, t) if (json_equal(t, name)) return;
	json_array_append(list, name);
}

static void add_model(struct bk *k, json_t *name) { add_name(k->models, name); }

static void add_title(struct bk *k, json_t *title) { add_name(k->titles, title); }

static void start_check(struct balancer *b, struct bk *k);

/* The probe's steps, in order. A native backend declares its capabilities in
 * /sdgate/v1/info and is up once its checkpoints are read; any other (a plain
 * A1111) once its listings are read too (each optional), so that the
 * façade's unions hold it at once. */
enum {
	STEP_PING,
	STEP_INFO,
	STEP_MODELS,
	STEP_SAMPLERS,
	STEP_SCHEDULERS,
	STEP_LISTS,                              /* + (caps_list - 1): sd-models is STEP_MODELS */
	STEP_END = STEP_LISTS + CAPS_N_LISTS - 2 /* the last listing */
};

static const char *step_path(int step)
{
	static const char *const paths[] = {"/internal/ping", "/sdgate/v1/info", "/sdapi/v1/sd-models",
					    "/sdapi/v1/samplers", "/sdapi/v1/schedulers"};
	return step < STEP_LISTS ? paths[step] : caps_path((enum caps_list)(step - STEP_LISTS + 1));
}

/* Capabilities are read again this often while a backend is up: ten
 * health-check intervals, at least BAL_CAPS_REFRESH_MIN_S. */
static double refresh_s(const struct balancer *b)
{
	return fmax(BAL_CAPS_REFRESH_MIN_S, 10.0 * (double)b->cfg.health_interval_ms / 1000.0);
}

static void check_failed(struct balancer *b, struct bk *k, const char *what, const struct fetch_result *r)
{
	char why[320];
	if (r->status)
		snprintf(why, sizeof why, "%s answered HTTP %ld", what, r->status);
	else
		snprintf(why, sizeof why, "%s: %s", what, r->error);
	if (k->refreshing) { /* a listing that fails keeps the last good one; a call that fails marks it down */
		k->refreshing = 0;
		k->next_refresh = bal_now() + refresh_s(b);
		if (r->status) {
			log_warn("backend %s (%s): capabilities not refreshed: %s", k->id, k->key, why);
			return;
		}
		k->probe_step = STEP_PING; /* the health checks start over */
	}
	if (k->state != BK_DOWN)
		log_warn("backend %s (%s) is down: %s", k->id, k->key, why);
	k->state = BK_DOWN;
	k->next_check = bal_now() + b->cfg.health_interval_ms / 1000.0;
}

static void mark_up(struct balancer *b, struct bk *k)
{
	caps_apply_fixed(&k->caps, k->fixed);
	if (k->refreshing)
		return;
	if (k->state != BK_UP)
		log_info("backend %s up: %s, %s, gpu %s, %zu checkpoint name(s), %d slot(s), %s capabilities", k->id,
			 bk_str(k, "provider"), k->key, bk_str(k, "gpu_class"), json_array_size(k->models), k->slots,
			 k->caps.declared ? "declared" : "listed");
	k->state = BK_UP;
	b->reschedule = 1;
}

static void clear_models(struct bk *k)
{
	json_array_clear(k->models);
	json_array_clear(k->titles);
}

/* GET /sdgate/v1/info: optional (a plain A1111 has none). 0 to go on. */
static int on_info(struct balancer *b, struct bk *k, const struct fetch_result *r, json_t *j)
{
	if (r->status == 200 && json_is_object(j)) {
		rebuild_identity(k, j);
		json_t *slots = json_object_get(j, "slots");
		if (!json_object_get(k->fixed, "slots") && json_is_integer(slots))
			k->slots = (int)fmin(fmax((double)json_integer_value(slots), 1), BAL_MAX_SLOTS);
		clear_models(k);
		size_t i;
		json_t *m;
		json_array_foreach(json_object_get(j, "models"), i, m)
		{
			add_model(k, m);
			add_title(k, m);
		}
		if (caps_take_declared(&k->caps, json_object_get(j, "capabilities")))
			k->caps.declared = 0;
	} else if (r->status == 0) {
		check_failed(b, k, "GET /sdgate/v1/info", r);
		return -1;
	} else if (!k->refreshing) {
		rebuild_identity(k, NULL);
		clear_models(k);
		k->caps.declared = 0;
	}
	return 0;
}

/* GET /sdapi/v1/sd-models: required. 0 to go on. */
static int on_models(struct balancer *b, struct bk *k, const struct fetch_result *r, json_t *j)
{
	if (r->status != 200 || !json_is_array(j)) {
		check_failed(b, k, "GET /sdapi/v1/sd-models", r);
		return -1;
	}
	if (k->refreshing && !k->caps.declared)
		clear_models(k);
	size_t i;
	json_t *m;
	json_array_foreach(j, i, m)
	{
		add_model(k, json_object_get(m, "title"));
		add_model(k, json_object_get(m, "model_name"));
		add_title(k, json_object_get(m, "title"));
	}
	caps_take_list(&k->caps, CAPS_SD_MODELS, j);
	return 0;
}

/* A1111's listings, all optional: 404 means none (an A1111 before 1.9 has no
 * /schedulers: "automatic" only), another answer of the wrong shape keeps
 * the last good one; samplers or schedulers never read leave the backend
 * unjudged on them (caps.h: known). A call that fails marks it down. */
static int on_listing(struct balancer *b, struct bk *k, int step, const struct fetch_result *r, json_t *j)
{
	if (r->status == 0) {
		check_failed(b, k, step_path(step), r);
		return -1;
	}
	if (r->status == 404) {
		json_t *none = json_array();
		if (step == STEP_SCHEDULERS)
			caps_take_schedulers(&k->caps, none);
		else if (step >= STEP_LISTS)
			caps_take_none(&k->caps, (enum caps_list)(step - STEP_LISTS + 1));
		json_decref(none);
	} else if (r->status == 200 && step == STEP_SAMPLERS) {
		caps_take_samplers(&k->caps, j);
	} else if (r->status == 200 && step == STEP_SCHEDULERS) {
		caps_take_schedulers(&k->caps, j);
	} else if (r->status == 200) {
		caps_take_list(&k->caps, (enum caps_list)(step - STEP_LISTS + 1), j);
	}
	return 0;
}

static void on_check(const struct fetch_result *r, void *user)
{
	struct bk *k = user;
	struct balancer *b = k->b;
	k->check = NULL;
	if (r->refused && k->registered) {
		registry_remove(b, k, r->error);
		return;
	}
	json_error_t err;
	json_t *j = r->status == 200 ? json_loadb(r->body, r->len, 0, &err) : NULL;
	int step = k->probe_step, next = step + 1;
	int go_on;
	if (step == STEP_PING) { /* a down backend; a plain A1111 has no /internal/ping: any answer but 5xx is life */
		go_on = r->status >= 200 && r->status < 500 ? 0 : -1;
		if (go_on)
			check_failed(b, k, "ping", r);
	} else if (step == STEP_INFO) {
		go_on = on_info(b, k, r, j);
	} else if (step == STEP_MODELS) {
		go_on = on_models(b, k, r, j);
		if (!go_on && k->caps.declared)
			next = STEP_END + 1;
	} else {
		go_on = on_listing(b, k, step, r, j);
	}
	json_decref(j);
	if (go_on)
		return;
	if (next > STEP_END) {
		mark_up(b, k);
		k->refreshing = 0;
		k->next_refresh = bal_now() + refresh_s(b);
		return;
	}
	k->probe_step = next;
	start_check(b, k);
}

struct fetch *registry_call(struct balancer *b, const struct bk *k, const char *method, const char *path, char *body,
			    size_t body_len, long timeout_ms, size_t max_answer, fetch_done_fn done, void *user)
{
	char url[BAL_MAX_URL + 512];
	snprintf(url, sizeof url, "%s%s", k->url, path);
	struct fetch_target t = {.bearer = k->registered ? k->auth.call_token : NULL,
				 .public_only = k->registered && !b->cfg.allow_private_backends,
				 .no_balancers = k->registered};
	return fetch_start_to(b->fetcher, &t, method, url, body, body_len, timeout_ms, max_answer, done, user);
}

static void start_check(struct balancer *b, struct bk *k)
{
	k->check = registry_call(b, k, "GET", step_path(k->probe_step), NULL, 0,
				 k->probe_step == STEP_PING ? PING_TIMEOUT_MS : PROBE_TIMEOUT_MS, BAL_MAX_SMALL_ANSWER,
				 on_check, k);
}

struct bk *registry_add(struct balancer *b, const char *url, json_t *fixed, const struct bk_auth *auth, const char *id)
{
	struct bk *k = calloc(1, sizeof *k);
	if (!k) {
		json_decref(fixed);
		return NULL;
	}
	if (id)
		snprintf(k->id, sizeof k->id, "%s", id);
	else
		bal_random_id(k->id);
	size_t n = strlen(url);
	while (n > 0 && url[n - 1] == '/')
		n--;
	k->url = strndup(url, n);
	struct bal_url u;
	k->key = bal_url_parse(url, &u) == 0 ? strdup(u.base) : strdup(k->url);
	k->b = b;
	k->registered = auth != NULL;
	if (auth)
		k->auth = *auth;
	k->fixed = fixed ? fixed : json_object();
	k->models = json_array();
	k->titles = json_array();
	json_t *slots = json_object_get(k->fixed, "slots");
	k->slots = json_is_integer(slots) ? (int)fmin(fmax((double)json_integer_value(slots), 1), BAL_MAX_SLOTS) : 1;
	json_t *models = json_object_get(k->fixed, "models");
	size_t i;
	json_t *m;
	json_array_foreach(models, i, m)
	{
		add_model(k, m);
		add_title(k, m);
	}
	rebuild_identity(k, NULL);
	caps_init(&k->caps);
	k->state = BK_PROBING;
	k->probe_step = STEP_INFO;
	k->last_heartbeat = k->added = bal_now();
	k->next = b->backends;
	b->backends = k;
	b->n_backends++;
	start_check(b, k);
	return k;
}

struct bk *registry_load_doc(struct balancer *b, json_t *doc)
{
	const char *id = json_string_value(json_object_get(doc, "id"));
	const char *url = json_string_value(json_object_get(doc, "url"));
	const char *owner = json_string_value(json_object_get(doc, "owner"));
	const char *hash = json_string_value(json_object_get(doc, "secret_sha256"));
	const char *call = json_string_value(json_object_get(doc, "call_token"));
	json_t *fixed = json_object_get(doc, "fixed");
	struct bk_auth auth;
	if (!id || !url || strlen(id) != BAL_ID_LEN || !json_is_object(fixed) || registry_find_url(b, url) || !owner ||
	    strlen(owner) > BAL_MAX_FIELD || !hash || strlen(hash) != BAL_SECRET_HEX || !call ||
	    strlen(call) != BAL_SECRET_HEX) {
		if (id)
			store_delete_backend(b->store, id);
		return NULL;
	}
	snprintf(auth.owner, sizeof auth.owner, "%s", owner);
	snprintf(auth.secret_sha256, sizeof auth.secret_sha256, "%s", hash);
	snprintf(auth.call_token, sizeof auth.call_token, "%s", call);
	return registry_add(b, url, json_incref(fixed), &auth, id);
}

struct bk *registry_find(struct balancer *b, const char *id)
{
	for (struct bk *k = b->backends; k; k = k->next)
		if (strcmp(k->id, id) == 0)
			return k;
	return NULL;
}

struct bk *registry_find_url(struct balancer *b, const char *url)
{
	struct bal_url u;
	const char *key = bal_url_parse(url, &u) == 0 ? u.base : url;
	for (struct bk *k = b->backends; k; k = k->next)
		if (strcmp(k->key, key) == 0)
			return k;
	return NULL;
}

struct bk *registry_find_owner(struct balancer *b, const char *owner)
{
	for (struct bk *k = b->backends; k; k = k->next)
		if (k->registered && strcmp(k->auth.owner, owner) == 0)
			return k;
	return NULL;
}

/* A failed job. A backend can answer its health check and still fail every
 * job (a broken GPU, garbage answers): each failure in a row doubles the
 * wait before it is checked again, up to BAL_MAX_BACKOFF_S, so that it
 * cannot eat every job's attempts. A finished job clears the strikes. */
void registry_mark_down(struct balancer *b, struct bk *k, const char *why)
{
	b->m.backend_failures++;
	if (k->strikes < 30)
		k->strikes++;
	double interval = b->cfg.health_interval_ms / 1000.0;
	double wait = interval * (double)(1u << (k->strikes - 1));
	if (wait > BAL_MAX_BACKOFF_S)
		wait = fmax(BAL_MAX_BACKOFF_S, interval);
	if (k->state != BK_DOWN)
		log_warn("backend %s (%s) is down: %s (failure %d in a row; next check in %.1f s)", k->id, k->key, why,
			 k->strikes, wait);
	if (k->refreshing) { /* the health checks take over */
		fetch_cancel(k->check);
		k->check = NULL;
		k->refreshing = 0;
	}
	k->state = BK_DOWN;
	k->probe_step = STEP_PING;
	k->next_check = bal_now() + wait;
}

static void free_bk(struct bk *k)
{
	json_decref(k->identity);
	json_decref(k->fixed);
	json_decref(k->models);
	json_decref(k->titles);
	caps_free(&k->caps);
	free(k->loaded_model);
	free(k->url);
	free(k->key);
	free(k);
}

void registry_remove(struct balancer *b, struct bk *k, const char *why)
{
	log_info("backend %s (%s) removed: %s", k->id, k->key, why);
	dispatch_backend_lost(b, k, why);
	fetch_cancel(k->check);
	fetch_cancel(k->drain_call);
	struct bk **pp = &b->backends;
	while (*pp && *pp != k)
		pp = &(*pp)->next;
	if (*pp)
		*pp = k->next;
	b->n_backends--;
	if (k->registered)
		store_delete_backend(b->store, k->id);
	free_bk(k);
	b->reschedule = 1;
}

void registry_free_all(struct balancer *b)
{
	while (b->backends) {
		struct bk *k = b->backends;
		b->backends = k->next;
		free_bk(k);
	}
	b->n_backends = 0;
}

void registry_tick(struct balancer *b, double now)
{
	double expiry = (double)(b->cfg.heartbeat_interval_s * BAL_HEARTBEAT_MISSES);
	for (struct bk *k = b->backends, *next; k; k = next) {
		next = k->next;
		if (k->registered && now - k->last_heartbeat > expiry) {
			registry_remove(b, k, "missed its heartbeats");
			continue;
		}
		if (k->state != BK_UP && !k->check && now >= k->next_check) {
			start_check(b, k);
		} else if (k->state == BK_UP && !k->check && now >= k->next_refresh) {
			k->refreshing = 1; /* what it runs may have changed (bounded: refresh_s) */
			k->probe_step = k->caps.declared ? STEP_INFO : STEP_MODELS;
			start_check(b, k);
		}
	}
}

json_t *registry_board(struct balancer *b)
{
	json_t *list = json_array(), *classes = json_object();
	for (struct bk *k = b->backends; k; k = k->next) {
		json_t *e = json_deep_copy(k->identity);
		const char *state = registry_state_name(k);
		json_object_set_new(e, "id", json_string(k->id));
		json_object_set_new(e, "state", json_string(state));
		json_object_set_new(e, "jobs_done", json_integer(k->jobs_done));
		json_object_set_new(e, "jobs_failed", json_integer(k->jobs_failed));
		json_object_set_new(e, "mean_inference_s",
				    k->jobs_done ? json_real(k->inference_sum / (double)k->jobs_done) : json_null());
		json_object_set(e, "models", k->models);
		json_object_set_new(e, "slots", json_integer(k->slots));
		json_object_set_new(e, "running", json_integer(k->running));
		json_object_set_new(e, "source", json_string(k->registered ? "registered" : "static"));
		for (size_t i = 0; i < 3; i++)
			if (!json_object_get(e, i == 0 ? "country" : i == 1 ? "lat" : "lon"))
				json_object_set_new(e, i == 0 ? "country" : i == 1 ? "lat" : "lon", json_null());
		json_array_append_new(list, e);

		const char *cls = bk_str(k, "gpu_class");
		json_t *c = json_object_get(classes, cls);
		if (!c) {
			c = json_pack("{s:s,s:i,s:i,s:i}", "class", cls, "idle", 0, "busy", 0, "down", 0);
			json_object_set_new(classes, cls, c);
		}
		json_object_set_new(c, state, json_integer(json_integer_value(json_object_get(c, state)) + 1));
	}
	json_t *gpus = json_array();
	const char *key;
	json_t *c;
	json_object_foreach(classes, key, c) json_array_append(gpus, c);
	json_decref(classes);
	return json_pack("{s:o,s:o}", "backends", list, "gpus", gpus);
}
