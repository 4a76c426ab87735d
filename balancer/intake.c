/* intake.c — turns a txt2img or img2img request (the façade's or POST
 * /v1/jobs', which takes both) into
 * a job: parsed once by the A1111 request model (a1111.h) against the native
 * engine's names, the routing hints, concrete seeds fixed once from the
 * parsed values, the job's request serialised from the parsed request and
 * allow-listed (forward.h), the queue limits per client (client.c), and the
 * early "no backend could ever serve this" answer. The raw JSON is never
 * read again. Loop thread. */
#include "balancer.h"

#include "a1111.h"
#include "error.h"
#include "forward.h"
#include "prefs.h"
#include "router.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#define MAX_GPU_NAME 32

static void set_error(struct intake_error *e, enum sd_error code, const char *field, const char *msg)
{
	e->status = sd_error_status(code);
	e->code = code;
	e->field = field;
	snprintf(e->message, sizeof e->message, "%s", msg);
}

static int valid_gpu_name(const char *s)
{
	size_t n = strlen(s);
	if (n == 0 || n > MAX_GPU_NAME)
		return 0;
	for (; *s; s++)
		if (!isalnum((unsigned char)*s) && *s != '-' && *s != '_' && *s != '.')
			return 0;
	return 1;
}

static int add_gpu(json_t *gpus, const char *name, size_t len, struct intake_error *e)
{
	char buf[MAX_GPU_NAME + 1];
	while (len && isspace((unsigned char)*name))
		name++, len--;
	while (len && isspace((unsigned char)name[len - 1]))
		len--;
	if (len == 0)
		return 0;
	if (len > MAX_GPU_NAME || json_array_size(gpus) >= BAL_MAX_GPUS) {
		set_error(e, SDE_INVALID, "gpus", "gpus: at most 16 GPU class names of at most 32 characters");
		return -1;
	}
	memcpy(buf, name, len);
	buf[len] = '\0';
	for (char *p = buf; *p; p++)
		*p = (char)tolower((unsigned char)*p);
	if (!valid_gpu_name(buf)) {
		set_error(e, SDE_INVALID, "gpus", "gpus: a GPU class is letters, digits, '-', '_' or '.'");
		return -1;
	}
	json_array_append_new(gpus, json_string(buf));
	return 0;
}

/* "prefer": "fastest" (the default: the client's earliest finish) or
 * "cheapest" (the lowest expected cost), router.h. */
static int take_prefer(json_t *body, json_t *sd, int *prefer, struct intake_error *e)
{
	json_t *v = json_object_get(body, "prefer");
	if (!v)
		v = json_object_get(sd, "prefer");
	if (!v || json_is_null(v))
		return 0;
	const char *s = json_string_value(v);
	if (s && !strcmp(s, "fastest")) {
		*prefer = ROUTER_PREFER_FASTEST;
	} else if (s && !strcmp(s, "cheapest")) {
		*prefer = ROUTER_PREFER_CHEAPEST;
	} else {
		set_error(e, SDE_INVALID, "prefer", "prefer: \"fastest\" (the default) or \"cheapest\"");
		return -1;
	}
	return 0;
}

/* Hints: "gpus"/"max_price"/"prefer" at the top level or in "sdgate", or the
 * X-Sdgate-Gpus header. They are not A1111 fields: the request sent to
 * backends never holds them. */
