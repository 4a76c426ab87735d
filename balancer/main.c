/* main.c — sdgate-balancer: flags, the store (SQLite or PostgreSQL), the
 * static backends and what the store remembers, the h2o server with its four APIs, the
 * periodic work (dispatch, health, heartbeats, expiry), and a clean stop on
 * SIGINT/SIGTERM that leaves every unfinished job in the store for the next
 * start. */
#include "balancer.h"

#include "apiauth.h"
#include "config.h"
#include "forward.h"
#include "image.h"
#include "log.h"
#include "a1111.h"
#include "prefs.h"
#include "router.h"

#include <curl/curl.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define SLOW_TICK_S 0.25
#define EXPIRE_EVERY_S 60.0

static struct balancer B;
static const char *log_level = "info";

static const struct config_option OPTIONS[] = {
	{"listen", CONFIG_STRING, &B.cfg.listen, "HOST:PORT", "address of the API (A1111 façade, jobs, backends, ops)",
	 0, 0},
	{"db", CONFIG_STRING, &B.cfg.db, "FILE|URL",
	 "where jobs, results and registered backends are kept: a SQLite file (WAL), or a PostgreSQL server "
	 "(postgresql://USER@HOST:PORT/DB; a password is better in PGPASSWORD or ~/.pgpass than in the URL)",
	 0, 0},
	{"db-wait-s", CONFIG_DOUBLE, &B.cfg.db_wait_s, "S",
	 "at start, how long a PostgreSQL server that does not answer is tried again before giving up", 0, 3600},
	{"lease-s", CONFIG_DOUBLE, &B.cfg.lease_s, "S",
	 "PostgreSQL (balancers sharing it): a balancer with no heartbeat for S seconds is taken for dead and its "
	 "unfinished jobs are taken over; each beats every S/4",
	 1, 600},
	{"backend", CONFIG_LIST, &B.cfg.backends, "URL",
	 "a static backend (repeatable); identity may ride in the fragment: "
	 "URL#provider=P&location=L&gpu_class=C&price_per_hour=X&slots=N",
	 0, 0},
	{"provider-token", CONFIG_SECRET, &B.cfg.provider_token, "T",
	 "shared Bearer token providers need to register; a provider name is then held by its live registration", 0, 0},
	{"provider-tokens", CONFIG_STRING, &B.cfg.provider_tokens, "FILE",
	 "lines \"<provider name><TAB><token>\": each token registers under its own name only", 0, 0},
	{"allow-private-backends", CONFIG_BOOL, &B.cfg.allow_private_backends, NULL,
	 "let registrations point at loopback, private and link-local addresses (tests, private clusters)", 0, 0},
	{"admin-token", CONFIG_SECRET, &B.cfg.admin_token, "T",
	 "Bearer token of the gateway/admin (lets it name end clients with X-Sdgate-Client)", 0, 0},
	{"api-auth", CONFIG_SECRET, &B.cfg.api_auth, "USER:PASS[,USER2:PASS2]",
	 "HTTP Basic auth on the A1111 façade (/sdapi/*), as A1111's --api-auth: 401 without one of these "
	 "credentials; passwords of at least 8 bytes",
	 0, 0},
	{"trusted-proxy", CONFIG_LIST, &B.cfg.trusted_proxies, "ADDR",
	 "a reverse proxy (e.g. NGINX) whose X-Real-IP / last X-Forwarded-For names the client (repeatable; by IP)", 0,
	 0},
	{"allowed-origin", CONFIG_LIST, &B.cfg.allowed_origins, "ORIGIN",
	 "a web origin (https://app.example) whose browser requests are accepted (repeatable; none by default: any "
	 "request with another Origin gets 403)",
	 0, 0},
	{"max-queue", CONFIG_INT, &B.cfg.max_queue, "N", "queued jobs in all (429 past it)", 1, 1000000},
	{"max-queue-per-client", CONFIG_INT, &B.cfg.max_queue_per_client, "N",
	 "unfinished jobs per client (429 past it)", 1, 1000000},
	{"max-attempts", CONFIG_INT, &B.cfg.max_attempts, "N", "dispatches per job before it fails", 1, 100},
	{"heartbeat-interval", CONFIG_INT, &B.cfg.heartbeat_interval_s, "S",
	 "heartbeat period asked of registered backends (dropped after 3 missed)", 1, 3600},
	{"health-interval-ms", CONFIG_INT, &B.cfg.health_interval_ms, "N", "how often a down backend is checked", 50,
	 3600000},
	{"job-timeout-factor", CONFIG_DOUBLE, &B.cfg.job_timeout_factor, "F",
	 "a dispatch times out after F x the backend's expected time", 1, 1000},
	{"min-job-timeout-s", CONFIG_DOUBLE, &B.cfg.min_job_timeout_s, "S", "but never before S seconds", 0.1, 86400},
	{"max-job-timeout-s", CONFIG_DOUBLE, &B.cfg.max_job_timeout_s, "S",
	 "and never after S seconds, whatever the job's size (wins over --min-job-timeout-s)", 1, 604800},
	{"retry-after-s", CONFIG_DOUBLE, &B.cfg.retry_after_s, "S",
	 "a backend given no job for S seconds is tried again at its GPU class's speed if that is better", 0.1, 86400},
	{"prefetch-ms", CONFIG_INT, &B.cfg.prefetch_ms, "N",
	 "a job planned on a busy backend that frees within N ms is sent at once, to wait in the backend's own "
	 "queue behind the running job (hides the round trip between jobs); 0: never",
	 0, 60000},
	{"progress-interval-ms", CONFIG_INT, &B.cfg.progress_interval_ms, "N",
	 "how often a running job's progress is polled (without its preview image)", 10, 60000},
	{"preview-interval-ms", CONFIG_INT, &B.cfg.preview_interval_ms, "N",
	 "a running job's preview is fetched at most this often; 0: never", 0, 3600000},
	{"result-ttl", CONFIG_INT, &B.cfg.result_ttl_s, "S", "how long finished jobs and their images are kept", 1,
	 31536000},
	{"result-max-bytes", CONFIG_INT, &B.cfg.result_max_bytes, "N",
	 "images kept in all (bytes, in the store); past it the oldest results are dropped", 1, 1e15},
	{"result-max-bytes-per-client", CONFIG_INT, &B.cfg.result_max_bytes_per_client, "N",
	 "images kept per client (bytes); past it that client's oldest results are dropped", 1, 1e15},
	{"max-connections", CONFIG_INT, &B.cfg.max_connections, "N",
	 "open HTTP connections at most (lowered to fit the descriptor limit); past it new ones wait", 16, 1000000},
	{"log-level", CONFIG_STRING, &log_level, "LEVEL", "debug, info, warn or error", 0, 0},
};

