/* The memory behind a guest_memfd: a memfd, on hugetlbfs for huge folios when it can be. */
#ifndef GMEM_BACKING_H
#define GMEM_BACKING_H

#include "internal.h"

struct backing {
	int fd;                 /* the store, sized to the file */
	enum gm_backing_kind kind;   /* or GM_BACKING_HOST_GMEM */
	uint64_t size;
	uint64_t page_size;     /* the store's host page size */
	void *map;              /* the library's own mapping of the whole store */
	/*
	 * hugetlbfs: a folio whose pages are not all of one kind cannot be mapped
	 * for the host in 4 KiB pieces, so it is split: its contents move to a
	 * plain memfd of the same size (small_fd), one bit in split per folio.
	 */
	int small_fd;
	void *small_map;
	uint64_t *split;
	uint64_t nr_split;
};

/*
 * The largest store: the library maps a store whole, so it must fit in the
 * process's address space (128 TiB with 4-level paging). Half of it leaves
 * room for everything else, so the limit does not depend on what else is mapped.
 */
#define BACKING_MAX_SIZE (1ULL << 46)

int backing_init(struct backing *b, uint64_t size, unsigned folio_shift);
/*
 * The host kernel's guest_memfd of host_vm_fd. The library maps it whole only
 * when the host's KVM needs that view (with_view); the mapping is then b->map.
 */
int backing_init_host(struct backing *b, int host_vm_fd, uint64_t size, bool with_view);
void backing_destroy(struct backing *b);
int backing_allocate(struct backing *b, uint64_t off, uint64_t len);
int backing_punch(struct backing *b, uint64_t off, uint64_t len);
uint64_t backing_allocated_bytes(const struct backing *b);
/* Maps [off, off + len) of the store at addr (MAP_FIXED, shared). */
int backing_map_at(const struct backing *b, void *addr, size_t len, int prot, uint64_t off);

/*
 * A mapping of its own for a device pin of [off, off + len): those pages
 * (whole huge pages on hugetlbfs, where an unsplit folio is of one kind and
 * a pinned one cannot split) between inaccessible guard pages, never inherited
 * by a child nor dumped. *addr is the address of off. -errno on failure.
 */
int backing_map_pin(const struct backing *b, uint64_t off, uint64_t len, void **addr);
/* Unmaps what backing_map_pin(b, off, len) returned at addr. */
void backing_unmap_pin(const struct backing *b, void *addr, uint64_t off, uint64_t len);

/* Whether the folio holding off lives in the split store. */
bool backing_is_split(const struct backing *b, uint64_t off);
/* The library's address of off, in whichever store holds it (NULL without a mapping). */
void *backing_addr(const struct backing *b, uint64_t off);
/* Room in the split store for the folio at off: the part of a split that can fail. */
int backing_split_prepare(struct backing *b, uint64_t off);
/* Moves the folio at off to the split store; prepared before, it cannot fail. */
void backing_split(struct backing *b, uint64_t off);
/* Moves a split folio back to a huge page; -errno (and still split) without one. */
int backing_merge(struct backing *b, uint64_t off);

#endif
