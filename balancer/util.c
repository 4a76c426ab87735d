/* util.c — small helpers every balancer module uses: clocks, random ids,
 * token checks, and sdgate's error reply. (Who the client is: client.c.) */
#include "balancer.h"

#include "error.h"

#include <openssl/crypto.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

struct balancer *balancer_of(struct httpd *h) { return httpd_user(h); }

double bal_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

double bal_unix_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

void bal_random_id(char out[BAL_ID_LEN + 1])
{
	unsigned char raw[BAL_ID_LEN / 2];
	size_t got = 0;
	while (got < sizeof raw) {
		ssize_t n = getrandom(raw + got, sizeof raw - got, 0);
		if (n > 0)
			got += (size_t)n;
	}
	static const char hex[] = "0123456789abcdef";
	for (size_t i = 0; i < sizeof raw; i++) {
		out[2 * i] = hex[raw[i] >> 4];
		out[2 * i + 1] = hex[raw[i] & 15];
	}
	out[BAL_ID_LEN] = '\0';
}

int bal_bearer_ok(h2o_req_t *req, const char *token)
{
	if (!token || !*token)
		return 0;
	h2o_iovec_t v = httpd_header(req, "authorization");
	static const char prefix[] = "Bearer ";
	size_t plen = sizeof prefix - 1, tlen = strlen(token);
	if (v.len != plen + tlen || strncasecmp(v.base, prefix, plen) != 0)
		return 0;
	return CRYPTO_memcmp(v.base + plen, token, tlen) == 0;
}

void bal_reply_error(h2o_req_t *req, int status, const char *code, const char *message, const char *field)
{
	json_t *err = json_pack("{s:s,s:s}", "code", code, "message", message);
	if (field && *field)
		json_object_set_new(err, "field", json_string(field));
	httpd_reply_json(req, status, json_pack("{s:s,s:o}", "detail", message, "error", err));
}
