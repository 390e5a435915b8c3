/* vCPU fds and the VM's capabilities for memslots and exits, as the kernel answers them. */
#include "harness/surface.h"

#include <string.h>

Test(vcpu, create_and_map)
{
	int kvm = t_open_kvm();
	int vm = t_create_vm(KVM_X86_DEFAULT_VM);
	int size = sys_ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
	int vcpu = sys_ioctl(vm, KVM_CREATE_VCPU, 0);

	cr_assert_geq(vcpu, 0, "%s", strerror(errno));
	cr_expect_geq(size, 4096);
	cr_expect_eq(fcntl(vcpu, F_GETFD) & FD_CLOEXEC, FD_CLOEXEC);
	cr_expect_eq(ioctl_errno(vm, KVM_CREATE_VCPU, 0), EEXIST);
	cr_expect_eq(ioctl_errno(vm, KVM_CREATE_VCPU, 1UL << 20), EINVAL);

	struct kvm_run *run = sys_mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
	cr_assert_neq(run, MAP_FAILED, "%s", strerror(errno));
	/* A second mapping shares the same run area. */
	struct kvm_run *again = sys_mmap(NULL, size, PROT_READ, MAP_SHARED, vcpu, 0);
	cr_assert_neq(again, MAP_FAILED);
	run->request_interrupt_window = 1;
	cr_expect_eq(again->request_interrupt_window, 1);
	errno = 0;
	cr_expect_eq(sys_mmap(NULL, size, PROT_READ | PROT_EXEC, MAP_SHARED, vcpu, 0), MAP_FAILED);
	cr_expect_eq(errno, EPERM);
	/* An unknown vCPU ioctl is EINVAL on x86. */
	cr_expect_eq(ioctl_errno(vcpu, _IO(KVMIO, 0xfe), 0), EINVAL);
	sys_munmap(again, size);
	sys_munmap(run, size);
	sys_close(vcpu);
	sys_close(vm);
	sys_close(kvm);
}

Test(vcpu, capabilities)
{
	int kvm = t_open_kvm();
	int vm = t_create_vm(KVM_X86_DEFAULT_VM);

	for (int fd = kvm, i = 0; i < 2; fd = vm, i++) {
		cr_expect_eq(sys_ioctl(fd, KVM_CHECK_EXTENSION, KVM_CAP_USER_MEMORY), 1);
		cr_expect_eq(sys_ioctl(fd, KVM_CHECK_EXTENSION, KVM_CAP_USER_MEMORY2), 1);
		cr_expect_eq(sys_ioctl(fd, KVM_CHECK_EXTENSION, KVM_CAP_MEMORY_FAULT_INFO), 1);
		/* The selftests' library refuses to start without it. */
		cr_expect_eq(sys_ioctl(fd, KVM_CHECK_EXTENSION, KVM_CAP_IMMEDIATE_EXIT), 1);
		/* The only hypercall KVM lets userspace handle on x86. */
		cr_expect_eq(sys_ioctl(fd, KVM_CHECK_EXTENSION, KVM_CAP_EXIT_HYPERCALL),
			     1 << KVM_HC_MAP_GPA_RANGE);
		cr_expect_geq(sys_ioctl(fd, KVM_CHECK_EXTENSION, KVM_CAP_NR_MEMSLOTS), 32);
	}
	/* A DEFAULT VM has no private memory: no attributes, in the VM or in its files. */
	cr_expect_eq(sys_ioctl(vm, KVM_CHECK_EXTENSION, KVM_CAP_MEMORY_ATTRIBUTES), 0);
	cr_expect_eq(sys_ioctl(vm, KVM_CHECK_EXTENSION, KVM_CAP_GUEST_MEMFD_MEMORY_ATTRIBUTES), 0);

	struct kvm_enable_cap cap = { .cap = KVM_CAP_EXIT_HYPERCALL, .args = { 1ULL << 3 } };
	cr_expect_eq(ioctl_errno(vm, KVM_ENABLE_CAP, &cap), EINVAL);
	cap.args[0] = 1ULL << KVM_HC_MAP_GPA_RANGE;
	cr_expect_eq(ioctl_errno(vm, KVM_ENABLE_CAP, &cap), 0);
	sys_close(vm);
	sys_close(kvm);
}

/* A vCPU lives as long as its VM: closing its fd does not give its id back. */
Test(vcpu, closed_fd_keeps_the_id)
{
	int vm = t_create_vm(KVM_X86_DEFAULT_VM);
	int vcpu = sys_ioctl(vm, KVM_CREATE_VCPU, 0);

	cr_assert_geq(vcpu, 0, "%s", strerror(errno));
	cr_assert_eq(sys_close(vcpu), 0);
	cr_expect_eq(ioctl_errno(vm, KVM_CREATE_VCPU, 0), EEXIST, "the id of a vCPU whose fd is closed");
	sys_close(vm);
}
