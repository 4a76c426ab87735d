/* api.c — the A1111 endpoints and sdgate's /sdgate/v1/info, on the loop
 * thread. Paths, methods and JSON shapes follow A1111's modules/api (see
 * docs/architecture.md "What a backend answers"). Nothing here blocks: generation goes to the jobs
 * lane, upstream calls to the control lane. */
#include "backend.h"

#include "error.h"
#include "log.h"
#include "register.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sysinfo.h>

static struct backend *backend_of(struct httpd *h) { return httpd_user(h); }

static int reply_json(h2o_req_t *req, json_t *j)
{
	httpd_reply_json(req, 200, j);
	return 0;
}

/* A registered backend runs jobs, shows progress and previews, stops jobs
 * and changes options only for the balancer it registered with (in both
 * modes: in upstream mode these reach the provider's A1111). Else answers
 * 401 in FastAPI's shape and returns 0. */
static int from_balancer(struct backend *b, h2o_req_t *req)
{
	h2o_iovec_t auth = httpd_header(req, "authorization");
	if (registration_allows(b->reg, auth.base, auth.len))
		return 1;
	httpd_reply_detail(req, 401, "Not authenticated: this backend takes jobs only from its balancer");
	return 0;
}

/* In upstream mode the provider's own server is the authority on its lists. */
static int forward_if_upstream(struct backend *b, h2o_req_t *req)
{
	if (!b->upstream_url)
		return 0;
	const char *path = h2o_strdup(&req->pool, req->path.base, req->path.len).base;
	int is_post = httpd_method_is(req, "POST");
	upstream_forward(b, req, is_post ? "POST" : "GET", path, is_post ? req->entity.base : NULL,
			 is_post ? req->entity.len : 0);
	return 1;
}

/* txt2img and img2img: parsed here, run on the jobs lane (job.c). */
static int submit(struct httpd *h, h2o_req_t *req, enum a1111_kind kind)
{
	struct backend *b = backend_of(h);
	struct txt2img t;
	int status;
	if (!from_balancer(b, req))
		return 0;
	json_t *reply;
	enum txt2img_result rc = (kind == A1111_IMG2IMG ? img2img_parse : txt2img_parse)(
		req->entity.base, req->entity.len, atomic_load(&b->default_model),
		b->upstream_url ? 0 : TXT2IMG_CHECK_ALL, &t, &status, &reply);
	if (rc != TXT2IMG_OK) {
		httpd_reply_json(req, status, reply);
		return 0;
	}
	job_submit(b, req, &t);
	return 0;
}

static int on_txt2img(struct httpd *h, h2o_req_t *req, const char *rest) { return submit(h, req, A1111_TXT2IMG); }

static int on_img2img(struct httpd *h, h2o_req_t *req, const char *rest) { return submit(h, req, A1111_IMG2IMG); }

static int on_progress(struct httpd *h, h2o_req_t *req, const char *rest)
{
	struct backend *b = backend_of(h);
	if (!from_balancer(b, req) || forward_if_upstream(b, req))
		return 0;
	char skip[8] = "";
	httpd_query_param(req, "skip_current_image", skip, sizeof skip);
	int skip_image = !strcmp(skip, "true") || !strcmp(skip, "True") || !strcmp(skip, "1");

	struct progress *p = &b->progress;
	pthread_mutex_lock(&p->mu);
	double progress = 0, eta = 0;
	if (p->active && p->job_count > 0 && p->sampling_steps > 0) {
		progress = (p->job_no + (double)p->sampling_step / p->sampling_steps) / p->job_count;
		if (progress > 1)
			progress = 1;
		double elapsed = backend_now() - p->started;
		if (progress > 0.01)
			eta = elapsed / progress - elapsed;
	}
	struct a1111_progress v = {progress,          eta,
				   p->active,         p->job_count,
				   p->job_no,         p->sampling_step,
				   p->sampling_steps, p->job_timestamp,
				   p->interrupted,    p->skipped};
	json_t *image = !skip_image && p->active && p->preview_b64 ? json_string(p->preview_b64) : json_null();
	pthread_mutex_unlock(&p->mu);
	return reply_json(req, a1111_progress_json(&v, image));
}

