/* The software stage-2: a 4-level radix table over gfns with 4K, 2M and 1G leaves, and its invalidation. */
#define _GNU_SOURCE
#include <string.h>
#include <linux/membarrier.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "rcu.h"

#include "mmu/stage2.h"

#define MMU_TABLE_BITS 9
#define MMU_TABLE_ENTRIES (1 << MMU_TABLE_BITS)
#define MMU_ROOT_LEVEL 3 /* 48-bit guest-physical space */

struct mmu_table {
	_Atomic uint64_t e[MMU_TABLE_ENTRIES];
	struct rcu_head rcu;
};

static unsigned mmu_index(gfn_t gfn, int level)
{
	return (gfn >> (MMU_TABLE_BITS * level)) & (MMU_TABLE_ENTRIES - 1);
}

static bool spte_is_table(uint64_t e)
{
	return (e & SPTE_PRESENT) && !(e & SPTE_LEAF);
}

/* Tables are 16-byte aligned heap blocks: only PRESENT and LEAF share their word. */
static struct mmu_table *spte_table(uint64_t e)
{
	return (struct mmu_table *)(uintptr_t)(e & ~(SPTE_PRESENT | SPTE_LEAF));
}

int mmu_init(struct mmu *mmu)
{
	struct mmu_table *root = gm_zalloc(sizeof(*root));

	if (!root)
		return -ENOMEM;
	/* Every field starts empty whatever the caller's memory held (no vCPU, no invalidation). */
	memset(mmu, 0, sizeof(*mmu));
	atomic_init(&mmu->root, root);
	pthread_mutex_init(&mmu->lock, NULL);
	pthread_mutex_init(&mmu->vcpus_lock, NULL);
	return 0;
}

static void table_free_tree(struct mmu_table *t, int level)
{
	for (int i = 0; level > 0 && i < MMU_TABLE_ENTRIES; i++) {
		uint64_t e = atomic_load_explicit(&t->e[i], memory_order_relaxed);

		if (spte_is_table(e))
			table_free_tree(spte_table(e), level - 1);
	}
	gm_free(t);
}

void mmu_destroy(struct mmu *mmu)
{
	table_free_tree(atomic_load(&mmu->root), MMU_ROOT_LEVEL);
	pthread_mutex_destroy(&mmu->lock);
	pthread_mutex_destroy(&mmu->vcpus_lock);
}

uint64_t mmu_lookup(struct mmu *mmu, gfn_t gfn, enum mmu_level *level)
{
	struct mmu_table *t = atomic_load_explicit(&mmu->root, memory_order_acquire);

	if (gfn >> (MMU_TABLE_BITS * (MMU_ROOT_LEVEL + 1)))
		return 0;
	for (int l = MMU_ROOT_LEVEL; l >= 0; l--) {
		uint64_t e = atomic_load_explicit(&t->e[mmu_index(gfn, l)], memory_order_acquire);

		if (!(e & SPTE_PRESENT))
			return 0;
		if (e & SPTE_LEAF) {
			*level = (enum mmu_level)l;
			return e;
		}
		t = spte_table(e);
	}
	return 0;
}

uint64_t mmu_seq_begin(struct mmu *mmu)
{
	return atomic_load_explicit(&mmu->invalidate_seq, memory_order_acquire);
}

static void table_rcu_free(struct rcu_head *head)
{
	struct mmu_table *t = caa_container_of(head, struct mmu_table, rcu);

	gm_free(t);
}

/* Forgets every leaf below a table that a huge leaf replaces; frees it after a grace period. */
static void table_retire(struct mmu *mmu, struct mmu_table *t, int level)
{
	for (int i = 0; i < MMU_TABLE_ENTRIES; i++) {
		uint64_t e = atomic_load_explicit(&t->e[i], memory_order_relaxed);

		if (!(e & SPTE_PRESENT))
			continue;
		if (e & SPTE_LEAF)
			atomic_fetch_sub(&mmu->mapped_pages[level], 1);
		else
			table_retire(mmu, spte_table(e), level - 1);
	}
	gm_call_rcu(&t->rcu, table_rcu_free);
}

/*
 * Whether a leaf over [gfn, end) decided under seq may not be mapped: an
 * invalidation ended since, or one in progress meets the leaf. The whole leaf:
 * a huge one decided before a change to any page under it would map that page stale.
 */
static bool mmu_retry(struct mmu *mmu, gfn_t gfn, gfn_t end, uint64_t seq)
{
	if (mmu->invalidate_in_progress && gfn < mmu->invalidate_end && end > mmu->invalidate_start)
		return true;
	return atomic_load_explicit(&mmu->invalidate_seq, memory_order_relaxed) != seq;
}

