/* The host VM's slots behind a VM's memslots on the kvm backend, split by attribute in per-VM mode. */
#include <sched.h>
#include <string.h>

#include "kvm/host.h"
#include "memslot.h"
#include "memslot_host.h"

/*
 * Maps reg's range of the host VM onto file g from offset: the host's
 * guest_memfd or, on a host without one, host-address memory on the
 * library's mapping of the memfd. The host's KVM can then reach private pages
 * through it, and so could the VMM (docs/compat.md).
 */
static int file_range_to_host(struct vm_memslots *vs, const struct kvm_userspace_memory_region2 *reg,
			      struct gmem *g, uint64_t offset)
{
	struct kvm_userspace_memory_region2 r = *reg;
	uint64_t hva = 0;

	r.guest_memfd = 0;
	r.guest_memfd_offset = 0;
	if (g->backing.kind != GM_BACKING_HOST_GMEM) {
		r.flags &= ~KVM_MEM_GUEST_MEMFD;
		r.userspace_addr = (uint64_t)(uintptr_t)g->backing.map + offset;
		return host_set_region(vs->host_fd, &r, -1, 0);
	}
	/* A host that walks guest memory through the HVA gets the library's view of the file. */
	if (g->backing.map)
		hva = (uint64_t)(uintptr_t)g->backing.map + offset;
	r.flags |= KVM_MEM_GUEST_MEMFD;
	r.guest_memfd_offset = offset;
	return host_set_region(vs->host_fd, &r, g->backing.fd, hva);
}

/* The kvm backend: the host VM gets the same slot, bound to the slot's file if it has one. */
static int slot_to_host(struct vm_memslots *vs, const struct kvm_userspace_memory_region2 *mem,
			const struct memslot *slot)
{
	struct gmem *g = atomic_load(&slot->binding.gmem);

	if (!g)
		return host_set_region(vs->host_fd, mem, -1, 0);
	return file_range_to_host(vs, mem, g, mem->guest_memfd_offset);
}

/*
 * Split host slots (the kvm backend with per-VM attributes). The host VM is
 * a DEFAULT VM: it serves a GPA from whatever its slot maps, so each
 * attribute run of a slot gets a host slot of its own: private runs of a
 * guest_memfd slot on the file, shared runs on userspace_addr, and private
 * runs of a slot without a file none (an access there is the kernel's
 * private memory fault, see memslots_host_mmio). A slot's first run takes
 * the slot's own id; further runs take ids from the top of the host's range
 * that no library slot holds (host_extra_ids). A file with MMAP serves
 * shared pages too: its slots are not split.
 */
static bool slot_is_split(const struct vm_memslots *vs, const struct memslot *m)
{
	return vs->split_attrs && !m->gmem_only;
}

/* A pending change of the attributes: [start, end) becomes attrs. */
struct attr_change {
	gfn_t start, end;
	uint64_t attrs;
};

/* Whether gfn is private, with chg (may be NULL) applied; *run_end: where that may change. */
static bool gfn_private(const struct vm_memslots *vs, gfn_t gfn, const struct attr_change *chg,
			gfn_t *run_end)
{
	uint64_t attrs;

	if (chg && gfn >= chg->start && gfn < chg->end) {
		*run_end = chg->end;
		return chg->attrs & KVM_MEMORY_ATTRIBUTE_PRIVATE;
	}
	attrs = attr_get(vs->split_attrs, gfn, run_end);
	if (chg && gfn < chg->start && *run_end > chg->start)
		*run_end = chg->start;
	return attrs & KVM_MEMORY_ATTRIBUTE_PRIVATE;
}

/* The runs of slot m's range, with chg applied; host ids not yet chosen (0). */
static int runs_build(const struct vm_memslots *vs, const struct memslot *m,
		      const struct attr_change *chg, struct host_run **out, uint32_t *nr)
{
	gfn_t end = m->base_gfn + m->npages, gfn, next;
	struct host_run *runs = NULL;
	uint32_t n = 0, cap = 0;

	for (gfn = m->base_gfn; gfn < end; gfn = next) {
		bool priv = gfn_private(vs, gfn, chg, &next);

		if (next > end)
			next = end;
		if (n && runs[n - 1].private == priv) {
			runs[n - 1].end = next;
			continue;
		}
		if (n == cap) {
			struct host_run *r = gm_realloc(runs, (cap = cap ? 2 * cap : 4) * sizeof(*r));

			if (!r) {
				gm_free(runs);
				return -ENOMEM;
			}
			runs = r;
		}
		runs[n++] = (struct host_run){ .start = gfn, .end = next, .private = priv };
	}
	*out = runs;
	*nr = n;
	return 0;
}

