/* The software stage-2: gfn -> host page, 4K/2M/1G leaves, invalidation with a sequence count. */
#ifndef GMEM_MMU_H
#define GMEM_MMU_H

#include "internal.h"

enum mmu_level { MMU_LEVEL_4K = 0, MMU_LEVEL_2M = 1, MMU_LEVEL_1G = 2, MMU_LEVELS = 3 };

/* A leaf entry: host address of the mapped page | flags in the low bits. */
#define SPTE_PRESENT  (1ULL << 0)
#define SPTE_LEAF     (1ULL << 1)
#define SPTE_PRIVATE  (1ULL << 2)
#define SPTE_WRITABLE (1ULL << 3)
#define SPTE_FLAGS    0xfffULL

struct mmu_table;

struct mmu {
	struct mmu_table *_Atomic root;
	/* mmu_lock protects the tables' contents and the invalidation state below. */
	pthread_mutex_t lock;
	unsigned long invalidate_in_progress;
	gfn_t invalidate_start, invalidate_end;
	_Atomic uint64_t invalidate_seq;
	/* Bumped by every zap: translations cached in vCPUs stay valid only within one generation. */
	_Atomic uint64_t generation;
	/* statistics */
	atomic_ullong faults, retries, zaps;
	atomic_ullong mapped_pages[MMU_LEVELS];
};

int mmu_init(struct mmu *mmu);
void mmu_destroy(struct mmu *mmu);

/* Lock-free walk; call inside an RCU read-side section. Returns the leaf or 0. */
uint64_t mmu_lookup(struct mmu *mmu, gfn_t gfn, enum mmu_level *level);

/* The host address a leaf gives for gfn. */
static inline void *spte_hva(uint64_t spte, enum mmu_level level, gfn_t gfn)
{
	uint64_t mask = (1ULL << (9 * level)) - 1;

	return (char *)(uintptr_t)(spte & ~SPTE_FLAGS) + ((gfn & mask) << GM_PAGE_SHIFT);
}

/* Installs a leaf unless an invalidation raced with the fault; -EAGAIN then. */
int mmu_map(struct mmu *mmu, gfn_t gfn, enum mmu_level level, void *hva, bool private,
	    bool writable, uint64_t seq);
uint64_t mmu_seq_begin(struct mmu *mmu);

/* Invalidation: begin zaps [start, end) and holds faults off until end. */
void mmu_invalidate_begin(struct mmu *mmu, gfn_t start, gfn_t end);
void mmu_invalidate_end(struct mmu *mmu);

#endif
