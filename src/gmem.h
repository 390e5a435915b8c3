/* The guest_memfd file object. */
#ifndef GMEM_GMEM_OBJ_H
#define GMEM_GMEM_OBJ_H

#include "attr.h"
#include "backing.h"

struct gmem {
	struct gm_object obj;
	struct vm *vm;          /* referenced: the file keeps its VM alive */
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
	struct memslot *bindings; /* slots bound to this file, under invalidate_lock */
	struct gmem_pin *pins;    /* device DMA pins, under invalidate_lock */
	atomic_uint host_mappings;
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
/* Maps [off, off + len) of g for the host; the mapping goes in *out. */
int hostmap_create(struct gmem *g, void *addr, size_t len, int prot, int flags, int64_t off,
		   void **out);
/* 1 when [addr, addr + len) held library mappings (now unmapped), 0 if none, or -errno. */
int hostmap_unmap(void *addr, size_t len);
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
