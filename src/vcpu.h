/* The software vCPU. */
#ifndef GMEM_VCPU_H
#define GMEM_VCPU_H

#include "vm.h"

#define VCPU_MMAP_PAGES 3 /* kvm_run, the PIO data page, the coalesced MMIO page, as on x86 */
#define GM_MAX_VCPU_IDS 4096
#define VCPU_TLB_ENTRIES 64

/* A cached translation: valid while the MMU generation it was taken in lasts. */
struct vcpu_tlb_entry {
	gfn_t gfn;
	uint64_t generation;
	uint64_t spte;     /* host address of the 4K page | SPTE flags */
};

enum vcpu_turn { VCPU_TURN_HOST, VCPU_TURN_GUEST };

struct vcpu {
	struct gm_object obj;
	struct vm *vm;          /* referenced */
	unsigned long id;
	struct kvm_run *run;    /* the library's mapping of the run area */
	int run_fd;             /* the fd whose memfd holds the run area */
	int host_fd;            /* kvm backend: the host's vCPU, else -1 */
	bool hypercall_pending; /* kvm backend: a gate request awaits hypercall.ret */

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

	/*
	 * Odd while the guest thread uses a translation. Invalidations wait for
	 * it to move on; an asymmetric fence (membarrier) on their side keeps the
	 * guest's side to plain stores.
	 */
	_Atomic uint64_t access_seq;
	struct vcpu *next_in_vm;        /* the VM's list, under vm->vcpus_lock */
	struct mmu *mmu;
	_Atomic uint64_t *generation;   /* the MMU's: cached translations are valid within one */
	/* What a cached leaf must carry for a read [0] and a write [1] of the current access kind. */
	uint64_t need_mask[2], need_bits[2];
	bool private_vm;

	struct vcpu_tlb_entry tlb[VCPU_TLB_ENTRIES];
};

int vcpu_create(struct vm *vm, unsigned long id);
long vcpu_ioctl(struct vcpu *v, unsigned long request, unsigned long arg);
int vcpu_mmap(struct vcpu *v, void *addr, size_t len, int prot, int flags, int64_t off, void **out);

#endif
