/* The vCPU: KVM_RUN, its exits, and on the soft backend the thread that runs the guest function. */
#ifndef GMEM_VCPU_H
#define GMEM_VCPU_H

#include "kvm/host.h"
#include "vm.h"

#define VCPU_MMAP_PAGES 3 /* kvm_run, the PIO data page, the coalesced MMIO page, as on x86 */
#define GM_MAX_VCPU_IDS 4096

enum vcpu_turn { VCPU_TURN_HOST, VCPU_TURN_GUEST };

struct vcpu {
	struct gm_object obj;
	struct vm *vm;          /* referenced */
	unsigned long id;
	struct kvm_run *run;    /* the library's mapping of the run area */
	int run_fd;             /* the fd whose memfd holds the run area */
	struct host_vcpu host;  /* kvm backend: the host's vCPU (fd -1 on the soft backend) */

	gm_guest_fn fn;
	void *arg;
	enum gm_access access;
	/* lock and cond hand control between KVM_RUN's caller and the guest thread. */
	pthread_mutex_t lock;
	pthread_cond_t cond;
	enum vcpu_turn turn;
	bool thread_started, guest_done, dying, in_run;
	pthread_t thread;
	int exit_errno;         /* what KVM_RUN returns with the exit: 0 or EFAULT */
	struct gm_ucall ucall;

	struct mmu_vcpu mmu;    /* the guest's cached view of the stage-2 */
	bool private_vm;
};

/* The guest's handle is its vCPU. */
struct gm_guest {
	struct vcpu vcpu;
};

int vcpu_create(struct vm *vm, unsigned long id);
long vcpu_ioctl(struct vcpu *v, unsigned long request, unsigned long arg);
int vcpu_mmap(struct vcpu *v, void *addr, size_t len, int prot, int flags, int64_t off, void **out);

/*
 * Exits, called on the guest's side: each fills kvm_run, hands control to
 * KVM_RUN's caller, and returns when the next KVM_RUN resumes the guest.
 */
void vcpu_exit(struct vcpu *v, uint32_t reason, int err);
/* KVM_EXIT_MEMORY_FAULT for the page of gpa; KVM_RUN fails with EFAULT. */
void vcpu_exit_memory_fault(struct vcpu *v, gpa_t gpa, bool private);
/* KVM_EXIT_MMIO of up to 8 bytes; a read gets the data userspace put in kvm_run. */
void vcpu_exit_mmio(struct vcpu *v, gpa_t gpa, void *buf, size_t len, bool write);
/* KVM_EXIT_HYPERCALL; returns what userspace put in hypercall.ret. */
uint64_t vcpu_exit_hypercall(struct vcpu *v, uint64_t nr, uint64_t a0, uint64_t a1, uint64_t a2);
/* The selftests' ucall: a one-byte IN from GM_UCALL_PORT, v->ucall already filled. */
void vcpu_exit_ucall(struct vcpu *v);

#endif
