/* events.h — a job's event ids and the events it keeps for a reader that
 * resumes its stream with Last-Event-ID (docs/jobs-api.md "Resuming a
 * stream").
 *
 * Every event of a job gets the next id of the job's sequence. Two kinds:
 * - state events (queued on entering the queue, assigned, and the final
 *   one) change what the job is: the last BAL_EVENTS_KEPT are kept, in order;
 * - updates (a queued job's new position, progress) only refine the state:
 *   only the latest since the last state event is kept, and the latest that
 *   carried a preview (a progress event sends a preview only when it is new).
 * A state event forgets the updates before it: they describe a state that is
 * over. The final event is not kept here: jobs.c builds it from the job (it
 * is all a finished job answers), under the id reserved for it.
 *
 * Ids and restarts: the last id given is saved with the job's document, not
 * every update, so a job reloaded unfinished goes on from the wall clock in
 * milliseconds (or the saved id when that is higher): an id given before a
 * restart, even one after a crash whose last saves were lost, is below it as
 * long as the job got fewer than one event a millisecond. A finished job
 * gives no more ids: its final one is the saved one.
 *
 * Pure (jansson only); jobs.c and sse.c use it on the loop thread. */
#ifndef SDGATE_BALANCER_EVENTS_H
#define SDGATE_BALANCER_EVENTS_H

#include <jansson.h>

#define BAL_EVENTS_KEPT 16                   /* state events kept per unfinished job */
#define BAL_EVENTS_MAX_ID 9007199254740991LL /* 2^53 - 1: ids stay exact in JavaScript */
#define BAL_EVENTS_MAX_ID_DIGITS 16          /* a Last-Event-ID longer than this is not one of ours */

struct job_event {
	long long id;     /* 0 = empty slot */
	const char *name; /* a static string: "queued", "assigned", "progress", ... */
	json_t *data;     /* a reference of its own */
};

struct job_events {
	long long last_id;     /* the last id given (0: none yet); saved as the document's event_id */
	long long replay_from; /* a Last-Event-ID from here to last_id is resumed exactly */
	int n_state;
	struct job_event state[BAL_EVENTS_KEPT]; /* oldest first */
	struct job_event update;                 /* the latest update since the last state event */
	struct job_event preview;                /* the latest such update that carried "preview" */
};

/* Records an event under the next id and returns it. data is borrowed (the
 * history takes a reference of its own); name must be static. */
long long events_add_state(struct job_events *h, const char *name, json_t *data);
long long events_add_update(struct job_events *h, const char *name, json_t *data);
/* A copy of another balancer's job (remote.c) records that balancer's
 * events under their own ids: one above last_id is kept as a state event
 * (state 1) or an update (0) and returns 1; any other is old and ignored
 * (0). name must be static (events_name). */
int events_put(struct job_events *h, long long id, const char *name, json_t *data, int state);
/* The static name of a job event named `name`, or NULL if no job event is. */
const char *events_name(const char *name);
/* The next id, for an event that is not kept (the final one). */
long long events_reserve(struct job_events *h);
/* Forgets every kept event (a finished job's); the ids go on. */
void events_clear(struct job_events *h);
/* A job from its saved document: saved is its event_id (0 if none);
 * unfinished: it will give new ids (see the header comment). */
void events_restore(struct job_events *h, long long saved, int unfinished, double unix_now);

/* 1 when the kept events hold everything a reader that last got id `after`
 * needs: replay_from <= after <= last_id. */
int events_resumable(const struct job_events *h, long long after);
/* The `after` that replays the current state: the last state event and the
 * updates since. */
long long events_current(const struct job_events *h);
/* Calls fn on each kept event with an id above `after`, in id order. */
typedef void (*events_fn)(void *user, const struct job_event *e);
void events_replay(const struct job_events *h, long long after, events_fn fn, void *user);

/* Parses a Last-Event-ID: 1 to BAL_EVENTS_MAX_ID_DIGITS decimal digits, at
 * most BAL_EVENTS_MAX_ID, nothing else. len: the bytes of text. Returns 0
 * and sets *out, or -1. */
int events_parse_id(const char *text, size_t len, long long *out);

#endif
