/* The memory behind a guest_memfd: a memfd, on hugetlbfs for huge folios when it can be. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/memfd.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "backing.h"
#include "kvm/host.h"

/* Inaccessible space on either side of a pin's mapping, so a device's overrun reaches nothing. */
#define PIN_GUARD GM_PAGE_SIZE

/*
 * Guest memory the library maps for itself must not reach a forked child,
 * which the library cannot take converted pages away from, nor a core dump.
 */
/*
 * Sizes a store and seals the size: the fd is in /proc/self/fd, and a plain
 * ftruncate of it would make every later access of the library's fault.
 */
static int size_and_seal(int fd, uint64_t size)
{
	if (ftruncate(fd, (off_t)size) < 0 ||
	    fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0)
		return -errno;
	return 0;
}

static int keep_from_children_and_dumps(void *addr, size_t len)
{
	if (madvise(addr, len, MADV_DONTFORK) < 0 || madvise(addr, len, MADV_DONTDUMP) < 0)
		return -errno;
	return 0;
}

static int backing_open(struct backing *b, uint64_t size, unsigned huge_shift)
{
	unsigned flags = MFD_CLOEXEC | MFD_ALLOW_SEALING;
	int fd;

	if (huge_shift)
		flags |= MFD_HUGETLB | (huge_shift << MFD_HUGE_SHIFT);
	fd = gm_fd_hide(memfd_create("kvm-gmem-backing", flags));
	if (fd < 0)
		return -errno;
	if (size_and_seal(fd, size) < 0)
		goto err_close;
	/*
	 * The library's own view of the store. On hugetlbfs the mapping reserves
	 * every huge page now, so a file that cannot be backed fails here rather
	 * than with SIGBUS at first touch.
	 */
	b->map = mmap(NULL, size, PROT_READ | PROT_WRITE,
		      MAP_SHARED | (huge_shift ? 0 : MAP_NORESERVE), fd, 0);
	if (b->map == MAP_FAILED)
		goto err_close;
	if (keep_from_children_and_dumps(b->map, size) < 0) {
		int err = -errno;

		munmap(b->map, size);
		close(fd);
		return err;
	}
	b->fd = fd;
	b->size = size;
	b->kind = huge_shift ? GM_BACKING_HUGETLB : GM_BACKING_MEMFD;
	b->page_size = 1ULL << (huge_shift ? huge_shift : GM_PAGE_SHIFT);
	b->small_fd = -1;
	b->small_map = NULL;
	b->split = NULL;
	b->nr_split = 0;
	if (huge_shift) {
		b->split = gm_zalloc(((size >> huge_shift) + 63) / 64 * sizeof(uint64_t));
		if (!b->split) {
			munmap(b->map, size);
			close(fd);
			return -ENOMEM;
		}
	}
	return 0;

err_close: {
	int err = -errno;

	close(fd);
	return err;
	}
}

int backing_init(struct backing *b, uint64_t size, unsigned folio_shift)
{
	/* Huge folios on hugetlbfs when pages are reserved, a plain memfd otherwise. */
	if (folio_shift > GM_PAGE_SHIFT && backing_open(b, size, folio_shift) == 0)
		return 0;
	return backing_open(b, size, 0);
}

int backing_init_host(struct backing *b, int host_vm_fd, uint64_t size, bool with_view)
{
	int fd = host_gmem_create(host_vm_fd, size);

	if (fd < 0)
		return fd;
	b->map = NULL;
	b->small_fd = -1;
	b->small_map = NULL;
	b->split = NULL;
	b->nr_split = 0;
	if (with_view) {
		b->map = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, fd, 0);
		if (b->map == MAP_FAILED) {
			int err = -errno;

			close(fd);
			return err;
		}
		/* Only the host's KVM reads through it: no core dumps, no children. */
		if (keep_from_children_and_dumps(b->map, size) < 0) {
			int err = -errno;

			munmap(b->map, size);
			close(fd);
			return err;
		}
	}
	b->fd = fd;
	b->size = size;
	b->kind = GM_BACKING_HOST_GMEM;
	b->page_size = GM_PAGE_SIZE;
	return 0;
}

void backing_destroy(struct backing *b)
{
	if (b->small_map) {
		munmap(b->small_map, b->size);
		close(b->small_fd);
	}
	gm_free(b->split);
	if (b->map)
		munmap(b->map, b->size);
	close(b->fd);
	b->fd = -1;
}

/*
 * Where the piece of [at, end) that one store holds ends: the end of at's
 * folio where folios can be split (a range may start inside one), else end.
 */
static uint64_t piece_end(const struct backing *b, uint64_t at, uint64_t end)
{
	uint64_t folio_end;

	if (!b->split)
		return end;
	folio_end = at - at % b->page_size + b->page_size;
	return folio_end < end ? folio_end : end;
}

