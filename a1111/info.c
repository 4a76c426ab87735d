/* info.c — what A1111 answers around a request: the infotext, the "info"
 * object, the ProgressResponse and FastAPI's error shapes. Pure; thread-safe. */
#include "a1111.h"

#include "error.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

static const char *sampler_label(const struct a1111_request *r) { return A1111_SAMPLERS[r->sampler].name; }
static const char *schedule_label(const struct a1111_request *r) { return A1111_SCHEDULERS[r->scheduler].label; }

double a1111_denoising_strength(const struct a1111_request *r)
{
	if (r->kind == A1111_IMG2IMG)
		return r->denoising_strength;
	if (!r->enable_hr)
		return NAN;
	return isnan(r->denoising_strength) ? A1111_HR_DEFAULT_STRENGTH : r->denoising_strength;
}

/* A1111's img2img and hires fix parts of the infotext: ", Denoising strength:
 * 0.5" and ", Hires upscale: 2, Hires steps: 4, Hires upscaler: Latent" (or
 * "Hires resize: 96x0"). */
static void second_pass_text(const struct a1111_request *r, char *buf, size_t len)
{
	double d = a1111_denoising_strength(r);
	size_t n = isnan(d) ? 0 : (size_t)snprintf(buf, len, ", Denoising strength: %g", d);
	if (!r->enable_hr || r->kind != A1111_TXT2IMG || n >= len)
		return;
	const json_t *p = r->parameters;
	long long rx = json_integer_value(json_object_get(p, "hr_resize_x"));
	long long ry = json_integer_value(json_object_get(p, "hr_resize_y"));
	long long steps = json_integer_value(json_object_get(p, "hr_second_pass_steps"));
	const char *up = json_string_value(json_object_get(p, "hr_upscaler"));
	if (rx || ry)
		n += (size_t)snprintf(buf + n, len - n, ", Hires resize: %lldx%lld", rx, ry);
	else
		n += (size_t)snprintf(buf + n, len - n, ", Hires upscale: %g",
				      json_number_value(json_object_get(p, "hr_scale")));
	if (steps && n < len)
		n += (size_t)snprintf(buf + n, len - n, ", Hires steps: %lld", steps);
	if (n < len)
		snprintf(buf + n, len - n, ", Hires upscaler: %s", up && *up ? up : "Latent");
}

char *a1111_infotext(const struct a1111_request *r, const struct a1111_models *m, int image)
{
	char *text = NULL;
	char neg[A1111_MAX_PROMPT + 32] = "";
	char refiner[2 * A1111_MAX_NAME + 64] = "";
	if (*r->negative_prompt)
		snprintf(neg, sizeof neg, "\nNegative prompt: %s", r->negative_prompt);
	char second[A1111_MAX_NAME + 160] = "";
	if (m->refiner_name)
		snprintf(refiner, sizeof refiner, ", Refiner: %s [%s], Refiner switch at: %g", m->refiner_name,
			 m->refiner_hash, r->refiner_switch_at);
	second_pass_text(r, second, sizeof second);
	int n = asprintf(&text,
			 "%s%s\nSteps: %d, Sampler: %s, Schedule type: %s, CFG scale: %g, Seed: %lld, "
			 "Size: %dx%d, Model hash: %s, Model: %s%s%s, Version: sdgate %s",
			 r->prompt, neg, r->steps, sampler_label(r), schedule_label(r), r->cfg_scale, r->seed + image,
			 r->width, r->height, m->hash, m->name, second, refiner, SDGATE_VERSION);
	return n < 0 ? NULL : text;
}

