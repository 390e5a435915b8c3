/* The memory behind a guest_memfd: a memfd, on hugetlbfs for huge folios when it can be. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/memfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include "backing.h"
#include "kvm/host.h"

static int backing_open(struct backing *b, uint64_t size, unsigned huge_shift)
{
	unsigned flags = MFD_CLOEXEC;
	int fd;

	if (huge_shift)
		flags |= MFD_HUGETLB | (huge_shift << MFD_HUGE_SHIFT);
	fd = memfd_create("kvm-gmem-backing", flags);
	if (fd < 0)
		return -errno;
	if (ftruncate(fd, (off_t)size) < 0)
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
	b->fd = fd;
	b->size = size;
	b->kind = huge_shift ? GM_BACKING_HUGETLB : GM_BACKING_MEMFD;
	b->page_size = 1ULL << (huge_shift ? huge_shift : GM_PAGE_SHIFT);
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
	if (with_view) {
		b->map = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, fd, 0);
		if (b->map == MAP_FAILED) {
			int err = -errno;

			close(fd);
			return err;
		}
		/* Only the host's KVM reads through it: no core dumps, no children. */
		madvise(b->map, size, MADV_DONTDUMP);
		madvise(b->map, size, MADV_DONTFORK);
	}
	b->fd = fd;
	b->size = size;
	b->kind = GM_BACKING_HOST_GMEM;
	b->page_size = GM_PAGE_SIZE;
	return 0;
}

void backing_destroy(struct backing *b)
{
	if (b->map)
		munmap(b->map, b->size);
	close(b->fd);
	b->fd = -1;
}

int backing_allocate(struct backing *b, uint64_t off, uint64_t len)
{
	if (fallocate(b->fd, FALLOC_FL_KEEP_SIZE, (off_t)off, (off_t)len) < 0)
		return -errno;
	return 0;
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

int backing_punch(struct backing *b, uint64_t off, uint64_t len)
{
	if (off >= b->size)
		return 0;
	if (len > b->size - off)
		len = b->size - off;
	/* Frees the pages and zaps them from every mapping, ours and the host's. */
	if (fallocate(b->fd, FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE, (off_t)off, (off_t)len) < 0)
		return -errno;
	if (b->kind == GM_BACKING_HUGETLB)
		backing_rereserve(b, off, len);
	return 0;
}

uint64_t backing_allocated_bytes(const struct backing *b)
{
	struct stat st;

	if (fstat(b->fd, &st) < 0)
		return 0;
	return (uint64_t)st.st_blocks * 512;
}

int backing_map_at(const struct backing *b, void *addr, size_t len, int prot, uint64_t off)
{
	void *p = mmap(addr, len, prot, MAP_SHARED | MAP_FIXED, b->fd, (off_t)off);

	return p == MAP_FAILED ? -errno : 0;
}
