/* ws.c — the gateway's libwebsockets protocol: one callback for HTTP
 * (/healthz, /metrics; web/ itself is a file mount lws serves) and for the
 * websocket at /ws, where the JSON messages of docs/websocket.md are
 * read, validated (validate.c), rate-limited (ratelimit.c), forwarded
 * (balancer_client.c), and where the balancer's events come back as
 * messages to the client that asked.
 *
 * An upgrade is refused (an HTTP status the client can read) off /ws, from
 * a page of another origin (origin.c), past --max-connections or past
 * --max-connections-per-address (per common/netaddr.h's client key: IPv6 by
 * its /64).
 *
 * A connection's output is bounded (outq.c: replies coalesce, a client that
 * sends without reading is closed), written in fragments of GW_OUT_CHUNK, and
 * one that takes no output for --send-timeout-s is closed; all connections'
 * output together is bounded by --max-output-bytes (past it, the connection
 * with the most waiting is closed). A closed connection cancels its jobs.
 *
 * Input: lws hands a message over in GW_RX_CHUNK pieces; a longer one is
 * joined in a buffer that grows with it and is freed once it is handled
 * (an idle websocket holds none). Up to --max-message any message; past it
 * (up to --max-image-message, a generate with an init_image, checked once
 * whole) the message is "large": its buffer counts against
 * --max-large-rx-bytes for all connections together (past it the message
 * is dropped as it comes and refused, busy), and it must arrive whole
 * within --large-message-timeout-s, else the connection is closed (a
 * client that starts a huge message and stalls holds what it sent, for
 * that long). A large message is validated on offload.c's thread (its
 * buffer counts until the result comes back), never here. At most
 * --max-img2img-jobs unfinished jobs with an init image (the balancer
 * client keeps each body until its job ends).
 *
 * Service thread only: everything here except ws_init/ws_shutdown runs
 * inside lws callbacks. */
#include "gateway.h"

#include "error.h"

#include "json.h"
#include "log.h"
#include "netaddr.h"

#include <errno.h>
#include <libwebsockets.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

enum { RX_TOO_LARGE = 1, RX_BUSY };

struct conn_job {
	char id[GW_MAX_ID + 1];
	int img2img;
};

/* Per-session data of both HTTP requests and websocket connections. */
struct conn {
	struct conn *next, *prev; /* open websocket connections */
	struct lws *wsi;
	uint64_t id;
	int is_ws;
	char addr[64]; /* as seen (logs) */
	char key[64];  /* what the per-address limits count (netaddr_client_key) */
	/* the message being received, when lws delivers it in pieces (NULL
	 * between messages: an idle connection holds no buffer) */
	char *rx;
	size_t rx_len, rx_cap;
	int rx_started, rx_binary;
	int rx_refused; /* the rest of the message is dropped: RX_TOO_LARGE or RX_BUSY */
	int rx_large;   /* rx counts in large_total */
	int rx_timed;   /* the receive deadline runs */
	/* what waits to be written; the stall timer runs while it is not empty */
	struct outq out;
	int timer_armed;
	int welcomed;
	int killed;
	/* this connection's unfinished jobs */
	struct conn_job *jobs;
	size_t n_jobs;
	/* an HTTP answer waiting for WRITEABLE */
	unsigned char *http_body;
	size_t http_len;
};

static const struct gw_config *cfg;
static struct lws_context *context;
static struct bc *client;
static struct offload *offload; /* validates the large messages */
static struct ratelimit *limiter;
static struct conn *conns;
static uint64_t next_conn_id = 1;
static size_t out_total;   /* every connection's c->out.bytes */
static size_t large_total; /* the rx buffers of large messages being received */
static long img2img_jobs;  /* unfinished jobs with an init image, all connections */
static json_t *board;      /* the balancer's last board {backends, gpus} */
static json_t *known_gpus; /* its GPU classes (strings) */
static json_t *samplers;   /* the names welcome offers */
static struct lws_http_mount mounts[3];

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* ---------------------------------------------------------------- sending */

