/* upstream.c — the adapter in front of a provider's own A1111-compatible
 * server (A1111, Forge, SD.Next): txt2img runs on the jobs lane with a
 * blocking libcurl call (never on the loop), other calls (progress,
 * interrupt, skip, lists, options) on the control lane so they never wait
 * behind a job. Answers are checked before they are relayed: garbage from
 * upstream becomes a JSON 502, never a crash. */
#include "backend.h"

#include "httpc.h"
#include "log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A txt2img may take minutes on a slow GPU; the balancer scales its own
 * timeout to the job, so this is only a last resort. */
#define UPSTREAM_TXT2IMG_TIMEOUT_MS (30L * 60 * 1000)

/* {"detail": prefix + detail} as a malloc'd body. */
static char *error_body(int *status, int code, const char *prefix, const char *detail, size_t *len)
{
	char msg[512];
	snprintf(msg, sizeof msg, "%s%s", prefix, detail);
	json_t *e = json_pack("{s:s}", "detail", msg);
	char *body = json_dumps(e, JSON_COMPACT);
	json_decref(e);
	*status = code;
	*len = body ? strlen(body) : 0;
	return body;
}

char *upstream_txt2img(struct backend *b, struct txt2img *t, double *inference_s, int *status, size_t *len)
{
	char url[1024];
	snprintf(url, sizeof url, "%s/sdapi/v1/%s", b->upstream_url,
		 t->a.kind == A1111_IMG2IMG ? "img2img" : "txt2img");
	char *request = json_dumps(t->request, JSON_COMPACT);
	if (!request)
		return error_body(status, 500, "", "out of memory", len);
	struct httpc_response r;
	double t0 = backend_now();
	int rc = httpc_request("POST", url, request, NULL, UPSTREAM_TXT2IMG_TIMEOUT_MS, BACKEND_UPSTREAM_MAX_ANSWER,
			       &r);
	*inference_s = backend_now() - t0;
	free(request);
	if (rc != 0) {
		log_warn("upstream txt2img: %s", r.error);
		httpc_response_free(&r);
		return error_body(status, 502, "upstream server failed: ", r.error, len);
	}
	json_error_t jerr;
	json_t *answer = json_loadb(r.body, r.len, 0, &jerr);
	if (r.status != 200) {
		/* Relay A1111's own 4xx/5xx when it is JSON (404 sampler, 422 ...). */
		if (answer && json_is_object(answer) && r.status >= 400 && r.status < 500) {
			json_decref(answer);
			*status = (int)r.status;
			*len = r.len;
			return r.body;
		}
		json_decref(answer);
		httpc_response_free(&r);
		char why[32];
		snprintf(why, sizeof why, "HTTP %ld", r.status);
		return error_body(status, 502, "upstream server failed: ", why, len);
	}
	httpc_response_free(&r);
	json_t *images = answer ? json_object_get(answer, "images") : NULL;
	json_t *info_str = answer ? json_object_get(answer, "info") : NULL;
	if (!answer || !json_is_object(answer) || !json_is_array(images) || !json_is_string(info_str)) {
		json_decref(answer);
		return error_body(status, 502, "upstream server answered ", "a malformed txt2img response", len);
	}
	json_t *info = json_loads(json_string_value(info_str), 0, &jerr);
	if (!json_is_object(info)) {
		json_decref(info);
		info = json_object();
	}
	json_object_set_new(info, "sdgate", job_sdgate_info(b, *inference_s));
	char *info_text = json_dumps(info, JSON_COMPACT);
	json_decref(info);
	json_object_set_new(answer, "info", json_string(info_text ? info_text : "{}"));
	free(info_text);
	char *body = json_dumps(answer, JSON_COMPACT);
	json_decref(answer);
	if (!body)
		return error_body(status, 500, "", "out of memory", len);
	*status = 200;
	*len = strlen(body);
	return body;
}

struct forward {
	struct lane_task task; /* first */
	struct backend *b;
	h2o_req_t *req;
	struct forward **guard;
	char method[8];
	char url[1024];
	char *body;
	int status;
	char *answer;
	size_t answer_len;
};

static void forward_guard_dispose(void *p)
{
	struct forward **g = p;
	if (*g)
		(*g)->req = NULL;
}

static void forward_run(struct lane_task *task)
{
	struct forward *f = (struct forward *)task;
	struct httpc_response r;
	if (httpc_request(f->method, f->url, f->body, NULL, BACKEND_CONTROL_TIMEOUT_MS, 16u << 20, &r) != 0) {
		f->answer = error_body(&f->status, 502, "upstream server failed: ", r.error, &f->answer_len);
		httpc_response_free(&r);
		return;
	}
	json_error_t jerr;
	json_t *j = json_loadb(r.body, r.len, 0, &jerr);
	if (!j || r.status >= 500) {
		char why[64];
		snprintf(why, sizeof why, j ? "HTTP %ld" : "not JSON (HTTP %ld)", r.status);
		f->answer = error_body(&f->status, 502, "upstream server answered ", why, &f->answer_len);
		httpc_response_free(&r);
		json_decref(j);
		return;
	}
	json_decref(j);
	f->status = (int)r.status;
	f->answer = r.body;
	f->answer_len = r.len;
}

static void forward_done(struct httpd *h, struct lane_task *task)
{
	struct forward *f = (struct forward *)task;
	(void)h;
	if (f->guard)
		*f->guard = NULL;
	if (f->req) {
		if (task->cancelled || !f->answer)
			httpd_reply_detail(f->req, 503, "The backend is shutting down");
		else {
			httpd_reply_owned(f->req, f->status, "application/json", f->answer, f->answer_len);
			f->answer = NULL;
		}
	}
	free(f->answer);
	free(f->body);
	free(f);
}

void upstream_forward(struct backend *b, h2o_req_t *req, const char *method, const char *path, const char *body,
		      size_t body_len)
{
	struct forward *f = calloc(1, sizeof *f);
	if (!f) {
		httpd_reply_detail(req, 500, "out of memory");
		return;
	}
	f->b = b;
	f->req = req;
	snprintf(f->method, sizeof f->method, "%s", method);
	snprintf(f->url, sizeof f->url, "%s%s", b->upstream_url, path);
	if (body) {
		f->body = strndup(body, body_len);
	}
	f->guard = httpd_alloc_guarded(req, sizeof *f->guard, forward_guard_dispose);
	*f->guard = f;
	f->task.run = forward_run;
	f->task.done = forward_done;
	lane_submit(b->control, &f->task);
}
