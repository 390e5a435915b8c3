/* The reverse map (SNP's RMP) of one guest_memfd: who owns each 4 KiB page, as the trusted entity sees it. */
#ifndef GMEM_PLATFORM_RMP_H
#define GMEM_PLATFORM_RMP_H

#include "attr.h"

/*
 * A page is the hypervisor's until the platform assigns it to the guest
 * (populate, or the guest's first private access); the guest then validates
 * it (PVALIDATE) before it may touch it. Populate assigns and validates.
 */
enum rmp_state {
	RMP_HYPERVISOR = 0,
	RMP_ASSIGNED = 1,
	RMP_VALIDATED = 3, /* assigned and validated */
};

struct rmp {
	/* lock guards map; taken inside the file's invalidate_lock, never around it. */
	pthread_mutex_t lock;
	struct attr_map map; /* page index -> enum rmp_state, equal neighbours merged */
};

/* A map of npages pages, all the hypervisor's; NULL without memory. */
struct rmp *rmp_create(pgoff_t npages);
void rmp_destroy(struct rmp *r);
enum rmp_state rmp_get(struct rmp *r, pgoff_t index);
/* Whether every page of [start, end) is in state. */
bool rmp_uniform(struct rmp *r, pgoff_t start, pgoff_t end, enum rmp_state state);
/* Sets [start, end) to state; -ENOMEM leaves the map as it was. */
int rmp_set(struct rmp *r, pgoff_t start, pgoff_t end, enum rmp_state state);
/* Room for one rmp_set that then cannot fail. */
int rmp_reserve(struct rmp *r);
/*
 * The first run of pages in [start, end) that the guest holds (assigned or
 * validated), as [*run_start, *run_end); false when there is none.
 */
bool rmp_next_guest_run(struct rmp *r, pgoff_t start, pgoff_t end, pgoff_t *run_start,
			pgoff_t *run_end);
/* Pages in state. */
pgoff_t rmp_count(struct rmp *r, enum rmp_state state);

#endif
