/* The stage-2 fault path, as kvm_mmu_page_fault: slot, then the file's pfn or the HVA, then a leaf. */
#define _GNU_SOURCE
#include <sys/mman.h>

#include "gmem.h"
#include "mmu/fault.h"

/* The largest leaf the folio, the slot's alignment and uniform attributes allow. */
static enum mmu_level gmem_max_level(struct vm *vm, struct gmem *g, const struct memslot_view *s,
				     gfn_t gfn, pgoff_t index, uint64_t attrs, bool private)
{
	for (int l = (g->folio_shift - GM_PAGE_SHIFT) / 9; l > 0; l--) {
		uint64_t n = 1ULL << (9 * l);
		gfn_t gbase = gfn & ~(n - 1);
		pgoff_t ibase = index & ~(n - 1);
		uint64_t uniform;

		if ((gfn & (n - 1)) != (index & (n - 1)))
			continue;
		if (gbase < s->base_gfn || gbase + n > s->base_gfn + s->npages)
			continue;
		/* A folio split to 4 KiB pages is mapped by 4 KiB leaves. */
		if (backing_is_split(&g->backing, ibase << GM_PAGE_SHIFT))
			continue;
		if (!attr_uniform(&g->attrs, ibase, ibase + n, &uniform) || uniform != attrs)
			continue;
		/* A leaf over a page the guest has not validated would let it through. */
		if (private && g->rmp && !rmp_uniform(g->rmp, ibase, ibase + n, RMP_VALIDATED))
			continue;
		/* With per-VM attributes, a huge leaf also needs them uniform over its GPAs. */
		if (vm_attrs_in_vm(vm) &&
		    !vm_attrs_uniform(vm, gbase, gbase + n, private ? KVM_MEMORY_ATTRIBUTE_PRIVATE : 0))
			continue;
		return (enum mmu_level)l;
	}
	return MMU_LEVEL_4K;
}

static struct mmu_fault fault_result(enum mmu_fault_result result, bool private)
{
	return (struct mmu_fault){ .result = result, .private = private };
}

/* After mmu_map: -EAGAIN (an invalidation raced) retries the access; anything else fails KVM_RUN. */
static struct mmu_fault map_result(int ret, bool private)
{
	if (ret && ret != -EAGAIN)
		return (struct mmu_fault){ .result = MMU_FAULT_ERROR, .private = private, .error = -ret };
	return fault_result(MMU_FAULT_MAPPED, private);
}

/* kvm_gmem_get_pfn and the map: a page of the file, private or shared, under the file's lock. */
static struct mmu_fault fault_gmem(struct vm *vm, const struct memslot_view *s, gfn_t gfn,
				   bool private, bool want_private_attr, uint64_t seq)
{
	struct gmem *g = s->gmem;
	pgoff_t index = s->pgoff + (gfn - s->base_gfn);
	uint64_t attrs, private_attr;
	enum mmu_level level;
	char *hva;
	int ret;

	pthread_rwlock_rdlock(&g->invalidate_lock);
	attrs = attr_get(&g->attrs, index, NULL);
	private_attr = vm_has_private_mem(vm) ? (attrs & KVM_MEMORY_ATTRIBUTE_PRIVATE) : 0;
	/* Per-VM attributes are not the file's: an attribute change is caught by seq instead. */
	if (!vm_attrs_in_vm(vm) && want_private_attr != !!private_attr) {
		/* A conversion ran since the decision: decide again. */
		pthread_rwlock_unlock(&g->invalidate_lock);
		return fault_result(MMU_FAULT_MAPPED, private);
	}
	/*
	 * SNP: a private page is assigned to the guest on its first fault
	 * (kvm_arch_gmem_prepare), and served only once the guest validated it.
	 */
	if (private && g->rmp) {
		enum rmp_state st = rmp_get(g->rmp, index);

		if (st == RMP_HYPERVISOR && rmp_set(g->rmp, index, index + 1, RMP_ASSIGNED)) {
			pthread_rwlock_unlock(&g->invalidate_lock);
			return (struct mmu_fault){ .result = MMU_FAULT_ERROR, .private = true,
						   .error = ENOMEM };
		}
		if (st != RMP_VALIDATED) {
			pthread_rwlock_unlock(&g->invalidate_lock);
			return fault_result(MMU_FAULT_VC, true);
		}
	}
	level = gmem_max_level(vm, g, s, gfn, index, attrs, private);
	hva = backing_addr(&g->backing, (index & ~((1ULL << (9 * level)) - 1)) << GM_PAGE_SHIFT);
	ret = mmu_map(&vm->mmu, gfn & ~((1ULL << (9 * level)) - 1), level, hva, private, true, seq);
	pthread_rwlock_unlock(&g->invalidate_lock);
	return map_result(ret, private);
}

