/* remote.c — a request for a job this balancer does not hold, when it
 * shares its database with other balancers (store.h, cluster.c): the job
 * may be another balancer's, or have been taken over, or have finished
 * there. The job's row is read from the store:
 *
 *   - a finished job is taken in (jobs_adopt: kept to be read, never run)
 *     and the request served as if it had always been here: its document,
 *     its images (in the shared store), its final event;
 *   - an unfinished job that another balancer runs is live here: this
 *     balancer keeps a copy of the job (a
 *     shadow: jobs_from_doc, marked `shadow`) whose events are the owner's,
 *     ids included. It asks the owner for them with a "watch" notice
 *     (notices.c), renewed while anyone reads, and the owner answers with
 *     the events it keeps (a "history") and then each new one. Streams are
 *     served from the shadow as from a job of this balancer's, Last-Event-ID
 *     included, once the history came; until then they wait. A GET answers
 *     the shadow's view (its queue position and progress follow the events),
 *     after waiting up to REMOTE_VIEW_WAIT_S for a new shadow's history (then
 *     the row's: what that balancer last wrote). A shadow nobody asked for
 *     in REMOTE_IDLE_S ends (so a client that polls keeps one). The shadow
 *     also re-reads the row (every REMOTE_RECHECK_S, at once on the final
 *     event's notice): when the job finished, or came here (taken over),
 *     the job is here and the streams go on from it (sse_move_all);
 *   - a DELETE of such a job sends the owner a "cancel" notice and waits
 *     for the row to say the job ended (REMOTE_CANCEL_WAIT_S at most): it
 *     answers as a DELETE where the job runs (200 cancelled, or 409
 *     already_finished when it ended first); an owner that does not act
 *     in time (it died: its jobs are taken over within the lease) is 503
 *     running_elsewhere;
 *   - no such row: 404, as for a job never seen;
 *   - a façade request whose Idempotency-Key names such a job (waiter.c)
 *     waits on the job's shadow too (remote_when_here): the shadow's
 *     re-reads find the job here once it finished (taken in) or was taken
 *     over by this balancer, and shadow_end hands it the job.
 *
 * The request may end while the store reads or the shadow waits: its state
 * lives apart and the request's pool holds a guard (httpd_alloc_guarded).
 * Loop thread. */
#include "balancer.h"

#include "log.h"

#include <stdlib.h>
#include <string.h>

#define REMOTE_RECHECK_S 1.0     /* a shadow re-reads its row this often */
#define REMOTE_WATCH_EVERY_S 4.0 /* and asks its owner to go on publishing (notices.c's watch lasts 15 s) */
#define REMOTE_CANCEL_WAIT_S 5.0 /* a cross-balancer DELETE waits this long for the owner to cancel */
#define REMOTE_VIEW_WAIT_S 1.0   /* a GET waits this long for the owner's events, then answers the row */
#define REMOTE_IDLE_S 5.0        /* a shadow nobody read for this long ends (a client polling GET keeps it) */
#define REMOTE_MAX_SHADOWS 1024  /* past this, requests are answered from the row */

enum remote_kind { R_VIEW, R_EVENTS, R_IMAGE, R_DELETE, R_HERE };

struct shadow;

struct remote {
	struct balancer *b;
	h2o_req_t *req; /* NULL once the request ended */
	struct remote_guard *guard;
	enum remote_kind kind;
	char id[BAL_ID_LEN + 1];
	char tail[64];   /* what follows the id in the path: "", "/events", "/images/N" */
	int reading;     /* a store read in flight */
	double deadline; /* R_DELETE waiting on a shadow */
	struct shadow *on;
	struct remote *next_waiting;
	remote_here_fn here; /* R_HERE: called with the job once it is here */
	void *here_user;
};

struct remote_guard {
	struct remote *r;
};

/* A copy of another balancer's unfinished job, for the requests that
 * wait on it (event streams until its history came, DELETEs until it
 * ended) and the streams it serves (job->subs). */
struct shadow {
	struct balancer *b;
	struct job *job;
	int has_history;
	int reading;          /* its row is being read */
	int freeing;          /* freed once that read answers */
	double asked;         /* the last watch (bal_now) */
	double used;          /* the last request for it */
	double next_read;     /* the next read of its row */
	struct remote *waiting;
	struct shadow *next;
};

static struct shadow *shadows;
static int n_shadows;
static struct remote *waiting; /* event streams waiting for their job without a shadow */

static void guard_dispose(void *p)
{
	struct remote_guard *g = p;
	if (g->r)
		g->r->req = NULL;
}

