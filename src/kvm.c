/* The system fd (/dev/kvm): API version, VM creation, supported CPUID; capabilities are in vm.c. */
#include <sys/ioctl.h>

#include "kvm.h"
#include "kvm/host.h"
#include "vm.h"
#include "x86_state.h"

/* The x86 system ioctls, answered for soft vCPUs. */
static long kvm_dev_soft_x86_ioctl(unsigned long request, unsigned long arg)
{
	switch (request) {
	case KVM_GET_SUPPORTED_CPUID:
		return cpuid_get_supported(arg);
	case KVM_GET_MSR_INDEX_LIST:
	case KVM_GET_MSR_FEATURE_INDEX_LIST:
		return x86_msr_list(arg);
	case KVM_GET_MSRS:
		return x86_msr_io(arg, true);
	default:
		return -EINVAL;
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
		return vm_check_extension(NULL, (long)arg);
	case KVM_GET_VCPU_MMAP_SIZE:
		return arg ? -EINVAL : 3 * (long)GM_PAGE_SIZE;
	default:
		/* E.g. KVM_GET_SUPPORTED_CPUID, which a kvm-backend VMM needs for its vCPUs. */
		if (vm_default_backend_is_kvm())
			return host_ioctl(host_kvm_fd(), request, arg);
		return kvm_dev_soft_x86_ioctl(request, arg);
	}
}
