/* register.c — see register.h. */
#include "register.h"

#include "backend.h"
#include "httpc.h"
#include "log.h"
#include "regfile.h"

#include <openssl/crypto.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define REGISTER_TIMEOUT_MS 5000
#define REGISTER_RETRY_S 5
#define REGISTER_DEFAULT_HEARTBEAT_S 10
#define REGISTER_MAX_HEARTBEAT_S 3600          /* a longer interval asked for is shortened */
#define REGISTER_MAX_SECRET REGFILE_MAX_SECRET /* bytes of the secrets in the balancer's answer */

struct registration {
	char balancer[512];
	char *token;
	char *file; /* --registration-file, or NULL */
	struct backend *b;
	char *body;                                    /* the registration request (JSON), the same for the whole run */
	char fingerprint[REGFILE_FINGERPRINT_HEX + 1]; /* of body */
	int replace; /* the file's registration was made for another body: end it first */
	pthread_t thread;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int stopping;
	char id[REGFILE_MAX_ID + 1];
	long interval; /* heartbeat interval, s; 0 while not registered */
	/* From the registration's answer, kept in memory and, with
	 * --registration-file, in that file (a restarted backend resumes).
	 * secret: our Bearer for heartbeat and DELETE (registration thread
	 * only). caller: the balancer's Bearer on its calls to us, read by the
	 * loop thread under mu; "" until registered. */
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
	if (regfile_secret_valid(v))
		snprintf(out, REGISTER_MAX_SECRET + 1, "%s", v);
}

/* Keeps the registration in --registration-file, when there is one and the
 * balancer gave both secrets (an older balancer's open registration is
 * simply made again). */
static void save_registration(struct registration *r)
{
	if (!r->file || !r->secret[0] || !r->caller[0])
		return;
	struct regfile rf = {.heartbeat_interval_s = r->interval};
	snprintf(rf.balancer, sizeof rf.balancer, "%s", r->balancer);
	snprintf(rf.id, sizeof rf.id, "%s", r->id);
	snprintf(rf.secret, sizeof rf.secret, "%s", r->secret);
	snprintf(rf.backend_token, sizeof rf.backend_token, "%s", r->caller);
	snprintf(rf.registered_as, sizeof rf.registered_as, "%s", r->fingerprint);
	if (regfile_write(r->file, &rf) == 0)
		log_info("registration %s kept in %s", r->id, r->file);
	OPENSSL_cleanse(&rf, sizeof rf);
}

/* At start: takes up the registration in --registration-file when it names
 * this balancer; the first heartbeat tells whether the balancer still
 * knows it. A registration made with another body (identity, URL, models,
 * version) is ended with its secret and made again, so that the board shows
 * what this run registers without waiting for the old one to expire. */
