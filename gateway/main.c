/* main.c — sdgate-gateway: the browser's websocket front server. Parses
 * flags, finds web/, creates the libwebsockets context (files at `/`, the
 * protocol at `/ws`, /healthz, /metrics), starts the balancer client's
 * thread, serves until SIGINT/SIGTERM, then shuts down in order: the
 * balancer client cancels what is still running, the context closes every
 * connection, and everything is freed. */
#include "gateway.h"

#include "config.h"
#include "log.h"
#include "a1111.h"

#include <curl/curl.h>
#include <libwebsockets.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef SDGATE_SOURCE_WEB_DIR
#define SDGATE_SOURCE_WEB_DIR "web"
#endif
#ifndef SDGATE_INSTALL_WEB_DIR
#define SDGATE_INSTALL_WEB_DIR "/usr/local/share/sdgate/web"
#endif

static const char *listen_spec = "127.0.0.1:8080";
static char **balancers = NULL;
static char **trusted_proxies = NULL;
static char **allowed_origins = NULL;
static const char *web_dir = NULL;
static const char *admin_token = NULL;
static double rate_burst = 640;
static double rate_refill = 2.5;
static long rate_clients = 65536;
static long max_jobs = 4;
static long max_connections = 1000;
static long max_connections_per_address = 64;
static long max_message = 65536;
static long max_output_bytes = 256L << 20;
static long max_image_message = 12L << 20;
static long max_large_rx_bytes = 64L << 20;
static double large_message_timeout_s = 60;
static long max_img2img_jobs = 16;
static double send_timeout_s = 30;
static long max_prompt = 2000;
static long board_interval_ms = 2000;
static long balancer_timeout_ms = 10000;
static double stream_patience_s = 30;
static const char *log_level = "info";

static const struct config_option OPTIONS[] = {
	{"listen", CONFIG_STRING, &listen_spec, "HOST:PORT", "address to serve HTTP and the websocket on", 0, 0},
	{"balancer", CONFIG_LIST, &balancers, "URL",
	 "a balancer (repeatable: failover in order; default http://127.0.0.1:7860)", 0, 0},
	{"web", CONFIG_STRING, &web_dir, "DIR", "the web UI's files (default: web/ next to the program or its source)",
	 0, 0},
	{"trusted-proxy", CONFIG_LIST, &trusted_proxies, "ADDR",
	 "a reverse proxy (e.g. NGINX) whose X-Real-IP / X-Forwarded-For names the client (repeatable; by IP)", 0, 0},
	{"allowed-origin", CONFIG_LIST, &allowed_origins, "ORIGIN",
	 "a web origin (scheme://host[:port]) whose pages may open websockets besides the gateway's own, e.g. the "
	 "public https:// name when a proxy does not pass X-Forwarded-Proto/Host",
	 0, 0},
	{"admin-token", CONFIG_SECRET, &admin_token, "T",
	 "the balancer's admin token: lets the gateway name each end client (X-Sdgate-Client) for per-client limits", 0,
	 0},
	{"rate-burst", CONFIG_DOUBLE, &rate_burst, "W",
	 "work a client address may spend at once, in megapixel-steps (steps x width x height / 1e6)", 0.001, 1e9},
	{"rate-refill", CONFIG_DOUBLE, &rate_refill, "W", "megapixel-steps per second a client address gets back", 0,
	 1e9},
	{"rate-clients", CONFIG_INT, &rate_clients, "N", "client addresses tracked by the rate limiter at most", 1,
	 10000000},
	{"max-jobs-per-connection", CONFIG_INT, &max_jobs, "N", "unfinished jobs one connection may have", 1, 1000},
	{"max-connections", CONFIG_INT, &max_connections, "N", "open websocket connections at most", 1, 1000000},
	{"max-connections-per-address", CONFIG_INT, &max_connections_per_address, "N",
	 "open websocket connections from one client address at most", 1, 1000000},
	{"max-message", CONFIG_INT, &max_message, "BYTES", "largest websocket message accepted", 1024, 16777216},
	{"max-image-message", CONFIG_INT, &max_image_message, "BYTES",
	 "largest generate message carrying an init_image (an 8 MiB image is 11.2 MB of base64); any other message "
	 "keeps --max-message",
	 1024, 64L << 20},
	{"max-large-rx-bytes", CONFIG_INT, &max_large_rx_bytes, "BYTES",
	 "memory for messages over --max-message being received, all connections together; past it such a message "
	 "is refused (busy)",
	 1L << 20, 1L << 40},
	{"large-message-timeout-s", CONFIG_DOUBLE, &large_message_timeout_s, "S",
	 "a message over --max-message must arrive whole within this; else its connection is closed", 1, 3600},
	{"max-img2img-jobs", CONFIG_INT, &max_img2img_jobs, "N",
	 "unfinished jobs with an init image, all connections together (each holds its image until it ends)", 1,
	 100000},
	{"max-output-bytes", CONFIG_INT, &max_output_bytes, "BYTES",
	 "output queued to all websockets together; past it the connection with the most waiting is closed", 1L << 20,
	 1L << 40},
	{"send-timeout-s", CONFIG_DOUBLE, &send_timeout_s, "S",
	 "a websocket with messages waiting that takes none of them for this long is closed", 1, 3600},
	{"max-prompt", CONFIG_INT, &max_prompt, "N",
	 "characters (code points) in prompt and negative_prompt; never above the backend's 8192 bytes", 1, 8192},
	{"board-interval-ms", CONFIG_INT, &board_interval_ms, "N", "how often the balancer's board is polled", 100,
	 600000},
	{"balancer-timeout-ms", CONFIG_INT, &balancer_timeout_ms, "N", "limit on a short call to a balancer", 100,
	 600000},
	{"stream-patience-s", CONFIG_DOUBLE, &stream_patience_s, "S",
	 "how long a broken job event stream is re-opened (a restarting balancer keeps its jobs) before the job is "
	 "sent to the next balancer",
	 0, 3600},
	{"log-level", CONFIG_STRING, &log_level, "LEVEL", "debug, info, warn or error", 0, 0},
};

