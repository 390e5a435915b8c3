/* The guest_memfd file object. */
#ifndef GMEM_GMEM_OBJ_H
#define GMEM_GMEM_OBJ_H

#include "attr.h"
#include "backing.h"
#include "platform/rmp.h"

struct mmu;

/*
 * What a file knows of its VM. The VM creates files and binds them, so the
 * file never calls it: it reaches the VM only through these and the stage-2.
 */
struct gmem_vm {
	struct gm_object *obj;        /* the VM, referenced: the file keeps its VM alive */
	pthread_mutex_t *slots_lock;  /* taken before the file's lock, as kvm_gmem_release does */
	struct mmu *mmu;              /* the stage-2 that maps the file's bound ranges */
	int host_fd;                  /* the host's VM on the kvm backend, else -1 */
	bool private_mem;             /* the VM type has private memory */
	bool attrs_in_vm;             /* kvm.vm_memory_attributes=1: the file holds no attributes */
	bool has_rmp;                 /* a trusted entity tracks who owns each page (SNP) */
};

/* A memslot's hold on pages [pgoff, pgoff + npages) of a file, mapped at base_gfn. */
struct gmem_binding {
	/* The bound file, cleared when the file is released (no reference held, as in KVM). */
	struct gmem *_Atomic gmem;
	pgoff_t pgoff;
	uint64_t npages;
	gfn_t base_gfn;
	struct gmem_binding *next;    /* the file's list of bindings, under its invalidate_lock */
};

struct gmem {
	struct gm_object obj;
	struct gmem_vm vm;
	uint64_t size;
	uint64_t flags;
	unsigned folio_shift;
	struct backing backing;
	/*
	 * invalidate_lock protects attrs and orders the operations that take
	 * memory away (punch-hole, conversion: exclusive) against those that
	 * hand it out (allocation, faults, new host mappings: shared).
	 */
	pthread_rwlock_t invalidate_lock;
	struct attr_map attrs;
	/*
	 * The trusted entity's view of the file's pages (SNP's reverse map), or
	 * NULL for VM types without one. Memory belongs to the file, so its pages
	 * are the "physical" pages the map is indexed by.
	 */
	struct rmp *rmp;
	struct gmem_binding *bindings; /* slots bound to this file, under invalidate_lock */
	struct gmem_pin *pins;    /* device DMA pins, under invalidate_lock */
	atomic_uint host_mappings;
	struct gmem *put_next;    /* the calling thread's deferred last put (gmem_put_deferred) */
};

static inline pgoff_t gmem_npages(const struct gmem *g)
{
	return g->size >> GM_PAGE_SHIFT;
}

static inline void gmem_get(struct gmem *g)
{
	gm_object_get(&g->obj);
}

static inline void gmem_put(struct gmem *g)
{
	gm_object_put(&g->obj);
}

/*
 * A put under slots_lock. The file's release takes slots_lock, so the last
 * reference is kept on the calling thread's list instead, and gmem_put_flush,
 * called once the lock is dropped, releases it: the kernel's fput defers the
 * same way, to the ioctl's return.
 */
void gmem_put_deferred(struct gmem *g);
void gmem_put_flush(void);

/* gmem.c */
int gmem_create(const struct gmem_vm *vm, uint64_t size, uint64_t flags);
/* KVM_CAP_GUEST_MEMFD_FLAGS; private_in_vm: the VM has private memory tracked per VM. */
uint64_t gmem_supported_flags(bool private_in_vm);
int gmem_fallocate(struct gmem *g, int mode, int64_t off, int64_t len);
int gmem_fstat(struct gmem *g, int fd, struct stat *st);
int gmem_info(struct gmem *g, struct gm_gmem_info *info);
uint64_t gmem_count(void);
/*
 * kvm_gmem_bind: binds b (base_gfn and npages set) to the file at offset
 * if the file is vm_obj's and the range is free; the VM's slots_lock held.
 */
int gmem_bind(struct gmem *g, struct gmem_binding *b, const struct gm_object *vm_obj,
	      uint64_t offset);
/* Undoes gmem_bind, if the file still holds b; the VM's slots_lock held. */
void gmem_unbind(struct gmem_binding *b);

/* A range of pages pinned for device DMA; a pinned page cannot become private. */
struct gmem_pin {
	pgoff_t start, end;
	struct gmem_pin *next;
};

/* convert.c: KVM_SET_MEMORY_ATTRIBUTES2 and pins. */
long gmem_ioctl(struct gmem *g, unsigned long request, unsigned long arg);
int gmem_pin(struct gmem *g, uint64_t offset, uint64_t len, void **dma);
int gmem_unpin(struct gmem *g, uint64_t offset, uint64_t len);
void gmem_pins_destroy(struct gmem *g);

/* Zaps the stage-2 of every VM bound to pages [start, end); invalidate_lock held for write. */
unsigned gmem_invalidate_begin(struct gmem *g, pgoff_t start, pgoff_t end);
void gmem_invalidate_end(struct gmem *g, unsigned nr);

