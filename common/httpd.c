/* httpd.c — see httpd.h. Follows h2o 2.2.5's libh2o-evloop patterns, as
 * verified for this project: one evloop thread, EINTR-tolerant loop, Content-Length always set,
 * cross-thread messages through the context's multithread queue. */
#include "httpd.h"

#include "error.h"

#include "log.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <netdb.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#define ACCEPT_RETRY_MS 100 /* out of descriptors: pause accepting this long */
#define TICK_MS 50          /* the tick comes at least this often */

struct httpd_handler {
	h2o_handler_t super;
	struct httpd *h;
};

struct httpd {
	struct httpd_config cfg;
	h2o_globalconf_t config;
	h2o_context_t ctx;
	h2o_accept_ctx_t accept_ctx;
	h2o_evloop_t *loop;
	h2o_socket_t *listener;
	h2o_multithread_receiver_t receiver;
	int port;
	volatile sig_atomic_t stopping;
	httpd_tick_fn tick;
	int next_tick_ms; /* the loop's next wait when under TICK_MS; 0: TICK_MS */
	int conns, max_conns;
	int listening;            /* the listener is being read */
	uint64_t accept_retry_at; /* ms (h2o_now); 0 = not paused for lack of descriptors */
};

static volatile sig_atomic_t signalled;

static void on_signal(int sig)
{
	(void)sig;
	signalled = 1;
}

static void reply_error(struct httpd *h, h2o_req_t *req, enum sd_error e, const char *msg)
{
	json_t *j = json_pack("{s:s}", "detail", msg);
	if (h->cfg.sdgate_errors)
		json_object_set_new(j, "error", json_pack("{s:s,s:s}", "code", sd_error_code(e), "message", msg));
	httpd_reply_json(req, sd_error_status(e), j);
}

/* req's body bound: large_body_max on the large-body paths, else max_body. */
static size_t body_limit(const struct httpd *h, h2o_req_t *req)
{
	const h2o_iovec_t path = req->path_normalized;
	for (const char *const *p = h->cfg.large_body_paths; p && *p; p++)
		if (path.len == strlen(*p) && !memcmp(path.base, *p, path.len))
			return h->cfg.large_body_max;
	return h->cfg.max_body;
}

static int on_req(h2o_handler_t *self, h2o_req_t *req)
{
	struct httpd *h = ((struct httpd_handler *)self)->h;
	const h2o_iovec_t path = req->path_normalized;
	int path_matched = 0;

	if (h->cfg.instance)
		h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("x-sdgate-instance"), 0, NULL,
				      h->cfg.instance, strlen(h->cfg.instance));
	if (h->stopping) { /* the last turns of the loop deliver what was in flight; nothing new starts */
		req->http1_is_persistent = 0;
		reply_error(h, req, SDE_SHUTTING_DOWN, "Shutting down");
		return 0;
	}
	if (req->entity.base && req->entity.len > body_limit(h, req)) {
		reply_error(h, req, SDE_BODY_TOO_LARGE, "Request body too large");
		return 0;
	}
	if (h->cfg.guard && h->cfg.guard(h, req, "") == 0)
		return 0;
	for (size_t i = 0; i < h->cfg.n_routes; i++) {
		const struct httpd_route *r = &h->cfg.routes[i];
		size_t plen = strlen(r->path);
		const char *rest;
		if (r->path[plen - 1] == '/' && plen > 1) {
			if (path.len <= plen || memcmp(path.base, r->path, plen) != 0)
				continue;
			rest = h2o_strdup(&req->pool, path.base + plen, path.len - plen).base;
		} else {
			if (path.len != plen || memcmp(path.base, r->path, plen) != 0)
				continue;
			rest = "";
		}
		path_matched = 1;
		if (r->method && !httpd_method_is(req, r->method))
			continue;
		if (r->fn(h, req, rest) == 0)
			return 0;
	}
	if (path_matched)
		reply_error(h, req, SDE_METHOD_NOT_ALLOWED, "Method Not Allowed");
	else
		reply_error(h, req, SDE_NOT_FOUND, "Not Found");
	return 0;
}

static void on_accept(h2o_socket_t *listener, const char *err);

/* The listener is read only while there is room for a connection and
 * descriptors to take it: a full or starved server leaves new clients in
 * the kernel's backlog instead of spinning on a readable listener. */