static int stop_job(struct httpd *h, h2o_req_t *req, int skip)
{
	struct backend *b = backend_of(h);
	if (!from_balancer(b, req) || forward_if_upstream(b, req))
		return 0;
	pthread_mutex_lock(&b->progress.mu);
	if (b->progress.active) {
		atomic_store(skip ? &b->skip : &b->interrupt, 1);
		if (skip)
			b->progress.skipped = 1;
		else
			b->progress.interrupted = 1;
		log_info("%s requested", skip ? "skip" : "interrupt");
	}
	pthread_mutex_unlock(&b->progress.mu);
	return reply_json(req, json_object());
}

static int on_interrupt(struct httpd *h, h2o_req_t *req, const char *rest) { return stop_job(h, req, 0); }

static int on_skip(struct httpd *h, h2o_req_t *req, const char *rest) { return stop_job(h, req, 1); }

static int on_samplers(struct httpd *h, h2o_req_t *req, const char *rest)
{
	if (forward_if_upstream(backend_of(h), req))
		return 0;
	return reply_json(req, a1111_samplers_json(&A1111_NATIVE));
}

static int on_schedulers(struct httpd *h, h2o_req_t *req, const char *rest)
{
	if (forward_if_upstream(backend_of(h), req))
		return 0;
	return reply_json(req, a1111_schedulers_json(&A1111_NATIVE));
}

/* The engine's checkpoints as A1111's /sdapi/v1/sd-models lists them. */
static json_t *sd_models_json(void)
{
	json_t *list = json_array();
	for (int i = 0; i < engine_model_count(); i++) {
		const struct engine_model_info *m = engine_model_get(i);
		json_array_append_new(list, json_pack("{s:s,s:s,s:s,s:s,s:s,s:n}", "title", m->title, "model_name",
						      m->model_name, "hash", m->hash, "sha256", m->sha256, "filename",
						      m->filename, "config"));
	}
	return list;
}

static int on_sd_models(struct httpd *h, h2o_req_t *req, const char *rest)
{
	if (forward_if_upstream(backend_of(h), req))
		return 0;
	return reply_json(req, sd_models_json());
}

static json_t *options_json(struct backend *b)
{
	const struct engine_model_info *m = engine_model_get(atomic_load(&b->default_model));
	return json_pack("{s:s,s:s,s:i,s:i,s:s,s:b,s:i,s:s,s:i,s:b}", "sd_model_checkpoint", m->title,
			 "sd_checkpoint_hash", m->sha256, "sd_checkpoints_limit", 1, "CLIP_stop_at_last_layers", 1,
			 "samples_format", "png", "enable_pnginfo", 1, "show_progress_every_n_steps", 1, "sd_vae",
			 "None", "eta_noise_seed_delta", 0, "sdgate_builtin_model", 1);
}

static int on_options_get(struct httpd *h, h2o_req_t *req, const char *rest)
{
	struct backend *b = backend_of(h);
	if (forward_if_upstream(b, req))
		return 0;
	return reply_json(req, options_json(b));
}

