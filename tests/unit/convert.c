/* Conversion on libgmem: pins, ENOMEM, the guest's view, MAP_GPA_RANGE, folio split and merge. */
#include <pthread.h>

#include "internal.h"
#include "unit/vmm.h"

#define PAGE 4096ULL
#define SZ_2M (2ULL << 20)
#define PRIVATE KVM_MEMORY_ATTRIBUTE_PRIVATE

static int convert(int gmem, uint64_t offset, uint64_t size, uint64_t attrs, uint64_t *error_offset)
{
	struct kvm_memory_attributes2 a = { .offset = offset, .size = size, .attributes = attrs };
	int ret = gm_ioctl(gmem, KVM_SET_MEMORY_ATTRIBUTES2, &a) ? errno : 0;

	if (error_offset)
		*error_offset = a.error_offset;
	return ret;
}

static uint64_t shared_bytes(int gmem)
{
	struct gm_gmem_info info;

	cr_assert_eq(gm_gmem_info(gmem, &info), 0);
	return info.shared_bytes;
}

Test(convert, pinned_page_blocks_to_private)
{
	struct vmm m;
	uint64_t err_off = 0;
	void *dma;

	vmm_init(&m, KVM_X86_SW_PROTECTED_VM);
	int gmem = vmm_gmem(&m, 16 * PAGE, GUEST_MEMFD_FLAG_MMAP | GUEST_MEMFD_FLAG_INIT_SHARED);
	char *host = gm_mmap(NULL, 16 * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, gmem, 0);

	cr_assert_neq(host, MAP_FAILED);
	cr_assert_eq(gm_gmem_pin(gmem, 5 * PAGE, 2 * PAGE, &dma), 0);
	/* The device writes through its pin; the host sees it in place. */
	((char *)dma)[PAGE] = 'D';
	cr_expect_eq(host[6 * PAGE], 'D');

	cr_expect_eq(convert(gmem, 0, 16 * PAGE, PRIVATE, &err_off), EAGAIN);
	cr_expect_eq(err_off, 5 * PAGE, "error_offset %#llx", (unsigned long long)err_off);
	/* Nothing changed at all. */
	cr_expect_eq(shared_bytes(gmem), 16 * PAGE);
	cr_expect_not(vmm_host_faults(host));
	cr_expect_not(vmm_host_faults(host + 15 * PAGE));
	/* Around the pin, conversion works; the pin's own pages refuse. */
	cr_expect_eq(convert(gmem, 0, 5 * PAGE, PRIVATE, NULL), 0);
	cr_expect_eq(convert(gmem, 6 * PAGE, PAGE, PRIVATE, &err_off), EAGAIN);
	cr_expect_eq(err_off, 6 * PAGE);

	/* Private memory cannot be pinned; only a pin made can be dropped. */
	cr_expect_eq(gm_gmem_pin(gmem, 0, PAGE, NULL), -EFAULT);
	cr_expect_eq(gm_gmem_unpin(gmem, 5 * PAGE, PAGE), -ENOENT);
	cr_expect_eq(gm_gmem_pin(gmem, 1, PAGE, NULL), -EINVAL);
	cr_expect_eq(gm_gmem_pin(gmem, 16 * PAGE, PAGE, NULL), -EINVAL);
	cr_expect_eq(gm_gmem_pin(m.vm, 0, PAGE, NULL), -EINVAL);

	cr_assert_eq(gm_gmem_unpin(gmem, 5 * PAGE, 2 * PAGE), 0);
	cr_expect_eq(convert(gmem, 0, 16 * PAGE, PRIVATE, NULL), 0);
	cr_expect_eq(shared_bytes(gmem), 0);
	cr_expect(vmm_host_faults(host + 6 * PAGE));
	gm_munmap(host, 16 * PAGE);
	gm_close(gmem);
	vmm_destroy(&m);
}

