/* A VMM with functions of its own named as libgmem's internals links with libgmem.a and runs. */
#include <stdio.h>

#include <gmem/gmem.h>

/*
 * QEMU has a kvm_check_extension of its own; any VMM may have a vm_create or an
 * mmu_init. Each counts its calls, so that a call from inside libgmem would show.
 */
int kvm_check_extension(void *state, unsigned int extension);
int vm_create(const char *name);
void mmu_init(void);

static int own_calls;

int kvm_check_extension(void *state, unsigned int extension)
{
	own_calls++;
	return -1000 - (int)extension;
}

int vm_create(const char *name)
{
	own_calls++;
	return name ? -2000 : -2001;
}

void mmu_init(void)
{
	own_calls++;
}

static int fail(const char *what)
{
	fprintf(stderr, "link-own-symbols: %s\n", what);
	return 1;
}

int main(void)
{
	int kvm = gm_open_kvm(), vm, vcpu;

	if (kvm < 0)
		return fail("gm_open_kvm failed");
	/* The library's own KVM_CHECK_EXTENSION, KVM_CREATE_VM and stage-2 set-up. */
	if (gm_ioctl(kvm, KVM_CHECK_EXTENSION, KVM_CAP_USER_MEMORY) != 1)
		return fail("KVM_CHECK_EXTENSION(KVM_CAP_USER_MEMORY) is not 1");
	vm = gm_ioctl(kvm, KVM_CREATE_VM, KVM_X86_SW_PROTECTED_VM);
	if (vm < 0)
		return fail("KVM_CREATE_VM failed");
	vcpu = gm_ioctl(vm, KVM_CREATE_VCPU, 0);
	if (vcpu < 0)
		return fail("KVM_CREATE_VCPU failed");
	if (own_calls)
		return fail("libgmem called a function of the program");
	/* And the program's own functions are the ones it calls. */
	if (kvm_check_extension(NULL, 3) != -1003 || vm_create("x") != -2000)
		return fail("the program's functions did not answer");
	mmu_init();
	if (own_calls != 3)
		return fail("the program's functions were not called once each");
	gm_close(vcpu);
	gm_close(vm);
	gm_close(kvm);
	printf("link-own-symbols: libgmem.a and the program's kvm_check_extension, vm_create, "
	       "mmu_init coexist\n");
	return 0;
}