static int take_hints(h2o_req_t *req, json_t *body, json_t *gpus, double *max_price, int *prefer,
		      struct intake_error *e)
{
	json_t *sd = json_object_get(body, "sdgate");
	if (sd && !json_is_object(sd) && !json_is_null(sd)) {
		set_error(e, SDE_INVALID, "sdgate", "sdgate: must be an object");
		return -1;
	}
	json_t *list = json_object_get(body, "gpus");
	if (!list)
		list = json_object_get(sd, "gpus");
	if (list && !json_is_null(list)) {
		if (!json_is_array(list)) {
			set_error(e, SDE_INVALID, "gpus", "gpus: must be a list of GPU class names");
			return -1;
		}
		size_t i;
		json_t *v;
		json_array_foreach(list, i, v)
		{
			if (!json_is_string(v)) {
				set_error(e, SDE_INVALID, "gpus", "gpus: must be a list of GPU class names");
				return -1;
			}
			if (add_gpu(gpus, json_string_value(v), json_string_length(v), e))
				return -1;
		}
	}
	h2o_iovec_t hdr = httpd_header(req, "x-sdgate-gpus");
	if (hdr.len && !json_array_size(gpus)) {
		if (hdr.len > 1024) {
			set_error(e, SDE_INVALID, "gpus", "X-Sdgate-Gpus: too long");
			return -1;
		}
		const char *p = hdr.base, *end = hdr.base + hdr.len;
		while (p < end) {
			const char *comma = memchr(p, ',', (size_t)(end - p));
			const char *stop = comma ? comma : end;
			if (add_gpu(gpus, p, (size_t)(stop - p), e))
				return -1;
			p = stop + 1;
		}
	}
	json_t *price = json_object_get(body, "max_price");
	if (!price)
		price = json_object_get(sd, "max_price");
	if (price && !json_is_null(price)) {
		if (!json_is_number(price) || json_number_value(price) < 0) {
			set_error(e, SDE_INVALID, "max_price", "max_price: must be a number >= 0 (per hour)");
			return -1;
		}
		*max_price = json_number_value(price);
	}
	if (take_prefer(body, sd, prefer, e))
		return -1;
	return 0;
}

/* The 422/404 from a1111_parse, in sdgate's shape. */
static void from_a1111(struct intake_error *e, int status, json_t *reply)
{
	json_t *detail = json_object_get(reply, "detail");
	if (json_is_string(detail)) {
		const char *text = json_string_value(detail);
		int sampler = status == 404 && !strcmp(text, "Sampler not found");
		set_error(e,
			  sampler         ? SDE_SAMPLER_NOT_FOUND
			  : status == 404 ? SDE_NOT_FOUND
					  : SDE_INVALID,
			  sampler ? "sampler_name" : NULL, text);
		e->status = status; /* A1111's, for the façade */
		return;
	}
	json_t *first = json_array_get(detail, 0);
	const char *type = json_string_value(json_object_get(first, "type"));
	const char *msg = json_string_value(json_object_get(first, "msg"));
	json_t *loc = json_object_get(first, "loc");
	const char *field = json_string_value(json_array_get(loc, json_array_size(loc) - 1));
	snprintf(e->field_buf, sizeof e->field_buf, "%s", field && strcmp(field, "body") ? field : "");
	char text[512];
	snprintf(text, sizeof text, "%s%s%s", e->field_buf, e->field_buf[0] ? ": " : "", msg ? msg : "invalid");
	set_error(e, type && !strcmp(type, "json_invalid") ? SDE_BAD_JSON : SDE_INVALID,
		  e->field_buf[0] ? e->field_buf : NULL, text);
}

/* The names some live backend runs: the union of the up backends' samplers
 * and schedulers (caps.h). */
struct live_names {
	struct a1111_runnable run;
	const char *samplers[A1111_SAMPLER_COUNT + 1];
	const char *schedulers[A1111_SCHEDULER_COUNT + 1];
};

static int live(const struct bk *k) { return k->state == BK_UP && k->caps.known == 3; }

/* What the balancer accepts: a sampler and a scheduler that some live
 * backend runs. With no backend live at all, every A1111 name: the job
 * queues for a backend to come (its grace period, dispatch.c), as before
 * capabilities. Checkpoints are the router's business (503 no_backend). */
static const struct a1111_runnable *runnable(struct balancer *b, struct live_names *out)
{
	unsigned samplers = 0, schedulers = 0;
	int n = 0;
	for (const struct bk *k = b->backends; k; k = k->next)
		if (live(k)) {
			samplers |= k->caps.samplers;
			schedulers |= k->caps.schedulers;
			n++;
		}
	if (!n)
		return NULL;
	caps_sampler_names(samplers, out->samplers);
	caps_scheduler_names(schedulers, out->schedulers);
	out->run = (struct a1111_runnable){out->samplers, out->schedulers, NULL, 0};
	return &out->run;
}

