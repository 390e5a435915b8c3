/* Lifetimes: a guest_memfd keeps its VM alive; bad input to KVM_CREATE_GUEST_MEMFD leaves no fd. */
#include "harness/cases.h"

#include <dirent.h>
#include <linux/falloc.h>
#include <string.h>

#ifndef GM_TARGET_KERNEL
static struct gm_stats stats(void)
{
	struct gm_stats s;

	cr_assert_eq(gm_stats(&s), 0);
	return s;
}
#define expect_live_vms(n) \
	cr_expect_eq(stats().vms, (uint64_t)(n), "libgmem counts %llu VMs", \
		     (unsigned long long)stats().vms)
#else
#define expect_live_vms(n) ((void)0)
#endif

ParameterizedTestParameters(lifetime, file_keeps_vm)
{
	return cr_make_param_array(struct gm_case, gm_all_cases, gm_all_cases_nr);
}

/* Closing the VM fd does not end a VM that still has a guest_memfd. */
ParameterizedTest(struct gm_case *c, lifetime, file_keeps_vm)
{
	struct gm_env e;
	struct stat st;

	t_env_setup(&e, c, 0);
	sys_close(e.kvm);
	expect_live_vms(1);
	cr_expect_eq(sys_close(e.vm), 0);
	expect_live_vms(1);

	cr_expect_eq(sys_fstat(e.gmem, &st), 0);
	cr_expect_eq(st.st_size, (off_t)e.size);
	cr_expect_eq(sys_fallocate(e.gmem, FALLOC_FL_KEEP_SIZE, 0, e.size), 0, "%s",
		     strerror(errno));
	cr_expect_eq(sys_fallocate(e.gmem, FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE, 0, e.size),
		     0, "%s", strerror(errno));
	cr_expect_eq(sys_close(e.gmem), 0);
	expect_live_vms(0);
}

ParameterizedTestParameters(lifetime, mapping_keeps_vm)
{
	T_CASES_WITH(GUEST_MEMFD_FLAG_MMAP | GUEST_MEMFD_FLAG_INIT_SHARED, 0);
}

/* A mapping keeps the file, and through it the VM, after both fds are closed. */
ParameterizedTest(struct gm_case *c, lifetime, mapping_keeps_vm)
{
	struct gm_env e;
	char *p;

	t_env_setup(&e, c, 0);
	sys_close(e.kvm);
	p = sys_mmap(NULL, e.size, PROT_READ | PROT_WRITE, MAP_SHARED, e.gmem, 0);
	cr_assert_neq(p, MAP_FAILED, "%s", strerror(errno));
	p[0] = 0x5c;
	cr_expect_eq(sys_close(e.vm), 0);
	expect_live_vms(1);
	cr_expect_eq(p[0], 0x5c, "data after the VM fd is closed");
	p[e.size - 1] = 0x5d;
	cr_expect_eq(sys_fallocate(e.gmem, FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE, 0,
				   e.folio_size), 0, "%s", strerror(errno));
	cr_expect_eq(p[0], 0, "punch works on a file whose VM fd is closed");

	cr_expect_eq(sys_close(e.gmem), 0);
	expect_live_vms(1);
	cr_expect_eq(p[e.size - 1], 0x5d, "data after both fds are closed");
	cr_expect_eq(sys_munmap(p, e.size), 0);
	expect_live_vms(0);
}

/* Open fds of the process, counted in /proc/self/fd. */
static int count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *de;
	int n = 0;

	cr_assert_not_null(d);
	while ((de = readdir(d)))
		n += de->d_name[0] != '.';
	closedir(d);
	return n - 1; /* the directory's own fd */
}

