/* Host mappings of guest_memfd files: real mmaps of the store, with a SIGBUS hole where the host may not look. */
#define _GNU_SOURCE
#include <sys/mman.h>
#include <unistd.h>

#include "gmem.h"

/*
 * Shared pages are mapped straight from the backing memfd. Everything else
 * (private pages, pages past the end of the file) is a mapping of an empty
 * memfd: any access is past its end, so the kernel itself raises SIGBUS,
 * as it does for the kernel's guest_memfd.
 */
struct hostmap {
	uintptr_t start, end;
	uint64_t off;           /* file offset of start */
	int prot;
	struct gmem *gmem;      /* referenced: memory belongs to the file */
	struct hostmap *next;
};

/* Protects the mapping list. Taken after a file's invalidate_lock. */
static pthread_mutex_t hostmap_lock = PTHREAD_MUTEX_INITIALIZER;
static struct hostmap *hostmaps;
static pthread_once_t hole_once = PTHREAD_ONCE_INIT;
static int hole_fd = -1;

static void hole_init(void)
{
	hole_fd = memfd_create("kvm-gmem-hole", MFD_CLOEXEC);
}

static int map_hole(uintptr_t addr, size_t len, int prot, uint64_t off)
{
	void *p = mmap((void *)addr, len, prot, MAP_SHARED | MAP_FIXED, hole_fd, (off_t)off);

	return p == MAP_FAILED ? -errno : 0;
}

#ifdef GM_TEST_HOOKS
/* Test hook: mmaps of host mappings fail from the after-th from now, times in a row. */
static atomic_long fail_countdown, fail_times;

void gm_hostmap_fail(long after, long times)
{
	atomic_store(&fail_times, times);
	atomic_store(&fail_countdown, after);
}

static bool map_should_fail(void)
{
	long n = atomic_load(&fail_countdown), left;

	while (n > 1)
		if (atomic_compare_exchange_weak(&fail_countdown, &n, n - 1))
			return false;
	if (n != 1)
		return false;
	left = atomic_fetch_sub(&fail_times, 1);
	/* After the last failure the hook is off again. */
	if (left <= 1)
		atomic_store(&fail_countdown, 0);
	return left >= 1;
}
#endif

/*
 * Lays the file's current attributes (or, hiding, the hole) over pages
 * [first, last) of one mapping. Hiding goes on past a failure: it is what
 * keeps private pages away from the host when nothing else worked.
 */
static int hostmap_apply(struct hostmap *m, pgoff_t first, pgoff_t last, bool hide)
{
	struct gmem *g = m->gmem;
	pgoff_t map_first = m->off >> GM_PAGE_SHIFT;
	pgoff_t map_last = map_first + ((m->end - m->start) >> GM_PAGE_SHIFT);
	pgoff_t idx, run_end, stop;
	int ret = 0;

	if (first < map_first)
		first = map_first;
	if (last > map_last)
		last = map_last;
	if (last > gmem_npages(g))
		last = gmem_npages(g);
	for (idx = first; idx < last; idx = stop) {
		uint64_t attrs = attr_get(&g->attrs, idx, &run_end);
		uintptr_t addr = m->start + ((idx - map_first) << GM_PAGE_SHIFT);
		size_t len;
		int err;

		stop = run_end < last ? run_end : last;
		len = (stop - idx) << GM_PAGE_SHIFT;
#ifdef GM_TEST_HOOKS
		if (map_should_fail())
			err = -ENOMEM;
		else
#endif
		if (hide || (attrs & KVM_MEMORY_ATTRIBUTE_PRIVATE))
			err = map_hole(addr, len, m->prot, idx << GM_PAGE_SHIFT);
		else
			err = backing_map_at(&g->backing, (void *)addr, len, m->prot,
					     idx << GM_PAGE_SHIFT);
		if (err && !hide)
			return err;
		if (err) {
			ret = ret ? ret : err;
			continue;
		}
		/* The kernel unmaps converted pages in forked children too; we cannot reach them. */
		madvise((void *)addr, len, MADV_DONTFORK);
	}
	return 0;
}