_Static_assert(A1111_MAX_STEPS == 150 && A1111_MAX_SIZE == 2048 && A1111_MIN_SIZE == 64 && GW_MAX_ID == 64 &&
		       GW_MAX_GPUS == 16,
	       "update the --help epilog");
_Static_assert(GW_OUT_MAX == 32u << 20 && GW_OUT_CONTROL == 64u << 10, "update the --help epilog");
static const struct config_program PROGRAM = {
	"sdgate-gateway",
	"websocket front server of the sdgate marketplace: serves the web UI, validates, rate-limits, forwards to "
	"balancers",
	OPTIONS,
	sizeof OPTIONS / sizeof OPTIONS[0],
	"Limits (a message past them gets an `error` and the connection stays open):\n"
	"  messages: UTF-8 JSON objects of at most --max-message bytes; job ids 1..64 printable characters\n"
	"            (a generate with an init_image: --max-image-message, received within\n"
	"            --large-message-timeout-s, within --max-large-rx-bytes for all connections together)\n"
	"  generate: prompt 1..--max-prompt characters; steps 1..150; cfg_scale 1..30;\n"
	"            width/height 64..2048, multiples of 8; a known sampler; at most 16 GPU classes the balancer "
	"lists\n"
	"            init_image: base64 or a data: URL of a PNG, JPEG or WebP of at most 8 MiB decoded;\n"
	"            denoising_strength 0..1; resize_mode 0..3; --max-img2img-jobs unfinished at once\n"
	"  rate: a token bucket per client address in megapixel-steps (--rate-burst, --rate-refill);\n"
	"        --max-jobs-per-connection unfinished jobs per connection; IPv6 addresses count by their /64\n"
	"  websocket upgrades: from pages of the gateway's own origin or an --allowed-origin, or without\n"
	"        Origin (403 otherwise); --max-connections (503), --max-connections-per-address (429)\n"
	"  output to one websocket: 32 MiB (one done with the largest image), of it 64 KiB of replies to\n"
	"        its messages (boards and welcomes replace the waiting one; progress the same job's, but\n"
	"        one with a preview never by one without); past\n"
	"        that, or none taken for --send-timeout-s, the connection is closed\n"
	"Endpoints: / (web UI files), /ws (websocket), /healthz, /metrics (Prometheus).\n",
};

