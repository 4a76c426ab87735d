/* fetch.h — asynchronous HTTP requests from the balancer's event loop to
 * backends: one libcurl multi handle driven by its own thread
 * (curl_multi_poll, woken by curl_multi_wakeup); every completion comes back
 * to the h2o loop thread through httpd_post, so the loop never blocks on the
 * network.
 *
 * Thread rules: fetch_start/fetch_cancel on the loop thread only. Each started
 * fetch ends in exactly one call of its done() on the loop thread, unless it
 * was cancelled first (then never). Answers grow by doubling, so a several-MB
 * answer costs O(n) copying, and are cut (an error) past max_answer: by its
 * Content-Length before it is read, else as it arrives. Nothing is
 * decompressed: no Accept-Encoding is sent, and an answer with a
 * Content-Encoding other than identity fails (status 0, an error). */
#ifndef SDGATE_FETCH_H
#define SDGATE_FETCH_H

#include "httpd.h"

#include <stddef.h>

struct fetcher;
struct fetch;

struct fetch_result {
	long status; /* HTTP status, 0 when no whole answer came */
	char *body;  /* NUL-terminated; owned by the fetch, valid during done() */
	size_t len;
	char error[256];  /* curl's reason when status is 0 */
	double elapsed_s; /* from the start of the transfer to its end */
	/* 1 when the call was stopped because of where it went: a non-public
	 * address with fetch_target.public_only, this balancer itself (its
	 * answer carried our X-Sdgate-Instance), or any balancer with
	 * fetch_target.no_balancers. status is then 0. */
	int refused;
};

/* Who a call goes to and how (see fetch_start_to). */
struct fetch_target {
	const char *bearer; /* sent as "Authorization: Bearer <bearer>", or NULL */
	int public_only;    /* refuse to talk to an address netaddr_is_private() calls private */
	int no_balancers;   /* refuse an answer with any X-Sdgate-Instance (a balancer, not a backend) */
};

typedef void (*fetch_done_fn)(const struct fetch_result *r, void *user);

/* instance: this balancer's id (copied); an answer that carries it in
 * X-Sdgate-Instance came from ourselves and is refused (a registration
 * pointing back at the balancer). May be NULL. */
struct fetcher *fetcher_new(struct httpd *h, const char *instance);
/* Cancels what is in flight (without calling done) and joins the thread. */
void fetcher_free(struct fetcher *f);

/* method "GET"/"POST"; body (may be NULL) is sent as application/json and
 * taken over (malloc'd, freed by the fetcher). Returns NULL when out of
 * memory or when f is NULL (shut down); done is then never called. */
struct fetch *fetch_start(struct fetcher *f, const char *method, const char *url, char *body, size_t body_len,
			  long timeout_ms, size_t max_answer, fetch_done_fn done, void *user);
/* fetch_start with the target's rules (t may be NULL). */
struct fetch *fetch_start_to(struct fetcher *f, const struct fetch_target *t, const char *method, const char *url,
			     char *body, size_t body_len, long timeout_ms, size_t max_answer, fetch_done_fn done,
			     void *user);
/* done() will not be called; the fetch is freed once curl lets go of it. */
void fetch_cancel(struct fetch *x);

#endif
