/* prefs.c — see prefs.h. A chained hash table of clients (FNV-1a of the
 * client key) with a list from the most to the least recently used: expired
 * entries are dropped from the old end as new ones come, and the oldest one
 * makes room when PREFS_MAX are held. */
#include "prefs.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define BUCKETS 1024
#define CLIENT_LEN 64

struct pref {
	char client[CLIENT_LEN];
	char *checkpoint;
	double used;
	struct pref *hnext;         /* bucket chain */
	struct pref *newer, *older; /* recency list */
};

struct prefs {
	struct pref *table[BUCKETS];
	struct pref *newest, *oldest;
	size_t n;
};

static unsigned bucket(const char *client)
{
	uint32_t h = 2166136261u;
	for (const unsigned char *s = (const unsigned char *)client; *s; s++)
		h = (h ^ *s) * 16777619u;
	return h % BUCKETS;
}

struct prefs *prefs_new(void) { return calloc(1, sizeof(struct prefs)); }

static void unlink_recency(struct prefs *p, struct pref *e)
{
	if (e->newer)
		e->newer->older = e->older;
	else
		p->newest = e->older;
	if (e->older)
		e->older->newer = e->newer;
	else
		p->oldest = e->newer;
	e->newer = e->older = NULL;
}

static void push_newest(struct prefs *p, struct pref *e)
{
	e->older = p->newest;
	e->newer = NULL;
	if (p->newest)
		p->newest->newer = e;
	p->newest = e;
	if (!p->oldest)
		p->oldest = e;
}

static void drop(struct prefs *p, struct pref *e)
{
	struct pref **pp = &p->table[bucket(e->client)];
	while (*pp != e)
		pp = &(*pp)->hnext;
	*pp = e->hnext;
	unlink_recency(p, e);
	free(e->checkpoint);
	free(e);
	p->n--;
}

static void expire(struct prefs *p, double now)
{
	while (p->oldest && now - p->oldest->used > PREFS_TTL_S)
		drop(p, p->oldest);
}

static struct pref *find(const struct prefs *p, const char *client)
{
	for (struct pref *e = p->table[bucket(client)]; e; e = e->hnext)
		if (!strcmp(e->client, client))
			return e;
	return NULL;
}

int prefs_set_checkpoint(struct prefs *p, const char *client, const char *name, double now)
{
	if (!p || strlen(name) > PREFS_MAX_NAME || strlen(client) >= CLIENT_LEN)
		return -1;
	expire(p, now);
	struct pref *e = find(p, client);
	if (!*name) {
		if (e)
			drop(p, e);
		return 0;
	}
	char *copy = strdup(name);
	if (!copy)
		return -1;
	if (!e) {
		if (p->n >= PREFS_MAX)
			drop(p, p->oldest);
		e = calloc(1, sizeof *e);
		if (!e) {
			free(copy);
			return -1;
		}
		memcpy(e->client, client, strlen(client) + 1);
		unsigned b = bucket(client);
		e->hnext = p->table[b];
		p->table[b] = e;
		p->n++;
	} else {
		unlink_recency(p, e);
		free(e->checkpoint);
	}
	e->checkpoint = copy;
	e->used = now;
	push_newest(p, e);
	return 0;
}

const char *prefs_checkpoint(struct prefs *p, const char *client, double now)
{
	if (!p)
		return NULL;
	expire(p, now);
	struct pref *e = find(p, client);
	if (!e)
		return NULL;
	e->used = now;
	unlink_recency(p, e);
	push_newest(p, e);
	return e->checkpoint;
}

const char *prefs_peek(const struct prefs *p, const char *client, double now)
{
	const struct pref *e = p ? find(p, client) : NULL;
	return e && now - e->used <= PREFS_TTL_S ? e->checkpoint : NULL;
}

size_t prefs_count(const struct prefs *p) { return p ? p->n : 0; }

void prefs_free(struct prefs *p)
{
	if (!p)
		return;
	while (p->oldest)
		drop(p, p->oldest);
	free(p);
}
