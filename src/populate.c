/* kvm_gmem_populate in its post-7.0 form: per page, a private destination handed to the platform. */
#include <signal.h>

#include "gmem.h"
#include "populate.h"

/*
 * signal_pending(): a signal the thread has pending. One that is not blocked
 * runs its handler at once, out of the library's sight, so what can still be
 * pending is a blocked one (docs/compat.md).
 */
static bool signal_is_pending(void)
{
	sigset_t set;

	if (sigpending(&set))
		return false;
	for (int sig = 1; sig < NSIG; sig++)
		if (sigismember(&set, sig) == 1)
			return true;
	return false;
}

/* Whether gfn's page (index of g) is private as the attribute mode tracks it. */
static bool dest_is_private(struct vm *vm, struct gmem *g, gfn_t gfn, pgoff_t index)
{
	if (!vm_has_private_mem(vm))
		return false;
	if (vm_attrs_in_vm(vm))
		return vm_gfn_is_private(vm, gfn);
	return attr_get(&g->attrs, index, NULL) & KVM_MEMORY_ATTRIBUTE_PRIVATE;
}

/* One page under the file's invalidate_lock, as __kvm_gmem_populate. */
static int populate_page(struct vm *vm, struct gmem *g, pgoff_t index, gfn_t gfn,
			 const void *src, gmem_populate_cb cb, void *opaque)
{
	void *dst;
	int ret;

	pthread_rwlock_wrlock(&g->invalidate_lock);
	dst = backing_addr(&g->backing, index << GM_PAGE_SHIFT);
	if (!dst)
		ret = -EOPNOTSUPP; /* no library view of the store: the kvm backend's host file */
	else if (!dest_is_private(vm, g, gfn, index))
		ret = -EINVAL;
	else
		ret = cb(g, index, gfn, dst, src, opaque);
	pthread_rwlock_unlock(&g->invalidate_lock);
	return ret;
}

long gmem_populate(struct vm *vm, gfn_t start_gfn, const void *src, long npages,
		   gmem_populate_cb cb, void *opaque)
{
	struct memslot_view s;
	unsigned char *bounce = NULL;
	long i = 0;
	int ret = 0;

	if (npages <= 0 || !GM_ALIGNED((uintptr_t)src, GM_PAGE_SIZE))
		return -EINVAL;
	if (!memslot_lookup(&vm->slots, start_gfn, &s))
		return -EINVAL;
	if (!s.has_gmem) {
		ret = -EINVAL;
		goto out;
	}
	if (!s.gmem) {
		ret = -EFAULT;
		goto out;
	}
	if ((uint64_t)npages > s.npages - (start_gfn - s.base_gfn))
		npages = (long)(s.npages - (start_gfn - s.base_gfn));
	/*
	 * The source is read before the file's lock is taken, as the kernel pins
	 * it first: a source mapped from a guest_memfd faults through that file.
	 */
	if (src) {
		bounce = gm_zalloc(GM_PAGE_SIZE);
		if (!bounce) {
			ret = -ENOMEM;
			goto out;
		}
	}
	for (i = 0; i < npages; i++) {
		gfn_t gfn = start_gfn + (gfn_t)i;

		if (signal_is_pending()) {
			ret = -EINTR;
			break;
		}
		/* A private page of a guest_memfd mapping cannot be read: EFAULT, as GUP. */
		if (src && (ret = gm_copy_from_user(bounce, (const char *)src + i * GM_PAGE_SIZE,
						    GM_PAGE_SIZE)))
			break;
		ret = populate_page(vm, s.gmem, s.pgoff + (gfn - s.base_gfn), gfn, bounce, cb, opaque);
		if (ret)
			break;
	}
	gm_free(bounce);
out:
	memslot_view_put_locked(&s);
	return ret && !i ? ret : i;
}
