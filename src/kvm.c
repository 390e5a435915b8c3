/* The system fd (/dev/kvm): API version, VM creation and capabilities. */
#include <sys/ioctl.h>

#include "internal.h"
#include "kvm/host.h"

long kvm_check_extension(struct vm *vm, long cap)
{
	switch (cap) {
	case KVM_CAP_USER_MEMORY:
	case KVM_CAP_USER_MEMORY2:
	case KVM_CAP_MEMORY_FAULT_INFO:
	case KVM_CAP_ENABLE_CAP_VM:
	case KVM_CAP_GUEST_MEMFD:
		return 1;
	case KVM_CAP_NR_MEMSLOTS:
		return 32764;
	case KVM_CAP_EXIT_HYPERCALL:
		return KVM_EXIT_HYPERCALL_VALID_MASK;
	case KVM_CAP_GUEST_MEMFD_FLAGS:
		return (long)gmem_supported_flags(vm);
	case KVM_CAP_GUEST_MEMFD_MEMORY_ATTRIBUTES:
		/* Attributes live in the file (series v8): settable where the VM has private memory. */
		return !vm || vm_has_private_mem(vm) ? KVM_MEMORY_ATTRIBUTE_PRIVATE : 0;
	case KVM_CAP_VM_TYPES:
		return (1 << KVM_X86_DEFAULT_VM) | (1 << KVM_X86_SW_PROTECTED_VM);
	default:
		return 0;
	}
}

long kvm_dev_ioctl(unsigned long request, unsigned long arg)
{
	switch (request) {
	case KVM_GET_API_VERSION:
		return arg ? -EINVAL : KVM_API_VERSION;
	case KVM_CREATE_VM:
		return vm_create(arg);
	case KVM_CHECK_EXTENSION:
		return kvm_check_extension(NULL, (long)arg);
	case KVM_GET_VCPU_MMAP_SIZE:
		return arg ? -EINVAL : 3 * (long)GM_PAGE_SIZE;
	default:
		/* E.g. KVM_GET_SUPPORTED_CPUID, which a kvm-backend VMM needs for its vCPUs. */
		if (host_kvm_fd() >= 0)
			return host_ioctl(host_kvm_fd(), request, arg);
		return -EINVAL;
	}
}
