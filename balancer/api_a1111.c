/* api_a1111.c — the A1111 façade: an A1111 client pointed at the balancer
 * sees one AUTOMATIC1111 whose txt2img runs on whichever backend the router
 * picks. POST /sdapi/v1/txt2img waits for its job (waiter.c); a client that
 * hangs up cancels the job. Progress and interrupt concern the
 * caller's own jobs only, and only a caller with an API key has any there
 * (client.c). Loop thread. */
#include "balancer.h"

#include "a1111.h"
#include "log.h"
#include "pnginfo.h"
#include "prefs.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

static struct balancer *bal(struct httpd *h) { return httpd_user(h); }

static struct job *make_txt2img(struct balancer *b, h2o_req_t *req, void *user, struct intake_error *e)
{
	return intake_job(b, req, 1, e);
}

/* img2img: bodies up to A1111_MAX_IMG2IMG_BODY on this route only
 * (BAL_LARGE_BODY_PATHS, intake.c); routed as txt2img, sent to /sdapi/v1/img2img. */
static struct job *make_img2img(struct balancer *b, h2o_req_t *req, void *user, struct intake_error *e)
{
	return intake_img2img(b, req, e);
}

static void refuse(h2o_req_t *req, const struct intake_error *e) { intake_reply_error(req, e, 1); }

static void reply_error(h2o_req_t *req, enum sd_error e, const char *message, const char *field)
{
	bal_reply_error(req, e, message, field);
}

/* A1111's answers (NULL): the waiter's own. */
static const struct waiter_api TXT2IMG = {"/sdapi/v1/txt2img", make_txt2img, refuse, reply_error, NULL};
static const struct waiter_api IMG2IMG = {"/sdapi/v1/img2img", make_img2img, refuse, reply_error, NULL};

static int on_txt2img(struct httpd *h, h2o_req_t *req, const char *rest)
{
	waiter_start(bal(h), req, &TXT2IMG, NULL);
	return 0;
}

static int on_img2img(struct httpd *h, h2o_req_t *req, const char *rest)
{
	waiter_start(bal(h), req, &IMG2IMG, NULL);
	return 0;
}

/* The calling client's most recent unfinished façade job, or NULL. Only a
 * client with an identity of its own (an API key, or the gateway's named
 * client) has one here: an address is shared behind a NAT or a proxy, so an
 * anonymous client's progress is idle and its interrupt stops nothing (it
 * cancels its job by hanging up). */
static struct job *client_job(struct balancer *b, h2o_req_t *req)
{
	char client[64];
	if (bal_client_of(b, req, client, sizeof client) == BAL_CLIENT_ADDRESS)
		return NULL;
	for (struct job *j = b->active; j; j = j->act_next)
		if (j->facade && !strcmp(j->client, client))
			return j;
	return NULL;
}

static int on_progress(struct httpd *h, h2o_req_t *req, const char *rest)
{
	struct balancer *b = bal(h);
	struct job *j = client_job(b, req);
	struct a1111_progress p = {0};
	json_t *image = NULL;
	if (j && j->status == JOB_RUNNING) {
		p.active = 1;
		p.job_count = 1;
		p.sampling_step = j->step;
		p.sampling_steps = j->steps;
		p.progress = j->steps > 0 ? (double)j->step / j->steps : 0;
		double elapsed = bal_now() - j->started;
		if (p.progress > 0.01)
			p.eta_relative = elapsed / p.progress - elapsed;
		char skip[8] = "";
		httpd_query_param(req, "skip_current_image", skip, sizeof skip);
		if (j->preview && strcmp(skip, "true") && strcmp(skip, "True") && strcmp(skip, "1"))
			image = json_string(j->preview);
	} else if (j) {
		p.active = 1; /* queued: A1111 reports a job with no step yet */
		p.job_count = 1;
	}
	httpd_reply_json(req, 200, a1111_progress_json(&p, image));
	return 0;
}

/* POST /sdapi/v1/interrupt and /skip: the caller's façade jobs (only a
 * caller with an identity of its own has any, see client_job). An
 * interrupted job's waiting txt2img answers 200 with what was made, as
 * A1111's does (dispatch_interrupt). */
