/* libgmem public API: the kernel-compatible surface and the library's own calls. */
#ifndef GMEM_GMEM_H
#define GMEM_GMEM_H

#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>

#include <gmem/kvm.h>

#ifdef __cplusplus
extern "C" {
#endif

/*
 * The kernel-compatible surface. Each call acts on a libgmem fd exactly as the
 * Linux syscall acts on the kernel's fd (same arguments, return value, errno).
 * On any other fd it is the plain syscall.
 */
int gm_open_kvm(void);
int gm_ioctl(int fd, unsigned long request, ...);
void *gm_mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off);
int gm_munmap(void *addr, size_t len);
int gm_fallocate(int fd, int mode, off_t off, off_t len);
int gm_fstat(int fd, struct stat *st);
ssize_t gm_read(int fd, void *buf, size_t n);
ssize_t gm_write(int fd, const void *buf, size_t n);
ssize_t gm_pread(int fd, void *buf, size_t n, off_t off);
off_t gm_lseek(int fd, off_t off, int whence);
int gm_ftruncate(int fd, off_t len);
int gm_close(int fd);

/*
 * Folio size of a guest_memfd, a libgmem extension carried in the flags of
 * KVM_CREATE_GUEST_MEMFD: log2 of the size in bits 58..63, zero meaning 4 KiB
 * (the encoding of the HugeTLB guest_memfd RFC). Size and fallocate ranges
 * must then be multiples of the folio size.
 */
#define GM_GUEST_MEMFD_FOLIO_SHIFT 58
#define GM_GUEST_MEMFD_FOLIO_MASK  (0x3fULL << GM_GUEST_MEMFD_FOLIO_SHIFT)
#define GM_GUEST_MEMFD_FOLIO_4K    0ULL
#define GM_GUEST_MEMFD_FOLIO_2M    (21ULL << GM_GUEST_MEMFD_FOLIO_SHIFT)
#define GM_GUEST_MEMFD_FOLIO_1G    (30ULL << GM_GUEST_MEMFD_FOLIO_SHIFT)

/* The library's own calls return 0 or a negative errno; they never set errno. */

enum gm_backing_kind {
	GM_BACKING_MEMFD = 1,   /* plain memfd (shmem), 4 KiB host pages */
	GM_BACKING_HUGETLB = 2, /* memfd on hugetlbfs, pages of the folio size */
};

struct gm_gmem_info {
	uint64_t size;            /* file size in bytes */
	uint64_t flags;           /* creation flags, folio bits included */
	uint64_t folio_size;      /* 4 KiB, 2 MiB or 1 GiB */
	uint64_t allocated_bytes; /* backing memory the file holds now */
	uint64_t shared_bytes;    /* bytes whose attribute is shared */
	uint32_t backing;         /* enum gm_backing_kind */
	uint32_t host_mappings;   /* live gm_mmap mappings of the file */
};

/* Facts about one guest_memfd fd. */
int gm_gmem_info(int fd, struct gm_gmem_info *info);

struct gm_stats {
	uint64_t metadata_bytes; /* heap bytes the library holds for its objects */
	uint64_t gmem_files;     /* live guest_memfd files */
	uint64_t vms;            /* live VMs */
	uint64_t open_fds;       /* library fds open now */
};

/* Process-wide statistics of the library. */
int gm_stats(struct gm_stats *stats);

#ifdef __cplusplus
}
#endif

#endif