/* An allocation failure at any step leaves the file as it was. */
Test(convert, enomem_changes_nothing)
{
	struct vmm m;

	vmm_init(&m, KVM_X86_SW_PROTECTED_VM);
	int gmem = vmm_gmem(&m, 64 * PAGE, GUEST_MEMFD_FLAG_MMAP | GUEST_MEMFD_FLAG_INIT_SHARED);
	char *host = gm_mmap(NULL, 64 * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, gmem, 0);

	cr_assert_neq(host, MAP_FAILED);
	/* Fragment the attributes so the next conversion must grow the range map. */
	for (int i = 0; i < 8; i++)
		cr_assert_eq(convert(gmem, (4 * i + 1) * PAGE, PAGE, PRIVATE, NULL), 0);
	uint64_t before = shared_bytes(gmem);
	int failures = 0;

	for (long n = 1; n <= 3; n++) {
		uint64_t err_off = 0;
		int ret;

		gm_heap_fail_after(n);
		ret = convert(gmem, 2 * PAGE, 40 * PAGE, PRIVATE, &err_off);
		gm_heap_fail_after(0);
		if (ret == 0) {
			/* Enough allocations succeeded: undo for the next round. */
			cr_assert_eq(convert(gmem, 2 * PAGE, 40 * PAGE, 0, NULL), 0);
			for (int i = 0; i < 8; i++)
				cr_assert_eq(convert(gmem, (4 * i + 1) * PAGE, PAGE, PRIVATE, NULL), 0);
			continue;
		}
		cr_expect_eq(ret, ENOMEM, "allocation %ld", n);
		failures++;
		cr_expect_eq(err_off, 2 * PAGE);
		cr_expect_eq(shared_bytes(gmem), before);
		for (int i = 0; i < 40; i++)
			cr_expect_eq(vmm_host_faults(host + i * PAGE), i % 4 == 1 && i < 32, "page %d", i);
	}
	cr_expect_eq(failures, 2, "the snapshot and the range map growth both fail cleanly");
	gm_munmap(host, 64 * PAGE);
	gm_close(gmem);
	vmm_destroy(&m);
}

/* Pages [0, 40): every fourth one private, each shared one holding its index. */
static void fragment(int gmem, volatile char *host)
{
	cr_assert_eq(convert(gmem, 0, 40 * PAGE, 0, NULL), 0);
	for (int i = 0; i < 40; i++)
		host[i * PAGE] = (char)i;
	for (int i = 1; i < 40; i += 4)
		cr_assert_eq(convert(gmem, i * PAGE, PAGE, PRIVATE, NULL), 0);
}

/*
 * The host's mappings cannot be laid again (mmap fails: ENOMEM, as with
 * max_map_count): the conversion fails and the host sees what it saw before.
 * When even the undo cannot be mapped, the range is hidden instead, so that no
 * private page is left readable.
 */
Test(convert, host_remap_failure)
{
	struct vmm m;

	vmm_init(&m, KVM_X86_SW_PROTECTED_VM);
	int gmem = vmm_gmem(&m, 64 * PAGE, GUEST_MEMFD_FLAG_MMAP | GUEST_MEMFD_FLAG_INIT_SHARED);
	volatile char *host = gm_mmap(NULL, 64 * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, gmem, 0);
	/* Two mappings: one can be laid again while the other cannot. */
	volatile char *other = gm_mmap(NULL, 64 * PAGE, PROT_READ, MAP_SHARED, gmem, 0);
	int failed[2][2] = { { 0 } };

	cr_assert_neq(host, MAP_FAILED);
	cr_assert_neq(other, MAP_FAILED);
	for (int to_private = 0; to_private < 2; to_private++)
		for (long times = 1; times <= 2; times++)
			for (long after = 1; after <= 12; after++) {
				uint64_t before, err_off = 0;
				int ret;

				fragment(gmem, host);
				before = shared_bytes(gmem);
				gm_hostmap_fail(after, times);
				ret = convert(gmem, 0, 40 * PAGE, to_private ? PRIVATE : 0, &err_off);
				gm_hostmap_fail(0, 0);
				if (ret == 0)
					continue; /* the conversion needed fewer mmaps than that */
				failed[to_private][times - 1]++;
				cr_expect_eq(ret, ENOMEM, "after %ld, %ld failing", after, times);
				cr_expect_eq(err_off, 0);
				cr_expect_eq(shared_bytes(gmem), before);
				for (int i = 0; i < 80; i++) {
					volatile char *p = (i < 40 ? host : other) + (i % 40) * PAGE;
					bool private = i % 4 == 1, faults = vmm_host_faults(p);

					/* Never a private page for the host; shared ones as before, unless hidden. */
					cr_expect(!private || faults, "page %d of mapping %d readable (after %ld, "
						  "%ld failing)", i % 40, i / 40, after, times);
					if (times == 1)
						cr_expect(private || (!faults && *p == (char)(i % 40)),
							  "shared page %d of mapping %d lost (after %ld)", i % 40,
							  i / 40, after);
				}
			}
	for (int d = 0; d < 2; d++)
		for (int t = 0; t < 2; t++)
			cr_expect_gt(failed[d][t], 0, "no failure injected to %s, %d failing",
				     d ? "private" : "shared", t + 1);
	gm_munmap((void *)host, 64 * PAGE);
	gm_munmap((void *)other, 64 * PAGE);
	gm_close(gmem);
	vmm_destroy(&m);
}

