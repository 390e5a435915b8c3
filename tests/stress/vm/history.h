/* What happened to each page and when: the record gmem-stress judges every access against. */
#ifndef TESTS_STRESS_VM_HISTORY_H
#define TESTS_STRESS_VM_HISTORY_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

/*
 * Time is one global counter: every event takes a tick before it acts and
 * one after, so "A ended before B began" is A.end < B.start. An event is
 * recorded (with end = HISTORY_OPEN) before it touches memory and closed
 * after, so a check made after an access always finds the events that
 * access could have seen.
 */
#define HISTORY_OPEN UINT64_MAX
#define HISTORY_DEPTH 64

enum event_kind {
	EVENT_WRITE,      /* a write of the page's words; id names it */
	EVENT_PUNCH,      /* punch-hole: the page reads 0 after */
	EVENT_TO_PRIVATE, /* conversions: the attribute after the event */
	EVENT_TO_SHARED,
	/*
	 * The host may lose the page for a while, whatever its kind: a
	 * conversion that splits or merges a hugetlbfs folio copies it whole
	 * (docs/compat.md). Not a change of state.
	 */
	EVENT_HIDDEN,
};

struct event {
	uint64_t start, end;
	uint64_t id;    /* EVENT_WRITE */
	uint8_t kind;
	bool maybe;     /* may not have happened (a write that hit a missing slot, or faulted) */
};

struct page_history {
	pthread_mutex_t lock;
	struct event ring[HISTORY_DEPTH];
	uint32_t recorded;          /* events ever recorded; ring[recorded % DEPTH] is next */
	bool data_evicted;          /* a write or punch has left the ring */
	bool attr_evicted;          /* a conversion has left the ring */
	uint64_t evicted_write_id;  /* the highest write id that left the ring */
};

enum verdict { VERDICT_OK, VERDICT_UNKNOWN, VERDICT_BAD };

uint64_t history_tick(void);
void history_init(struct page_history *h);
void history_destroy(struct page_history *h);

/* Records an open event; returns its start, which close_event needs. */
uint64_t history_open(struct page_history *h, enum event_kind kind, uint64_t id, uint64_t start);
void history_close(struct page_history *h, uint64_t start, uint64_t end, bool maybe);

/*
 * Could word `word` of page `page` hold `value` for an access made within
 * [start, end]? 0 is the value of a hole. why gets a description when not.
 */
enum verdict history_check_word(struct page_history *h, uint64_t page, unsigned word,
				uint64_t value, uint64_t start, uint64_t end, char *why, size_t n);

/*
 * Could the page have been private (or shared) at some time within
 * [start, end]? For private, a hiding event during the access also answers yes:
 * the question is then whether a host access may have faulted.
 */
enum verdict history_could_be(struct page_history *h, bool private, uint64_t start, uint64_t end,
			      char *why, size_t n);

#endif
