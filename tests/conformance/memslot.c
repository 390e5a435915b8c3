/* KVM_SET_USER_MEMORY_REGION(2) with guest_memfd: every binding rule, in the kernel's order. */
#include <string.h>
#include <sys/eventfd.h>

#include "harness/surface.h"

#define SLOT_SIZE (2 * SZ_2M)

static int set_region(int vm, uint32_t slot, uint32_t flags, uint64_t gpa, uint64_t size, int gmem,
		      uint64_t offset)
{
	struct kvm_userspace_memory_region2 r = {
		.slot = slot, .flags = flags, .guest_phys_addr = gpa, .memory_size = size,
		.guest_memfd = (uint32_t)gmem, .guest_memfd_offset = offset,
	};

	return ioctl_errno(vm, KVM_SET_USER_MEMORY_REGION2, &r);
}

struct slot_env {
	int vm, gmem;
};

static void slot_env(struct slot_env *e, uint64_t flags)
{
	e->vm = t_create_vm(KVM_X86_DEFAULT_VM);
	t_require(sys_ioctl(e->vm, KVM_CHECK_EXTENSION, KVM_CAP_USER_MEMORY2) > 0,
		  "%s: no KVM_CAP_USER_MEMORY2", TARGET_NAME);
	e->gmem = t_create_gmem(e->vm, 2 * SLOT_SIZE, flags);
}

Test(memslot, flags)
{
	struct slot_env e;

	slot_env(&e, 0);
	/* No dirty logging and no read-only slots on guest_memfd. */
	cr_expect_eq(set_region(e.vm, 0, KVM_MEM_GUEST_MEMFD | KVM_MEM_LOG_DIRTY_PAGES, 0, SLOT_SIZE,
				e.gmem, 0), EINVAL);
	cr_expect_eq(set_region(e.vm, 0, KVM_MEM_GUEST_MEMFD | KVM_MEM_READONLY, 0, SLOT_SIZE,
				e.gmem, 0), EINVAL);
	cr_expect_eq(set_region(e.vm, 0, KVM_MEM_GUEST_MEMFD | (1u << 20), 0, SLOT_SIZE, e.gmem, 0),
		     EINVAL);
	/* The flag checks come first, even for a deletion. */
	cr_expect_eq(set_region(e.vm, 0, KVM_MEM_GUEST_MEMFD | KVM_MEM_READONLY, 0, 0, e.gmem, 0),
		     EINVAL);

	/* The v1 ioctl knows no guest_memfd. */
	struct kvm_userspace_memory_region v1 = {
		.slot = 0, .flags = KVM_MEM_GUEST_MEMFD, .memory_size = SLOT_SIZE,
	};
	cr_expect_eq(ioctl_errno(e.vm, KVM_SET_USER_MEMORY_REGION, &v1), EINVAL);
	cr_expect_eq(ioctl_errno(e.vm, KVM_SET_USER_MEMORY_REGION2, (void *)8), EFAULT);
	sys_close(e.gmem);
	sys_close(e.vm);
}

Test(memslot, alignment_and_ranges)
{
	struct slot_env e;

	slot_env(&e, 0);
	cr_expect_eq(set_region(e.vm, 0, KVM_MEM_GUEST_MEMFD, 0, SLOT_SIZE - 1, e.gmem, 0), EINVAL);
	cr_expect_eq(set_region(e.vm, 0, KVM_MEM_GUEST_MEMFD, 100, SLOT_SIZE, e.gmem, 0), EINVAL);
	cr_expect_eq(set_region(e.vm, 0, KVM_MEM_GUEST_MEMFD, 0, SLOT_SIZE, e.gmem, 100), EINVAL);
	cr_expect_eq(set_region(e.vm, 0, KVM_MEM_GUEST_MEMFD, 0, SLOT_SIZE, e.gmem, -PAGE_SIZE),
		     EINVAL, "offset + size overflows");
	cr_expect_eq(set_region(e.vm, 0, KVM_MEM_GUEST_MEMFD, -PAGE_SIZE, SLOT_SIZE, e.gmem, 0),
		     EINVAL, "gpa + size wraps");
	/* Past the end of the file. */
	cr_expect_eq(set_region(e.vm, 0, KVM_MEM_GUEST_MEMFD, 0, SLOT_SIZE, e.gmem, SLOT_SIZE + PAGE_SIZE),
		     EINVAL);
	cr_expect_eq(set_region(e.vm, 0, KVM_MEM_GUEST_MEMFD, 0, 3 * SLOT_SIZE, e.gmem, 0), EINVAL);
	/* Slot ids and address spaces. */
	cr_expect_eq(set_region(e.vm, 32764, KVM_MEM_GUEST_MEMFD, 0, SLOT_SIZE, e.gmem, 0), EINVAL);
	cr_expect_eq(set_region(e.vm, 2 << 16, KVM_MEM_GUEST_MEMFD, 0, SLOT_SIZE, e.gmem, 0), EINVAL);
	/* Deleting a slot that does not exist. */
	cr_expect_eq(set_region(e.vm, 5, 0, 0, 0, -1, 0), EINVAL);
	/* All of this left nothing behind: the range binds now. */
	cr_expect_eq(set_region(e.vm, 0, KVM_MEM_GUEST_MEMFD, 0, SLOT_SIZE, e.gmem, 0), 0);
	sys_close(e.gmem);
	sys_close(e.vm);
}

