/* CPUID on soft vCPUs: what the soft backend supports, and each vCPU's own table. */
#ifndef GMEM_X86_CPUID_H
#define GMEM_X86_CPUID_H

#include "internal.h"

#define CPUID_MAX_ENTRIES 256 /* x86 KVM_MAX_CPUID_ENTRIES */

/* Guest-physical and linear address widths of a soft vCPU (the stage-2 has 4 levels). */
#define CPUID_SOFT_PHYS_BITS 48
#define CPUID_SOFT_VIRT_BITS 48

/* Feature bits the x86 state checks look up. */
#define CPUID_1_EDX_APIC      (1U << 9)
#define CPUID_1_ECX_X2APIC    (1U << 21)
#define CPUID_80000001_EDX_NX (1U << 20)
#define CPUID_80000001_EDX_LM (1U << 29)

/* A vCPU's CPUID as KVM_SET_CPUID2 left it; empty until then. */
struct vcpu_cpuid {
	uint32_t nent;
	struct kvm_cpuid_entry2 *entries;
};

/* KVM_GET_SUPPORTED_CPUID on the system fd, for soft vCPUs. */
long cpuid_get_supported(unsigned long arg);
/*
 * KVM_SET_CPUID2. Once the vCPU has run (frozen), only the same table is
 * accepted. apic_base is the vCPU's, for the APIC bit the kernel keeps in sync.
 */
long cpuid_set(struct vcpu_cpuid *c, unsigned long arg, bool frozen, uint64_t apic_base);
/* KVM_GET_CPUID2. */
long cpuid_get(const struct vcpu_cpuid *c, unsigned long arg);
void cpuid_destroy(struct vcpu_cpuid *c);
/* The register word reg (0 eax .. 3 edx) of leaf fn, index 0; 0 when absent. */
uint32_t cpuid_reg(const struct vcpu_cpuid *c, uint32_t fn, int reg);
/* The guest's MAXPHYADDR: CPUID 0x80000008 EAX[7:0], else 36 as the kernel assumes. */
unsigned int cpuid_maxphyaddr(const struct vcpu_cpuid *c);
/* Leaf 1's APIC bit follows the APIC's enable bit, as kvm_update_cpuid_runtime keeps it. */
void cpuid_sync_apic(struct vcpu_cpuid *c, uint64_t apic_base);

#endif
