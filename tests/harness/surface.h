/* One source, two targets: the conformance tests call sys_*, which is libgmem or the kernel. */
#ifndef TESTS_HARNESS_SURFACE_H
#define TESTS_HARNESS_SURFACE_H

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <criterion/parameterized.h>

/* Both builds use libgmem's UAPI header: the system's <linux/kvm.h> predates guest_memfd. */
#include <gmem/kvm.h>

#ifdef GM_TARGET_KERNEL
#define TARGET_NAME "kernel"
#define TARGET_IS_KERNEL 1
static inline int sys_open_kvm(void) { return open("/dev/kvm", O_RDWR); }
#define sys_ioctl ioctl
#define sys_mmap mmap
#define sys_munmap munmap
#define sys_fallocate fallocate
#define sys_fstat fstat
#define sys_read read
#define sys_write write
#define sys_pread pread
#define sys_lseek lseek
#define sys_ftruncate ftruncate
#define sys_close close
#define sys_pwrite pwrite
#define sys_readv readv
#define sys_writev writev
#define sys_preadv preadv
#define sys_pwritev pwritev
#define sys_madvise madvise
#define sys_mprotect mprotect
#define sys_mremap mremap
#define sys_dup dup
#define sys_dup2 dup2
#define sys_dup3 dup3
#define sys_fcntl fcntl
#define sys_statx statx
#else
#include <gmem/gmem.h>
#define TARGET_NAME "libgmem"
#define TARGET_IS_KERNEL 0
#define sys_open_kvm gm_open_kvm
#define sys_ioctl gm_ioctl
#define sys_mmap gm_mmap
#define sys_munmap gm_munmap
#define sys_fallocate gm_fallocate
#define sys_fstat gm_fstat
#define sys_read gm_read
#define sys_write gm_write
#define sys_pread gm_pread
#define sys_lseek gm_lseek
#define sys_ftruncate gm_ftruncate
#define sys_close gm_close
#define sys_pwrite gm_pwrite
#define sys_readv gm_readv
#define sys_writev gm_writev
#define sys_preadv gm_preadv
#define sys_pwritev gm_pwritev
#define sys_madvise gm_madvise
#define sys_mprotect gm_mprotect
#define sys_mremap gm_mremap
#define sys_dup gm_dup
#define sys_dup2 gm_dup2
#define sys_dup3 gm_dup3
#define sys_fcntl gm_fcntl
#define sys_statx gm_statx
#endif

#ifndef GM_GUEST_MEMFD_FOLIO_SHIFT
/* The folio-size flag is libgmem's; the kernel build still names it to skip it. */
#define GM_GUEST_MEMFD_FOLIO_SHIFT 58
#define GM_GUEST_MEMFD_FOLIO_MASK (0x3fULL << 58)
#define GM_GUEST_MEMFD_FOLIO_4K 0ULL
#define GM_GUEST_MEMFD_FOLIO_2M (21ULL << 58)
#define GM_GUEST_MEMFD_FOLIO_1G (30ULL << 58)
#endif

#define PAGE_SIZE 4096ULL
#define SZ_2M (2ULL << 20)
#define SZ_1G (1ULL << 30)

/* One combination of VM type, guest_memfd flags and folio size. */
struct gm_case {
	unsigned long vm_type;
	uint64_t flags; /* GUEST_MEMFD_FLAG_* without the folio bits */
	uint64_t folio; /* GM_GUEST_MEMFD_FOLIO_* */
};

/* Every VM type x flag combination x folio size, for ParameterizedTest. */
extern struct gm_case gm_all_cases[];
extern size_t gm_all_cases_nr;

uint64_t gm_case_folio_size(const struct gm_case *c);
const char *gm_case_name(const struct gm_case *c);

/*
 * A feature the target lacks: on the kernel the host decides, so the test skips with the
 * reason; libgmem promises every feature the tests ask for, so there it is a failure.
 */
/*
 * Where a requirement may be missing and the test skips: the kernel, and the
 * per-VM attribute build (kvm.vm_memory_attributes=1), which lacks the
 * per-file attributes and INIT_SHARED for private VMs as Linux 6.8-7.3 does.
 * conformance-libgmem itself fails on anything libgmem promises and lacks.
 */
#if TARGET_IS_KERNEL || defined(GM_VM_ATTRS)
#define TARGET_MAY_LACK 1
#else
#define TARGET_MAY_LACK 0
#endif

#define t_require(cond, ...)                                                       \
	do {                                                                       \
		if (!(cond)) {                                                     \
			if (TARGET_MAY_LACK)                                       \
				cr_skip_test(__VA_ARGS__);                         \
			cr_assert_fail(__VA_ARGS__);                               \
		}                                                                  \
	} while (0)

/* The system fd; skips the test where the target has none. */
int t_open_kvm(void);
/* A VM of the type; skips, saying why, where the target lacks it. */
int t_create_vm(unsigned long type);
/* A guest_memfd, asserting success; skips where the target lacks the flags. */
int t_create_gmem(int vm, uint64_t size, uint64_t flags);
/* Skips unless the target supports every flag of flags for vm. */
void t_require_gmem_flags(int vm, uint64_t flags);
/* Sets up kvm, vm and gmem for a case (size = 2 folios unless size is given). */
struct gm_env {
	int kvm, vm, gmem;
	uint64_t size, folio_size, flags;
};
void t_env_setup(struct gm_env *e, const struct gm_case *c, uint64_t size);
void t_env_teardown(struct gm_env *e);

/* Whether a read (or write) of addr raises SIGBUS. */
bool t_access_sigbus(volatile void *addr, bool write);

#define ioctl_errno(...) ({ errno = 0; int _r = (int)sys_ioctl(__VA_ARGS__); _r < 0 ? errno : 0; })

#endif