static void list_remove(struct remote **head, struct remote *r)
{
	for (struct remote **pp = head; *pp; pp = &(*pp)->next_waiting)
		if (*pp == r) {
			*pp = r->next_waiting;
			return;
		}
}

static void done(struct remote *r)
{
	if (r->req)
		r->guard->r = NULL;
	free(r);
}

/* The request served by a job held here now. */
static void serve(struct remote *r, struct job *j) { api_jobs_serve(r->b, r->req, j, r->tail); }

/* A DELETE that waited for its job to end elsewhere. */
static void answer_cancel(struct remote *r, struct job *j)
{
	if (!j)
		bal_reply_error(r->req, SDE_RUNNING_ELSEWHERE,
				"The job runs on another balancer sharing this database, which did not cancel it in "
				"time (it may have stopped: its jobs are taken over within the lease); try again",
				NULL);
	else if (j->status == JOB_CANCELLED)
		httpd_reply_json(r->req, 200, json_pack("{s:s,s:s}", "id", j->id, "status", "cancelled"));
	else if (jobs_is_final(j))
		bal_reply_error(r->req, SDE_ALREADY_FINISHED, "The job has already finished", NULL);
	else
		serve(r, j); /* here and unfinished: cancelled here */
}

/* A stream or a GET served from the shadow; the request is done. */
static void answer_now(struct remote *r, struct shadow *sh)
{
	if (r->req && r->kind == R_EVENTS)
		sse_open(r->b, r->req, sh->job);
	else if (r->req)
		httpd_reply_json(r->req, 200, jobs_view(r->b, sh->job));
	done(r);
}

static void watch(struct shadow *sh)
{
	sh->asked = bal_now();
	notices_send(sh->b, "watch", json_pack("{s:s}", "job", sh->job->id));
}

static struct shadow *shadow_find(const char *id)
{
	for (struct shadow *sh = shadows; sh; sh = sh->next)
		if (!sh->freeing && !strcmp(sh->job->id, id))
			return sh;
	return NULL;
}

/* Takes `seen` (an unlinked job from its row). NULL past the cap. */
static struct shadow *shadow_new(struct balancer *b, struct job *seen)
{
	struct shadow *sh = n_shadows < REMOTE_MAX_SHADOWS ? calloc(1, sizeof *sh) : NULL;
	if (!sh)
		return NULL;
	sh->b = b;
	sh->job = seen;
	seen->shadow = 1;
	/* Its events are the owner's, with the owner's ids: none until the
	 * history comes. */
	events_clear(&seen->events);
	seen->events.last_id = seen->events.replay_from = 0;
	sh->next_read = bal_now() + REMOTE_RECHECK_S;
	sh->next = shadows;
	shadows = sh;
	n_shadows++;
	watch(sh);
	return sh;
}

/* Ends the shadow: its job is here now (j: finished or taken over), or
 * gone (NULL). Its streams and waiting requests go on from j. */
static void shadow_end(struct shadow *sh, struct job *j)
{
	struct balancer *b = sh->b;
	if (j)
		sse_move_all(b, sh->job, j);
	else
		sse_close_all(sh->job);
	for (struct remote *r = sh->waiting, *next; r; r = next) {
		next = r->next_waiting;
		r->on = NULL;
		if (!r->req)
			;
		else if (r->kind == R_HERE)
			r->here(b, r->req, j, r->here_user);
		else if (!j)
			bal_reply_error(r->req, SDE_NOT_FOUND, "No such job (unknown, or expired)", NULL);
		else if (r->kind == R_DELETE)
			answer_cancel(r, j);
		else
			serve(r, j);
		done(r);
	}
	sh->waiting = NULL;
	if (sh->reading) {
		sh->freeing = 1; /* its read's answer frees it */
		return;
	}
	for (struct shadow **pp = &shadows; *pp; pp = &(*pp)->next)
		if (*pp == sh) {
			*pp = sh->next;
			break;
		}
	n_shadows--;
	jobs_free_unlinked(sh->job);
	free(sh);
}

static void free_shadow_late(struct shadow *sh)
{
	sh->reading = 0;
	shadow_end(sh, NULL);
}

/* Streams that waited for the history are served from the shadow now. */
static void open_waiting(struct shadow *sh)
{
	for (struct remote **pp = &sh->waiting; *pp;) {
		struct remote *r = *pp;
		if (r->kind == R_DELETE || r->kind == R_HERE) { /* these wait for the job's end or arrival */
			pp = &r->next_waiting;
			continue;
		}
		*pp = r->next_waiting;
		answer_now(r, sh);
	}
}