static void conn_kill(struct conn *c, const char *why)
{
	if (c->killed)
		return;
	c->killed = 1;
	log_warn("connection %llu (%s): closing: %s", (unsigned long long)c->id, c->addr, why);
	out_total -= c->out.bytes;
	outq_clear(&c->out);
	c->timer_armed = 0;
	lws_set_timeout(c->wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
}

static void conn_kill_slow(struct conn *c, const char *why)
{
	if (!c->killed)
		metrics_inc(GW_C_SLOW_CLIENTS);
	conn_kill(c, why);
}

/* (Re)starts the stall timer: the output must move within --send-timeout-s.
 * It is never cancelled (lws 4.1.6's LWS_SET_TIMER_USEC_CANCEL fires it at
 * once instead): timer_armed = 0 disarms it, and a late one is ignored. */
static void conn_arm_timer(struct conn *c)
{
	lws_set_timer_usecs(c->wsi, (lws_usec_t)(cfg->send_timeout_s * LWS_US_PER_SEC));
	c->timer_armed = 1;
}

/* Makes room for len more bytes in the gateway's output: closes the
 * connections with the most waiting until it fits (c itself too, if it is
 * one of them). 0 when c may queue. */
static int make_room(struct conn *c, size_t len)
{
	while (out_total + len > (size_t)cfg->max_output_bytes) {
		struct conn *fat = NULL;
		for (struct conn *o = conns; o; o = o->next)
			if (!o->killed && o->out.bytes && (!fat || o->out.bytes > fat->out.bytes))
				fat = o;
		if (!fat)
			return 0; /* nothing waits: one message larger than the bound still goes */
		conn_kill_slow(fat, "the gateway's output is full and this connection has the most waiting");
		if (fat == c)
			return -1;
	}
	return 0;
}

/* Queues text (copied) for c; id: the job, for progress. */
static void conn_send(struct conn *c, const char *text, size_t len, enum outq_class cls, const char *id)
{
	if (c->killed || make_room(c, len) != 0)
		return;
	size_t before = c->out.bytes;
	switch (outq_push(&c->out, text, len, cls, id)) {
	case OUTQ_OVER:
		conn_kill_slow(c, "it sends faster than it reads its messages");
		return;
	case OUTQ_NOMEM:
		conn_kill(c, "out of memory");
		return;
	case OUTQ_QUEUED:
	case OUTQ_REPLACED:
		break;
	}
	out_total += c->out.bytes - before;
	if (!c->timer_armed)
		conn_arm_timer(c);
	lws_callback_on_writable(c->wsi);
}

/* Sends msg (stolen) with "type" already set. */
static void conn_send_json(struct conn *c, json_t *msg, enum outq_class cls)
{
	size_t len;
	char *text = msg ? json_dump_compact(msg, &len) : NULL;
	json_decref(msg);
	if (text)
		conn_send(c, text, len, cls, NULL);
	free(text);
}

static void conn_send_error(struct conn *c, const struct gw_error *e)
{
	json_t *m = json_pack("{s:s,s:s,s:s}", "type", "error", "code", e->code, "message", e->message);
	if (e->id[0])
		json_object_set_new(m, "id", json_string(e->id));
	if (e->field[0])
		json_object_set_new(m, "field", json_string(e->field));
	log_debug("connection %llu (%s): error %s: %s", (unsigned long long)c->id, c->addr, e->code, e->message);
	conn_send_json(c, m, OUTQ_CONTROL);
}

/* One fragment of the head message per WRITEABLE: lws keeps what the socket
 * did not take (at most a fragment), and WRITEABLE comes again only once
 * that is gone, so every call is progress and restarts the stall timer. The
 * timer also runs while lws still holds a fragment (lws reads no more
 * messages from a connection meanwhile, so nothing new would be queued). */
static int conn_write(struct conn *c)
{
	const char *text;
	int first, last;
	size_t n = c->killed ? 0 : outq_chunk(&c->out, &text, &first, &last);
	if (n > 0) {
		static unsigned char frame[LWS_PRE + GW_OUT_CHUNK]; /* lws writes the frame head before it */
		memcpy(frame + LWS_PRE, text, n);
		int flags = lws_write_ws_flags(LWS_WRITE_TEXT, first, last);
		if (lws_write(c->wsi, frame + LWS_PRE, n, (enum lws_write_protocol)flags) < (int)n)
			return -1;
		outq_advance(&c->out, n);
		out_total -= n;
	}
	if (c->killed)
		return 0;
	if (c->out.head || lws_send_pipe_choked(c->wsi)) {
		if (n > 0 || !c->timer_armed)
			conn_arm_timer(c);
		lws_callback_on_writable(c->wsi);
	} else {
		c->timer_armed = 0;
	}
	return 0;
}

/* The stall timer ran out: output waited --send-timeout-s and none moved. */
static void conn_stalled(struct conn *c)
{
	if (!c->timer_armed)
		return;
	c->timer_armed = 0;
	if (c->out.head || lws_send_pipe_choked(c->wsi))
		conn_kill_slow(c, "it takes none of its messages");
}

/* ---------------------------------------------------------------- jobs of a connection */

static ssize_t conn_job_index(const struct conn *c, const char *id)
{
	for (size_t i = 0; i < c->n_jobs; i++)
		if (!strcmp(c->jobs[i].id, id))
			return (ssize_t)i;
	return -1;
}

static int conn_job_add(struct conn *c, const char *id, int img2img)
{
	if (!c->jobs) {
		c->jobs = calloc((size_t)cfg->max_jobs_per_connection, sizeof *c->jobs);
		if (!c->jobs)
			return -1;
	}
	snprintf(c->jobs[c->n_jobs].id, sizeof c->jobs[0].id, "%s", id);
	c->jobs[c->n_jobs++].img2img = img2img;
	img2img_jobs += img2img;
	return 0;
}

static void conn_job_remove(struct conn *c, const char *id)
{
	ssize_t i = conn_job_index(c, id);
	if (i < 0)
		return;
	img2img_jobs -= c->jobs[i].img2img;
	c->n_jobs--;
	if ((size_t)i != c->n_jobs)
		c->jobs[i] = c->jobs[c->n_jobs];
	if (!c->n_jobs) { /* an idle connection holds no list */
		free(c->jobs);
		c->jobs = NULL;
	}
}

static struct conn *conn_find(uint64_t id)
{
	for (struct conn *c = conns; c; c = c->next)
		if (c->id == id)
			return c;
	return NULL;
}

/* ---------------------------------------------------------------- messages */

/* A welcome (and the board after it). One still waiting is as good: a hello
 * flood from a client that does not read costs no more than one. */
static void send_welcome(struct conn *c)
{
	if (outq_waiting(&c->out, OUTQ_WELCOME))
		return;
	json_t *gpus = json_object_get(board, "gpus");
	json_t *m = json_pack("{s:s,s:O,s:o,s:o,s:s}", "type", "welcome", "samplers", samplers, "gpus",
			      gpus ? json_deep_copy(gpus) : json_array(), "limits", validate_limits_json(cfg),
			      "version", SDGATE_VERSION);
	conn_send_json(c, m, OUTQ_WELCOME);
	c->welcomed = 1;
	if (board) {
		json_t *b = json_deep_copy(board);
		json_object_set_new(b, "type", json_string("board"));
		conn_send_json(c, b, OUTQ_BOARD);
	}
}

static void on_generate(struct conn *c, struct gw_request *r)
{
	struct gw_error e = {0};
	if (conn_job_index(c, r->id) >= 0) {
		validate_error_set(&e, r->id, sd_error_code(SDE_DUPLICATE_ID), "id",
				   "a job with this id is still running");
	} else if ((long)c->n_jobs >= cfg->max_jobs_per_connection) {
		validate_error_set(&e, r->id, sd_error_code(SDE_TOO_MANY_JOBS), NULL,
				   "at most %ld jobs at once per connection; wait for one to finish",
				   cfg->max_jobs_per_connection);
	} else if (r->img2img && img2img_jobs >= cfg->max_img2img_jobs) {
		validate_error_set(&e, r->id, sd_error_code(SDE_BUSY), "init_image",
				   "the gateway runs %ld jobs with an init image already; try again in a moment",
				   cfg->max_img2img_jobs);
	} else {
		double retry;
		if (ratelimit_take(limiter, c->key, r->work, now_s(), &retry) != 0) {
			metrics_inc(GW_C_RATE_LIMITED);
			if (retry < 0)
				validate_error_set(
					&e, r->id, sd_error_code(SDE_RATE_LIMITED), NULL,
					"this job needs %.1f megapixel-steps, more than the %.1f a client may "
					"spend at once; use fewer steps or a smaller size",
					r->work, cfg->rate_burst);
			else
				validate_error_set(&e, r->id, sd_error_code(SDE_RATE_LIMITED), NULL,
						   "rate limit: this job needs %.1f megapixel-steps of GPU work; "
						   "try again in %.0f s",
						   r->work, retry < 1 ? 1.0 : retry + 0.5);
			log_info("connection %llu (%s): job %s rate-limited", (unsigned long long)c->id, c->addr,
				 r->id);
		} else if (conn_job_add(c, r->id, r->img2img) != 0) {
			ratelimit_refund(limiter, c->key, r->work, now_s());
			validate_error_set(&e, r->id, sd_error_code(SDE_INTERNAL), NULL, "out of memory");
		} else {
			log_info("connection %llu (%s): job %s submitted (%.2f megapixel-steps)",
				 (unsigned long long)c->id, c->addr, r->id, r->work);
			bc_submit(client, c->id, r->id, r->body, c->key, r->work);
			r->body = NULL;
			return;
		}
	}
	conn_send_error(c, &e);
}

static void on_valid(struct conn *c, struct gw_request *r)
{
	struct gw_error e;
	switch (r->type) {
	case GW_MSG_HELLO:
		send_welcome(c);
		break;
	case GW_MSG_GENERATE:
		on_generate(c, r);
		break;
	case GW_MSG_CANCEL:
		if (conn_job_index(c, r->id) < 0) {
			validate_error_set(&e, NULL, sd_error_code(SDE_UNKNOWN_JOB), "id",
					   "no unfinished job with id \"%s\"", r->id);
			conn_send_error(c, &e);
		} else {
			bc_cancel(client, c->id, r->id);
		}
		break;
	}
}

/* A validated message: r, or the error e when rc != 0. */
static void on_request(struct conn *c, int rc, struct gw_request *r, struct gw_error *e)
{
	metrics_inc(GW_C_MESSAGES);
	if (rc != 0) {
		metrics_inc(GW_C_INVALID);
		conn_send_error(c, e);
		return;
	}
	on_valid(c, r);
}

static void on_message(struct conn *c, const char *buf, size_t len)
{
	struct gw_request r;
	struct gw_error e;
	on_request(c, validate_message(buf, len, cfg, known_gpus, &r, &e), &r, &e);
	validate_request_free(&r);
}

/* The large messages offload.c has validated: their buffers no longer
 * count; the connections still open get their answers. */
static void drain_offload(void)
{
	for (struct offload_result *r = offload ? offload_take(offload) : NULL, *next; r; r = next) {
		next = r->next;
		large_total -= r->held;
		struct conn *c = conn_find(r->conn);
		if (c && !c->killed)
			on_request(c, r->rc, &r->req, &r->err);
		offload_result_free(r);
	}
}

static void rx_release(struct conn *c)
{
	if (c->rx_large)
		large_total -= c->rx_cap;
	c->rx_large = 0;
	free(c->rx);
	c->rx = NULL;
	c->rx_len = c->rx_cap = 0;
}

/* A message past --max-message must arrive whole within
 * --large-message-timeout-s (lws closes the connection otherwise). */
static void rx_deadline(struct conn *c, int on)
{
	if (on == c->rx_timed || c->killed)
		return;
	c->rx_timed = on;
	if (on)
		lws_set_timeout(c->wsi, PENDING_TIMEOUT_USER_REASON_BASE, (int)cfg->large_message_timeout_s);
	else
		lws_set_timeout(c->wsi, NO_PENDING_TIMEOUT, 0);
}

/* Appends a piece of the message being received; its buffer grows as it
 * comes, within --max-message, past it within --max-image-message and the
 * large messages' shared --max-large-rx-bytes. 0, -1 (out of memory) or
 * RX_BUSY (the shared bound is reached). */
static int rx_append(struct conn *c, const char *in, size_t len)
{
	size_t need = c->rx_len + len;
	if (need > c->rx_cap) {
		size_t cap = c->rx_cap ? c->rx_cap * 2 : 4 * GW_RX_CHUNK;
		if (cap < need)
			cap = need;
		size_t bound = (size_t)(need > (size_t)cfg->max_message ? cfg->max_image_message : cfg->max_message);
		if (cap > bound)
			cap = bound;
		int large = cap > (size_t)cfg->max_message;
		size_t counted = c->rx_large ? c->rx_cap : 0;
		if (large && large_total - counted + cap > (size_t)cfg->max_large_rx_bytes)
			return RX_BUSY;
		char *rx = realloc(c->rx, cap);
		if (!rx)
			return -1;
		if (large)
			large_total = large_total - counted + cap;
		c->rx = rx;
		c->rx_cap = cap;
		c->rx_large = large;
	}
	memcpy(c->rx + c->rx_len, in, len);
	c->rx_len = need;
	return 0;
}

/* A piece of a message. One that comes whole (the usual case) is handled
 * from lws's buffer; the pieces of a longer one are joined in c->rx, which
 * is freed once the message is handled. */
static void on_receive(struct conn *c, const char *in, size_t len)
{
	int last = lws_is_final_fragment(c->wsi) && !lws_remaining_packet_payload(c->wsi);
	if (!c->rx_started) {
		c->rx_started = 1;
		c->rx_binary = lws_frame_is_binary(c->wsi);
		c->rx_refused = 0;
		if (last && !c->rx_binary && len <= (size_t)cfg->max_message) {
			c->rx_started = 0;
			on_message(c, in, len);
			return;
		}
	}
	if (!c->rx_refused && !c->rx_binary) {
		int rc = c->rx_len + len > (size_t)cfg->max_image_message ? RX_TOO_LARGE : rx_append(c, in, len);
		if (rc < 0) {
			rx_release(c);
			conn_kill(c, "out of memory");
			return;
		}
		if (rc) {
			c->rx_refused = rc; /* read and drop the rest, then say so */
			rx_release(c);
		}
	}
	if (c->rx_large || c->rx_refused)
		rx_deadline(c, 1); /* also while the rest of a refused one is dropped */
	if (!last)
		return;
	c->rx_started = 0;
	rx_deadline(c, 0);
	struct gw_error e = {0};
	if (c->rx_binary) {
		validate_error_set(&e, NULL, sd_error_code(SDE_BINARY_FRAME), NULL,
				   "messages are JSON text frames, not binary");
	} else if (c->rx_refused == RX_TOO_LARGE) {
		validate_error_set(&e, NULL, sd_error_code(SDE_TOO_LARGE), NULL,
				   "message too large: at most %ld bytes (%ld for a generate with an init_image)",
				   cfg->max_message, cfg->max_image_message);
	} else if (c->rx_refused == RX_BUSY) {
		validate_error_set(&e, NULL, sd_error_code(SDE_BUSY), NULL,
				   "the gateway is receiving too many large messages; try again in a moment");
	} else if (c->rx_large && offload) {
		/* validated on offload.c's thread; the buffer counts until then */
		size_t held = c->rx_cap, whole = c->rx_len;
		char *buf = c->rx;
		c->rx = NULL;
		c->rx_len = c->rx_cap = 0;
		c->rx_large = 0;
		if (offload_submit(offload, c->id, buf, whole, held, known_gpus) != 0) {
			large_total -= held;
			conn_kill(c, "out of memory");
		}
		return;
	} else {
		on_message(c, c->rx, c->rx_len);
		rx_release(c);
		return;
	}
	metrics_inc(GW_C_MESSAGES);
	metrics_inc(GW_C_INVALID);
	conn_send_error(c, &e);
}

/* ---------------------------------------------------------------- balancer events */

static void apply_board(json_t *b)
{
	json_decref(board);
	board = b;
	json_decref(known_gpus);
	known_gpus = json_array();
	size_t i;
	json_t *g;
	json_array_foreach(json_object_get(board, "gpus"), i, g)
	{
		json_t *cls = json_object_get(g, "class");
		if (json_is_string(cls))
			json_array_append(known_gpus, cls);
	}
	json_t *msg = json_deep_copy(board);
	json_object_set_new(msg, "type", json_string("board"));
	size_t len;
	char *text = json_dump_compact(msg, &len);
	json_decref(msg);
	for (struct conn *c = conns; c && text; c = c->next)
		if (c->welcomed)
			conn_send(c, text, len, OUTQ_BOARD, NULL);
	free(text);
}

static void drain_events(void)
{
	if (!client)
		return;
	struct bc_event *ev = bc_take_events(client);
	while (ev) {
		struct bc_event *next = ev->next;
		if (ev->kind == BC_EV_BOARD) {
			if (ev->samplers) {
				json_decref(samplers);
				samplers = validate_sampler_names(ev->samplers);
			}
			if (ev->board) {
				apply_board(ev->board);
				ev->board = NULL;
			}
		} else {
			struct conn *c = conn_find(ev->conn);
			if (ev->rejected)
				ratelimit_refund(limiter, ev->addr, ev->work, now_s());
			if (c) {
				if (ev->outcome != BC_RUNNING)
					conn_job_remove(c, ev->id);
				conn_send(c, ev->text, ev->len,
					  ev->droppable == 2 ? OUTQ_PREVIEW
					  : ev->droppable    ? OUTQ_PROGRESS
							     : OUTQ_JOB,
					  ev->id);
			}
		}
		bc_event_free(ev);
		ev = next;
	}
}

/* ---------------------------------------------------------------- HTTP */

static int http_reply(struct lws *wsi, struct conn *c, unsigned status, const char *ctype, const char *body, size_t len)
{
	unsigned char hdr[LWS_PRE + 512], *start = hdr + LWS_PRE, *p = start, *end = hdr + sizeof hdr - 1;
	free(c->http_body);
	c->http_body = malloc(LWS_PRE + len + 1);
	if (!c->http_body)
		return -1;
	memcpy(c->http_body + LWS_PRE, body, len);
	c->http_len = len;
	if (lws_add_http_common_headers(wsi, status, ctype, (lws_filepos_t)len, &p, end) ||
	    lws_add_http_header_by_token(wsi, WSI_TOKEN_HTTP_CACHE_CONTROL, (const unsigned char *)"no-store", 8, &p,
					 end) ||
	    lws_finalize_write_http_header(wsi, start, &p, end))
		return -1;
	lws_callback_on_writable(wsi);
	return 0;
}

static int on_http(struct lws *wsi, struct conn *c)
{
	char uri[64];
	if (!c)
		return -1;
	if (lws_hdr_copy(wsi, uri, sizeof uri, WSI_TOKEN_GET_URI) <= 0) {
		/* not a GET: answered at once, body or not, and the connection closed */
		lws_return_http_status(wsi, HTTP_STATUS_METHOD_NOT_ALLOWED, NULL);
		return -1;
	}
	int up[64] = {0};
	if (client)
		bc_balancer_up(client, up);
	if (!strcmp(uri, "/metrics")) {
		size_t len;
		char *text = metrics_render(cfg, up, &len);
		int rc = text ? http_reply(wsi, c, HTTP_STATUS_OK, "text/plain; version=0.0.4", text, len) : -1;
		free(text);
		return rc;
	}
	if (!strcmp(uri, "/healthz")) {
		int ok = client ? bc_board_ok(client) : -1;
		json_t *bals = json_array();
		for (size_t i = 0; i < cfg->n_balancers; i++)
			json_array_append_new(bals, json_pack("{s:I,s:b}", "index", (json_int_t)(i + 1), "up", up[i]));
		json_t *h = json_pack("{s:s,s:i,s:o}", "status",
				      ok == 0  ? "degraded"
				      : ok < 0 ? "starting"
					       : "ok",
				      "connections", (json_int_t)metrics_connections(), "balancers", bals);
		size_t len;
		char *text = json_dump_compact(h, &len);
		json_decref(h);
		int rc = text ? http_reply(wsi, c, ok == 0 ? HTTP_STATUS_SERVICE_UNAVAILABLE : HTTP_STATUS_OK,
					   "application/json", text, len)
			      : -1;
		free(text);
		return rc;
	}
	static const char nf[] = "{\"detail\":\"Not Found\"}";
	return http_reply(wsi, c, HTTP_STATUS_NOT_FOUND, "application/json", nf, sizeof nf - 1);
}

static int http_write(struct lws *wsi, struct conn *c)
{
	unsigned char *body = c->http_body;
	size_t len = c->http_len;
	c->http_body = NULL;
	int n = lws_write(wsi, body + LWS_PRE, len, LWS_WRITE_HTTP_FINAL);
	free(body);
	if (n < (int)len)
		return -1;
	return lws_http_transaction_completed(wsi) ? -1 : 0;
}

/* ---------------------------------------------------------------- the callback */

/* Whether the peer is one of --trusted-proxy (whose forwarding headers are
 * believed). */
static int peer_trusted(struct lws *wsi)
{
	char peer[64], canon[64], listed[64];
	lws_get_peer_simple(wsi, peer, sizeof peer);
	netaddr_canonical(peer, canon, sizeof canon);
	for (char **p = cfg->trusted_proxies; p && *p; p++) {
		netaddr_canonical(*p, listed, sizeof listed);
		if (!strcmp(listed, canon))
			return 1;
	}
	return 0;
}

/* The client's address, and the key the per-address limits count it by.
 * Behind a trusted reverse proxy the peer is the proxy: the client is the
 * proxy's X-Real-IP, else the last address of X-Forwarded-For (the one the
 * proxy itself appended; earlier ones are the client's to forge). */
static void client_address(struct lws *wsi, char *addr, size_t len, char *key, size_t key_len)
{
	lws_get_peer_simple(wsi, addr, len);
	char hdr[256];
	if (peer_trusted(wsi) && (lws_hdr_copy(wsi, hdr, sizeof hdr, WSI_TOKEN_HTTP_X_REAL_IP) > 0 ||
				  lws_hdr_copy(wsi, hdr, sizeof hdr, WSI_TOKEN_X_FORWARDED_FOR) > 0)) {
		const char *last = strrchr(hdr, ',');
		last = last ? last + 1 : hdr;
		while (*last == ' ')
			last++;
		size_t n = strcspn(last, " ");
		if (n > 0 && n < len && n <= 45) {
			memcpy(addr, last, n);
			addr[n] = '\0';
		}
	}
	if (!addr[0])
		snprintf(addr, len, "unknown");
	netaddr_client_key(addr, key, key_len);
}

/* How the client reached the gateway: scheme and Host (from a trusted
 * proxy, its X-Forwarded-Proto / X-Forwarded-Host when it sends them). */
static void request_origin(struct lws *wsi, char *scheme, size_t scheme_len, char *host, size_t host_len)
{
	static const char proto_hdr[] = "x-forwarded-proto:", host_hdr[] = "x-forwarded-host:";
	int trusted = peer_trusted(wsi);
	if (trusted && lws_hdr_custom_copy(wsi, scheme, (int)scheme_len, proto_hdr, sizeof proto_hdr - 1) > 0)
		scheme[strcspn(scheme, ", ")] = '\0'; /* the first proxy's, when several list theirs */
	else
		snprintf(scheme, scheme_len, "http");
	if (trusted && lws_hdr_custom_copy(wsi, host, (int)host_len, host_hdr, sizeof host_hdr - 1) > 0)
		host[strcspn(host, ", ")] = '\0';
	else if (lws_hdr_copy(wsi, host, (int)host_len, WSI_TOKEN_HOST) <= 0)
		host[0] = '\0';
}

/* Open websockets counted under one key (a linear walk: connections are
 * bounded by --max-connections). */
static long conns_from(const char *key)
{
	long n = 0;
	for (const struct conn *c = conns; c; c = c->next)
		n += strcmp(c->key, key) == 0;
	return n;
}

/* Whether a websocket upgrade may proceed: 0, or the HTTP status it is
 * refused with (*why says why, for the client). The origin is judged first:
 * a refused page must not count against its visitor's caps. */
static unsigned accept_ws(struct lws *wsi, const char **why)
{
	char uri[16];
	if (lws_hdr_copy(wsi, uri, sizeof uri, WSI_TOKEN_GET_URI) <= 0 || strcmp(uri, "/ws") != 0) {
		metrics_inc(GW_C_CONNECTIONS_REFUSED);
		*why = "The websocket is at /ws";
		return HTTP_STATUS_NOT_FOUND;
	}
	char origin[300], scheme[16], host[300], addr[64], key[64];
	int has_origin = lws_hdr_total_length(wsi, WSI_TOKEN_ORIGIN) > 0;
	if (has_origin && lws_hdr_copy(wsi, origin, sizeof origin, WSI_TOKEN_ORIGIN) <= 0)
		snprintf(origin, sizeof origin, "(too long)");
	request_origin(wsi, scheme, sizeof scheme, host, sizeof host);
	if (has_origin && !origin_allowed(origin, scheme, host, cfg->allowed_origins)) {
		metrics_inc(GW_C_CONNECTIONS_REFUSED);
		metrics_inc(GW_C_ORIGIN_REFUSED);
		client_address(wsi, addr, sizeof addr, key, sizeof key);
		log_warn("websocket from %s refused: Origin %.120s is not %s://%.120s nor an --allowed-origin", addr,
			 origin, scheme, host);
		*why = "Websockets are open to this site's own pages only";
		return HTTP_STATUS_FORBIDDEN;
	}
	if (metrics_connections() >= cfg->max_connections) {
		metrics_inc(GW_C_CONNECTIONS_REFUSED);
		log_warn("websocket refused: %ld connections already open", metrics_connections());
		*why = "The gateway is full; try again in a moment";
		return HTTP_STATUS_SERVICE_UNAVAILABLE;
	}
	client_address(wsi, addr, sizeof addr, key, sizeof key);
	if (conns_from(key) >= cfg->max_connections_per_address) {
		metrics_inc(GW_C_CONNECTIONS_REFUSED);
		log_warn("websocket from %s refused: %ld connections from %s already open", addr,
			 cfg->max_connections_per_address, key);
		*why = "Too many connections from your address";
		return 429;
	}
	return 0;
}

static void conn_open(struct lws *wsi, struct conn *c)
{
	memset(c, 0, sizeof *c);
	c->wsi = wsi;
	c->id = next_conn_id++;
	c->is_ws = 1;
	client_address(wsi, c->addr, sizeof c->addr, c->key, sizeof c->key);
	/* The kernel's buffer is bounded too (autotuned, it grows to megabytes
	 * for a client that does not read); the outq above is what waits. */
	int sndbuf = GW_SOCKET_SNDBUF;
	if (setsockopt(lws_get_socket_fd(wsi), SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf) != 0)
		log_debug("connection %llu: SO_SNDBUF: %s", (unsigned long long)c->id, strerror(errno));
	c->next = conns;
	if (conns)
		conns->prev = c;
	conns = c;
	metrics_connections_add(1);
	metrics_inc(GW_C_CONNECTIONS_TOTAL);
	log_info("connection %llu from %s", (unsigned long long)c->id, c->addr);
}

static void conn_close(struct conn *c)
{
	if (!c->is_ws)
		return;
	if (c->prev)
		c->prev->next = c->next;
	else
		conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	if (client && c->n_jobs)
		bc_close_conn(client, c->id);
	log_info("connection %llu (%s) closed%s%s", (unsigned long long)c->id, c->addr,
		 c->rx_timed ? " in the middle of a large message (--large-message-timeout-s)" : "",
		 c->n_jobs ? ", cancelling its jobs" : "");
	out_total -= c->out.bytes;
	outq_clear(&c->out);
	rx_release(c);
	for (size_t i = 0; i < c->n_jobs; i++)
		img2img_jobs -= c->jobs[i].img2img;
	free(c->jobs);
	free(c->http_body);
	c->is_ws = 0;
	metrics_connections_add(-1);
}

static int callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in, size_t len)
{
	struct conn *c = user;
	switch (reason) {
	case LWS_CALLBACK_HTTP:
		return on_http(wsi, c) ? -1 : 0;
	case LWS_CALLBACK_HTTP_WRITEABLE:
		if (c && c->http_body)
			return http_write(wsi, c);
		break;
	case LWS_CALLBACK_CLOSED_HTTP:
	case LWS_CALLBACK_HTTP_DROP_PROTOCOL:
		if (c && !c->is_ws) {
			free(c->http_body);
			c->http_body = NULL;
		}
		break;
	case LWS_CALLBACK_HTTP_CONFIRM_UPGRADE: {
		/* Refused with an HTTP status the client can read (429, 503, 404),
		 * not a bare hang-up. */
		const char *why = NULL;
		unsigned status = accept_ws(wsi, &why);
		if (!status)
			return 0;
		if (lws_return_http_status(wsi, status, why))
			return -1;
		return 1;
	}
	case LWS_CALLBACK_ESTABLISHED:
		conn_open(wsi, c);
		return 0;
	case LWS_CALLBACK_RECEIVE:
		on_receive(c, in, len);
		return 0;
	case LWS_CALLBACK_SERVER_WRITEABLE:
		return conn_write(c);
	case LWS_CALLBACK_TIMER:
		if (c && c->is_ws)
			conn_stalled(c);
		return 0;
	case LWS_CALLBACK_CLOSED:
		conn_close(c);
		return 0;
	case LWS_CALLBACK_EVENT_WAIT_CANCELLED:
		drain_offload();
		drain_events();
		return 0;
	default:
		break;
	}
	return lws_callback_http_dummy(wsi, reason, user, in, len);
}

