/* gateway.h — sdgate-gateway's modules and the one place its limits live.
 *
 * The gateway is the browser's door to the marketplace: a libwebsockets server
 * that serves web/ at `/`, speaks the JSON protocol of docs/websocket.md on
 * `/ws`, validates and rate-limits every request, and forwards jobs to a
 * balancer (several, with failover) over libcurl multi.
 *
 * Threads: the lws service thread (main.c, ws.c, validate.c, ratelimit.c)
 * owns every connection; the balancer client's thread (balancer_client.c)
 * owns every curl handle. They meet only in balancer_client.c's two
 * mutex-protected queues: commands go one way (curl_multi_wakeup), events
 * the other (the wake callback, i.e. lws_cancel_service). metrics.c's
 * counters are atomics that both threads touch. */
#ifndef SDGATE_GATEWAY_H
#define SDGATE_GATEWAY_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

/* ---------------------------------------------------------------- limits
 * Fixed limits (the adjustable ones are flags; all are printed by --help). */
#define GW_MAX_ID 64            /* a client's job id, bytes */
#define GW_MAX_GPUS 16          /* entries in generate.gpus */
#define GW_MAX_GPU_CLASS 32     /* bytes of one GPU class name */
#define GW_MAX_EVENT (8u << 20) /* one SSE event from the balancer (a progress event carries a preview) */
#define GW_MAX_IMAGE                                                                                                   \
	(20u << 20)             /* a job's image, fetched from the balancer: 2048 x 2048 RGBA stored uncompressed      \
				 * in a PNG is 16.8 MB; its base64 (one done message) fits GW_OUT_MAX */
#define GW_MAX_REPLY (4u << 20) /* any other balancer answer */
/* Output to one websocket (outq.c). The largest message is a done with one
 * image: at most 2048 x 2048 RGBA, stored uncompressed in the PNG, base64
 * (22.4 MB). GW_OUT_MAX holds one of those and room for the rest; past it,
 * or past GW_OUT_CONTROL bytes of replies to its messages, a client that does
 * not read is closed (so is one that takes no output for --send-timeout-s). */
#define GW_OUT_MAX (32u << 20)
#define GW_OUT_CONTROL (64u << 10) /* replies other than job messages, boards and welcomes */
#define GW_OUT_CHUNK (64u << 10)   /* one websocket frame of a message: a longer one is sent in fragments */
/* lws's rx buffer of a websocket (one per connection, so small): a longer
 * message comes in pieces of this size, joined up to --max-message. */
#define GW_RX_CHUNK 1024
#define GW_SOCKET_SNDBUF (256 << 10) /* SO_SNDBUF of a websocket (Linux doubles it): 5 MB/s at 100 ms */
#define GW_STREAM_BACKOFF_MAX_S 2.0  /* the longest wait between two re-opens */
/* After a job's final event, how long its event stream may take to end
 * (the balancer ends it at once) before the gateway cuts it. */
#define GW_STREAM_END_WAIT_S 0.05

struct gw_config {
	char host[64];
	int port;
	char **balancers; /* NULL-terminated, at least one */
	size_t n_balancers;
	const char *web_dir;     /* absolute */
	const char *admin_token; /* may be NULL */
	char **trusted_proxies;  /* NULL-terminated, may be NULL: peers whose forwarding headers are believed */
	char **allowed_origins;  /* NULL-terminated, may be NULL: origins besides the gateway's own */
	double rate_burst;       /* work units (megapixel-steps) a client may spend at once */
	double rate_refill;      /* work units per second */
	long rate_clients;       /* addresses tracked at most */
	long max_jobs_per_connection;
	long max_connections;
	long max_connections_per_address; /* one address cannot crowd the others out */
	long max_message;                 /* bytes of one websocket message */
	long max_image_message;           /* bytes of a generate with an init_image (>= max_message) */
	long max_large_rx_bytes;          /* messages over max_message being received, all together */
	double large_message_timeout_s;   /* one over max_message must arrive whole within this */
	long max_img2img_jobs;            /* unfinished jobs with an init image, all connections */
	long max_output_bytes;            /* queued to all websockets together */
	double send_timeout_s;            /* a websocket with output waiting that takes none this long is closed */
	long max_prompt;                  /* code points of prompt and negative_prompt */
	long board_interval_ms;
	long balancer_timeout_ms; /* connect + answer of a short balancer call */
	double stream_patience_s; /* a broken event stream is re-opened this long (its balancer may be
				   * restarting) before the job is run on another balancer */
};

/* ---------------------------------------------------------------- validate.c
 * Pure functions of a message and the balancer's last board (service thread). */
enum gw_msg { GW_MSG_HELLO, GW_MSG_GENERATE, GW_MSG_CANCEL };

struct gw_error {
	char id[GW_MAX_ID + 1]; /* the job's id when known, else "" */
	char code[40];          /* bad_utf8, too_large, bad_json, ... */
	char message[320];
	char field[48]; /* a request field name, or "" */
};

