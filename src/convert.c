/* In-place private/shared conversion of a guest_memfd (KVM_SET_MEMORY_ATTRIBUTES2), and DMA pins. */
#include <string.h>

#include "gmem.h"

/* The first pinned page in [start, end), or end when there is none. */
static pgoff_t first_pinned(const struct gmem *g, pgoff_t start, pgoff_t end)
{
	pgoff_t first = end;

	for (const struct gmem_pin *p = g->pins; p; p = p->next)
		if (p->start < end && start < p->end) {
			pgoff_t at = p->start > start ? p->start : start;

			if (at < first)
				first = at;
		}
	return first;
}

/* The range widened to whole folios: leaves there may map the range as part of a huge leaf. */
static void folio_align(const struct gmem *g, pgoff_t *start, pgoff_t *end)
{
	pgoff_t n = 1ULL << (g->folio_shift - GM_PAGE_SHIFT);

	*start &= ~(n - 1);
	*end = (*end + n - 1) & ~(n - 1);
}

/* Restores the ranges saved before a conversion; room was reserved for it. */
static void attr_restore(struct attr_map *m, const struct attr_range *saved, size_t nr, pgoff_t end)
{
	for (size_t i = 0; i < nr; i++)
		attr_set(m, saved[i].start, i + 1 < nr ? saved[i + 1].start : end, saved[i].attrs);
}

/* The huge folio at the edge of [start, end) that the conversion leaves mixed, or -1. */
static pgoff_t folio_to_split(const struct gmem *g, pgoff_t edge, pgoff_t start, pgoff_t end,
			      uint64_t attrs)
{
	pgoff_t n = 1ULL << (g->folio_shift - GM_PAGE_SHIFT), first = edge & ~(n - 1);
	uint64_t current;

	if (!g->backing.split || (first >= start && first + n <= end) ||
	    backing_is_split(&g->backing, first << GM_PAGE_SHIFT))
		return (pgoff_t)-1;
	/* An unsplit huge folio has one kind; only a change to part of it mixes it. */
	attr_uniform(&g->attrs, first, first + n, &current);
	return current == attrs ? (pgoff_t)-1 : first;
}

/*
 * Moves one split folio, of one kind again, back to a huge page. The host's
 * view never contradicts the attributes: a folio that cannot be hidden is not
 * moved, and one that cannot be shown again stays hidden.
 */
static void merge_folio(struct gmem *g, pgoff_t f, pgoff_t n)
{
	uint64_t off = f << GM_PAGE_SHIFT;

	/* A host mapping cut inside the folio cannot show a huge page: nothing moves. */
	if (hostmap_cut_inside(g, f, f + n))
		return;
	if (hostmap_hide(g, f, f + n))
		goto show;
	/* Without a huge page the folio stays split: the merge is an optimisation. */
	if (backing_merge(&g->backing, off))
		goto show;
	if (!hostmap_refresh(g, f, f + n))
		return;
	/*
	 * A host mapping cut inside the folio since the check (a plain munmap
	 * waits for no lock of ours), or one short of mmaps, cannot show a huge
	 * page: back to 4 KiB pages, which it can show.
	 */
	if (!backing_split_prepare(&g->backing, off)) {
		hostmap_hide(g, f, f + n);
		backing_split(&g->backing, off);
	}
show:
	/* Laid again from whichever store holds it; tried twice, else hidden (SIGBUS). */
	if (hostmap_refresh(g, f, f + n))
		hostmap_undo(g, f, f + n);
}

/* Split folios in [start, end) that are of one kind again go back to huge pages. */
static void merge_folios(struct gmem *g, pgoff_t start, pgoff_t end)
{
	pgoff_t n = 1ULL << (g->folio_shift - GM_PAGE_SHIFT);

	for (pgoff_t f = start; f < end; f += n)
		if (backing_is_split(&g->backing, f << GM_PAGE_SHIFT) &&
		    attr_uniform(&g->attrs, f, f + n, NULL) && first_pinned(g, f, f + n) == f + n)
			merge_folio(g, f, n);
}

/*
 * Pages of [start, end) that the guest held go back to the hypervisor: on
 * hardware the host would then read ciphertext; here it reads zeros, never
 * what the guest wrote while they were private. Room in the map was reserved.
 */
