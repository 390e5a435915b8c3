/* Host mappings of guest_memfd files: one mapping of the store each, whose faults the library answers from the attributes. */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "gmem.h"
#include "userfault.h"

#ifndef MADV_DONTNEED_LOCKED
#define MADV_DONTNEED_LOCKED 24
#endif

/*
 * As the kernel's guest_memfd has one VMA whose fault handler looks at the
 * attributes, a mapping here is one mapping of the store registered with the
 * userfaultfd: a page reaches the host's page tables only through
 * hostmap_service, which maps it if it is shared and raises SIGBUS if it is
 * private. Taking pages away is a zap of the page tables. Past the end of
 * the file the mapping is an empty memfd, where the kernel raises SIGBUS.
 * On hugetlbfs, a split folio is laid from the split store (its own mapping).
 *
 * Where the store cannot be registered (the host's guest_memfd) or there is
 * no userfaultfd, a mapping is "laid": shared runs map the store and the rest
 * maps the empty memfd, one kernel mapping per run.
 */
struct hostmap {
	uintptr_t start, end;
	uint64_t off;           /* file offset of start */
	int prot;
	bool faulting;          /* registered: pages come only through the fault handler */
	bool sealed;            /* PROT_NONE: a hide could not zap it */
	pgoff_t hidden_first;   /* laid: pages a hide took away, laid again by the next refresh */
	pgoff_t hidden_last;
	bool dead;              /* unmapped by the VMM, out of the list, freed soon */
	struct layout *layout;  /* hugetlbfs, faulting: which folios map the split store */
	struct gmem *gmem;      /* referenced: memory belongs to the file */
	struct hostmap *next;
};

/* One bit per folio of the file; the parts of a cut mapping share it, each using its own bits. */
struct layout {
	unsigned refs;          /* under hostmap_lock */
	uint64_t bits[];
};

/* A fault waiting for its file's invalidate_lock. */
struct fault {
	uintptr_t addr;
	pid_t tid;
	bool minor;
};

/*
 * Protects the mapping list, the spares and the pending faults. Taken after
 * a file's invalidate_lock; the fault reader only tries it, since a munmap
 * made under it waits for the reader.
 */
static pthread_mutex_t hostmap_lock = PTHREAD_MUTEX_INITIALIZER;
/*
 * Whether this thread holds hostmap_lock. liburcu-bp maps and remaps its own
 * memory (a thread's first read-side section grows its arena with mremap),
 * which under gmem-run reaches the interposer and so the calls below: a call
 * made while this thread holds the lock cannot be about a library mapping,
 * and must not wait for the lock.
 */
static __thread bool hostmap_lock_held;

static void hostmap_lock_take(void)
{
	pthread_mutex_lock(&hostmap_lock);
	hostmap_lock_held = true;
}

static int hostmap_lock_try(void)
{
	int ret = pthread_mutex_trylock(&hostmap_lock);

	if (!ret)
		hostmap_lock_held = true;
	return ret;
}

static void hostmap_lock_drop(void)
{
	hostmap_lock_held = false;
	pthread_mutex_unlock(&hostmap_lock);
}

/*
 * A fork while another thread holds the lock would leave it held in the child
 * for good, and every munmap there takes it. The forking thread takes it
 * across fork; the fd table's lock is never nested with it, so the order
 * pthread_atfork gives the two does not matter.
 */
static void hostmap_fork_prepare(void)
{
	hostmap_lock_take();
}

static void hostmap_fork_release(void)
{
	hostmap_lock_drop();
}

__attribute__((constructor)) static void hostmap_fork_register(void)
{
	pthread_atfork(hostmap_fork_prepare, hostmap_fork_release, hostmap_fork_release);
}

static struct hostmap *hostmaps;
static struct hostmap *spares;      /* records allocated before a call that may cut one */
static struct fault *faults;
static size_t nr_faults, faults_cap;
/* Poison markers laid on the last turn, zapped on the next. */
static struct poisoned {
	uintptr_t addr;
	size_t len;
} *poisoned;
static size_t nr_poisoned, poisoned_cap;
/* Our own mremap over [start, end): its unmap event is not the VMM's munmap. */
static uintptr_t self_start, self_end;
/* A mapping was registered once: from then on there may be events to apply. */
static bool registered;
/* Set whenever events change the list: a walk that drained must start again. */
static bool list_changed;
/* Set with the first mapping: until then no host address is the library's. */
static atomic_bool ever_mapped;
static pthread_once_t hole_once = PTHREAD_ONCE_INIT;
static int hole_fd = -1;

static void hole_init(void)
{
	hole_fd = gm_fd_hide(memfd_create("kvm-gmem-hole", MFD_CLOEXEC));
}

static int map_hole(uintptr_t addr, size_t len, int prot, uint64_t off)
{
	void *p = mmap((void *)addr, len, prot, MAP_SHARED | MAP_FIXED, hole_fd, (off_t)off);

	return p == MAP_FAILED ? -errno : 0;
}

#ifdef GM_TEST_HOOKS
/* Test hook: changes of host mappings fail from the after-th from now, times in a row. */
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
/* Test hook: runs fn(arg) holding the mapping lock, as liburcu-bp's own calls can run. */
void gm_hostmap_call_locked(void (*fn)(void *), void *arg)
{
	hostmap_lock_take();
	fn(arg);
	hostmap_lock_drop();
}
#else
static inline bool map_should_fail(void)
{
	return false;
}
#endif

