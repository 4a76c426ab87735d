/* main.c — sdgate-backend: an AUTOMATIC1111-compatible txt2img server on one
 * GPU (or the CPU), with the native engine or in front of an upstream A1111.
 * Parses flags, sets up identity, engine, lanes and the h2o server, runs the
 * loop, and shuts down cleanly on SIGINT/SIGTERM. */
#include "backend.h"
#include "initimage.h"

#include "config.h"
#include "log.h"
#include "png.h"
#include "register.h"

#include <curl/curl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *listen_spec = "127.0.0.1:7861";
static const char *provider = "local";
static const char *location = "localhost";
static const char *country = NULL;
static double lat = NAN, lon = NAN;
static double price_per_hour = 0;
static const char *gpu_class = NULL;
static const char *upstream = NULL;
static const char *balancer = NULL;
static const char *token = NULL;
static const char *public_url = NULL;
static const char *registration_file = NULL;
static long pace_ms = 0;
static int force_cpu = 0;
static long cuda_device = 0;
static const char *log_level = "info";
static long max_connections = HTTPD_MAX_CONNECTIONS;

static const struct config_option OPTIONS[] = {
	{"listen", CONFIG_STRING, &listen_spec, "HOST:PORT", "address to serve the A1111 API on", 0, 0},
	{"provider", CONFIG_STRING, &provider, "NAME", "provider name shown to users", 0, 0},
	{"location", CONFIG_STRING, &location, "TEXT", "location shown to users, e.g. \"Frankfurt, DE\"", 0, 0},
	{"country", CONFIG_STRING, &country, "CC", "ISO 3166 country code", 0, 0},
	{"lat", CONFIG_DOUBLE, &lat, "DEG", "latitude", -90, 90},
	{"lon", CONFIG_DOUBLE, &lon, "DEG", "longitude", -180, 180},
	{"price-per-hour", CONFIG_DOUBLE, &price_per_hour, "X", "price per GPU hour", 0, 1e6},
	{"gpu-class", CONFIG_STRING, &gpu_class, "C", "override the detected GPU class (h100, a100, rtx3090, ...)", 0,
	 0},
	{"upstream", CONFIG_STRING, &upstream, "URL",
	 "forward to this A1111-compatible server instead of the native engine", 0, 0},
	{"balancer", CONFIG_STRING, &balancer, "URL", "register with this balancer and send heartbeats", 0, 0},
	{"token", CONFIG_SECRET, &token, "T", "provider token for --balancer", 0, 0},
	{"public-url", CONFIG_STRING, &public_url, "URL", "URL the balancer should call (default: from --listen)", 0,
	 0},
	{"registration-file", CONFIG_STRING, &registration_file, "FILE",
	 "keep the --balancer registration (its secrets, mode 0600) here and take it up again after a restart", 0, 0},
	{"pace-ms-per-step", CONFIG_INT, &pace_ms, "N",
	 "TESTING AID: make each step take at least N ms (emulates a slower GPU)", 0, 600000},
	{"cpu", CONFIG_BOOL, &force_cpu, NULL, "use the CPU engine even when a CUDA GPU is present", 0, 0},
	{"cuda-device", CONFIG_INT, &cuda_device, "N", "CUDA device ordinal", 0, 63},
	{"max-connections", CONFIG_INT, &max_connections, "N",
	 "open HTTP connections at most (lowered to fit the descriptor limit); past it new ones wait", 16, 1000000},
	{"log-level", CONFIG_STRING, &log_level, "LEVEL", "debug, info, warn or error", 0, 0},
};

/* The epilog spells the limits out; these keep it honest. */
_Static_assert(TXT2IMG_MAX_BODY == 1048576 && TXT2IMG_MAX_PROMPT == 8192 && TXT2IMG_MAX_STEPS == 150 &&
		       TXT2IMG_MAX_SIZE == 2048 && TXT2IMG_MAX_BATCH == 8 && TXT2IMG_MAX_ITER == 16 &&
		       TXT2IMG_MAX_PIXELS == 33554432ull && A1111_MAX_IMG2IMG_BODY == 50331648u &&
		       A1111_MAX_INIT_IMAGES == 4 && A1111_MAX_INIT_IMAGE_BYTES == 8388608u &&
		       INITIMAGE_MAX_SIDE == 4096,
	       "update the --help epilog");
static const struct config_program PROGRAM = {
	"sdgate-backend",
	"AUTOMATIC1111-compatible txt2img and img2img server (native engine or upstream adapter)",
	OPTIONS,
	sizeof OPTIONS / sizeof OPTIONS[0],
	"Limits (requests past them get A1111-shaped 4xx answers):\n"
	"  body 1048576 bytes; prompt and negative_prompt 8192 bytes each\n"
	"  steps 1..150; cfg_scale 1..30; width/height 64..2048, multiples of 8\n"
	"  batch_size 1..8; n_iter 1..16; batch_size*n_iter*width*height <= 33554432 pixels\n"
	"  img2img: body 50331648 bytes; 1..4 init images (PNG or JPEG), each 8388608 bytes decoded\n"
	"  and at most 4096 pixels a side; hires fix: at most 2048 a side, its pixels as above\n"
	"One job runs at a time; further requests wait their turn, as in A1111.\n",
};

