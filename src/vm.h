/* The VM object. */
#ifndef GMEM_VM_H
#define GMEM_VM_H

#include "attr.h"
#include "memslot.h"
#include "mmu/stage2.h"

/*
 * A CoCo VM type's trusted entity for one VM (SNP's guest context): made by
 * the platform's init command, released with the VM.
 */
struct vm_platform {
	void (*release)(struct vm_platform *p);
};
#define GM_MAX_VCPU_IDS 4096 /* vCPU ids are below it (x86 KVM_MAX_VCPU_IDS) */

struct vm {
	struct gm_object obj;
	unsigned long type;
	int host_fd;            /* the host's VM on the kvm backend, -1 on the soft one */
	/* Memslots; slots.lock also guards vcpu_ids. Lock order: slots.lock, then a file's
	 * invalidate_lock, then mmu.lock. */
	struct vm_memslots slots;
	struct mmu mmu;
	_Atomic uint64_t exit_hypercall_mask; /* KVM_CAP_EXIT_HYPERCALL */
	atomic_uint nr_vcpus;
	uint64_t vcpu_ids[GM_MAX_VCPU_IDS / 64]; /* ids in use, under slots.lock */
	/* Soft backend, under slots.lock: KVM_CREATE_IRQCHIP was made; a vCPU was ever made. */
	bool irqchip, created_vcpus;
	/* KVM_SET_NR_MMU_PAGES, KVM_SET_TSS_ADDR, KVM_SET_IDENTITY_MAP_ADDR: kept and unused. */
	unsigned long nr_mmu_pages, tss_addr;
	uint64_t identity_map_addr;
	/* kvm.vm_memory_attributes=1 when the VM was made: KVM_SET_MEMORY_ATTRIBUTES is its ioctl. */
	bool attrs_in_vm;
	/* attrs_lock guards mem_attrs (by gfn); its writers also hold slots.lock. */
	pthread_rwlock_t attrs_lock;
	struct attr_map mem_attrs;
	/* The trusted entity's state, or NULL; set once, under the platform's own lock. */
	struct vm_platform *_Atomic platform;
};

/* Whether a VM without a backend bit runs on the host's /dev/kvm (GMEM_BACKEND), and it opens. */
bool vm_default_backend_is_kvm(void);
long vm_ioctl(struct vm *vm, unsigned long request, unsigned long arg);
int vm_create(unsigned long type);
void vm_get(struct vm *vm);
void vm_put(struct vm *vm);
unsigned long vm_type(const struct vm *vm);
bool vm_has_private_mem(const struct vm *vm);
/* Private/shared is tracked per VM (by gfn) rather than in each guest_memfd. */
bool vm_attrs_in_vm(const struct vm *vm);
/* kvm_mem_is_private with per-VM attributes: gfn's attribute says private. */
bool vm_gfn_is_private(struct vm *vm, gfn_t gfn);
/* True when the per-VM attributes of [start, end) are all attrs. */
bool vm_attrs_uniform(struct vm *vm, gfn_t start, gfn_t end, uint64_t attrs);
uint64_t vm_count(void);
int vm_mmu_stats(struct vm *vm, struct gm_mmu_stats *stats);
int vm_info(struct vm *vm, struct gm_vm_info *info);
/* KVM_CHECK_EXTENSION on a VM, or on the system fd with vm NULL. */
long vm_check_extension(struct vm *vm, long cap);

#endif
