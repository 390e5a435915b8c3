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
};

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

#endif
