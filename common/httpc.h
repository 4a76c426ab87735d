/* httpc.h — blocking HTTP requests on libcurl, for worker threads only (the
 * backend's upstream adapter and its registration with a balancer). Never
 * call these from an event-loop thread. Each call uses its own easy handle,
 * so any thread may call them; curl_global_init must have run in main(). */
#ifndef SDGATE_HTTPC_H
#define SDGATE_HTTPC_H

#include <stddef.h>

struct httpc_response {
	long status; /* 0 when no HTTP answer came */
	char *body;  /* malloc'd, NUL-terminated; caller frees */
	size_t len;
	char error[256]; /* curl's reason when status is 0 or the body was cut */
};

/* method "GET"/"POST"/"DELETE"; body may be NULL (sent as JSON when set;
 * without a body no Content-Type is sent);
 * bearer may be NULL. The answer is cut at max_body bytes (an error). Returns
 * 0 when an HTTP answer arrived whole (any status), -1 otherwise. */
int httpc_request(const char *method, const char *url, const char *body, const char *bearer, long timeout_ms,
		  size_t max_body, struct httpc_response *out);
void httpc_response_free(struct httpc_response *r);

#endif