/*
 * GUP on a gm_mmap mapping of a guest_memfd, as the kernel's faults through
 * the file: a private page fails (a memory fault, as GUP's EFAULT), a shared
 * one is mapped from the library's own view of the store, so that a guest
 * access never waits on the mapping's fault handler. Conversions reach the
 * leaf through the VM's hva_notifier.
 */
static struct mmu_fault fault_hva_gmem(struct vm *vm, struct gmem *g, uint64_t off, int prot,
				       gfn_t gfn, bool readonly, bool write, uint64_t seq)
{
	bool writable = !readonly && (prot & PROT_WRITE);
	struct mmu_fault r;
	char *page;

	pthread_rwlock_rdlock(&g->invalidate_lock);
	page = backing_addr(&g->backing, off & ~(GM_PAGE_SIZE - 1));
	if ((attr_get(&g->attrs, off >> GM_PAGE_SHIFT, NULL) & KVM_MEMORY_ATTRIBUTE_PRIVATE) ||
	    !(prot & PROT_READ) || (write && !writable) || !page)
		r = fault_result(MMU_FAULT_MEMORY, false);
	else
		r = map_result(mmu_map(&vm->mmu, gfn, MMU_LEVEL_4K, page, false, writable, seq), false);
	pthread_rwlock_unlock(&g->invalidate_lock);
	return r;
}

/* The GUP side: a page of the slot's host mapping. */
static struct mmu_fault fault_hva(struct vm *vm, const struct memslot_view *s, gfn_t gfn,
				  bool write, uint64_t seq)
{
	char *hva = (char *)(uintptr_t)(s->userspace_addr + ((gfn - s->base_gfn) << GM_PAGE_SHIFT));
	bool readonly = s->flags & KVM_MEM_READONLY;
	struct gmem *g;
	uint64_t off;
	int prot;

	/* A write to a read-only slot is emulated as MMIO. */
	if (write && readonly)
		return fault_result(MMU_FAULT_MMIO, false);
	g = hostmap_lookup((uintptr_t)hva, &off, &prot);
	if (g) {
		struct mmu_fault r = fault_hva_gmem(vm, g, off, prot, gfn, readonly, write, seq);

		gmem_put(g);
		return r;
	}
	/* Fault the host page in as get_user_pages would; a bad address is a memory fault. */
	if (madvise(hva, GM_PAGE_SIZE, readonly ? MADV_POPULATE_READ : MADV_POPULATE_WRITE) < 0)
		return fault_result(MMU_FAULT_MEMORY, false);
	return map_result(mmu_map(&vm->mmu, gfn, MMU_LEVEL_4K, hva, false, !readonly, seq), false);
}

/* Whether the file says gfn's page is private (false without a file or private memory). */
static bool gmem_page_is_private(struct vm *vm, const struct memslot_view *s, gfn_t gfn)
{
	pgoff_t index = s->pgoff + (gfn - s->base_gfn);
	bool is_private;

	if (!vm_has_private_mem(vm) || !s->has_gmem || !s->gmem)
		return false;
	pthread_rwlock_rdlock(&s->gmem->invalidate_lock);
	is_private = attr_get(&s->gmem->attrs, index, NULL) & KVM_MEMORY_ATTRIBUTE_PRIVATE;
	pthread_rwlock_unlock(&s->gmem->invalidate_lock);
	return is_private;
}

