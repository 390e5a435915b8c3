/* A program built against an installed libgmem through pkg-config: headers, library and soname. */
#include <stdio.h>

#include <gmem/gmem.h>

int main(void)
{
	int kvm = gm_open_kvm();
	int vm = gm_ioctl(kvm, KVM_CREATE_VM, KVM_X86_DEFAULT_VM);
	struct kvm_create_guest_memfd c = { .size = 4096, .flags = GUEST_MEMFD_FLAG_MMAP };
	int gmem = gm_ioctl(vm, KVM_CREATE_GUEST_MEMFD, &c);

	printf("install: consumer created guest_memfd %d through the installed library\n", gmem);
	return kvm < 0 || vm < 0 || gmem < 0;
}
