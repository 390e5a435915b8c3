/* Per-file memory attributes: a range map over page indices, equal neighbours merged. */
#ifndef GMEM_ATTR_H
#define GMEM_ATTR_H

#include "internal.h"

struct attr_range {
	pgoff_t start; /* the range runs to the next range's start */
	uint64_t attrs;
};

struct attr_map {
	struct attr_range *ranges; /* sorted by start; ranges[0].start == 0 */
	size_t nr;
	size_t cap;
	pgoff_t npages;
};

int attr_map_init(struct attr_map *m, pgoff_t npages, uint64_t attrs);
void attr_map_destroy(struct attr_map *m);
/* Attributes at index; *run_end gets the end of the run holding it. */
uint64_t attr_get(const struct attr_map *m, pgoff_t index, pgoff_t *run_end);
/* True when [start, end) has one value, stored in *attrs. */
bool attr_uniform(const struct attr_map *m, pgoff_t start, pgoff_t end, uint64_t *attrs);
/* Makes room so that the next attr_set cannot fail; -ENOMEM otherwise. */
int attr_reserve(struct attr_map *m);
/* Makes room for n more ranges, so that n / 2 sets cannot fail. */
int attr_reserve_n(struct attr_map *m, size_t n);
/* Gives back room beyond cap (reserved for a change that failed), as if never reserved. */
void attr_trim(struct attr_map *m, size_t cap);
/* Gives back room far beyond what the map holds now (after a file became uniform again). */
void attr_shrink(struct attr_map *m);
/* Copies the ranges over [start, end) into out (cap entries); returns how many there are. */
size_t attr_snapshot(const struct attr_map *m, pgoff_t start, pgoff_t end, struct attr_range *out,
		     size_t cap);
/* Sets [start, end) to attrs; cannot fail after a successful attr_reserve. */
void attr_set(struct attr_map *m, pgoff_t start, pgoff_t end, uint64_t attrs);
/* Number of pages whose attributes equal attrs. */
pgoff_t attr_count(const struct attr_map *m, uint64_t attrs);
size_t attr_map_bytes(const struct attr_map *m);

#endif
