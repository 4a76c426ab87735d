/* fetch.c — see fetch.h.
 *
 * curl's socket API on the h2o loop: curl says which sockets it wants
 * watched (on_socket) and when it next needs the time (on_timer); each
 * socket is watched through an h2o socket that only notifies (DONT_READ:
 * curl reads). The connections' sockets are opened and closed for curl
 * (on_open, on_close), so their h2o socket wraps the descriptor itself and
 * lives as long as the connection: a connection that goes back to curl's
 * cache is only no longer watched, and its next job costs no new watch (no
 * dup, close, epoll add and delete per job). Any other socket curl reports
 * (its resolver's) is watched through a dup of it, closed when curl stops
 * watching it, since h2o closes what it wraps and curl closes its own. A
 * write notification is one-shot, so it is armed again after each use while
 * curl still wants to write. curl's timer is checked in fetcher_tick, which
 * runs after every turn of the loop.
 *
 * A finished transfer leaves the multi handle at once and waits in the
 * finished list; deliver() hands the list to the done() callbacks after curl
 * has returned (a done() may start or cancel fetches: curl's functions must
 * not be called from inside its own callbacks). A watch that curl removed is
 * freed only once no callback of ours still holds it (reap). */
#include "fetch.h"

#include "log.h"
#include "netaddr.h"

#include <curl/curl.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

struct fetch {
	struct fetcher *f;
	CURL *easy;
	struct curl_slist *headers;
	char *body;
	char *answer;
	size_t len, cap, max_answer;
	int too_large;
	int public_only, no_balancers;
	char refused[200]; /* why the call was refused (curl overwrites result.error) */
	char encoded[32];  /* the Content-Encoding the backend sent anyway, or "" */
	int in_multi;      /* in the multi handle and the active list */
	int cancelled;     /* in the finished list, done() not to be called */
	fetch_done_fn done;
	void *user;
	struct fetch_result result;
	struct fetch *prev, *next; /* the active list (in the multi handle), then the finished list */
};

/* One of curl's sockets, watched by the loop. */
struct watch {
	struct fetcher *f;
	h2o_socket_t *sock; /* wraps fd itself (owned) or a dup of it */
	curl_socket_t fd;   /* curl's */
	int owned;          /* opened by on_open: closed by on_close, with sock */
	int want;           /* CURL_POLL_IN / _OUT / _INOUT; 0 while curl does not watch it */
	int write_armed;    /* an h2o write notification is pending */
	int removed;        /* closed: freed by reap() */
	struct watch *next;
};

struct fetcher {
	struct httpd *h;
	h2o_evloop_t *loop;
	CURLM *multi;
	long long timer_at;     /* h2o_now() ms when curl's timer is due; -1: none */
	struct fetch *active;   /* in the multi handle */
	struct fetch *fin_head; /* finished, in order, not yet delivered */
	struct fetch *fin_tail;
	struct watch *watches; /* every watch, removed ones included until reaped */
	struct watch **byfd;   /* the open watches by curl's descriptor */
	int nfd;
	int depth; /* callbacks of ours on the stack that may hold a watch */
	int delivering;
	char instance[64]; /* X-Sdgate-Instance of this balancer, or "" */
};

static size_t on_write(char *data, size_t size, size_t n, void *p)
{
	struct fetch *x = p;
	size_t add = size * n;
	if (x->len + add > x->max_answer) {
		x->too_large = 1;
		return 0; /* aborts the transfer */
	}
	if (x->len + add + 1 > x->cap) {
		size_t cap = x->cap ? x->cap : 16384;
		while (cap < x->len + add + 1)
			cap *= 2;
		if (cap > x->max_answer + 1) /* never more than the bound, doubling or not */
			cap = x->max_answer + 1;
		char *grown = realloc(x->answer, cap);
		if (!grown)
			return 0;
		x->answer = grown;
		x->cap = cap;
	}
	memcpy(x->answer + x->len, data, add);
	x->len += add;
	x->answer[x->len] = '\0';
	return add;
}

/* Per header line. Two kinds of answer are cut at their headers:
 * - one that carries X-Sdgate-Instance: from this very balancer (or, with
 *   no_balancers, from any balancer);
 * - one with a Content-Encoding. Backends are never asked for a compressed
 *   answer (no Accept-Encoding) and curl decodes nothing
 *   (CURLOPT_HTTP_CONTENT_DECODING 0), so max_answer bounds what is held in
 *   memory; a backend that encodes its answer anyway fails the call before
 *   any of its body is read: a few hundred KB of gzip can inflate to
 *   gigabytes wherever it would be decoded later. */
