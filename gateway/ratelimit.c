/* ratelimit.c — a token bucket per client address, metered in GPU work
 * (megapixel-steps: steps × width × height / 1e6), not in requests: one
 * 2048² 150-step job costs what ~120 small ones do. A bucket holds at most
 * `burst` units and refills at `refill` units per second.
 *
 * The table is bounded: past max_clients addresses, buckets that have
 * refilled to full (they carry no information) are dropped; if none has,
 * the least recently used one goes. Service thread only. */
#include "gateway.h"

#include <stdlib.h>
#include <string.h>

struct bucket {
	struct bucket *next;
	char addr[64];
	double tokens;
	double at;      /* when tokens was computed */
	double used_at; /* last take, for LRU eviction */
};

struct ratelimit {
	double burst, refill;
	size_t max, count, n_slots;
	struct bucket **slots;
};

static size_t hash(const char *s)
{
	size_t h = 1469598103934665603ull; /* FNV-1a */
	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 1099511628211ull;
	return h;
}

struct ratelimit *ratelimit_new(double burst, double refill_per_s, size_t max_clients)
{
	struct ratelimit *rl = calloc(1, sizeof *rl);
	if (!rl)
		return NULL;
	rl->burst = burst;
	rl->refill = refill_per_s;
	rl->max = max_clients ? max_clients : 1;
	rl->n_slots = 1024;
	while (rl->n_slots < rl->max && rl->n_slots < (1u << 20))
		rl->n_slots <<= 1;
	rl->slots = calloc(rl->n_slots, sizeof *rl->slots);
	if (!rl->slots) {
		free(rl);
		return NULL;
	}
	return rl;
}

void ratelimit_free(struct ratelimit *rl)
{
	if (!rl)
		return;
	for (size_t i = 0; i < rl->n_slots; i++) {
		for (struct bucket *b = rl->slots[i], *n; b; b = n) {
			n = b->next;
			free(b);
		}
	}
	free(rl->slots);
	free(rl);
}

static void refill(const struct ratelimit *rl, struct bucket *b, double now)
{
	if (now > b->at) {
		b->tokens += (now - b->at) * rl->refill;
		if (b->tokens > rl->burst)
			b->tokens = rl->burst;
	}
	b->at = now;
}

/* Drops full buckets; if none was full, the least recently used one. */
static void evict(struct ratelimit *rl, double now)
{
	struct bucket **lru = NULL;
	for (size_t i = 0; i < rl->n_slots; i++) {
		for (struct bucket **pb = &rl->slots[i]; *pb;) {
			struct bucket *b = *pb;
			refill(rl, b, now);
			if (b->tokens >= rl->burst) {
				*pb = b->next;
				free(b);
				rl->count--;
				continue;
			}
			if (!lru || b->used_at < (*lru)->used_at)
				lru = pb;
			pb = &b->next;
		}
	}
	if (rl->count >= rl->max && lru) {
		struct bucket *b = *lru;
		*lru = b->next;
		free(b);
		rl->count--;
	}
}

static struct bucket *find(struct ratelimit *rl, const char *addr, double now, int create)
{
	size_t slot = hash(addr) & (rl->n_slots - 1);
	for (struct bucket *b = rl->slots[slot]; b; b = b->next)
		if (!strcmp(b->addr, addr))
			return b;
	if (!create)
		return NULL;
	if (rl->count >= rl->max)
		evict(rl, now);
	struct bucket *b = calloc(1, sizeof *b);
	if (!b)
		return NULL;
	size_t n = strlen(addr);
	memcpy(b->addr, addr, n < sizeof b->addr ? n : sizeof b->addr - 1);
	b->tokens = rl->burst;
	b->at = now;
	b->next = rl->slots[slot];
	rl->slots[slot] = b;
	rl->count++;
	return b;
}

int ratelimit_take(struct ratelimit *rl, const char *addr, double work, double now, double *retry_after_s)
{
	*retry_after_s = 0;
	if (work > rl->burst) {
		*retry_after_s = -1;
		return -1;
	}
	struct bucket *b = find(rl, addr, now, 1);
	if (!b) { /* out of memory: refuse rather than let everything through */
		*retry_after_s = 1;
		return -1;
	}
	refill(rl, b, now);
	b->used_at = now;
	if (b->tokens + 1e-9 < work) {
		*retry_after_s = rl->refill > 0 ? (work - b->tokens) / rl->refill : -1;
		return -1;
	}
	b->tokens -= work;
	return 0;
}

void ratelimit_refund(struct ratelimit *rl, const char *addr, double work, double now)
{
	struct bucket *b = find(rl, addr, now, 0);
	if (!b)
		return;
	refill(rl, b, now);
	b->tokens += work;
	if (b->tokens > rl->burst)
		b->tokens = rl->burst;
}