Test(memslot, wrong_files)
{
	struct slot_env e;
	int efd = eventfd(0, 0);

	slot_env(&e, 0);
	cr_expect_eq(set_region(e.vm, 0, KVM_MEM_GUEST_MEMFD, 0, SLOT_SIZE, 1000, 0), EBADF);
	cr_expect_eq(set_region(e.vm, 0, KVM_MEM_GUEST_MEMFD, 0, SLOT_SIZE, efd, 0), EINVAL);
	cr_expect_eq(set_region(e.vm, 0, KVM_MEM_GUEST_MEMFD, 0, SLOT_SIZE, e.vm, 0), EINVAL);

	/* A guest_memfd of another VM. */
	int vm2 = t_create_vm(KVM_X86_DEFAULT_VM);
	int other = t_create_gmem(vm2, SLOT_SIZE, 0);

	cr_expect_eq(set_region(e.vm, 0, KVM_MEM_GUEST_MEMFD, 0, SLOT_SIZE, other, 0), EINVAL);
	sys_close(other);
	sys_close(vm2);
	close(efd);
	sys_close(e.gmem);
	sys_close(e.vm);
}

Test(memslot, overlap)
{
	struct slot_env e;

	slot_env(&e, 0);
	cr_assert_eq(set_region(e.vm, 0, KVM_MEM_GUEST_MEMFD, 0, SLOT_SIZE, e.gmem, 0), 0);
	/* Guest ranges may not overlap. */
	cr_expect_eq(set_region(e.vm, 1, KVM_MEM_GUEST_MEMFD, SLOT_SIZE - PAGE_SIZE, SLOT_SIZE, e.gmem,
				SLOT_SIZE), EEXIST);
	/* A file range backs one slot only: 6.18 says EINVAL, mainline after it EEXIST. */
	int err = set_region(e.vm, 1, KVM_MEM_GUEST_MEMFD, 4 * SLOT_SIZE, SLOT_SIZE, e.gmem,
			     SLOT_SIZE - PAGE_SIZE);
	if (TARGET_IS_KERNEL)
		cr_expect(err == EINVAL || err == EEXIST, "kernel: %s", strerror(err));
	else
		cr_expect_eq(err, EEXIST, "libgmem follows mainline: %s", strerror(err));
	/* The rest of the file binds to another slot. */
	cr_expect_eq(set_region(e.vm, 1, KVM_MEM_GUEST_MEMFD, 4 * SLOT_SIZE, SLOT_SIZE, e.gmem,
				SLOT_SIZE), 0);
	sys_close(e.gmem);
	sys_close(e.vm);
}

Test(memslot, immutable_then_deleted)
{
	struct slot_env e;

	slot_env(&e, GUEST_MEMFD_FLAG_MMAP | GUEST_MEMFD_FLAG_INIT_SHARED);
	char *host = sys_mmap(NULL, 2 * SLOT_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, e.gmem, 0);

	cr_assert_neq(host, MAP_FAILED);
	memset(host, 0x3c, SLOT_SIZE);
	cr_assert_eq(set_region(e.vm, 0, KVM_MEM_GUEST_MEMFD, 0, SLOT_SIZE, e.gmem, 0), 0);
	/* Guest_memfd slots cannot be modified, not even to the same values or moved. */
	cr_expect_eq(set_region(e.vm, 0, KVM_MEM_GUEST_MEMFD, 0, SLOT_SIZE, e.gmem, 0), EINVAL);
	cr_expect_eq(set_region(e.vm, 0, KVM_MEM_GUEST_MEMFD, SLOT_SIZE, SLOT_SIZE, e.gmem, 0),
		     EINVAL);
	/* Nor can the slot stop being a guest_memfd slot, with or without other flags. */
	cr_expect_eq(set_region(e.vm, 0, 0, 0, SLOT_SIZE, e.gmem, 0), EINVAL);
	cr_expect_eq(set_region(e.vm, 0, KVM_MEM_LOG_DIRTY_PAGES, 0, SLOT_SIZE, e.gmem, 0), EINVAL);
	/* Deleting unbinds: the same range binds again, its contents untouched. */
	cr_expect_eq(set_region(e.vm, 0, 0, 0, 0, e.gmem, 0), 0);
	cr_expect_eq(set_region(e.vm, 1, KVM_MEM_GUEST_MEMFD, SLOT_SIZE, SLOT_SIZE, e.gmem, 0), 0);
	cr_expect_eq(host[SLOT_SIZE - 1], 0x3c);
	sys_munmap(host, 2 * SLOT_SIZE);
	sys_close(e.gmem);
	sys_close(e.vm);
}