static int on_options_post(struct httpd *h, h2o_req_t *req, const char *rest)
{
	struct backend *b = backend_of(h);
	if (!from_balancer(b, req) || forward_if_upstream(b, req))
		return 0;
	json_error_t err;
	json_t *body = json_loadb(req->entity.base, req->entity.len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &err);
	json_t *errors = json_array();
	if (!json_is_object(body)) {
		sd_validation_add(errors, NULL, body ? "model_attributes_type" : "json_invalid",
				  body ? "Input should be a valid dictionary or object to extract fields from"
				       : "JSON decode error",
				  NULL);
	} else {
		json_t *ckpt = json_object_get(body, "sd_model_checkpoint");
		if (ckpt && !json_is_null(ckpt)) {
			int m = json_is_string(ckpt) ? engine_model_find(json_string_value(ckpt)) : -1;
			if (m < 0)
				sd_validation_add(errors, "sd_model_checkpoint", "checkpoint_not_found",
						  "Checkpoint not found; see GET /sdapi/v1/sd-models", ckpt);
			else
				atomic_store(&b->default_model, m);
		}
		/* Other A1111 options are accepted and have no effect here, as an
		 * option A1111 does not know has none there. */
	}
	json_decref(body);
	if (json_array_size(errors)) {
		httpd_reply_json(req, 422, json_pack("{s:o}", "detail", errors));
		return 0;
	}
	json_decref(errors);
	return reply_json(req, json_null());
}

static int on_empty_list(struct httpd *h, h2o_req_t *req, const char *rest)
{
	if (forward_if_upstream(backend_of(h), req))
		return 0;
	return reply_json(req, json_array());
}

static int on_sd_vae(struct httpd *h, h2o_req_t *req, const char *rest)
{
	if (forward_if_upstream(backend_of(h), req))
		return 0;
	/* The built-in model decodes with its own fixed decoder: no VAE files. */
	return reply_json(req, json_array());
}

static int on_upscalers(struct httpd *h, h2o_req_t *req, const char *rest)
{
	if (forward_if_upstream(backend_of(h), req))
		return 0;
	return reply_json(req, json_pack("[{s:s,s:n,s:n,s:n,s:n}]", "name", "None", "model_name", "model_path",
					 "model_url", "scale"));
}

static int on_scripts(struct httpd *h, h2o_req_t *req, const char *rest)
{
	if (forward_if_upstream(backend_of(h), req))
		return 0;
	return reply_json(req, json_pack("{s:[],s:[]}", "txt2img", "img2img"));
}

static int on_embeddings(struct httpd *h, h2o_req_t *req, const char *rest)
{
	if (forward_if_upstream(backend_of(h), req))
		return 0;
	return reply_json(req, json_pack("{s:{},s:{}}", "loaded", "skipped"));
}

static int on_memory(struct httpd *h, h2o_req_t *req, const char *rest)
{
	struct backend *b = backend_of(h);
	if (forward_if_upstream(b, req))
		return 0;
	struct sysinfo si;
	sysinfo(&si);
	double unit = (double)si.mem_unit;
	double total = (double)si.totalram * unit, freeb = (double)si.freeram * unit;
	json_t *cuda = b->engine && engine_uses_gpu(b->engine)
			       ? json_pack("{s:s}", "device", engine_device_name(b->engine))
			       : json_pack("{s:s}", "error", "no CUDA device in use");
	return reply_json(req, json_pack("{s:{s:f,s:f,s:f},s:o}", "ram", "free", freeb, "used", total - freeb, "total",
					 total, "cuda", cuda));
}

static int on_cmd_flags(struct httpd *h, h2o_req_t *req, const char *rest)
{
	struct backend *b = backend_of(h);
	if (forward_if_upstream(b, req))
		return 0;
	return reply_json(req, json_pack("{s:b,s:b,s:n,s:s}", "api", 1, "nowebui", 1, "ckpt", "sdgate_engine",
					 b->upstream_url ? "upstream" : "native"));
}

static int on_ping(struct httpd *h, h2o_req_t *req, const char *rest) { return reply_json(req, json_object()); }

static json_t *names_json(const char *const *names)
{
	json_t *list = json_array();
	for (; *names; names++)
		json_array_append_new(list, json_string(*names));
	return list;
}