static bool extra_id_used(const struct vm_memslots *vs, uint32_t id)
{
	uint16_t i = (uint16_t)id;

	return vs->host_extra_ids[id >> 16][i / 64] & (1ULL << (i % 64));
}

static void extra_id_mark(struct vm_memslots *vs, uint32_t id, bool used)
{
	uint16_t i = (uint16_t)id;
	uint64_t bit = 1ULL << (i % 64);

	if (used)
		vs->host_extra_ids[id >> 16][i / 64] |= bit;
	else
		vs->host_extra_ids[id >> 16][i / 64] &= ~bit;
}

/* A free host id in as_id (neither a library slot's, nor a run's, nor skip), from the top. */
static int extra_id_alloc(struct vm_memslots *vs, unsigned as_id, uint32_t skip, uint32_t *id)
{
	for (uint32_t i = vs->host_nr_ids; i-- > 0;) {
		uint32_t cand = (as_id << 16) | i;

		if (cand != skip && !extra_id_used(vs, cand) && !memslot_by_id(vs, cand)) {
			extra_id_mark(vs, cand, true);
			*id = cand;
			return 0;
		}
	}
	return -ENOMEM;
}

static bool runs_hold_id(const struct host_run *runs, uint32_t nr, uint32_t id)
{
	for (uint32_t i = 0; i < nr; i++)
		if (runs[i].host_id == id)
			return true;
	return false;
}

/*
 * Whether runs (sorted by start) hold r as it is, id included; *at is a
 * cursor for calls in increasing r->start, which makes a walk O(n).
 */
static bool runs_hold(const struct host_run *runs, uint32_t nr, uint32_t *at,
		      const struct host_run *r)
{
	while (*at < nr && runs[*at].start < r->start)
		(*at)++;
	return *at < nr && runs[*at].start == r->start && runs[*at].end == r->end &&
	       runs[*at].private == r->private && runs[*at].host_id == r->host_id;
}

/* Maps one run of m on the host (or deletes host slot r->host_id when del). */
static int run_to_host(struct vm_memslots *vs, const struct memslot *m, const struct host_run *r,
		       bool del)
{
	struct gmem *g = atomic_load(&m->binding.gmem);
	uint64_t off = (r->start - m->base_gfn) << GM_PAGE_SHIFT;
	struct kvm_userspace_memory_region2 reg = {
		.slot = r->host_id,
		.flags = m->flags & ~KVM_MEM_GUEST_MEMFD,
		.guest_phys_addr = r->start << GM_PAGE_SHIFT,
		.memory_size = (r->end - r->start) << GM_PAGE_SHIFT,
		.userspace_addr = m->userspace_addr + off,
	};

	if (del)
		return host_set_region(vs->host_fd, &(struct kvm_userspace_memory_region2){
						       .slot = r->host_id }, -1, 0);
	if (!r->private)
		return host_set_region(vs->host_fd, &reg, -1, 0);
	/* No file, or one already released: nothing serves private accesses. */
	if (!(m->flags & KVM_MEM_GUEST_MEMFD) || !g)
		return 0;
	return file_range_to_host(vs, &reg, g, (m->binding.pgoff << GM_PAGE_SHIFT) + off);
}

/*
 * Moves m's host slots from runs `from` to runs `to`: deletes those not in
 * `to`, then creates those not in `from` (host slots cannot overlap, so a
 * re-split range has no host slot for a moment: see memslots_host_mmio). On
 * failure puts `from` back, as far as the host lets it.
 */
