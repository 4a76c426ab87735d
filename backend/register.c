/* register.c — see register.h. */
#include "register.h"

#include "backend.h"
#include "httpc.h"
#include "log.h"

#include <openssl/crypto.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define REGISTER_TIMEOUT_MS 5000
#define REGISTER_RETRY_S 5
#define REGISTER_DEFAULT_HEARTBEAT_S 10
#define REGISTER_MAX_SECRET 128 /* bytes of the secrets in the balancer's answer */

struct registration {
	char balancer[512];
	char *token;
	struct backend *b;
	pthread_t thread;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int stopping;
	char id[128];
	/* From the registration's answer, kept in memory only (a restarted
	 * backend registers anew). secret: our Bearer for heartbeat and DELETE
	 * (registration thread only). caller: the balancer's Bearer on its calls
	 * to us, read by the loop thread under mu; "" until registered. */
	char secret[REGISTER_MAX_SECRET + 1];
	char caller[REGISTER_MAX_SECRET + 1];
	int open_to_all; /* the balancer sent no backend_token (an older one) */
};

/* A secret from the answer: a string of 16..REGISTER_MAX_SECRET printable
 * bytes, else "" */
static void copy_secret(json_t *j, const char *key, char out[REGISTER_MAX_SECRET + 1])
{
	const char *v = json_string_value(json_object_get(j, key));
	out[0] = '\0';
	if (!v || strlen(v) < 16 || strlen(v) > REGISTER_MAX_SECRET || strpbrk(v, " \r\n\t"))
		return;
	snprintf(out, REGISTER_MAX_SECRET + 1, "%s", v);
}

static json_t *registration_body(const struct backend *b)
{
	json_t *j = identity_json(&b->id);
	json_t *models = json_array();
	for (int i = 0; !b->upstream_url && i < engine_model_count(); i++)
		json_array_append_new(models, json_string(engine_model_get(i)->title));
	json_object_set_new(j, "url", json_string(b->id.url));
	json_object_set_new(j, "engine", json_string(b->id.engine));
	json_object_set_new(j, "models", models);
	json_object_set_new(j, "slots", json_integer(1));
	json_object_set_new(j, "version", json_string(SDGATE_VERSION));
	return j;
}

/* Returns the heartbeat interval on success, 0 on failure. */
static long do_register(struct registration *r)
{
	char url[640];
	snprintf(url, sizeof url, "%s/v1/backends", r->balancer);
	json_t *body = registration_body(r->b);
	char *text = json_dumps(body, JSON_COMPACT);
	json_decref(body);
	struct httpc_response resp;
	int rc = httpc_request("POST", url, text, r->token, REGISTER_TIMEOUT_MS, 65536, &resp);
	free(text);
	long interval = 0;
	if (rc == 0 && (resp.status == 200 || resp.status == 201)) {
		json_error_t err;
		json_t *j = json_loadb(resp.body, resp.len, 0, &err);
		const char *id = json_string_value(json_object_get(j, "id"));
		json_t *hb = json_object_get(j, "heartbeat_interval_s");
		if (id && strlen(id) < sizeof r->id) {
			snprintf(r->id, sizeof r->id, "%s", id);
			copy_secret(j, "secret", r->secret);
			pthread_mutex_lock(&r->mu);
			copy_secret(j, "backend_token", r->caller);
			r->open_to_all = !r->caller[0];
			pthread_mutex_unlock(&r->mu);
			if (r->open_to_all)
				log_warn("register: no backend_token in the answer: job routes stay open");
			interval = json_is_integer(hb) && json_integer_value(hb) > 0 ? (long)json_integer_value(hb)
										     : REGISTER_DEFAULT_HEARTBEAT_S;
			log_info("registered with %s as %s (heartbeat every %ld s)", r->balancer, r->id, interval);
		} else {
			log_warn("register with %s: the answer has no id", r->balancer);
		}
		json_decref(j);
	} else {
		log_warn("register with %s: %s", r->balancer, rc == 0 ? "refused" : resp.error);
		if (rc == 0)
			log_warn("register: HTTP %ld %.200s", resp.status, resp.body);
	}
	httpc_response_free(&resp);
	return interval;
}