static pgoff_t map_first(const struct hostmap *m)
{
	return m->off >> GM_PAGE_SHIFT;
}

static uintptr_t page_addr(const struct hostmap *m, pgoff_t idx)
{
	return m->start + ((idx - map_first(m)) << GM_PAGE_SHIFT);
}

/* Clamps [*first, *last) to the pages of the file that m maps; false when none. */
static bool clamp(const struct hostmap *m, pgoff_t *first, pgoff_t *last)
{
	pgoff_t lo = map_first(m), hi = lo + ((m->end - m->start) >> GM_PAGE_SHIFT);

	if (hi > gmem_npages(m->gmem))
		hi = gmem_npages(m->gmem);
	if (*first < lo)
		*first = lo;
	if (*last > hi)
		*last = hi;
	return *first < *last;
}

/*
 * Lays the file's current attributes (or, hiding, the hole) over pages
 * [first, last) of a laid mapping. Hiding goes on past a failure, and what it
 * cannot lay it makes inaccessible: a private page must never stay readable.
 */
static int lay(struct hostmap *m, pgoff_t first, pgoff_t last, bool hide)
{
	struct gmem *g = m->gmem;
	pgoff_t idx, run_end, stop;
	int ret = 0;

	if (!clamp(m, &first, &last))
		return 0;
	for (idx = first; idx < last; idx = stop) {
		uint64_t attrs = attr_get(&g->attrs, idx, &run_end);
		uintptr_t addr = page_addr(m, idx);
		size_t len;
		int err;

		stop = run_end < last ? run_end : last;
		len = (stop - idx) << GM_PAGE_SHIFT;
		if (map_should_fail())
			err = -ENOMEM;
		else if (hide || (attrs & KVM_MEMORY_ATTRIBUTE_PRIVATE))
			err = map_hole(addr, len, m->prot, idx << GM_PAGE_SHIFT);
		else
			err = backing_map_at(&g->backing, (void *)addr, len, m->prot,
					     idx << GM_PAGE_SHIFT);
		if (err && !hide)
			return err;
		if (err) {
			mprotect((void *)addr, len, PROT_NONE);
			ret = ret ? ret : err;
			continue;
		}
		/* The kernel unmaps converted pages in forked children too; we cannot reach them. */
		madvise((void *)addr, len, MADV_DONTFORK);
	}
	return ret;
}

/* Drops the host's page-table entries of [addr, addr + len): the next access faults to us. */
static int zap(uintptr_t addr, size_t len)
{
	if (map_should_fail())
		return -ENOMEM;
	/* mlock(2) does not keep a page that has become private. */
	if (!madvise((void *)addr, len, MADV_DONTNEED_LOCKED))
		return 0;
	if (errno == EINVAL && !madvise((void *)addr, len, MADV_DONTNEED))
		return 0;
	/* ENOMEM: part of it is unmapped already; nothing there can be read through it. */
	return errno == ENOMEM ? 0 : -errno;
}

static struct layout *layout_new(const struct gmem *g)
{
	uint64_t folios = g->size / g->backing.page_size;
	struct layout *l = gm_zalloc(sizeof(*l) + (folios + 63) / 64 * sizeof(uint64_t));

	if (l)
		l->refs = 1;
	return l;
}

static void layout_put(struct layout *l)
{
	if (l && !--l->refs)
		gm_free(l);
}

static bool laid_small(const struct hostmap *m, uint64_t off)
{
	uint64_t folio = off / m->gmem->backing.page_size;

	return m->layout && (m->layout->bits[folio / 64] & (1ULL << (folio % 64)));
}

static void set_laid_small(struct hostmap *m, uint64_t off, bool small)
{
	uint64_t folio = off / m->gmem->backing.page_size, bit = 1ULL << (folio % 64);

	if (small)
		m->layout->bits[folio / 64] |= bit;
	else
		m->layout->bits[folio / 64] &= ~bit;
}

static void hostmap_free(struct hostmap *m)
{
	layout_put(m->layout);
	gm_free(m);
}

static void hostmap_drop(struct hostmap *m)
{
	atomic_fetch_sub(&m->gmem->host_mappings, 1);
	gmem_put(m->gmem);
	hostmap_free(m);
}

/* Drops the dropped list; the last mapping of a file may release it, so no lock is held. */
static void drop_all(struct hostmap *dropped)
{
	while (dropped) {
		struct hostmap *m = dropped;

		dropped = m->next;
		if (m->gmem)
			hostmap_drop(m);
		else
			hostmap_free(m);
	}
}

/* A copy of m for its part from start on, made from a spare; NULL without one. */
static struct hostmap *cut_right(struct hostmap *m, uintptr_t start)
{
	struct hostmap *right = spares;

	if (!right)
		right = gm_zalloc(sizeof(*right));
	else
		spares = right->next;
	if (!right)
		return NULL;
	*right = *m;
	right->start = start;
	right->off = m->off + (start - m->start);
	if (m->layout)
		m->layout->refs++;
	gmem_get(m->gmem);
	atomic_fetch_add(&m->gmem->host_mappings, 1);
	m->end = start;
	m->next = right;
	return right;
}

/*
 * Takes [start, end) out of the list, after it was unmapped or replaced.
 * Whole mappings move to *dropped. A mapping cut in the middle needs a
 * record for its right part: a spare, allocated by the call that caused the
 * cut; without one, the right part is zapped and forgotten, so that it
 * faults (SIGBUS) rather than keeping pages that may become private.
 */
