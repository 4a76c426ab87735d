/* events.c — see events.h. */
#include "events.h"

#include <string.h>

static void slot_set(struct job_event *e, long long id, const char *name, json_t *data)
{
	json_t *old = e->data;
	e->id = id;
	e->name = name;
	e->data = json_incref(data);
	json_decref(old); /* after the incref: data may be the slot's own */
}

static void slot_clear(struct job_event *e)
{
	json_decref(e->data);
	*e = (struct job_event){0, NULL, NULL};
}

static long long next_id(struct job_events *h)
{
	if (h->last_id < BAL_EVENTS_MAX_ID)
		h->last_id++;
	return h->last_id;
}

long long events_reserve(struct job_events *h) { return next_id(h); }

long long events_add_state(struct job_events *h, const char *name, json_t *data)
{
	long long id = next_id(h);
	slot_clear(&h->update);
	slot_clear(&h->preview);
	if (h->n_state == BAL_EVENTS_KEPT) {
		/* The oldest goes: a reader that got it can still resume, one from before cannot. */
		h->replay_from = h->state[0].id;
		slot_clear(&h->state[0]);
		memmove(&h->state[0], &h->state[1], sizeof h->state[0] * (BAL_EVENTS_KEPT - 1));
		h->state[BAL_EVENTS_KEPT - 1] = (struct job_event){0, NULL, NULL};
		h->n_state--;
	}
	slot_set(&h->state[h->n_state++], id, name, data);
	return id;
}

long long events_add_update(struct job_events *h, const char *name, json_t *data)
{
	long long id = next_id(h);
	slot_set(&h->update, id, name, data);
	if (json_object_get(data, "preview"))
		slot_set(&h->preview, id, name, data);
	return id;
}

int events_put(struct job_events *h, long long id, const char *name, json_t *data, int state)
{
	if (id <= h->last_id || id > BAL_EVENTS_MAX_ID)
		return 0;
	h->last_id = id - 1;
	if (state)
		events_add_state(h, name, data);
	else
		events_add_update(h, name, data);
	return 1;
}

const char *events_name(const char *name)
{
	static const char *const names[] = {"queued", "assigned", "progress", "done", "failed", "cancelled"};
	for (size_t i = 0; name && i < sizeof names / sizeof names[0]; i++)
		if (!strcmp(name, names[i]))
			return names[i];
	return NULL;
}

void events_clear(struct job_events *h)
{
	for (int i = 0; i < h->n_state; i++)
		slot_clear(&h->state[i]);
	h->n_state = 0;
	slot_clear(&h->update);
	slot_clear(&h->preview);
	h->replay_from = h->last_id;
}

void events_restore(struct job_events *h, long long saved, int unfinished, double unix_now)
{
	events_clear(h);
	if (saved < 0 || saved > BAL_EVENTS_MAX_ID)
		saved = 0;
	h->last_id = saved;
	h->replay_from = saved;
	if (!unfinished) {
		if (!h->last_id) /* a document from before ids: its final event gets one, the same each time */
			h->last_id = 1;
		return;
	}
	double ms = unix_now * 1000.0;
	if (ms > (double)h->last_id && ms < (double)BAL_EVENTS_MAX_ID / 2)
		h->last_id = (long long)ms;
}

int events_resumable(const struct job_events *h, long long after)
{
	return after >= h->replay_from && after <= h->last_id;
}

long long events_current(const struct job_events *h)
{
	if (h->n_state)
		return h->state[h->n_state - 1].id - 1;
	return h->last_id; /* nothing kept: nothing to replay */
}

void events_replay(const struct job_events *h, long long after, events_fn fn, void *user)
{
	for (int i = 0; i < h->n_state; i++)
		if (h->state[i].id > after)
			fn(user, &h->state[i]);
	/* Both updates follow the last state event; the preview's is the older or the same one. */
	if (h->preview.id > after && h->preview.id != h->update.id)
		fn(user, &h->preview);
	if (h->update.id > after)
		fn(user, &h->update);
}

int events_parse_id(const char *text, size_t len, long long *out)
{
	if (!text || len == 0 || len > BAL_EVENTS_MAX_ID_DIGITS)
		return -1;
	long long v = 0;
	for (size_t i = 0; i < len; i++) {
		if (text[i] < '0' || text[i] > '9')
			return -1;
		v = v * 10 + (text[i] - '0'); /* 16 digits: no overflow */
	}
	if (v > BAL_EVENTS_MAX_ID)
		return -1;
	*out = v;
	return 0;
}
