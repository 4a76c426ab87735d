/* lane.c — see lane.h. */
#include "lane.h"

#include "log.h"

#include <pthread.h>
#include <stdlib.h>

struct lane {
	struct httpd *h;
	const char *name;
	pthread_t thread;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct lane_task *head, *tail;
	int queued;
	int stopping;
	int drain;               /* run what is queued before stopping */
	struct lane_batch batch; /* max 1 and no hooks: one task at a time */
};

static void on_loop(struct httpd *h, struct httpd_msg *msg)
{
	struct lane_task *t = (struct lane_task *)msg;
	t->done(h, t);
}

static void *lane_main(void *arg)
{
	struct lane *l = arg;
	pthread_mutex_lock(&l->mu);
	for (;;) {
		while (!l->head && !l->stopping)
			pthread_cond_wait(&l->cv, &l->mu);
		if (l->stopping && (!l->drain || !l->head))
			break;
		struct lane_task *first = l->head, *last = first;
		int n = 1;
		while (n < l->batch.max && last->next) {
			last = last->next;
			n++;
		}
		l->head = last->next;
		if (!l->head)
			l->tail = NULL;
		last->next = NULL;
		l->queued -= n;
		pthread_mutex_unlock(&l->mu);
		if (l->batch.begin)
			l->batch.begin(l->batch.ctx);
		for (struct lane_task *t = first; t; t = t->next)
			t->run(t);
		if (l->batch.end)
			l->batch.end(l->batch.ctx, first);
		for (struct lane_task *t = first, *next; t; t = next) {
			next = t->next; /* the loop thread owns t once posted */
			t->msg.fn = on_loop;
			httpd_post(l->h, &t->msg);
		}
		pthread_mutex_lock(&l->mu);
	}
	pthread_mutex_unlock(&l->mu);
	return NULL;
}

struct lane *lane_new(struct httpd *h, const char *name)
{
	struct lane_batch one = {NULL, NULL, NULL, 1};
	return lane_new_batched(h, name, &one);
}

struct lane *lane_new_batched(struct httpd *h, const char *name, const struct lane_batch *batch)
{
	struct lane *l = calloc(1, sizeof *l);
	if (!l)
		return NULL;
	l->h = h;
	l->name = name;
	l->batch = *batch;
	if (l->batch.max < 1)
		l->batch.max = 1;
	pthread_mutex_init(&l->mu, NULL);
	pthread_cond_init(&l->cv, NULL);
	if (pthread_create(&l->thread, NULL, lane_main, l) != 0) {
		log_error("lane %s: cannot start its thread", name);
		free(l);
		return NULL;
	}
	return l;
}

void lane_submit(struct lane *l, struct lane_task *t)
{
	t->next = NULL;
	t->cancelled = 0;
	pthread_mutex_lock(&l->mu);
	if (l->tail)
		l->tail->next = t;
	else
		l->head = t;
	l->tail = t;
	l->queued++;
	pthread_cond_signal(&l->cv);
	pthread_mutex_unlock(&l->mu);
}

int lane_queued(struct lane *l)
{
	pthread_mutex_lock(&l->mu);
	int n = l->queued;
	pthread_mutex_unlock(&l->mu);
	return n;
}

static void lane_stop(struct lane *l, int drain)
{
	if (!l)
		return;
	pthread_mutex_lock(&l->mu);
	l->stopping = 1;
	l->drain = drain;
	pthread_cond_signal(&l->cv);
	pthread_mutex_unlock(&l->mu);
	pthread_join(l->thread, NULL);
	struct lane_task *t = l->head; /* what was not run (none when draining) */
	l->head = l->tail = NULL;
	while (t) {
		struct lane_task *next = t->next;
		t->cancelled = 1;
		t->done(l->h, t);
		t = next;
	}
	pthread_mutex_destroy(&l->mu);
	pthread_cond_destroy(&l->cv);
	free(l);
}

void lane_free(struct lane *l) { lane_stop(l, 0); }

void lane_drain_and_free(struct lane *l) { lane_stop(l, 1); }
