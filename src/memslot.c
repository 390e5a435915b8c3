/* Memslots: validation and binding as kvm_set_memory_region and kvm_gmem_bind do, published with RCU. */
#include <fcntl.h>
#include <string.h>

#include "memslot.h"
#include "memslot_host.h"
#include "mmu/stage2.h"

#define GM_MAX_GFN ((1ULL << 36) - 1) /* the stage-2 covers 48 bits of guest-physical space */
#define GM_TASK_SIZE_MAX 0x7ffffffff000ULL

#define SLOT_ID_CHUNK 256

struct memslot *memslot_by_id(struct vm_memslots *vs, uint32_t id)
{
	struct memslot **chunk = vs->by_id[id >> 16][(uint16_t)id / SLOT_ID_CHUNK];

	return chunk ? chunk[(uint16_t)id % SLOT_ID_CHUNK] : NULL;
}

/* Makes room for id in the index before anything changes: -ENOMEM, or 0; *made if it allocated. */
static int slot_id_reserve(struct vm_memslots *vs, uint32_t id, bool *made)
{
	struct memslot ***chunk = &vs->by_id[id >> 16][(uint16_t)id / SLOT_ID_CHUNK];

	*made = !*chunk;
	if (!*chunk)
		*chunk = gm_zalloc(SLOT_ID_CHUNK * sizeof(**chunk));
	return *chunk ? 0 : -ENOMEM;
}

/* A failed call gives back the room it made: it holds no slot yet. */
static void slot_id_unreserve(struct vm_memslots *vs, uint32_t id, bool made)
{
	struct memslot ***chunk = &vs->by_id[id >> 16][(uint16_t)id / SLOT_ID_CHUNK];

	if (made) {
		gm_free(*chunk);
		*chunk = NULL;
	}
}

static void slot_id_set(struct vm_memslots *vs, uint32_t id, struct memslot *slot)
{
	vs->by_id[id >> 16][(uint16_t)id / SLOT_ID_CHUNK][(uint16_t)id % SLOT_ID_CHUNK] = slot;
}

static bool slot_uses_hva(const struct memslot *m)
{
	return !m->gmem_only;
}

static uint32_t valid_flags(const struct kvm_userspace_memory_region2 *mem)
{
	uint32_t valid = KVM_MEM_LOG_DIRTY_PAGES | KVM_MEM_GUEST_MEMFD;

	/* No dirty logging of private memory; read-only slots would need MMIO on it. */
	if (mem->flags & KVM_MEM_GUEST_MEMFD)
		valid &= ~KVM_MEM_LOG_DIRTY_PAGES;
	else
		valid |= KVM_MEM_READONLY;
	return valid;
}

/* The checks of kvm_set_memory_region before it looks at existing slots, in its order. */
static int check_region(const struct kvm_userspace_memory_region2 *mem)
{
	uint64_t end;

	if (mem->flags & ~valid_flags(mem))
		return -EINVAL;
	if (!GM_ALIGNED(mem->memory_size, GM_PAGE_SIZE))
		return -EINVAL;
	if (!GM_ALIGNED(mem->guest_phys_addr, GM_PAGE_SIZE))
		return -EINVAL;
	if (!GM_ALIGNED(mem->userspace_addr, GM_PAGE_SIZE) ||
	    !gm_range_ok(mem->userspace_addr, mem->memory_size, &end) || end > GM_TASK_SIZE_MAX)
		return -EINVAL;
	if ((mem->flags & KVM_MEM_GUEST_MEMFD) &&
	    (!GM_ALIGNED(mem->guest_memfd_offset, GM_PAGE_SIZE) ||
	     !gm_range_ok(mem->guest_memfd_offset, mem->memory_size, &end)))
		return -EINVAL;
	if ((mem->slot >> 16) >= GM_ADDRESS_SPACES)
		return -EINVAL;
	if (!gm_range_ok(mem->guest_phys_addr, mem->memory_size, &end))
		return -EINVAL;
	if ((mem->memory_size >> GM_PAGE_SHIFT) > GM_MEM_MAX_NR_PAGES)
		return -EINVAL;
	return 0;
}

