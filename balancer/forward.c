/* forward.c — see forward.h. An allow-list, not a deny-list: a field A1111
 * (or one of its extensions) adds tomorrow does not reach providers until it
 * is listed here. */
#include "forward.h"

#include <string.h>

/* A1111's txt2img generation fields (modules/api/models.py,
 * StableDiffusionTxt2ImgProcessingAPI) that make the image and nothing
 * else. Left out on purpose: save_images and do_not_save_* (the provider's
 * disk), force_task_id (A1111's progress bookkeeping), infotext (parsed into
 * settings), firstpass_image, comments, override_settings (rebuilt below),
 * scripts (only where allowed). */
static const char *const FIELDS[] = {
	"prompt",
	"negative_prompt",
	"seed",
	"subseed",
	"subseed_strength",
	"seed_resize_from_h",
	"seed_resize_from_w",
	"sampler_name",
	"sampler_index",
	"scheduler",
	"batch_size",
	"n_iter",
	"steps",
	"cfg_scale",
	"width",
	"height",
	"restore_faces",
	"tiling",
	"eta",
	"denoising_strength",
	"s_min_uncond",
	"s_churn",
	"s_tmax",
	"s_tmin",
	"s_noise",
	"refiner_checkpoint",
	"refiner_switch_at",
	"disable_extra_networks",
	"enable_hr",
	"firstphase_width",
	"firstphase_height",
	"hr_scale",
	"hr_upscaler",
	"hr_second_pass_steps",
	"hr_resize_x",
	"hr_resize_y",
	"hr_checkpoint_name",
	"hr_sampler_name",
	"hr_scheduler",
	"hr_prompt",
	"hr_negative_prompt",
};

/* img2img's (Img2ImgProcessingAPI) beside those; init_images below. Masks
 * are refused at intake (inpainting is not supported yet). */
static const char *const IMG2IMG_FIELDS[] = {"resize_mode", "image_cfg_scale", "initial_noise_multiplier"};

/* init_images as the request model checked them (at most
 * A1111_MAX_INIT_IMAGES base64 strings, each bounded): copied whole. */
static void copy_init_images(json_t *to, const json_t *from)
{
	json_t *v = json_object_get(from, "init_images");
	size_t i;
	json_t *s;
	if (!json_is_array(v) || json_array_size(v) == 0 || json_array_size(v) > FORWARD_MAX_INIT_IMAGES)
		return;
	json_array_foreach(v, i, s) if (!json_is_string(s)) return;
	json_object_set(to, "init_images", v);
}

/* The settings a job may change for itself. They are restored afterwards,
 * except a checkpoint asked for alone: the balancer routes jobs to the
 * backend that has a checkpoint loaded (dispatch.c keeps loaded_model), and
 * restoring it would make A1111 reload the old weights after every such
 * job. A checkpoint staying loaded changes nothing a later job asks for:
 * the balancer sends each job's checkpoint when it names one. */
static const char *const SETTINGS[] = {"sd_model_checkpoint", "sd_vae", "CLIP_stop_at_last_layers"};

/* What A1111 takes for a plain field: a string, number, boolean or null
 * (pydantic coerces numeric strings). Objects and arrays are not plain. */
static int plain(const json_t *v)
{
	if (json_is_string(v))
		return json_string_length(v) <= FORWARD_MAX_STRING &&
		       strlen(json_string_value(v)) == json_string_length(v);
	return json_is_number(v) || json_is_boolean(v) || json_is_null(v);
}

static json_t *styles(const json_t *v)
{
	if (!json_is_array(v) || json_array_size(v) > FORWARD_MAX_STYLES)
		return NULL;
	size_t i;
	json_t *s;
	json_array_foreach(v, i, s) if (!json_is_string(s) || !plain(s)) return NULL;
	return json_deep_copy(v);
}

/* Copies the listed keys of from whose values are plain into to. */
static void copy_plain(json_t *to, const json_t *from, const char *const *keys, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		json_t *v = json_object_get(from, keys[i]);
		if (v && plain(v))
			json_object_set_new(to, keys[i], json_deep_copy(v));
	}
}

static void copy_scripts(json_t *to, const json_t *from)
{
	json_t *name = json_object_get(from, "script_name");
	if (name && (json_is_string(name) || json_is_null(name)) && plain(name))
		json_object_set_new(to, "script_name", json_deep_copy(name));
	json_t *args = json_object_get(from, "script_args");
	if (json_is_array(args))
		json_object_set_new(to, "script_args", json_deep_copy(args));
	json_t *always = json_object_get(from, "alwayson_scripts");
	if (json_is_object(always))
		json_object_set_new(to, "alwayson_scripts", json_deep_copy(always));
}

json_t *forward_request(const json_t *request, int allow_scripts)
{
	json_t *out = json_object();
	if (!out)
		return NULL;
	copy_plain(out, request, FIELDS, sizeof FIELDS / sizeof FIELDS[0]);
	copy_plain(out, request, IMG2IMG_FIELDS, sizeof IMG2IMG_FIELDS / sizeof IMG2IMG_FIELDS[0]);
	copy_init_images(out, request);
	json_t *st = styles(json_object_get(request, "styles"));
	if (st)
		json_object_set_new(out, "styles", st);
	json_t *settings = json_object_get(request, "override_settings");
	int restore = 1;
	if (json_is_object(settings)) {
		json_t *kept = json_object();
		copy_plain(kept, settings, SETTINGS, sizeof SETTINGS / sizeof SETTINGS[0]);
		restore = !(json_object_size(kept) == 1 && json_object_get(kept, "sd_model_checkpoint"));
		if (json_object_size(kept))
			json_object_set_new(out, "override_settings", kept);
		else
			json_decref(kept);
	}
	json_object_set_new(out, "override_settings_restore_afterwards", json_boolean(restore));
	json_object_set_new(out, "save_images", json_false());
	json_object_set_new(out, "send_images", json_true());
	if (allow_scripts)
		copy_scripts(out, request);
	return out;
}