/* Calls fn on each piece of [off, off + len) that one folio holds, with the fd of its store. */
static int for_each_store(const struct backing *b, uint64_t off, uint64_t len,
			  int (*fn)(const struct backing *b, int fd, uint64_t off, uint64_t len))
{
	for (uint64_t at = off, next; at < off + len; at = next) {
		int ret;

		next = piece_end(b, at, off + len);
		ret = fn(b, backing_is_split(b, at) ? b->small_fd : b->fd, at, next - at);
		if (ret)
			return ret;
	}
	return 0;
}

static int allocate_in(const struct backing *b, int fd, uint64_t off, uint64_t len)
{
	(void)b;
	return fallocate(fd, FALLOC_FL_KEEP_SIZE, (off_t)off, (off_t)len) < 0 ? -errno : 0;
}

int backing_allocate(struct backing *b, uint64_t off, uint64_t len)
{
	return for_each_store(b, off, len, allocate_in);
}

/*
 * hugetlbfs hands a punched range's reservation back to the pool with its
 * pages. A new shared mapping reserves the range for the file again (the
 * reservation belongs to the file, so it outlives the mapping): the file
 * keeps its full size reserved from creation to release, as the HugeTLB
 * guest_memfd series does, and a later touch cannot SIGBUS because others
 * took the pool. If the pool is already empty there is nothing to retake;
 * the punch itself has still succeeded.
 */
static void backing_rereserve(struct backing *b, uint64_t off, uint64_t len)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, b->fd, (off_t)off);

	if (p != MAP_FAILED)
		munmap(p, len);
}

static int punch_in(const struct backing *b, int fd, uint64_t off, uint64_t len)
{
	/* Frees the pages and zaps them from every mapping, ours and the host's. */
	if (fallocate(fd, FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE, (off_t)off, (off_t)len) < 0)
		return -errno;
	if (fd == b->fd && b->kind == GM_BACKING_HUGETLB)
		backing_rereserve((struct backing *)b, off, len);
	return 0;
}

int backing_punch(struct backing *b, uint64_t off, uint64_t len)
{
	if (off >= b->size)
		return 0;
	if (len > b->size - off)
		len = b->size - off;
	/* A split folio stays split: its pages may still differ in kind. */
	return for_each_store(b, off, len, punch_in);
}

uint64_t backing_allocated_bytes(const struct backing *b)
{
	struct stat st;
	uint64_t bytes = 0;

	if (fstat(b->fd, &st) == 0)
		bytes += (uint64_t)st.st_blocks * 512;
	if (b->small_fd >= 0 && fstat(b->small_fd, &st) == 0)
		bytes += (uint64_t)st.st_blocks * 512;
	return bytes;
}

static int map_in(const struct backing *b, int fd, uint64_t off, uint64_t len, char *addr, int prot)
{
	void *p;

	/* hugetlbfs would round a partial huge page up and clobber what follows. */
	if (fd == b->fd && b->kind == GM_BACKING_HUGETLB &&
	    (!GM_ALIGNED(off, b->page_size) || !GM_ALIGNED(len, b->page_size)))
		return -EINVAL;
	p = mmap(addr, len, prot, MAP_SHARED | MAP_FIXED, fd, (off_t)off);
	return p == MAP_FAILED ? -errno : 0;
}

int backing_map_at(const struct backing *b, void *addr, size_t len, int prot, uint64_t off)
{
	for (uint64_t at = off, next; at < off + len; at = next) {
		int ret;

		next = piece_end(b, at, off + len);
		ret = map_in(b, backing_is_split(b, at) ? b->small_fd : b->fd, at, next - at,
			     (void *)((uintptr_t)addr + (at - off)), prot);
		if (ret)
			return ret;
	}
	return 0;
}

bool backing_is_split(const struct backing *b, uint64_t off)
{
	uint64_t folio;

	if (!b->split)
		return false;
	folio = off / b->page_size;
	return b->split[folio / 64] & (1ULL << (folio % 64));
}

void *backing_addr(const struct backing *b, uint64_t off)
{
	if (backing_is_split(b, off))
		return (char *)b->small_map + off;
	return b->map ? (char *)b->map + off : NULL;
}

int backing_split_prepare(struct backing *b, uint64_t off)
{
	off &= ~(b->page_size - 1);
	if (b->small_fd < 0) {
		int fd = gm_fd_hide(memfd_create("kvm-gmem-split", MFD_CLOEXEC | MFD_ALLOW_SEALING));

		if (fd < 0)
			return -errno;
		if (size_and_seal(fd, b->size) < 0) {
			close(fd);
			return -ENOMEM;
		}
		b->small_map = mmap(NULL, b->size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE,
				    fd, 0);
		if (b->small_map == MAP_FAILED) {
			b->small_map = NULL;
			close(fd);
			return -ENOMEM;
		}
		if (keep_from_children_and_dumps(b->small_map, b->size) < 0) {
			munmap(b->small_map, b->size);
			b->small_map = NULL;
			close(fd);
			return -ENOMEM;
		}
		b->small_fd = fd;
	}
	/* The 4 KiB pages the folio's contents will move to. */
	if (fallocate(b->small_fd, FALLOC_FL_KEEP_SIZE, (off_t)off, (off_t)b->page_size) < 0)
		return -errno;
	return 0;
}