static const char *header_value(const char *line, size_t len, const char *name, size_t *vlen)
{
	size_t nlen = strlen(name);
	if (len <= nlen || strncasecmp(line, name, nlen) != 0)
		return NULL;
	const char *v = line + nlen, *end = line + len;
	while (v < end && (*v == ' ' || *v == '\t'))
		v++;
	while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' ' || end[-1] == '\t'))
		end--;
	*vlen = (size_t)(end - v);
	return v;
}

static size_t on_header(char *line, size_t size, size_t n, void *p)
{
	struct fetch *x = p;
	size_t len = size * n, vlen;
	const char *v = header_value(line, len, "x-sdgate-instance:", &vlen);
	if (v) {
		size_t ilen = strlen(x->f->instance);
		if (ilen && vlen == ilen && memcmp(v, x->f->instance, ilen) == 0)
			snprintf(x->refused, sizeof x->refused, "the URL leads back to this balancer");
		else if (x->no_balancers)
			snprintf(x->refused, sizeof x->refused, "the URL leads to an sdgate balancer, not a backend");
		else
			return len;
		return 0; /* aborts the transfer */
	}
	v = header_value(line, len, "content-encoding:", &vlen);
	if (!v || vlen == 0 || (vlen == 8 && strncasecmp(v, "identity", 8) == 0))
		return len;
	size_t k = 0;
	for (; k < vlen && k < sizeof x->encoded - 1; k++) /* shown in errors: printable ASCII only */
		x->encoded[k] = v[k] > ' ' && v[k] < 0x7f ? v[k] : '?';
	x->encoded[k] = '\0';
	return 0; /* aborts the transfer */
}

/* Once connected (or reusing a connection): the address curl actually talks
 * to, whatever the name resolved to. */
static int on_connected(void *p, char *ip, char *local_ip, int port, int local_port)
{
	struct fetch *x = p;
	if (x->public_only && netaddr_is_private(ip) != 0) {
		snprintf(x->refused, sizeof x->refused,
			 "connects to %s, a non-public address (see --allow-private-backends)", ip);
		return CURL_PREREQFUNC_ABORT;
	}
	return CURL_PREREQFUNC_OK;
}

static void free_fetch(struct fetch *x)
{
	if (x->easy)
		curl_easy_cleanup(x->easy);
	curl_slist_free_all(x->headers);
	free(x->body);
	free(x->answer);
	free(x);
}

/* Takes x out of the multi handle and the active list. */
static void detach(struct fetcher *f, struct fetch *x)
{
	curl_multi_remove_handle(f->multi, x->easy);
	x->in_multi = 0;
	if (x->prev)
		x->prev->next = x->next;
	else
		f->active = x->next;
	if (x->next)
		x->next->prev = x->prev;
	x->prev = x->next = NULL;
}

/* curl is done with x: records the outcome and queues it for deliver(). */
static void finish(struct fetcher *f, struct fetch *x, CURLcode rc)
{
	double t = 0;
	curl_easy_getinfo(x->easy, CURLINFO_TOTAL_TIME, &t);
	x->result.elapsed_s = t;
	if (rc == CURLE_OK)
		curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &x->result.status);
	detach(f, x);
	if (rc != CURLE_OK) {
		x->result.status = 0;
		if (x->refused[0]) {
			x->result.refused = 1;
			snprintf(x->result.error, sizeof x->result.error, "%s", x->refused);
		} else if (x->too_large || rc == CURLE_FILESIZE_EXCEEDED)
			snprintf(x->result.error, sizeof x->result.error, "answer larger than %zu bytes",
				 x->max_answer);
		else if (x->encoded[0])
			snprintf(x->result.error, sizeof x->result.error,
				 "answer sent with Content-Encoding %s (not asked for; refused)", x->encoded);
		else if (!x->result.error[0])
			snprintf(x->result.error, sizeof x->result.error, "%s", curl_easy_strerror(rc));
	}
	if (f->fin_tail)
		f->fin_tail->next = x;
	else
		f->fin_head = x;
	f->fin_tail = x;
}