_Static_assert(BAL_MAX_BODY == 1048576 && BAL_MAX_ANSWER == 268435456 && BAL_MAX_SMALL_ANSWER == 4194304 &&
		       IMAGE_MAX_SIDE == 16384 && BAL_MAX_SLOTS == 8 && BAL_MAX_BACKENDS == 1024 &&
		       BAL_MAX_GPUS == 16 && BAL_MAX_REGISTRATION == 16384 && BAL_MAX_PROVIDERS == 4096 &&
		       BAL_MAX_URL == 512 && FORWARD_MAX_STRING == 8192 && FORWARD_MAX_STYLES == 64 &&
		       BAL_MAX_INFO == 65536 && BAL_IMAGE_CHUNK == 262144 && BAL_EVENTS_KEPT == 16 &&
		       BAL_MAX_UNSTORED == 268435456,
	       "update the --help epilog");

static const struct config_program PROGRAM = {
	"sdgate-balancer",
	"routes txt2img jobs to idle backends of accepted GPUs; persistent queue, failover, A1111 façade",
	OPTIONS,
	sizeof OPTIONS / sizeof OPTIONS[0],
	"Limits: request body 1048576 bytes (POST /sdapi/v1/img2img 50331648, at most 16 img2img jobs\n"
	"  unfinished; a registration 16384); a backend's txt2img answer\n"
	"  268435456 bytes at most, and less for smaller jobs (the base64 of uncompressed RGBA PNGs of\n"
	"  its images, plus a margin), never compressed (no Accept-Encoding; a Content-Encoding fails\n"
	"  the call); its other answers 4194304 bytes; images and previews 1..16384 pixels a side,\n"
	"  checked whole (PNG, JPEG, WebP); 1..8 slots per backend; 1024 backends; 16 GPU classes per\n"
	"  job; 4096 named provider tokens; a backend URL 512 bytes. Without --provider-token and\n"
	"  --provider-tokens registration is off. Validation of txt2img fields is the backend's (see\n"
	"  sdgate-backend --help). Backends get only A1111's generation fields (strings of at most\n"
	"  8192 bytes, 64 styles), override_settings sd_model_checkpoint, sd_vae and\n"
	"  CLIP_stop_at_last_layers (restored afterwards), save_images false; scripts only where a\n"
	"  backend says allow_scripts (balancer/README.md). A kept result's info 65536 bytes (A1111's\n"
	"  parameters go only to the façade's client); images are read back 262144 bytes at a time.\n"
	"  Images the database could not take (it was away) are held in memory until it answers:\n"
	"  268435456 bytes at most, and within --result-max-bytes(-per-client).\n"
	"  An unfinished job keeps its last 16 state events and its latest progress for event\n"
	"  streams that resume with Last-Event-ID (docs/jobs-api.md).\n",
};