struct gw_request {
	enum gw_msg type;
	char id[GW_MAX_ID + 1];
	json_t *body; /* generate: the balancer's POST /v1/jobs body (owned) */
	double work;  /* generate: megapixel-steps */
	int img2img;  /* generate: it carries an init image (body's init_images) */
};

/* 1 when s[0..len) is well-formed UTF-8 (no overlongs, surrogates or > U+10FFFF). */
int validate_utf8(const unsigned char *s, size_t len);
/* Checks one text message (at most cfg->max_image_message bytes; past
 * cfg->max_message only a generate with an init_image). known_gpus: the classes the balancer lists (a
 * JSON array of strings) or NULL when unknown (then any class passes to the
 * balancer, which judges it). Returns 0 and fills *out (free with
 * validate_request_free), or -1 and fills *err. */
int validate_message(const char *buf, size_t len, const struct gw_config *cfg, const json_t *known_gpus,
		     struct gw_request *out, struct gw_error *err);
void validate_request_free(struct gw_request *r);
void validate_error_set(struct gw_error *err, const char *id, const char *code, const char *field, const char *fmt, ...)
	__attribute__((format(printf, 5, 6)));
/* The sampler names the welcome offers: each base name the balancer lists
 * (or the built-in list) plus its A1111 combined "<name> Karras"-style names.
 * New reference. */
json_t *validate_sampler_names(const json_t *balancer_samplers);
/* The "limits" object of welcome. New reference. */
json_t *validate_limits_json(const struct gw_config *cfg);

/* ---------------------------------------------------------------- offload.c
 * validate_message for the large messages, on a thread of its own. */
struct offload;
struct offload_result {
	struct offload_result *next;
	uint64_t conn; /* the connection the message came from */
	size_t held;   /* as given to offload_submit */
	int rc;        /* validate_message's */
	struct gw_request req;
	struct gw_error err;
};
/* wake(user) is called from the thread when results wait (thread-safe: lws_cancel_service). */
struct offload *offload_start(const struct gw_config *cfg, void (*wake)(void *user), void *user);
/* Queues buf (malloc'd, stolen) for validation; known_gpus is copied. held
 * comes back in the result. -1 (buf freed) when out of memory. */
int offload_submit(struct offload *o, uint64_t conn, char *buf, size_t len, size_t held, const json_t *known_gpus);
/* Every result waiting, oldest first; free each with offload_result_free. */
struct offload_result *offload_take(struct offload *o);
void offload_result_free(struct offload_result *r);
/* Joins the thread; what was not taken is dropped. NULL is a no-op. */
void offload_stop(struct offload *o);

/* ---------------------------------------------------------------- ratelimit.c
 * Token buckets per client address, in work units (service thread only). */
struct ratelimit;
struct ratelimit *ratelimit_new(double burst, double refill_per_s, size_t max_clients);
void ratelimit_free(struct ratelimit *rl);
/* Takes work from addr's bucket at time now (seconds). 0 when allowed; else
 * -1 with *retry_after_s (how long until it would be; < 0 = never, the job
 * is larger than the burst). */
int ratelimit_take(struct ratelimit *rl, const char *addr, double work, double now, double *retry_after_s);
/* Gives back work taken for a job the balancer never accepted. */
void ratelimit_refund(struct ratelimit *rl, const char *addr, double work, double now);

/* ---------------------------------------------------------------- outq.c
 * One connection's outgoing messages, bounded (service thread only). */
enum outq_class {
	OUTQ_JOB,      /* a job's own message */
	OUTQ_PROGRESS, /* replaces the waiting progress of the same job */
	OUTQ_PREVIEW,  /* a progress with a preview: supersedes the same job's waiting
			* progress and preview, and waits at the end; a progress
			* without one never replaces it */
	OUTQ_BOARD,    /* replaces the waiting board */
	OUTQ_WELCOME,  /* replaces the waiting welcome */
	OUTQ_CONTROL   /* any other reply: GW_OUT_CONTROL bytes in all */
};
enum outq_result { OUTQ_QUEUED, OUTQ_REPLACED, OUTQ_OVER, OUTQ_NOMEM };
struct outq_msg;
struct outq {
	struct outq_msg *head, *tail;
	size_t bytes;   /* not yet written */
	size_t control; /* of it, OUTQ_CONTROL */
};
/* Queues a copy of text (id: the job, for OUTQ_PROGRESS and OUTQ_PREVIEW).
 * OUTQ_OVER: a bound is passed, nothing was queued (close the connection). */
enum outq_result outq_push(struct outq *q, const char *text, size_t len, enum outq_class cls, const char *id);
/* 1 when a message of class cls waits (not started). */
int outq_waiting(const struct outq *q, enum outq_class cls);
/* The next piece to write (at most GW_OUT_CHUNK bytes of the head message):
 * its length (0 when empty), *first / *last: it starts / ends the message. */
