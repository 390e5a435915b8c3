/* Page histories: recording events and judging what an access saw against them. */
#include <stdio.h>

#include "history.h"

static _Atomic uint64_t clock_now;

uint64_t history_tick(void)
{
	return atomic_fetch_add(&clock_now, 1) + 1;
}

void history_init(struct page_history *h)
{
	*h = (struct page_history){ 0 };
	pthread_mutex_init(&h->lock, NULL);
}

void history_destroy(struct page_history *h)
{
	pthread_mutex_destroy(&h->lock);
}

static bool is_data(uint8_t kind)
{
	return kind == EVENT_WRITE || kind == EVENT_PUNCH;
}

uint64_t history_open(struct page_history *h, enum event_kind kind, uint64_t id, uint64_t start)
{
	struct event *slot;

	pthread_mutex_lock(&h->lock);
	slot = &h->ring[h->recorded % HISTORY_DEPTH];
	if (h->recorded >= HISTORY_DEPTH) {
		if (is_data(slot->kind))
			h->data_evicted = true;
		else if (slot->kind != EVENT_HIDDEN)
			h->attr_evicted = true;
		if (slot->kind == EVENT_WRITE && slot->id > h->evicted_write_id)
			h->evicted_write_id = slot->id;
	}
	*slot = (struct event){ .start = start, .end = HISTORY_OPEN, .id = id, .kind = kind };
	h->recorded++;
	pthread_mutex_unlock(&h->lock);
	return start;
}

void history_close(struct page_history *h, uint64_t start, uint64_t end, bool maybe)
{
	pthread_mutex_lock(&h->lock);
	for (unsigned i = 0; i < HISTORY_DEPTH && i < h->recorded; i++) {
		struct event *e = &h->ring[i];

		/* Starts are unique: an event that is no longer here has left the ring. */
		if (e->start == start && e->end == HISTORY_OPEN) {
			e->end = end;
			e->maybe = maybe;
			break;
		}
	}
	pthread_mutex_unlock(&h->lock);
}

static unsigned ring_len(const struct page_history *h)
{
	return h->recorded < HISTORY_DEPTH ? h->recorded : HISTORY_DEPTH;
}

/*
 * A definite write or a punch that began after `after` and ended before
 * `before`: whatever was in the page at `after` was gone before `before`.
 */
static const struct event *overwritten(const struct page_history *h, uint64_t after,
				       uint64_t before)
{
	for (unsigned i = 0; i < ring_len(h); i++) {
		const struct event *e = &h->ring[i];

		if (is_data(e->kind) && !e->maybe && e->end != HISTORY_OPEN && e->start > after &&
		    e->end < before)
			return e;
	}
	return NULL;
}

static const char *kind_name(uint8_t kind)
{
	switch (kind) {
	case EVENT_WRITE: return "write";
	case EVENT_PUNCH: return "punch-hole";
	case EVENT_TO_PRIVATE: return "conversion to private";
	case EVENT_TO_SHARED: return "conversion to shared";
	default: return "hiding for a folio copy";
	}
}

static enum verdict check_zero(const struct page_history *h, uint64_t start, uint64_t end,
			       char *why, size_t n)
{
	const struct event *last = NULL;

	/* Zero comes from the file's start (if all of it is still here) or from a punch. */
	if (!h->data_evicted && !(last = overwritten(h, 0, start)))
		return VERDICT_OK;
	for (unsigned i = 0; i < ring_len(h); i++) {
		const struct event *p = &h->ring[i];

		if (p->kind != EVENT_PUNCH || p->start > end)
			continue;
		if (p->end == HISTORY_OPEN || !(last = overwritten(h, p->end, start)))
			return VERDICT_OK;
	}
	if (h->data_evicted)
		return VERDICT_UNKNOWN;
	snprintf(why, n, "reads 0 though the %s [%llu, %llu] ended before the access began",
		 kind_name(last->kind), (unsigned long long)last->start,
		 (unsigned long long)last->end);
	return VERDICT_BAD;
}

enum verdict history_check_word(struct page_history *h, uint64_t page, unsigned word,
				uint64_t value, uint64_t start, uint64_t end, char *why, size_t n)
{
	uint64_t id = value >> 24;
	const struct event *w = NULL, *gone;
	enum verdict v = VERDICT_OK;

	if (value && (value & 15) != word) {
		snprintf(why, n, "holds %#llx, a value for word %llu", (unsigned long long)value,
			 (unsigned long long)(value & 15));
		return VERDICT_BAD;
	}
	if (value && ((value >> 4) & 0xfffff) != (page & 0xfffff)) {
		snprintf(why, n, "holds %#llx, a value written to page %llu",
			 (unsigned long long)value, (unsigned long long)((value >> 4) & 0xfffff));
		return VERDICT_BAD;
	}
	pthread_mutex_lock(&h->lock);
	if (!value) {
		v = check_zero(h, start, end, why, n);
		goto out;
	}
	for (unsigned i = 0; i < ring_len(h); i++)
		if (h->ring[i].kind == EVENT_WRITE && h->ring[i].id == id)
			w = &h->ring[i];
	if (!w) {
		if (id <= h->evicted_write_id) {
			v = VERDICT_UNKNOWN;
		} else {
			snprintf(why, n, "holds %#llx from write %llu, which never wrote this page",
				 (unsigned long long)value, (unsigned long long)id);
			v = VERDICT_BAD;
		}
		goto out;
	}
	if (w->end != HISTORY_OPEN && (gone = overwritten(h, w->end, start))) {
		snprintf(why, n,
			 "returns write %llu (ended %llu) though the %s [%llu, %llu] ended before "
			 "the access began: a stale read",
			 (unsigned long long)id, (unsigned long long)w->end, kind_name(gone->kind),
			 (unsigned long long)gone->start, (unsigned long long)gone->end);
		v = VERDICT_BAD;
	}
out:
	pthread_mutex_unlock(&h->lock);
	return v;
}

enum verdict history_could_be(struct page_history *h, bool private, uint64_t start, uint64_t end,
			      char *why, size_t n)
{
	uint8_t want = private ? EVENT_TO_PRIVATE : EVENT_TO_SHARED;
	const struct event *before = NULL;
	enum verdict v = VERDICT_OK;

	pthread_mutex_lock(&h->lock);
	/* Conversions are serialized: the last one to end before start set the state then. */
	for (unsigned i = 0; i < ring_len(h); i++) {
		const struct event *e = &h->ring[i];

		if (is_data(e->kind))
			continue;
		if (e->kind == EVENT_HIDDEN) {
			if (private && e->start < end && (e->end == HISTORY_OPEN || e->end >= start))
				goto out;
			continue;
		}
		if (e->end != HISTORY_OPEN && e->end < start) {
			if (!before || e->end > before->end)
				before = e;
		} else if (e->start < end && e->kind == want) {
			goto out; /* converted to that kind during the access */
		}
	}
	if (before ? before->kind == want : (!h->attr_evicted && !private))
		goto out; /* files start shared (INIT_SHARED) */
	if (!before && h->attr_evicted) {
		v = VERDICT_UNKNOWN;
		goto out;
	}
	snprintf(why, n, "was %s throughout [%llu, %llu]%s", private ? "shared" : "private",
		 (unsigned long long)start, (unsigned long long)end,
		 before ? " (since a conversion ended before it)" : "");
	v = VERDICT_BAD;
out:
	pthread_mutex_unlock(&h->lock);
	return v;
}
