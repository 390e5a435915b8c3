/* The vCPU: KVM_RUN and its exits; on the soft backend, the guest function's stack. */
#ifndef GMEM_VCPU_H
#define GMEM_VCPU_H

#include "fiber.h"
#include "kvm/host.h"
#include "vm.h"
#include "x86_state.h"

#define VCPU_MMAP_PAGES 3 /* kvm_run, the PIO data page, the coalesced MMIO page, as on x86 */

struct vcpu {
	struct gm_object obj;
	struct vm *vm;          /* referenced */
	unsigned long id;
	bool created;           /* KVM_CREATE_VCPU succeeded: the id stays the VM's for good */
	struct kvm_run *run;    /* the library's mapping of the run area */
	int run_fd;             /* the fd whose memfd holds the run area */
	struct host_vcpu host;  /* kvm backend: the host's vCPU (fd -1 on the soft backend) */
	/*
	 * kvm backend: the MMIO access that ended as KVM_EXIT_MEMORY_FAULT. The
	 * host vCPU still waits for it to complete: the next KVM_RUN does it.
	 */
	bool host_fault_pending;
	__typeof__(((struct kvm_run *)0)->mmio) host_fault_mmio;

	gm_guest_fn fn;
	void *arg;
	enum gm_access access;
	/* lock guards in_run (one KVM_RUN at a time), started and the guest function. */
	pthread_mutex_t lock;
	bool started, guest_done, in_run;
	bool ran;               /* KVM_RUN has entered the guest once: the CPUID is fixed */
	struct fiber fiber;     /* the guest function's stack, switched to by KVM_RUN */
	int exit_errno;         /* what KVM_RUN returns with the exit: 0, EFAULT, EINTR... */
	struct gm_ucall ucall;

	struct x86_state x86;   /* soft backend: registers, CPUID, MP state; under lock */
	struct mmu_vcpu mmu;    /* the guest's cached view of the stage-2 */
	bool private_vm;
	/* SNP: the guest's #VC handler, and whether it is running (a nested #VC aborts). */
	gm_guest_vc_fn vc_handler;
	void *vc_arg;
	bool in_vc;
};

/* The guest's handle is its vCPU. */
struct gm_guest {
	struct vcpu vcpu;
};

int vcpu_create(struct vm *vm, unsigned long id);
long vcpu_ioctl(struct vcpu *v, unsigned long request, unsigned long arg);
int vcpu_mmap(struct vcpu *v, void *addr, size_t len, int prot, int flags, int64_t off, void **out);

/*
 * Exits, called on the guest's side: each fills kvm_run, returns from
 * KVM_RUN, and returns here when the next KVM_RUN resumes the guest.
 */
void vcpu_exit(struct vcpu *v, uint32_t reason, int err);

/*
 * How a VMM kicks a vCPU: a signal whose handler sets immediate_exit. The
 * guest checks it at each accessor call, before it touches memory, and
 * leaves KVM_RUN with EINTR; the next KVM_RUN resumes at the same call.
 */
static inline void vcpu_check_kick(struct vcpu *v)
{
	if (__builtin_expect(__atomic_load_n(&v->run->immediate_exit, __ATOMIC_RELAXED), 0))
		vcpu_exit(v, KVM_EXIT_INTR, EINTR);
}
/* KVM_EXIT_MEMORY_FAULT for the page of gpa; KVM_RUN fails with EFAULT. */
void vcpu_exit_memory_fault(struct vcpu *v, gpa_t gpa, bool private);
/* KVM_EXIT_MMIO of up to 8 bytes; a read gets the data userspace put in kvm_run. */
void vcpu_exit_mmio(struct vcpu *v, gpa_t gpa, void *buf, size_t len, bool write);
/* KVM_EXIT_HYPERCALL; returns what userspace put in hypercall.ret. */
uint64_t vcpu_exit_hypercall(struct vcpu *v, uint64_t nr, uint64_t a0, uint64_t a1, uint64_t a2);
/* The selftests' ucall: a one-byte IN from GM_UCALL_PORT, v->ucall already filled. */
void vcpu_exit_ucall(struct vcpu *v);

#endif