static void rmp_scrub(struct gmem *g, pgoff_t start, pgoff_t end)
{
	pgoff_t at = start, run_start, run_end;

	while (rmp_next_guest_run(g->rmp, at, end, &run_start, &run_end)) {
		for (pgoff_t i = run_start; i < run_end; i++) {
			void *page = backing_addr(&g->backing, i << GM_PAGE_SHIFT);

			if (page)
				memset(page, 0, GM_PAGE_SIZE);
		}
		at = run_end;
	}
	rmp_set(g->rmp, start, end, RMP_HYPERVISOR);
}

/*
 * The conversion itself, with the file's invalidate_lock held for write.
 * Everything that can fail comes before the zap; after it nothing may, but
 * for the host's mappings, whose failure is undone so the call changed nothing.
 */
static int convert_locked(struct gmem *g, pgoff_t start, pgoff_t end, uint64_t attrs,
			  uint64_t *error_offset)
{
	bool to_private = attrs & KVM_MEMORY_ATTRIBUTE_PRIVATE;
	bool huge_store = g->backing.split != NULL;
	struct attr_range *saved = NULL;
	pgoff_t folio = 1ULL << (g->folio_shift - GM_PAGE_SHIFT);
	pgoff_t zap_start = start, zap_end = end, pinned, split[2];
	pgoff_t host_start = start, host_end = end;
	uint64_t current;
	size_t nr_saved, cap_before = 0;
	unsigned nr_inval;
	bool host_failed = false;
	int ret;

	*error_offset = start << GM_PAGE_SHIFT;
	if (attr_uniform(&g->attrs, start, end, &current) && current == attrs)
		return 0;

	/* Room for the new range and for putting the old ones back if the host remap fails. */
	nr_saved = attr_snapshot(&g->attrs, start, end, NULL, 0);
	saved = gm_zalloc(nr_saved * sizeof(*saved));
	if (!saved)
		return -ENOMEM;
	attr_snapshot(&g->attrs, start, end, saved, nr_saved);
	cap_before = g->attrs.cap;
	ret = attr_reserve_n(&g->attrs, 2 + 2 * nr_saved);
	if (ret)
		goto out;

	/* The reverse map's room for the pages the guest gives back. */
	if (!to_private && g->rmp) {
		ret = rmp_reserve(g->rmp);
		if (ret)
			goto out;
	}

	/* A page the host holds for DMA cannot be taken away from it, nor moved. */
	folio_align(g, &zap_start, &zap_end);
	split[0] = folio_to_split(g, start, start, end, attrs);
	split[1] = folio_to_split(g, end - 1, start, end, attrs);
	if (split[1] == split[0])
		split[1] = (pgoff_t)-1;
	pinned = to_private ? first_pinned(g, start, end) : (pgoff_t)-1;
	if (pinned == end)
		pinned = (pgoff_t)-1;
	for (int i = 0; i < 2; i++) {
		pgoff_t p = split[i] == (pgoff_t)-1 ? (pgoff_t)-1
						    : first_pinned(g, split[i], split[i] + folio);

		if (p != split[i] + folio && p < pinned)
			pinned = p;
	}
	if (pinned != (pgoff_t)-1) {
		*error_offset = pinned << GM_PAGE_SHIFT;
		ret = -EAGAIN;
		goto out;
	}
	/* The part of a folio split that can fail: room for its pages. */
	for (int i = 0; i < 2; i++) {
		if (split[i] == (pgoff_t)-1)
			continue;
		/* Whatever ran short (pages, fds), the series reports it as ENOMEM. */
		if (backing_split_prepare(&g->backing, split[i] << GM_PAGE_SHIFT)) {
			ret = -ENOMEM;
			goto out;
		}
	}

	if (to_private && !huge_store) {
		/* The host loses its mappings first; on failure they are laid again as they were. */
		attr_set(&g->attrs, start, end, attrs);
		ret = hostmap_refresh(g, start, end);
		attr_restore(&g->attrs, saved, nr_saved, end);
		if (ret) {
			hostmap_undo(g, start, end);
			ret = -ENOMEM;
			goto out;
		}
	}

	/* Point of no return: the stage-2 of every bound VM forgets the whole folios. */
	nr_inval = gmem_invalidate_begin(g, zap_start, zap_end);
	if (huge_store) {
		/* Split folios are remapped whole; the host briefly loses them while they move. */
		host_start = zap_start;
		host_end = zap_end;
		for (int i = 0; i < 2; i++) {
			if (split[i] == (pgoff_t)-1)
				continue;
			/* Left inaccessible if it cannot be hidden; the call then fails below. */
			host_failed |= hostmap_hide(g, split[i], split[i] + folio) != 0;
			backing_split(&g->backing, split[i] << GM_PAGE_SHIFT);
		}
	}
	/* Scrubbed while neither the guest (zapped) nor the host (not yet shown) can see it. */
	if (!to_private && g->rmp)
		rmp_scrub(g, start, end);
	attr_set(&g->attrs, start, end, attrs);
	if (host_failed || ((!to_private || huge_store) && hostmap_refresh(g, host_start, host_end))) {
		/* The host cannot see the pages: undo, so that the call changed nothing. */
		attr_restore(&g->attrs, saved, nr_saved, end);
		hostmap_undo(g, host_start, host_end);
		ret = -ENOMEM;
	}
	if (huge_store)
		merge_folios(g, zap_start, zap_end);
	gmem_invalidate_end(g, nr_inval);
out:
	/* A failed call leaves nothing behind, not even room in the range map. */
	if (ret && cap_before)
		attr_trim(&g->attrs, cap_before);
	/* A file made uniform again gives back the room its fragments needed. */
	if (!ret)
		attr_shrink(&g->attrs);
	gm_free(saved);
	return ret;
}