static void on_tick(struct httpd *h)
{
	struct balancer *b = httpd_user(h);
	double now = bal_now();
	dispatch_tick(b, now);
	cluster_tick(b, now);
	remote_tick(b, now);
	if (now < b->next_slow_tick)
		return;
	b->next_slow_tick = now + SLOW_TICK_S;
	registry_tick(b, now);
	waiters_check(b);
	if (b->unsaved)
		jobs_save_again(b);
	for (struct job *j = b->active; j; j = j->act_next)
		if (j->subs)
			sse_keepalive(j);
	static double next_expire;
	if (now >= next_expire) {
		next_expire = now + EXPIRE_EVERY_S;
		jobs_expire(b, bal_unix_now());
		options_expire(b);
	}
}

/* "http://h:p#provider=A&gpu_class=a100" → url "http://h:p" and the
 * fragment's fields (percent-decoded) in *fixed. */
static int parse_static(const char *spec, char **url, json_t **fixed)
{
	const char *hash = strchr(spec, '#');
	*url = hash ? strndup(spec, (size_t)(hash - spec)) : strdup(spec);
	*fixed = json_object();
	if (strncmp(*url, "http://", 7) != 0 && strncmp(*url, "https://", 8) != 0) {
		log_error("--backend %s: expected an http:// or https:// URL", spec);
		return -1;
	}
	const char *p = hash ? hash + 1 : "";
	while (*p) {
		size_t n = strcspn(p, "&");
		const char *eq = memchr(p, '=', n);
		if (eq) {
			char key[64];
			snprintf(key, sizeof key, "%.*s", (int)(eq - p), p);
			int vlen = 0;
			char *val = curl_easy_unescape(NULL, eq + 1, (int)(n - (size_t)(eq + 1 - p)), &vlen);
			if (!strcmp(key, "price_per_hour") || !strcmp(key, "lat") || !strcmp(key, "lon"))
				json_object_set_new(*fixed, key, json_real(atof(val)));
			else if (!strcmp(key, "slots"))
				json_object_set_new(*fixed, key, json_integer(atoi(val)));
			else if (!strcmp(key, "simulated") || !strcmp(key, "allow_scripts"))
				json_object_set_new(*fixed, key,
						    json_boolean(!strcmp(val, "true") || !strcmp(val, "1")));
			else if (!strcmp(key, "models"))
				json_object_set_new(*fixed, key, json_pack("[s]", val));
			else
				json_object_set_new(*fixed, key, json_string(val));
			curl_free(val);
		}
		p += n;
		if (*p == '&')
			p++;
	}
	return 0;
}

/* A registration the store remembers. One from before registrations had
 * secrets is dropped: its backend registers again when its heartbeat 404s. */
static void load_backend(json_t *doc, void *user) { registry_load_doc(user, doc); }

/* --provider-tokens FILE: "<name>\t<token>" lines; blank lines and '#'
 * comments skipped. Names and tokens must be unique, tokens as strong as
 * any other (config.h's rules). 0, or logs why and returns -1. */