/* Returns 1 if the balancer still knows us. */
static int do_heartbeat(struct registration *r)
{
	char url[800];
	snprintf(url, sizeof url, "%s/v1/backends/%s/heartbeat", r->balancer, r->id);
	struct httpc_response resp;
	int rc = httpc_request("POST", url, NULL, r->secret[0] ? r->secret : r->token, REGISTER_TIMEOUT_MS, 65536,
			       &resp);
	int ok = rc == 0 && resp.status >= 200 && resp.status < 300;
	if (!ok)
		log_warn("heartbeat to %s: %s", r->balancer, rc == 0 ? "refused, registering again" : resp.error);
	httpc_response_free(&resp);
	return ok;
}

/* Waits up to seconds or until stop; returns 1 when stopping. */
static int wait_or_stop(struct registration *r, long seconds)
{
	struct timespec until;
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += seconds;
	pthread_mutex_lock(&r->mu);
	while (!r->stopping && pthread_cond_timedwait(&r->cv, &r->mu, &until) == 0)
		;
	int stopping = r->stopping;
	pthread_mutex_unlock(&r->mu);
	return stopping;
}

static void *registration_main(void *arg)
{
	struct registration *r = arg;
	long interval = 0;
	for (;;) {
		if (!interval) {
			interval = do_register(r);
			if (wait_or_stop(r, interval ? interval : REGISTER_RETRY_S))
				break;
			continue;
		}
		if (!do_heartbeat(r))
			interval = 0, r->id[0] = '\0';
		else if (wait_or_stop(r, interval))
			break;
	}
	if (r->id[0]) {
		char url[800];
		snprintf(url, sizeof url, "%s/v1/backends/%s", r->balancer, r->id);
		struct httpc_response resp;
		httpc_request("DELETE", url, NULL, r->secret[0] ? r->secret : r->token, REGISTER_TIMEOUT_MS, 65536,
			      &resp);
		httpc_response_free(&resp);
		log_info("unregistered from %s", r->balancer);
	}
	return NULL;
}

struct registration *registration_start(const char *balancer_url, const char *token, struct backend *b)
{
	struct registration *r = calloc(1, sizeof *r);
	if (!r)
		return NULL;
	snprintf(r->balancer, sizeof r->balancer, "%s", balancer_url);
	size_t n = strlen(r->balancer);
	while (n > 0 && r->balancer[n - 1] == '/')
		r->balancer[--n] = '\0';
	r->token = token ? strdup(token) : NULL;
	r->b = b;
	pthread_mutex_init(&r->mu, NULL);
	pthread_cond_init(&r->cv, NULL);
	if (pthread_create(&r->thread, NULL, registration_main, r) != 0) {
		log_error("registration: cannot start its thread");
		free(r->token);
		free(r);
		return NULL;
	}
	return r;
}

int registration_allows(struct registration *r, const char *authorization, size_t len)
{
	if (!r)
		return 1;
	static const char prefix[] = "Bearer ";
	size_t plen = sizeof prefix - 1;
	pthread_mutex_lock(&r->mu);
	size_t clen = strlen(r->caller);
	int ok = r->open_to_all || (clen && len == plen + clen && strncasecmp(authorization, prefix, plen) == 0 &&
				    CRYPTO_memcmp(authorization + plen, r->caller, clen) == 0);
	pthread_mutex_unlock(&r->mu);
	return ok;
}

void registration_stop(struct registration *r)
{
	if (!r)
		return;
	pthread_mutex_lock(&r->mu);
	r->stopping = 1;
	pthread_cond_signal(&r->cv);
	pthread_mutex_unlock(&r->mu);
	pthread_join(r->thread, NULL);
	pthread_mutex_destroy(&r->mu);
	pthread_cond_destroy(&r->cv);
	OPENSSL_cleanse(r->secret, sizeof r->secret);
	OPENSSL_cleanse(r->caller, sizeof r->caller);
	free(r->token);
	free(r);
}
