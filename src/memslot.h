/* Memslots: guest frames bound to host memory or to a guest_memfd range, published with RCU. */
#ifndef GMEM_MEMSLOT_H
#define GMEM_MEMSLOT_H

#include "rcu.h"

#include "attr.h"
#include "gmem.h"
#include "slot_tree.h"

#define GM_USER_MEM_SLOTS 32764    /* x86 KVM_USER_MEM_SLOTS */
#define GM_ADDRESS_SPACES 2        /* x86 with SMM */
#define GM_MEM_MAX_NR_PAGES ((1ULL << 31) - 1)

/*
 * The kvm backend with per-VM attributes: one host slot per attribute run of a
 * guest_memfd slot, private runs on the file and shared runs on userspace_addr.
 */
struct host_run {
	gfn_t start, end;
	uint32_t host_id;       /* (as_id << 16) | the host's slot id */
	bool private;
	bool fresh;             /* while planned: the id was taken for this run */
};

struct memslot {
	uint32_t id;            /* (as_id << 16) | slot id */
	uint32_t flags;         /* KVM_MEM_* */
	gfn_t base_gfn;
	uint64_t npages;
	uint64_t userspace_addr;
	bool gmem_only;         /* the file has MMAP: shared accesses are served from it too */
	struct gmem_binding binding; /* KVM_MEM_GUEST_MEMFD: the bound file range */
	struct host_run *runs;  /* split on the host (see split_attrs), else NULL; under lock */
	uint32_t nr_runs;
	struct rcu_head rcu;
};

/* A copy of what a fault needs, taken under RCU so the fault can sleep afterwards. */
struct memslot_view {
	uint32_t id;
	uint32_t flags;
	gfn_t base_gfn;
	uint64_t npages;
	uint64_t userspace_addr;
	struct gmem *gmem;      /* referenced, or NULL */
	bool has_gmem;          /* KVM_MEM_GUEST_MEMFD, even when the file is gone */
	bool gmem_only;
	pgoff_t pgoff;
};

/* A VM's memslots and what changing them needs; part of struct vm. */
struct vm_memslots {
	/* lock serialises memslot updates and binding changes, as kvm->slots_lock. */
	pthread_mutex_t lock;
	struct slot_tree as[GM_ADDRESS_SPACES];  /* by gfn; readers under RCU */
	/* Slots by id, in chunks made on first use; under lock. */
	struct memslot **by_id[GM_ADDRESS_SPACES][(GM_USER_MEM_SLOTS + 255) / 256];
	/* Slots whose shared pages come from userspace_addr (MMU notifier work); under lock. */
	atomic_size_t nr_hva;
	struct mmu *mmu;          /* the stage-2 that maps through the slots */
	struct gm_object *vm_obj; /* the VM: a file binds only to its own VM's slots */
	int host_fd;              /* the host's VM on the kvm backend, else -1 */
	struct hva_notifier notifier; /* host-address slots over gm_mmap mappings */
	/*
	 * kvm backend with per-VM attributes: the VM's attributes (stable under
	 * lock, whose holders are their only writers), by which guest_memfd slots
	 * are split on the host; NULL otherwise.
	 */
	const struct attr_map *split_attrs;
	uint32_t host_nr_ids;     /* the host's KVM_CAP_NR_MEMSLOTS: ids per address space */
	uint64_t *host_extra_ids[GM_ADDRESS_SPACES]; /* bitmap: ids of runs past a slot's own */
	/* vCPUs waiting on lock to finish an MMIO exit a re-split caused (memslots_host_mmio). */
	atomic_uint host_mmio_waiters;
};

void memslots_init(struct vm_memslots *slots, struct mmu *mmu, struct gm_object *vm_obj,
		   int host_fd);
void memslots_destroy(struct vm_memslots *slots);
/* Splits the host slots of guest_memfd slots by attrs from now on (the kvm backend, per-VM mode). */
int memslots_split_by(struct vm_memslots *slots, const struct attr_map *attrs);
/*
 * Re-splits the host slots over [start, end) for attrs becoming its
 * attributes, before they are set; lock held. All or nothing: -ENOMEM when
 * the host has too few slot ids left, or the host's error, and no change.
 */
int memslots_host_attrs_change(struct vm_memslots *slots, gfn_t start, gfn_t end, uint64_t attrs);
enum host_mmio {
	HOST_MMIO_PASS,          /* MMIO indeed: userspace gets the exit */
	HOST_MMIO_DONE,          /* done on guest memory: KVM_RUN goes on */
	HOST_MMIO_PRIVATE_FAULT, /* a private GPA nothing can serve: KVM_EXIT_MEMORY_FAULT */
};
/*
 * An MMIO exit of a host vCPU of a split VM. At a GPA a split slot serves (a
 * vCPU that ran while a re-split had no host slot there) the access is done
 * on the run's memory, after the re-split.
 */
enum host_mmio memslots_host_mmio(struct vm_memslots *slots, struct kvm_run *run);
/*
 * Before taking lock for a re-split: lets the vCPUs already waiting for the
 * last one go first. The mutex is not fair, and a VMM converting in a loop
 * would otherwise keep a vCPU out of its MMIO exit for ever.
 */
void memslots_host_let_vcpus_in(struct vm_memslots *slots);
int memslot_set(struct vm_memslots *slots, const struct kvm_userspace_memory_region2 *mem);
/* Looks gfn up; fills *view and returns true when a slot covers it. */
bool memslot_lookup(struct vm_memslots *slots, gfn_t gfn, struct memslot_view *view);
void memslot_view_put(struct memslot_view *view);
/* Whether address space as_id has no slot at all. */
bool memslots_empty(struct vm_memslots *slots, unsigned int as_id);
/* The same with slots_lock held: a last reference waits for gmem_put_flush. */
void memslot_view_put_locked(struct memslot_view *view);

#endif