static int runs_switch(struct vm_memslots *vs, const struct memslot *m, const struct host_run *from,
		       uint32_t nr_from, const struct host_run *to, uint32_t nr_to)
{
	uint32_t made, at = 0;
	int ret = 0;

	for (uint32_t i = 0; i < nr_from; i++)
		if (!runs_hold(to, nr_to, &at, &from[i]))
			run_to_host(vs, m, &from[i], true);
	for (made = 0, at = 0; made < nr_to && !ret; made++)
		if (!runs_hold(from, nr_from, &at, &to[made]))
			ret = run_to_host(vs, m, &to[made], false);
	if (!ret)
		return 0;
	at = 0;
	for (uint32_t i = 0; i < made; i++)
		if (!runs_hold(from, nr_from, &at, &to[i]))
			run_to_host(vs, m, &to[i], true);
	at = 0;
	for (uint32_t i = 0; i < nr_from; i++)
		if (!runs_hold(to, nr_to, &at, &from[i]))
			run_to_host(vs, m, &from[i], false);
	return ret;
}

/* A re-split of one slot, planned (ids chosen) before the host sees any of it. */
struct runs_plan {
	struct memslot *slot;
	struct host_run *runs;
	uint32_t nr;
	bool applied;
};

/* Gives back the ids the plan took fresh. */
static void plan_drop(struct vm_memslots *vs, struct runs_plan *p)
{
	for (uint32_t i = 0; i < p->nr; i++)
		if (p->runs[i].fresh)
			extra_id_mark(vs, p->runs[i].host_id, false);
	gm_free(p->runs);
	p->runs = NULL;
}

/* Marks (or clears) the ids of runs beyond the slot's own. */
static void runs_mark(struct vm_memslots *vs, const struct memslot *m, const struct host_run *runs,
		      uint32_t nr, bool used)
{
	for (uint32_t i = 0; i < nr; i++)
		if (runs[i].host_id != m->id)
			extra_id_mark(vs, runs[i].host_id, used);
}

/* The slot takes the plan's runs; the ids only the old runs held go back. */
static void plan_commit(struct vm_memslots *vs, struct runs_plan *p)
{
	struct memslot *m = p->slot;

	runs_mark(vs, m, m->runs, m->nr_runs, false);
	runs_mark(vs, m, p->runs, p->nr, true);
	gm_free(m->runs);
	m->runs = p->runs;
	m->nr_runs = p->nr;
	p->runs = NULL;
}

/*
 * Chooses ids for the runs in p: a run unchanged keeps its id (except
 * `avoid`); the others take the slot's own id if free, then ids of old runs
 * that go, then fresh ones. O(runs): both lists are sorted by start.
 */
static int plan_ids(struct vm_memslots *vs, struct runs_plan *p, uint32_t avoid)
{
	const struct memslot *m = p->slot;
	bool *kept = gm_zalloc((m->nr_runs ? m->nr_runs : 1) * sizeof(*kept));
	bool own_free = true;
	uint32_t reuse = 0, j = 0;

	if (!kept) {
		gm_free(p->runs);
		p->runs = NULL;
		return -ENOMEM;
	}
	for (uint32_t i = 0; i < p->nr; i++) {
		struct host_run *r = &p->runs[i];

		r->host_id = UINT32_MAX;
		r->fresh = false;
		while (j < m->nr_runs && m->runs[j].start < r->start)
			j++;
		if (j < m->nr_runs && m->runs[j].start == r->start && m->runs[j].end == r->end &&
		    m->runs[j].private == r->private && m->runs[j].host_id != avoid) {
			r->host_id = m->runs[j].host_id;
			kept[j] = true;
			own_free &= r->host_id != m->id;
		}
	}
	for (uint32_t i = 0; i < p->nr; i++) {
		struct host_run *r = &p->runs[i];

		if (r->host_id != UINT32_MAX)
			continue;
		if (own_free) {
			r->host_id = m->id;
			own_free = false;
			continue;
		}
		while (reuse < m->nr_runs && (kept[reuse] || m->runs[reuse].host_id == m->id ||
					      m->runs[reuse].host_id == avoid))
			reuse++;
		if (reuse < m->nr_runs) {
			r->host_id = m->runs[reuse++].host_id;
			continue;
		}
		if (extra_id_alloc(vs, m->id >> 16, m->id, &r->host_id)) {
			gm_free(kept);
			plan_drop(vs, p);
			return -ENOMEM;
		}
		r->fresh = true;
	}
	gm_free(kept);
	return 0;
}