/* KVM_SET_MEMORY_ATTRIBUTES2 on the guest_memfd, with the series' validation order. */
static long gmem_set_attributes(struct gmem *g, unsigned long arg)
{
	struct kvm_memory_attributes2 a;
	uint64_t end, error_offset;
	int ret = gm_copy_from_user(&a, (void *)arg, sizeof(a));

	if (ret)
		return ret;
	if (a.flags)
		return -EINVAL;
	for (size_t i = 0; i < sizeof(a.reserved) / sizeof(a.reserved[0]); i++)
		if (a.reserved[i])
			return -EINVAL;
	if (!g->vm.private_mem || (a.attributes & ~KVM_MEMORY_ATTRIBUTE_PRIVATE))
		return -EINVAL;
	if (!a.size || !gm_range_ok(a.offset, a.size, &end))
		return -EINVAL;
	if (!GM_ALIGNED(a.offset, GM_PAGE_SIZE) || !GM_ALIGNED(a.size, GM_PAGE_SIZE))
		return -EINVAL;
	if (a.offset >= g->size || end > g->size)
		return -EINVAL;

	pthread_rwlock_wrlock(&g->invalidate_lock);
	ret = convert_locked(g, a.offset >> GM_PAGE_SHIFT, end >> GM_PAGE_SHIFT, a.attributes,
			     &error_offset);
	pthread_rwlock_unlock(&g->invalidate_lock);
	if (ret) {
		/* Only a failure copies the struct back, with where it stopped. */
		a.error_offset = error_offset;
		if (gm_copy_to_user((void *)arg, &a, sizeof(a)))
			return -EFAULT;
	}
	return ret;
}

long gmem_ioctl(struct gmem *g, unsigned long request, unsigned long arg)
{
	switch (request) {
	case KVM_SET_MEMORY_ATTRIBUTES2:
		/* With per-VM attributes the file has no attributes to set (ENOTTY, series v8). */
		if (g->vm.attrs_in_vm)
			return -ENOTTY;
		return gmem_set_attributes(g, arg);
	default:
		return -ENOTTY;
	}
}

static int pin_range(const struct gmem *g, uint64_t offset, uint64_t len, pgoff_t *start, pgoff_t *end)
{
	uint64_t last;

	if (!len || !GM_ALIGNED(offset, GM_PAGE_SIZE) || !GM_ALIGNED(len, GM_PAGE_SIZE) ||
	    !gm_range_ok(offset, len, &last) || last > g->size)
		return -EINVAL;
	*start = offset >> GM_PAGE_SHIFT;
	*end = last >> GM_PAGE_SHIFT;
	return 0;
}

