/* listings.c — the façade's A1111 listings (GET /sdapi/v1/samplers,
 * /schedulers, /sd-models, /sd-vae, /upscalers, /latent-upscale-modes,
 * /loras, /embeddings, /scripts, /prompt-styles, /face-restorers): the union
 * over the live backends of what each can run (caps.h), in A1111's shapes,
 * first seen first. A backend that is down or still probing adds nothing;
 * with none live, every listing is empty. docs/a1111-facade.md,
 * "Listings". Loop thread. */
#include "balancer.h"

#include "a1111.h"

#include <string.h>

/* The caps of the live backends (at most max). */
static size_t live_caps(struct balancer *b, const struct caps **out, size_t max)
{
	size_t n = 0;
	for (const struct bk *k = b->backends; k && n < max; k = k->next)
		if (k->state == BK_UP && k->caps.known == 3)
			out[n++] = &k->caps;
	return n;
}

/* A checkpoint a backend was given by name only (a --backend fragment's
 * "models", a registration's): A1111's entry with what is known. */
static void add_bare_titles(struct balancer *b, json_t *list)
{
	json_t *seen = json_object();
	size_t i;
	json_t *m;
	json_array_foreach(list, i, m)
		json_object_set(seen, json_string_value(json_object_get(m, "title")), json_true());
	for (struct bk *k = b->backends; k && json_array_size(list) < CAPS_MAX_UNION_ITEMS; k = k->next) {
		if (k->state != BK_UP)
			continue;
		json_array_foreach(k->titles, i, m)
		{
			const char *title = json_string_value(m);
			if (json_object_get(seen, title) || json_array_size(list) >= CAPS_MAX_UNION_ITEMS)
				continue;
			json_object_set_new(seen, title, json_true());
			const char *br = strstr(title, " [");
			json_t *name = br ? json_stringn(title, (size_t)(br - title)) : json_string(title);
			json_array_append_new(list, json_pack("{s:O,s:o,s:n,s:n,s:s,s:n}", "title", m, "model_name",
							      name, "hash", "sha256", "filename", "", "config"));
		}
	}
	json_decref(seen);
}

/* /samplers or /schedulers: A1111's entries of the names some live backend runs. */
static json_t *names_union(const struct caps *const *cs, size_t n, int schedulers)
{
	unsigned mask = 0;
	for (size_t i = 0; i < n; i++)
		mask |= schedulers ? cs[i]->schedulers : cs[i]->samplers;
	const char *names[A1111_SAMPLER_COUNT > A1111_SCHEDULER_COUNT ? A1111_SAMPLER_COUNT + 1
								      : A1111_SCHEDULER_COUNT + 1];
	if (schedulers) {
		caps_scheduler_names(mask, names);
		return a1111_schedulers_json(&(struct a1111_runnable){NULL, names, NULL, 0});
	}
	caps_sampler_names(mask, names);
	return a1111_samplers_json(&(struct a1111_runnable){names, NULL, NULL, 0});
}

int listings_get(struct httpd *h, h2o_req_t *req, const char *rest)
{
	struct balancer *b = httpd_user(h);
	const char *path = h2o_strdup(&req->pool, req->path_normalized.base, req->path_normalized.len).base;
	const struct caps *cs[BAL_MAX_BACKENDS];
	size_t n = live_caps(b, cs, BAL_MAX_BACKENDS);
	json_t *answer = NULL;
	if (!strcmp(path, "/sdapi/v1/samplers") || !strcmp(path, "/sdapi/v1/schedulers"))
		answer = names_union(cs, n, !strcmp(path, "/sdapi/v1/schedulers"));
	for (int l = 0; !answer && l < CAPS_N_LISTS; l++)
		if (!strcmp(path, caps_path((enum caps_list)l))) {
			answer = caps_union(cs, n, (enum caps_list)l);
			if (l == CAPS_SD_MODELS)
				add_bare_titles(b, answer);
		}
	if (!answer) {
		httpd_reply_detail(req, 404, "Not Found");
		return 0;
	}
	httpd_reply_json(req, 200, answer);
	return 0;
}