static int stop_own_jobs(struct httpd *h, h2o_req_t *req, int skip)
{
	struct balancer *b = bal(h);
	char client[64];
	if (bal_client_of(b, req, client, sizeof client) != BAL_CLIENT_ADDRESS)
		for (struct job *j = b->active, *next; j; j = next) {
			next = j->act_next;
			if (j->facade && !strcmp(j->client, client))
				dispatch_interrupt(b, j, skip);
		}
	httpd_reply_json(req, 200, json_object());
	return 0;
}

static int on_interrupt(struct httpd *h, h2o_req_t *req, const char *rest) { return stop_own_jobs(h, req, 0); }

static int on_skip(struct httpd *h, h2o_req_t *req, const char *rest) { return stop_own_jobs(h, req, 1); }

/* Every checkpoint title a live backend offers, once. */
static json_t *live_titles(struct balancer *b)
{
	json_t *seen = json_object(), *list = json_array();
	for (struct bk *k = b->backends; k; k = k->next) {
		if (k->state != BK_UP)
			continue;
		size_t i;
		json_t *t;
		json_array_foreach(k->titles, i, t)
		{
			if (json_object_get(seen, json_string_value(t)))
				continue;
			json_object_set_new(seen, json_string_value(t), json_true());
			json_array_append(list, t);
		}
	}
	json_decref(seen);
	return list;
}

/* 1 when a client's name for a checkpoint is this title: the title itself,
 * its file name (before " [hash]") or that without its extension (A1111's
 * model_name), case-insensitive. */
static int names_title(const char *title, const char *name)
{
	const char *br = strstr(title, " [");
	size_t file = br ? (size_t)(br - title) : strlen(title), len = strlen(name);
	const char *dot = memrchr(title, '.', file);
	size_t stem = dot ? (size_t)(dot - title) : file;
	return !strcasecmp(title, name) || ((len == file || len == stem) && !strncasecmp(title, name, len));
}

/* A live backend's title for a checkpoint a client named (names_title), or
 * NULL. Borrowed. */
static const char *offered_title(struct balancer *b, const char *name)
{
	for (struct bk *k = b->backends; k; k = k->next) {
		if (k->state != BK_UP || !registry_offers(k, name))
			continue;
		size_t i;
		json_t *t;
		json_array_foreach(k->titles, i, t)
		{
			if (names_title(json_string_value(t), name))
				return json_string_value(t);
		}
		return name; /* offered under a name its sd-models did not list */
	}
	return NULL;
}

/* FastAPI's 422 for a body that is not a JSON object (o: what it parsed to, or NULL). */
static void reply_not_object(h2o_req_t *req, const json_t *o)
{
	httpd_reply_json(req, 422,
			 a1111_error_422(NULL, o ? "dict_type" : "json_invalid",
					 o ? "Input should be a valid dictionary" : "JSON decode error", NULL));
}

/* GET /sdapi/v1/options: what A1111 clients read of it. sd_model_checkpoint
 * is the caller's own choice (POST below) while a live backend offers it,
 * else the first checkpoint a live backend offers. */
static int on_options(struct httpd *h, h2o_req_t *req, const char *rest)
{
	struct balancer *b = bal(h);
	char client[64];
	bal_client_of(b, req, client, sizeof client);
	const char *mine = prefs_checkpoint(b->prefs, client, bal_now());
	json_t *titles = live_titles(b);
	const char *current = mine ? offered_title(b, mine) : NULL;
	if (!current)
		current = json_string_value(json_array_get(titles, 0));
	json_t *o = json_pack("{s:s,s:i,s:s,s:b,s:s,s:i,s:b}", "sd_model_checkpoint", current ? current : "",
			      "sd_checkpoints_limit", 1, "samples_format", "png", "enable_pnginfo", 1, "sd_vae",
			      "Automatic", "CLIP_stop_at_last_layers", 1, "samples_save", 0);
	json_decref(titles);
	httpd_reply_json(req, 200, o);
	return 0;
}

/* POST /sdapi/v1/options: A1111 answers 200 null. sd_model_checkpoint
 * becomes the caller's default checkpoint (prefs.h), on every balancer of
 * the database and kept across a restart (options.c): a later façade
 * txt2img that names none is routed as if it named it. The other keys are
 * accepted and go nowhere: a provider's settings are its own. A checkpoint
 * no live backend offers gets 422 naming the field (A1111: "model ... not
 * found"). */