/*
 * Replaces old by new (either may be NULL) in one step that readers see whole:
 * O(log n), whatever the number of slots. Nothing changes on failure.
 */
static int slots_replace(struct vm_memslots *vs, unsigned as_id, struct memslot *old,
			 struct memslot *new)
{
	struct slot_tree_change c;
	int ret;

	slot_tree_change_begin(&vs->as[as_id], &c);
	if (old)
		slot_tree_remove(&c, old->base_gfn);
	if (new)
		slot_tree_insert(&c, new->base_gfn, new->npages, new);
	ret = slot_tree_change_end(&c);
	if (ret)
		return ret;
	if (old) {
		slot_id_set(vs, old->id, NULL);
		if (slot_uses_hva(old))
			atomic_fetch_sub(&vs->nr_hva, 1);
	}
	if (new) {
		slot_id_set(vs, new->id, new);
		if (slot_uses_hva(new))
			atomic_fetch_add(&vs->nr_hva, 1);
	}
	return 0;
}

/* The file behind a KVM_MEM_GUEST_MEMFD slot: a guest_memfd of this VM (kvm_gmem_bind). */
static int slot_bind(struct vm_memslots *vs, struct memslot *slot, int fd, struct gm_object *obj,
		     enum gm_file_type type, uint64_t offset)
{
	struct gmem *g;
	int ret;

	/* An open fd that is not ours is not a guest_memfd; a closed one is EBADF. */
	if (!obj)
		return fcntl(fd, F_GETFD) < 0 ? -EBADF : -EINVAL;
	if (type != GM_FILE_GMEM)
		return -EINVAL;
	g = gm_container_of(obj, struct gmem, obj);
	slot->binding.base_gfn = slot->base_gfn;
	slot->binding.npages = slot->npages;
	ret = gmem_bind(g, &slot->binding, vs->vm_obj, offset);
	if (!ret)
		slot->gmem_only = g->flags & GUEST_MEMFD_FLAG_MMAP;
	return ret;
}

static void slot_free_rcu(struct rcu_head *head)
{
	gm_free(caa_container_of(head, struct memslot, rcu));
}

/* Drops what the stage-2 mapped through a slot that faults can no longer find. */
static void slot_zap(struct vm_memslots *vs, const struct memslot *old)
{
	mmu_invalidate_begin(vs->mmu, old->base_gfn, old->base_gfn + old->npages);
	mmu_invalidate_end(vs->mmu);
}

static int slot_delete(struct vm_memslots *vs, unsigned as_id, struct memslot *old)
{
	int ret = slots_replace(vs, as_id, old, NULL);

	if (ret)
		return ret;
	if (vs->host_fd >= 0)
		memslot_host_delete(vs, old);
	slot_zap(vs, old);
	if (old->flags & KVM_MEM_GUEST_MEMFD)
		gmem_unbind(&old->binding);
	gm_call_rcu(&old->rcu, slot_free_rcu);
	return 0;
}

static int slot_create(struct vm_memslots *vs, unsigned as_id, const struct kvm_userspace_memory_region2 *mem,
		       struct memslot *old, struct gm_object *file, enum gm_file_type file_type)
{
	gfn_t base = mem->guest_phys_addr >> GM_PAGE_SHIFT;
	uint64_t npages = mem->memory_size >> GM_PAGE_SHIFT;
	struct memslot *slot;
	bool made;
	int ret;

