/* Memslots: guest frames bound to host memory or to a guest_memfd range, published with RCU. */
#ifndef GMEM_MEMSLOT_H
#define GMEM_MEMSLOT_H

#include "rcu.h"

#include "internal.h"

#define GM_USER_MEM_SLOTS 32764    /* x86 KVM_USER_MEM_SLOTS */
#define GM_ADDRESS_SPACES 2        /* x86 with SMM */
#define GM_MEM_MAX_NR_PAGES ((1ULL << 31) - 1)

struct memslot {
	uint32_t id;            /* (as_id << 16) | slot id */
	uint32_t flags;         /* KVM_MEM_* */
	gfn_t base_gfn;
	uint64_t npages;
	uint64_t userspace_addr;
	/* The bound file, cleared when the file is released (no reference held, as in KVM). */
	struct gmem *_Atomic gmem;
	pgoff_t pgoff;
	bool gmem_only;         /* the file has MMAP: shared accesses are served from it too */
	struct memslot *next_binding; /* the file's list of bindings, under its invalidate_lock */
	struct rcu_head rcu;
};

/* An immutable, sorted array; replaced as a whole on every change. */
struct memslots {
	size_t nr;
	struct memslot *slots[];
};

/* A copy of what a fault needs, taken under RCU so the fault can sleep afterwards. */
struct memslot_view {
	uint32_t id;
	uint32_t flags;
	gfn_t base_gfn;
	uint64_t npages;
	uint64_t userspace_addr;
	struct gmem *gmem;      /* referenced, or NULL */
	bool has_gmem;          /* KVM_MEM_GUEST_MEMFD, even when the file is gone */
	bool gmem_only;
	pgoff_t pgoff;
};

struct vm;
int memslot_set(struct vm *vm, const struct kvm_userspace_memory_region2 *mem);
/* Looks gfn up; fills *view and returns true when a slot covers it. */
bool memslot_lookup(struct vm *vm, gfn_t gfn, struct memslot_view *view);
void memslot_view_put(struct memslot_view *view);
void memslots_destroy(struct vm *vm);
/* Clears every binding of the file being released (vm->slots_lock held). */
void memslot_release_bindings(struct gmem *g);

#endif
