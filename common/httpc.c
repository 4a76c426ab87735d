/* httpc.c — see httpc.h. */
#include "httpc.h"

#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct sink {
	char *buf;
	size_t len, cap, max;
	int overflow;
};

static size_t on_data(char *data, size_t size, size_t n, void *user)
{
	struct sink *s = user;
	size_t add = size * n;
	if (s->len + add > s->max) {
		s->overflow = 1;
		return 0; /* makes curl stop with CURLE_WRITE_ERROR */
	}
	if (s->len + add + 1 > s->cap) {
		size_t cap = s->cap ? s->cap : 16384;
		while (cap < s->len + add + 1)
			cap *= 2; /* doubling: no quadratic copying of multi-MB answers */
		char *grown = realloc(s->buf, cap);
		if (!grown)
			return 0;
		s->buf = grown;
		s->cap = cap;
	}
	memcpy(s->buf + s->len, data, add);
	s->len += add;
	s->buf[s->len] = '\0';
	return add;
}

int httpc_request(const char *method, const char *url, const char *body, const char *bearer, long timeout_ms,
		  size_t max_body, struct httpc_response *out)
{
	memset(out, 0, sizeof *out);
	CURL *c = curl_easy_init();
	if (!c) {
		snprintf(out->error, sizeof out->error, "curl_easy_init failed");
		return -1;
	}
	struct sink s = {.max = max_body};
	struct curl_slist *headers = NULL;
	char auth[600];
	/* Without a body, no Content-Type at all: curl would otherwise label an
	 * empty POST application/x-www-form-urlencoded, which a balancer refuses
	 * as a possible cross-site form (415; balancer/client.c). */
	headers = curl_slist_append(headers, body ? "Content-Type: application/json" : "Content-Type:");
	if (bearer) {
		snprintf(auth, sizeof auth, "Authorization: Bearer %s", bearer);
		headers = curl_slist_append(headers, auth);
	}
	headers = curl_slist_append(headers, "Expect:");
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
	if (body) {
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
		curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(body));
	} else if (!strcmp(method, "POST")) {
		curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, 0L);
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, "");
	}
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &s);
	curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, timeout_ms);
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, timeout_ms < 5000 ? timeout_ms : 5000L);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(c, CURLOPT_USERAGENT, "sdgate/" SDGATE_VERSION);

	CURLcode rc = curl_easy_perform(c);
	if (rc == CURLE_OK) {
		curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &out->status);
	} else {
		snprintf(out->error, sizeof out->error, "%s%s", curl_easy_strerror(rc),
			 s.overflow ? " (answer over the size limit)" : "");
	}
	curl_slist_free_all(headers);
	curl_easy_cleanup(c);
	if (!s.buf)
		s.buf = calloc(1, 1);
	out->body = s.buf;
	out->len = s.len;
	return rc == CURLE_OK ? 0 : -1;
}

void httpc_response_free(struct httpc_response *r)
{
	free(r->body);
	r->body = NULL;
}
