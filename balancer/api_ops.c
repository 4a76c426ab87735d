/* api_ops.c — GET /healthz and GET /metrics (Prometheus text format 0.0.4;
 * the queue depth is what KEDA scales backends on). Loop thread. */
#include "balancer.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct balancer *bal(struct httpd *h) { return httpd_user(h); }

static void count_states(struct balancer *b, int *idle, int *busy, int *down)
{
	*idle = *busy = *down = 0;
	for (struct bk *k = b->backends; k; k = k->next) {
		const char *s = registry_state_name(k);
		(*(!strcmp(s, "idle") ? idle : !strcmp(s, "busy") ? busy : down))++;
	}
}

static int on_healthz(struct httpd *h, h2o_req_t *req, const char *rest)
{
	struct balancer *b = bal(h);
	int idle, busy, down;
	count_states(b, &idle, &busy, &down);
	httpd_reply_json(req, 200,
			 json_pack("{s:s,s:i,s:i,s:{s:i,s:i,s:i}}", "status", "ok", "queue", b->queued, "running",
				   b->running, "backends", "idle", idle, "busy", busy, "down", down));
	return 0;
}

struct text {
	char *buf;
	size_t len;
	FILE *f;
};

static void add(struct text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void add(struct text *t, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vfprintf(t->f, fmt, ap);
	va_end(ap);
}

static void metric(struct text *t, const char *name, const char *type, const char *help)
{
	add(t, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* Label values are GPU class names the balancer itself validated or took
 * from a backend; quotes and backslashes are escaped all the same. */
static void add_label_value(struct text *t, const char *v)
{
	for (; *v; v++) {
		if (*v == '"' || *v == '\\')
			add(t, "\\%c", *v);
		else if (*v == '\n')
			add(t, "\\n");
		else
			add(t, "%c", *v);
	}
}

static int on_metrics(struct httpd *h, h2o_req_t *req, const char *rest)
{
	struct balancer *b = bal(h);
	struct text t = {0};
	t.f = open_memstream(&t.buf, &t.len);
	if (!t.f) {
		bal_reply_error(req, SDE_INTERNAL, "Out of memory", NULL);
		return 0;
	}
	metric(&t, "sdgate_queue_depth", "gauge", "Jobs waiting in the balancer's queue.");
	add(&t, "sdgate_queue_depth %d\n", b->queued);
	metric(&t, "sdgate_jobs_running", "gauge", "Jobs running on backends.");
	add(&t, "sdgate_jobs_running %d\n", b->running);
	metric(&t, "sdgate_jobs_accepted_total", "counter",
	       "Valid jobs taken in (including those failed at once for want of a backend).");
	add(&t, "sdgate_jobs_accepted_total %ld\n", b->m.accepted);
	metric(&t, "sdgate_jobs_total", "counter", "Finished jobs by outcome.");
	add(&t, "sdgate_jobs_total{outcome=\"done\"} %ld\n", b->m.done);
	add(&t, "sdgate_jobs_total{outcome=\"failed\"} %ld\n", b->m.failed);
	add(&t, "sdgate_jobs_total{outcome=\"cancelled\"} %ld\n", b->m.cancelled);
	metric(&t, "sdgate_job_retries_total", "counter", "Dispatches repeated after a backend failed.");
	add(&t, "sdgate_job_retries_total %ld\n", b->m.retries);
	metric(&t, "sdgate_backend_failures_total", "counter", "Calls to backends that failed (passive checks).");
	add(&t, "sdgate_backend_failures_total %ld\n", b->m.backend_failures);
	int idle, busy, down;
	count_states(b, &idle, &busy, &down);
	metric(&t, "sdgate_backends", "gauge", "Backends by state.");
	add(&t,
	    "sdgate_backends{state=\"idle\"} %d\nsdgate_backends{state=\"busy\"} %d\nsdgate_backends{state=\"down\"} "
	    "%d\n",
	    idle, busy, down);
	metric(&t, "sdgate_inference_seconds", "summary", "Inference time of finished jobs by GPU class.");
	const char *cls;
	json_t *e;
	json_object_foreach(b->m.inference_by_class, cls, e)
	{
		add(&t, "sdgate_inference_seconds_sum{gpu_class=\"");
		add_label_value(&t, cls);
		add(&t, "\"} %.6f\nsdgate_inference_seconds_count{gpu_class=\"", json_real_value(json_array_get(e, 0)));
		add_label_value(&t, cls);
		add(&t, "\"} %lld\n", (long long)json_integer_value(json_array_get(e, 1)));
	}
	metric(&t, "sdgate_dispatch_latency_seconds", "summary", "Time from acceptance to first dispatch.");
	add(&t, "sdgate_dispatch_latency_seconds_sum %.6f\nsdgate_dispatch_latency_seconds_count %ld\n",
	    b->m.dispatch_latency_sum, b->m.dispatch_latency_count);
	metric(&t, "sdgate_results_bytes", "gauge", "Bytes of finished jobs' images kept (in the store).");
	add(&t, "sdgate_results_bytes %lld\n", store_results_bytes(b->store));
	metric(&t, "sdgate_results_evicted_total", "counter",
	       "Results whose images were dropped to stay within --result-max-bytes(-per-client).");
	add(&t, "sdgate_results_evicted_total %lld\n", store_results_evicted(b->store));
	metric(&t, "sdgate_http_connections", "gauge", "Open HTTP connections to the balancer.");
	add(&t, "sdgate_http_connections %d\n", httpd_connections(h));
	metric(&t, "sdgate_http_max_connections", "gauge", "The cap on open HTTP connections (past it new ones wait).");
	add(&t, "sdgate_http_max_connections %d\n", httpd_max_connections(h));
	fclose(t.f);
	httpd_reply_owned(req, 200, "text/plain; version=0.0.4", t.buf, t.len);
	return 0;
}

const struct httpd_route API_OPS_ROUTES[] = {
	{"GET", "/healthz", on_healthz},
	{"GET", "/metrics", on_metrics},
};
const size_t API_OPS_N = sizeof API_OPS_ROUTES / sizeof API_OPS_ROUTES[0];
