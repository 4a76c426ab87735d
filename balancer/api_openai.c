/* api_openai.c — OpenAI's image API on the balancer: POST
 * /v1/images/generations, for the chat front-ends that speak it (Open WebUI,
 * LibreChat). The OpenAI request becomes an A1111 txt2img body (prompt,
 * width x height from "size", batch_size from "n", the checkpoint from
 * "model") that goes through the façade's intake (a1111.h's validation,
 * routing hints, client queue limits, seeds) and waits for its job as a
 * façade txt2img does; the answer is OpenAI's {"created", "data": [...]}
 * with each image as b64_json or as a URL of the jobs API. Errors in
 * OpenAI's shape {"error": {"message", "type", "param", "code"}} (code: the
 * sdgate code of common/error.h). Contract and differences from OpenAI:
 * docs/openai.md. Loop thread. */
#include "balancer.h"

#include "a1111.h"
#include "error.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define OAI_DEFAULT_SIZE 1024 /* OpenAI's default (and its "auto") size: 1024x1024 */
#define OAI_MAX_AUTHORITY 255 /* a Host taken into an image URL */

enum oai_format { OAI_B64_JSON, OAI_URL };

/* OpenAI's error "type" for a status: what its SDKs and clients read. */
static const char *error_type(int status)
{
	if (status == 401)
		return "authentication_error";
	if (status == 429)
		return "rate_limit_error";
	return status >= 500 ? "server_error" : "invalid_request_error";
}

static void reply_error(h2o_req_t *req, int status, const char *code, const char *message, const char *param)
{
	json_t *err = json_pack("{s:s,s:s,s:o,s:o}", "message", message, "type", error_type(status), "param",
				param ? json_string(param) : json_null(), "code",
				code ? json_string(code) : json_null());
	httpd_reply_json(req, status, json_pack("{s:o}", "error", err));
}

/* A validation error: 400 (OpenAI's status for a bad request; sdgate's code "invalid"). */
static void reply_invalid(h2o_req_t *req, const char *param, const char *message)
{
	reply_error(req, 400, sd_error_code(SDE_INVALID), message, param);
}

/* The OpenAI parameter behind a field of the A1111 request built below. */
static const char *param_of(const char *a1111_field)
{
	if (!a1111_field)
		return NULL;
	if (!strcmp(a1111_field, "width") || !strcmp(a1111_field, "height"))
		return "size";
	if (!strcmp(a1111_field, "batch_size"))
		return "n";
	if (!strncmp(a1111_field, "override_settings", 17))
		return "model";
	return !strcmp(a1111_field, "prompt") ? "prompt" : NULL;
}

/* "WxH" (decimal, at most 5 digits each). 0, or -1 when not of that form. */
static int parse_size(const char *s, int *w, int *h)
{
	char *end;
	if (!isdigit((unsigned char)s[0]) || strspn(s, "0123456789") > 5)
		return -1;
	long a = strtol(s, &end, 10);
	if (*end != 'x' && *end != 'X')
		return -1;
	s = end + 1;
	if (!isdigit((unsigned char)s[0]) || strspn(s, "0123456789") > 5)
		return -1;
	long c = strtol(s, &end, 10);
	if (*end)
		return -1;
	*w = (int)a;
	*h = (int)c;
	return 0;
}

/* OpenAI's own model names: a client configured for OpenAI sends one
 * (LibreChat: "dall-e-3", "gpt-image-1"; Open WebUI: "dall-e-2" when none
 * is set). They ask for no checkpoint in particular. */
static int openai_model(const char *m) { return !strncasecmp(m, "dall-e", 6) || !strncasecmp(m, "gpt-image", 9); }

/* 1 when some live backend offers this checkpoint (a title or a model name),
 * 0 when live backends exist and none does, -1 when none is live (the
 * intake then answers "no backend"). */
static int model_offered(struct balancer *b, const char *model)
{
	int live = 0;
	for (struct bk *k = b->backends; k; k = k->next) {
		if (k->state != BK_UP)
			continue;
		live = 1;
		if (registry_offers(k, model))
			return 1;
	}
	return live ? 0 : -1;
}