/* 0 when some live backend can run what the request needs (or none is live:
 * see runnable), else the 422 naming the field that the backend which came
 * closest cannot run (caps_cannot checks in CAPS_FIELDS' order). */
static int capable(struct balancer *b, const json_t *request, struct intake_error *e)
{
	struct caps_need need;
	caps_need_of(request, json_object_get(request, "init_images") != NULL, &need);
	int best = -1;
	for (const struct bk *k = b->backends; k; k = k->next) {
		if (!live(k))
			continue;
		const char *field = caps_cannot(&k->caps, &need);
		if (!field)
			return 0;
		int rank = caps_field_rank(field);
		if (rank > best)
			best = rank;
	}
	if (best < 0)
		return 0;
	const char *field = CAPS_FIELDS[best];
	snprintf(e->field_buf, sizeof e->field_buf, "%s", field);
	char msg[256];
	snprintf(msg, sizeof msg, "%s: no live backend can run this value (the /sdapi/v1 listings say what they run)",
		 field);
	set_error(e, SDE_NOT_RUNNABLE, e->field_buf, msg);
	return -1;
}

/* A façade txt2img that names no checkpoint runs on the one its client
 * chose with POST /sdapi/v1/options (prefs.h), as A1111 runs on its
 * current one: the job then routes, and reaches its backend, as if it had
 * named it. */
static void use_default_checkpoint(struct balancer *b, const char *client, json_t *body)
{
	json_t *over = json_object_get(body, "override_settings");
	if (json_string_length(json_object_get(over, "sd_model_checkpoint")))
		return;
	const char *mine = prefs_checkpoint(b->prefs, client, bal_now());
	if (!mine)
		return;
	if (!json_is_object(over)) {
		over = json_object();
		json_object_set_new(body, "override_settings", over);
	}
	json_object_set_new(over, "sd_model_checkpoint", json_string(mine));
}

int job_is_img2img(const struct job *j) { return json_object_get(j->request, "init_images") != NULL; }

static int img2img_count(const struct balancer *b)
{
	int n = 0;
	for (const struct job *j = b->active; j; j = j->act_next)
		n += job_is_img2img(j);
	return n;
}

