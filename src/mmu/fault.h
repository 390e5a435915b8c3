/* The stage-2 fault path: a vCPU's access that missed, resolved to a leaf or to an exit. */
#ifndef GMEM_MMU_FAULT_H
#define GMEM_MMU_FAULT_H

#include "vm.h"

enum mmu_fault_result {
	MMU_FAULT_MAPPED,       /* a leaf is in place, or a race asks for a retry: access again */
	MMU_FAULT_MEMORY,       /* userspace must resolve it: KVM_EXIT_MEMORY_FAULT */
	MMU_FAULT_MMIO,         /* no memory there: KVM_EXIT_MMIO */
	MMU_FAULT_ERROR,        /* the fault itself failed (no memory for a table): KVM_RUN fails */
	MMU_FAULT_VC,           /* SNP: the guest's own page, not validated: a #VC for the guest */
};

/*
 * What the fault path answers; for MEMORY, whether the guest wanted private
 * memory; for ERROR, the positive errno KVM_RUN returns.
 */
struct mmu_fault {
	enum mmu_fault_result result;
	bool private;
	int error;
};

/*
 * kvm_mmu_page_fault for a soft vCPU: the access of the given kind (AUTO
 * takes the file's attributes) to gpa that missed in the stage-2.
 */
struct mmu_fault mmu_page_fault(struct vm *vm, gpa_t gpa, enum gm_access access, bool write);

/*
 * PVALIDATE of the private page at gpa, which the guest's own access has
 * just faulted in: sets or clears its validated state in the reverse map.
 * Returns the PVALIDATE result (GM_PVALIDATE_*), -EAGAIN when the page is
 * not the guest's (fault again), or -errno.
 */
int mmu_pvalidate(struct vm *vm, gpa_t gpa, bool validate);

#endif
