/* The huge-leaf rule: a leaf is as large as the folio, the slot's alignment and uniform attributes allow. */
#include <linux/falloc.h>

#include "mmu/stage2.h"
#include "unit/vmm.h"

struct touch {
	uint64_t gpa, size, step;
};

static void guest_touch(struct gm_guest *g, void *arg)
{
	struct touch *t = arg;

	for (uint64_t off = 0; off < t->size; off += t->step)
		gm_guest_write8(g, t->gpa + off, 1);
	gm_guest_ucall(g, GM_UCALL_DONE, 0);
}

static struct gm_mmu_stats touch_slot(uint64_t folio, uint64_t gpa, uint64_t offset, uint64_t size,
				      uint64_t file_size)
{
	struct vmm m;
	struct gm_mmu_stats st;
	struct touch t = { gpa, size, 4096 };

	vmm_init(&m, KVM_X86_SW_PROTECTED_VM);
	int gmem = vmm_gmem(&m, file_size,
			    GUEST_MEMFD_FLAG_MMAP | GUEST_MEMFD_FLAG_INIT_SHARED | folio);
	cr_assert_eq(vmm_set_slot(&m, 0, gpa, size, gmem, offset), 0);
	vmm_vcpu(&m, 0, guest_touch, &t);
	vmm_expect_ucall(&m, GM_UCALL_DONE);
	cr_assert_eq(gm_vm_mmu_stats(m.vm, &st), 0);
	gm_close(gmem);
	vmm_destroy(&m);
	return st;
}

#define SZ_2M (2ULL << 20)
#define SZ_1G (1ULL << 30)

Test(mmu_huge, aligned_slot_maps_2m_leaves)
{
	struct gm_mmu_stats st = touch_slot(GM_GUEST_MEMFD_FOLIO_2M, 4 * SZ_2M, 0, 2 * SZ_2M, 2 * SZ_2M);

	cr_expect_eq(st.mapped_2m_bytes, 2 * SZ_2M);
	cr_expect_eq(st.mapped_4k_bytes, 0);
	cr_expect_eq(st.faults, 2, "one fault per 2M leaf, got %llu", (unsigned long long)st.faults);
}

Test(mmu_huge, misaligned_slot_maps_4k_leaves)
{
	/* The guest frame and the file page disagree modulo 2M. */
	struct gm_mmu_stats st = touch_slot(GM_GUEST_MEMFD_FOLIO_2M, 4 * SZ_2M + 4096, 0, SZ_2M, 2 * SZ_2M);

	cr_expect_eq(st.mapped_2m_bytes, 0);
	cr_expect_eq(st.mapped_4k_bytes, SZ_2M);
}

Test(mmu_huge, small_slot_maps_4k_leaves)
{
	struct gm_mmu_stats st = touch_slot(GM_GUEST_MEMFD_FOLIO_2M, 4 * SZ_2M, 0, SZ_2M / 2, 2 * SZ_2M);

	cr_expect_eq(st.mapped_2m_bytes, 0);
	cr_expect_eq(st.mapped_4k_bytes, SZ_2M / 2);
}

Test(mmu_huge, small_folios_map_4k_leaves)
{
	struct gm_mmu_stats st = touch_slot(GM_GUEST_MEMFD_FOLIO_4K, 4 * SZ_2M, 0, SZ_2M, SZ_2M);

	cr_expect_eq(st.mapped_2m_bytes, 0);
	cr_expect_eq(st.mapped_4k_bytes, SZ_2M);
}

Test(mmu_huge, gigabyte_folio_maps_1g_leaf)
{
	struct vmm m;
	struct gm_mmu_stats st;
	struct touch t = { SZ_1G, SZ_1G, SZ_2M };

	vmm_init(&m, KVM_X86_SW_PROTECTED_VM);
	int gmem = vmm_gmem(&m, SZ_1G, GUEST_MEMFD_FLAG_MMAP | GUEST_MEMFD_FLAG_INIT_SHARED |
				   GM_GUEST_MEMFD_FOLIO_1G);
	cr_assert_eq(vmm_set_slot(&m, 0, SZ_1G, SZ_1G, gmem, 0), 0);
	vmm_vcpu(&m, 0, guest_touch, &t);
	vmm_expect_ucall(&m, GM_UCALL_DONE);
	cr_assert_eq(gm_vm_mmu_stats(m.vm, &st), 0);
	cr_expect_eq(st.mapped_1g_bytes, SZ_1G);
	cr_expect_eq(st.faults, 1);

	/* Punching a hole zaps the leaf that maps it. */
	cr_assert_eq(gm_fallocate(gmem, FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE, 0, SZ_1G), 0);
	cr_assert_eq(gm_vm_mmu_stats(m.vm, &st), 0);
	cr_expect_eq(st.mapped_1g_bytes, 0);
	cr_expect_geq(st.zaps, 1);
	gm_close(gmem);
	vmm_destroy(&m);
}

/*
 * A leaf decided before an invalidation began is not mapped while it runs if
 * the invalidation meets any page of the leaf, not only its first: a fault that
 * read uniform attributes over 2 MiB before a one-page change inside them would
 * otherwise map a huge leaf that outlives the change (stress-vm_attrs found it).
 */
Test(mmu_huge, invalidation_inside_a_huge_leaf_holds_it_off)
{
	static char store[SZ_2M] __attribute__((aligned(SZ_2M)));
	const uint64_t base = 0x100000 / 4096 * 512; /* a 2 MiB-aligned gfn */
	struct mmu mmu;
	uint64_t seq;

	cr_assert_eq(mmu_init(&mmu), 0);
	seq = mmu_seq_begin(&mmu);
	mmu_invalidate_begin(&mmu, base + 37, base + 38);
	cr_expect_eq(mmu_map(&mmu, base, MMU_LEVEL_2M, store, true, true, seq), -EAGAIN,
		     "a 2 MiB leaf over the page being invalidated");
	cr_expect_eq(mmu_map(&mmu, base + 36, MMU_LEVEL_4K, store, true, true, seq), 0,
		     "a 4 KiB leaf next to it is not held off");
	cr_expect_eq(mmu_map(&mmu, base + 37, MMU_LEVEL_4K, store, true, true, seq), -EAGAIN);
	mmu_invalidate_end(&mmu);
	/* Once it has ended, whatever was decided before it retries. */
	cr_expect_eq(mmu_map(&mmu, base, MMU_LEVEL_2M, store, true, true, seq), -EAGAIN);
	cr_expect_eq(mmu_map(&mmu, base, MMU_LEVEL_2M, store, true, true, mmu_seq_begin(&mmu)), 0);
	mmu_destroy(&mmu);
}