static void listener_update(struct httpd *h)
{
	int want = !h->stopping && h->conns < h->max_conns && h->accept_retry_at == 0;
	if (!h->listener || want == h->listening)
		return;
	h->listening = want;
	if (want)
		h2o_socket_read_start(h->listener, on_accept);
	else
		h2o_socket_read_stop(h->listener);
}

static void on_conn_close(void *data)
{
	struct httpd *h = data;
	h->conns--;
	listener_update(h);
}

static void on_accept(h2o_socket_t *listener, const char *err)
{
	struct httpd *h = listener->data;
	if (err)
		return;
	/* Accept what is pending, a few at a time, so one burst can't starve the loop. */
	for (int i = 0; i < 16 && h->conns < h->max_conns; i++) {
		h2o_socket_t *sock = h2o_evloop_socket_accept(listener);
		if (!sock) {
			if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
				static uint64_t last_log;
				uint64_t now = h2o_now(h->loop);
				if (now - last_log >= 10000) {
					last_log = now;
					log_warn("accept: %s with %d connections open; pausing new connections",
						 strerror(errno), h->conns);
				}
				h->accept_retry_at = now + ACCEPT_RETRY_MS;
			}
			break;
		}
		h->conns++;
		sock->on_close.cb = on_conn_close;
		sock->on_close.data = h;
		h2o_accept(&h->accept_ctx, sock);
	}
	listener_update(h);
}

/* The cap asked for, lowered so that the cap plus a reserve fits in the
 * process's descriptor limit. */
static int connection_cap(int asked)
{
	int cap = asked > 0 ? asked : HTTPD_MAX_CONNECTIONS;
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) {
		long room = (long)rl.rlim_cur - HTTPD_FD_RESERVE;
		if (room < 16)
			room = 16;
		if (cap > room) {
			log_warn("max connections lowered from %d to %ld to fit the descriptor limit (%ld)", cap, room,
				 (long)rl.rlim_cur);
			cap = (int)room;
		}
	}
	return cap;
}

static void on_messages(h2o_multithread_receiver_t *receiver, h2o_linklist_t *messages)
{
	struct httpd *h = H2O_STRUCT_FROM_MEMBER(struct httpd, receiver, receiver);
	while (!h2o_linklist_is_empty(messages)) {
		h2o_multithread_message_t *m = H2O_STRUCT_FROM_MEMBER(h2o_multithread_message_t, link, messages->next);
		h2o_linklist_unlink(&m->link);
		struct httpd_msg *msg = (struct httpd_msg *)m;
		msg->fn(h, msg);
	}
}

static int open_listener(const char *host, int port, int *bound_port)
{
	struct addrinfo hints = {
		.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICHOST | AI_PASSIVE};
	struct addrinfo *ai;
	char portstr[16];
	snprintf(portstr, sizeof portstr, "%d", port);
	int rc = getaddrinfo(host, portstr, &hints, &ai);
	if (rc != 0) {
		log_error("listen %s:%d: %s (give a numeric address)", host, port, gai_strerror(rc));
		return -1;
	}
	int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	int on = 1;
	if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on) != 0 ||
	    bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(fd, SOMAXCONN) != 0) {
		log_error("listen %s:%d: %s", host, port, strerror(errno));
		if (fd >= 0)
			close(fd);
		freeaddrinfo(ai);
		return -1;
	}
	freeaddrinfo(ai);
	struct sockaddr_storage ss;
	socklen_t sl = sizeof ss;
	getsockname(fd, (struct sockaddr *)&ss, &sl);
	*bound_port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
						     : ((struct sockaddr_in *)&ss)->sin_port);
	return fd;
}

struct httpd *httpd_new(const struct httpd_config *cfg)
{
	struct httpd *h = calloc(1, sizeof *h);
	if (!h)
		return NULL;
	h->cfg = *cfg;
	int fd = open_listener(cfg->host, cfg->port, &h->port);
	if (fd < 0) {
		free(h);
		return NULL;
	}
	h2o_config_init(&h->config);
	/* Let h2o read a little past our limit so that we, not h2o, answer the
	 * first oversized bodies with a JSON 413; beyond that h2o's own 413. */
	size_t largest = cfg->max_body * 2;
	if (cfg->large_body_paths && cfg->large_body_max > largest)
		largest = cfg->large_body_max;
	h->config.max_request_entity_size = largest + 4096;
	/* No HTTP/2 on cleartext (neither Upgrade: h2c nor prior knowledge): a
	 * proxy in front that passes Upgrade on would let clients tunnel past
	 * its rules. HTTP/1.1 is what A1111 clients, NGINX and the gateway speak. */
	h->config.http1.upgrade_to_http2 = 0;
	h->max_conns = connection_cap(cfg->max_connections);
	h2o_hostconf_t *host = h2o_config_register_host(&h->config, h2o_iovec_init(H2O_STRLIT("default")), 65535);
	h2o_pathconf_t *pc = h2o_config_register_path(host, "/", 0);
	struct httpd_handler *hd = (struct httpd_handler *)h2o_create_handler(pc, sizeof *hd);
	hd->super.on_req = on_req;
	hd->h = h;

