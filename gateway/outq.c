/* outq.c — one websocket connection's outgoing messages, bounded in bytes.
 *
 * A client that sends without reading must not make the gateway hold what it
 * does not read. So what may wait depends on what a message is:
 *  - a job's own messages (accepted, queued, assigned, done, error of a job)
 *    are bounded by the per-connection job cap, and in bytes by GW_OUT_MAX
 *    (one done message with the largest image fits);
 *  - progress replaces the waiting progress of the same job (only the
 *    latest step matters); one with a preview (the balancer sends a preview
 *    once, in the event where it is new) is not lost that way: it
 *    supersedes the job's waiting progress and preview and waits at the
 *    end, and a later progress without one waits behind it (so at most two
 *    of a job wait, and their steps never go down);
 *  - a board or a welcome replaces the waiting one (a full snapshot each);
 *  - any other reply (an error answering a message) may wait up to
 *    GW_OUT_CONTROL bytes in all.
 * Past a bound outq_push says OUTQ_OVER and the caller closes the connection.
 * ws.c writes the head message in chunks (outq_chunk / outq_advance), so a
 * message that has started is never replaced.
 *
 * Service thread only (no locking). */
#include "gateway.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct outq_msg {
	struct outq_msg *next;
	enum outq_class cls;
	char id[GW_MAX_ID + 1]; /* OUTQ_PROGRESS: the job */
	size_t len, off;        /* off: bytes already written */
	char text[];
};

static struct outq_msg *msg_new(const char *text, size_t len, enum outq_class cls, const char *id)
{
	struct outq_msg *m = malloc(sizeof *m + len);
	if (!m)
		return NULL;
	m->next = NULL;
	m->cls = cls;
	snprintf(m->id, sizeof m->id, "%s", id ? id : "");
	m->len = len;
	m->off = 0;
	memcpy(m->text, text, len);
	return m;
}

/* Bytes of m that count against the control budget. */
static size_t control_bytes(const struct outq_msg *m) { return m->cls == OUTQ_CONTROL ? m->len - m->off : 0; }

/* The waiting (not started) message that a new one of class cls and job id
 * replaces, as the link that points to it; NULL when none does. */
static struct outq_msg **replaceable(struct outq *q, enum outq_class cls, const char *id)
{
	if (cls != OUTQ_PROGRESS && cls != OUTQ_BOARD && cls != OUTQ_WELCOME)
		return NULL;
	for (struct outq_msg **pm = &q->head; *pm; pm = &(*pm)->next) {
		const struct outq_msg *m = *pm;
		if (m->off == 0 && m->cls == cls && (cls != OUTQ_PROGRESS || !strcmp(m->id, id ? id : "")))
			return pm;
	}
	return NULL;
}

int outq_waiting(const struct outq *q, enum outq_class cls)
{
	for (const struct outq_msg *m = q->head; m; m = m->next)
		if (m->off == 0 && m->cls == cls)
			return 1;
	return 0;
}

/* A waiting message of job id that a new OUTQ_PREVIEW supersedes. */
static int superseded(const struct outq_msg *m, const char *id)
{
	return m->off == 0 && (m->cls == OUTQ_PROGRESS || m->cls == OUTQ_PREVIEW) && !strcmp(m->id, id ? id : "");
}

/* Bytes of the waiting messages a new preview of job id supersedes; with
 * drop, they are dropped. */
static size_t supersede(struct outq *q, const char *id, int drop)
{
	size_t freed = 0;
	struct outq_msg *prev = NULL;
	for (struct outq_msg **pm = &q->head; *pm;) {
		struct outq_msg *m = *pm;
		if (!superseded(m, id)) {
			prev = m;
			pm = &m->next;
			continue;
		}
		freed += m->len;
		if (!drop) {
			pm = &m->next;
			continue;
		}
		*pm = m->next;
		if (q->tail == m)
			q->tail = prev;
		q->bytes -= m->len;
		free(m);
	}
	return freed;
}

enum outq_result outq_push(struct outq *q, const char *text, size_t len, enum outq_class cls, const char *id)
{
	struct outq_msg **old = replaceable(q, cls, id);
	size_t freed = old ? (*old)->len : cls == OUTQ_PREVIEW ? supersede(q, id, 0) : 0;
	if (q->bytes - freed + len > GW_OUT_MAX)
		return OUTQ_OVER;
	if (cls == OUTQ_CONTROL && q->control + len > GW_OUT_CONTROL)
		return OUTQ_OVER;
	struct outq_msg *m = msg_new(text, len, cls, id);
	if (!m)
		return OUTQ_NOMEM;
	if (old) {
		struct outq_msg *o = *old;
		m->next = o->next;
		*old = m;
		if (q->tail == o)
			q->tail = m;
		free(o);
		q->bytes -= freed;
	} else {
		if (freed)
			supersede(q, id, 1);
		if (q->tail)
			q->tail->next = m;
		else
			q->head = m;
		q->tail = m;
	}
	q->bytes += len;
	q->control += control_bytes(m);
	return freed ? OUTQ_REPLACED : OUTQ_QUEUED;
}

size_t outq_chunk(const struct outq *q, const char **text, int *first, int *last)
{
	const struct outq_msg *m = q->head;
	if (!m)
		return 0;
	size_t n = m->len - m->off;
	if (n > GW_OUT_CHUNK)
		n = GW_OUT_CHUNK;
	*text = m->text + m->off;
	*first = m->off == 0;
	*last = m->off + n == m->len;
	return n;
}

void outq_advance(struct outq *q, size_t n)
{
	struct outq_msg *m = q->head;
	if (!m)
		return;
	if (n > m->len - m->off)
		n = m->len - m->off;
	q->control -= m->cls == OUTQ_CONTROL ? n : 0;
	m->off += n;
	q->bytes -= n;
	if (m->off < m->len)
		return;
	q->head = m->next;
	if (!q->head)
		q->tail = NULL;
	free(m);
}

void outq_clear(struct outq *q)
{
	while (q->head) {
		struct outq_msg *m = q->head;
		q->head = m->next;
		free(m);
	}
	q->tail = NULL;
	q->bytes = q->control = 0;
}