/* Reserves address space as mmap(2) would, with its checks and errno. */
static void *reserve(void *addr, size_t len, int prot, int flags, int64_t off, size_t align)
{
	uintptr_t base, aligned;
	void *p;

	if (align <= GM_PAGE_SIZE || (flags & MAP_FIXED) || (flags & MAP_FIXED_NOREPLACE))
		return mmap(addr, len, prot, flags, hole_fd, (off_t)off);
	/* hugetlbfs needs a huge-aligned address: over-reserve and trim. */
	p = mmap(NULL, len + align, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (p == MAP_FAILED)
		return p;
	base = (uintptr_t)p;
	aligned = (base + align - 1) & ~(uintptr_t)(align - 1);
	if (aligned > base)
		munmap(p, aligned - base);
	munmap((void *)(aligned + len), base + len + align - (aligned + len));
	return mmap((void *)aligned, len, prot, flags | MAP_FIXED, hole_fd, (off_t)off);
}

int hostmap_check_generic(void *addr, size_t len, int prot, int flags, int64_t off)
{
	bool fixed = flags & MAP_FIXED;
	void *p;

	pthread_once(&hole_once, hole_init);
	if (hole_fd < 0)
		return -ENOMEM;
	/*
	 * A throwaway mapping of the hole runs mmap(2)'s own checks. It must not
	 * replace what is at addr, so MAP_FIXED becomes a hint; NOREPLACE stays,
	 * and where it succeeds the address was free.
	 */
	p = mmap(fixed ? NULL : addr, len, prot & ~PROT_EXEC,
		 flags & ~(MAP_FIXED | MAP_POPULATE | MAP_LOCKED), hole_fd, (off_t)off);
	if (p == MAP_FAILED)
		return -errno;
	munmap(p, len);
	if (fixed && !GM_ALIGNED((uintptr_t)addr, GM_PAGE_SIZE))
		return -EINVAL;
	return 0;
}

int hostmap_create(struct gmem *g, void *addr, size_t len, int prot, int flags, int64_t off,
		   void **out)
{
	struct hostmap *m;
	void *p;
	int ret;

	pthread_once(&hole_once, hole_init);
	if (hole_fd < 0)
		return -ENOMEM;
	/*
	 * The kernel's guest_memfd lives on a noexec pseudo filesystem: after the
	 * generic checks, PROT_EXEC is refused before anything is replaced.
	 */
	if (prot & PROT_EXEC) {
		ret = hostmap_check_generic(addr, len, prot, flags, off);
		return ret ? ret : -EPERM;
	}
	m = gm_zalloc(sizeof(*m));
	if (!m)
		return -ENOMEM;
	p = reserve(addr, len, prot, flags, off, g->backing.page_size);
	if (p == MAP_FAILED) {
		ret = -errno;
		goto err_free;
	}
	/*
	 * A fixed mapping has replaced whatever was there, ours included, even if
	 * the checks below fail: the kernel, too, unmaps before asking the file.
	 */
	if (flags & MAP_FIXED)
		hostmap_forget(p, len);
	ret = gmem_mmap_check(g, len, flags, off);
	if (ret)
		goto err_unmap;

	m->start = (uintptr_t)p;
	m->end = m->start + ((len + GM_PAGE_SIZE - 1) & ~(GM_PAGE_SIZE - 1));
	m->off = (uint64_t)off;
	m->prot = prot;
	m->gmem = g;

	pthread_rwlock_rdlock(&g->invalidate_lock);
	pthread_mutex_lock(&hostmap_lock);
	ret = hostmap_apply(m, 0, (pgoff_t)-1, false);
	if (!ret) {
		gmem_get(g);
		atomic_fetch_add(&g->host_mappings, 1);
		m->next = hostmaps;
		hostmaps = m;
	}
	pthread_mutex_unlock(&hostmap_lock);
	pthread_rwlock_unlock(&g->invalidate_lock);
	if (ret)
		goto err_unmap;
	madvise(p, m->end - m->start, MADV_DONTFORK);
	*out = p;
	return 0;

err_unmap:
	munmap(p, len);
err_free:
	gm_free(m);
	return ret;
}

static void hostmap_drop(struct hostmap *m)
{
	atomic_fetch_sub(&m->gmem->host_mappings, 1);
	gmem_put(m->gmem);
	gm_free(m);
}

/*
 * Takes [start, end) out of the list, after it was unmapped or replaced.
 * Whole mappings move to *dropped; one cut in the middle uses *spare for its
 * right part (without a spare that part is no longer tracked: it stays
 * mapped but attribute changes no longer reach it).
 */
static bool forget_locked(uintptr_t start, uintptr_t end, struct hostmap **spare,
			  struct hostmap **dropped)
{
	struct hostmap **pp, *m;
	bool found = false;

	for (pp = &hostmaps; (m = *pp);) {
		if (m->end <= start || m->start >= end) {
			pp = &m->next;
			continue;
		}
		found = true;
		if (start <= m->start && end >= m->end) {
			*pp = m->next;
			m->next = *dropped;
			*dropped = m;
			continue;
		}
		if (start > m->start && end < m->end && *spare) {
			struct hostmap *right = *spare;

			*right = *m;
			right->start = end;
			right->off = m->off + (end - m->start);
			gmem_get(m->gmem);
			atomic_fetch_add(&m->gmem->host_mappings, 1);
			m->end = start;
			m->next = right;
			*spare = NULL;
			pp = &right->next;
			continue;
		}
		if (start <= m->start) {
			m->off += end - m->start;
			m->start = end;
		} else {
			m->end = start;
		}
		pp = &m->next;
	}
	return found;
}

/* Drops the dropped list; the last mapping of a file may release it, so no lock is held. */
static void drop_all(struct hostmap *dropped)
{
	while (dropped) {
		struct hostmap *m = dropped;

		dropped = m->next;
		hostmap_drop(m);
	}
}

static uintptr_t page_end(void *addr, size_t len)
{
	return (uintptr_t)addr + ((len + GM_PAGE_SIZE - 1) & ~(GM_PAGE_SIZE - 1));
}

void hostmap_forget(void *addr, size_t len)
{
	/* A mapping cut in the middle splits in two: allocate before changing anything. */
	struct hostmap *spare = gm_zalloc(sizeof(*spare)), *dropped = NULL;

	pthread_mutex_lock(&hostmap_lock);
	forget_locked((uintptr_t)addr, page_end(addr, len), &spare, &dropped);
	pthread_mutex_unlock(&hostmap_lock);
	gm_free(spare);
	drop_all(dropped);
}

int hostmap_unmap(void *addr, size_t len)
{
	struct hostmap *spare, *dropped = NULL;
	bool found;

	spare = gm_zalloc(sizeof(*spare));
	if (!spare)
		return -ENOMEM;
	pthread_mutex_lock(&hostmap_lock);
	if (munmap(addr, len) < 0) {
		int err = -errno;

		pthread_mutex_unlock(&hostmap_lock);
		gm_free(spare);
		return err;
	}
	found = forget_locked((uintptr_t)addr, page_end(addr, len), &spare, &dropped);
	pthread_mutex_unlock(&hostmap_lock);
	gm_free(spare);
	drop_all(dropped);
	return found;
}

static int hostmap_update(struct gmem *g, pgoff_t start, pgoff_t end, bool hide)
{
	struct hostmap *m;
	int ret = 0;

	pthread_mutex_lock(&hostmap_lock);
	for (m = hostmaps; m; m = m->next) {
		int err = m->gmem == g ? hostmap_apply(m, start, end, hide) : 0;

		/* Every mapping is tried: each one left behind would keep the old state. */
		ret = ret ? ret : err;
	}
	pthread_mutex_unlock(&hostmap_lock);
	return ret;
}

int hostmap_refresh(struct gmem *g, pgoff_t start, pgoff_t end)
{
	return hostmap_update(g, start, end, false);
}

int hostmap_hide(struct gmem *g, pgoff_t start, pgoff_t end)
{
	return hostmap_update(g, start, end, true);
}

void hostmap_undo(struct gmem *g, pgoff_t start, pgoff_t end)
{
	if (hostmap_refresh(g, start, end))
		hostmap_hide(g, start, end);
}
