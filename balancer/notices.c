/* notices.c — what the balancers sharing one database tell each other, as
 * notices (store.h: PostgreSQL's LISTEN/NOTIFY). Each notice is a JSON
 * object {"k": kind, "from": member, ...}; a member ignores its own
 * (but options).
 *
 *   watch {job}       a balancer streams the events of a job it does not
 *                     hold (remote.c): the one that runs it publishes the
 *                     job's kept events (history) at once, and each of its
 *                     events for WATCH_TTL_S (the watcher renews it)
 *   history {job, replay_from, last_id, events: [{id, name, state, data}]}
 *   event {job, id, name, state: 0 update | 1 state | 2 final, data}
 *   cancel {job}      a DELETE that reached another balancer
 *   slot {backend, slot}
 *                     a backend's slot lease was given back: a balancer
 *                     that was refused it asks again now, not after its
 *                     hold (dispatch.c)
 *   options {client, checkpoint}
 *                     a façade client's default checkpoint, published
 *                     once saved (options.c); applied by every member, the
 *                     sender too, so that all end with the last one saved
 *
 * Progress previews (images) are left out of notices: they do not fit one
 * (STORE_NOTICE_MAX). Notices are best effort: what was missed (a listener
 * that reconnected) is made good by re-reading rows (remote.c), a slot
 * notice missed costs a hold. Loop thread. */
#include "balancer.h"

#include "log.h"

#include <stdlib.h>
#include <string.h>

#define WATCH_TTL_S 15.0 /* a watch lasts this long; watchers renew it every few seconds */

static int is_mine(struct balancer *b, json_t *n)
{
	const char *from = json_string_value(json_object_get(n, "from"));
	return from && !strcmp(from, b->instance);
}

/* A job held and run here, by the notice's "job". */
static struct job *held_job(struct balancer *b, json_t *n)
{
	const char *id = json_string_value(json_object_get(n, "job"));
	struct job *j = id ? jobs_find(b, id) : NULL;
	return j && !j->shadow && !jobs_is_final(j) ? j : NULL;
}

static void on_watch(struct balancer *b, json_t *n)
{
	struct job *j = held_job(b, n);
	if (!j)
		return; /* another's, or finished: the watcher reads its row */
	j->watched_until = bal_now() + WATCH_TTL_S;
	jobs_refresh_events(b, j); /* its queue position or progress, as a reader here gets it */
	notices_job_history(b, j);
}

static void on_cancel(struct balancer *b, json_t *n)
{
	struct job *j = held_job(b, n);
	if (!j)
		return;
	log_info("job %s: cancelled through another balancer", j->id);
	j->watched_until = bal_now() + WATCH_TTL_S; /* its final event goes out */
	dispatch_cancel(b, j);
}

static void on_slot(struct balancer *b, json_t *n)
{
	const char *key = json_string_value(json_object_get(n, "backend"));
	json_t *slot = json_object_get(n, "slot");
	if (key && json_is_integer(slot))
		dispatch_slot_freed(b, key, (int)json_integer_value(slot));
}

static void on_notice(void *user, const char *payload)
{
	struct balancer *b = user;
	if (b->stopping)
		return;
	if (!payload) { /* (re)connected: what was published meanwhile is lost */
		remote_on_notice(b, NULL, NULL);
		options_on_notice(b, NULL);
		return;
	}
	json_t *n = json_loads(payload, 0, NULL);
	const char *k = json_string_value(json_object_get(n, "k"));
	if (!k)
		;
	else if (!strcmp(k, "options"))
		options_on_notice(b, n); /* its own too: options.c */
	else if (is_mine(b, n))
		;
	else if (!strcmp(k, "watch"))
		on_watch(b, n);
	else if (!strcmp(k, "cancel"))
		on_cancel(b, n);
	else if (!strcmp(k, "slot"))
		on_slot(b, n);
	else if (!strcmp(k, "event") || !strcmp(k, "history"))
		remote_on_notice(b, k, n);
	json_decref(n);
}

void notices_start(struct balancer *b)
{
	if (store_shared(b->store) && store_listen(b->store, on_notice, b) != 0)
		log_error("cannot start listening for the other balancers' notices: events, cancels and freed slots "
			  "of other balancers are seen only by reading the database again");
}

char *notices_text(struct balancer *b, const char *kind, json_t *fields)
{
	char *text = NULL;
	if (store_shared(b->store) && fields) {
		json_object_set_new(fields, "k", json_string(kind));
		json_object_set_new(fields, "from", json_string(b->instance));
		text = json_dumps(fields, JSON_COMPACT);
	}
	json_decref(fields);
	return text;
}

void notices_send(struct balancer *b, const char *kind, json_t *fields)
{
	char *text = notices_text(b, kind, fields);
	if (text)
		store_notify(b->store, text);
	free(text);
}

/* An event's data as a notice carries it: without a preview. */
static json_t *notice_data(const json_t *data)
{
	json_t *d = json_deep_copy(data);
	json_object_del(d, "preview");
	json_object_del(d, "preview_type");
	return d ? d : json_object();
}

void notices_job_event(struct balancer *b, const struct job *j, long long id, const char *event, const json_t *data,
		       enum notice_event kind)
{
	if (j->shadow || j->watched_until <= bal_now())
		return;
	notices_send(b, "event",
		     json_pack("{s:s,s:I,s:s,s:i,s:o}", "job", j->id, "id", (json_int_t)id, "name", event, "state",
			       (int)kind, "data", notice_data(data)));
}

static void add_kept(json_t *events, const struct job_event *e, int state)
{
	if (e->id && e->name)
		json_array_append_new(events, json_pack("{s:I,s:s,s:i,s:o}", "id", (json_int_t)e->id, "name", e->name,
							"state", state, "data", notice_data(e->data)));
}

void notices_job_history(struct balancer *b, struct job *j)
{
	/* In id order, as events_replay gives them (a preview's update is
	 * never newer than the latest update). */
	const struct job_events *h = &j->events;
	json_t *events = json_array();
	for (int i = 0; i < h->n_state; i++)
		add_kept(events, &h->state[i], 1);
	if (h->preview.id != h->update.id)
		add_kept(events, &h->preview, 0);
	add_kept(events, &h->update, 0);
	json_t *n = json_pack("{s:s,s:I,s:I,s:o}", "job", j->id, "replay_from", (json_int_t)h->replay_from,
			      "last_id", (json_int_t)h->last_id, "events", events);
	/* Too long for one notice (many state events): the oldest go first,
	 * and a reader from before them is not resumed exactly. The text
	 * measured is the one sent. */
	for (;;) {
		char *text = notices_text(b, "history", json_incref(n));
		if (!text || strlen(text) <= STORE_NOTICE_MAX || json_array_size(events) == 0) {
			if (text)
				store_notify(b->store, text);
			free(text);
			break;
		}
		free(text);
		json_object_set_new(n, "replay_from",
				    json_integer(json_integer_value(json_object_get(json_array_get(events, 0), "id"))));
		json_array_remove(events, 0);
	}
	json_decref(n);
}