static int plan_make(struct vm_memslots *vs, struct runs_plan *p, struct memslot *m,
		     const struct attr_change *chg, uint32_t avoid)
{
	int ret;

	/* runs_build leaves them unset on failure; the caller's plan may be on its stack. */
	*p = (struct runs_plan){ .slot = m };
	ret = runs_build(vs, m, chg, &p->runs, &p->nr);
	return ret ? ret : plan_ids(vs, p, avoid);
}

static int plan_apply(struct vm_memslots *vs, struct runs_plan *p)
{
	int ret = runs_switch(vs, p->slot, p->slot->runs, p->slot->nr_runs, p->runs, p->nr);

	p->applied = !ret;
	return ret;
}

/* A new split slot's host slots; the slot holds its runs on success. */
static int split_slot_to_host(struct vm_memslots *vs, struct memslot *m)
{
	struct runs_plan p;
	int ret = plan_make(vs, &p, m, NULL, UINT32_MAX);

	if (!ret)
		ret = plan_apply(vs, &p);
	if (ret) {
		if (p.runs)
			plan_drop(vs, &p);
		return ret;
	}
	plan_commit(vs, &p);
	return 0;
}

/* Gives back m's runs and the ids beyond its own (its host slots are gone). */
static void runs_release(struct vm_memslots *vs, struct memslot *m)
{
	runs_mark(vs, m, m->runs, m->nr_runs, false);
	gm_free(m->runs);
	m->runs = NULL;
	m->nr_runs = 0;
}

static void split_slot_delete(struct vm_memslots *vs, struct memslot *m)
{
	runs_switch(vs, m, m->runs, m->nr_runs, NULL, 0);
	runs_release(vs, m);
}

/*
 * A split slot moved (or its flags changed): its runs go from the host, then
 * the new slot's come; on failure the old ones are put back.
 */
static int split_slot_move(struct vm_memslots *vs, struct memslot *old, struct memslot *m)
{
	int ret;

	runs_switch(vs, old, old->runs, old->nr_runs, NULL, 0);
	ret = split_slot_to_host(vs, m);
	if (ret)
		runs_switch(vs, old, NULL, 0, old->runs, old->nr_runs);
	return ret;
}

struct slot_walk {
	struct vm_memslots *vs;
	gfn_t start, end;       /* slots meeting it; or, with end 0, the run holding id */
	uint32_t id;
	struct memslot **found;
	size_t nr;
};

static void slot_walk_add(void *item, void *arg)
{
	struct memslot *m = item;
	struct slot_walk *w = arg;
	bool hit;

	if (!slot_is_split(w->vs, m))
		return;
	if (w->end)
		hit = m->base_gfn < w->end && m->base_gfn + m->npages > w->start;
	else
		hit = runs_hold_id(m->runs, m->nr_runs, w->id);
	if (hit && w->found)
		w->found[w->nr] = m;
	w->nr += hit;
}

/* The split slots meeting [start, end), or holding host id `id` when end is 0; in *out. */
static int split_slots_find(struct vm_memslots *vs, gfn_t start, gfn_t end, uint32_t id,
			    struct memslot ***out, size_t *nr)
{
	struct slot_walk w = { .vs = vs, .start = start, .end = end, .id = id };

	for (unsigned as = 0; as < GM_ADDRESS_SPACES; as++)
		slot_tree_for_each(&vs->as[as], slot_walk_add, &w);
	*nr = w.nr;
	*out = NULL;
	if (!w.nr)
		return 0;
	w.found = gm_zalloc(w.nr * sizeof(*w.found));
	if (!w.found)
		return -ENOMEM;
	w.nr = 0;
	for (unsigned as = 0; as < GM_ADDRESS_SPACES; as++)
		slot_tree_for_each(&vs->as[as], slot_walk_add, &w);
	*out = w.found;
	return 0;
}

/*
 * Plans, then applies, a re-split of each slot in slots[]; on any failure the
 * applied ones are switched back and nothing has changed.
 */
