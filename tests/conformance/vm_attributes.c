/* KVM_SET_MEMORY_ATTRIBUTES on the VM (per-VM attributes, Linux 6.8+): capabilities, validation, ABI. */
#include "harness/surface.h"

#include <string.h>

#define PRIVATE KVM_MEMORY_ATTRIBUTE_PRIVATE

/* A SW_PROTECTED VM whose attributes live in the VM; skips where the target keeps them elsewhere. */
static int vm_attrs_vm(void)
{
	int vm = t_create_vm(KVM_X86_SW_PROTECTED_VM);

	if (sys_ioctl(vm, KVM_CHECK_EXTENSION, KVM_CAP_MEMORY_ATTRIBUTES) != (int)PRIVATE)
		cr_skip_test("%s: no per-VM attributes (KVM_CAP_MEMORY_ATTRIBUTES is not PRIVATE on a "
			     "SW_PROTECTED VM; libgmem: kvm.vm_memory_attributes is 0)", TARGET_NAME);
	return vm;
}

static int set_vm_attrs(int vm, uint64_t address, uint64_t size, uint64_t attrs, uint64_t flags)
{
	struct kvm_memory_attributes a = {
		.address = address, .size = size, .attributes = attrs, .flags = flags,
	};

	return ioctl_errno(vm, KVM_SET_MEMORY_ATTRIBUTES, &a);
}

/* PRIVATE on /dev/kvm and on VMs with private memory, 0 on a DEFAULT VM; no per-file attributes. */
Test(vm_attributes, capabilities)
{
	int vm = vm_attrs_vm();
	int kvm = t_open_kvm();
	int def = t_create_vm(KVM_X86_DEFAULT_VM);

	cr_expect_eq(sys_ioctl(kvm, KVM_CHECK_EXTENSION, KVM_CAP_MEMORY_ATTRIBUTES), PRIVATE);
	cr_expect_eq(sys_ioctl(def, KVM_CHECK_EXTENSION, KVM_CAP_MEMORY_ATTRIBUTES), 0);
	cr_expect_eq(sys_ioctl(vm, KVM_CHECK_EXTENSION, KVM_CAP_GUEST_MEMFD_MEMORY_ATTRIBUTES), 0);
	cr_expect_eq(sys_ioctl(kvm, KVM_CHECK_EXTENSION, KVM_CAP_GUEST_MEMFD_MEMORY_ATTRIBUTES), 0);
	sys_close(def);
	sys_close(kvm);
	sys_close(vm);
}

/* kvm_vm_ioctl_set_mem_attributes' checks, each alone: EFAULT, then EINVAL for each field. */
Test(vm_attributes, validation)
{
	int vm = vm_attrs_vm();

	cr_expect_eq(ioctl_errno(vm, KVM_SET_MEMORY_ATTRIBUTES, (void *)8), EFAULT);
	cr_expect_eq(set_vm_attrs(vm, 0, PAGE_SIZE, PRIVATE, 1), EINVAL, "flags");
	cr_expect_eq(set_vm_attrs(vm, 0, PAGE_SIZE, 1ULL << 2, 0), EINVAL, "unknown attribute");
	cr_expect_eq(set_vm_attrs(vm, 0, PAGE_SIZE, PRIVATE | 1, 0), EINVAL, "extra attribute");
	cr_expect_eq(set_vm_attrs(vm, 0, 0, PRIVATE, 0), EINVAL, "size 0");
	cr_expect_eq(set_vm_attrs(vm, PAGE_SIZE, -PAGE_SIZE, PRIVATE, 0), EINVAL, "wraps to 0");
	cr_expect_eq(set_vm_attrs(vm, -PAGE_SIZE, 2 * PAGE_SIZE, PRIVATE, 0), EINVAL, "overflow");
	cr_expect_eq(set_vm_attrs(vm, 1, PAGE_SIZE, PRIVATE, 0), EINVAL, "address alignment");
	cr_expect_eq(set_vm_attrs(vm, 0, 100, PRIVATE, 0), EINVAL, "size alignment");
	/* The order: a bad field ahead of a bad size is what is reported, still EINVAL. */
	cr_expect_eq(set_vm_attrs(vm, 1, 0, 1ULL << 2, 1), EINVAL, "everything wrong");
	sys_close(vm);
}

