/* fetch.c — see fetch.h.
 *
 * Ownership: a struct fetch is created on the loop thread, handed to the curl
 * thread through the "incoming" list, and handed back through httpd_post when
 * curl is done with it (or when it was cancelled before curl saw it). The loop
 * thread frees it in on_complete. A cancel only sets a flag and queues a
 * request for the curl thread to drop the transfer early. */
#include "fetch.h"

#include "log.h"

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
	char encoded[32]; /* the Content-Encoding the backend sent anyway, or "" */
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

/* Backends are never asked for a compressed answer (no Accept-Encoding) and
 * curl decodes nothing (CURLOPT_HTTP_CONTENT_DECODING 0), so max_answer
 * bounds what is held in memory. A backend that encodes its answer anyway
 * fails the call here, before any of its body is read: a few hundred KB of
 * gzip can inflate to gigabytes wherever it would be decoded later. */
static size_t on_header(char *line, size_t size, size_t n, void *p)
{
	struct fetch *x = p;
	size_t len = size * n;
	static const char NAME[] = "content-encoding:";
	if (len <= sizeof NAME - 1 || strncasecmp(line, NAME, sizeof NAME - 1) != 0)
		return len;
	const char *v = line + sizeof NAME - 1, *end = line + len;
	while (v < end && (*v == ' ' || *v == '\t'))
		v++;
	while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' ' || end[-1] == '\t'))
		end--;
	if (end == v || (end - v == 8 && strncasecmp(v, "identity", 8) == 0))
		return len;
	size_t k = 0;
	for (; v < end && k < sizeof x->encoded - 1; v++) /* shown in errors: printable ASCII only */
		x->encoded[k++] = *v > ' ' && *v < 0x7f ? *v : '?';
	x->encoded[k] = '\0';
	return 0; /* aborts the transfer */
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
		if (x->too_large || rc == CURLE_FILESIZE_EXCEEDED)
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

struct fetcher *fetcher_new(struct httpd *h)
{
	struct fetcher *f = calloc(1, sizeof *f);
	if (!f)
		return NULL;
	f->h = h;
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
	x->headers = curl_slist_append(NULL, "Expect:");
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
