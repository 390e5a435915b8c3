/* The host's /dev/kvm, behind libgmem VMs on the kvm backend. */
#ifndef GMEM_KVM_HOST_H
#define GMEM_KVM_HOST_H

#include "internal.h"

/* The process's /dev/kvm fd, opened on first use; -errno when there is none. */
int host_kvm_fd(void);
/*
 * Whether the host's KVM reads guest memory through a slot's userspace
 * address (shadow paging, e.g. kvm-pvm or no EPT/NPT): such a host needs a
 * mapping of all guest memory, private pages included, to run a guest.
 */
bool host_kvm_needs_hva_view(void);
/* A host VM (always KVM_X86_DEFAULT_VM: the host has no per-page private memory). */
int host_vm_create(void);
/*
 * A host guest_memfd of the host VM, mmap-able and shared; -errno where the
 * host has none (no KVM_CREATE_GUEST_MEMFD, or no MMAP|INIT_SHARED).
 */
int host_gmem_create(int host_vm_fd, uint64_t size);
/* Whether guest_memfd files of host_vm_fd can be the host's (probes once per process). */
bool host_has_gmem(int host_vm_fd);
/* Mirrors a memslot change to the host VM; the slot's file, if any, is the host's. */
int host_set_region(int host_vm_fd, const struct kvm_userspace_memory_region2 *mem, int host_gmem_fd,
		    uint64_t hva);
/* An ioctl on one of the host's fds, as the library answers: the result or -errno. */
long host_ioctl(int fd, unsigned long request, unsigned long arg);
/* A host vCPU as the library runs it. */
struct host_vcpu {
	int fd;                  /* the host's vCPU */
	struct kvm_run *run;     /* its run area */
	bool hypercall_pending;  /* a gate request awaits run->hypercall.ret */
};

/*
 * Runs a host vCPU, turning hypercall-gate exits into KVM_EXIT_HYPERCALL
 * for the hypercalls in exit_hypercall_mask (KVM_CAP_EXIT_HYPERCALL).
 */
long host_vcpu_run(struct host_vcpu *hv, uint64_t exit_hypercall_mask);

#endif