/* Moves every transfer curl has finished to the finished list. */
static void collect(struct fetcher *f)
{
	CURLMsg *m;
	int left;
	while ((m = curl_multi_info_read(f->multi, &left))) {
		if (m->msg != CURLMSG_DONE)
			continue;
		CURLcode rc = m->data.result; /* m dies with remove_handle */
		struct fetch *x = NULL;
		curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&x);
		if (x)
			finish(f, x, rc);
	}
}

/* Hands the finished fetches to their done(), in order; one that a done()
 * cancels meanwhile is only freed. Not re-entered: fetches that finish while
 * it runs are delivered by the same loop. */
static void deliver(struct fetcher *f)
{
	if (f->delivering)
		return;
	f->delivering = 1;
	while (f->fin_head) {
		struct fetch *x = f->fin_head;
		f->fin_head = x->next;
		if (!f->fin_head)
			f->fin_tail = NULL;
		x->next = NULL;
		if (!x->cancelled) {
			x->result.body = x->answer ? x->answer : "";
			x->result.len = x->len;
			x->done(&x->result, x->user);
		}
		free_fetch(x);
	}
	f->delivering = 0;
}

/* Frees the watches curl removed, unless a callback of ours may still hold
 * one. */
static void reap(struct fetcher *f)
{
	if (f->depth)
		return;
	for (struct watch **pp = &f->watches; *pp;) {
		struct watch *w = *pp;
		if (w->removed) {
			*pp = w->next;
			free(w);
		} else {
			pp = &w->next;
		}
	}
}

static void on_writable(h2o_socket_t *sock, const char *err);

static void arm_write(struct watch *w)
{
	if (w->removed || w->write_armed || !(w->want & CURL_POLL_OUT))
		return;
	w->write_armed = 1;
	h2o_socket_notify_write(w->sock, on_writable);
}

/* An event on w's socket: curl acts on it, then what finished is delivered. */
static void act(struct watch *w, int ev)
{
	struct fetcher *f = w->f;
	int running = 0;
	f->depth++;
	curl_multi_socket_action(f->multi, w->fd, ev, &running);
	arm_write(w); /* curl still wants to write (it says so only when that changes) */
	collect(f);
	f->depth--;
	deliver(f);
	reap(f);
}

static void on_readable(h2o_socket_t *sock, const char *err)
{
	act(sock->data, CURL_CSELECT_IN | (err ? CURL_CSELECT_ERR : 0));
}

static void on_writable(h2o_socket_t *sock, const char *err)
{
	struct watch *w = sock->data;
	w->write_armed = 0;
	if (w->want & CURL_POLL_OUT) /* else stale: curl stopped writing since it was armed */
		act(w, CURL_CSELECT_OUT | (err ? CURL_CSELECT_ERR : 0));
}

static struct watch *watch_of(struct fetcher *f, curl_socket_t fd) { return fd < f->nfd ? f->byfd[fd] : NULL; }

/* A watch of curl's fd through an h2o socket on hfd (fd itself when owned,
 * else a dup); NULL when out of memory. */
static struct watch *watch_new(struct fetcher *f, curl_socket_t fd, int hfd, int owned)
{
	if (fd >= f->nfd) {
		int n = f->nfd ? f->nfd : 64;
		while (n <= fd)
			n *= 2;
		struct watch **grown = realloc(f->byfd, (size_t)n * sizeof *grown);
		if (!grown)
			return NULL;
		memset(grown + f->nfd, 0, (size_t)(n - f->nfd) * sizeof *grown);
		f->byfd = grown;
		f->nfd = n;
	}
	struct watch *w = calloc(1, sizeof *w);
	if (!w)
		return NULL;
	w->f = f;
	w->fd = fd;
	w->owned = owned;
	w->sock = h2o_evloop_socket_create(f->loop, hfd, H2O_SOCKET_FLAG_DONT_READ);
	w->sock->data = w;
	w->next = f->watches;
	f->watches = w;
	f->byfd[fd] = w;
	return w;
}

/* Closes w's h2o socket (its descriptor: fd when owned, else the dup); the
 * watch itself is freed by reap(). */
static void unwatch(struct watch *w)
{
	h2o_socket_read_stop(w->sock);
	h2o_socket_close(w->sock); /* takes it out of epoll, then closes */
	w->sock = NULL;
	w->removed = 1;
	w->f->byfd[w->fd] = NULL;
}

/* curl's CURLOPT_OPENSOCKETFUNCTION: a connection's socket, watched (not
 * yet for anything) from now until on_close. */
