/* remote.c — a request for a job this balancer does not hold, when it
 * shares its database with other balancers (store.h, cluster.c): the job
 * may be another balancer's, or have been taken over, or have finished
 * there. The job's row is read from the store:
 *
 *   - a finished job is taken in (jobs_adopt: kept to be read, never run)
 *     and the request served as if it had always been here: its document,
 *     its images (in the shared store), its final event;
 *   - an unfinished job that another live balancer runs: GET answers its
 *     last saved state (what that balancer last wrote: queued or running,
 *     no live position or progress); its event stream waits, re-reading the
 *     row every second, until the job finished (its final event) or came
 *     here (taken over: the stream goes on from here, Last-Event-ID
 *     honoured); a DELETE answers 503 running_elsewhere (a cancel does not
 *     cross balancers yet);
 *   - no such row: 404, as for a job never seen.
 *
 * The request may end while the store reads: its state lives apart and the
 * request's pool holds a guard (httpd_alloc_guarded). Loop thread. */
#include "balancer.h"

#include "log.h"

#include <stdlib.h>
#include <string.h>

#define REMOTE_RECHECK_S 1.0

enum remote_kind { R_VIEW, R_EVENTS, R_IMAGE, R_DELETE };

struct remote {
	struct balancer *b;
	h2o_req_t *req; /* NULL once the request ended */
	struct remote_guard *guard;
	enum remote_kind kind;
	char id[BAL_ID_LEN + 1];
	char tail[64]; /* what follows the id in the path: "", "/events", "/images/N" */
	int reading;   /* a store read in flight */
	int in_wait;   /* on the waiting list */
	double next;   /* R_EVENTS waiting: the next read */
	struct remote *next_waiting;
};

struct remote_guard {
	struct remote *r;
};

static struct remote *waiting; /* event streams waiting for their job */

static void guard_dispose(void *p)
{
	struct remote_guard *g = p;
	if (g->r)
		g->r->req = NULL;
}

static void unwait(struct remote *r)
{
	if (!r->in_wait)
		return;
	r->in_wait = 0;
	for (struct remote **pp = &waiting; *pp; pp = &(*pp)->next_waiting)
		if (*pp == r) {
			*pp = r->next_waiting;
			return;
		}
}

static void done(struct remote *r)
{
	if (r->req)
		r->guard->r = NULL;
	unwait(r);
	free(r);
}

/* The request served by a job held here now. */
static void serve(struct remote *r, struct job *j) { api_jobs_serve(r->b, r->req, j, r->tail); }

static void read_row(struct remote *r);

static void on_row(void *user, int rc, json_t *rows)
{
	(void)rc;
	struct remote *r = user;
	r->reading = 0;
	if (!r->req) {
		done(r);
		return;
	}
	struct balancer *b = r->b;
	json_t *row = json_array_get(rows, 0);
	json_t *doc = json_object_get(row, "doc");
	int flags = (int)json_integer_value(json_object_get(row, "flags"));
	struct job *j = jobs_find(b, r->id); /* taken over meanwhile */
	struct job *seen = j || !doc ? NULL : jobs_from_doc(doc, flags & STORE_JOB_IMAGES);
	if (!j && seen && jobs_is_final(seen)) {
		jobs_adopt(b, doc, flags & STORE_JOB_IMAGES);
		j = jobs_find(b, r->id);
	}
	if (j) {
		serve(r, j);
	} else if (!rows) {
		bal_reply_error(r->req, SDE_STORAGE_FAILED, "The job could not be read from the store", NULL);
	} else if (!seen) {
		bal_reply_error(r->req, SDE_NOT_FOUND, "No such job (unknown, or expired)", NULL);
	} else if (r->kind == R_VIEW) {
		httpd_reply_json(r->req, 200, jobs_view(b, seen));
	} else if (r->kind == R_IMAGE) {
		results_serve(b, r->req, seen, r->tail + 8); /* unfinished: not ready */
	} else if (r->kind == R_DELETE) {
		bal_reply_error(r->req, SDE_RUNNING_ELSEWHERE,
				"The job runs on another balancer sharing this database; cancelling across "
				"balancers is not supported yet: try again later, or where it was submitted",
				NULL);
	} else { /* R_EVENTS: wait until it finished or came here */
		if (seen)
			jobs_free_unlinked(seen);
		r->next = bal_now() + REMOTE_RECHECK_S;
		if (!r->in_wait) {
			r->in_wait = 1;
			r->next_waiting = waiting;
			waiting = r;
		}
		return;
	}
	if (seen)
		jobs_free_unlinked(seen);
	done(r);
}

static void read_row(struct remote *r)
{
	r->reading = 1;
	store_find_job(r->b->store, r->id, r->b->cfg.lease_s, on_row, r);
}

int remote_job_request(struct balancer *b, h2o_req_t *req, const char *id, const char *tail)
{
	if (!store_shared(b->store))
		return 0;
	struct remote *r = calloc(1, sizeof *r);
	if (!r) {
		bal_reply_error(req, SDE_INTERNAL, "Out of memory", NULL);
		return 1;
	}
	if (strlen(tail) >= sizeof r->tail) { /* no image index is that long */
		free(r);
		bal_reply_error(req, SDE_NOT_FOUND, "No such image", NULL);
		return 1;
	}
	r->b = b;
	r->req = req;
	snprintf(r->id, sizeof r->id, "%s", id);
	snprintf(r->tail, sizeof r->tail, "%s", tail);
	if (httpd_method_is(req, "DELETE"))
		r->kind = R_DELETE;
	else if (!strcmp(tail, "/events"))
		r->kind = R_EVENTS;
	else if (!strncmp(tail, "/images/", 8))
		r->kind = R_IMAGE;
	else
		r->kind = R_VIEW;
	r->guard = httpd_alloc_guarded(req, sizeof *r->guard, guard_dispose);
	r->guard->r = r;
	read_row(r);
	return 1;
}

void remote_tick(struct balancer *b, double now)
{
	struct remote *r = waiting, *next;
	for (; r; r = next) {
		next = r->next_waiting;
		if (!r->req) {
			if (!r->reading)
				done(r);
			continue;
		}
		if (r->reading || now < r->next)
			continue;
		struct job *j = jobs_find(b, r->id);
		if (j) {
			unwait(r);
			serve(r, j);
			done(r);
		} else {
			read_row(r);
		}
	}
}

void remote_free_all(void)
{
	while (waiting) {
		struct remote *r = waiting;
		waiting = r->next_waiting;
		r->in_wait = 0;
		if (r->req)
			r->guard->r = NULL;
		r->req = NULL;
		if (!r->reading)
			free(r); /* else freed by its read's answer */
	}
}
