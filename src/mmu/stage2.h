/* The software stage-2: gfn -> host page, 4K/2M/1G leaves, invalidation, and the vCPUs' cached view. */
#ifndef GMEM_MMU_STAGE2_H
#define GMEM_MMU_STAGE2_H

#include "internal.h"

enum mmu_level { MMU_LEVEL_4K = 0, MMU_LEVEL_2M = 1, MMU_LEVEL_1G = 2, MMU_LEVELS = 3 };

/* A leaf entry: host address of the mapped page | flags in the low bits. */
#define SPTE_PRESENT  (1ULL << 0)
#define SPTE_LEAF     (1ULL << 1)
#define SPTE_PRIVATE  (1ULL << 2)
#define SPTE_WRITABLE (1ULL << 3)
#define SPTE_FLAGS    0xfffULL

struct mmu_table;
struct mmu_vcpu;

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
	/* vcpus_lock protects the list of vCPUs that an invalidation waits for. */
	pthread_mutex_t vcpus_lock;
	struct mmu_vcpu *vcpus;
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
/* Whether an invalidation covers gfn or ended since seq: what the fault saw may be gone. */
bool mmu_seq_stale(struct mmu *mmu, gfn_t gfn, uint64_t seq);

/*
 * Invalidation: begin zaps [start, end), holds faults off until end, and
 * returns once no vCPU can still use a translation of the range (as KVM
 * flushes remote TLBs). An empty range zaps nothing and only makes faults
 * that raced with the pair retry.
 */
void mmu_invalidate_begin(struct mmu *mmu, gfn_t start, gfn_t end);
void mmu_invalidate_end(struct mmu *mmu);

/* ---- a vCPU's view of the stage-2: its translation cache and the accesses invalidations wait for ---- */

#define MMU_TLB_ENTRIES 64

/* A cached translation: valid while the MMU generation it was taken in lasts. */
struct mmu_tlb_entry {
	gfn_t gfn;
	uint64_t generation;
	uint64_t spte;     /* host address of the 4K page | SPTE flags */
};

struct mmu_vcpu {
	/*
	 * Odd while the vCPU uses a translation. Invalidations wait for it to
	 * move on; an asymmetric fence (membarrier) on their side keeps the
	 * vCPU's side to plain stores.
	 */
	_Atomic uint64_t access_seq;
	struct mmu_vcpu *next;          /* mmu->vcpus, under mmu->vcpus_lock */
	struct mmu *mmu;
	_Atomic uint64_t *generation;   /* &mmu->generation, one load nearer for the hit path */
	/* What a cached leaf must carry for a read [0] and a write [1] of the current access kind. */
	uint64_t need_mask[2], need_bits[2];
	struct mmu_tlb_entry tlb[MMU_TLB_ENTRIES];
};

/* Joins the vCPUs that invalidations of mmu wait for; leave before freeing mv. */
void mmu_vcpu_join(struct mmu *mmu, struct mmu_vcpu *mv);
void mmu_vcpu_leave(struct mmu_vcpu *mv);
/* What cached leaves must carry: an explicit kind (check_kind) must match the leaf's. */
void mmu_vcpu_set_kind(struct mmu_vcpu *mv, bool check_kind, bool private);

/* A full fence; TSan models a seq_cst read-modify-write but not a standalone fence. */
static inline void mmu_full_fence(void)
{
#if defined(__SANITIZE_THREAD__)
	static atomic_int fence_word;

	atomic_fetch_add_explicit(&fence_word, 0, memory_order_seq_cst);
#else
	atomic_thread_fence(memory_order_seq_cst);
#endif
}

static inline void mmu_access_begin(struct mmu_vcpu *mv)
{
	uint64_t seq = atomic_load_explicit(&mv->access_seq, memory_order_relaxed);

	atomic_store_explicit(&mv->access_seq, seq + 1, memory_order_relaxed);
#if defined(__SANITIZE_THREAD__)
	/* TSan does not model the invalidator's process-wide barrier: a real fence it can see. */
	mmu_full_fence();
#else
	atomic_signal_fence(memory_order_seq_cst);
#endif
}

static inline void mmu_access_end(struct mmu_vcpu *mv)
{
	uint64_t seq = atomic_load_explicit(&mv->access_seq, memory_order_relaxed);

	atomic_store_explicit(&mv->access_seq, seq + 1, memory_order_release);
}

/* Whether a leaf allows this access: present, writable for a write, of the asked kind. */
static inline bool mmu_spte_allows(const struct mmu_vcpu *mv, uint64_t spte, bool write)
{
	return (spte & mv->need_mask[write]) == mv->need_bits[write];
}

/* The host address of gpa in the 4K page a cached leaf names. */
static inline char *mmu_spte_addr(uint64_t spte, gpa_t gpa)
{
	return (char *)(uintptr_t)(spte & ~SPTE_FLAGS) + (gpa & (GM_PAGE_SIZE - 1));
}

/* The cached leaf for gpa if it is valid in this MMU generation and allows the access, else 0. */
static inline uint64_t mmu_tlb_lookup(struct mmu_vcpu *mv, gpa_t gpa, bool write)
{
	gfn_t gfn = gpa >> GM_PAGE_SHIFT;
	const struct mmu_tlb_entry *t = &mv->tlb[gfn % MMU_TLB_ENTRIES];
	uint64_t gen = atomic_load_explicit(mv->generation, memory_order_relaxed);

	if (t->gfn != gfn || t->generation != gen || !mmu_spte_allows(mv, t->spte, write))
		return 0;
	return t->spte;
}

/*
 * Walks the stage-2 for gpa and caches the leaf; the host address if it
 * allows the access, else NULL. Between mmu_access_begin and _end.
 */
char *mmu_translate(struct mmu_vcpu *mv, gpa_t gpa, bool write);

#endif
