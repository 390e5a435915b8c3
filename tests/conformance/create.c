/* KVM_CREATE_VM, KVM_CHECK_EXTENSION and KVM_CREATE_GUEST_MEMFD: values, validation order, errno. */
#include <string.h>

#include "harness/surface.h"

Test(create, vm_types)
{
	int kvm = t_open_kvm();

	cr_expect_eq(sys_ioctl(kvm, KVM_GET_API_VERSION, 0), KVM_API_VERSION);
	cr_expect_eq(ioctl_errno(kvm, KVM_CREATE_VM, 6), EINVAL);
	cr_expect_eq(ioctl_errno(kvm, KVM_CREATE_VM, -1UL), EINVAL);
	int types = sys_ioctl(kvm, KVM_CHECK_EXTENSION, KVM_CAP_VM_TYPES);

	/* x86 knows types 0 (DEFAULT) to 5 (TDX); DEFAULT is always there. */
	cr_expect(types & (1 << KVM_X86_DEFAULT_VM), "KVM_CAP_VM_TYPES %#x", types);
	cr_expect_eq(types & ~0x3f, 0, "unknown VM types in %#x", types);
	/* libgmem has the two types without hardware, and SNP on its software platform. */
	if (!TARGET_IS_KERNEL)
		cr_expect_eq(types, (1 << KVM_X86_DEFAULT_VM) | (1 << KVM_X86_SW_PROTECTED_VM) |
				    (1 << KVM_X86_SNP_VM),
			     "KVM_CAP_VM_TYPES %#x", types);
	for (unsigned long t = 0; t < 8; t++) {
		int vm = sys_ioctl(kvm, KVM_CREATE_VM, t);

		if (types & (1 << t)) {
			cr_expect_geq(vm, 0, "type %lu listed but refused", t);
		} else {
			cr_expect_eq(vm, -1, "type %lu not listed but created", t);
			cr_expect_eq(errno, EINVAL);
		}
		if (vm >= 0)
			sys_close(vm);
	}
	sys_close(kvm);
}

ParameterizedTestParameters(create, caps)
{
	return cr_make_param_array(struct gm_case, gm_all_cases, 8);
}

/* Capabilities answer the same on the system fd and, per type, on the VM fd. */
ParameterizedTest(struct gm_case *c, create, caps)
{
	int kvm = t_open_kvm();
	int vm = t_create_vm(c->vm_type);

	t_require(sys_ioctl(kvm, KVM_CHECK_EXTENSION, KVM_CAP_GUEST_MEMFD) > 0,
		  "%s: no KVM_CAP_GUEST_MEMFD on this host", TARGET_NAME);
	cr_expect_eq(sys_ioctl(kvm, KVM_CHECK_EXTENSION, KVM_CAP_GUEST_MEMFD), 1);
	cr_expect_eq(sys_ioctl(vm, KVM_CHECK_EXTENSION, KVM_CAP_GUEST_MEMFD), 1);
	cr_expect_eq(sys_ioctl(kvm, KVM_CHECK_EXTENSION, KVM_CAP_GUEST_MEMFD_FLAGS),
		     GUEST_MEMFD_FLAG_MMAP | GUEST_MEMFD_FLAG_INIT_SHARED);
	/* 6.18 (per-VM attributes): INIT_SHARED only for VMs without private memory. */
	bool vm_attrs = sys_ioctl(vm, KVM_CHECK_EXTENSION, KVM_CAP_MEMORY_ATTRIBUTES) > 0;

	cr_expect_eq(sys_ioctl(vm, KVM_CHECK_EXTENSION, KVM_CAP_GUEST_MEMFD_FLAGS),
		     GUEST_MEMFD_FLAG_MMAP | (vm_attrs ? 0 : GUEST_MEMFD_FLAG_INIT_SHARED), "%s",
		     gm_case_name(c));
	/* An unknown capability is 0, not an error. */
	cr_expect_eq(sys_ioctl(vm, KVM_CHECK_EXTENSION, 100000), 0);
	cr_expect_eq(sys_ioctl(kvm, KVM_CHECK_EXTENSION, 100000), 0);
	sys_close(vm);
	sys_close(kvm);
}

ParameterizedTestParameters(create, gmem_validation)
{
	return cr_make_param_array(struct gm_case, gm_all_cases, gm_all_cases_nr);
}

ParameterizedTest(struct gm_case *c, create, gmem_validation)
{
	int vm = t_create_vm(c->vm_type);
	uint64_t flags = c->flags | c->folio;
	uint64_t folio = gm_case_folio_size(c);
	struct kvm_create_guest_memfd args = { .size = folio, .flags = flags };
	int fd;

	t_require_gmem_flags(vm, flags);

	/* Unknown flags come before the size check. */
	args.flags = flags | (1ULL << 5);
	args.size = 0;
	cr_expect_eq(ioctl_errno(vm, KVM_CREATE_GUEST_MEMFD, &args), EINVAL);
	args.flags = flags;
	cr_expect_eq(ioctl_errno(vm, KVM_CREATE_GUEST_MEMFD, &args), EINVAL, "size 0");
	args.size = 100;
	cr_expect_eq(ioctl_errno(vm, KVM_CREATE_GUEST_MEMFD, &args), EINVAL, "unaligned size");
	args.size = -PAGE_SIZE;
	cr_expect_eq(ioctl_errno(vm, KVM_CREATE_GUEST_MEMFD, &args), EINVAL, "negative size");
	if (folio > PAGE_SIZE) {
		args.size = folio + PAGE_SIZE;
		cr_expect_eq(ioctl_errno(vm, KVM_CREATE_GUEST_MEMFD, &args), EINVAL,
			     "size not a multiple of the folio");
	}
	cr_expect_eq(ioctl_errno(vm, KVM_CREATE_GUEST_MEMFD, (void *)8), EFAULT);

	/* reserved[] is not checked in 6.18. */
	args.size = folio;
	args.reserved[0] = 1;
	fd = sys_ioctl(vm, KVM_CREATE_GUEST_MEMFD, &args);
	cr_expect_geq(fd, 0, "nonzero reserved: %s", strerror(errno));
	/* Not close-on-exec, opened read-write. */
	cr_expect_eq(fcntl(fd, F_GETFD) & FD_CLOEXEC, 0);
	cr_expect_eq(fcntl(fd, F_GETFL) & O_ACCMODE, O_RDWR);
	sys_close(fd);
	sys_close(vm);
}

Test(create, gmem_on_system_fd)
{
	int kvm = t_open_kvm();
	struct kvm_create_guest_memfd args = { .size = PAGE_SIZE };

	cr_expect_eq(ioctl_errno(kvm, KVM_CREATE_GUEST_MEMFD, &args), EINVAL);
	sys_close(kvm);
}

Test(create, unknown_ioctls)
{
	int vm = t_create_vm(KVM_X86_DEFAULT_VM);
	int gmem = t_create_gmem(vm, PAGE_SIZE, 0);

	cr_expect_eq(ioctl_errno(vm, _IO(KVMIO, 0xff), 0), ENOTTY);
	cr_expect_eq(ioctl_errno(gmem, _IO(KVMIO, 0x1234), 0), ENOTTY);
	sys_close(gmem);
	sys_close(vm);
}
