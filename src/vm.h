/* The VM object. */
#ifndef GMEM_VM_H
#define GMEM_VM_H

#include "memslot.h"
#include "mmu.h"

struct vm {
	struct gm_object obj;
	unsigned long type;
	int host_fd;            /* the host's VM on the kvm backend, -1 on the soft one */
	/* Serialises memslot updates and binding changes, as kvm->slots_lock.
	 * Lock order: slots_lock, then a file's invalidate_lock, then mmu.lock. */
	pthread_mutex_t slots_lock;
	struct memslots *_Atomic memslots[GM_ADDRESS_SPACES]; /* RCU-published */
	struct mmu mmu;
	_Atomic uint64_t exit_hypercall_mask; /* KVM_CAP_EXIT_HYPERCALL */
	atomic_uint nr_vcpus;
	/* vcpus_lock protects the list of vCPUs that invalidations wait for. */
	pthread_mutex_t vcpus_lock;
	struct vcpu *vcpus;
	uint64_t vcpu_ids[4096 / 64]; /* ids in use, under slots_lock */
};

/* Waits until no vCPU of vm can still use a translation zapped before the call. */
void vm_quiesce_vcpus(struct vm *vm);

#endif