static const struct lws_protocols PROTOCOLS[] = {
	/* lws allocates the rx buffer for every websocket (it is not shared):
	 * GW_RX_CHUNK keeps an idle connection small; the send size is set on
	 * its own (else lws would cut every write to the rx buffer's size). */
	{"sdgate", callback, sizeof(struct conn), GW_RX_CHUNK, 0, NULL, GW_OUT_CHUNK},
	{NULL, NULL, 0, 0, 0, NULL, 0},
};

const struct lws_protocols *ws_protocols(void) { return PROTOCOLS; }

/* The UI is one page of its own files: nothing inline, nothing from
 * elsewhere (images are blob: URLs made from the messages), never framed. */
static const struct lws_protocol_vhost_options HEADERS[] = {
	{NULL, NULL, "content-security-policy:",
	 "default-src 'self'; img-src 'self' blob: data:; connect-src 'self' blob: ws: wss:; script-src 'self'; "
	 "style-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"},
	{&HEADERS[0], NULL, "x-frame-options:", "DENY"},
	{&HEADERS[1], NULL, "x-content-type-options:", "nosniff"},
	{&HEADERS[2], NULL, "referrer-policy:", "no-referrer"},
};

const struct lws_protocol_vhost_options *ws_headers(void) { return &HEADERS[3]; }

