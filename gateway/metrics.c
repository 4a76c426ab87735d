/* metrics.c — the gateway's counters (C11 atomics: the service thread and
 * the balancer client's thread both count) and their Prometheus text for
 * GET /metrics. */
#include "gateway.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

static atomic_long counters[GW_C_COUNT];
static atomic_long connections;

void metrics_inc(enum gw_counter c) { atomic_fetch_add(&counters[c], 1); }

void metrics_connections_add(long delta) { atomic_fetch_add(&connections, delta); }

long metrics_connections(void) { return atomic_load(&connections); }

struct buf {
	char *p;
	size_t len, cap;
};

static void put(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(struct buf *b, const char *fmt, ...)
{
	for (;;) {
		va_list ap;
		va_start(ap, fmt);
		int n = b->p ? vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap) : -1;
		va_end(ap);
		if (n >= 0 && (size_t)n < b->cap - b->len) {
			b->len += (size_t)n;
			return;
		}
		size_t cap = b->cap ? b->cap * 2 : 4096;
		char *p = realloc(b->p, cap);
		if (!p)
			return;
		b->p = p;
		b->cap = cap;
	}
}

static long get(enum gw_counter c) { return atomic_load(&counters[c]); }

char *metrics_render(const struct gw_config *cfg, const int *balancer_up, size_t *len)
{
	struct buf b = {0};
	put(&b,
	    "# HELP sdgate_gateway_connections Open websocket connections.\n"
	    "# TYPE sdgate_gateway_connections gauge\nsdgate_gateway_connections %ld\n",
	    metrics_connections());
	put(&b,
	    "# HELP sdgate_gateway_connections_total Websocket connections accepted.\n"
	    "# TYPE sdgate_gateway_connections_total counter\nsdgate_gateway_connections_total %ld\n",
	    get(GW_C_CONNECTIONS_TOTAL));
	put(&b,
	    "# HELP sdgate_gateway_connections_refused_total Websocket upgrades refused (origin, connection limits, "
	    "path).\n"
	    "# TYPE sdgate_gateway_connections_refused_total counter\nsdgate_gateway_connections_refused_total %ld\n",
	    get(GW_C_CONNECTIONS_REFUSED));
	put(&b,
	    "# HELP sdgate_gateway_origin_refused_total Websocket upgrades refused for their Origin (403).\n"
	    "# TYPE sdgate_gateway_origin_refused_total counter\nsdgate_gateway_origin_refused_total %ld\n",
	    get(GW_C_ORIGIN_REFUSED));
	put(&b,
	    "# HELP sdgate_gateway_messages_total Websocket messages received.\n"
	    "# TYPE sdgate_gateway_messages_total counter\nsdgate_gateway_messages_total %ld\n",
	    get(GW_C_MESSAGES));
	put(&b,
	    "# HELP sdgate_gateway_invalid_messages_total Messages answered with a validation error.\n"
	    "# TYPE sdgate_gateway_invalid_messages_total counter\nsdgate_gateway_invalid_messages_total %ld\n",
	    get(GW_C_INVALID));
	put(&b,
	    "# HELP sdgate_gateway_rate_limited_total Jobs refused by the per-address work limit.\n"
	    "# TYPE sdgate_gateway_rate_limited_total counter\nsdgate_gateway_rate_limited_total %ld\n",
	    get(GW_C_RATE_LIMITED));
	put(&b,
	    "# HELP sdgate_gateway_jobs_submitted_total Jobs sent to a balancer.\n"
	    "# TYPE sdgate_gateway_jobs_submitted_total counter\nsdgate_gateway_jobs_submitted_total %ld\n",
	    get(GW_C_JOBS_SUBMITTED));
	put(&b,
	    "# HELP sdgate_gateway_jobs_accepted_total Jobs a balancer accepted (202).\n"
	    "# TYPE sdgate_gateway_jobs_accepted_total counter\nsdgate_gateway_jobs_accepted_total %ld\n",
	    get(GW_C_JOBS_ACCEPTED));
	put(&b,
	    "# HELP sdgate_gateway_jobs_total Finished jobs by outcome.\n# TYPE sdgate_gateway_jobs_total counter\n"
	    "sdgate_gateway_jobs_total{outcome=\"done\"} %ld\nsdgate_gateway_jobs_total{outcome=\"failed\"} %ld\n"
	    "sdgate_gateway_jobs_total{outcome=\"cancelled\"} %ld\n",
	    get(GW_C_JOBS_DONE), get(GW_C_JOBS_FAILED), get(GW_C_JOBS_CANCELLED));
	put(&b,
	    "# HELP sdgate_gateway_balancer_failovers_total Calls moved to the next balancer.\n"
	    "# TYPE sdgate_gateway_balancer_failovers_total counter\nsdgate_gateway_balancer_failovers_total %ld\n",
	    get(GW_C_FAILOVERS));
	put(&b,
	    "# HELP sdgate_gateway_slow_clients_total Connections closed because they did not read their messages.\n"
	    "# TYPE sdgate_gateway_slow_clients_total counter\nsdgate_gateway_slow_clients_total %ld\n",
	    get(GW_C_SLOW_CLIENTS));
	put(&b, "# HELP sdgate_gateway_balancer_up Whether the last call to this balancer (its place in --balancer, "
		"from 1) got an answer.\n"
		"# TYPE sdgate_gateway_balancer_up gauge\n");
	for (size_t i = 0; i < cfg->n_balancers; i++)
		put(&b, "sdgate_gateway_balancer_up{balancer=\"%zu\"} %d\n", i + 1, balancer_up[i]);
	if (len)
		*len = b.len;
	return b.p;
}