static int load_provider_tokens(struct balancer *b, const char *path)
{
	FILE *f = fopen(path, "r");
	if (!f) {
		log_error("--provider-tokens %s: cannot open it", path);
		return -1;
	}
	char line[BAL_MAX_FIELD + CONFIG_MAX_SECRET + 8];
	int rc = 0, no = 0;
	while (rc == 0 && fgets(line, sizeof line, f)) {
		no++;
		line[strcspn(line, "\r\n")] = '\0';
		if (!line[0] || line[0] == '#')
			continue;
		char *tab = strchr(line, '\t');
		const char *name = line, *token = tab ? tab + 1 : "";
		if (tab)
			*tab = '\0';
		const char *why = NULL;
		if (!tab || !*name || strlen(name) > BAL_MAX_FIELD)
			why = "expected <provider name><TAB><token>";
		else if (strlen(token) < CONFIG_MIN_SECRET || strlen(token) > CONFIG_MAX_SECRET ||
			 strpbrk(token, " \t") || !strcasecmp(token, "CHANGE_ME"))
			why = "the token must be 16 to 1024 bytes without spaces, and not CHANGE_ME";
		else if (b->n_ptokens >= BAL_MAX_PROVIDERS)
			why = "more than 4096 providers";
		for (size_t i = 0; !why && i < b->n_ptokens; i++)
			if (!strcmp(b->ptokens[i].name, name) || !strcmp(b->ptokens[i].token, token))
				why = "a provider name or token given twice";
		struct provider_token *grown = why ? NULL
						   : realloc(b->ptokens, (b->n_ptokens + 1) * sizeof *b->ptokens);
		if (!why && !grown)
			why = "out of memory";
		if (why) {
			log_error("--provider-tokens %s line %d: %s", path, no, why);
			rc = -1;
			break;
		}
		b->ptokens = grown;
		b->ptokens[b->n_ptokens].name = strdup(name);
		b->ptokens[b->n_ptokens].token = strdup(token);
		b->n_ptokens++; /* counted even if a copy failed: free_provider_tokens frees both */
		if (!b->ptokens[b->n_ptokens - 1].name || !b->ptokens[b->n_ptokens - 1].token) {
			log_error("--provider-tokens %s: out of memory", path);
			rc = -1;
		}
	}
	fclose(f);
	if (rc == 0)
		log_info("--provider-tokens: %zu named provider(s)", b->n_ptokens);
	return rc;
}

static void free_provider_tokens(struct balancer *b)
{
	for (size_t i = 0; i < b->n_ptokens; i++) {
		if (b->ptokens[i].token)
			OPENSSL_cleanse(b->ptokens[i].token, strlen(b->ptokens[i].token));
		free(b->ptokens[i].name);
		free(b->ptokens[i].token);
	}
	free(b->ptokens);
	b->ptokens = NULL;
	b->n_ptokens = 0;
}

static void set_defaults(struct bal_config *c)
{
	c->listen = "127.0.0.1:7860";
	c->db = "sdgate-balancer.db";
	c->db_wait_s = 30;
	c->max_queue = 1000;
	c->max_queue_per_client = 100;
	c->max_attempts = 3;
	c->heartbeat_interval_s = 10;
	c->health_interval_ms = 1000;
	c->job_timeout_factor = 10;
	c->min_job_timeout_s = 30;
	c->max_job_timeout_s = 3600;
	c->retry_after_s = ROUTER_RETRY_S;
	c->lease_s = 4;
	c->progress_interval_ms = 50;
	c->prefetch_ms = 30;
	c->preview_interval_ms = 1000;
	c->result_ttl_s = 3600;
	c->result_max_bytes = 1LL << 30;
	c->result_max_bytes_per_client = 256LL << 20;
	c->max_connections = HTTPD_MAX_CONNECTIONS;
}