/*
 * Tests only (not exported): the fd of the store behind a guest_memfd fd, a
 * memfd or the host's guest_memfd, valid while the file lives; or -errno.
 * gmem-stress maps it to ask mincore(2) what the kernel really holds.
 */
int gmem_backing_fd(int fd);

int gmem_mmap_check(const struct gmem *g, size_t len, int flags, int64_t off);

/* hostmap.c: the host's gm_mmap mappings of guest_memfd files. */

/*
 * An MMU notifier, as KVM registers with the mm: told before the library
 * takes pages away from a range of host addresses (a conversion, a hide) and
 * after. A VM whose plain memslots point into gm_mmap mappings zaps what its
 * stage-2 maps there, so the guest faults again instead of touching a page
 * that has become private. begin and end come in pairs, with the same range;
 * they run under the library's host-mapping lock and may not take it.
 */
struct hva_notifier {
	void (*invalidate_begin)(struct hva_notifier *n, uintptr_t start, uintptr_t end);
	void (*invalidate_end)(struct hva_notifier *n, uintptr_t start, uintptr_t end);
	struct hva_notifier *next;  /* under notifiers_lock */
};
void hva_notifier_register(struct hva_notifier *n);
void hva_notifier_unregister(struct hva_notifier *n);
/*
 * The file behind host address addr if it lies in a gm_mmap mapping, below
 * the end of the file (referenced: gmem_put it), with the offset and the
 * mapping's protection; else NULL. As GUP on a guest_memfd mapping finds it.
 */
struct gmem *hostmap_lookup(uintptr_t addr, uint64_t *off, int *prot);

/* Maps [off, off + len) of g for the host; the mapping goes in *out. */
int hostmap_create(struct gmem *g, void *addr, size_t len, int prot, int flags, int64_t off,
		   void **out);
/* 1 when [addr, addr + len) held library mappings (now unmapped), 0 if none, or -errno. */
int hostmap_unmap(void *addr, size_t len);
/*
 * mremap(2) growing [old, old + old_size) to new_size, where that range holds
 * library mappings: 1 with the new address in *out (the mapping grew, its
 * new pages follow the attributes), 0 when the range holds none, or -errno
 * (-EINVAL: only a whole mapping answered by the fault handler can grow).
 */
int hostmap_grow(void *old, size_t old_size, size_t new_size, int flags, void *new_addr,
		 void **out);
/*
 * mremap(2) moving or shrinking a laid mapping, whose moves no event reports:
 * made under the mapping lock, the record follows. 1 with the new address in
 * *out, 0 when called from inside the library, or -errno (nothing changed).
 */
int hostmap_move(void *old, size_t old_size, size_t new_size, int flags, void *new_addr,
		 void **out);
/* Whether the library has ever mapped a file for the host (lock-free): if not, no address is ours. */
bool hostmap_exists(void);
/* The part of one library mapping inside a range: [start, end) shows g from file offset off. */
struct hostmap_piece {
	uintptr_t start, end;
	uint64_t off;
	bool laid;         /* not answered by the fault handler: moves and cuts are not seen */
	struct gmem *gmem; /* referenced */
};
/*
 * The pieces of library mappings in [addr, addr + len), in address order, in
 * *out (hostmap_pieces_put them); returns how many, or -ENOMEM.
 */
int hostmap_pieces(void *addr, size_t len, struct hostmap_piece **out);
void hostmap_pieces_put(struct hostmap_piece *pieces, int n);
/* Forgets library mappings in [addr, addr + len), which something else has replaced. */
void hostmap_forget(void *addr, size_t len);
/* mmap(2)'s generic checks of the arguments, without mapping anything: 0 or -errno. */
int hostmap_check_generic(void *addr, size_t len, int prot, int flags, int64_t off);
/*
 * Re-applies the attributes of pages [start, end) to every host mapping of g:
 * their page-table entries go, and faults consult the attributes again.
 */
int hostmap_refresh(struct gmem *g, pgoff_t start, pgoff_t end);
/*
 * Makes pages [start, end) fault in every host mapping of g until the next
 * refresh. A mapping it cannot do this for is left inaccessible (PROT_NONE)
 * and the call returns -ENOMEM.
 */
int hostmap_hide(struct gmem *g, pgoff_t start, pgoff_t end);
/* Whether some host mapping of g holds part of pages [start, end) but not all of them. */
bool hostmap_cut_inside(struct gmem *g, pgoff_t start, pgoff_t end);
/*
 * After a failed conversion, with the attributes restored: the mappings as
 * they say, or, if even that fails, [start, end) hidden; -ENOMEM when a
 * mapping had to be left inaccessible.
 */
int hostmap_undo(struct gmem *g, pgoff_t start, pgoff_t end);
/* The fault reader's turn: events and faults read so far; true while some must wait. */
bool hostmap_service(void);
/* Applies the VMM's own munmap and mremap of host mappings read so far (counts, references). */
void hostmap_sync(void);

#endif