static int on_set_options(struct httpd *h, h2o_req_t *req, const char *rest)
{
	struct balancer *b = bal(h);
	json_t *o = json_loadb(req->entity.base, req->entity.len, 0, NULL);
	if (!json_is_object(o)) {
		reply_not_object(req, o);
		json_decref(o);
		return 0;
	}
	json_t *ck = json_object_get(o, "sd_model_checkpoint");
	const char *name = json_string_value(ck);
	if (ck && !json_is_null(ck) && (!name || json_string_length(ck) > A1111_MAX_NAME)) {
		httpd_reply_json(req, 422,
				 a1111_error_422("sd_model_checkpoint", "string_type",
						 "Input should be a valid string of at most 256 bytes", NULL));
	} else if (name && !offered_title(b, name)) {
		char msg[A1111_MAX_NAME + 32];
		snprintf(msg, sizeof msg, "model '%s' not found", name);
		httpd_reply_json(req, 422, a1111_error_422("sd_model_checkpoint", "checkpoint_not_found", msg, NULL));
	} else {
		char client[64];
		bal_client_of(b, req, client, sizeof client);
		if (name && options_set_checkpoint(b, client, name) != 0)
			httpd_reply_detail(req, 500, "Out of memory");
		else
			httpd_reply_json(req, 200, json_null());
	}
	json_decref(o);
	return 0;
}

/* POST /sdapi/v1/png-info {"image": base64}: the PNG's text chunks, read
 * here (pnginfo.h); no backend is involved. */
static int on_png_info(struct httpd *h, h2o_req_t *req, const char *rest)
{
	json_t *o = json_loadb(req->entity.base, req->entity.len, 0, NULL);
	json_t *image = json_object_get(o, "image");
	const char *why = NULL;
	json_t *res = json_is_string(image) ? pnginfo_json(json_string_value(image), json_string_length(image), &why)
					    : NULL;
	if (res)
		httpd_reply_json(req, 200, res);
	else if (!json_is_object(o))
		reply_not_object(req, o);
	else if (!image)
		httpd_reply_json(req, 422, a1111_error_422("image", "missing", "Field required", NULL));
	else
		httpd_reply_json(
			req, 422,
			a1111_error_422("image", "value_error", why ? why : "Input should be a valid string", NULL));
	json_decref(o);
	return 0;
}

static int on_ping(struct httpd *h, h2o_req_t *req, const char *rest)
{
	httpd_reply_json(req, 200, json_object());
	return 0;
}

/* clang-format off: one route a line */
const struct httpd_route API_A1111_ROUTES[] = {
	{"POST", "/sdapi/v1/txt2img", on_txt2img},
	{"POST", "/sdapi/v1/img2img", on_img2img},
	{"GET", "/sdapi/v1/progress", on_progress},
	{"POST", "/sdapi/v1/interrupt", on_interrupt},
	{"POST", "/sdapi/v1/skip", on_skip},
	{"GET", "/sdapi/v1/samplers", listings_get},
	{"GET", "/sdapi/v1/schedulers", listings_get},
	{"GET", "/sdapi/v1/sd-models", listings_get},
	{"GET", "/sdapi/v1/sd-vae", listings_get},
	{"GET", "/sdapi/v1/upscalers", listings_get},
	{"GET", "/sdapi/v1/latent-upscale-modes", listings_get},
	{"GET", "/sdapi/v1/loras", listings_get},
	{"GET", "/sdapi/v1/embeddings", listings_get},
	{"GET", "/sdapi/v1/scripts", listings_get},
	{"GET", "/sdapi/v1/prompt-styles", listings_get},
	{"GET", "/sdapi/v1/face-restorers", listings_get},
	{"GET", "/sdapi/v1/options", on_options},
	{"POST", "/sdapi/v1/options", on_set_options},
	{"POST", "/sdapi/v1/png-info", on_png_info},
	{"GET", "/internal/ping", on_ping},
};
/* clang-format on */
const size_t API_A1111_N = sizeof API_A1111_ROUTES / sizeof API_A1111_ROUTES[0];