/* The shadow's row, read again. */
static void on_shadow_row(void *user, int rc, json_t *rows)
{
	(void)rc;
	struct shadow *sh = user;
	struct balancer *b = sh->b;
	sh->reading = 0;
	if (sh->freeing) {
		free_shadow_late(sh);
		return;
	}
	sh->next_read = bal_now() + REMOTE_RECHECK_S;
	if (!rows)
		return; /* the store failed: read again later */
	json_t *row = json_array_get(rows, 0);
	json_t *doc = json_object_get(row, "doc");
	int flags = (int)json_integer_value(json_object_get(row, "flags"));
	struct job *j = jobs_find(b, sh->job->id);
	if (!j && !doc) {
		shadow_end(sh, NULL);
		return;
	}
	if (!j) {
		struct job *seen = jobs_from_doc(doc, flags & STORE_JOB_IMAGES);
		if (seen && jobs_is_final(seen)) {
			jobs_adopt(b, doc, flags & STORE_JOB_IMAGES);
			j = jobs_find(b, sh->job->id);
		}
		if (seen)
			jobs_free_unlinked(seen);
	}
	if (j) {
		shadow_end(sh, j);
		return;
	}
	if (!sh->has_history && bal_now() - sh->asked >= REMOTE_RECHECK_S)
		watch(sh); /* its owner may be a new one (taken over) */
}

static void read_shadow_row(struct shadow *sh)
{
	sh->reading = 1;
	store_find_job(sh->b->store, sh->job->id, sh->b->cfg.lease_s, on_shadow_row, sh);
}

/* The request waits on the job's shadow (created from `seen`, which it
 * takes); 0 when there is none and can be none. */
static int wait_on_shadow(struct remote *r, struct job *seen)
{
	struct shadow *sh = shadow_find(r->id);
	if (sh)
		jobs_free_unlinked(seen);
	else if (!(sh = shadow_new(r->b, seen)))
		return 0;
	sh->used = bal_now();
	if (sh->has_history && (r->kind == R_EVENTS || r->kind == R_VIEW)) {
		answer_now(r, sh);
		return 1;
	}
	if (r->kind == R_VIEW)
		r->deadline = bal_now() + REMOTE_VIEW_WAIT_S;
	if (r->kind == R_DELETE) { /* the shadow reads its row every REMOTE_RECHECK_S until it ended */
		notices_send(r->b, "cancel", json_pack("{s:s}", "job", r->id));
		r->deadline = bal_now() + REMOTE_CANCEL_WAIT_S;
	}
	r->on = sh;
	r->next_waiting = sh->waiting;
	sh->waiting = r;
	return 1;
}

static void read_row(struct remote *r);

