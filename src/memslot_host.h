/* The host VM's slots behind a VM's memslots on the kvm backend; memslot.c's side of them. */
#ifndef GMEM_MEMSLOT_HOST_H
#define GMEM_MEMSLOT_HOST_H

#include "memslot.h"

/* The slot with this id (as_id << 16 | slot), or NULL; under vs->lock. */
struct memslot *memslot_by_id(struct vm_memslots *vs, uint32_t id);
/*
 * Gives the host VM new slot `slot` (replacing `old`, a move or a flags
 * change, when not NULL) before the library publishes it; nothing changes on
 * failure. A run of another slot holding the slot's id is moved first.
 */
int memslot_host_create(struct vm_memslots *vs, const struct kvm_userspace_memory_region2 *mem,
			struct memslot *slot, struct memslot *old);
/* Undoes memslot_host_create when the library could not publish the slot after all. */
void memslot_host_create_undo(struct vm_memslots *vs, struct memslot *slot, struct memslot *old);
/* After a move was published: the old slot's runs and ids go back. */
void memslot_host_release(struct vm_memslots *vs, struct memslot *old);
/* Removes a deleted slot's host slots. */
void memslot_host_delete(struct vm_memslots *vs, struct memslot *old);

#endif