static int slots_resplit(struct vm_memslots *vs, struct memslot **slots, size_t nr,
			 const struct attr_change *chg, uint32_t avoid)
{
	struct runs_plan *plans = gm_zalloc((nr ? nr : 1) * sizeof(*plans));
	size_t planned = 0, applied = 0;
	int ret = plans ? 0 : -ENOMEM;

	for (; !ret && planned < nr; planned++) {
		ret = plan_make(vs, &plans[planned], slots[planned], chg, avoid);
		if (ret)
			break;
	}
	for (; !ret && applied < nr; applied++)
		ret = plan_apply(vs, &plans[applied]);
	if (ret) {
		/* The plan that failed has already put its slot back (runs_switch). */
		for (size_t i = 0; i < applied; i++)
			if (plans[i].applied)
				runs_switch(vs, plans[i].slot, plans[i].runs, plans[i].nr,
					    plans[i].slot->runs, plans[i].slot->nr_runs);
		for (size_t i = 0; i < planned; i++)
			plan_drop(vs, &plans[i]);
	} else {
		for (size_t i = 0; i < nr; i++)
			plan_commit(vs, &plans[i]);
	}
	gm_free(plans);
	return ret;
}

int memslots_host_attrs_change(struct vm_memslots *vs, gfn_t start, gfn_t end, uint64_t attrs)
{
	struct attr_change chg = { .start = start, .end = end, .attrs = attrs };
	struct memslot **slots;
	size_t nr;
	int ret;

	if (!vs->split_attrs)
		return 0;
	ret = split_slots_find(vs, start, end, 0, &slots, &nr);
	if (!ret && nr)
		ret = slots_resplit(vs, slots, nr, &chg, UINT32_MAX);
	gm_free(slots);
	return ret;
}

/* A new library slot wants host id `id`, which a run of another slot holds: that run moves. */
static int host_id_free_for_slot(struct vm_memslots *vs, uint32_t id)
{
	struct memslot **slots;
	size_t nr;
	int ret;

	if (!vs->split_attrs || (uint16_t)id >= vs->host_nr_ids || !extra_id_used(vs, id))
		return 0;
	ret = split_slots_find(vs, 0, 0, id, &slots, &nr);
	if (!ret && nr)
		ret = slots_resplit(vs, slots, nr, NULL, id);
	gm_free(slots);
	return ret;
}

#ifdef GM_TEST_HOOKS
static _Atomic uint32_t host_ids_limit;

void gm_host_slot_ids_limit(uint32_t n)
{
	atomic_store(&host_ids_limit, n);
}
#endif

int memslots_split_by(struct vm_memslots *vs, const struct attr_map *attrs)
{
	long n = host_ioctl(vs->host_fd, KVM_CHECK_EXTENSION, KVM_CAP_NR_MEMSLOTS);

	if (n <= 0)
		return n < 0 ? (int)n : -EINVAL;
	vs->host_nr_ids = n > GM_USER_MEM_SLOTS ? GM_USER_MEM_SLOTS : (uint32_t)n;
#ifdef GM_TEST_HOOKS
	if (atomic_load(&host_ids_limit) && atomic_load(&host_ids_limit) < vs->host_nr_ids)
		vs->host_nr_ids = atomic_load(&host_ids_limit);
#endif
	for (unsigned as = 0; as < GM_ADDRESS_SPACES; as++) {
		vs->host_extra_ids[as] = gm_zalloc((vs->host_nr_ids + 63) / 64 * sizeof(uint64_t));
		if (!vs->host_extra_ids[as])
			return -ENOMEM;
	}
	vs->split_attrs = attrs;
	return 0;
}

void memslots_host_let_vcpus_in(struct vm_memslots *vs)
{
	/* Each waiter is about to take the free lock: this ends as soon as they have. */
	while (atomic_load(&vs->host_mmio_waiters))
		sched_yield();
}

enum host_mmio memslots_host_mmio(struct vm_memslots *vs, struct kvm_run *run)
{
	uint64_t gpa = run->mmio.phys_addr, len = run->mmio.len;
	gfn_t gfn = gpa >> GM_PAGE_SHIFT;
	enum host_mmio ret = HOST_MMIO_PASS;
	const struct host_run *r = NULL;
	struct memslot *m;
	uint8_t *mem = NULL;

