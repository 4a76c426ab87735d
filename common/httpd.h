/* httpd.h — the h2o (libh2o-evloop 2.2.5) server shared by the backend and
 * the balancer: one event-loop thread, a route table of exact or prefix
 * paths, JSON replies with Content-Length always set, a clean stop on
 * SIGINT/SIGTERM, and a hand-off from worker threads to the loop.
 *
 * Hostile clients: HTTP/2 is not offered on cleartext (h2c smuggling
 * through a proxy); open connections are capped, and running out of
 * descriptors pauses accepting instead of spinning. h2o 2.2.5 hides the
 * Content-Length and Transfer-Encoding headers from handlers, so framing
 * ambiguities are left to the front proxy (docs/security.md).
 *
 * Thread rules: everything here runs on the loop thread, except
 * httpd_post() which any thread may call. Never give an h2o_req_t to another
 * thread; tie per-request state to req->pool (httpd_alloc_guarded). */
#ifndef SDGATE_HTTPD_H
#define SDGATE_HTTPD_H

#ifndef H2O_USE_LIBUV
#define H2O_USE_LIBUV 0
#endif
#include <h2o.h>
#if H2O_USE_LIBUV
#error "sdgate uses libh2o-evloop"
#endif
#include <jansson.h>
#include <signal.h>

struct httpd;

/* A handler answers (now or later) and returns 0, or returns -1 for "not
 * mine" (the route table then answers 404). rest: the path after a prefix
 * route's "/" (NUL-terminated, in req->pool), or "" for an exact route. */
typedef int (*httpd_handler_fn)(struct httpd *h, h2o_req_t *req, const char *rest);

struct httpd_route {
	const char *method; /* "GET", "POST", "DELETE", or NULL for any */
	const char *path;   /* exact "/sdapi/v1/txt2img", or prefix "/v1/jobs/" (ends in '/') */
	httpd_handler_fn fn;
};

struct httpd_config {
	const char *host;                    /* "127.0.0.1" */
	int port;                            /* 0 = any free port (see httpd_port) */
	size_t max_body;                     /* bodies over this get a JSON 413, except on: */
	const char *const *large_body_paths; /* NULL-terminated exact paths (or NULL) whose bodies may be */
	size_t large_body_max;               /* up to this (img2img's init images) */
	const struct httpd_route *routes;
	size_t n_routes;
	void *user; /* the program's state, see httpd_user */
	/* Shape of 404/405/413 replies: 0 = FastAPI's {"detail": "..."},
	 * 1 = sdgate's {"detail", "error": {code, message}}. */
	int sdgate_errors;
	/* Open connections at most; past it the listener pauses (new clients
	 * wait in the kernel's backlog) until one closes. 0 = HTTPD_MAX_CONNECTIONS,
	 * lowered to fit RLIMIT_NOFILE. */
	int max_connections;
	/* Sent as X-Sdgate-Instance on every answer, or NULL: lets the balancer
	 * recognise itself when a registration points back at it. */
	const char *instance;
	/* Optional: runs before the routes on every request; it answers and
	 * returns 0 (refused), or returns -1 to let the routes have it. */
	httpd_handler_fn guard;
};

#define HTTPD_MAX_CONNECTIONS 4096
#define HTTPD_FD_RESERVE 256 /* descriptors kept for SQLite, curl, logs */

/* Creates the server and binds its listener. Returns NULL and logs why. */
struct httpd *httpd_new(const struct httpd_config *cfg);
void httpd_free(struct httpd *h);
int httpd_port(const struct httpd *h);
/* Connections open now, and the cap in force. */
int httpd_connections(const struct httpd *h);
int httpd_max_connections(const struct httpd *h);
void *httpd_user(const struct httpd *h);
h2o_evloop_t *httpd_loop(struct httpd *h);
h2o_context_t *httpd_context(struct httpd *h);
/* Runs the loop until httpd_stop() or SIGINT/SIGTERM (which this installs). */
void httpd_run(struct httpd *h);
void httpd_stop(struct httpd *h);

/* Runs on the loop thread after each loop iteration (at least every 50 ms). */
typedef void (*httpd_tick_fn)(struct httpd *h);
void httpd_set_tick(struct httpd *h, httpd_tick_fn fn);
/* From a tick or a callback on the loop: the next tick comes within ms (at
 * least 1), not 50, once; for work due sooner (the balancer's progress
 * polls, curl's timers). */
void httpd_tick_within(struct httpd *h, int ms);

/* Cross-thread hand-off: any thread calls httpd_post(h, msg); the loop thread
 * later calls fn(h, msg). msg is owned by the caller's protocol (typically
 * freed in fn); its embedded h2o_multithread_message_t must come first. */
struct httpd_msg;
typedef void (*httpd_msg_fn)(struct httpd *h, struct httpd_msg *msg);
struct httpd_msg {
	h2o_multithread_message_t link; /* zeroed by httpd_post */
	httpd_msg_fn fn;
};
void httpd_post(struct httpd *h, struct httpd_msg *msg);

/* Replies. Each sets Content-Length and Content-Type and sends the whole
 * body; after it the handler must not touch req. */
void httpd_reply(h2o_req_t *req, int status, const char *content_type, const char *body, size_t len);
/* Takes ownership of body (malloc'd); freed when the request ends. */
void httpd_reply_owned(h2o_req_t *req, int status, const char *content_type, char *body, size_t len);
/* Steals the reference to json. */
void httpd_reply_json(h2o_req_t *req, int status, json_t *json);
/* {"detail": message} (FastAPI) */
void httpd_reply_detail(h2o_req_t *req, int status, const char *message);

/* Request helpers. */
int httpd_method_is(const h2o_req_t *req, const char *method);
/* Copies a query parameter's raw value; returns its length or -1 if absent. */
int httpd_query_param(const h2o_req_t *req, const char *name, char *out, size_t out_len);
/* Returns a header's value (not NUL-terminated) or an empty iovec. */
h2o_iovec_t httpd_header(const h2o_req_t *req, const char *name);

/* Memory tied to the request: dispose(p) runs when the request ends, whether
 * it was answered or the client went away. Zeroed. */
void *httpd_alloc_guarded(h2o_req_t *req, size_t size, void (*dispose)(void *));

#endif