struct oai_request {
	const char *prompt, *model; /* model NULL: any checkpoint */
	int n, width, height;
	enum oai_format format;
};

/* Reads and checks OpenAI's fields (unknown ones, quality, style, user,
 * background, output_format... are ignored); answers 400/404 and returns -1
 * on the first problem. */
static int read_request(struct balancer *b, h2o_req_t *req, json_t *body, struct oai_request *o)
{
	json_t *v = json_object_get(body, "prompt");
	if (!v || json_is_null(v)) {
		reply_invalid(req, "prompt", "Missing required parameter: 'prompt'.");
		return -1;
	}
	if (!json_is_string(v) || json_string_length(v) == 0) {
		reply_invalid(req, "prompt", "prompt: must be a non-empty string");
		return -1;
	}
	o->prompt = json_string_value(v);

	o->n = 1;
	v = json_object_get(body, "n");
	if (v && !json_is_null(v)) {
		if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > A1111_MAX_BATCH) {
			char msg[96];
			snprintf(msg, sizeof msg, "n: must be an integer from 1 to %d", A1111_MAX_BATCH);
			reply_invalid(req, "n", msg);
			return -1;
		}
		o->n = (int)json_integer_value(v);
	}

	o->width = o->height = OAI_DEFAULT_SIZE;
	v = json_object_get(body, "size");
	if (v && !json_is_null(v)) {
		const char *s = json_string_value(v);
		if (!s || (strcmp(s, "auto") && parse_size(s, &o->width, &o->height))) {
			reply_invalid(req, "size",
				      "size: must be \"WIDTHxHEIGHT\" (such as \"1024x1024\") or \"auto\"");
			return -1;
		}
	}

	o->model = NULL;
	v = json_object_get(body, "model");
	if (v && !json_is_null(v)) {
		const char *m = json_string_value(v);
		if (!m || json_string_length(v) > A1111_MAX_NAME) {
			reply_invalid(req, "model", "model: must be a checkpoint's name (a string)");
			return -1;
		}
		if (*m && !openai_model(m)) {
			if (model_offered(b, m) == 0) {
				char msg[A1111_MAX_NAME + 96];
				snprintf(msg, sizeof msg,
					 "The model '%s' does not exist: no live backend offers that checkpoint "
					 "(GET /sdapi/v1/sd-models lists them)",
					 m);
				reply_error(req, sd_error_status(SDE_MODEL_NOT_FOUND),
					    sd_error_code(SDE_MODEL_NOT_FOUND), msg, "model");
				return -1;
			}
			o->model = m;
		}
	}

	/* The default: url where OpenAI's is url (DALL-E, its default model),
	 * else b64_json (gpt-image, and a checkpoint: a client that names one
	 * reads what gpt-image answers, as LibreChat's gpt-image-1 tool does). */
	const char *m = json_string_value(json_object_get(body, "model"));
	o->format = !m || !*m || !strncasecmp(m, "dall-e", 6) ? OAI_URL : OAI_B64_JSON;
	v = json_object_get(body, "response_format");
	if (v && !json_is_null(v)) {
		const char *f = json_string_value(v);
		if (f && !strcmp(f, "b64_json")) {
			o->format = OAI_B64_JSON;
		} else if (f && !strcmp(f, "url")) {
			o->format = OAI_URL;
		} else {
			reply_invalid(req, "response_format", "response_format: must be \"b64_json\" or \"url\"");
			return -1;
		}
	}
	return 0;
}

/* The A1111 txt2img body for o, as text (caller frees), or NULL. */
static char *a1111_body(const struct oai_request *o)
{
	json_t *a = json_pack("{s:s,s:i,s:i,s:i}", "prompt", o->prompt, "width", o->width, "height", o->height,
			      "batch_size", o->n);
	if (a && o->model)
		json_object_set_new(a, "override_settings", json_pack("{s:s}", "sd_model_checkpoint", o->model));
	char *text = a ? json_dumps(a, JSON_COMPACT) : NULL;
	json_decref(a);
	return text;
}

/* The intake's refusal in OpenAI's shape: its 422 is OpenAI's 400, and a
 * field of the A1111 request is named by the OpenAI parameter it came from. */