static void set_split(struct backing *b, uint64_t off, bool split)
{
	uint64_t folio = off / b->page_size;

	if (split) {
		b->split[folio / 64] |= 1ULL << (folio % 64);
		b->nr_split++;
	} else {
		b->split[folio / 64] &= ~(1ULL << (folio % 64));
		b->nr_split--;
	}
}

void backing_split(struct backing *b, uint64_t off)
{
	off &= ~(b->page_size - 1);
	memcpy((char *)b->small_map + off, (char *)b->map + off, b->page_size);
	set_split(b, off, true);
	punch_in(b, b->fd, off, b->page_size);
}

int backing_merge(struct backing *b, uint64_t off)
{
	off &= ~(b->page_size - 1);
	if (fallocate(b->fd, FALLOC_FL_KEEP_SIZE, (off_t)off, (off_t)b->page_size) < 0)
		return -errno;
	memcpy((char *)b->map + off, (char *)b->small_map + off, b->page_size);
	set_split(b, off, false);
	punch_in(b, b->small_fd, off, b->page_size);
	return 0;
}

/*
 * The store range a pin maps: its own pages, widened to whole huge pages on
 * hugetlbfs, which cannot map less (an unsplit folio is all of one kind).
 */
static void pin_bounds(const struct backing *b, uint64_t off, uint64_t len, uint64_t *lo,
		       uint64_t *hi)
{
	uint64_t unit = b->kind == GM_BACKING_HUGETLB ? b->page_size : GM_PAGE_SIZE;

	*lo = off - off % unit;
	*hi = off + len + (unit - (off + len) % unit) % unit;
}

/* Inaccessible address space: the span, a guard on each side, the span aligned to align. */
static char *reserve_guarded(uint64_t span, uint64_t align)
{
	uint64_t total = span + 2 * PIN_GUARD + align;
	char *p = mmap(NULL, total, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	uintptr_t body, start, end;

	if (p == MAP_FAILED)
		return NULL;
	body = ((uintptr_t)p + PIN_GUARD + align - 1) & ~(uintptr_t)(align - 1);
	start = body - PIN_GUARD;
	end = body + span + PIN_GUARD;
	if (start > (uintptr_t)p)
		munmap(p, start - (uintptr_t)p);
	if ((uintptr_t)p + total > end)
		munmap((void *)end, (uintptr_t)p + total - end);
	return (char *)body;
}

/* Lays the pinned pages of [lo, hi) at body: a split folio's pieces only as far as pinned. */
static int map_pin_pieces(const struct backing *b, char *body, uint64_t lo, uint64_t hi,
			  uint64_t off, uint64_t len)
{
	for (uint64_t at = lo, next; at < hi; at = next) {
		uint64_t from = at, to;
		int ret;

		next = piece_end(b, at, hi);
		to = next;
		if (backing_is_split(b, at)) {
			/* 4 KiB pages: the folio's other pages may be private. */
			from = at > off ? at : off;
			to = next < off + len ? next : off + len;
			if (from >= to)
				continue;
		}
		ret = map_in(b, backing_is_split(b, at) ? b->small_fd : b->fd, from, to - from,
			     body + (from - lo), PROT_READ | PROT_WRITE);
		if (ret)
			return ret;
	}
	return 0;
}

int backing_map_pin(const struct backing *b, uint64_t off, uint64_t len, void **addr)
{
	uint64_t lo, hi, align = b->kind == GM_BACKING_HUGETLB ? b->page_size : GM_PAGE_SIZE;
	char *body;
	int ret;

	pin_bounds(b, off, len, &lo, &hi);
	body = reserve_guarded(hi - lo, align);
	if (!body)
		return -ENOMEM;
	ret = map_pin_pieces(b, body, lo, hi, off, len);
	if (!ret)
		ret = keep_from_children_and_dumps(body - PIN_GUARD, hi - lo + 2 * PIN_GUARD);
	if (ret) {
		munmap(body - PIN_GUARD, hi - lo + 2 * PIN_GUARD);
		return ret;
	}
	*addr = body + (off - lo);
	return 0;
}

void backing_unmap_pin(const struct backing *b, void *addr, uint64_t off, uint64_t len)
{
	uint64_t lo, hi;

	pin_bounds(b, off, len, &lo, &hi);
	munmap((char *)addr - (off - lo) - PIN_GUARD, hi - lo + 2 * PIN_GUARD);
}