/* Attributes are per GPA and independent of memslots: any aligned range can be set, and reset. */
Test(vm_attributes, set_without_memslot)
{
	int vm = vm_attrs_vm();

	cr_expect_eq(set_vm_attrs(vm, 0x100000000ULL, 16 * PAGE_SIZE, PRIVATE, 0), 0);
	/* Setting what is already there is a no-op that succeeds. */
	cr_expect_eq(set_vm_attrs(vm, 0x100000000ULL, 16 * PAGE_SIZE, PRIVATE, 0), 0);
	cr_expect_eq(set_vm_attrs(vm, 0x100000000ULL + 4 * PAGE_SIZE, 4 * PAGE_SIZE, 0, 0), 0);
	cr_expect_eq(set_vm_attrs(vm, 0, SZ_1G, PRIVATE, 0), 0, "a gigabyte at GPA 0");
	cr_expect_eq(set_vm_attrs(vm, 0, SZ_1G, 0, 0), 0);
	/* The last page of the 64-bit space: address + size reaches 2^64 and wraps, EINVAL. */
	cr_expect_eq(set_vm_attrs(vm, -PAGE_SIZE, PAGE_SIZE, PRIVATE, 0), EINVAL);
	cr_expect_eq(set_vm_attrs(vm, -2 * PAGE_SIZE, PAGE_SIZE, PRIVATE, 0), 0);
	sys_close(vm);
}

/* A VM without private memory supports no attribute; clearing is still accepted. */
Test(vm_attributes, default_vm)
{
	int vm = vm_attrs_vm();
	int def = t_create_vm(KVM_X86_DEFAULT_VM);

	cr_expect_eq(set_vm_attrs(def, 0, PAGE_SIZE, PRIVATE, 0), EINVAL);
	cr_expect_eq(set_vm_attrs(def, 0, PAGE_SIZE, 0, 0), 0);
	sys_close(def);
	sys_close(vm);
}

/* With attributes in the VM the file has none: KVM_SET_MEMORY_ATTRIBUTES2 is ENOTTY. */
Test(vm_attributes, no_file_attributes)
{
	int vm = vm_attrs_vm();
	int gmem = t_create_gmem(vm, 16 * PAGE_SIZE, 0);
	struct kvm_memory_attributes2 a = { .size = PAGE_SIZE, .attributes = 0 };

	cr_expect_eq(ioctl_errno(gmem, KVM_SET_MEMORY_ATTRIBUTES2, &a), ENOTTY);
	a.attributes = PRIVATE;
	cr_expect_eq(ioctl_errno(gmem, KVM_SET_MEMORY_ATTRIBUTES2, &a), ENOTTY);
	sys_close(gmem);
	sys_close(vm);
}

/* 6.18: INIT_SHARED only for VMs without private memory (the file cannot be converted). */
Test(vm_attributes, init_shared_refused)
{
	int vm = vm_attrs_vm();
	struct kvm_create_guest_memfd c = {
		.size = 16 * PAGE_SIZE, .flags = GUEST_MEMFD_FLAG_MMAP | GUEST_MEMFD_FLAG_INIT_SHARED,
	};
	int def = t_create_vm(KVM_X86_DEFAULT_VM);

	t_require_gmem_flags(vm, GUEST_MEMFD_FLAG_MMAP);
	cr_expect_eq(sys_ioctl(vm, KVM_CHECK_EXTENSION, KVM_CAP_GUEST_MEMFD_FLAGS),
		     GUEST_MEMFD_FLAG_MMAP);
	cr_expect_eq(ioctl_errno(vm, KVM_CREATE_GUEST_MEMFD, &c), EINVAL);
	cr_expect_eq(sys_ioctl(def, KVM_CHECK_EXTENSION, KVM_CAP_GUEST_MEMFD_FLAGS),
		     GUEST_MEMFD_FLAG_MMAP | GUEST_MEMFD_FLAG_INIT_SHARED);
	int fd = sys_ioctl(def, KVM_CREATE_GUEST_MEMFD, &c);

	cr_expect_geq(fd, 0, "INIT_SHARED on a DEFAULT VM: %s", strerror(errno));
	if (fd >= 0)
		sys_close(fd);
	sys_close(def);
	sys_close(vm);
}