json_t *a1111_info(const struct a1111_request *r, const struct a1111_models *m, int count, const char *job_timestamp,
		   json_t *sdgate)
{
	json_t *all_prompts = json_array(), *all_neg = json_array(), *all_seeds = json_array(),
	       *all_subseeds = json_array(), *infotexts = json_array();
	int total = r->batch_size * r->n_iter;
	for (int i = 0; i < total; i++) {
		json_array_append_new(all_prompts, json_string(r->prompt));
		json_array_append_new(all_neg, json_string(r->negative_prompt));
		json_array_append_new(all_seeds, json_integer(r->seed + i));
		json_array_append_new(all_subseeds, json_integer(r->subseed + i));
	}
	for (int i = 0; i < count; i++) {
		char *it = a1111_infotext(r, m, i);
		json_array_append_new(infotexts, json_string(it ? it : ""));
		free(it);
	}
	json_t *info = json_pack(
		"{s:s,s:o,s:s,s:o,s:I,s:o,s:I,s:o,s:f,s:i,s:i,s:s,s:s,s:f,s:i,s:i,s:i,s:b,s:n,s:s,s:s,s:n,s:n}",
		"prompt", r->prompt, "all_prompts", all_prompts, "negative_prompt", r->negative_prompt,
		"all_negative_prompts", all_neg, "seed", (json_int_t)r->seed, "all_seeds", all_seeds, "subseed",
		(json_int_t)r->subseed, "all_subseeds", all_subseeds, "subseed_strength", r->subseed_strength, "width",
		r->width, "height", r->height, "sampler_name", sampler_label(r), "scheduler", schedule_label(r),
		"cfg_scale", r->cfg_scale, "steps", r->steps, "batch_size", r->batch_size, "n_iter", r->n_iter,
		"restore_faces", 0, "face_restoration_model", "sd_model_name", m->name, "sd_model_hash", m->hash,
		"sd_vae_name", "sd_vae_hash");
	json_object_set_new(info, "seed_resize_from_w", json_integer(-1));
	json_object_set_new(info, "seed_resize_from_h", json_integer(-1));
	double d = a1111_denoising_strength(r);
	json_object_set_new(info, "denoising_strength", isnan(d) ? json_null() : json_real(d));
	json_t *extra = json_object();
	if (m->refiner_name) {
		json_object_set_new(extra, "Refiner", json_string(m->refiner_name));
		json_object_set_new(extra, "Refiner switch at", json_real(r->refiner_switch_at));
	}
	json_object_set_new(info, "extra_generation_params", extra);
	json_object_set_new(info, "index_of_first_image", json_integer(0));
	json_object_set_new(info, "infotexts", infotexts);
	json_object_set_new(info, "styles", json_array());
	json_object_set_new(info, "job_timestamp", json_string(job_timestamp));
	json_object_set_new(info, "clip_skip", json_integer(1));
	json_object_set_new(info, "is_using_inpainting_conditioning", json_false());
	json_object_set_new(info, "version", json_string("sdgate " SDGATE_VERSION));
	if (sdgate)
		json_object_set_new(info, "sdgate", sdgate);
	return info;
}

json_t *a1111_progress_json(const struct a1111_progress *p, json_t *current_image)
{
	json_t *state = json_pack(
		"{s:b,s:b,s:b,s:s,s:i,s:s,s:i,s:i,s:i}", "skipped", p->skipped, "interrupted", p->interrupted,
		"stopping_generation", 0, "job", p->active ? "txt2img" : "", "job_count", p->active ? p->job_count : 0,
		"job_timestamp", p->job_timestamp ? p->job_timestamp : "0", "job_no", p->active ? p->job_no : 0,
		"sampling_step", p->active ? p->sampling_step : 0, "sampling_steps", p->active ? p->sampling_steps : 0);
	return json_pack("{s:f,s:f,s:o,s:o,s:n}", "progress", p->progress, "eta_relative", p->eta_relative, "state",
			 state, "current_image", current_image ? current_image : json_null(), "textinfo");
}

json_t *a1111_error_422(const char *field, const char *type, const char *msg, json_t *input)
{
	json_t *list = json_array();
	sd_validation_add(list, field, type, msg, input);
	return json_pack("{s:o}", "detail", list);
}

json_t *a1111_error_detail(const char *message) { return json_pack("{s:s}", "detail", message); }
