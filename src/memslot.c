/* Memslots: validation and binding as kvm_set_memory_region and kvm_gmem_bind do, published with RCU. */
#include <fcntl.h>
#include <string.h>

#include "kvm/host.h"
#include "memslot.h"
#include "mmu/stage2.h"

#define GM_MAX_GFN ((1ULL << 36) - 1) /* the stage-2 covers 48 bits of guest-physical space */
#define GM_TASK_SIZE_MAX 0x7ffffffff000ULL

static struct memslots *slots_of(struct vm_memslots *vs, unsigned as_id)
{
	return atomic_load_explicit(&vs->as[as_id], memory_order_acquire);
}

static struct memslot *slot_by_id(struct memslots *s, uint32_t id)
{
	for (size_t i = 0; s && i < s->nr; i++)
		if (s->slots[i]->id == id)
			return s->slots[i];
	return NULL;
}

static bool slots_overlap(struct memslots *s, uint32_t id, gfn_t start, gfn_t end)
{
	for (size_t i = 0; s && i < s->nr; i++) {
		struct memslot *m = s->slots[i];

		if (m->id != id && m->base_gfn < end && start < m->base_gfn + m->npages)
			return true;
	}
	return false;
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

/* A copy of s with old removed and new inserted (either may be NULL), sorted by gfn. */
static struct memslots *slots_replace(struct memslots *s, struct memslot *old, struct memslot *new)
{
	size_t nr = s ? s->nr : 0, out = 0;
	struct memslots *n = gm_zalloc(sizeof(*n) + (nr + 1) * sizeof(n->slots[0]));

	if (!n)
		return NULL;
	for (size_t i = 0; i < nr; i++) {
		if (s->slots[i] == old)
			continue;
		if (new && new->base_gfn < s->slots[i]->base_gfn) {
			n->slots[out++] = new;
			new = NULL;
		}
		n->slots[out++] = s->slots[i];
	}
	if (new)
		n->slots[out++] = new;
	n->nr = out;
	return n;
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

/* Publishes n, waits for readers of the old array, frees it. */
static void slots_publish(struct vm_memslots *vs, unsigned as_id, struct memslots *n)
{
	struct memslots *old = slots_of(vs, as_id);

	atomic_store_explicit(&vs->as[as_id], n, memory_order_release);
	gm_synchronize_rcu();
	gm_free(old);
}

/* Drops what the stage-2 mapped through a slot that faults can no longer find. */
static void slot_zap(struct vm_memslots *vs, const struct memslot *old)
{
	mmu_invalidate_begin(vs->mmu, old->base_gfn, old->base_gfn + old->npages);
	mmu_invalidate_end(vs->mmu);
}

static int slot_delete(struct vm_memslots *vs, unsigned as_id, struct memslot *old)
{
	struct memslots *n = slots_replace(slots_of(vs, as_id), old, NULL);

	if (!n)
		return -ENOMEM;
	slots_publish(vs, as_id, n);
	if (vs->host_fd >= 0) {
		struct kvm_userspace_memory_region2 del = { .slot = old->id };

		host_set_region(vs->host_fd, &del, -1, 0);
	}
	slot_zap(vs, old);
	if (old->flags & KVM_MEM_GUEST_MEMFD)
		gmem_unbind(&old->binding);
	gm_call_rcu(&old->rcu, slot_free_rcu);
	return 0;
}

/* The kvm backend: the host VM gets the same slot, bound to the host's guest_memfd. */
static int slot_to_host(struct vm_memslots *vs, const struct kvm_userspace_memory_region2 *mem,
			const struct memslot *slot)
{
	struct gmem *g = atomic_load(&slot->binding.gmem);
	uint64_t hva = 0;

	if (g && g->backing.kind != GM_BACKING_HOST_GMEM) {
		/*
		 * A host without guest_memfd: the slot is ordinary host-address memory,
		 * the library's mapping of the memfd. The host's KVM can then reach
		 * private pages through it, and so could the VMM (docs/compat.md).
		 */
		struct kvm_userspace_memory_region2 plain = *mem;

		plain.flags &= ~KVM_MEM_GUEST_MEMFD;
		plain.userspace_addr = (uint64_t)(uintptr_t)g->backing.map + mem->guest_memfd_offset;
		plain.guest_memfd = 0;
		plain.guest_memfd_offset = 0;
		return host_set_region(vs->host_fd, &plain, -1, 0);
	}
	/* A host that walks guest memory through the HVA gets the library's view of the file. */
	if (g && g->backing.map)
		hva = (uint64_t)(uintptr_t)g->backing.map + mem->guest_memfd_offset;
	return host_set_region(vs->host_fd, mem, g ? g->backing.fd : -1, hva);
}

static int slot_create(struct vm_memslots *vs, unsigned as_id, const struct kvm_userspace_memory_region2 *mem,
		       struct memslot *old, struct gm_object *file, enum gm_file_type file_type)
{
	gfn_t base = mem->guest_phys_addr >> GM_PAGE_SHIFT;
	uint64_t npages = mem->memory_size >> GM_PAGE_SHIFT;
	struct memslots *n;
	struct memslot *slot;
	int ret;

	if (slots_overlap(slots_of(vs, as_id), mem->slot, base, base + npages))
		return -EEXIST;
	slot = gm_zalloc(sizeof(*slot));
	if (!slot)
		return -ENOMEM;
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
		ret = slot_to_host(vs, mem, slot);
		if (ret)
			goto err_unbind;
	}
	n = slots_replace(slots_of(vs, as_id), old, slot);
	if (!n) {
		ret = -ENOMEM;
		goto err_unbind;
	}
	slots_publish(vs, as_id, n);
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
	old = slot_by_id(slots_of(vs, as_id), mem->slot);
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
	struct memslots *s;
	bool found = false;

	gm_rcu_read_lock();
	s = atomic_load_explicit(&vs->as[0], memory_order_acquire);
	for (size_t lo = 0, hi = s ? s->nr : 0; lo < hi;) {
		size_t mid = lo + (hi - lo) / 2;
		struct memslot *m = s->slots[mid];

		if (gfn < m->base_gfn) {
			hi = mid;
		} else if (gfn >= m->base_gfn + m->npages) {
			lo = mid + 1;
		} else {
			struct gmem *g = atomic_load(&m->binding.gmem);

			*view = (struct memslot_view){
				.id = m->id, .flags = m->flags, .base_gfn = m->base_gfn,
				.npages = m->npages, .userspace_addr = m->userspace_addr,
				.has_gmem = m->flags & KVM_MEM_GUEST_MEMFD,
				.gmem_only = m->gmem_only, .pgoff = m->binding.pgoff,
			};
			/* A file being released has no references left: treat it as gone. */
			if (g && gm_object_tryget(&g->obj))
				view->gmem = g;
			found = true;
			break;
		}
	}
	gm_rcu_read_unlock();
	return found;
}

void memslot_view_put(struct memslot_view *view)
{
	if (view->gmem)
		gmem_put(view->gmem);
	view->gmem = NULL;
}

/* The guest frames [*gs, *ge) that slots map from host addresses in [start, end); empty if none. */
static void hva_range_gfns(struct vm_memslots *vs, uintptr_t start, uintptr_t end, gfn_t *gs,
			   gfn_t *ge)
{
	struct memslots *s;
	bool found = false;

	*gs = *ge = 0;
	gm_rcu_read_lock();
	s = slots_of(vs, 0);
	for (size_t i = 0; s && i < s->nr; i++) {
		const struct memslot *m = s->slots[i];
		uint64_t lo = m->userspace_addr, hi = lo + (m->npages << GM_PAGE_SHIFT);
		gfn_t g0, g1;

		/* A file with MMAP serves the slot's shared pages itself: no host address is used. */
		if (m->gmem_only || hi <= start || lo >= end)
			continue;
		g0 = m->base_gfn + (((lo > start ? lo : start) - lo) >> GM_PAGE_SHIFT);
		g1 = m->base_gfn + (((hi < end ? hi : end) - lo + GM_PAGE_SIZE - 1) >> GM_PAGE_SHIFT);
		if (!found || g0 < *gs)
			*gs = g0;
		if (!found || g1 > *ge)
			*ge = g1;
		found = true;
	}
	gm_rcu_read_unlock();
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

void memslots_destroy(struct vm_memslots *vs)
{
	hva_notifier_unregister(&vs->notifier);
	for (unsigned as = 0; as < GM_ADDRESS_SPACES; as++) {
		struct memslots *s = slots_of(vs, as);

		for (size_t i = 0; s && i < s->nr; i++)
			gm_free(s->slots[i]);
		gm_free(s);
	}
	pthread_mutex_destroy(&vs->lock);
}