int main(int argc, char **argv)
{
	enum config_result cr = config_parse(&PROGRAM, argc, argv);
	if (cr != CONFIG_OK)
		return cr == CONFIG_EXIT ? 0 : 2;
	int level = log_level_parse(log_level);
	log_init("backend", level < 0 ? LOG_INFO : (enum log_level)level);

	char host[64];
	int port;
	if (config_split_listen(listen_spec, host, sizeof host, &port) != 0) {
		log_error("--listen %s: expected HOST:PORT", listen_spec);
		config_free(&PROGRAM);
		return 2;
	}
	curl_global_init(CURL_GLOBAL_DEFAULT);
	png_init();

	static struct backend b;
	pthread_mutex_init(&b.progress.mu, NULL);
	backend_timestamp(b.progress.job_timestamp);
	b.upstream_url = upstream;
	b.id.provider = provider;
	b.id.location = location;
	b.id.country = country;
	b.id.lat = lat;
	b.id.lon = lon;
	b.id.price_per_hour = price_per_hour;
	b.id.pace_ms_per_step = pace_ms;
	b.id.engine = upstream ? "upstream" : "native";

	/* The engine also detects the GPU in upstream mode (the GPU is the
	 * provider's either way); it then never generates. */
	struct engine_config ec = {.force_cpu = force_cpu, .cuda_device = (int)cuda_device};
	char why[512] = "";
	b.engine = engine_create(&ec, why, sizeof why);
	if (!b.engine) {
		log_error("engine: out of memory");
		config_free(&PROGRAM);
		return 1;
	}
	log_info("engine: %s", why);
	snprintf(b.id.gpu, sizeof b.id.gpu, "%s", engine_device_name(b.engine));
	if (gpu_class && *gpu_class) {
		snprintf(b.id.gpu_class, sizeof b.id.gpu_class, "%s", gpu_class);
		b.id.gpu_class_overridden = 1;
	} else {
		identity_gpu_class(b.id.gpu, b.id.gpu_class, sizeof b.id.gpu_class);
	}
	if (pace_ms > 0)
		log_warn("--pace-ms-per-step %ld: TESTING AID, every step is slowed to emulate a slower GPU", pace_ms);

	struct httpd_config hc = {.host = host,
				  .port = port,
				  .max_body = TXT2IMG_MAX_BODY,
				  .large_body_paths = API_LARGE_BODIES,
				  .large_body_max = A1111_MAX_IMG2IMG_BODY,
				  .routes = API_ROUTES,
				  .n_routes = API_N_ROUTES,
				  .user = &b,
				  .max_connections = (int)max_connections};
	b.httpd = httpd_new(&hc);
	if (!b.httpd) {
		engine_destroy(b.engine);
		config_free(&PROGRAM);
		return 1;
	}
	int ipv6 = strchr(host, ':') != NULL;
	if (public_url)
		snprintf(b.id.url, sizeof b.id.url, "%s", public_url);
	else
		snprintf(b.id.url, sizeof b.id.url, "http://%s%s%s:%d", ipv6 ? "[" : "", host, ipv6 ? "]" : "",
			 httpd_port(b.httpd));
	b.jobs = lane_new(b.httpd, "jobs");
	b.control = lane_new(b.httpd, "control");
	struct registration *reg = NULL;
	if (balancer) {
		reg = registration_start(balancer, token, registration_file, &b);
		if (!reg) {
			httpd_free(b.httpd);
			engine_destroy(b.engine);
			config_free(&PROGRAM);
			return 1;
		}
	} else if (registration_file && *registration_file)
		log_warn("--registration-file without --balancer: nothing to keep");
	b.reg = reg; /* before the loop: api.c reads it */

	log_info("listening on %s (provider \"%s\", %s, gpu %s [%s]%s)", b.id.url, provider, location, b.id.gpu_class,
		 b.id.gpu, upstream ? ", upstream mode" : "");
	if (upstream)
		log_info("upstream: %s", upstream);
	httpd_run(b.httpd);

	/* Shutdown: stop a running job, let both lanes finish, deliver what they
	 * posted, then free in reverse order. */
	registration_stop(reg);
	atomic_store(&b.interrupt, 1);
	lane_free(b.jobs);
	lane_free(b.control);
	for (int i = 0; i < 5; i++)
		h2o_evloop_run(httpd_loop(b.httpd), 10);
	httpd_free(b.httpd);
	engine_destroy(b.engine);
	free(b.progress.preview_b64);
	pthread_mutex_destroy(&b.progress.mu);
	curl_global_cleanup();
	config_free(&PROGRAM);
	log_info("stopped");
	return 0;
}