static void on_row(void *user, int rc, json_t *rows)
{
	(void)rc;
	struct remote *r = user;
	r->reading = 0;
	list_remove(&waiting, r); /* back on it below if it waits again */
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
	} else if (r->kind == R_IMAGE) {
		results_serve(b, r->req, seen, r->tail + 8); /* unfinished: not ready */
	} else if (r->kind == R_VIEW && !(flags & STORE_JOB_OWNER_ALIVE) && !shadow_find(r->id)) {
		httpd_reply_json(r->req, 200, jobs_view(b, seen)); /* nobody to ask: what was saved */
	} else if (wait_on_shadow(r, seen)) {
		return; /* seen is the shadow's now */
	} else if (r->kind == R_VIEW) {
		httpd_reply_json(r->req, 200, jobs_view(b, seen));
	} else if (r->kind == R_DELETE) {
		answer_cancel(r, NULL);
	} else { /* R_EVENTS, no shadow to be had: read again until it finished or came here */
		jobs_free_unlinked(seen);
		r->deadline = bal_now() + REMOTE_RECHECK_S;
		r->next_waiting = waiting;
		waiting = r;
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

int remote_when_here(struct balancer *b, h2o_req_t *req, struct job *seen, remote_here_fn fn, void *user)
{
	struct remote *r = calloc(1, sizeof *r);
	if (!r) {
		jobs_free_unlinked(seen);
		return 0;
	}
	r->b = b;
	r->req = req;
	r->kind = R_HERE;
	r->here = fn;
	r->here_user = user;
	snprintf(r->id, sizeof r->id, "%s", seen->id);
	r->guard = httpd_alloc_guarded(req, sizeof *r->guard, guard_dispose);
	r->guard->r = r;
	if (wait_on_shadow(r, seen))
		return 1;
	jobs_free_unlinked(seen); /* past REMOTE_MAX_SHADOWS */
	done(r);
	return 0;
}

/* A shadow's turn: requests that ended or timed out, its watch renewed
 * while it has readers, its row re-read; a shadow nobody reads ends. */
static void shadow_tick(struct shadow *sh, double now)
{
	for (struct remote **pp = &sh->waiting; *pp;) {
		struct remote *r = *pp;
		int timed_out = r->kind != R_EVENTS && r->kind != R_HERE && now >= r->deadline;
		if (r->req && !timed_out) {
			pp = &r->next_waiting;
			continue;
		}
		*pp = r->next_waiting;
		if (r->req && r->kind == R_VIEW) /* no history: the row's view */
			answer_now(r, sh);
		else if (r->req)
			answer_cancel(r, NULL), done(r);
		else
			done(r);
	}
	if (!sh->waiting && !sh->job->subs && now - sh->used >= REMOTE_IDLE_S) {
		shadow_end(sh, NULL);
		return;
	}
	sse_keepalive(sh->job);
	if (sh->has_history && now - sh->asked >= REMOTE_WATCH_EVERY_S)
		watch(sh);
	if (!sh->reading && now >= sh->next_read)
		read_shadow_row(sh);
}

void remote_tick(struct balancer *b, double now)
{
	for (struct remote *r = waiting, *next; r; r = next) {
		next = r->next_waiting;
		if (r->reading)
			continue;
		if (!r->req) {
			list_remove(&waiting, r);
			done(r);
			continue;
		}
		if (now < r->deadline)
			continue;
		struct job *j = jobs_find(b, r->id);
		if (j) {
			list_remove(&waiting, r);
			serve(r, j);
			done(r);
		} else {
			read_row(r);
		}
	}
	for (struct shadow *sh = shadows, *next; sh; sh = next) {
		next = sh->next;
		if (!sh->freeing)
			shadow_tick(sh, now);
	}
}

/* An event of a shadow's job as its owner numbered it. */
static void copy_event(struct shadow *sh, json_t *e)
{
	const char *name = events_name(json_string_value(json_object_get(e, "name")));
	json_t *id = json_object_get(e, "id");
	int state = (int)json_integer_value(json_object_get(e, "state"));
	json_t *data = json_object_get(e, "data");
	if (!name || !json_is_integer(id) || !json_is_object(data))
		return;
	if (state == NOTICE_FINAL) { /* its row says so now: read it, and go on from the job taken in */
		sh->next_read = 0;
		return;
	}
	jobs_emit_copy(sh->job, json_integer_value(id), name, json_incref(data), state == NOTICE_STATE);
}

static void on_history(struct shadow *sh, json_t *n)
{
	json_t *events = json_object_get(n, "events");
	json_t *last = json_object_get(n, "last_id"), *from = json_object_get(n, "replay_from");
	if (!json_is_array(events) || !json_is_integer(last) || !json_is_integer(from))
		return;
	struct job_events *h = &sh->job->events;
	if (!sh->has_history || json_integer_value(last) < h->last_id) {
		/* The first, or a new owner's (its ids started again from its
		 * clock: a taken-over job's are above the old owner's, so this
		 * is the rare case of ids that went back). */
		events_clear(h);
		h->last_id = h->replay_from = json_integer_value(from);
	}
	size_t i;
	json_t *e;
	json_array_foreach(events, i, e) copy_event(sh, e);
	if (json_integer_value(last) > h->last_id && json_integer_value(last) <= BAL_EVENTS_MAX_ID)
		h->last_id = json_integer_value(last);
	if (!sh->has_history) {
		sh->has_history = 1;
		open_waiting(sh);
	}
}

void remote_on_notice(struct balancer *b, const char *kind, json_t *n)
{
	(void)b;
	if (!kind) { /* notices were missed: ask every owner again, read every row */
		for (struct shadow *sh = shadows; sh; sh = sh->next) {
			sh->next_read = 0;
			if (!sh->freeing)
				watch(sh);
		}
		return;
	}
	const char *id = json_string_value(json_object_get(n, "job"));
	struct shadow *sh = id ? shadow_find(id) : NULL;
	if (!sh)
		return;
	if (!strcmp(kind, "history"))
		on_history(sh, n);
	else if (sh->has_history)
		copy_event(sh, n);
}

void remote_free_all(void)
{
	for (struct remote *r = waiting, *next; r; r = next) {
		next = r->next_waiting;
		if (r->req)
			r->guard->r = NULL;
		r->req = NULL;
		if (!r->reading) {
			list_remove(&waiting, r);
			free(r);
		} /* else freed by its read's answer */
	}
	for (struct shadow *sh = shadows, *next; sh; sh = next) {
		next = sh->next;
		for (struct remote *r = sh->waiting; r; r = r->next_waiting)
			if (r->req) /* not answered: its connection is being closed */
				r->guard->r = NULL, r->req = NULL;
		if (!sh->freeing)
			shadow_end(sh, NULL); /* one being read ends when its read answers */
	}
}