size_t outq_chunk(const struct outq *q, const char **text, int *first, int *last);
/* n bytes of the head were written. */
void outq_advance(struct outq *q, size_t n);
void outq_clear(struct outq *q);

/* ---------------------------------------------------------------- origin.c */
/* 1 when origin ("scheme://host[:port]") may open a websocket on a request
 * that reached the gateway as scheme://host: the same origin, or one in
 * allowed (NULL-terminated, may be NULL). No origin (NULL or "") passes. */
int origin_allowed(const char *origin, const char *scheme, const char *host, char *const *allowed);
/* 1 when s is an origin origin_allowed understands (for --allowed-origin). */
int origin_valid(const char *s);

/* ---------------------------------------------------------------- metrics.c */
enum gw_counter {
	GW_C_CONNECTIONS_TOTAL,
	GW_C_CONNECTIONS_REFUSED,
	GW_C_ORIGIN_REFUSED,
	GW_C_MESSAGES,
	GW_C_INVALID,
	GW_C_RATE_LIMITED,
	GW_C_JOBS_SUBMITTED,
	GW_C_JOBS_ACCEPTED,
	GW_C_JOBS_DONE,
	GW_C_JOBS_FAILED,
	GW_C_JOBS_CANCELLED,
	GW_C_FAILOVERS,
	GW_C_SLOW_CLIENTS,
	GW_C_COUNT
};
void metrics_inc(enum gw_counter c);
void metrics_connections_add(long delta);
long metrics_connections(void);
/* Prometheus text 0.0.4; balancer_up: 1/0 per configured balancer (labelled
 * by its 1-based index: the URLs are internal). Caller frees. */
char *metrics_render(const struct gw_config *cfg, const int *balancer_up, size_t *len);

/* ---------------------------------------------------------------- balancer_client.c */
struct bc;

enum bc_event_kind { BC_EV_JOB, BC_EV_BOARD };
enum bc_outcome { BC_RUNNING = 0, BC_DONE, BC_FAILED, BC_CANCELLED };

/* One event for the service thread, in a singly linked list. */
struct bc_event {
	struct bc_event *next;
	enum bc_event_kind kind;
	uint64_t conn;           /* BC_EV_JOB: the connection */
	char id[GW_MAX_ID + 1];  /* the client's job id */
	enum bc_outcome outcome; /* not BC_RUNNING: the job is over */
	int droppable;           /* a progress message: may be dropped for a slow client; 2: with a preview */
	int rejected;            /* the balancer never accepted it: refund its work */
	double work;
	char addr[64];
	char *text; /* the ws message (malloc'd JSON), or NULL */
	size_t len;
	json_t *board;    /* BC_EV_BOARD: {backends, gpus} (owned) */
	json_t *samplers; /* BC_EV_BOARD: the balancer's sampler list or NULL (owned) */
};

/* Starts the client's thread. wake(user) is called from that thread when
 * events are waiting (it must be thread-safe: lws_cancel_service). */
struct bc *bc_start(const struct gw_config *cfg, void (*wake)(void *user), void *user);
/* Stops the thread: cancels every running job at its balancer (best effort,
 * a short deadline), joins, frees. Undelivered events are freed. */
void bc_stop(struct bc *bc);
/* Service thread → client thread. body is stolen. */
void bc_submit(struct bc *bc, uint64_t conn, const char *id, json_t *body, const char *addr, double work);
void bc_cancel(struct bc *bc, uint64_t conn, const char *id);
void bc_close_conn(struct bc *bc, uint64_t conn);
/* Takes every waiting event (oldest first); free each with bc_event_free. */
struct bc_event *bc_take_events(struct bc *bc);
void bc_event_free(struct bc_event *ev);
/* 1/0 per configured balancer: its last call got an HTTP answer. Atomic reads. */
void bc_balancer_up(struct bc *bc, int *up);
/* 1 when the last board poll succeeded somewhere; 0 when every balancer
 * failed; -1 before the first poll finished. */
int bc_board_ok(struct bc *bc);

/* ---------------------------------------------------------------- ws.c */
struct lws_protocols;
struct lws_http_mount;
struct lws_protocol_vhost_options;
struct lws_context;
/* The protocol table (http + websocket in one callback) and the mounts
 * (web/ at `/`, /healthz, /metrics) for the context. */
const struct lws_protocols *ws_protocols(void);
const struct lws_http_mount *ws_mounts(const struct gw_config *cfg);
/* The headers every HTTP answer carries (CSP, X-Frame-Options, nosniff,
 * Referrer-Policy): the vhost's `headers`. */
const struct lws_protocol_vhost_options *ws_headers(void);
/* Set up before the context is created; torn down after it is destroyed. */
int ws_init(const struct gw_config *cfg);
void ws_attach(struct lws_context *ctx, struct bc *bc);
void ws_shutdown(void);

#endif