/* A pin and the device's own mapping of its pages (NULL when the caller asked for none). */
struct pin_mapping {
	struct gmem_pin pin;
	void *dma;
};

static struct pin_mapping *pin_mapping(struct gmem_pin *p)
{
	return gm_container_of(p, struct pin_mapping, pin);
}

static void pin_free(struct gmem *g, struct gmem_pin *p)
{
	struct pin_mapping *pm = pin_mapping(p);

	if (pm->dma)
		backing_unmap_pin(&g->backing, pm->dma, p->start << GM_PAGE_SHIFT,
				  (p->end - p->start) << GM_PAGE_SHIFT);
	gm_free(pm);
}

/* Whether the caller's dma pointer can take an address, checked without changing it. */
static int dma_writable(void **dma)
{
	void *old;

	if (!dma)
		return 0;
	if (gm_copy_from_user(&old, dma, sizeof(old)) || gm_copy_to_user(dma, &old, sizeof(old)))
		return -EFAULT;
	return 0;
}

/* Allocates and maps the pinned pages; the invalidate lock is held. */
static int pin_prepare(struct gmem *g, struct pin_mapping *pm, uint64_t offset, uint64_t len,
		       void **dma)
{
	uint64_t attrs;
	int ret;

	/* Only shared memory can be handed to a device, as get_user_pages on a mapping. */
	if (!attr_uniform(&g->attrs, pm->pin.start, pm->pin.end, &attrs) ||
	    (attrs & KVM_MEMORY_ATTRIBUTE_PRIVATE))
		return -EFAULT;
	/* Without the library's own mapping there is no address to give a device. */
	if (dma && !g->backing.map)
		return -EOPNOTSUPP;
	ret = backing_allocate(&g->backing, offset, len);
	if (ret || !dma)
		return ret;
	ret = backing_map_pin(&g->backing, offset, len, &pm->dma);
	if (ret)
		return ret;
	if (gm_copy_to_user(dma, &pm->dma, sizeof(pm->dma))) {
		backing_unmap_pin(&g->backing, pm->dma, offset, len);
		pm->dma = NULL;
		return -EFAULT;
	}
	return 0;
}

int gmem_pin(struct gmem *g, uint64_t offset, uint64_t len, void **dma)
{
	struct pin_mapping *pm;
	pgoff_t start, end;
	int ret = pin_range(g, offset, len, &start, &end);

	if (!ret)
		ret = dma_writable(dma);
	if (ret)
		return ret;
	pm = gm_zalloc(sizeof(*pm));
	if (!pm)
		return -ENOMEM;
	pm->pin.start = start;
	pm->pin.end = end;
	pthread_rwlock_wrlock(&g->invalidate_lock);
	/* Linked only once nothing can fail: a failed pin leaves no trace. */
	ret = pin_prepare(g, pm, offset, len, dma);
	if (!ret) {
		pm->pin.next = g->pins;
		g->pins = &pm->pin;
		pm = NULL;
	}
	pthread_rwlock_unlock(&g->invalidate_lock);
	gm_free(pm);
	return ret;
}

int gmem_unpin(struct gmem *g, uint64_t offset, uint64_t len)
{
	struct gmem_pin **pp, *p = NULL;
	pgoff_t start, end;
	int ret = pin_range(g, offset, len, &start, &end);

	if (ret)
		return ret;
	pthread_rwlock_wrlock(&g->invalidate_lock);
	for (pp = &g->pins; *pp; pp = &(*pp)->next) {
		if ((*pp)->start == start && (*pp)->end == end) {
			p = *pp;
			*pp = p->next;
			break;
		}
	}
	/* The device loses the pages with the pin, before they can become private. */
	if (p)
		pin_free(g, p);
	pthread_rwlock_unlock(&g->invalidate_lock);
	return p ? 0 : -ENOENT;
}

void gmem_pins_destroy(struct gmem *g)
{
	while (g->pins) {
		struct gmem_pin *p = g->pins;

		g->pins = p->next;
		pin_free(g, p);
	}
}