/*
 * kvm_mem_is_private: the one question the fault asks, answered by the VM's
 * attributes or by the file's, as kvm.vm_memory_attributes chose (s NULL: no slot).
 */
static bool gfn_is_private(struct vm *vm, const struct memslot_view *s, gfn_t gfn)
{
	if (!vm_has_private_mem(vm))
		return false;
	if (vm_attrs_in_vm(vm))
		return vm_gfn_is_private(vm, gfn);
	return s && gmem_page_is_private(vm, s, gfn);
}

struct mmu_fault mmu_page_fault(struct vm *vm, gpa_t gpa, enum gm_access access, bool write)
{
	gfn_t gfn = gpa >> GM_PAGE_SHIFT;
	bool private_vm = vm_has_private_mem(vm);
	struct memslot_view s;
	struct mmu_fault r;
	bool private, is_private, has_slot;
	uint64_t seq;

	atomic_fetch_add(&vm->mmu.faults, 1);
	seq = mmu_seq_begin(&vm->mmu);
	has_slot = memslot_lookup(&vm->slots, gfn, &s);
	is_private = gfn_is_private(vm, has_slot ? &s : NULL, gfn);
	private = private_vm && (access == GM_ACCESS_AUTO ? is_private : access == GM_ACCESS_PRIVATE);
	if (!has_slot) {
		/* No slot: a private access is a memory fault, a shared one is MMIO. */
		if (private)
			return fault_result(MMU_FAULT_MEMORY, true);
		return fault_result(MMU_FAULT_MMIO, false);
	}
	/*
	 * A slot whose file is gone may be one that a slot change or the file's
	 * release has just replaced or unbound: readers can still find it until a
	 * grace period ends. That change invalidates around it, so if one raced
	 * with this fault, fault again and see the new state.
	 */
	if (s.has_gmem && !s.gmem && mmu_seq_stale(&vm->mmu, gfn, seq))
		r = fault_result(MMU_FAULT_MAPPED, private);
	else if (private != is_private || ((private || s.gmem_only) && !s.gmem))
		/* The guest wants the other kind, or the file behind the slot is gone. */
		r = fault_result(MMU_FAULT_MEMORY, private);
	else if (private || s.gmem_only)
		r = fault_gmem(vm, &s, gfn, private, is_private, seq);
	else
		r = fault_hva(vm, &s, gfn, write, seq);
	memslot_view_put(&s);
	return r;
}

/* The reverse map's part of PVALIDATE, under the file's lock; the page is the guest's. */
static int pvalidate_page(struct gmem *g, pgoff_t index, bool validate)
{
	enum rmp_state st = rmp_get(g->rmp, index), want;
	unsigned nr;
	int ret;

	if (st == RMP_HYPERVISOR)
		return -EAGAIN;
	want = validate ? RMP_VALIDATED : RMP_ASSIGNED;
	/* The state already was what the guest asked: rFLAGS.CF, no update. */
	if (st == want)
		return GM_PVALIDATE_FAIL_NOUPDATE;
	ret = rmp_reserve(g->rmp);
	if (ret)
		return ret;
	/* A rescinded page leaves the stage-2, so the next access raises a #VC. */
	nr = validate ? 0 : gmem_invalidate_begin(g, index, index + 1);
	rmp_set(g->rmp, index, index + 1, want);
	gmem_invalidate_end(g, nr);
	return GM_PVALIDATE_SUCCESS;
}

int mmu_pvalidate(struct vm *vm, gpa_t gpa, bool validate)
{
	gfn_t gfn = gpa >> GM_PAGE_SHIFT;
	struct memslot_view s;
	int ret = -EAGAIN;

	if (!memslot_lookup(&vm->slots, gfn, &s))
		return -EAGAIN;
	if (s.gmem && s.gmem->rmp && gfn_is_private(vm, &s, gfn)) {
		struct gmem *g = s.gmem;

		pthread_rwlock_wrlock(&g->invalidate_lock);
		ret = pvalidate_page(g, s.pgoff + (gfn - s.base_gfn), validate);
		pthread_rwlock_unlock(&g->invalidate_lock);
	}
	memslot_view_put(&s);
	return ret;
}