#define GPA 0x80000000ULL

static void guest_kind_changes(struct gm_guest *g, void *arg)
{
	gm_guest_write64(g, GPA, 0x5a5a);
	gm_guest_ucall(g, GM_UCALL_SYNC, 1, (uint64_t)1);
	/* The host made the page private: a shared access must exit. */
	gm_guest_set_access(g, GM_ACCESS_SHARED);
	uint64_t v = gm_guest_read64(g, GPA);
	gm_guest_ucall(g, GM_UCALL_SYNC, 1, v);
	gm_guest_set_access(g, GM_ACCESS_PRIVATE);
	gm_guest_ucall(g, GM_UCALL_DONE, 1, gm_guest_read64(g, GPA));
}

/* A conversion zaps the old kind's leaves before it returns: the next access of that kind exits. */
Test(convert, zaps_old_kind)
{
	struct vmm m;
	struct gm_mmu_stats st;

	vmm_init(&m, KVM_X86_SW_PROTECTED_VM);
	int gmem = vmm_gmem(&m, SZ_2M, GUEST_MEMFD_FLAG_MMAP | GUEST_MEMFD_FLAG_INIT_SHARED);

	cr_assert_eq(vmm_set_slot(&m, 0, GPA, SZ_2M, gmem, 0), 0);
	vmm_vcpu(&m, 0, guest_kind_changes, NULL);
	vmm_expect_ucall(&m, GM_UCALL_SYNC);
	cr_assert_eq(gm_vm_mmu_stats(m.vm, &st), 0);
	cr_expect_eq(st.mapped_4k_bytes, PAGE);
	cr_assert_eq(convert(gmem, 0, PAGE, PRIVATE, NULL), 0);
	cr_assert_eq(gm_vm_mmu_stats(m.vm, &st), 0);
	cr_expect_eq(st.mapped_4k_bytes, 0, "the shared leaf survived the conversion");

	cr_expect_eq(vmm_run(&m), EFAULT);
	cr_expect_eq(m.run->exit_reason, KVM_EXIT_MEMORY_FAULT);
	cr_expect_eq(m.run->memory_fault.flags, 0);
	cr_expect_eq(m.run->memory_fault.gpa, GPA);
	/* Userspace answers the implicit conversion request; the guest reads its data in place. */
	cr_assert_eq(convert(gmem, 0, PAGE, 0, NULL), 0);
	cr_expect_eq(vmm_expect_ucall(&m, GM_UCALL_SYNC), 0x5a5a);
	cr_expect_eq(vmm_run(&m), EFAULT);
	cr_expect_eq(m.run->memory_fault.flags, KVM_MEMORY_EXIT_FLAG_PRIVATE);
	cr_assert_eq(convert(gmem, 0, PAGE, PRIVATE, NULL), 0);
	cr_expect_eq(vmm_expect_ucall(&m, GM_UCALL_DONE), 0x5a5a);
	gm_close(gmem);
	vmm_destroy(&m);
}

static void guest_touch_all(struct gm_guest *g, void *arg)
{
	for (int round = 0; round < 3; round++) {
		for (uint64_t off = 0; off < 2 * SZ_2M; off += PAGE)
			gm_guest_read8(g, GPA + off);
		gm_guest_ucall(g, GM_UCALL_SYNC, 1, (uint64_t)round);
	}
	gm_guest_ucall(g, GM_UCALL_DONE, 0);
}