	if (slot_tree_overlap(&vs->as[as_id], base, base + npages, old))
		return -EEXIST;
	ret = slot_id_reserve(vs, mem->slot, &made);
	if (ret)
		return ret;
	slot = gm_zalloc(sizeof(*slot));
	if (!slot) {
		slot_id_unreserve(vs, mem->slot, made);
		return -ENOMEM;
	}
	slot->id = mem->slot;
	slot->flags = mem->flags;
	slot->base_gfn = base;
	slot->npages = npages;
	slot->userspace_addr = mem->userspace_addr;
	if (mem->flags & KVM_MEM_GUEST_MEMFD) {
		ret = slot_bind(vs, slot, (int)mem->guest_memfd, file, file_type,
				mem->guest_memfd_offset);
		if (ret)
			goto err_free;
	}
	/* kvm_arch_prepare_memory_region: the slot must fit the guest-physical space. */
	if (base + npages - 1 > GM_MAX_GFN) {
		ret = -EINVAL;
		goto err_unbind;
	}
	if (vs->host_fd >= 0) {
		ret = memslot_host_create(vs, mem, slot, old);
		if (ret)
			goto err_unbind;
	}
	ret = slots_replace(vs, as_id, old, slot);
	if (ret) {
		if (vs->host_fd >= 0)
			memslot_host_create_undo(vs, slot, old);
		goto err_unbind;
	}
	if (vs->host_fd >= 0 && old)
		memslot_host_release(vs, old);
	if (old) {
		/* A move or a flags change: what was mapped through the old slot goes. */
		slot_zap(vs, old);
		gm_call_rcu(&old->rcu, slot_free_rcu);
	}
	return 0;

err_unbind:
	gmem_unbind(&slot->binding);
err_free:
	gm_free(slot);
	slot_id_unreserve(vs, mem->slot, made);
	return ret;
}

static int memslot_set_locked(struct vm_memslots *vs, const struct kvm_userspace_memory_region2 *mem,
			      struct gm_object *file, enum gm_file_type file_type)
{
	unsigned as_id = mem->slot >> 16;
	struct memslot *old;
	int ret = check_region(mem);

	if (ret)
		return ret;
	old = memslot_by_id(vs, mem->slot);
	if (!mem->memory_size)
		return old ? slot_delete(vs, as_id, old) : -EINVAL;
	if (old) {
		/* Guest_memfd slots are immutable: they can only be deleted. */
		if (mem->flags & KVM_MEM_GUEST_MEMFD)
			return -EINVAL;
		/* Nor can a guest_memfd slot drop the flag and stay (its binding would dangle). */
		if (mem->userspace_addr != old->userspace_addr ||
		    (mem->memory_size >> GM_PAGE_SHIFT) != old->npages ||
		    ((mem->flags ^ old->flags) & (KVM_MEM_READONLY | KVM_MEM_GUEST_MEMFD)))
			return -EINVAL;
		if ((mem->guest_phys_addr >> GM_PAGE_SHIFT) == old->base_gfn && mem->flags == old->flags)
			return 0;
	}
	return slot_create(vs, as_id, mem, old, file, file_type);
}

int memslot_set(struct vm_memslots *vs, const struct kvm_userspace_memory_region2 *mem)
{
	enum gm_file_type file_type = 0;
	struct gm_object *file = NULL;
	int ret;

	if ((uint16_t)mem->slot >= GM_USER_MEM_SLOTS)
		return -EINVAL;
	/*
	 * Look the file up before slots_lock: dropping the last reference to a
	 * file takes slots_lock, so the reference is dropped after unlocking.
	 */
	if (mem->flags & KVM_MEM_GUEST_MEMFD)
		file = gm_file_get((int)mem->guest_memfd, &file_type);
	pthread_mutex_lock(&vs->lock);
	ret = memslot_set_locked(vs, mem, file, file_type);
	pthread_mutex_unlock(&vs->lock);
	if (file)
		gm_object_put(file);
	return ret;
}

bool memslot_lookup(struct vm_memslots *vs, gfn_t gfn, struct memslot_view *view)
{
	struct memslot *m;
	struct gmem *g;

	gm_rcu_read_lock();
	m = slot_tree_find(&vs->as[0], gfn);
	if (m) {
		g = atomic_load(&m->binding.gmem);
		*view = (struct memslot_view){
			.id = m->id, .flags = m->flags, .base_gfn = m->base_gfn,
			.npages = m->npages, .userspace_addr = m->userspace_addr,
			.has_gmem = m->flags & KVM_MEM_GUEST_MEMFD,
			.gmem_only = m->gmem_only, .pgoff = m->binding.pgoff,
		};
		/* A file being released has no references left: treat it as gone. */
		if (g && gm_object_tryget(&g->obj))
			view->gmem = g;
	}
	gm_rcu_read_unlock();
	return m;
}

void memslot_view_put(struct memslot_view *view)
{
	if (view->gmem)
		gmem_put(view->gmem);
	view->gmem = NULL;
}

