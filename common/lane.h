/* lane.h — one worker thread with a FIFO of tasks, whose results come back
 * to the h2o loop thread. The backend has two: "jobs" (one generation at a
 * time, as A1111 serves one job per GPU) and "control" (upstream progress and
 * interrupt calls, which must not wait behind a job); the balancer's SQLite
 * store has one, so that no file I/O runs on the loop.
 *
 * A task's run() executes on the lane's thread; then done() on the loop
 * thread, which owns the task from then on (it usually replies and frees it).
 * Tasks are FIFO. lane_free() lets the running task finish (callers interrupt
 * it first), drops queued tasks through their done() with cancelled = 1, and
 * joins the thread.
 *
 * A batched lane (lane_new_batched) takes whatever is queued when its thread
 * looks (up to a maximum) and runs it between the batch's begin() and end()
 * on its thread; the done() messages of a batch are posted after its end().
 * The store runs each batch in one SQLite transaction. */
#ifndef SDGATE_LANE_H
#define SDGATE_LANE_H

#include "httpd.h"

struct lane_task {
	struct httpd_msg msg; /* first: posted back to the loop */
	void (*run)(struct lane_task *t);
	void (*done)(struct httpd *h, struct lane_task *t);
	int cancelled; /* set when the lane stopped before run() */
	struct lane_task *next;
};

struct lane;

struct lane *lane_new(struct httpd *h, const char *name);

struct lane_batch {
	void (*begin)(void *ctx);
	void (*end)(void *ctx, struct lane_task *tasks); /* the batch, in order, linked by next */
	void *ctx;
	int max; /* tasks a batch at most (1 and more) */
};
/* batch is copied. */
struct lane *lane_new_batched(struct httpd *h, const char *name, const struct lane_batch *batch);
/* Any thread. */
void lane_submit(struct lane *l, struct lane_task *t);
/* Number of tasks waiting (not counting the running one). */
int lane_queued(struct lane *l);
void lane_free(struct lane *l);
/* Runs every queued task, then stops like lane_free. Their done() messages
 * are delivered by the loop's next turn. */
void lane_drain_and_free(struct lane *l);

#endif