static void forget_locked(uintptr_t start, uintptr_t end, struct hostmap **dropped)
{
	struct hostmap **pp, *m;

	for (pp = &hostmaps; (m = *pp);) {
		if (m->end <= start || m->start >= end) {
			pp = &m->next;
			continue;
		}
		list_changed = true;
		if (start <= m->start && end >= m->end) {
			m->dead = true;
			*pp = m->next;
			m->next = *dropped;
			*dropped = m;
			continue;
		}
		if (start > m->start && end < m->end) {
			struct hostmap *right = cut_right(m, end);

			if (!right) {
				if (m->faulting)
					zap(end, m->end - end);
				else
					lay(m, (m->off + (end - m->start)) >> GM_PAGE_SHIFT,
					    (pgoff_t)-1, true);
			}
			m->end = start;
			pp = &m->next;
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
}

/* A call that pushed a spare takes one back when it is done, used by it or not. */
static void spare_put_locked(struct hostmap **dropped)
{
	struct hostmap *spare = spares;

	if (!spare)
		return;
	spares = spare->next;
	/* Freed with the dropped records, after the lock: it holds no reference. */
	spare->gmem = NULL;
	spare->next = *dropped;
	*dropped = spare;
}

/* The mapping holding addr, or NULL. */
static struct hostmap *find_locked(uintptr_t addr)
{
	for (struct hostmap *m = hostmaps; m; m = m->next)
		if (addr >= m->start && addr < m->end)
			return m;
	return NULL;
}

/*
 * An mremap moved [from, from + len) to to. A whole mapping moves with it;
 * the moved part of a larger one becomes its own mapping (or, without
 * memory for it, is zapped and forgotten: it faults with SIGBUS).
 */
static void moved_locked(uintptr_t from, uintptr_t to, size_t len, struct hostmap **dropped)
{
	struct hostmap *m = find_locked(from), *part;

	if (!m)
		return;
	list_changed = true;
	if (m->start == from && m->end == from + len) {
		m->start = to;
		m->end = to + len;
		return;
	}
	part = from > m->start ? cut_right(m, from) : m;
	if (part && part->end > from + len && !cut_right(part, from + len))
		part = NULL;
	if (!part) {
		zap(to, len);
		forget_locked(from, from + len, dropped);
		return;
	}
	part->start = to;
	part->end = to + len;
}

static bool push_fault(const struct uffd_msg *msg)
{
	if (nr_faults == faults_cap) {
		size_t cap = faults_cap ? 2 * faults_cap : 16;
		struct fault *f = realloc(faults, cap * sizeof(*f));

		if (!f)
			return false;
		faults = f;
		faults_cap = cap;
	}
	faults[nr_faults++] = (struct fault){
		.addr = (uintptr_t)msg->arg.pagefault.address,
		.tid = (pid_t)msg->arg.pagefault.feat.ptid,
		.minor = msg->arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_MINOR,
	};
	return true;
}

/*
 * Applies the events read so far to the list, in order. Every munmap and
 * mremap that has returned is among them, so no record left afterwards
 * describes memory that is no longer ours.
 */
static void drain_locked(struct hostmap **dropped)
{
	struct uffd_msg *msgs;
	size_t nr;

	/* Nothing was ever registered: no events, and no reader to start. */
	if (!registered)
		return;
	userfault_take(&msgs, &nr);
	for (size_t i = 0; i < nr; i++) {
		const struct uffd_msg *msg = &msgs[i];

		switch (msg->event) {
		case UFFD_EVENT_PAGEFAULT:
			/* Without room the thread is woken and faults again. */
			if (!push_fault(msg))
				userfault_wake((void *)(uintptr_t)msg->arg.pagefault.address,
					       GM_PAGE_SIZE);
			break;
		case UFFD_EVENT_UNMAP:
			if (msg->arg.remove.start == self_start && msg->arg.remove.end == self_end) {
				self_start = self_end = 0;
				break;
			}
			forget_locked(msg->arg.remove.start, msg->arg.remove.end, dropped);
			break;
		case UFFD_EVENT_REMAP:
			moved_locked(msg->arg.remap.from, msg->arg.remap.to, msg->arg.remap.len, dropped);
			break;
		}
	}
	free(msgs);
}

static bool push_poisoned(uintptr_t addr, size_t len)
{
	if (nr_poisoned == poisoned_cap) {
		size_t cap = poisoned_cap ? 2 * poisoned_cap : 8;
		struct poisoned *p = realloc(poisoned, cap * sizeof(*p));

		if (!p)
			return false;
		poisoned = p;
		poisoned_cap = cap;
	}
	poisoned[nr_poisoned++] = (struct poisoned){ addr, len };
	return true;
}

/* Zaps last turn's markers where they are still in a mapping of ours (records are current). */
static void unpoison_locked(void)
{
	for (size_t i = 0; i < nr_poisoned; i++)
		if (find_locked(poisoned[i].addr))
			madvise((void *)poisoned[i].addr, poisoned[i].len, MADV_DONTNEED);
	free(poisoned);
	poisoned = NULL;
	nr_poisoned = poisoned_cap = 0;
}

/*
 * A private page or a page that is not ours: the faulting thread gets the
 * kernel's SIGBUS (BUS_ADRERR at the address). Where a signal cannot do it
 * (a kernel-mode access, SIGBUS blocked or ignored), a poison marker makes
 * the kernel fail the access itself: EFAULT for a syscall, a forced SIGBUS.
 * The marker is zapped on the reader's next turn, once the woken thread has
 * met it, so that later accesses fault to us again.
 */
static void deliver_sigbus(const struct fault *f, uintptr_t page, size_t len)
{
	if (f->tid && userfault_sigbus(f->tid, (void *)f->addr)) {
		userfault_wake((void *)page, len);
		return;
	}
	if (userfault_poison((void *)page, len) || !push_poisoned(page, len))
		userfault_wake((void *)page, len);
}

/*
 * The piece a mapping shows as one page: the folio on hugetlbfs unless split,
 * else the page. A laid mapping lays a split folio from the 4 KiB store.
 */
static size_t piece_size(const struct hostmap *m, uint64_t off)
{
	const struct backing *b = &m->gmem->backing;
	bool small = m->faulting ? laid_small(m, off) : backing_is_split(b, off);

	return b->kind == GM_BACKING_HUGETLB && !small ? b->page_size : GM_PAGE_SIZE;
}

/* Maps the page at f->addr if it is shared; 0, -EAGAIN to try again later, or -errno for SIGBUS. */
static int resolve(struct hostmap *m, const struct fault *f, uintptr_t *page, size_t *len)
{
	struct gmem *g = m->gmem;
	uint64_t off = m->off + (f->addr - m->start);
	uint64_t attrs;
	int ret;

	*len = piece_size(m, off);
	off &= ~(uint64_t)(*len - 1);
	*page = m->start + (off - m->off);
	if (off >= g->size || !attr_uniform(&g->attrs, off >> GM_PAGE_SHIFT,
					    (off + *len) >> GM_PAGE_SHIFT, &attrs) ||
	    (attrs & KVM_MEMORY_ATTRIBUTE_PRIVATE))
		return -EFAULT;
	/* A hole in a shared range: the page comes into being, as on a fault in the kernel. */
	if (!f->minor) {
		ret = backing_allocate(&g->backing, off, *len);
		if (ret)
			return ret;
	}
	ret = userfault_continue((void *)*page, *len);
	/* The page was there at the fault and punched before we held the file: a hole now. */
	if (ret == -EFAULT && f->minor && !backing_allocate(&g->backing, off, *len))
		ret = userfault_continue((void *)*page, *len);
	if (ret == -EEXIST) {
		/* Another thread's fault mapped it first. */
		userfault_wake((void *)*page, *len);
		return 0;
	}
	return ret;
}

/* Serves one fault; false when its file is locked and it must wait. */
static bool serve_locked(const struct fault *f)
{
	struct hostmap *m = find_locked(f->addr);
	uintptr_t page = f->addr & ~(GM_PAGE_SIZE - 1);
	size_t len = GM_PAGE_SIZE;
	int ret = -EFAULT;

	if (m) {
		if (pthread_rwlock_tryrdlock(&m->gmem->invalidate_lock))
			return false;
		ret = resolve(m, f, &page, &len);
		pthread_rwlock_unlock(&m->gmem->invalidate_lock);
	}
	if (ret == -EAGAIN)
		return false;
	if (ret)
		deliver_sigbus(f, page, len);
	return true;
}

bool hostmap_service(void)
{
	struct hostmap *dropped = NULL;
	size_t kept = 0;
	bool waiting;

	if (hostmap_lock_try())
		return true;
	drain_locked(&dropped);
	unpoison_locked();
	for (size_t i = 0; i < nr_faults; i++)
		if (!serve_locked(&faults[i]))
			faults[kept++] = faults[i];
	nr_faults = kept;
	waiting = kept > 0 || nr_poisoned > 0;
	if (!kept) {
		/* Faults come in bursts; between them the array is metadata for nothing. */
		free(faults);
		faults = NULL;
		faults_cap = 0;
	}
	hostmap_lock_drop();
	drop_all(dropped);
	return waiting;
}

void hostmap_sync(void)
{
	struct hostmap *dropped = NULL;

	hostmap_lock_take();
	drain_locked(&dropped);
	hostmap_lock_drop();
	drop_all(dropped);
}

struct gmem *hostmap_lookup(uintptr_t addr, uint64_t *off, int *prot)
{
	struct hostmap *m, *dropped = NULL;
	struct gmem *g = NULL;

	hostmap_lock_take();
	/* Unmap and move events first: a mapping the VMM has unmapped is not found. */
	drain_locked(&dropped);
	m = find_locked(addr);
	if (m && m->off + (addr - m->start) < m->gmem->size) {
		g = m->gmem;
		gmem_get(g);
		*off = m->off + (addr - m->start);
		*prot = m->prot;
	}
	hostmap_lock_drop();
	drop_all(dropped);
	return g;
}

static void forget_replaced(void *addr, size_t len);
static uintptr_t page_end(void *addr, size_t len);

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

/*
 * Replaces folio-sized [addr, addr + len) of a faulting mapping by the store
 * fd at off, already registered: the new mapping is made and registered
 * elsewhere, then moved over the old one in one mremap, so no access ever
 * finds an unregistered mapping there.
 */
static int replace_registered(struct hostmap *m, uintptr_t addr, size_t len, int fd, uint64_t off,
			      struct hostmap **dropped)
{
	void *scratch, *p;
	int ret;

	if (map_should_fail())
		return -ENOMEM;
	scratch = mmap(NULL, len, m->prot, MAP_SHARED, fd, (off_t)off);
	if (scratch == MAP_FAILED)
		return -errno;
	madvise(scratch, len, MADV_DONTFORK);
	ret = userfault_register(scratch, len);
	if (ret) {
		munmap(scratch, len);
		return ret;
	}
	self_start = addr;
	self_end = addr + len;
	p = mremap(scratch, len, len, MREMAP_MAYMOVE | MREMAP_FIXED, (void *)addr);
	ret = p == MAP_FAILED ? -errno : 0;
	if (ret) {
		/* If the old mapping went, its unmap event must cut the record. */
		self_start = self_end = 0;
		munmap(scratch, len);
	}
	/* Records the VMM unmapped meanwhile go to *dropped, freed once the caller's walk ends. */
	drain_locked(dropped);
	return ret;
}

/* The part of m that maps the store, before any past the end of the file. */
static size_t store_len(const struct hostmap *m)
{
	uint64_t size = m->gmem->size, len = m->end - m->start;

	if (m->off >= size)
		return 0;
	return len < size - m->off ? len : size - m->off;
}

/*
 * The run of folios around off that belong on the huge store, within the
 * store part of m: laid again as one mapping, so that a file whose folios
 * all merged back is one kernel mapping again.
 */
static void huge_run(const struct hostmap *m, uint64_t off, uint64_t *lo, uint64_t *hi)
{
	const struct backing *b = &m->gmem->backing;
	uint64_t end = m->off + store_len(m);

	*lo = off;
	*hi = off + b->page_size;
	while (*lo > m->off && !backing_is_split(b, *lo - b->page_size))
		*lo -= b->page_size;
	while (*hi < end && !backing_is_split(b, *hi))
		*hi += b->page_size;
}

/*
 * Lays each folio of [first, last) from the store that holds it now
 * (hugetlbfs splits). A folio that m holds only part of (cut inside while
 * split) cannot be laid from the huge store: it keeps faulting through the
 * old one (SIGBUS) and the call says so, so that a merge can split it again.
 */
static int relay_folios(struct hostmap *m, pgoff_t first, pgoff_t last, struct hostmap **dropped)
{
	const struct backing *b = &m->gmem->backing;
	uint64_t off = (first << GM_PAGE_SHIFT) & ~(b->page_size - 1), lo, hi;
	int err = 0;

	for (; off < (last << GM_PAGE_SHIFT) && !m->dead; off += b->page_size) {
		bool split = backing_is_split(b, off);
		int ret;

		if (split == laid_small(m, off))
			continue;
		if (off < m->off || off + b->page_size > m->off + store_len(m)) {
			err = -EINVAL;
			continue;
		}
		lo = off;
		hi = off + b->page_size;
		if (!split)
			huge_run(m, off, &lo, &hi);
		ret = replace_registered(m, m->start + (lo - m->off), hi - lo,
					 split ? b->small_fd : b->fd, lo, dropped);
		if (ret)
			return ret;
		for (; lo < hi; lo += b->page_size)
			set_laid_small(m, lo, split);
	}
	return err;
}

/*
 * Takes a faulting mapping's pages away: a zap, and on hugetlbfs, when
 * refreshing, folios laid again from the store that now holds them. A zap
 * that fails while hiding leaves the whole mapping PROT_NONE (sealed) until
 * a later refresh can zap it.
 */
static int update_faulting(struct hostmap *m, pgoff_t first, pgoff_t last, bool hide,
			   struct hostmap **dropped)
{
	int ret = 0, err;

	if (m->sealed) {
		ret = zap(m->start, store_len(m));
		if (ret)
			return hide ? 0 : ret;
		if (!mprotect((void *)m->start, store_len(m), m->prot))
			m->sealed = false;
	}
	if (!clamp(m, &first, &last))
		return 0;
	if (m->layout && !hide) {
		pgoff_t folio = m->gmem->backing.page_size >> GM_PAGE_SHIFT;

		first &= ~(folio - 1);
		last = (last + folio - 1) & ~(folio - 1);
		ret = relay_folios(m, first, last, dropped);
		/* A folio that could not be laid again keeps faulting through the old store: SIGBUS. */
		if (m->dead)
			return 0;
	}
	if (!clamp(m, &first, &last))
		return ret;
	err = zap(page_addr(m, first), (last - first) << GM_PAGE_SHIFT);
	if (err && hide && !mprotect((void *)m->start, store_len(m), PROT_NONE))
		m->sealed = true;
	return err ? -ENOMEM : ret;
}

/*
 * Maps the store over the reserved [m->start, m->end) up to the end of the
 * file and registers it. PROT_NONE until registered: no access finds pages
 * that the fault handler has not seen.
 */
static int map_faulting(struct hostmap *m, struct hostmap **dropped)
{
	const struct backing *b = &m->gmem->backing;
	uint64_t len = m->end - m->start;
	void *p;
	int ret;

	if (m->off >= b->size)
		return 0;
	if (len > b->size - m->off)
		len = b->size - m->off;
	p = mmap((void *)m->start, len, PROT_NONE, MAP_SHARED | MAP_FIXED, b->fd, (off_t)m->off);
	if (p == MAP_FAILED)
		return -errno;
	/* Before it is registered: a child forked meanwhile would get it unregistered. */
	madvise(p, len, MADV_DONTFORK);
	registered = true;
	ret = userfault_register(p, len);
	if (ret)
		return ret;
	if (mprotect(p, len, m->prot))
		return -errno;
	if (m->layout)
		return relay_folios(m, m->off >> GM_PAGE_SHIFT, (m->off + len) >> GM_PAGE_SHIFT,
				    dropped);
	return 0;
}

static bool can_fault(const struct gmem *g)
{
	return g->backing.kind != GM_BACKING_HOST_GMEM && !userfault_init(hostmap_service);
}

/* The record of a new mapping, with what it may need later allocated now. */
static struct hostmap *hostmap_new(struct gmem *g, bool fixed)
{
	struct hostmap *m = gm_zalloc(sizeof(*m)), *spare = NULL;

	if (!m)
		return NULL;
	m->faulting = can_fault(g);
	if (m->faulting && g->backing.kind == GM_BACKING_HUGETLB)
		m->layout = layout_new(g);
	/* A fixed mapping may cut one of ours in two: the right part's record. */
	if (fixed)
		spare = gm_zalloc(sizeof(*spare));
	if ((m->faulting && g->backing.kind == GM_BACKING_HUGETLB && !m->layout) ||
	    (fixed && !spare)) {
		gm_free(spare);
		hostmap_free(m);
		return NULL;
	}
	if (spare) {
		hostmap_lock_take();
		spare->next = spares;
		spares = spare;
		hostmap_lock_drop();
	}
	return m;
}

static int hostmap_add(struct hostmap *m)
{
	struct hostmap *dropped = NULL;
	struct gmem *g = m->gmem;
	int ret;

	pthread_rwlock_rdlock(&g->invalidate_lock);
	hostmap_lock_take();
	ret = m->faulting ? map_faulting(m, &dropped) : lay(m, 0, (pgoff_t)-1, false);
	if (!ret) {
		gmem_get(g);
		atomic_fetch_add(&g->host_mappings, 1);
		m->next = hostmaps;
		hostmaps = m;
	}
	hostmap_lock_drop();
	pthread_rwlock_unlock(&g->invalidate_lock);
	drop_all(dropped);
	return ret;
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
	m = hostmap_new(g, flags & MAP_FIXED);
	if (!m)
		return -ENOMEM;
	atomic_store(&ever_mapped, true);
	p = reserve(addr, len, prot, flags, off, g->backing.page_size);
	ret = p == MAP_FAILED ? -errno : 0;
	/*
	 * A fixed mapping has replaced whatever was there, ours included, even if
	 * the checks below fail: the kernel, too, unmaps before asking the file.
	 */
	if (flags & MAP_FIXED)
		forget_replaced(p, len);
	if (ret)
		goto err_free;
	ret = gmem_mmap_check(g, len, flags, off);
	if (ret)
		goto err_unmap;

	m->start = (uintptr_t)p;
	m->end = m->start + ((len + GM_PAGE_SIZE - 1) & ~(GM_PAGE_SIZE - 1));
	m->off = (uint64_t)off;
	m->prot = prot;
	m->gmem = g;
	ret = hostmap_add(m);
	if (ret)
		goto err_unmap;
	madvise(p, m->end - m->start, MADV_DONTFORK);
	*out = p;
	return 0;

err_unmap:
	munmap(p, len);
err_free:
	hostmap_free(m);
	return ret;
}

static uintptr_t page_end(void *addr, size_t len)
{
	return (uintptr_t)addr + ((len + GM_PAGE_SIZE - 1) & ~(GM_PAGE_SIZE - 1));
}

void hostmap_forget(void *addr, size_t len)
{
	struct hostmap *dropped = NULL;

	if (hostmap_lock_held)
		return;
	hostmap_lock_take();
	drain_locked(&dropped);
	forget_locked((uintptr_t)addr, page_end(addr, len), &dropped);
	hostmap_lock_drop();
	drop_all(dropped);
}

/* After a fixed mapping of ours: what it replaced, and the spare it brought back. */
static void forget_replaced(void *addr, size_t len)
{
	struct hostmap *dropped = NULL;

	hostmap_lock_take();
	drain_locked(&dropped);
	if (addr != MAP_FAILED)
		forget_locked((uintptr_t)addr, page_end(addr, len), &dropped);
	spare_put_locked(&dropped);
	hostmap_lock_drop();
	drop_all(dropped);
}

/*
 * Whether munmap(2) can cut the library's mappings at start and end: not
 * inside a folio a mapping shows as one huge page. The kernel refuses such a
 * cut too, but only after splitting the mappings it met first (and telling
 * the userfaultfd about it), so the library refuses it before anything happens.
 */
static bool cuts_whole_pieces_locked(uintptr_t start, uintptr_t end)
{
	for (struct hostmap *m = hostmaps; m; m = m->next) {
		uintptr_t cut[2] = { start, end };

		for (int i = 0; i < 2; i++) {
			uint64_t off;

			if (cut[i] <= m->start || cut[i] >= m->end)
				continue;
			off = m->off + (cut[i] - m->start);
			if (off < m->gmem->backing.size && off % piece_size(m, off))
				return false;
		}
	}
	return true;
}

/*
 * Takes the lock with one spare record pushed (spare_put_locked takes it back)
 * and the pending events applied; false, with nothing taken, without memory.
 */
static bool lock_with_spare(struct hostmap **dropped)
{
	struct hostmap *spare = gm_zalloc(sizeof(*spare));

	if (!spare)
		return false;
	hostmap_lock_take();
	spare->next = spares;
	spares = spare;
	drain_locked(dropped);
	return true;
}

int hostmap_unmap(void *addr, size_t len)
{
	struct hostmap *dropped = NULL;
	uintptr_t start = (uintptr_t)addr, end = page_end(addr, len);
	bool found = false;
	int err = 0;

	if (hostmap_lock_held)
		return munmap(addr, len) < 0 ? -errno : 0;
	/*
	 * Memory none of our records touches (a stale record touches, so it takes
	 * the slow path): the plain munmap, without a spare or a drain. Under the
	 * interposer this is every munmap of the program's own memory.
	 */
	hostmap_lock_take();
	for (struct hostmap *m = hostmaps; m && !found; m = m->next)
		found = m->start < end && start < m->end;
	if (!found) {
		err = munmap(addr, len) < 0 ? -errno : 0;
		hostmap_lock_drop();
		return err;
	}
	hostmap_lock_drop();
	found = false;
	/* A mapping cut in the middle splits in two: allocate before changing anything. */
	if (!lock_with_spare(&dropped))
		return -ENOMEM;
	/* The reader does not need this lock to read the unmap event that munmap waits for. */
	if (!cuts_whole_pieces_locked(start, end))
		err = -EINVAL;
	else if (munmap(addr, len) < 0)
		err = -errno;
	if (err) {
		spare_put_locked(&dropped);
		hostmap_lock_drop();
		drop_all(dropped);
		return err;
	}
	for (struct hostmap *m = hostmaps; m; m = m->next)
		found |= m->start < end && start < m->end;
	drain_locked(&dropped);
	forget_locked(start, end, &dropped);
	spare_put_locked(&dropped);
	hostmap_lock_drop();
	drop_all(dropped);
	return found;
}

/* notifiers_lock guards the list of notifiers; readers call them, under hostmap_lock. */
static pthread_rwlock_t notifiers_lock = PTHREAD_RWLOCK_INITIALIZER;
static struct hva_notifier *notifiers;

void hva_notifier_register(struct hva_notifier *n)
{
	pthread_rwlock_wrlock(&notifiers_lock);
	n->next = notifiers;
	notifiers = n;
	pthread_rwlock_unlock(&notifiers_lock);
}

void hva_notifier_unregister(struct hva_notifier *n)
{
	pthread_rwlock_wrlock(&notifiers_lock);
	for (struct hva_notifier **pp = &notifiers; *pp; pp = &(*pp)->next) {
		if (*pp == n) {
			*pp = n->next;
			break;
		}
	}
	pthread_rwlock_unlock(&notifiers_lock);
}

/*
 * Lays pages [first, last) of a laid mapping, or hides them. The next
 * refresh, of whichever range, lays the hidden pages too: a conversion
 * undone by a hide gives them back at the file's next conversion. The two
 * ranges are laid apart, the refresh's first: the pages between need
 * nothing, and at vm.max_map_count a span over both would cut mappings
 * that the refresh alone replaces whole (or merges away).
 */
static int update_laid(struct hostmap *m, pgoff_t first, pgoff_t last, bool hide)
{
	int ret;

	if (hide) {
		if (!clamp(m, &first, &last))
			return 0;
		if (m->hidden_first == m->hidden_last || first < m->hidden_first)
			m->hidden_first = first;
		if (m->hidden_first == m->hidden_last || last > m->hidden_last)
			m->hidden_last = last;
		return lay(m, first, last, true);
	}
	ret = lay(m, first, last, false);
	if (ret || m->hidden_first == m->hidden_last)
		return ret;
	ret = lay(m, m->hidden_first, m->hidden_last, false);
	if (!ret)
		m->hidden_first = m->hidden_last = 0;
	return ret;
}

/* Applies the file's attributes (or hides) over [start, end) of one mapping, notifiers around it. */
static int update_one(struct hostmap *m, pgoff_t start, pgoff_t end, bool hide,
		      struct hostmap **dropped)
{
	/* The whole mapping: on hugetlbfs an update reaches past [start, end) to whole folios. */
	uintptr_t va_start = m->start, va_end = m->end;
	pgoff_t first = start, last = end;
	struct hva_notifier *n;
	int err;

	if (!clamp(m, &first, &last) && !m->sealed && m->hidden_first == m->hidden_last)
		return 0;
	pthread_rwlock_rdlock(&notifiers_lock);
	for (n = notifiers; n; n = n->next)
		n->invalidate_begin(n, va_start, va_end);
	err = m->faulting ? update_faulting(m, start, end, hide, dropped)
			  : update_laid(m, start, end, hide);
	for (n = notifiers; n; n = n->next)
		n->invalidate_end(n, va_start, va_end);
	pthread_rwlock_unlock(&notifiers_lock);
	return err;
}

static int hostmap_update(struct gmem *g, pgoff_t start, pgoff_t end, bool hide)
{
	struct hostmap *m, *dropped = NULL;
	int ret = 0;

	hostmap_lock_take();
	/* Records of mappings the VMM has unmapped go first: nothing is written through them. */
	drain_locked(&dropped);
restart:
	list_changed = false;
	for (m = hostmaps; m; m = m->next) {
		int err = 0;

		if (m->gmem == g)
			err = update_one(m, start, end, hide, &dropped);
		/* Every mapping is tried: each one left behind would keep the old state. */
		ret = ret ? ret : err;
		/* Our own mremap let events in; redoing a mapping is harmless, walking a freed one is not. */
		if (list_changed)
			goto restart;
	}
	hostmap_lock_drop();
	drop_all(dropped);
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

/* Whether m holds part of pages [first, last) but not all of them. */
static bool holds_part(const struct hostmap *m, pgoff_t first, pgoff_t last)
{
	pgoff_t lo = first, hi = last;

	return clamp(m, &lo, &hi) && (lo != first || hi != last);
}

bool hostmap_cut_inside(struct gmem *g, pgoff_t start, pgoff_t end)
{
	struct hostmap *dropped = NULL;
	bool cut = false;

	hostmap_lock_take();
	/* Every munmap that has returned is among the events: the records are current. */
	drain_locked(&dropped);
	for (struct hostmap *m = hostmaps; m && !cut; m = m->next)
		cut = m->gmem == g && holds_part(m, start, end);
	hostmap_lock_drop();
	drop_all(dropped);
	return cut;
}

int hostmap_undo(struct gmem *g, pgoff_t start, pgoff_t end)
{
	if (!hostmap_refresh(g, start, end))
		return 0;
	return hostmap_hide(g, start, end);
}

int hostmap_grow(void *old, size_t old_size, size_t new_size, int flags, void *new_addr,
		 void **out)
{
	uintptr_t start = (uintptr_t)old, end = page_end(old, old_size ? old_size : 1);
	struct hostmap *m, *dropped = NULL;
	bool found = false;
	int ret = 0;
	void *p;

	if (hostmap_lock_held)
		return 0;
	hostmap_lock_take();
	drain_locked(&dropped);
	for (m = hostmaps; m; m = m->next)
		found |= m->start < end && start < m->end;
	m = find_locked(start);
	/*
	 * Only a whole mapping whose pages all come through the fault handler can
	 * grow: its new pages fault to us like the rest (the VMA keeps its
	 * registration). A laid mapping, a split hugetlbfs layout or a part of a
	 * mapping would show pages the library does not control.
	 */
	if (!found)
		ret = 0;
	else if (!old_size || !m || m->start != start || m->end != end || !m->faulting ||
		 m->layout || m->sealed || (flags & MREMAP_DONTUNMAP))
		ret = -EINVAL;
	else if ((p = mremap(old, old_size, new_size, flags, new_addr)) == MAP_FAILED)
		ret = -errno;
	else {
		/* A move has been read by now (mremap waits for it): the record is at p. */
		drain_locked(&dropped);
		m = find_locked((uintptr_t)p);
		if (m && m->start == (uintptr_t)p)
			m->end = page_end(p, new_size);
		list_changed = true;
		*out = p;
		ret = 1;
	}
	hostmap_lock_drop();
	drop_all(dropped);
	return ret;
}

int hostmap_move(void *old, size_t old_size, size_t new_size, int flags, void *new_addr,
		 void **out)
{
	uintptr_t start = (uintptr_t)old;
	size_t keep = page_end(old, new_size) - start, had = page_end(old, old_size) - start;
	struct hostmap *dropped = NULL;
	void *p;
	int ret = 1;

	if (hostmap_lock_held)
		return 0;
	/* Moving part of a mapping cuts it: allocate before changing anything. */
	if (!lock_with_spare(&dropped))
		return -ENOMEM;
	/* Under the lock: no conversion lays the file at the old address meanwhile. */
	p = mremap(old, old_size, new_size, flags, new_addr);
	if (p == MAP_FAILED) {
		ret = -errno;
	} else {
		if (keep < had)
			forget_locked(start + keep, start + had, &dropped);
		if ((uintptr_t)p != start)
			moved_locked(start, (uintptr_t)p, keep, &dropped);
		list_changed = true;
		*out = p;
	}
	spare_put_locked(&dropped);
	hostmap_lock_drop();
	drop_all(dropped);
	return ret;
}

bool hostmap_exists(void)
{
	return atomic_load_explicit(&ever_mapped, memory_order_relaxed);
}

static int piece_cmp(const void *a, const void *b)
{
	const struct hostmap_piece *x = a, *y = b;

	return x->start < y->start ? -1 : x->start > y->start;
}

int hostmap_pieces(void *addr, size_t len, struct hostmap_piece **out)
{
	uintptr_t start = (uintptr_t)addr, end = page_end(addr, len);
	struct hostmap *dropped = NULL;
	struct hostmap_piece *pieces = NULL;
	size_t n = 0, cap = 0;
	int ret = 0;

	*out = NULL;
	if (!hostmap_exists() || hostmap_lock_held)
		return 0;
	hostmap_lock_take();
	drain_locked(&dropped);
	for (struct hostmap *m = hostmaps; m; m = m->next) {
		if (m->end <= start || end <= m->start)
			continue;
		if (n == cap) {
			struct hostmap_piece *more;

			cap = cap ? 2 * cap : 4;
			more = gm_zalloc(cap * sizeof(*more));
			if (!more) {
				ret = -ENOMEM;
				break;
			}
			if (n)
				memcpy(more, pieces, n * sizeof(*more));
			gm_free(pieces);
			pieces = more;
		}
		pieces[n].start = m->start > start ? m->start : start;
		pieces[n].end = m->end < end ? m->end : end;
		pieces[n].off = m->off + (pieces[n].start - m->start);
		pieces[n].laid = !m->faulting;
		pieces[n].gmem = m->gmem;
		gmem_get(m->gmem);
		n++;
	}
	hostmap_lock_drop();
	drop_all(dropped);
	if (ret) {
		hostmap_pieces_put(pieces, n);
		return ret;
	}
	if (n > 1)
		qsort(pieces, n, sizeof(*pieces), piece_cmp);
	*out = pieces;
	return (int)n;
}

void hostmap_pieces_put(struct hostmap_piece *pieces, int n)
{
	for (int i = 0; i < n; i++)
		gmem_put(pieces[i].gmem);
	gm_free(pieces);
}
