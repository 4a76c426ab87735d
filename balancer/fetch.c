/* fetch.c — see fetch.h.
 *
 * Ownership: a struct fetch is created on the loop thread, handed to the curl
 * thread through the "incoming" list, and handed back through httpd_post when
 * curl is done with it (or when it was cancelled before curl saw it). The loop
 * thread frees it in on_complete. A cancel only sets a flag and queues a
 * request for the curl thread to drop the transfer early. */
#include "fetch.h"

#include "log.h"
#include "netaddr.h"

#include <curl/curl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct fetch {
	struct httpd_msg msg; /* first: posted back to the loop */
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
	atomic_int cancelled;
	fetch_done_fn done;
	void *user;
	struct fetch_result result;
	struct fetch *next;          /* the incoming list */
	struct fetch *aprev, *anext; /* in the multi handle (curl thread) */
};

struct fetcher {
	struct httpd *h;
	CURLM *multi;
	pthread_t thread;
	pthread_mutex_t mu;
	struct fetch *incoming;
	struct fetch *active; /* curl thread only */
	int stopping;
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

/* Curl thread, per header line. Two kinds of answer are cut at their headers:
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

/* Curl thread, once connected (or reusing a connection): the address curl
 * actually talks to, whatever the name resolved to. */
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

/* Loop thread: the one place a fetch ends. */
static void on_complete(struct httpd *h, struct httpd_msg *msg)
{
	struct fetch *x = (struct fetch *)msg;
	if (!atomic_load(&x->cancelled)) {
		x->result.body = x->answer ? x->answer : "";
		x->result.len = x->len;
		x->done(&x->result, x->user);
	}
	free_fetch(x);
}

/* Curl thread: records the outcome and hands the fetch back. */
static void finish(struct fetcher *f, struct fetch *x, CURLcode rc)
{
	if (x->easy) {
		curl_multi_remove_handle(f->multi, x->easy);
		if (x->aprev)
			x->aprev->anext = x->anext;
		else if (f->active == x)
			f->active = x->anext;
		if (x->anext)
			x->anext->aprev = x->aprev;
		x->aprev = x->anext = NULL;
		double t = 0;
		curl_easy_getinfo(x->easy, CURLINFO_TOTAL_TIME, &t);
		x->result.elapsed_s = t;
		if (rc == CURLE_OK)
			curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &x->result.status);
	}
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
	httpd_post(f->h, &x->msg);
}

static int on_progress(void *p, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal, curl_off_t ulnow)
{
	struct fetch *x = p;
	return atomic_load(&x->cancelled); /* non-zero aborts */
}

static void take_incoming(struct fetcher *f, struct fetch **in, int *stopping)
{
	pthread_mutex_lock(&f->mu);
	*in = f->incoming;
	f->incoming = NULL;
	*stopping = f->stopping;
	pthread_mutex_unlock(&f->mu);
}

static void *curl_thread(void *p)
{
	struct fetcher *f = p;
	for (;;) {
		struct fetch *in;
		int stopping;
		take_incoming(f, &in, &stopping);
		/* The incoming list is LIFO; reverse it to start transfers in order. */
		struct fetch *ordered = NULL;
		while (in) {
			struct fetch *next = in->next;
			in->next = ordered;
			ordered = in;
			in = next;
		}
		for (struct fetch *x = ordered, *next; x; x = next) {
			next = x->next;
			if (atomic_load(&x->cancelled) || curl_multi_add_handle(f->multi, x->easy) != CURLM_OK) {
				snprintf(x->result.error, sizeof x->result.error, "not started");
				curl_easy_cleanup(x->easy);
				x->easy = NULL;
				finish(f, x, CURLE_ABORTED_BY_CALLBACK);
				continue;
			}
			x->anext = f->active;
			if (f->active)
				f->active->aprev = x;
			f->active = x;
		}
		if (stopping)
			break;
		int running = 0;
		curl_multi_perform(f->multi, &running);
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
		curl_multi_poll(f->multi, NULL, 0, 1000, NULL);
	}
	return NULL;
}

struct fetcher *fetcher_new(struct httpd *h, const char *instance)
{
	struct fetcher *f = calloc(1, sizeof *f);
	if (!f)
		return NULL;
	f->h = h;
	snprintf(f->instance, sizeof f->instance, "%s", instance ? instance : "");
	f->multi = curl_multi_init();
	curl_multi_setopt(f->multi, CURLMOPT_MAXCONNECTS, 256L);
	pthread_mutex_init(&f->mu, NULL);
	if (pthread_create(&f->thread, NULL, curl_thread, f) != 0) {
		curl_multi_cleanup(f->multi);
		free(f);
		return NULL;
	}
	return f;
}

void fetcher_free(struct fetcher *f)
{
	if (!f)
		return;
	pthread_mutex_lock(&f->mu);
	f->stopping = 1;
	pthread_mutex_unlock(&f->mu);
	curl_multi_wakeup(f->multi);
	pthread_join(f->thread, NULL);
	/* Whatever is still in the multi handle: drop it. Completions already
	 * posted are freed by the loop's last turn (httpd_free). */
	while (f->active) {
		struct fetch *x = f->active;
		f->active = x->anext;
		curl_multi_remove_handle(f->multi, x->easy);
		free_fetch(x);
	}
	curl_multi_cleanup(f->multi);
	pthread_mutex_destroy(&f->mu);
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
	x->msg.fn = on_complete;
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
	curl_easy_setopt(e, CURLOPT_NOPROGRESS, 0L);
	curl_easy_setopt(e, CURLOPT_XFERINFOFUNCTION, on_progress);
	curl_easy_setopt(e, CURLOPT_XFERINFODATA, x);
	curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
	curl_easy_setopt(e, CURLOPT_HTTP_CONTENT_DECODING, 0L); /* see on_header */
	curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(e, CURLOPT_HEADERDATA, x);
	curl_easy_setopt(e, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)max_answer); /* by Content-Length, early */
	curl_easy_setopt(e, CURLOPT_PREREQFUNCTION, on_connected);
	curl_easy_setopt(e, CURLOPT_PREREQDATA, x);
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

	pthread_mutex_lock(&f->mu);
	x->next = f->incoming;
	f->incoming = x;
	pthread_mutex_unlock(&f->mu);
	curl_multi_wakeup(f->multi);
	return x;
}

void fetch_cancel(struct fetch *x)
{
	if (!x)
		return;
	atomic_store(&x->cancelled, 1);
	curl_multi_wakeup(x->f->multi);
}