/* Converting one page of a 2M folio splits its leaf; converting it back merges it again. */
Test(convert, split_and_merge)
{
	struct vmm m;
	struct gm_mmu_stats st;

	vmm_init(&m, KVM_X86_SW_PROTECTED_VM);
	int gmem = vmm_gmem(&m, 2 * SZ_2M, GUEST_MEMFD_FLAG_MMAP | GUEST_MEMFD_FLAG_INIT_SHARED |
						   GM_GUEST_MEMFD_FOLIO_2M);

	cr_assert_eq(vmm_set_slot(&m, 0, GPA, 2 * SZ_2M, gmem, 0), 0);
	vmm_vcpu(&m, 0, guest_touch_all, NULL);
	vmm_expect_ucall(&m, GM_UCALL_SYNC);
	gm_vm_mmu_stats(m.vm, &st);
	cr_expect_eq(st.mapped_2m_bytes, 2 * SZ_2M);

	/* One private page in the second folio: the guest (AUTO) maps it private, the rest shared. */
	cr_assert_eq(convert(gmem, SZ_2M + 7 * PAGE, PAGE, PRIVATE, NULL), 0);
	vmm_expect_ucall(&m, GM_UCALL_SYNC);
	gm_vm_mmu_stats(m.vm, &st);
	cr_expect_eq(st.mapped_2m_bytes, SZ_2M, "the untouched folio keeps its huge leaf");
	cr_expect_eq(st.mapped_4k_bytes, SZ_2M, "the split folio maps 4K leaves");

	cr_assert_eq(convert(gmem, SZ_2M + 7 * PAGE, PAGE, 0, NULL), 0);
	vmm_expect_ucall(&m, GM_UCALL_SYNC);
	gm_vm_mmu_stats(m.vm, &st);
	cr_expect_eq(st.mapped_2m_bytes, 2 * SZ_2M, "uniform again: one huge leaf per folio");
	cr_expect_eq(st.mapped_4k_bytes, 0);
	vmm_expect_ucall(&m, GM_UCALL_DONE);
	gm_close(gmem);
	vmm_destroy(&m);
}

static uint64_t metadata_bytes(void)
{
	struct gm_stats st;

	cr_assert_eq(gm_stats(&st), 0);
	return st.metadata_bytes;
}

/* A file fragmented to a million ranges and made uniform again gives the range map's room back. */
Test(convert, uniform_again_gives_back_range_map_memory, .timeout = 120)
{
	const uint64_t nranges = 1 << 20;
	struct vmm m;

	vmm_init(&m, KVM_X86_SW_PROTECTED_VM);
	int gmem = vmm_gmem(&m, nranges * PAGE, GUEST_MEMFD_FLAG_INIT_SHARED);
	uint64_t before = metadata_bytes();

	/* Every other page private, in increasing order so each edit is at the map's end. */
	for (uint64_t i = 1; i < nranges; i += 2)
		cr_assert_eq(convert(gmem, i * PAGE, PAGE, PRIVATE, NULL), 0);
	cr_assert_gt(metadata_bytes(), before + nranges * 8, "not fragmented");
	cr_assert_eq(convert(gmem, 0, nranges * PAGE, 0, NULL), 0);
	cr_expect_leq(metadata_bytes(), 2 * before, "%llu heap bytes before, %llu after",
		      (unsigned long long)before, (unsigned long long)metadata_bytes());
	gm_close(gmem);
	vmm_destroy(&m);
}

/* A pin is refused when any page of its range is private, not only its first (EFAULT). */
Test(convert, pin_refuses_any_private_page)
{
	struct vmm m;
	void *dma;

	vmm_init(&m, KVM_X86_SW_PROTECTED_VM);
	int gmem = vmm_gmem(&m, 16 * PAGE, GUEST_MEMFD_FLAG_MMAP | GUEST_MEMFD_FLAG_INIT_SHARED);

	cr_assert_eq(convert(gmem, 3 * PAGE, PAGE, PRIVATE, NULL), 0);
	cr_expect_eq(gm_gmem_pin(gmem, 2 * PAGE, 2 * PAGE, &dma), -EFAULT, "private last page");
	cr_expect_eq(gm_gmem_pin(gmem, 0, 16 * PAGE, &dma), -EFAULT, "private page in the middle");
	cr_expect_eq(gm_gmem_pin(gmem, 3 * PAGE, PAGE, &dma), -EFAULT, "private first page");
	/* No pin was left behind: every shared page still converts. */
	cr_expect_eq(convert(gmem, 0, 16 * PAGE, PRIVATE, NULL), 0);
	cr_expect_eq(shared_bytes(gmem), 0);
	cr_expect_eq(gm_gmem_unpin(gmem, 2 * PAGE, 2 * PAGE), -ENOENT);
	gm_close(gmem);
	vmm_destroy(&m);
}
