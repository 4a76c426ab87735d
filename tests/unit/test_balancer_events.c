/* Unit tests of balancer/events.c: a job's event ids and the events kept for
 * a reader that resumes with Last-Event-ID. Ids only grow; state events are
 * kept (the last BAL_EVENTS_KEPT), updates only the latest (and the latest
 * with a preview); a replay gives what came after an id in id order; a
 * reloaded unfinished job goes on above every id given before its restart;
 * Last-Event-ID parsing refuses anything but a short run of digits. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "events.h"

struct seen {
	long long ids[64];
	const char *names[64];
	int n;
};

static void collect(void *user, const struct job_event *e)
{
	struct seen *s = user;
	assert_true(s->n < 64);
	s->ids[s->n] = e->id;
	s->names[s->n++] = e->name;
}

static struct seen replay(const struct job_events *h, long long after)
{
	struct seen s = {.n = 0};
	events_replay(h, after, collect, &s);
	return s;
}

static void add_state(struct job_events *h, const char *name)
{
	json_t *d = json_object();
	events_add_state(h, name, d);
	json_decref(d);
}

static long long add_progress(struct job_events *h, int step, int with_preview)
{
	json_t *d = json_pack("{s:i}", "step", step);
	if (with_preview)
		json_object_set_new(d, "preview", json_string("iVBOR"));
	long long id = events_add_update(h, "progress", d);
	json_decref(d);
	return id;
}

static void test_ids_grow_and_replay_in_order(void **state)
{
	(void)state;
	struct job_events h = {0};
	add_state(&h, "queued"); /* 1 */
	json_t *pos = json_pack("{s:i}", "position", 1);
	events_add_update(&h, "queued", pos); /* 2: coalesced away by the next state event */
	json_decref(pos);
	add_state(&h, "assigned");               /* 3 */
	add_progress(&h, 1, 1);                  /* 4: the preview */
	add_progress(&h, 2, 0);                  /* 5: coalesced by 6 */
	long long last = add_progress(&h, 3, 0); /* 6 */
	assert_int_equal(last, 6);
	assert_int_equal(h.last_id, 6);

	struct seen all = replay(&h, 0);
	assert_int_equal(all.n, 4); /* queued, assigned, the preview's progress, the latest progress */
	long long want[] = {1, 3, 4, 6};
	for (int i = 0; i < all.n; i++) {
		printf("replay after 0: %lld %s\n", all.ids[i], all.names[i]);
		assert_int_equal(all.ids[i], want[i]);
	}
	/* A reader that got 4 (the preview) gets only the latest; one that got 6, nothing. */
	struct seen r4 = replay(&h, 4);
	assert_int_equal(r4.n, 1);
	assert_int_equal(r4.ids[0], 6);
	assert_int_equal(replay(&h, 6).n, 0);
	/* The current state: the last state event and the updates after it. */
	assert_int_equal(events_current(&h), 2);
	struct seen cur = replay(&h, events_current(&h));
	assert_int_equal(cur.n, 3);
	assert_string_equal(cur.names[0], "assigned");
	assert_true(events_resumable(&h, 0) && events_resumable(&h, 6));
	assert_false(events_resumable(&h, 7)); /* an id not given yet */
	events_clear(&h);
}

static void test_latest_update_with_a_preview_is_the_same_event_once(void **state)
{
	(void)state;
	struct job_events h = {0};
	add_state(&h, "assigned");
	add_progress(&h, 1, 0);
	add_progress(&h, 2, 1); /* latest and preview at once */
	struct seen s = replay(&h, 0);
	assert_int_equal(s.n, 2);
	assert_int_equal(s.ids[1], 3);
	events_clear(&h);
}

static void test_only_the_last_state_events_are_kept(void **state)
{
	(void)state;
	struct job_events h = {0};
	for (int i = 0; i < BAL_EVENTS_KEPT + 4; i++)
		add_state(&h, i % 2 ? "assigned" : "queued");
	assert_int_equal(h.n_state, BAL_EVENTS_KEPT);
	assert_int_equal(h.state[0].id, 5);
	/* A reader that got 4 (the last one dropped) resumes exactly; one that got 3 does not. */
	assert_int_equal(h.replay_from, 4);
	assert_true(events_resumable(&h, 4));
	assert_false(events_resumable(&h, 3));
	assert_int_equal(replay(&h, 4).n, BAL_EVENTS_KEPT);
	events_clear(&h);
	assert_int_equal(h.n_state, 0);
	assert_int_equal(events_reserve(&h), BAL_EVENTS_KEPT + 5); /* the ids go on after a clear */
}

