/* backend.h — the state of one sdgate-backend process, shared by its modules:
 * the HTTP API (api.c, loop thread), the job runner (job.c, "jobs" lane), the
 * upstream adapter (upstream.c) and main.c.
 *
 * Thread rules: identity, engine and upstream_url are set in main() before
 * the loop starts and read-only afterwards. progress is guarded by its mutex.
 * interrupt/skip/default_model are atomics any thread may touch. */
#ifndef SDGATE_BACKEND_H
#define SDGATE_BACKEND_H

#include "engine.h"
#include "httpd.h"
#include "identity.h"
#include "lane.h"
#include "txt2img.h"

#include <pthread.h>
#include <stdatomic.h>

#define BACKEND_UPSTREAM_MAX_ANSWER (256u << 20) /* a batch of large PNGs in base64 */
#define BACKEND_CONTROL_TIMEOUT_MS 10000

/* What /sdapi/v1/progress reports (A1111's shared.state). */
struct progress {
	pthread_mutex_t mu;
	int active;
	int job_no, job_count; /* image index and images in this job */
	int sampling_step, sampling_steps;
	int interrupted, skipped;
	char job_timestamp[16]; /* YYYYmmddHHMMSS, as A1111 */
	double started;         /* monotonic seconds */
	char *preview_b64;      /* latest preview PNG, or NULL (owned) */
};

struct backend {
	struct identity id;
	struct engine *engine;    /* NULL in upstream mode */
	const char *upstream_url; /* NULL in native mode */
	struct httpd *httpd;
	struct lane *jobs;    /* one generation at a time */
	struct lane *control; /* upstream progress/interrupt/lists */
	struct progress progress;
	atomic_int interrupt, skip;
	atomic_int default_model; /* index of the checkpoint in /options */
	atomic_int jobs_done;
	/* --balancer: our registration; its backend_token guards txt2img,
	 * progress, interrupt, skip and POST options (api.c). Set before the
	 * loop starts. NULL: no --balancer, those routes are open. */
	struct registration *reg;
};

/* Seconds on the monotonic clock. */
double backend_now(void);
/* YYYYmmddHHMMSS (UTC), as A1111's job_timestamp. */
void backend_timestamp(char out[16]);

/* job.c: accepts a validated request (ownership of t moves to the job) and
 * answers req when the image is ready. Loop thread. */
void job_submit(struct backend *b, h2o_req_t *req, struct txt2img *t);

/* info.sdgate: {"provider", "location", "gpu" (class), "gpu_name", "backend",
 * "inference_time"}. New reference. */
json_t *job_sdgate_info(const struct backend *b, double inference_s);

/* upstream.c: forwards a call to the upstream server on the control lane and
 * relays its answer (JSON 502 when it fails). body may be NULL. Loop thread. */
void upstream_forward(struct backend *b, h2o_req_t *req, const char *method, const char *path, const char *body,
		      size_t body_len);
/* Runs a txt2img on the upstream server (jobs lane thread); returns the
 * response body to send (malloc'd) and sets *status. */
char *upstream_txt2img(struct backend *b, struct txt2img *t, double *inference_s, int *status, size_t *len);

/* api.c: the route table. */
extern const struct httpd_route API_ROUTES[];
extern const size_t API_N_ROUTES;
/* The routes whose bodies may be up to A1111_MAX_IMG2IMG_BODY (NULL-terminated). */
extern const char *const API_LARGE_BODIES[];

#endif