void memslot_view_put_locked(struct memslot_view *view)
{
	if (view->gmem)
		gmem_put_deferred(view->gmem);
	view->gmem = NULL;
}

struct hva_range {
	uintptr_t start, end;   /* host addresses */
	gfn_t gs, ge;           /* the guest frames slots map from them; empty if none */
	bool found;
};

static void hva_range_add(void *item, void *arg)
{
	const struct memslot *m = item;
	struct hva_range *r = arg;
	uint64_t lo = m->userspace_addr, hi = lo + (m->npages << GM_PAGE_SHIFT);
	gfn_t g0, g1;

	/* A file with MMAP serves the slot's shared pages itself: no host address is used. */
	if (!slot_uses_hva(m) || hi <= r->start || lo >= r->end)
		return;
	g0 = m->base_gfn + (((lo > r->start ? lo : r->start) - lo) >> GM_PAGE_SHIFT);
	g1 = m->base_gfn + (((hi < r->end ? hi : r->end) - lo + GM_PAGE_SIZE - 1) >> GM_PAGE_SHIFT);
	if (!r->found || g0 < r->gs)
		r->gs = g0;
	if (!r->found || g1 > r->ge)
		r->ge = g1;
	r->found = true;
}

/* The guest frames [*gs, *ge) that slots map from host addresses in [start, end); empty if none. */
static void hva_range_gfns(struct vm_memslots *vs, uintptr_t start, uintptr_t end, gfn_t *gs,
			   gfn_t *ge)
{
	struct hva_range r = { .start = start, .end = end };

	/* Most VMs map guest memory from files only: nothing to walk. */
	if (atomic_load(&vs->nr_hva)) {
		gm_rcu_read_lock();
		slot_tree_for_each(&vs->as[0], hva_range_add, &r);
		gm_rcu_read_unlock();
	}
	*gs = r.gs;
	*ge = r.ge;
}

/* Exactly one invalidation per call, empty where no slot uses the range: begin and end pair up. */
static void slots_hva_invalidate_begin(struct hva_notifier *n, uintptr_t start, uintptr_t end)
{
	struct vm_memslots *vs = gm_container_of(n, struct vm_memslots, notifier);
	gfn_t gs, ge;

	hva_range_gfns(vs, start, end, &gs, &ge);
	mmu_invalidate_begin(vs->mmu, gs, ge);
}

static void slots_hva_invalidate_end(struct hva_notifier *n, uintptr_t start, uintptr_t end)
{
	struct vm_memslots *vs = gm_container_of(n, struct vm_memslots, notifier);

	mmu_invalidate_end(vs->mmu);
}

void memslots_init(struct vm_memslots *slots, struct mmu *mmu, struct gm_object *vm_obj,
		   int host_fd)
{
	pthread_mutex_init(&slots->lock, NULL);
	slots->mmu = mmu;
	slots->vm_obj = vm_obj;
	slots->host_fd = host_fd;
	slots->notifier.invalidate_begin = slots_hva_invalidate_begin;
	slots->notifier.invalidate_end = slots_hva_invalidate_end;
	hva_notifier_register(&slots->notifier);
}

static void slot_free(void *item, void *arg)
{
	gm_free(((struct memslot *)item)->runs);
	gm_free(item);
}

bool memslots_empty(struct vm_memslots *vs, unsigned int as_id)
{
	bool empty;

	pthread_mutex_lock(&vs->lock);
	empty = vs->as[as_id].nr == 0;
	pthread_mutex_unlock(&vs->lock);
	return empty;
}

void memslots_destroy(struct vm_memslots *vs)
{
	hva_notifier_unregister(&vs->notifier);
	for (unsigned as = 0; as < GM_ADDRESS_SPACES; as++) {
		slot_tree_for_each(&vs->as[as], slot_free, NULL);
		slot_tree_destroy(&vs->as[as]);
		for (size_t i = 0; i < sizeof(vs->by_id[as]) / sizeof(vs->by_id[as][0]); i++)
			gm_free(vs->by_id[as][i]);
		gm_free(vs->host_extra_ids[as]);
	}
	pthread_mutex_destroy(&vs->lock);
}
