/* kvm_gmem_populate: a platform's launch command hands the pages of a private range to its trusted entity. */
#ifndef GMEM_POPULATE_H
#define GMEM_POPULATE_H

#include "vm.h"

/*
 * The platform's work on one page (kvm_gmem_populate_cb): dst is the
 * library's address of page index of g, which sits at gfn; src a copy of the
 * caller's source page, or NULL to take the page over in place. 0 or -errno.
 */
typedef int (*gmem_populate_cb)(struct gmem *g, pgoff_t index, gfn_t gfn, void *dst,
				const void *src, void *opaque);

/*
 * kvm_gmem_populate as mainline has it after 7.0: for each of npages pages
 * from start_gfn (clamped to the slot), with the file's invalidate_lock held
 * for write, the page must be private (in the file, or in the VM with per-VM
 * attributes) and cb takes it. src is NULL or a 4 KiB-aligned address of
 * shared or plain host memory. Returns the error if the first page failed,
 * else the number of pages done. The VM's slots lock is held by the caller,
 * which calls gmem_put_flush once it dropped it (the file may have been closed
 * meanwhile: populate's reference is then the last).
 */
long gmem_populate(struct vm *vm, gfn_t start_gfn, const void *src, long npages,
		   gmem_populate_cb cb, void *opaque);

#endif