bool mmu_seq_stale(struct mmu *mmu, gfn_t gfn, uint64_t seq)
{
	bool stale;

	pthread_mutex_lock(&mmu->lock);
	stale = mmu_retry(mmu, gfn, gfn + 1, seq);
	pthread_mutex_unlock(&mmu->lock);
	return stale;
}

int mmu_map(struct mmu *mmu, gfn_t gfn, enum mmu_level level, void *hva, bool private,
	    bool writable, uint64_t seq)
{
	uint64_t leaf = (uint64_t)(uintptr_t)hva | SPTE_PRESENT | SPTE_LEAF |
			(private ? SPTE_PRIVATE : 0) | (writable ? SPTE_WRITABLE : 0);
	struct mmu_table *t;
	int ret = 0;

	if (gfn >> (MMU_TABLE_BITS * (MMU_ROOT_LEVEL + 1)))
		return -EFAULT;
	pthread_mutex_lock(&mmu->lock);
	if (mmu_retry(mmu, gfn, gfn + (1ULL << (MMU_TABLE_BITS * level)), seq)) {
		atomic_fetch_add(&mmu->retries, 1);
		ret = -EAGAIN;
		goto out;
	}
	t = atomic_load_explicit(&mmu->root, memory_order_relaxed);
	for (int l = MMU_ROOT_LEVEL; l > (int)level; l--) {
		_Atomic uint64_t *slot = &t->e[mmu_index(gfn, l)];
		uint64_t e = atomic_load_explicit(slot, memory_order_relaxed);

		if (!spte_is_table(e)) {
			struct mmu_table *child = gm_zalloc(sizeof(*child));

			if (!child) {
				ret = -ENOMEM;
				goto out;
			}
			/* A huge leaf in the way was of the wrong kind: it goes. */
			if (e & SPTE_PRESENT)
				atomic_fetch_sub(&mmu->mapped_pages[l], 1);
			e = (uint64_t)(uintptr_t)child | SPTE_PRESENT;
			atomic_store_explicit(slot, e, memory_order_release);
		}
		t = spte_table(e);
	}
	_Atomic uint64_t *slot = &t->e[mmu_index(gfn, level)];
	uint64_t old = atomic_load_explicit(slot, memory_order_relaxed);

	atomic_store_explicit(slot, leaf, memory_order_release);
	if (spte_is_table(old))
		table_retire(mmu, spte_table(old), level - 1);
	else if (old & SPTE_PRESENT)
		atomic_fetch_sub(&mmu->mapped_pages[level], 1);
	atomic_fetch_add(&mmu->mapped_pages[level], 1);
out:
	pthread_mutex_unlock(&mmu->lock);
	return ret;
}

/* Clears every leaf that overlaps [start, end) below table t (level l). */
static void zap_table(struct mmu *mmu, struct mmu_table *t, int l, gfn_t base, gfn_t start, gfn_t end)
{
	uint64_t span = 1ULL << (MMU_TABLE_BITS * l);

	for (int i = 0; i < MMU_TABLE_ENTRIES; i++) {
		gfn_t lo = base + i * span, hi = lo + span;
		uint64_t e;

		if (hi <= start || lo >= end)
			continue;
		e = atomic_load_explicit(&t->e[i], memory_order_relaxed);
		if (!(e & SPTE_PRESENT))
			continue;
		if (e & SPTE_LEAF) {
			atomic_store_explicit(&t->e[i], 0, memory_order_release);
			atomic_fetch_sub(&mmu->mapped_pages[l], 1);
			atomic_fetch_add(&mmu->zaps, 1);
		} else {
			zap_table(mmu, spte_table(e), l - 1, lo, start, end);
		}
	}
}

/* ---- vCPUs: the translations they cache, and waiting for them ---- */

static pthread_once_t membarrier_once = PTHREAD_ONCE_INIT;
static bool membarrier_ok;
static void *barrier_page;

static void membarrier_init(void)
{
	membarrier_ok = syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) == 0;
	if (!membarrier_ok)
		barrier_page = mmap(NULL, GM_PAGE_SIZE, PROT_READ | PROT_WRITE,
				    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
}

/*
 * A full barrier on every thread of the process that is running now, so a
 * vCPU's plain store of its access_seq is ordered before its later loads as
 * seen from here. Without membarrier, changing a touched page's protection
 * makes the kernel interrupt every CPU that runs this address space.
 */
static void process_barrier(void)
{
	if (membarrier_ok) {
		syscall(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0);
	} else if (barrier_page != MAP_FAILED && barrier_page) {
		*(volatile char *)barrier_page = 1;
		mprotect(barrier_page, GM_PAGE_SIZE, PROT_READ);
		mprotect(barrier_page, GM_PAGE_SIZE, PROT_READ | PROT_WRITE);
	}
	mmu_full_fence();
}