static void reply_intake_error(h2o_req_t *req, const struct intake_error *e)
{
	int status = e->status == 422 || e->status == 404 ? 400 : e->status;
	const char *code = sd_error_code(e->status == 404 ? SDE_INVALID : e->code);
	const char *param = param_of(e->field);
	char msg[sizeof e->message + 16];
	if (param && strcmp(param, e->field)) /* "size (width: Input should be ...)" */
		snprintf(msg, sizeof msg, "%s (%s)", param, e->message);
	else
		snprintf(msg, sizeof msg, "%s", e->message);
	reply_error(req, status, code, msg, param);
}

/* "scheme://host[:port]" the client reached us at: a --trusted-proxy's
 * X-Forwarded-Proto / X-Forwarded-Host when it sends them, else this
 * connection's scheme and Host. "" when the host is not a plain host[:port]
 * (the URLs are then relative). In req->pool. */
static const char *public_base(struct balancer *b, h2o_req_t *req)
{
	h2o_iovec_t scheme = req->scheme ? req->scheme->name : h2o_iovec_init(H2O_STRLIT("http"));
	h2o_iovec_t host = req->authority;
	if (bal_from_trusted_proxy(b, req)) {
		h2o_iovec_t p = httpd_header(req, "x-forwarded-proto");
		h2o_iovec_t fh = httpd_header(req, "x-forwarded-host");
		if ((p.len == 4 && !strncasecmp(p.base, "http", 4)) || (p.len == 5 && !strncasecmp(p.base, "https", 5)))
			scheme = p;
		if (fh.len)
			host = fh;
	}
	if (!host.len || host.len > OAI_MAX_AUTHORITY)
		return "";
	for (size_t i = 0; i < host.len; i++)
		if (!isalnum((unsigned char)host.base[i]) && (!host.base[i] || !strchr(".-:[]", host.base[i])))
			return "";
	size_t len = scheme.len + 3 + host.len + 1;
	char *out = h2o_mem_alloc_pool(&req->pool, len);
	snprintf(out, len, "%.*s://%.*s", (int)scheme.len, scheme.base, (int)host.len, host.base);
	for (char *c = out; *c != ':'; c++)
		*c = (char)tolower((unsigned char)*c);
	return out;
}

/* The job's last n images: A1111 puts a grid first when it makes several. */
static size_t first_image(size_t count, int n) { return count > (size_t)n ? count - (size_t)n : 0; }

/* The images a job asked for: its request's batch_size. */
static int images_asked(const struct job *j)
{
	return (int)json_integer_value(json_object_get(j->request, "batch_size"));
}

/* b64_json's answer, with the images from the job's reply or read back
 * from the store (a retry with the first request's Idempotency-Key). */
static void answer_b64_images(struct balancer *b, h2o_req_t *req, struct job *j, json_t *images, void *user)
{
	(void)b;
	(void)user;
	if (!j || !images) {
		reply_error(req, sd_error_status(SDE_RESULT_GONE), sd_error_code(SDE_RESULT_GONE),
			    "This job's images are no longer kept", NULL);
		return;
	}
	json_t *data = json_array();
	for (size_t i = first_image(json_array_size(images), images_asked(j)); i < json_array_size(images); i++)
		json_array_append_new(data, json_pack("{s:O}", "b64_json", json_array_get(images, i)));
	httpd_reply_json(req, 200, json_pack("{s:I,s:o}", "created", (json_int_t)bal_unix_now(), "data", data));
}

static void answer_done(struct balancer *b, h2o_req_t *req, struct job *j, enum oai_format format, int n)
{
	if (format == OAI_B64_JSON) {
		results_read_b64(b, req, j, answer_b64_images, NULL);
		return;
	}
	json_t *data = json_array();
	if (!j->gone) {
		const char *base = public_base(b, req);
		for (size_t i = first_image(json_array_size(j->images), n); i < json_array_size(j->images); i++) {
			const char *type = json_string_value(json_object_get(json_array_get(j->images, i), "type"));
			char url[OAI_MAX_AUTHORITY + 128];
			snprintf(url, sizeof url, "%s/v1/jobs/%s/images/%zu%s", base, j->id, i,
				 results_extension(type));
			json_array_append_new(data, json_pack("{s:s}", "url", url));
		}
	}
	if (!json_array_size(data)) {
		json_decref(data);
		reply_error(req, 500, sd_error_code(SDE_RESULT_GONE),
			    "The images were made but could not be kept; ask again", NULL);
		return;
	}
	httpd_reply_json(req, 200, json_pack("{s:I,s:o}", "created", (json_int_t)bal_unix_now(), "data", data));
}