	h->loop = h2o_evloop_create();
	h2o_context_init(&h->ctx, h->loop, &h->config);
	h->accept_ctx.ctx = &h->ctx;
	h->accept_ctx.hosts = h->config.hosts;
	h2o_multithread_register_receiver(h->ctx.queue, &h->receiver, on_messages);
	h->listener = h2o_evloop_socket_create(h->loop, fd, H2O_SOCKET_FLAG_DONT_READ);
	h->listener->data = h;
	listener_update(h);
	return h;
}

void httpd_free(struct httpd *h)
{
	if (!h)
		return;
	if (h->listener)
		h2o_socket_close(h->listener);
	h->listener = NULL; /* connections closing from here on must not restart it */
	/* h2o_context_dispose asserts that no connection and no timer is
	 * left, and 2.2.5 cannot close idle HTTP/1 keep-alive connections:
	 * zero the context's timeouts so that whatever waits on them (idle
	 * connections first) expires on the next turns of the loop.
	 * Connections still answering (callers end their streams first) get
	 * up to 2 s; past that the loop is left to the OS. */
	h2o_context_request_shutdown(&h->ctx);
	h2o_timeout_t *timeouts[] = {&h->ctx.zero_timeout,
				     &h->ctx.one_sec_timeout,
				     &h->ctx.hundred_ms_timeout,
				     &h->ctx.handshake_timeout,
				     &h->ctx.http1.req_timeout,
				     &h->ctx.http2.idle_timeout,
				     &h->ctx.http2.graceful_shutdown_timeout,
				     &h->ctx.proxy.io_timeout};
	size_t n_timeouts = sizeof timeouts / sizeof timeouts[0];
	for (size_t k = 0; k < n_timeouts; k++)
		timeouts[k]->timeout = 0;
	int busy = 1;
	for (int turn = 0; turn < 200 && busy; turn++) {
		h2o_evloop_run(h->loop, 10);
		busy = !h2o_linklist_is_empty(&h->ctx.http1._conns) || !h2o_linklist_is_empty(&h->ctx.http2._conns);
		for (size_t k = 0; k < n_timeouts && !busy; k++)
			busy = !h2o_linklist_is_empty(&timeouts[k]->_entries);
	}
	if (busy) {
		log_warn("connections still open at exit; leaving the event loop to the OS");
		return;
	}
	h2o_multithread_unregister_receiver(h->ctx.queue, &h->receiver);
	/* libh2o 2.2.5 leaks 88 bytes of the context's queue here (destroying
	 * the queue ourselves crashes in the library); tests/lsan.supp names it. */
	h2o_context_dispose(&h->ctx);
	/* Closed sockets (the queue's wake-up pipe among them) are freed on the
	 * loop's next turn: give it one before destroying the loop. */
	h2o_evloop_run(h->loop, 0);
	h2o_evloop_destroy(h->loop);
	h2o_config_dispose(&h->config);
	free(h);
}

int httpd_port(const struct httpd *h) { return h->port; }
int httpd_connections(const struct httpd *h) { return h->conns; }
int httpd_max_connections(const struct httpd *h) { return h->max_conns; }
void *httpd_user(const struct httpd *h) { return h->cfg.user; }
h2o_evloop_t *httpd_loop(struct httpd *h) { return h->loop; }
h2o_context_t *httpd_context(struct httpd *h) { return &h->ctx; }
void httpd_set_tick(struct httpd *h, httpd_tick_fn fn) { h->tick = fn; }

void httpd_tick_within(struct httpd *h, int ms)
{
	if (ms < 1)
		ms = 1;
	if (ms < TICK_MS && (h->next_tick_ms == 0 || ms < h->next_tick_ms))
		h->next_tick_ms = ms;
}

void httpd_stop(struct httpd *h) { h->stopping = 1; }

