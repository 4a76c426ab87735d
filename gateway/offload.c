/* offload.c — validates the large websocket messages (past --max-message:
 * a generate with an init_image, up to --max-image-message) on a thread of
 * its own. Parsing 11 MB of JSON twice (the message, then the A1111 model's
 * img2img check) takes about 0.6 s on one core, which the lws service
 * thread must not spend: every other connection would wait.
 *
 * The service thread hands over a message (its buffer) and a copy of the
 * GPU classes it would have judged with; the thread runs validate_message
 * (a pure function) and queues the result, then wakes the service thread
 * (the wake callback, lws_cancel_service), which takes the results in
 * order. Messages are handled one at a time, in the order given; the
 * memory waiting here is bounded by the caller (ws.c counts the buffers
 * against --max-large-rx-bytes until their result is taken).
 *
 * Threads: offload_submit / offload_take / offload_stop on the service
 * thread; the worker only inside this file; they meet under one mutex. */
#include "gateway.h"

#include "error.h"

#include <pthread.h>
#include <stdlib.h>

struct task {
	struct task *next;
	uint64_t conn;
	char *buf;
	size_t len, held;
	json_t *known_gpus; /* a copy, or NULL */
};

struct offload {
	const struct gw_config *cfg;
	void (*wake)(void *user);
	void *user;
	pthread_t thread;
	pthread_mutex_t mu; /* guards everything below */
	pthread_cond_t cv;
	struct task *head, **tail;
	struct offload_result *done, **done_tail;
	int stopping;
};

static void task_free(struct task *t)
{
	free(t->buf);
	json_decref(t->known_gpus);
	free(t);
}

static void *run(void *arg)
{
	struct offload *o = arg;
	pthread_mutex_lock(&o->mu);
	for (;;) {
		while (!o->head && !o->stopping)
			pthread_cond_wait(&o->cv, &o->mu);
		if (o->stopping)
			break;
		struct task *t = o->head;
		o->head = t->next;
		if (!o->head)
			o->tail = &o->head;
		pthread_mutex_unlock(&o->mu);

		struct offload_result *r = calloc(1, sizeof *r);
		if (r) {
			r->conn = t->conn;
			r->held = t->held;
			r->rc = validate_message(t->buf, t->len, o->cfg, t->known_gpus, &r->req, &r->err);
		}
		size_t held = t->held;
		uint64_t conn = t->conn;
		task_free(t);

		pthread_mutex_lock(&o->mu);
		if (!r) { /* out of memory: the message is lost, its bytes are given back */
			r = calloc(1, sizeof *r);
			if (!r)
				continue; /* nothing to report with; ws.c's count stays high */
			r->conn = conn;
			r->held = held;
			r->rc = -1;
			validate_error_set(&r->err, NULL, sd_error_code(SDE_INTERNAL), NULL, "out of memory");
		}
		*o->done_tail = r;
		o->done_tail = &r->next;
		o->wake(o->user);
	}
	pthread_mutex_unlock(&o->mu);
	return NULL;
}

struct offload *offload_start(const struct gw_config *cfg, void (*wake)(void *user), void *user)
{
	struct offload *o = calloc(1, sizeof *o);
	if (!o)
		return NULL;
	o->cfg = cfg;
	o->wake = wake;
	o->user = user;
	o->tail = &o->head;
	o->done_tail = &o->done;
	pthread_mutex_init(&o->mu, NULL);
	pthread_cond_init(&o->cv, NULL);
	if (pthread_create(&o->thread, NULL, run, o) != 0) {
		pthread_mutex_destroy(&o->mu);
		pthread_cond_destroy(&o->cv);
		free(o);
		return NULL;
	}
	return o;
}

int offload_submit(struct offload *o, uint64_t conn, char *buf, size_t len, size_t held, const json_t *known_gpus)
{
	struct task *t = calloc(1, sizeof *t);
	if (!t) {
		free(buf);
		return -1;
	}
	t->conn = conn;
	t->buf = buf;
	t->len = len;
	t->held = held;
	t->known_gpus = known_gpus ? json_deep_copy(known_gpus) : NULL;
	pthread_mutex_lock(&o->mu);
	*o->tail = t;
	o->tail = &t->next;
	pthread_cond_signal(&o->cv);
	pthread_mutex_unlock(&o->mu);
	return 0;
}

struct offload_result *offload_take(struct offload *o)
{
	pthread_mutex_lock(&o->mu);
	struct offload_result *r = o->done;
	o->done = NULL;
	o->done_tail = &o->done;
	pthread_mutex_unlock(&o->mu);
	return r;
}

void offload_result_free(struct offload_result *r)
{
	validate_request_free(&r->req);
	free(r);
}

void offload_stop(struct offload *o)
{
	if (!o)
		return;
	pthread_mutex_lock(&o->mu);
	o->stopping = 1;
	pthread_cond_signal(&o->cv);
	pthread_mutex_unlock(&o->mu);
	pthread_join(o->thread, NULL);
	while (o->head) {
		struct task *t = o->head;
		o->head = t->next;
		task_free(t);
	}
	for (struct offload_result *r = offload_take(o), *next; r; r = next) {
		next = r->next;
		offload_result_free(r);
	}
	pthread_mutex_destroy(&o->mu);
	pthread_cond_destroy(&o->cv);
	free(o);
}