/* A bad argument pointer is EFAULT, before anything else, and creates nothing. */
Test(lifetime, create_bad_pointer)
{
	int vm = t_create_vm(KVM_X86_DEFAULT_VM);
	struct kvm_create_guest_memfd *tail;
	char *page;
	int before;

	t_require_gmem_flags(vm, 0);
	/* An argument that starts in a mapped page and runs into an unmapped one. */
	page = mmap(NULL, 2 * PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	cr_assert_neq(page, MAP_FAILED);
	munmap(page + PAGE_SIZE, PAGE_SIZE);
	tail = (void *)(page + PAGE_SIZE - 16);
	tail->size = PAGE_SIZE;
	tail->flags = 0;

#ifndef GM_TARGET_KERNEL
	struct gm_stats s0 = stats();
#endif
	before = count_fds();
	cr_expect_eq(ioctl_errno(vm, KVM_CREATE_GUEST_MEMFD, NULL), EFAULT);
	cr_expect_eq(ioctl_errno(vm, KVM_CREATE_GUEST_MEMFD, (void *)8), EFAULT);
	cr_expect_eq(ioctl_errno(vm, KVM_CREATE_GUEST_MEMFD, tail), EFAULT, "half-mapped argument");
	cr_expect_eq(count_fds(), before, "a failed KVM_CREATE_GUEST_MEMFD left an fd");
#ifndef GM_TARGET_KERNEL
	struct gm_stats s1 = stats();

	cr_expect_eq(s1.gmem_files, s0.gmem_files);
	cr_expect_eq(s1.open_fds, s0.open_fds);
	cr_expect_eq(s1.metadata_bytes, s0.metadata_bytes, "metadata %llu -> %llu",
		     (unsigned long long)s0.metadata_bytes, (unsigned long long)s1.metadata_bytes);
#endif
	munmap(page, PAGE_SIZE);
	sys_close(vm);
}

ParameterizedTestParameters(lifetime, create_bad_args)
{
	return cr_make_param_array(struct gm_case, gm_all_cases, gm_all_cases_nr);
}

/* Refused creations leave no fd and no file behind. */
ParameterizedTest(struct gm_case *c, lifetime, create_bad_args)
{
	int vm = t_create_vm(c->vm_type);
	uint64_t flags = c->flags | c->folio;
	struct kvm_create_guest_memfd args = { .flags = flags };
	/* The last is not a multiple of a huge folio; for 4K folios it is left out. */
	const uint64_t sizes[] = { 0, 100, -PAGE_SIZE, gm_case_folio_size(c) + PAGE_SIZE };
	size_t nr = gm_case_folio_size(c) > PAGE_SIZE ? 4 : 3;
	int before;

	t_require_gmem_flags(vm, flags);
	before = count_fds();
	for (size_t i = 0; i < nr; i++) {
		args.size = sizes[i];
		cr_expect_eq(ioctl_errno(vm, KVM_CREATE_GUEST_MEMFD, &args), EINVAL, "size %#llx",
			     (unsigned long long)args.size);
	}
	args.size = PAGE_SIZE;
	args.flags = flags | (1ULL << 7);
	cr_expect_eq(ioctl_errno(vm, KVM_CREATE_GUEST_MEMFD, &args), EINVAL);
	cr_expect_eq(count_fds(), before);
#ifndef GM_TARGET_KERNEL
	cr_expect_eq(stats().gmem_files, 0);
#endif
	sys_close(vm);
}

/*
 * A fd closed behind the library's back and reused by another file is that other file:
 * the calls act on it as the kernel's do, never on the guest_memfd the number used to be.
 */
Test(lifetime, reused_fd_number_is_the_new_file)
{
	int vm = t_create_vm(KVM_X86_DEFAULT_VM);
	int gmem = t_create_gmem(vm, 16 * PAGE_SIZE, GUEST_MEMFD_FLAG_MMAP);
	struct stat st;
	int other;

	cr_assert_eq(close(gmem), 0);
	other = memfd_create("not-guest-memfd", 0);
	cr_assert_eq(other, gmem, "the lowest free number is reused");
	cr_assert_eq(ftruncate(other, 3 * PAGE_SIZE), 0);
	cr_expect_eq(sys_fstat(other, &st), 0);
	cr_expect_eq(st.st_size, 3 * PAGE_SIZE, "fstat sees the memfd, not the guest_memfd");
	cr_expect_eq(ioctl_errno(other, KVM_CREATE_VCPU, 0), ENOTTY, "a memfd has no KVM ioctls");
	/* Allocation on the memfd is a plain fallocate (no guest_memfd alignment or size limit). */
	cr_expect_eq(sys_fallocate(other, 0, 0, 5 * PAGE_SIZE), 0, "%s", strerror(errno));
	cr_expect_eq(fstat(other, &st), 0);
	cr_expect_eq(st.st_size, 5 * PAGE_SIZE, "the memfd grew");
	cr_expect_eq(sys_close(other), 0);
	cr_expect_eq(fcntl(other, F_GETFD), -1, "closed");
	sys_close(vm);
}
