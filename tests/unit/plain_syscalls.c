/* Plain syscalls made on library fds behind the library's back change nothing it relies on. */
#include "unit/vmm.h"

#include <dirent.h>
#include <linux/falloc.h>
#include <stdio.h>
#include <stdlib.h>

#define PAGE 4096ULL

static void guest_returns(struct gm_guest *g, void *arg)
{
	(void)g;
	(void)arg;
}

/* The errno of a plain call, 0 if it succeeded. */
#define plain_errno(call) ({ errno = 0; (call) < 0 ? errno : 0; })

Test(plain_syscalls, resize_and_write_are_refused_on_every_library_fd)
{
	struct vmm m;

	vmm_init(&m, KVM_X86_SW_PROTECTED_VM);
	int gmem = vmm_gmem(&m, 16 * PAGE, GUEST_MEMFD_FLAG_MMAP | GUEST_MEMFD_FLAG_INIT_SHARED);
	int vcpu = vmm_vcpu(&m, 0, guest_returns, NULL);
	int fds[] = { m.kvm, m.vm, vcpu, gmem };

	for (size_t i = 0; i < sizeof(fds) / sizeof(fds[0]); i++) {
		int fd = fds[i];

		struct stat st;

		/* An empty handle truncated to 0 stays as it is; the others refuse. */
		if (fd == vcpu)
			cr_expect_eq(plain_errno(ftruncate(fd, 0)), EPERM);
		else
			cr_expect_eq(plain_errno(ftruncate(fd, 0)), 0, "fd %zu", i);
		cr_expect_eq(plain_errno(ftruncate(fd, 1 << 20)), EPERM, "fd %zu", i);
		cr_expect_eq(plain_errno(fallocate(fd, 0, 0, 1 << 20)), EPERM, "fd %zu", i);
		cr_expect_eq(plain_errno(fallocate(fd, FALLOC_FL_KEEP_SIZE, 1 << 20, PAGE)), EPERM,
			     "fd %zu", i);
		/* The vCPU's run area takes writes, as its mapping does. */
		if (fd != vcpu)
			cr_expect_eq(plain_errno(write(fd, "x", 1)), EPERM, "fd %zu", i);
		cr_assert_eq(fstat(fd, &st), 0);
		cr_expect_eq(st.st_size, fd == vcpu ? (off_t)(3 * PAGE) : 0, "fd %zu", i);
	}
	/* The library's objects work as before. */
	struct gm_gmem_info info;

	cr_expect_eq(gm_gmem_info(gmem, &info), 0);
	cr_expect_eq(info.size, 16 * PAGE);
	cr_assert_eq(vmm_run(&m), 0);
	cr_expect_eq(m.run->exit_reason, KVM_EXIT_HLT);
	gm_close(gmem);
	vmm_destroy(&m);
}

/* ftruncate(vcpu_fd, 0) made the next KVM_RUN die with SIGBUS on the run area. */
Test(plain_syscalls, run_area_survives_ftruncate_punch_and_write)
{
	struct vmm m;

	vmm_init(&m, KVM_X86_SW_PROTECTED_VM);
	int vcpu = vmm_vcpu(&m, 0, guest_returns, NULL);

	(void)pwrite(vcpu, "xxxxxxxx", 8, 0);
	(void)fallocate(vcpu, FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE, 0, 3 * PAGE);
	(void)ftruncate(vcpu, 0);
	cr_assert_eq(vmm_run(&m), 0);
	cr_expect_eq(m.run->exit_reason, KVM_EXIT_HLT);
	/* A new mapping of the fd still shares the run area. */
	struct kvm_run *again = gm_mmap(NULL, 3 * PAGE, PROT_READ, MAP_SHARED, vcpu, 0);

	cr_assert_neq(again, MAP_FAILED);
	m.run->request_interrupt_window = 1;
	cr_expect_eq(again->request_interrupt_window, 1);
	gm_munmap(again, 3 * PAGE);
	vmm_destroy(&m);
}