static curl_socket_t on_open(void *user, curlsocktype purpose, struct curl_sockaddr *a)
{
	struct fetcher *f = user;
	int fd = socket(a->family, a->socktype | SOCK_CLOEXEC, a->protocol);
	if (fd < 0)
		return CURL_SOCKET_BAD;
	if (watch_of(f, fd)) /* a dup'd watch of a number curl closed without telling: stale */
		unwatch(watch_of(f, fd));
	if (!watch_new(f, fd, fd, 1)) {
		close(fd);
		return CURL_SOCKET_BAD;
	}
	return fd;
}

/* curl's CURLOPT_CLOSESOCKETFUNCTION. */
static int on_close(void *user, curl_socket_t fd)
{
	struct watch *w = watch_of(user, fd);
	if (w && w->owned) {
		unwatch(w); /* closes fd */
		return 0;
	}
	if (w)
		unwatch(w);
	return close(fd);
}

/* curl's CURLMOPT_SOCKETFUNCTION: what it wants watched on socket s. */
static int on_socket(CURL *easy, curl_socket_t s, int what, void *user, void *socketp)
{
	struct fetcher *f = user;
	struct watch *w = watch_of(f, s);
	if (what == CURL_POLL_REMOVE) {
		if (w && w->owned) { /* idle in curl's cache, or about to be closed (on_close) */
			w->want = 0;
			h2o_socket_read_stop(w->sock); /* a pending write notification is ignored */
		} else if (w) {
			unwatch(w);
		}
		return 0;
	}
	if (!w) {
		int fd = fcntl(s, F_DUPFD_CLOEXEC, 0);
		w = fd >= 0 ? watch_new(f, s, fd, 0) : NULL;
		if (!w) { /* the transfer then ends by its timeout */
			log_error("fetch: cannot watch a socket (out of memory or descriptors)");
			if (fd >= 0)
				close(fd);
			return 0;
		}
	}
	w->want = what;
	if (what & CURL_POLL_IN) {
		if (!h2o_socket_is_reading(w->sock))
			h2o_socket_read_start(w->sock, on_readable);
	} else if (h2o_socket_is_reading(w->sock)) {
		h2o_socket_read_stop(w->sock);
	}
	arm_write(w);
	return 0;
}

/* curl's CURLMOPT_TIMERFUNCTION: when fetcher_tick must next run curl's
 * timers (-1: no timer). Acted on from the tick, never from here. */
static int on_timer(CURLM *multi, long ms, void *user)
{
	struct fetcher *f = user;
	if (ms < 0) {
		f->timer_at = -1;
		return 0;
	}
	f->timer_at = (long long)h2o_now(f->loop) + ms;
	httpd_tick_within(f->h, ms < INT_MAX ? (int)ms : INT_MAX);
	return 0;
}

void fetcher_tick(struct fetcher *f)
{
	if (!f)
		return;
	long long now = (long long)h2o_now(f->loop);
	if (f->timer_at >= 0 && now >= f->timer_at) {
		int running = 0;
		f->timer_at = -1;
		f->depth++;
		curl_multi_socket_action(f->multi, CURL_SOCKET_TIMEOUT, 0, &running);
		collect(f);
		f->depth--;
	}
	deliver(f);
	reap(f);
	if (f->timer_at >= 0) /* on time, not at the loop's next 50 ms turn */
		httpd_tick_within(f->h, f->timer_at - now < INT_MAX ? (int)(f->timer_at - now) : INT_MAX);
}

