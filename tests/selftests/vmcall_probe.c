/*
 * Whether a guest's VMCALL (VMMCALL on AMD) reaches the VMM as
 * KVM_EXIT_HYPERCALL on libgmem's kvm backend: the kernel's selftests make
 * their hypercalls with it (private_mem_conversions_test's MAP_GPA_RANGE).
 * Prints the answer; exits 0 when it does, 1 when it does not, 2 when there
 * is no kvm-backend VM to ask. Used by scripts/selftests.py.
 */
#include <cpuid.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <sys/mman.h>
#include <time.h>

#include "../../tools/x86_boot.h"

#define MEM (4ULL << 20)
#define CODE_GPA 0x100000ULL
#define WAIT_S 2

static uint8_t code[] = {
	0xb8, 12, 0, 0, 0,                        /* mov $12, %eax: KVM_HC_MAP_GPA_RANGE */
	0x48, 0xc7, 0xc3, 0x00, 0x00, 0x20, 0x00, /* mov $0x200000, %rbx                 */
	0xb9, 1, 0, 0, 0,                         /* mov $1, %ecx                        */
	0x31, 0xd2,                               /* xor %edx, %edx                      */
	0x0f, 0x01, 0xc1,                         /* vmcall (patched to vmmcall on AMD)  */
	0xf4,                                     /* hlt                                 */
};
#define HYPERCALL_AT 19

static void on_kick(int sig)
{
}

/* Kicks the vCPU's thread out of KVM_RUN after WAIT_S seconds, as a VMM does. */
static void *kicker(void *arg)
{
	struct timespec t = { .tv_sec = WAIT_S };

	nanosleep(&t, NULL);
	pthread_kill(*(pthread_t *)arg, SIGUSR1);
	return NULL;
}

static bool host_is_amd(void)
{
	unsigned a, b, c, d;

	__cpuid(0, a, b, c, d);
	return b == 0x68747541; /* "Auth"enticAMD */
}

int main(void)
{
	int kvm = gm_open_kvm();
	int vm = gm_ioctl(kvm, KVM_CREATE_VM, KVM_X86_DEFAULT_VM | GM_VM_BACKEND_KVM);
	struct sigaction sa = { .sa_handler = on_kick };
	pthread_t self = pthread_self(), t;

	if (vm < 0) {
		printf("no kvm-backend VM: %s\n", strerror(errno));
		return 2;
	}
	char *mem = mmap(NULL, MEM, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (mem == MAP_FAILED)
		return 2;
	if (host_is_amd())
		code[HYPERCALL_AT + 2] = 0xd9;
	x86_build_page_tables(mem, 0x1000, MEM);
	memcpy(mem + CODE_GPA, code, sizeof(code));
	struct kvm_userspace_memory_region r = {
		.slot = 0, .memory_size = MEM, .userspace_addr = (uint64_t)(uintptr_t)mem,
	};
	struct kvm_enable_cap cap = { .cap = KVM_CAP_EXIT_HYPERCALL, .args = { 1ULL << 12 } };
	int vcpu;
	struct kvm_run *run;

	if (gm_ioctl(vm, KVM_SET_USER_MEMORY_REGION, &r) || gm_ioctl(vm, KVM_ENABLE_CAP, &cap) ||
	    (vcpu = gm_ioctl(vm, KVM_CREATE_VCPU, 0)) < 0 ||
	    (run = gm_mmap(NULL, 3 * 4096, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0)) == MAP_FAILED ||
	    x86_set_cpuid(vcpu) || x86_enter_long_mode(vcpu, 0x1000, CODE_GPA, 0x80000, 0, 0)) {
		printf("cannot set up the guest: %s\n", strerror(errno));
		return 2;
	}
	sigaction(SIGUSR1, &sa, NULL);
	pthread_create(&t, NULL, kicker, &self);
	int ret = gm_ioctl(vcpu, KVM_RUN, 0);
	int err = errno;

	pthread_cancel(t);
	pthread_join(t, NULL);
	if (ret < 0 && err == EINTR) {
		printf("KVM_RUN was still in the guest %d s after its VMCALL: the host's KVM never "
		       "completes it\n", WAIT_S);
		return 1;
	}
	if (ret < 0) {
		printf("KVM_RUN: %s\n", strerror(err));
		return 1;
	}
	if (run->exit_reason != KVM_EXIT_HYPERCALL) {
		printf("the guest's VMCALL gave exit %u, not KVM_EXIT_HYPERCALL\n", run->exit_reason);
		return 1;
	}
	printf("the guest's VMCALL reaches the VMM as KVM_EXIT_HYPERCALL\n");
	return 0;
}
