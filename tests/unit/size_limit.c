/* How large a guest_memfd can be: allocated on use, up to the library's documented limit. */
#include <linux/falloc.h>

#include "unit/vmm.h"

#define PAGE 4096ULL
#define LIMIT (1ULL << 46) /* docs/compat.md: the store is mapped whole */

static int create_errno(int vm, uint64_t size, uint64_t flags)
{
	struct kvm_create_guest_memfd c = { .size = size, .flags = flags };
	int fd = gm_ioctl(vm, KVM_CREATE_GUEST_MEMFD, &c);

	if (fd < 0)
		return errno;
	gm_close(fd);
	return 0;
}

/* Above the limit: ENOMEM whatever the folio size and wherever the address space has room. */
Test(size_limit, above_the_limit_is_enomem_and_leaves_nothing)
{
	const uint64_t folios[] = { 0, GM_GUEST_MEMFD_FOLIO_2M, GM_GUEST_MEMFD_FOLIO_1G };
	const uint64_t sizes[] = { 1ULL << 62, 1ULL << 50, 1ULL << 47, LIMIT + (1ULL << 30) };
	struct gm_stats before, after;
	struct vmm m;

	vmm_init(&m, KVM_X86_SW_PROTECTED_VM);
	int fds = t_open_fds();

	cr_assert_eq(gm_stats(&before), 0);
	for (size_t f = 0; f < 3; f++)
		for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++)
			cr_expect_eq(create_errno(m.vm, sizes[s], GUEST_MEMFD_FLAG_MMAP | folios[f]),
				     ENOMEM, "size %#llx folio %zu", (unsigned long long)sizes[s], f);
	/* The kernel's own checks still come first. */
	cr_expect_eq(create_errno(m.vm, (1ULL << 62) + 1, 0), EINVAL);
	cr_expect_eq(create_errno(m.vm, 1ULL << 63, 0), EINVAL);
	cr_assert_eq(gm_stats(&after), 0);
	cr_expect_eq(after.metadata_bytes, before.metadata_bytes);
	cr_expect_eq(after.gmem_files, before.gmem_files);
	cr_expect_eq(t_open_fds(), fds);
	vmm_destroy(&m);
}

/* Up to it, memory is allocated on use, as the kernel's. */
Test(size_limit, a_large_file_holds_only_what_is_used)
{
	const uint64_t size = 1ULL << 36;
	struct gm_gmem_info info;
	struct vmm m;

	vmm_init(&m, KVM_X86_SW_PROTECTED_VM);
	int gmem = vmm_gmem(&m, size, GUEST_MEMFD_FLAG_MMAP | GUEST_MEMFD_FLAG_INIT_SHARED);

	cr_assert_eq(gm_fallocate(gmem, FALLOC_FL_KEEP_SIZE, size - PAGE, PAGE), 0);
	cr_assert_eq(gm_gmem_info(gmem, &info), 0);
	cr_expect_eq(info.size, size);
	cr_expect_eq(info.allocated_bytes, PAGE);
	gm_close(gmem);
	vmm_destroy(&m);
}