/* The library's own fds of a store, found in /proc/self/fd as any code in the process can. */
static int store_fds(int *out, int max)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	int n = 0;

	cr_assert(d);
	while ((e = readdir(d)) && n < max) {
		char path[300], target[256];
		ssize_t len;

		snprintf(path, sizeof(path), "/proc/self/fd/%s", e->d_name);
		len = readlink(path, target, sizeof(target) - 1);
		if (len <= 0)
			continue;
		target[len] = 0;
		if (strstr(target, "kvm-gmem-backing") || strstr(target, "kvm-gmem-split"))
			out[n++] = atoi(e->d_name);
	}
	closedir(d);
	return n;
}

/* A truncated store made every later access of the library's fault (SIGBUS). */
Test(plain_syscalls, store_size_is_sealed)
{
	struct vmm m;
	int fds[8], n;

	vmm_init(&m, KVM_X86_SW_PROTECTED_VM);
	int gmem = vmm_gmem(&m, 16 * PAGE, GUEST_MEMFD_FLAG_MMAP | GUEST_MEMFD_FLAG_INIT_SHARED);
	volatile char *host = gm_mmap(NULL, 16 * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, gmem, 0);

	cr_assert_neq(host, MAP_FAILED);
	host[5 * PAGE] = 'x';
	n = store_fds(fds, 8);
	cr_assert_geq(n, 1, "no store fd found in /proc/self/fd");
	for (int i = 0; i < n; i++) {
		cr_expect_eq(plain_errno(ftruncate(fds[i], 0)), EPERM);
		cr_expect_eq(plain_errno(ftruncate(fds[i], 1 << 30)), EPERM);
	}
	cr_assert_not(t_access_sigbus(host + 5 * PAGE, false), "the store lost its pages");
	cr_expect_eq(host[5 * PAGE], 'x');
	gm_munmap((void *)host, 16 * PAGE);
	gm_close(gmem);
	vmm_destroy(&m);
}

static void guest_never_runs(struct gm_guest *g, void *arg)
{
}

/* The library's own calls take one kind of fd each: any other library fd is EINVAL, not misread. */
Test(plain_syscalls, native_calls_check_the_fd_kind)
{
	struct vmm m;
	struct gm_gmem_info gi;
	struct gm_vm_info vi;
	struct gm_mmu_stats ms;
	struct gm_ucall uc;
	void *dma;

	vmm_init(&m, KVM_X86_SW_PROTECTED_VM);
	int gmem = vmm_gmem(&m, 1 << 20, GUEST_MEMFD_FLAG_MMAP | GUEST_MEMFD_FLAG_INIT_SHARED);
	int vcpu = vmm_vcpu(&m, 0, NULL, NULL);

	cr_expect_eq(gm_gmem_info(m.vm, &gi), -EINVAL);
	cr_expect_eq(gm_gmem_info(vcpu, &gi), -EINVAL);
	cr_expect_eq(gm_gmem_pin(m.vm, 0, 4096, &dma), -EINVAL);
	cr_expect_eq(gm_gmem_unpin(vcpu, 0, 4096), -EINVAL);
	cr_expect_eq(gm_vm_info(gmem, &vi), -EINVAL);
	cr_expect_eq(gm_vm_info(vcpu, &vi), -EINVAL);
	cr_expect_eq(gm_vm_mmu_stats(gmem, &ms), -EINVAL);
	cr_expect_eq(gm_vcpu_set_guest(m.vm, guest_never_runs, NULL), -EINVAL);
	cr_expect_eq(gm_vcpu_set_guest(gmem, guest_never_runs, NULL), -EINVAL);
	cr_expect_eq(gm_vcpu_get_ucall(gmem, &uc), -EINVAL);
	cr_expect_eq(gm_vcpu_get_ucall(m.kvm, &uc), -EINVAL);
	/* And they did nothing to the objects they were wrongly given. */
	cr_expect_eq(gm_gmem_info(gmem, &gi), 0);
	cr_expect_eq(gi.size, 1 << 20);
	cr_expect_eq(gm_vm_info(m.vm, &vi), 0);
	cr_expect_eq(vi.nr_vcpus, 1);
	gm_close(gmem);
	vmm_destroy(&m);
}