static volatile sig_atomic_t interrupted;
static struct lws_context *volatile context;

static void on_signal(int sig)
{
	(void)sig;
	interrupted = 1;
	if (context)
		lws_cancel_service(context); /* a write to lws's pipe */
}

static void wake_service(void *user) { lws_cancel_service(user); }

static void lws_log(int level, const char *line)
{
	size_t n = strlen(line);
	while (n && (line[n - 1] == '\n' || line[n - 1] == '\r'))
		n--;
	log_msg(level & LLL_ERR ? LOG_ERROR : level & LLL_WARN ? LOG_WARN : LOG_DEBUG, "lws: %.*s", (int)n, line);
}

static int is_dir_with_index(const char *dir)
{
	char path[PATH_MAX + 16];
	snprintf(path, sizeof path, "%s/index.html", dir);
	return access(path, R_OK) == 0;
}

/* --web, else <exe>/../share/sdgate/web, else the install path, else the
 * source tree's web/ (a build dir). Returns a malloc'd absolute path. */
static char *find_web_dir(void)
{
	char cand[PATH_MAX + 32];
	if (web_dir)
		return realpath(web_dir, NULL);
	char exe[PATH_MAX - 64];
	ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
	if (n > 0) {
		exe[n] = '\0';
		char *slash = strrchr(exe, '/');
		if (slash) {
			*slash = '\0';
			snprintf(cand, sizeof cand, "%s/../share/sdgate/web", exe);
			if (is_dir_with_index(cand))
				return realpath(cand, NULL);
		}
	}
	if (is_dir_with_index(SDGATE_INSTALL_WEB_DIR))
		return realpath(SDGATE_INSTALL_WEB_DIR, NULL);
	return realpath(SDGATE_SOURCE_WEB_DIR, NULL);
}