/* The status an ended job's failure answers (dispatch.c's codes). */
static int failure_status(const char *code)
{
	enum sd_error e = sd_error_of(code);
	if (e == SDE_REJECTED)
		return 400; /* OpenAI's status for a bad request */
	return e == SDE_NO_BACKEND || e == SDE_BALANCER_RESTARTED ? 503 : 500;
}

static void answer(struct balancer *b, h2o_req_t *req, struct job *j, enum oai_format format, int n)
{
	if (j->status == JOB_DONE) {
		answer_done(b, req, j, format, n);
	} else if (j->status == JOB_CANCELLED) {
		reply_error(req, sd_error_status(SDE_INTERRUPTED), sd_error_code(SDE_INTERRUPTED),
			    "The job was cancelled before it made its images", NULL);
	} else if (j->status == JOB_FAILED) {
		const char *code = json_string_value(json_object_get(j->error, "code"));
		const char *msg = json_string_value(json_object_get(j->error, "message"));
		reply_error(req, failure_status(code ? code : ""), code ? code : sd_error_code(SDE_INTERNAL),
			    msg ? msg : "The job failed", NULL);
	} else {
		reply_error(req, 503, sd_error_code(SDE_NO_BACKEND), "The balancer is shutting down; ask again", NULL);
	}
}

/* The waiter's hook carries no state of its own: one hook per format, and n
 * read back from the job's request (its batch_size). */
static void answer_b64(struct balancer *b, h2o_req_t *req, struct job *j)
{
	answer(b, req, j, OAI_B64_JSON, images_asked(j));
}

static void answer_url(struct balancer *b, h2o_req_t *req, struct job *j)
{
	answer(b, req, j, OAI_URL, images_asked(j));
}

/* The job of the A1111 body built from the request (make's user). */
static struct job *make(struct balancer *b, h2o_req_t *req, void *user, struct intake_error *e)
{
	const char *text = user;
	return intake_job_from(b, req, text, strlen(text), 1, e);
}

static void key_error(h2o_req_t *req, enum sd_error e, const char *message, const char *field)
{
	reply_error(req, sd_error_status(e), sd_error_code(e), message, field);
}

static const struct waiter_api B64 = {"/v1/images/generations", make, reply_intake_error, key_error, answer_b64};
static const struct waiter_api URL = {"/v1/images/generations", make, reply_intake_error, key_error, answer_url};

static int on_generations(struct httpd *h, h2o_req_t *req, const char *rest)
{
	struct balancer *b = httpd_user(h);
	json_t *body = json_loadb(req->entity.base, req->entity.len, 0, NULL);
	if (!json_is_object(body)) {
		json_decref(body);
		reply_error(req, 400, sd_error_code(SDE_BAD_JSON),
			    "We could not parse the JSON body of your request: send a JSON object", NULL);
		return 0;
	}
	struct oai_request o;
	if (read_request(b, req, body, &o)) {
		json_decref(body);
		return 0;
	}
	char *text = a1111_body(&o);
	json_decref(body); /* o's strings are in text now */
	if (!text) {
		reply_error(req, 500, sd_error_code(SDE_INTERNAL), "Out of memory", NULL);
		return 0;
	}
	/* The request's, for make (which may run once the store answered). */
	char *kept = h2o_mem_alloc_pool(&req->pool, strlen(text) + 1);
	memcpy(kept, text, strlen(text) + 1);
	free(text);
	waiter_start(b, req, o.format == OAI_B64_JSON ? &B64 : &URL, kept);
	return 0;
}

const struct httpd_route API_OPENAI_ROUTES[] = {
	{"POST", "/v1/images/generations", on_generations},
};
const size_t API_OPENAI_N = sizeof API_OPENAI_ROUTES / sizeof API_OPENAI_ROUTES[0];