Test(memslot, file_closed_while_bound)
{
	struct slot_env e;

	slot_env(&e, 0);
	cr_assert_eq(set_region(e.vm, 0, KVM_MEM_GUEST_MEMFD, 0, SLOT_SIZE, e.gmem, 0), 0);
	/* Closing a bound file is allowed; the slot stays and can still be deleted. */
	cr_expect_eq(sys_close(e.gmem), 0);
	cr_expect_eq(set_region(e.vm, 0, 0, 0, 0, -1, 0), 0);
	sys_close(e.vm);
}

/* A slot range in pages: guest frames [first, first + n). */
struct geometry {
	const char *name;
	uint64_t first, n;
	bool overlaps;
};

/* Around an existing range of pages [16, 32): every way of meeting it. */
static const struct geometry geometries[] = {
	{ "inside", 20, 4, true },
	{ "covering", 8, 32, true },
	{ "straddling the start", 8, 12, true },
	{ "straddling the end", 28, 12, true },
	{ "identical", 16, 16, true },
	{ "one page at the start", 16, 1, true },
	{ "one page at the end", 31, 1, true },
	{ "adjacent below", 0, 16, false },
	{ "adjacent above", 32, 16, false },
};

/* Guest ranges of two slots never overlap, however they meet (EEXIST). */
Test(memslot, guest_range_overlap_geometries)
{
	struct slot_env e;

	slot_env(&e, 0);
	/* Slot 0 holds guest pages [16, 32); each candidate binds a file range of its own. */
	cr_assert_eq(set_region(e.vm, 0, KVM_MEM_GUEST_MEMFD, 16 * PAGE_SIZE, 16 * PAGE_SIZE, e.gmem,
				0), 0);
	for (size_t i = 0; i < sizeof(geometries) / sizeof(geometries[0]); i++) {
		const struct geometry *g = &geometries[i];
		int err = set_region(e.vm, 1, KVM_MEM_GUEST_MEMFD, g->first * PAGE_SIZE,
				     g->n * PAGE_SIZE, e.gmem, SLOT_SIZE);

		cr_expect_eq(err, g->overlaps ? EEXIST : 0, "%s: %s", g->name, strerror(err));
		if (!err)
			cr_assert_eq(set_region(e.vm, 1, 0, g->first * PAGE_SIZE, 0, e.gmem, 0), 0,
				     "%s: delete", g->name);
	}
	/* The refused slots left nothing behind: slot 0 is still the only one. */
	cr_expect_eq(set_region(e.vm, 1, KVM_MEM_GUEST_MEMFD, 0, 16 * PAGE_SIZE, e.gmem, SLOT_SIZE), 0);
	cr_expect_eq(set_region(e.vm, 2, KVM_MEM_GUEST_MEMFD, 32 * PAGE_SIZE, 16 * PAGE_SIZE, e.gmem,
				SLOT_SIZE + 16 * PAGE_SIZE), 0);
	sys_close(e.gmem);
	sys_close(e.vm);
}

/* A file range backs one slot only, however the ranges meet (6.18 EINVAL, mainline EEXIST). */
Test(memslot, file_range_overlap_geometries)
{
	struct slot_env e;

	slot_env(&e, 0);
	/* Slot 0 binds file pages [16, 32); each candidate is elsewhere in the guest. */
	cr_assert_eq(set_region(e.vm, 0, KVM_MEM_GUEST_MEMFD, 0, 16 * PAGE_SIZE, e.gmem,
				16 * PAGE_SIZE), 0);
	for (size_t i = 0; i < sizeof(geometries) / sizeof(geometries[0]); i++) {
		const struct geometry *g = &geometries[i];
		int err = set_region(e.vm, 1, KVM_MEM_GUEST_MEMFD, SLOT_SIZE, g->n * PAGE_SIZE, e.gmem,
				     g->first * PAGE_SIZE);

		if (!g->overlaps)
			cr_expect_eq(err, 0, "%s: %s", g->name, strerror(err));
		else if (TARGET_IS_KERNEL)
			cr_expect(err == EINVAL || err == EEXIST, "%s: %s", g->name, strerror(err));
		else
			cr_expect_eq(err, EEXIST, "%s: %s", g->name, strerror(err));
		if (!err)
			cr_assert_eq(set_region(e.vm, 1, 0, SLOT_SIZE, 0, e.gmem, 0), 0,
				     "%s: delete", g->name);
	}
	sys_close(e.gmem);
	sys_close(e.vm);
}