	if (!vs->split_attrs || !len || len > sizeof(run->mmio.data) ||
	    ((gpa + len - 1) >> GM_PAGE_SHIFT) != gfn)
		return HOST_MMIO_PASS;
	/* A re-split holds lock from its first host change to its last: this waits it out. */
	atomic_fetch_add(&vs->host_mmio_waiters, 1);
	pthread_mutex_lock(&vs->lock);
	atomic_fetch_sub(&vs->host_mmio_waiters, 1);
	m = slot_tree_find(&vs->as[0], gfn);
	if (m && slot_is_split(vs, m))
		for (uint32_t i = 0; i < m->nr_runs; i++)
			if (gfn >= m->runs[i].start && gfn < m->runs[i].end)
				r = &m->runs[i];
	if (r && !r->private) {
		mem = (uint8_t *)(uintptr_t)(m->userspace_addr +
					     ((gfn - m->base_gfn) << GM_PAGE_SHIFT));
	} else if (r && (m->flags & KVM_MEM_GUEST_MEMFD)) {
		struct gmem *g = atomic_load(&m->binding.gmem);

		if (g && g->backing.map)
			mem = (uint8_t *)g->backing.map +
			      ((m->binding.pgoff + gfn - m->base_gfn) << GM_PAGE_SHIFT);
	} else if (attr_get(vs->split_attrs, gfn, NULL) & KVM_MEMORY_ATTRIBUTE_PRIVATE) {
		/* A private GPA with no slot, or a slot without a file: kvm_faultin_pfn_private's exit. */
		ret = HOST_MMIO_PRIVATE_FAULT;
	}
	/* Done under lock: no re-split can take the memory away meanwhile. */
	if (mem) {
		mem += gpa & (GM_PAGE_SIZE - 1);
		if (run->mmio.is_write)
			memcpy(mem, run->mmio.data, len);
		else
			memcpy(run->mmio.data, mem, len);
		ret = HOST_MMIO_DONE;
	}
	pthread_mutex_unlock(&vs->lock);
	return ret;
}

int memslot_host_create(struct vm_memslots *vs, const struct kvm_userspace_memory_region2 *mem,
			struct memslot *slot, struct memslot *old)
{
	int ret = old ? 0 : host_id_free_for_slot(vs, mem->slot);

	if (ret)
		return ret;
	if (old && old->runs)
		return split_slot_move(vs, old, slot);
	return slot_is_split(vs, slot) ? split_slot_to_host(vs, slot) : slot_to_host(vs, mem, slot);
}

/* The region a plain slot gave the host. */
static struct kvm_userspace_memory_region2 plain_slot_region(const struct memslot *m)
{
	return (struct kvm_userspace_memory_region2){
		.slot = m->id,
		.flags = m->flags,
		.guest_phys_addr = m->base_gfn << GM_PAGE_SHIFT,
		.memory_size = m->npages << GM_PAGE_SHIFT,
		.userspace_addr = m->userspace_addr,
		.guest_memfd_offset = m->binding.pgoff << GM_PAGE_SHIFT,
	};
}

void memslot_host_create_undo(struct vm_memslots *vs, struct memslot *slot, struct memslot *old)
{
	struct kvm_userspace_memory_region2 reg;

	if (slot->runs) {
		split_slot_delete(vs, slot);
	} else if (old && !old->runs) {
		/* A plain move or flags change: the host slot (same id) goes back where it was. */
		reg = plain_slot_region(old);
		slot_to_host(vs, &reg, old);
	} else if (!old) {
		reg = (struct kvm_userspace_memory_region2){ .slot = slot->id };
		host_set_region(vs->host_fd, &reg, -1, 0);
	}
	if (old && old->runs)
		runs_switch(vs, old, NULL, 0, old->runs, old->nr_runs);
}

void memslot_host_release(struct vm_memslots *vs, struct memslot *old)
{
	if (old->runs)
		runs_release(vs, old);
}

void memslot_host_delete(struct vm_memslots *vs, struct memslot *old)
{
	struct kvm_userspace_memory_region2 del = { .slot = old->id };

	if (old->runs)
		split_slot_delete(vs, old);
	else
		host_set_region(vs->host_fd, &del, -1, 0);
}
