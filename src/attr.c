/* Per-file memory attributes as a range map: converting one range costs the same at any size. */
#include <string.h>

#include "attr.h"

/* Room a map never goes below: a range and the two a first conversion adds. */
#define ATTR_MIN_CAP 4

int attr_map_init(struct attr_map *m, pgoff_t npages, uint64_t attrs)
{
	m->cap = ATTR_MIN_CAP;
	m->ranges = gm_zalloc(m->cap * sizeof(*m->ranges));
	if (!m->ranges)
		return -ENOMEM;
	m->ranges[0] = (struct attr_range){ 0, attrs };
	m->nr = 1;
	m->npages = npages;
	return 0;
}

void attr_map_destroy(struct attr_map *m)
{
	gm_free(m->ranges);
	m->ranges = NULL;
	m->nr = m->cap = 0;
}

/* Index of the range that holds page index. */
static size_t attr_find(const struct attr_map *m, pgoff_t index)
{
	size_t lo = 0, hi = m->nr;

	while (hi - lo > 1) {
		size_t mid = lo + (hi - lo) / 2;

		if (m->ranges[mid].start <= index)
			lo = mid;
		else
			hi = mid;
	}
	return lo;
}

static pgoff_t attr_range_end(const struct attr_map *m, size_t i)
{
	return i + 1 < m->nr ? m->ranges[i + 1].start : m->npages;
}

uint64_t attr_get(const struct attr_map *m, pgoff_t index, pgoff_t *run_end)
{
	size_t i = attr_find(m, index);

	if (run_end)
		*run_end = attr_range_end(m, i);
	return m->ranges[i].attrs;
}

bool attr_uniform(const struct attr_map *m, pgoff_t start, pgoff_t end, uint64_t *attrs)
{
	size_t i = attr_find(m, start);

	if (attrs)
		*attrs = m->ranges[i].attrs;
	return attr_range_end(m, i) >= end;
}

int attr_reserve(struct attr_map *m)
{
	/* A set splits at most one range in two and adds one boundary. */
	return attr_reserve_n(m, 2);
}

int attr_reserve_n(struct attr_map *m, size_t n)
{
	struct attr_range *r;
	size_t cap;

	if (m->nr + n <= m->cap)
		return 0;
	cap = m->cap * 2 > m->nr + n ? m->cap * 2 : m->nr + n;
	r = gm_realloc(m->ranges, cap * sizeof(*r));
	if (!r)
		return -ENOMEM;
	m->ranges = r;
	m->cap = cap;
	return 0;
}

void attr_trim(struct attr_map *m, size_t cap)
{
	struct attr_range *r;

	if (m->cap <= cap || m->nr > cap)
		return;
	/* Shrinking cannot really fail; if it does, the bigger block stays. */
	r = gm_realloc(m->ranges, cap * sizeof(*r));
	if (r) {
		m->ranges = r;
		m->cap = cap;
	}
}

void attr_shrink(struct attr_map *m)
{
	size_t want = 2 * m->nr > ATTR_MIN_CAP ? 2 * m->nr : ATTR_MIN_CAP;

	/* Only a map at a quarter of its room shrinks, so alternating edits do not realloc each time. */
	if (m->cap >= 2 * want)
		attr_trim(m, want);
}

void attr_set(struct attr_map *m, pgoff_t start, pgoff_t end, uint64_t attrs)
{
	size_t first = attr_find(m, start), last = attr_find(m, end - 1);
	uint64_t tail_attrs = m->ranges[last].attrs;
	pgoff_t tail_end = attr_range_end(m, last);
	struct attr_range repl[3];
	size_t nrepl = 0, removed, lo = first;

	/* Replace ranges first..last with: head part, the new range, tail part. */
	if (m->ranges[first].start < start)
		repl[nrepl++] = m->ranges[first];
	repl[nrepl++] = (struct attr_range){ start, attrs };
	if (end < tail_end)
		repl[nrepl++] = (struct attr_range){ end, tail_attrs };

	removed = last - first + 1;
	memmove(&m->ranges[first + nrepl], &m->ranges[last + 1],
		(m->nr - last - 1) * sizeof(*m->ranges));
	memcpy(&m->ranges[first], repl, nrepl * sizeof(*repl));
	m->nr = m->nr - removed + nrepl;

	/* Merge equal neighbours around what changed. */
	if (lo > 0)
		lo--;
	for (size_t i = lo; i + 1 < m->nr && i <= first + nrepl;) {
		if (m->ranges[i].attrs == m->ranges[i + 1].attrs) {
			memmove(&m->ranges[i + 1], &m->ranges[i + 2],
				(m->nr - i - 2) * sizeof(*m->ranges));
			m->nr--;
		} else {
			i++;
		}
	}
}

pgoff_t attr_count(const struct attr_map *m, uint64_t attrs)
{
	pgoff_t n = 0;

	for (size_t i = 0; i < m->nr; i++)
		if (m->ranges[i].attrs == attrs)
			n += attr_range_end(m, i) - m->ranges[i].start;
	return n;
}

size_t attr_map_bytes(const struct attr_map *m)
{
	return m->cap * sizeof(*m->ranges);
}

size_t attr_snapshot(const struct attr_map *m, pgoff_t start, pgoff_t end, struct attr_range *out,
		     size_t cap)
{
	size_t n = 0;

	for (size_t i = attr_find(m, start); i < m->nr && m->ranges[i].start < end; i++, n++) {
		if (n < cap) {
			out[n] = m->ranges[i];
			if (out[n].start < start)
				out[n].start = start;
		}
	}
	return n;
}