void httpd_run(struct httpd *h)
{
	struct sigaction sa = {.sa_handler = on_signal};
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	while (!h->stopping && !signalled) {
		int wait = h->next_tick_ms ? h->next_tick_ms : TICK_MS;
		h->next_tick_ms = 0;
		if (h2o_evloop_run(h->loop, wait) != 0 && errno != EINTR) {
			log_error("event loop: %s", strerror(errno));
			break;
		}
		if (h->accept_retry_at && h2o_now(h->loop) >= h->accept_retry_at) {
			h->accept_retry_at = 0;
			listener_update(h);
		}
		if (h->tick)
			h->tick(h);
	}
	h->stopping = 1;
	listener_update(h);
	if (signalled)
		log_info("signal received, shutting down");
}

void httpd_post(struct httpd *h, struct httpd_msg *msg)
{
	memset(&msg->link, 0, sizeof msg->link);
	h2o_multithread_send_message(&h->receiver, &msg->link);
}

void httpd_reply(h2o_req_t *req, int status, const char *content_type, const char *body, size_t len)
{
	static h2o_generator_t generator = {NULL, NULL};
	h2o_iovec_t buf = h2o_strdup(&req->pool, body, len);
	req->res.status = status;
	req->res.reason = status < 300 ? "OK" : "Error";
	req->res.content_length = len;
	h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, content_type, strlen(content_type));
	h2o_start_response(req, &generator);
	h2o_send(req, &buf, 1, H2O_SEND_STATE_FINAL);
}

static void free_owned(void *p) { free(*(char **)p); }

void httpd_reply_owned(h2o_req_t *req, int status, const char *content_type, char *body, size_t len)
{
	static h2o_generator_t generator = {NULL, NULL};
	char **slot = h2o_mem_alloc_shared(&req->pool, sizeof *slot, free_owned);
	*slot = body;
	h2o_iovec_t buf = h2o_iovec_init(body, len);
	req->res.status = status;
	req->res.reason = status < 300 ? "OK" : "Error";
	req->res.content_length = len;
	h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, content_type, strlen(content_type));
	h2o_start_response(req, &generator);
	h2o_send(req, &buf, 1, H2O_SEND_STATE_FINAL);
}

void httpd_reply_json(h2o_req_t *req, int status, json_t *json)
{
	char *text = json ? json_dumps(json, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
	json_decref(json);
	if (!text) {
		static const char oom[] = "{\"detail\":\"Internal Server Error\"}";
		httpd_reply(req, 500, "application/json", oom, sizeof oom - 1);
		return;
	}
	httpd_reply_owned(req, status, "application/json", text, strlen(text));
}

void httpd_reply_detail(h2o_req_t *req, int status, const char *message)
{
	httpd_reply_json(req, status, json_pack("{s:s}", "detail", message));
}

int httpd_method_is(const h2o_req_t *req, const char *method)
{
	return h2o_memis(req->method.base, req->method.len, method, strlen(method));
}

int httpd_query_param(const h2o_req_t *req, const char *name, char *out, size_t out_len)
{
	if (req->query_at == SIZE_MAX)
		return -1;
	const char *q = req->path.base + req->query_at + 1;
	const char *end = req->path.base + req->path.len;
	size_t nlen = strlen(name);
	while (q < end) {
		const char *amp = memchr(q, '&', (size_t)(end - q));
		const char *stop = amp ? amp : end;
		const char *eq = memchr(q, '=', (size_t)(stop - q));
		const char *kend = eq ? eq : stop;
		if ((size_t)(kend - q) == nlen && memcmp(q, name, nlen) == 0) {
			const char *v = eq ? eq + 1 : stop;
			size_t vlen = (size_t)(stop - v);
			if (vlen >= out_len)
				vlen = out_len - 1;
			memcpy(out, v, vlen);
			out[vlen] = '\0';
			return (int)vlen;
		}
		q = stop + 1;
	}
	return -1;
}

h2o_iovec_t httpd_header(const h2o_req_t *req, const char *name)
{
	ssize_t i = h2o_find_header_by_str(&req->headers, name, strlen(name), -1);
	if (i < 0)
		return h2o_iovec_init(NULL, 0);
	return req->headers.entries[i].value;
}

void *httpd_alloc_guarded(h2o_req_t *req, size_t size, void (*dispose)(void *))
{
	void *p = h2o_mem_alloc_shared(&req->pool, size, dispose);
	memset(p, 0, size);
	return p;
}