static void test_restore_goes_on_above_every_earlier_id(void **state)
{
	(void)state;
	struct job_events h = {0};
	double now = 1764680000.0; /* 2025-12 */
	/* Unfinished: from the clock in ms, above anything given since the last save. */
	events_restore(&h, 42, 1, now);
	assert_true(h.last_id >= 1764680000000LL);
	assert_true(events_resumable(&h, 42)); /* saved ids and those after: a full replay */
	assert_false(events_resumable(&h, 41));
	add_state(&h, "queued");
	assert_int_equal(h.state[0].id, 1764680000001LL);
	/* A second restart soon after (the clock moved 1 s): still above. */
	long long before = h.last_id + 100; /* 100 unsaved updates */
	events_restore(&h, 1764680000001LL, 1, now + 1.0);
	assert_true(h.last_id > before);
	/* A saved id above the clock (the clock went back) wins. */
	events_restore(&h, 1764690000000LL, 1, now);
	assert_int_equal(h.last_id, 1764690000000LL);
	/* Finished: its final id is the saved one; a document without one gets 1. */
	events_restore(&h, 7, 0, now);
	assert_int_equal(h.last_id, 7);
	events_restore(&h, 0, 0, now);
	assert_int_equal(h.last_id, 1);
	/* A damaged document's id is not taken. */
	events_restore(&h, -5, 0, now);
	assert_int_equal(h.last_id, 1);
	events_clear(&h);
}

static void test_parse_id(void **state)
{
	(void)state;
	long long v = -1;
	assert_int_equal(events_parse_id("0", 1, &v), 0);
	assert_int_equal(v, 0);
	assert_int_equal(events_parse_id("1764680000001", 13, &v), 0);
	assert_int_equal(v, 1764680000001LL);
	assert_int_equal(events_parse_id("9007199254740991", 16, &v), 0);
	assert_int_equal(v, BAL_EVENTS_MAX_ID);
	const char *bad[] = {"",
			     "-1",
			     "+1",
			     " 1",
			     "1 ",
			     "1e3",
			     "0x10",
			     "abc",
			     "9007199254740992",
			     "99999999999999999",
			     "12345678901234567890123"};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		printf("refused: '%s'\n", bad[i]);
		assert_int_equal(events_parse_id(bad[i], strlen(bad[i]), &v), -1);
	}
	assert_int_equal(events_parse_id(NULL, 0, &v), -1);
	static const char nul_inside[] = {'1', '2', '\0', '3'};
	assert_int_equal(events_parse_id(nul_inside, sizeof nul_inside, &v), -1);
}

/* A copy of another balancer's job (remote.c) keeps that balancer's ids:
 * newer events are kept as state or update, older or repeated ones are
 * ignored, and the copy replays like the original. */
static void test_put_keeps_the_owners_ids(void **state)
{
	(void)state;
	struct job_events h = {0};
	json_t *d = json_object();
	assert_int_equal(events_put(&h, 1000, "queued", d, 1), 1);
	assert_int_equal(events_put(&h, 1003, "assigned", d, 1), 1);
	assert_int_equal(events_put(&h, 1003, "assigned", d, 1), 0); /* the same again (a history after the event) */
	assert_int_equal(events_put(&h, 1001, "queued", d, 0), 0);   /* older than what is kept */
	assert_int_equal(events_put(&h, 1007, "progress", d, 0), 1);
	assert_int_equal(events_put(&h, BAL_EVENTS_MAX_ID + 1, "progress", d, 0), 0);
	json_decref(d);
	assert_int_equal(h.last_id, 1007);
	struct seen s = replay(&h, 1003);
	assert_int_equal(s.n, 1);
	assert_int_equal(s.ids[0], 1007);
	assert_string_equal(s.names[0], "progress");
	s = replay(&h, 0);
	assert_int_equal(s.n, 3);
	assert_int_equal(s.ids[0], 1000);
	assert_int_equal(s.ids[1], 1003);
	/* a state event forgets the updates before it, as in the original */
	d = json_object();
	assert_int_equal(events_put(&h, 1010, "queued", d, 1), 1);
	json_decref(d);
	s = replay(&h, 1003);
	assert_int_equal(s.n, 1);
	assert_int_equal(s.ids[0], 1010);
	assert_int_equal(events_reserve(&h), 1011); /* the copy's next id would follow the owner's */
	events_clear(&h);
}

static void test_names(void **state)
{
	(void)state;
	const char *names[] = {"queued", "assigned", "progress", "done", "failed", "cancelled"};
	for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
		char copy[16];
		snprintf(copy, sizeof copy, "%s", names[i]);
		assert_string_equal(events_name(copy), names[i]);
		assert_ptr_not_equal(events_name(copy), copy); /* static */
	}
	assert_null(events_name("Queued"));
	assert_null(events_name("queued "));
	assert_null(events_name(""));
	assert_null(events_name(NULL));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_ids_grow_and_replay_in_order),
		cmocka_unit_test(test_latest_update_with_a_preview_is_the_same_event_once),
		cmocka_unit_test(test_only_the_last_state_events_are_kept),
		cmocka_unit_test(test_restore_goes_on_above_every_earlier_id),
		cmocka_unit_test(test_parse_id),
		cmocka_unit_test(test_put_keeps_the_owners_ids),
		cmocka_unit_test(test_names),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
