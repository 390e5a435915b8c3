/* What madvise, mprotect and mremap do to a guest_memfd mapping. */
#include "harness/surface.h"
#if !TARGET_IS_KERNEL
#include "harness/hostmap_layout.h"
#endif

#include <string.h>

#ifndef MADV_COLLAPSE
#define MADV_COLLAPSE 25
#endif
#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22
#define MADV_POPULATE_WRITE 23
#endif

/* A VM with an mmap-able, shared guest_memfd of 4 MiB mapped read-write; skips without one. */
struct vma_env {
	int kvm, vm, gmem;
	size_t size;
	char *map;
};

static void vma_setup(struct vma_env *v)
{
	v->kvm = t_open_kvm();
	v->vm = t_create_vm(KVM_X86_SW_PROTECTED_VM);
	v->size = 4 << 20;
	v->gmem = t_create_gmem(v->vm, v->size, GUEST_MEMFD_FLAG_MMAP | GUEST_MEMFD_FLAG_INIT_SHARED);
	v->map = sys_mmap(NULL, v->size, PROT_READ | PROT_WRITE, MAP_SHARED, v->gmem, 0);
	cr_assert_neq(v->map, MAP_FAILED, "%s", strerror(errno));
}

static void vma_teardown(struct vma_env *v)
{
	sys_munmap(v->map, v->size);
	sys_close(v->gmem);
	sys_close(v->vm);
	sys_close(v->kvm);
}

/* khugepaged has nothing to collapse in a guest_memfd: MADV_COLLAPSE is EINVAL. */
Test(vma, madv_collapse_einval)
{
	struct vma_env v;

	vma_setup(&v);
	memset(v.map, 1, v.size);
	errno = 0;
	cr_expect_eq(sys_madvise(v.map, 2 << 20, MADV_COLLAPSE), -1);
	cr_expect_eq(errno, EINVAL, "MADV_COLLAPSE: %s", strerror(errno));
	cr_expect_eq(v.map[0], 1, "a refused MADV_COLLAPSE changed the memory");
	vma_teardown(&v);
}

/* MADV_REMOVE punches a hole in the file: the pages read zero, in every mapping. */
Test(vma, madv_remove_punches_the_file)
{
	struct vma_env v;
	char *other;
	struct stat st;

	vma_setup(&v);
	memset(v.map, 0x5a, 3 * PAGE_SIZE);
	other = sys_mmap(NULL, v.size, PROT_READ, MAP_SHARED, v.gmem, 0);
	cr_assert_neq(other, MAP_FAILED);
	cr_assert_eq(sys_fstat(v.gmem, &st), 0);
	cr_expect_eq(sys_madvise(v.map + PAGE_SIZE, PAGE_SIZE, MADV_REMOVE), 0, "%s", strerror(errno));
	cr_expect_eq(v.map[0], 0x5a);
	cr_expect_eq(v.map[PAGE_SIZE], 0, "the removed page still holds data");
	cr_expect_eq(other[PAGE_SIZE], 0, "another mapping still sees the removed page");
	cr_expect_eq(v.map[2 * PAGE_SIZE], 0x5a, "MADV_REMOVE went past its range");
	sys_munmap(other, v.size);
	vma_teardown(&v);
}

/* Other advice acts on the mapping only, as on any shared file mapping. */
Test(vma, madv_dontneed_keeps_the_data)
{
	struct vma_env v;

	vma_setup(&v);
	v.map[0] = 7;
	cr_expect_eq(sys_madvise(v.map, PAGE_SIZE, MADV_DONTNEED), 0, "%s", strerror(errno));
	cr_expect_eq(v.map[0], 7, "MADV_DONTNEED of a shared mapping lost the file's data");
	cr_expect_eq(sys_madvise(v.map, PAGE_SIZE, MADV_HUGEPAGE), 0, "%s", strerror(errno));
	errno = 0;
	cr_expect_eq(sys_madvise(v.map + 1, PAGE_SIZE, MADV_REMOVE), -1);
	cr_expect_eq(errno, EINVAL, "unaligned MADV_REMOVE: %s", strerror(errno));
	vma_teardown(&v);
}

/* Populating faults every page in: a private page refuses, as a host access does (EFAULT). */
Test(vma, madv_populate_private_efault)
{
	struct vma_env v;
	struct kvm_memory_attributes2 attrs = {
		.offset = 2 * PAGE_SIZE, .size = PAGE_SIZE, .attributes = KVM_MEMORY_ATTRIBUTE_PRIVATE,
	};

	vma_setup(&v);
	cr_expect_eq(sys_madvise(v.map, 2 * PAGE_SIZE, MADV_POPULATE_WRITE), 0, "%s",
		     strerror(errno));
	t_require(sys_ioctl(v.gmem, KVM_SET_MEMORY_ATTRIBUTES2, &attrs) == 0,
		  TARGET_NAME ": no in-place conversion");
	for (int advice = MADV_POPULATE_READ; advice <= MADV_POPULATE_WRITE; advice++) {
		errno = 0;
		cr_expect_eq(sys_madvise(v.map, 4 * PAGE_SIZE, advice), -1);
		cr_expect_eq(errno, EFAULT, "advice %d over a private page: %s", advice,
			     strerror(errno));
	}
	vma_teardown(&v);
}