/* What the native engine can run (balancer/caps.h reads it; the façade's
 * listings are their union): its samplers and schedulers, its checkpoints
 * (none usable as a refiner), the "None" upscaler, the largest side and
 * step count, and its features (img2img, hires fix). In upstream mode
 * there is no declaration: the balancer reads the A1111's own listings
 * through this backend (forwarded), as it reads a plain A1111's. */
static json_t *capabilities_json(void)
{
	return json_pack("{s:o,s:o,s:o,s:[{s:s}],s:[],s:i,s:i,s:{s:b,s:b,s:b}}", "samplers",
			 names_json(A1111_NATIVE_SAMPLERS), "schedulers", names_json(A1111_NATIVE_SCHEDULERS),
			 "sd-models", sd_models_json(), "upscalers", "name", "None", "refiners", "max_size",
			 A1111_MAX_SIZE, "max_steps", A1111_MAX_STEPS, "features", "img2img", 1, "hires_fix", 1, "img2img_webp", 0);
}

static int on_info(struct httpd *h, h2o_req_t *req, const char *rest)
{
	struct backend *b = backend_of(h);
	json_t *info = identity_json(&b->id);
	json_t *models = json_array();
	if (!b->upstream_url)
		for (int i = 0; i < engine_model_count(); i++)
			json_array_append_new(models, json_string(engine_model_get(i)->title));
	json_object_set_new(info, "engine", json_string(b->id.engine));
	json_object_set_new(info, "device", json_string(b->engine ? engine_device_name(b->engine) : "upstream"));
	json_object_set_new(info, "models", models);
	json_object_set_new(info, "slots", json_integer(1));
	json_object_set_new(info, "version", json_string(SDGATE_VERSION));
	json_object_set_new(info, "backend", json_string(b->id.url));
	json_object_set_new(info, "jobs_done", json_integer(atomic_load(&b->jobs_done)));
	json_object_set_new(info, "queued", json_integer(lane_queued(b->jobs)));
	if (b->upstream_url)
		json_object_set_new(info, "upstream", json_string(b->upstream_url));
	else
		json_object_set_new(info, "capabilities", capabilities_json());
	return reply_json(req, info);
}

const struct httpd_route API_ROUTES[] = {
	{"POST", "/sdapi/v1/txt2img", on_txt2img},
	{"POST", "/sdapi/v1/img2img", on_img2img},
	{"GET", "/sdapi/v1/progress", on_progress},
	{"POST", "/sdapi/v1/interrupt", on_interrupt},
	{"POST", "/sdapi/v1/skip", on_skip},
	{"GET", "/sdapi/v1/options", on_options_get},
	{"POST", "/sdapi/v1/options", on_options_post},
	{"GET", "/sdapi/v1/samplers", on_samplers},
	{"GET", "/sdapi/v1/schedulers", on_schedulers},
	{"GET", "/sdapi/v1/sd-models", on_sd_models},
	{"GET", "/sdapi/v1/sd-vae", on_sd_vae},
	{"GET", "/sdapi/v1/loras", on_empty_list},
	{"GET", "/sdapi/v1/hypernetworks", on_empty_list},
	{"GET", "/sdapi/v1/upscalers", on_upscalers},
	{"GET", "/sdapi/v1/embeddings", on_embeddings},
	{"GET", "/sdapi/v1/latent-upscale-modes", on_empty_list},
	{"GET", "/sdapi/v1/scripts", on_scripts},
	{"GET", "/sdapi/v1/prompt-styles", on_empty_list},
	{"GET", "/sdapi/v1/face-restorers", on_empty_list},
	{"GET", "/sdapi/v1/memory", on_memory},
	{"GET", "/sdapi/v1/cmd-flags", on_cmd_flags},
	{"GET", "/internal/ping", on_ping},
	{"GET", "/sdgate/v1/info", on_info},
};
const size_t API_N_ROUTES = sizeof API_ROUTES / sizeof API_ROUTES[0];
const char *const API_LARGE_BODIES[] = {"/sdapi/v1/img2img", NULL};