struct fetcher *fetcher_new(struct httpd *h, const char *instance)
{
	struct fetcher *f = calloc(1, sizeof *f);
	if (!f)
		return NULL;
	f->h = h;
	f->loop = httpd_loop(h);
	f->timer_at = -1;
	snprintf(f->instance, sizeof f->instance, "%s", instance ? instance : "");
	f->multi = curl_multi_init();
	if (!f->multi) {
		free(f);
		return NULL;
	}
	curl_multi_setopt(f->multi, CURLMOPT_MAXCONNECTS, 256L);
	curl_multi_setopt(f->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
	curl_multi_setopt(f->multi, CURLMOPT_SOCKETDATA, f);
	curl_multi_setopt(f->multi, CURLMOPT_TIMERFUNCTION, on_timer);
	curl_multi_setopt(f->multi, CURLMOPT_TIMERDATA, f);
	return f;
}

void fetcher_free(struct fetcher *f)
{
	if (!f)
		return;
	while (f->active) {
		struct fetch *x = f->active;
		detach(f, x);
		free_fetch(x);
	}
	for (struct fetch *x = f->fin_head, *next; x; x = next) {
		next = x->next;
		free_fetch(x);
	}
	curl_multi_cleanup(f->multi); /* closes the kept connections (on_close) */
	for (struct watch *w = f->watches; w; w = w->next)
		if (!w->removed)
			unwatch(w);
	f->depth = 0;
	reap(f);
	free(f->byfd);
	free(f);
}

struct fetch *fetch_start(struct fetcher *f, const char *method, const char *url, char *body, size_t body_len,
			  long timeout_ms, size_t max_answer, fetch_done_fn done, void *user)
{
	return fetch_start_to(f, NULL, method, url, body, body_len, timeout_ms, max_answer, done, user);
}

struct fetch *fetch_start_to(struct fetcher *f, const struct fetch_target *t, const char *method, const char *url,
			     char *body, size_t body_len, long timeout_ms, size_t max_answer, fetch_done_fn done,
			     void *user)
{
	struct fetch *x = f ? calloc(1, sizeof *x) : NULL;
	if (!x) {
		free(body);
		return NULL;
	}
	x->f = f;
	x->body = body;
	x->max_answer = max_answer;
	x->done = done;
	x->user = user;
	x->easy = curl_easy_init();
	if (!x->easy) {
		free_fetch(x);
		return NULL;
	}
	CURL *e = x->easy;
	curl_easy_setopt(e, CURLOPT_URL, url);
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, timeout_ms);
	curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, timeout_ms < 5000 ? timeout_ms : 5000L);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_write);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, x);
	curl_easy_setopt(e, CURLOPT_PRIVATE, (char *)x);
	curl_easy_setopt(e, CURLOPT_ERRORBUFFER, x->result.error);
	curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
	curl_easy_setopt(e, CURLOPT_HTTP_CONTENT_DECODING, 0L); /* see on_header */
	curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(e, CURLOPT_HEADERDATA, x);
	curl_easy_setopt(e, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)max_answer); /* by Content-Length, early */
	curl_easy_setopt(e, CURLOPT_PREREQFUNCTION, on_connected);
	curl_easy_setopt(e, CURLOPT_PREREQDATA, x);
	curl_easy_setopt(e, CURLOPT_OPENSOCKETFUNCTION, on_open);
	curl_easy_setopt(e, CURLOPT_OPENSOCKETDATA, f);
	curl_easy_setopt(e, CURLOPT_CLOSESOCKETFUNCTION, on_close);
	curl_easy_setopt(e, CURLOPT_CLOSESOCKETDATA, f);
	x->public_only = t && t->public_only;
	x->no_balancers = t && t->no_balancers;
	x->headers = curl_slist_append(NULL, "Expect:");
	if (t && t->bearer) {
		char auth[160];
		snprintf(auth, sizeof auth, "Authorization: Bearer %s", t->bearer);
		x->headers = curl_slist_append(x->headers, auth);
	}
	if (body) {
		x->headers = curl_slist_append(x->headers, "Content-Type: application/json");
		curl_easy_setopt(e, CURLOPT_POSTFIELDS, body);
		curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
	}
	if (strcmp(method, "GET") != 0 && !(body && strcmp(method, "POST") == 0))
		curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
	if (strcmp(method, "POST") == 0 && !body) {
		curl_easy_setopt(e, CURLOPT_POSTFIELDS, "");
		curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)0);
	}
	curl_easy_setopt(e, CURLOPT_HTTPHEADER, x->headers);
	/* curl's timer (0 ms: at once) makes fetcher_tick start the transfer,
	 * so that done() never runs before the caller has the fetch. */
	if (curl_multi_add_handle(f->multi, e) != CURLM_OK) {
		free_fetch(x);
		return NULL;
	}
	x->in_multi = 1;
	x->next = f->active;
	if (f->active)
		f->active->prev = x;
	f->active = x;
	return x;
}

void fetch_cancel(struct fetch *x)
{
	if (!x)
		return;
	struct fetcher *f = x->f;
	if (x->in_multi) {
		detach(f, x); /* curl may close its connection: reap frees the watch */
		free_fetch(x);
		reap(f);
		return;
	}
	x->cancelled = 1; /* finished, waiting for deliver(): freed there */
}