int main(int argc, char **argv)
{
	enum config_result cr = config_parse(&PROGRAM, argc, argv);
	if (cr != CONFIG_OK)
		return cr == CONFIG_EXIT ? 0 : 2;
	int level = log_level_parse(log_level);
	log_init("gateway", level < 0 ? LOG_INFO : (enum log_level)level);
	if (level < 0)
		log_warn("--log-level %s: unknown, using info", log_level);

	static struct gw_config cfg;
	static char *default_balancers[] = {"http://127.0.0.1:7860", NULL};
	int rc = 1;
	char *web = NULL;
	struct bc *bc = NULL;
	if (config_split_listen(listen_spec, cfg.host, sizeof cfg.host, &cfg.port) != 0) {
		log_error("--listen %s: expected HOST:PORT", listen_spec);
		rc = 2;
		goto out;
	}
	cfg.balancers = balancers && balancers[0] ? balancers : default_balancers;
	while (cfg.balancers[cfg.n_balancers])
		cfg.n_balancers++;
	for (size_t i = 0; i < cfg.n_balancers; i++) {
		if (strncmp(cfg.balancers[i], "http://", 7) && strncmp(cfg.balancers[i], "https://", 8)) {
			log_error("--balancer %s: expected an http:// or https:// URL", cfg.balancers[i]);
			rc = 2;
			goto out;
		}
	}
	web = find_web_dir();
	if (!web || !is_dir_with_index(web)) {
		log_error("--web %s: no index.html there", web ? web : web_dir ? web_dir : SDGATE_SOURCE_WEB_DIR);
		rc = 2;
		goto out;
	}
	cfg.web_dir = web;
	cfg.admin_token = admin_token;
	cfg.trusted_proxies = trusted_proxies;
	cfg.allowed_origins = allowed_origins;
	for (char **o = allowed_origins; o && *o; o++) {
		if (!origin_valid(*o)) {
			log_error("--allowed-origin %s: expected http(s)://host[:port]", *o);
			rc = 2;
			goto out;
		}
	}
	cfg.max_output_bytes = max_output_bytes;
	cfg.send_timeout_s = send_timeout_s;
	cfg.rate_burst = rate_burst;
	cfg.rate_refill = rate_refill;
	cfg.rate_clients = rate_clients;
	cfg.max_jobs_per_connection = max_jobs;
	cfg.max_connections = max_connections;
	cfg.max_connections_per_address = max_connections_per_address;
	cfg.max_message = max_message;
	cfg.max_image_message = max_image_message > max_message ? max_image_message : max_message;
	cfg.max_large_rx_bytes = max_large_rx_bytes;
	cfg.large_message_timeout_s = large_message_timeout_s;
	cfg.max_img2img_jobs = max_img2img_jobs;
	cfg.max_prompt = max_prompt;
	cfg.board_interval_ms = board_interval_ms;
	cfg.balancer_timeout_ms = balancer_timeout_ms;
	cfg.stream_patience_s = stream_patience_s;

	curl_global_init(CURL_GLOBAL_DEFAULT);
	lws_set_log_level(LLL_ERR | LLL_WARN, lws_log);
	if (ws_init(&cfg) != 0) {
		log_error("out of memory");
		goto out_curl;
	}

	/* Ping idle websockets after 30 s, drop them when silent for 75 s. */
	static const lws_retry_bo_t retry = {.secs_since_valid_ping = 30, .secs_since_valid_hangup = 75};
	struct lws_context_creation_info info;
	memset(&info, 0, sizeof info);
	info.port = cfg.port;
	info.iface = strcmp(cfg.host, "0.0.0.0") && strcmp(cfg.host, "::") && cfg.host[0] ? cfg.host : NULL;
	if (!strchr(cfg.host, ':') && info.iface)
		info.options |= LWS_SERVER_OPTION_DISABLE_IPV6;
	info.protocols = ws_protocols();
	info.mounts = ws_mounts(&cfg);
	info.headers = ws_headers();
	info.vhost_name = "sdgate";
	info.server_string = "sdgate-gateway";
	info.timeout_secs = 20;
	info.keepalive_timeout = 10;
	info.retry_and_idle_policy = &retry;
	/* not LWS_SERVER_OPTION_VALIDATE_UTF8: it drops the connection, and
	 * the protocol answers bad UTF-8 with an error instead (validate.c) */
	info.gid = -1;
	info.uid = -1;

	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);

	struct lws_context *ctx = lws_create_context(&info);
	if (!ctx) {
		log_error("could not listen on %s:%d", cfg.host, cfg.port);
		goto out_ws;
	}
	context = ctx;
	bc = bc_start(&cfg, wake_service, ctx);
	if (!bc) {
		log_error("could not start the balancer client");
		goto out_ctx;
	}
	ws_attach(ctx, bc);
	log_info("listening on http://%s:%d (web UI from %s; websocket at /ws)", cfg.host, cfg.port, web);
	for (size_t i = 0; i < cfg.n_balancers; i++)
		log_info("balancer %zu: %s", i + 1, cfg.balancers[i]);
	log_info("rate limit: %.1f megapixel-steps at once, %.2f per second per address; %ld jobs per connection",
		 cfg.rate_burst, cfg.rate_refill, cfg.max_jobs_per_connection);

	while (!interrupted)
		if (lws_service(ctx, 0) < 0)
			break;
	log_info("shutting down");
	rc = 0;
	/* The balancer client first (it cancels running jobs); then no
	 * connection may reach it while the context closes them. */
	bc_stop(bc);
	ws_attach(ctx, NULL);
out_ctx:
	context = NULL;
	lws_context_destroy(ctx);
out_ws:
	ws_shutdown();
out_curl:
	curl_global_cleanup();
out:
	free(web);
	config_free(&PROGRAM);
	if (rc == 0)
		log_info("stopped");
	return rc;
}
