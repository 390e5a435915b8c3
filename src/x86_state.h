/* The x86 register state of a soft vCPU: stored, validated as KVM does, read back as written. */
#ifndef GMEM_X86_STATE_H
#define GMEM_X86_STATE_H

#include "x86_cpuid.h"

struct x86_state {
	struct kvm_regs regs;
	struct kvm_sregs sregs;
	uint32_t mp_state;
	bool lapic;             /* the VM had an irqchip when the vCPU was made */
	struct vcpu_cpuid cpuid;
};

/* The state at vCPU creation (kvm_vcpu_reset); vCPU 0 is the bootstrap processor. */
void x86_state_init(struct x86_state *s, unsigned long vcpu_id, bool lapic);
void x86_state_destroy(struct x86_state *s);
/*
 * The vCPU ioctls on the state; ran says whether the vCPU has entered the
 * guest (its CPUID is then fixed). -ENOTTY for a request that is not one.
 */
long x86_state_ioctl(struct x86_state *s, unsigned long request, unsigned long arg, bool ran);

/*
 * MSRs: a soft vCPU has none. KVM_GET_MSR_INDEX_LIST and
 * KVM_GET_MSR_FEATURE_INDEX_LIST list none; KVM_GET_MSRS and KVM_SET_MSRS
 * (on a vCPU, or KVM_GET_MSRS on the system fd for feature MSRs) stop at the
 * first entry, as msr_io does at an MSR the kernel does not have: 0 done.
 */
long x86_msr_list(unsigned long arg);
long x86_msr_io(unsigned long arg, bool writeback);

/* The TSC frequency soft vCPUs report (KVM_GET_TSC_KHZ): the host's, as the kernel's default. */
long x86_tsc_khz(void);

#endif