/* guest_memfd lives on a noexec mount: a mapping of it cannot become executable. */
Test(vma, mprotect_exec_eacces)
{
	struct vma_env v;

	vma_setup(&v);
	errno = 0;
	cr_expect_eq(sys_mprotect(v.map, PAGE_SIZE, PROT_READ | PROT_EXEC), -1);
	cr_expect_eq(errno, EACCES, "mprotect(PROT_EXEC): %s", strerror(errno));
	cr_expect_eq(sys_mprotect(v.map, PAGE_SIZE, PROT_READ), 0, "%s", strerror(errno));
	cr_expect_eq(sys_mprotect(v.map, PAGE_SIZE, PROT_READ | PROT_WRITE), 0, "%s", strerror(errno));
	v.map[0] = 3;
	cr_expect_eq(v.map[0], 3);
	vma_teardown(&v);
}

/* A moved mapping keeps showing the file. */
Test(vma, mremap_moves)
{
	struct vma_env v;
	char *dest, *moved;

	vma_setup(&v);
	v.map[PAGE_SIZE] = 9;
	dest = mmap(NULL, v.size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	cr_assert_neq(dest, MAP_FAILED);
	moved = sys_mremap(v.map, v.size, v.size, MREMAP_MAYMOVE | MREMAP_FIXED, dest);
	cr_assert_eq(moved, dest, "%s", strerror(errno));
	v.map = moved;
	cr_expect_eq(v.map[PAGE_SIZE], 9);
	vma_teardown(&v);
}

/*
 * A grown mapping shows the file in its new part too, shared pages as data
 * and private ones as SIGBUS, whether it grew in place or moved.
 */
Test(vma, mremap_grow)
{
	struct vma_env v;
	struct kvm_memory_attributes2 attrs = {
		.offset = 3 * PAGE_SIZE, .size = PAGE_SIZE, .attributes = KVM_MEMORY_ATTRIBUTE_PRIVATE,
	};
	char *small, *p, *blocker;

	vma_setup(&v);
#if !TARGET_IS_KERNEL
	/* Laid host mappings do not grow (compat.md): refused, and the mapping is left as it was. */
	if (hostmap_laid(v.gmem)) {
		v.map[0] = 0x45;
		errno = 0;
		cr_expect_eq(sys_mremap(v.map, 4 * PAGE_SIZE, 8 * PAGE_SIZE, MREMAP_MAYMOVE), MAP_FAILED);
		cr_expect_eq(errno, EINVAL, "%s", strerror(errno));
		cr_expect_eq(v.map[0], 0x45);
		vma_teardown(&v);
		cr_skip_test("a limit of laid host mappings: growing one is EINVAL (compat.md)");
	}
#endif
	memset(v.map, 0x44, 4 * PAGE_SIZE);
	small = sys_mmap(NULL, PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, v.gmem, 0);
	cr_assert_neq(small, MAP_FAILED);
	/* Something right after it: the growth has to move the mapping. */
	blocker = mmap(small + PAGE_SIZE, PAGE_SIZE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS |
		       MAP_FIXED_NOREPLACE, -1, 0);
	p = sys_mremap(small, PAGE_SIZE, 2 * PAGE_SIZE, MREMAP_MAYMOVE);
	cr_assert_neq(p, MAP_FAILED, "grow: %s", strerror(errno));
	cr_expect_eq(p[0], 0x44);
	cr_expect_eq(p[PAGE_SIZE], 0x44, "the grown part does not show the file");
	/* In place this time, over pages that include a private one. */
	if (blocker != MAP_FAILED)
		munmap(blocker, PAGE_SIZE);
	if (sys_ioctl(v.gmem, KVM_SET_MEMORY_ATTRIBUTES2, &attrs) == 0) {
		small = sys_mremap(p, 2 * PAGE_SIZE, 4 * PAGE_SIZE, MREMAP_MAYMOVE);
		cr_assert_neq(small, MAP_FAILED, "grow again: %s", strerror(errno));
		p = small;
		cr_expect_eq(p[2 * PAGE_SIZE], 0x44);
		cr_expect(t_access_sigbus(p + 3 * PAGE_SIZE, false), "a private page in the grown part");
	}
	sys_munmap(p, 4 * PAGE_SIZE);
	vma_teardown(&v);
}

#if !TARGET_IS_KERNEL
/* Only a whole mapping grows: growing a part of one is refused and changes nothing. */
Test(vma, mremap_grow_of_a_part_refused)
{
	struct vma_env v;

	vma_setup(&v);
	v.map[PAGE_SIZE] = 5;
	errno = 0;
	cr_expect_eq(sys_mremap(v.map + PAGE_SIZE, PAGE_SIZE, 2 * PAGE_SIZE, MREMAP_MAYMOVE),
		     MAP_FAILED);
	cr_expect_eq(errno, EINVAL, "%s", strerror(errno));
	cr_expect_eq(v.map[PAGE_SIZE], 5);
	errno = 0;
	cr_expect_eq(sys_mremap(v.map, 0, PAGE_SIZE, MREMAP_MAYMOVE), MAP_FAILED);
	cr_expect_eq(errno, EINVAL, "a copy from size 0: %s", strerror(errno));
	vma_teardown(&v);
}
#endif