/* The request in text (len bytes) as a job of this kind. */
static struct job *intake(struct balancer *b, h2o_req_t *req, enum a1111_kind kind, const char *text, size_t len,
			  int facade, struct intake_error *e)
{
	memset(e, 0, sizeof *e);
	struct a1111_request r;
	struct live_names names;
	int status;
	json_t *reply = NULL;
	int rc = a1111_parse(kind, text, len, runnable(b, &names), &r, &status, &reply);
	kind = r.kind;                                     /* A1111_EITHER resolved */
	if (kind != A1111_IMG2IMG && len > BAL_MAX_BODY) { /* the route's bound is for img2img bodies only */
		json_decref(reply);
		a1111_request_free(&r);
		set_error(e, SDE_BODY_TOO_LARGE, NULL,
			  "Request body too large: only an img2img body (init_images) may exceed 1 MiB");
		return NULL;
	}
	if (rc != A1111_OK) {
		from_a1111(e, status, reply);
		e->a1111 = reply;
		return NULL;
	}
	if ((reply = a1111_unsupported(&r))) {
		a1111_request_free(&r);
		from_a1111(e, 422, reply);
		e->a1111 = reply;
		return NULL;
	}
	json_t *gpus = json_array();
	double max_price = 0;
	int prefer = ROUTER_PREFER_FASTEST;
	/* The hints are sdgate's own keys beside A1111's: read from the parsed object. */
	if (take_hints(req, r.body, gpus, &max_price, &prefer, e)) {
		a1111_request_free(&r);
		json_decref(gpus);
		return NULL;
	}
	/* A1111 draws a random seed for -1 before sampling; we draw it once,
	 * here, so that a retry on another backend makes the same image. */
	a1111_fix_seeds(&r);
	/* The job keeps the parsed request serialised (coerced values, canonical
	 * sampler names, concrete seeds, never unknown keys), cut to what a
	 * provider may ever be sent (forward.h, scripts included for the backends
	 * that allow them): a client's credentials reach neither a provider nor
	 * the SQLite file. */
	json_t *parsed = a1111_request_body(&r);
	a1111_request_free(&r);
	json_t *body = parsed ? forward_request(parsed, 1) : NULL;
	json_decref(parsed);
	if (body && kind == A1111_IMG2IMG && !json_object_get(body, "init_images")) {
		json_decref(body);
		body = NULL;
	}
	if (!body) {
		json_decref(gpus);
		set_error(e, SDE_INTERNAL, NULL, "Out of memory");
		return NULL;
	}
	if (capable(b, body, e)) {
		json_decref(body);
		json_decref(gpus);
		return NULL;
	}

	char client[64];
	bal_client_of(b, req, client, sizeof client);
	if (facade)
		use_default_checkpoint(b, client, body);
	if (b->queued >= b->cfg.max_queue) {
		set_error(e, SDE_QUEUE_FULL, NULL, "The queue is full; try again later");
	} else if (jobs_count_client(b, client) >= b->cfg.max_queue_per_client) {
		set_error(e, SDE_CLIENT_QUEUE_FULL, NULL, "Too many unfinished jobs from this client");
	} else if (kind == A1111_IMG2IMG && img2img_count(b) >= BAL_MAX_IMG2IMG_JOBS) {
		set_error(e, SDE_QUEUE_FULL, NULL, "Too many unfinished img2img jobs; try again later");
	}
	if (e->status) {
		json_decref(body);
		json_decref(gpus);
		return NULL;
	}
	struct job *j = jobs_new(b, body, gpus, max_price, client, facade);
	if (!j) {
		set_error(e, SDE_INTERNAL, NULL, "Out of memory");
		return NULL;
	}
	j->prefer = prefer;
	b->m.accepted++;
	return j;
}

struct job *intake_job_from(struct balancer *b, h2o_req_t *req, const char *text, size_t len, int facade,
			    struct intake_error *e)
{
	return intake(b, req, A1111_TXT2IMG, text, len, facade, e);
}

struct job *intake_job(struct balancer *b, h2o_req_t *req, int facade, struct intake_error *e)
{
	return intake(b, req, A1111_TXT2IMG, req->entity.base, req->entity.len, facade, e);
}

struct job *intake_img2img(struct balancer *b, h2o_req_t *req, struct intake_error *e)
{
	return intake(b, req, A1111_IMG2IMG, req->entity.base, req->entity.len, 1, e);
}

struct job *intake_jobs_api(struct balancer *b, h2o_req_t *req, struct intake_error *e)
{
	return intake(b, req, A1111_EITHER, req->entity.base, req->entity.len, 0, e);
}

const char *const BAL_LARGE_BODY_PATHS[] = {"/sdapi/v1/img2img", "/v1/jobs", NULL};

void intake_reply_error(h2o_req_t *req, const struct intake_error *e, int a1111_shape)
{
	if (a1111_shape) {
		if (e->a1111)
			httpd_reply_json(req, e->status, json_incref(e->a1111));
		else if (e->status == 422)
			httpd_reply_json(req, 422,
					 json_pack("{s:[{s:s,s:[s,s],s:s}]}", "detail", "type", sd_error_code(e->code),
						   "loc", "body", e->field ? e->field : "body", "msg", e->message));
		else
			httpd_reply_detail(req, e->status, e->message);
	} else {
		bal_reply_error(req, e->code, e->message, e->field);
	}
}

void intake_error_free(struct intake_error *e)
{
	json_decref(e->a1111);
	e->a1111 = NULL;
}