/* Waits until no vCPU can still use a translation zapped before the call. */
static void mmu_wait_vcpus(struct mmu *mmu)
{
	/* Every running vCPU now either sees the zap or is seen inside an access. */
	process_barrier();
	pthread_mutex_lock(&mmu->vcpus_lock);
	for (struct mmu_vcpu *mv = mmu->vcpus; mv; mv = mv->next) {
		uint64_t seq = atomic_load_explicit(&mv->access_seq, memory_order_acquire);

		if (!(seq & 1))
			continue;
		while (atomic_load_explicit(&mv->access_seq, memory_order_acquire) == seq)
			sched_yield();
	}
	pthread_mutex_unlock(&mmu->vcpus_lock);
}

void mmu_vcpu_join(struct mmu *mmu, struct mmu_vcpu *mv)
{
	pthread_once(&membarrier_once, membarrier_init);
	mv->mmu = mmu;
	mv->generation = &mmu->generation;
	mmu_vcpu_set_kind(mv, false, false);
	pthread_mutex_lock(&mmu->vcpus_lock);
	mv->next = mmu->vcpus;
	mmu->vcpus = mv;
	pthread_mutex_unlock(&mmu->vcpus_lock);
}

void mmu_vcpu_leave(struct mmu_vcpu *mv)
{
	struct mmu *mmu = mv->mmu;

	pthread_mutex_lock(&mmu->vcpus_lock);
	for (struct mmu_vcpu **pp = &mmu->vcpus; *pp; pp = &(*pp)->next) {
		if (*pp == mv) {
			*pp = mv->next;
			break;
		}
	}
	pthread_mutex_unlock(&mmu->vcpus_lock);
}

void mmu_vcpu_set_kind(struct mmu_vcpu *mv, bool check_kind, bool private)
{
	uint64_t kind_mask = check_kind ? SPTE_PRIVATE : 0;
	uint64_t kind_bits = check_kind && private ? SPTE_PRIVATE : 0;

	mv->need_mask[0] = SPTE_PRESENT | kind_mask;
	mv->need_bits[0] = SPTE_PRESENT | kind_bits;
	mv->need_mask[1] = SPTE_PRESENT | SPTE_WRITABLE | kind_mask;
	mv->need_bits[1] = SPTE_PRESENT | SPTE_WRITABLE | kind_bits;
}

char *mmu_translate(struct mmu_vcpu *mv, gpa_t gpa, bool write)
{
	gfn_t gfn = gpa >> GM_PAGE_SHIFT;
	uint64_t gen = atomic_load_explicit(&mv->mmu->generation, memory_order_acquire);
	enum mmu_level level;
	uint64_t spte;

	gm_rcu_read_lock();
	spte = mmu_lookup(mv->mmu, gfn, &level);
	gm_rcu_read_unlock();
	if (!spte)
		return NULL;
	spte = (uint64_t)(uintptr_t)spte_hva(spte, level, gfn) | (spte & SPTE_FLAGS);
	mv->tlb[gfn % MMU_TLB_ENTRIES] = (struct mmu_tlb_entry){ gfn, gen, spte };
	return mmu_spte_allows(mv, spte, write) ? mmu_spte_addr(spte, gpa) : NULL;
}

/* ---- invalidation ---- */

void mmu_invalidate_begin(struct mmu *mmu, gfn_t start, gfn_t end)
{
	pthread_mutex_lock(&mmu->lock);
	if (!mmu->invalidate_in_progress++) {
		/* Empty until a range is added: an empty invalidation holds no fault off. */
		mmu->invalidate_start = UINT64_MAX;
		mmu->invalidate_end = 0;
	}
	if (start >= end) {
		/* Nothing mapped here: only the sequence moves, at the end. */
		pthread_mutex_unlock(&mmu->lock);
		return;
	}
	if (start < mmu->invalidate_start)
		mmu->invalidate_start = start;
	if (end > mmu->invalidate_end)
		mmu->invalidate_end = end;
	zap_table(mmu, atomic_load_explicit(&mmu->root, memory_order_relaxed), MMU_ROOT_LEVEL, 0,
		  start, end);
	atomic_fetch_add_explicit(&mmu->generation, 1, memory_order_release);
	pthread_mutex_unlock(&mmu->lock);
	/* No vCPU may still be using a zapped translation when memory changes. */
	mmu_wait_vcpus(mmu);
}

void mmu_invalidate_end(struct mmu *mmu)
{
	pthread_mutex_lock(&mmu->lock);
	atomic_fetch_add_explicit(&mmu->invalidate_seq, 1, memory_order_release);
	mmu->invalidate_in_progress--;
	pthread_mutex_unlock(&mmu->lock);
}