int main(int argc, char **argv)
{
	struct balancer *b = &B;
	set_defaults(&b->cfg);
	enum config_result cr = config_parse(&PROGRAM, argc, argv);
	if (cr != CONFIG_OK)
		return cr == CONFIG_EXIT ? 0 : 2;
	int level = log_level_parse(log_level);
	log_init("balancer", level < 0 ? LOG_INFO : (enum log_level)level);
	int rc = 1;
	char host[64];
	int port;
	if (config_split_listen(b->cfg.listen, host, sizeof host, &port) != 0) {
		log_error("--listen %s: expected HOST:PORT", b->cfg.listen);
		config_free(&PROGRAM);
		return 2;
	}
	for (char **p = b->cfg.trusted_proxies; p && *p; p++) {
		if (!bal_valid_address(*p)) {
			log_error("--trusted-proxy %s: expected an IPv4 or IPv6 address", *p);
			config_free(&PROGRAM);
			return 2;
		}
	}
	if (b->cfg.provider_tokens && load_provider_tokens(b, b->cfg.provider_tokens) != 0) {
		free_provider_tokens(b);
		config_free(&PROGRAM);
		return 2;
	}
	if (b->cfg.api_auth) {
		const char *why = NULL;
		b->api_auth = apiauth_new(b->cfg.api_auth, &why);
		if (!b->api_auth) {
			log_error("--api-auth: %s", why);
			free_provider_tokens(b);
			config_free(&PROGRAM);
			return 2;
		}
	}
	b->prefs = prefs_new();
	curl_global_init(CURL_GLOBAL_DEFAULT);
	bal_random_id(b->instance);
	b->m.inference_by_class = json_object();
	b->store = store_open(b->cfg.db, b->cfg.db_wait_s, b->cfg.result_max_bytes, b->cfg.result_max_bytes_per_client);
	if (!b->store)
		goto out;
	store_prune(b->store, bal_unix_now() - (double)b->cfg.result_ttl_s); /* before anything is loaded */
	store_set_member(b->store, b->instance);

	static struct httpd_route routes[64];
	size_t n = 0;
	const struct {
		const struct httpd_route *r;
		size_t n;
	} tables[] = {{API_A1111_ROUTES, API_A1111_N},
		      {API_JOBS_ROUTES, API_JOBS_N},
		      {API_BACKENDS_ROUTES, API_BACKENDS_N},
		      {API_OPS_ROUTES, API_OPS_N},
		      {API_OPENAI_ROUTES, API_OPENAI_N}};
	for (size_t t = 0; t < sizeof tables / sizeof tables[0]; t++)
		for (size_t i = 0; i < tables[t].n && n < sizeof routes / sizeof routes[0]; i++)
			routes[n++] = tables[t].r[i];
	struct httpd_config hc = {.host = host,
				  .port = port,
				  .max_body = BAL_MAX_BODY,
				  .large_body_paths = BAL_LARGE_BODY_PATHS,
				  .large_body_max = A1111_MAX_IMG2IMG_BODY,
				  .routes = routes,
				  .n_routes = n,
				  .user = b,
				  .sdgate_errors = 1,
				  .max_connections = (int)b->cfg.max_connections,
				  .instance = b->instance,
				  .guard = bal_guard};
	b->httpd = httpd_new(&hc);
	if (!b->httpd)
		goto out;
	b->fetcher = fetcher_new(b->httpd, b->instance);
	if (!b->fetcher || store_start(b->store, b->httpd) != 0) {
		log_error("cannot start the balancer's threads");
		goto out;
	}
	for (char **s = b->cfg.backends; s && *s; s++) {
		char *url;
		json_t *fixed;
		if (parse_static(*s, &url, &fixed) != 0) {
			free(url);
			json_decref(fixed);
			goto out;
		}
		registry_add(b, url, fixed, NULL, NULL);
		free(url);
	}
	store_load_backends(b->store, load_backend, b);
	options_load(b);
	jobs_load(b);
	notices_start(b);
	httpd_set_tick(b->httpd, on_tick);
	char db[512];
	store_db_label(b->cfg.db, db, sizeof db);
	log_info("listening on http://%s:%d (db %s, %d backend(s), %d job(s) queued, instance %s)", host,
		 httpd_port(b->httpd), db, b->n_backends, b->queued, b->instance);
	if (b->cfg.allow_private_backends)
		log_warn("--allow-private-backends: registrations may point at loopback and private addresses");
	httpd_run(b->httpd);
	rc = b->fenced ? 3 : 0;
out:
	/* Stop the threads first; what they had finished is delivered by one
	 * more turn of the loop, then the store writes what is pending. */
	b->stopping = 1;
	/* End what h2o is still streaming, so that its connections can close. */
	for (struct job *j = b->active; j; j = j->act_next) {
		sse_close_all(j);
		waiter_shutdown(j);
	}
	remote_free_all(); /* the streams of other balancers' jobs too */
	dispatch_drop_fetches(b);
	fetcher_free(b->fetcher);
	b->fetcher = NULL; /* fetch_start on NULL fails; nothing may start one now */
	if (b->httpd)
		h2o_evloop_run(httpd_loop(b->httpd), 0);
	store_close(b->store);
	b->store = NULL; /* what the last turn delivers may not use it (store.h: NULL is refused) */
	if (b->httpd)
		h2o_evloop_run(httpd_loop(b->httpd), 0);
	httpd_free(b->httpd);
	registry_free_all(b);
	jobs_free_all(b);
	free_provider_tokens(b);
	apiauth_free(b->api_auth);
	prefs_free(b->prefs);
	json_decref(b->m.inference_by_class);
	curl_global_cleanup();
	config_free(&PROGRAM);
	log_info("stopped");
	return rc;
}