static void resume_registration(struct registration *r)
{
	struct regfile rf;
	if (!r->file || regfile_read(r->file, &rf) != REGFILE_OK)
		return;
	if (strcmp(rf.balancer, r->balancer) != 0) {
		log_warn("registration file %s is for %s, not %s: registering anew", r->file, rf.balancer, r->balancer);
		OPENSSL_cleanse(&rf, sizeof rf);
		return;
	}
	snprintf(r->id, sizeof r->id, "%s", rf.id);
	snprintf(r->secret, sizeof r->secret, "%s", rf.secret);
	r->replace = strcmp(rf.registered_as, r->fingerprint) != 0;
	if (r->replace) {
		log_warn("registration file %s: registration %s was made with another identity, URL, model list or "
			 "version: ending it and registering anew",
			 r->file, r->id);
	} else {
		snprintf(r->caller, sizeof r->caller, "%s", rf.backend_token);
		r->interval = rf.heartbeat_interval_s ? rf.heartbeat_interval_s : REGISTER_DEFAULT_HEARTBEAT_S;
		log_info("resuming registration %s with %s from %s", r->id, r->balancer, r->file);
	}
	OPENSSL_cleanse(&rf, sizeof rf);
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
	struct httpc_response resp;
	int rc = httpc_request("POST", url, r->body, r->token, REGISTER_TIMEOUT_MS, 65536, &resp);
	long interval = 0;
	if (rc == 0 && (resp.status == 200 || resp.status == 201)) {
		json_error_t err;
		json_t *j = json_loadb(resp.body, resp.len, 0, &err);
		const char *id = json_string_value(json_object_get(j, "id"));
		json_t *hb = json_object_get(j, "heartbeat_interval_s");
		if (regfile_id_valid(id)) {
			snprintf(r->id, sizeof r->id, "%s", id);
			copy_secret(j, "secret", r->secret);
			pthread_mutex_lock(&r->mu);
			copy_secret(j, "backend_token", r->caller);
			r->open_to_all = !r->caller[0];
			pthread_mutex_unlock(&r->mu);
			if (r->open_to_all)
				log_warn("register: no backend_token in the answer: job routes stay open");
			interval = REGISTER_DEFAULT_HEARTBEAT_S;
			if (json_is_integer(hb) && json_integer_value(hb) > 0)
				interval = json_integer_value(hb) < REGISTER_MAX_HEARTBEAT_S
						   ? (long)json_integer_value(hb)
						   : REGISTER_MAX_HEARTBEAT_S;
			log_info("registered with %s as %s (heartbeat every %ld s)", r->balancer, r->id, interval);
			r->interval = interval;
			save_registration(r);
		} else {
			log_warn("register with %s: the answer has no valid id", r->balancer);
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

enum heartbeat_result { HEARTBEAT_OK, HEARTBEAT_FORGOTTEN, HEARTBEAT_FAILED };

/* HEARTBEAT_FORGOTTEN: the balancer does not know this registration (404)
 * or refuses its secret (401, 403), or answers another 4xx: register anew.
 * HEARTBEAT_FAILED: it could not be reached or failed (5xx, 429): the
 * registration may well still stand, try again soon. */
static enum heartbeat_result do_heartbeat(struct registration *r)
{
	char url[800];
	snprintf(url, sizeof url, "%s/v1/backends/%s/heartbeat", r->balancer, r->id);
	struct httpc_response resp;
	int rc = httpc_request("POST", url, NULL, r->secret[0] ? r->secret : r->token, REGISTER_TIMEOUT_MS, 65536,
			       &resp);
	enum heartbeat_result hr = HEARTBEAT_FAILED;
	if (rc == 0 && resp.status >= 200 && resp.status < 300)
		hr = HEARTBEAT_OK;
	else if (rc == 0 && resp.status >= 400 && resp.status < 500 && resp.status != 429)
		hr = HEARTBEAT_FORGOTTEN;
	if (hr == HEARTBEAT_FORGOTTEN)
		log_warn("heartbeat to %s: HTTP %ld, registering again", r->balancer, resp.status);
	else if (hr == HEARTBEAT_FAILED)
		log_warn("heartbeat to %s: %s, trying again", r->balancer, rc == 0 ? "refused" : resp.error);
	httpc_response_free(&resp);
	return hr;
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

/* DELETE of the registration r->id with its secret; 1 when it is gone
 * from the balancer (or was never known there). */
static int deregister(struct registration *r)
{
	char url[800];
	snprintf(url, sizeof url, "%s/v1/backends/%s", r->balancer, r->id);
	struct httpc_response resp;
	int rc = httpc_request("DELETE", url, NULL, r->secret[0] ? r->secret : r->token, REGISTER_TIMEOUT_MS, 65536,
			       &resp);
	int gone = rc == 0 && ((resp.status >= 200 && resp.status < 300) || resp.status == 404);
	if (gone)
		log_info("unregistered %s from %s", r->id, r->balancer);
	else
		log_warn("unregister %s from %s: %s", r->id, r->balancer, rc == 0 ? "refused" : resp.error);
	httpc_response_free(&resp);
	return gone;
}

static void *registration_main(void *arg)
{
	struct registration *r = arg;
	if (r->replace) {
		deregister(r);
		r->id[0] = '\0';
	}
	for (;;) {
		if (!r->interval) {
			if (wait_or_stop(r, do_register(r) ? r->interval : REGISTER_RETRY_S))
				break;
			continue;
		}
		enum heartbeat_result hr = do_heartbeat(r);
		if (hr == HEARTBEAT_FORGOTTEN)
			r->interval = 0, r->id[0] = '\0';
		else if (wait_or_stop(r, hr == HEARTBEAT_OK || r->interval < REGISTER_RETRY_S ? r->interval
											      : REGISTER_RETRY_S))
			break;
	}
	/* Once gone from the balancer, the file has nothing left to resume;
	 * otherwise it stays, so that a quick restart still takes it up. */
	if (r->id[0] && deregister(r) && r->file)
		regfile_remove(r->file);
	return NULL;
}

static void registration_free(struct registration *r)
{
	OPENSSL_cleanse(r->secret, sizeof r->secret);
	OPENSSL_cleanse(r->caller, sizeof r->caller);
	free(r->token);
	free(r->file);
	free(r->body);
	free(r);
}

struct registration *registration_start(const char *balancer_url, const char *token, const char *file,
					struct backend *b)
{
	struct registration *r = calloc(1, sizeof *r);
	if (!r)
		return NULL;
	snprintf(r->balancer, sizeof r->balancer, "%s", balancer_url);
	size_t n = strlen(r->balancer);
	while (n > 0 && r->balancer[n - 1] == '/')
		r->balancer[--n] = '\0';
	r->token = token ? strdup(token) : NULL;
	r->file = file && *file ? strdup(file) : NULL;
	r->b = b;
	json_t *body = registration_body(b);
	r->body = json_dumps(body, JSON_COMPACT);
	json_decref(body);
	if (!r->body) {
		registration_free(r);
		return NULL;
	}
	regfile_fingerprint(r->body, r->fingerprint);
	resume_registration(r);
	pthread_mutex_init(&r->mu, NULL);
	pthread_cond_init(&r->cv, NULL);
	if (pthread_create(&r->thread, NULL, registration_main, r) != 0) {
		log_error("registration: cannot start its thread");
		pthread_mutex_destroy(&r->mu);
		pthread_cond_destroy(&r->cv);
		registration_free(r);
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
	registration_free(r);
}