const struct lws_http_mount *ws_mounts(const struct gw_config *config)
{
	memset(mounts, 0, sizeof mounts);
	mounts[0].mountpoint = "/healthz";
	mounts[0].mountpoint_len = 8;
	mounts[0].origin = "sdgate";
	mounts[0].origin_protocol = LWSMPRO_CALLBACK;
	mounts[0].mount_next = &mounts[1];
	mounts[1].mountpoint = "/metrics";
	mounts[1].mountpoint_len = 8;
	mounts[1].origin = "sdgate";
	mounts[1].origin_protocol = LWSMPRO_CALLBACK;
	mounts[1].mount_next = &mounts[2];
	mounts[2].mountpoint = "/";
	mounts[2].mountpoint_len = 1;
	mounts[2].origin = config->web_dir;
	mounts[2].def = "index.html";
	mounts[2].origin_protocol = LWSMPRO_FILE;
	mounts[2].cache_max_age = 60;
	mounts[2].cache_reusable = 1;
	mounts[2].cache_revalidate = 1;
	return mounts;
}

int ws_init(const struct gw_config *config)
{
	cfg = config;
	limiter = ratelimit_new(cfg->rate_burst, cfg->rate_refill, (size_t)cfg->rate_clients);
	samplers = validate_sampler_names(NULL);
	return limiter && samplers ? 0 : -1;
}

static void wake(void *ctx) { lws_cancel_service(ctx); }

/* The offload thread lives while a balancer client is attached: it is
 * stopped before the context is destroyed (its wake needs the context). */
void ws_attach(struct lws_context *ctx, struct bc *bc)
{
	context = ctx;
	client = bc;
	if (bc && !offload) {
		offload = offload_start(cfg, wake, ctx);
		if (!offload)
			log_warn("no thread for large messages: they are validated on the service thread");
	} else if (!bc) {
		offload_stop(offload);
		offload = NULL;
	}
}

void ws_shutdown(void)
{
	ratelimit_free(limiter);
	limiter = NULL;
	json_decref(board);
	json_decref(known_gpus);
	json_decref(samplers);
	board = known_gpus = samplers = NULL;
}
