/*
 * The interposer behind gmem-run: an unmodified program's calls on library
 * fds and library mappings go to libgmem, everything else to the C library.
 */
#include "libc.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>

#include <gmem/gmem.h>

#include "gmem.h"
#include "internal.h"
#include "kvm.h"
#include "platform/psp.h"
#include "vcpu.h"

#define PRELOAD_EXPORT __attribute__((visibility("default")))
/*
 * Another name of an interposer (open64 for open): a C name of its own, so that
 * the C library's declaration of the alias (with struct stat64 and the like) does not clash.
 */
#define ALIAS(target) __attribute__((alias(#target), visibility("default")))
#define EXPORT_ALIAS(ret, alias, target, params) ret alias_##alias params __asm__(#alias) ALIAS(target)
#pragma GCC diagnostic ignored "-Wmissing-attributes"

/* The C library's definitions, found once (dlsym RTLD_NEXT) before the first call needs them. */
static struct {
#define X(name, ret, params, args) ret (*name) params;
	NEXT_CALLS(X)
#undef X
} next;

static void next_resolve(void)
{
#define X(name, ret, params, args)                                                          \
	__atomic_store_n((void **)&next.name, dlsym(RTLD_NEXT, #name), __ATOMIC_RELAXED);
	NEXT_CALLS(X)
#undef X
	if (!next.syscall || !next.read) {
		static const char msg[] = "libgmem-preload: the C library's calls are not found\n";

		/* Nothing else can be called safely here. */
		(void)!((long (*)(long, ...))dlsym(RTLD_DEFAULT, "syscall"))(SYS_write, 2, msg,
									      sizeof(msg) - 1);
		abort();
	}
}

/* Another library's constructor may call us before ours runs: resolve on first use too. */
__attribute__((constructor(101))) static void preload_init(void)
{
	next_resolve();
}

#define NEXT(name)                                                                           \
	(__builtin_expect(!__atomic_load_n(&next.name, __ATOMIC_RELAXED), 0) ? next_resolve()  \
									     : (void)0,        \
	 next.name)

/*
 * The library's own calls, renamed to gm_next_* when it is linked in here:
 * straight to the C library. Variadic where the C library's are.
 */
#define X(name, ret, params, args)                                                          \
	__attribute__((visibility("hidden"))) ret gm_next_##name params;                        \
	__attribute__((visibility("hidden"))) ret gm_next_##name params                         \
	{                                                                                        \
		return NEXT(name) args;                                                          \
	}
NEXT_RENAMED(X)
#undef X

#define VA_ARG_ULONG(last, var)                                                              \
	do {                                                                                     \
		va_list ap;                                                                      \
		va_start(ap, last);                                                              \
		var = va_arg(ap, unsigned long);                                                 \
		va_end(ap);                                                                      \
	} while (0)

/* The six arguments syscall(2) may take (unused ones are whatever the registers hold). */
#define SYSCALL_ARGS(nr, a)                                                                  \
	do {                                                                                     \
		va_list ap;                                                                      \
		va_start(ap, nr);                                                                \
		for (int i = 0; i < 6; i++)                                                      \
			a[i] = va_arg(ap, long);                                                 \
		va_end(ap);                                                                      \
	} while (0)

__attribute__((visibility("hidden"))) int gm_next_open(const char *path, int flags, ...)
{
	unsigned long mode = 0;

	VA_ARG_ULONG(flags, mode);
	return NEXT(openat)(AT_FDCWD, path, flags, (mode_t)mode);
}

__attribute__((visibility("hidden"))) int gm_next_openat(int dirfd, const char *path, int flags,
							  ...)
{
	unsigned long mode = 0;

	VA_ARG_ULONG(flags, mode);
	return NEXT(openat)(dirfd, path, flags, (mode_t)mode);
}

__attribute__((visibility("hidden"))) int gm_next_ioctl(int fd, unsigned long request, ...)
{
	unsigned long arg;

	VA_ARG_ULONG(request, arg);
	return NEXT(ioctl)(fd, request, arg);
}

__attribute__((visibility("hidden"))) int gm_next_fcntl(int fd, int cmd, ...)
{
	unsigned long arg;

	VA_ARG_ULONG(cmd, arg);
	return NEXT(fcntl)(fd, cmd, arg);
}

__attribute__((visibility("hidden"))) void *gm_next_mremap(void *old, size_t old_size,
							    size_t new_size, int flags, ...)
{
	unsigned long new_addr = 0;

	if (flags & MREMAP_FIXED)
		VA_ARG_ULONG(flags, new_addr);
	return NEXT(mremap)(old, old_size, new_size, flags, (void *)new_addr);
}

__attribute__((visibility("hidden"))) long gm_next_syscall(long nr, ...)
{
	long a[6];

	SYSCALL_ARGS(nr, a);
	return NEXT(syscall)(nr, a[0], a[1], a[2], a[3], a[4], a[5]);
}

/* ---- opening: paths the library answers ------------------------------------------------- */

static int set_errno(int ret)
{
	if (ret < 0) {
		errno = -ret;
		return -1;
	}
	return ret;
}

static int open_kvm(int flags)
{
	return set_errno(kvm_dev_open(flags & O_CLOEXEC));
}

static int open_sev(int flags)
{
	return set_errno(psp_open(flags & O_CLOEXEC));
}

/* Devices the library stands in for; a platform adds its device here. */
static const struct opener {
	const char *path;
	int (*open)(int flags);
} openers[] = {
	{ "/dev/kvm", open_kvm },
	{ "/dev/sev", open_sev },
};

/* N of /proc/self/fd/N (or /dev/fd/N, /proc/thread-self/fd/N, /proc/<our pid>/fd/N), else -1. */
static int proc_fd_number(const char *path)
{
	static const char *const prefixes[] = { "/proc/self/fd/", "/dev/fd/",
						"/proc/thread-self/fd/" };
	const char *rest = NULL;
	char *end;
	long n;

	for (size_t i = 0; i < sizeof(prefixes) / sizeof(prefixes[0]) && !rest; i++)
		if (!strncmp(path, prefixes[i], strlen(prefixes[i])))
			rest = path + strlen(prefixes[i]);
	if (!rest && !strncmp(path, "/proc/", 6)) {
		long pid = strtol(path + 6, &end, 10);

		if (end != path + 6 && pid == getpid() && !strncmp(end, "/fd/", 4))
			rest = end + 4;
	}
	if (!rest || *rest < '0' || *rest > '9')
		return -1;
	n = strtol(rest, &end, 10);
	return *end || n > INT_MAX ? -1 : (int)n;
}

/*
 * Opening a library fd again through /proc: /dev/kvm and /dev/sev open anew; the others
 * are anonymous inodes, which cannot be opened (ENXIO). -2: not a library fd.
 */
static int reopen_library_fd(int fd, int flags)
{
	enum gm_file_type type;
	struct gm_object *obj;

	if (!gm_file_maybe(fd))
		return -2;
	obj = gm_file_get(fd, &type);
	if (!obj)
		return -2;
	gm_object_put(obj);
	if (type == GM_FILE_KVM)
		return open_kvm(flags);
	return type == GM_FILE_SEV ? open_sev(flags) : set_errno(-ENXIO);
}

/* The library's answer to opening path, or -2 when the C library should open it. */
static int library_open(const char *path, int flags)
{
	int fd;

	/* O_PATH opens no device; O_DIRECTORY, O_CREAT|O_EXCL fail on one as the kernel decides. */
	if (!path || path[0] != '/' || (flags & (O_PATH | O_DIRECTORY | O_EXCL)))
		return -2;
	for (size_t i = 0; i < sizeof(openers) / sizeof(openers[0]); i++)
		if (!strcmp(path, openers[i].path))
			return openers[i].open(flags);
	fd = proc_fd_number(path);
	return fd < 0 ? -2 : reopen_library_fd(fd, flags);
}

static mode_t open_mode(int flags, va_list ap)
{
	return (flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE ? va_arg(ap, mode_t) : 0;
}

PRELOAD_EXPORT int openat(int dirfd, const char *path, int flags, ...)
{
	va_list ap;
	mode_t mode;
	int ret = library_open(path, flags);

	if (ret != -2)
		return ret;
	va_start(ap, flags);
	mode = open_mode(flags, ap);
	va_end(ap);
	return NEXT(openat)(dirfd, path, flags, mode);
}

/* open(2) is openat(2) from the working directory, in the kernel as in glibc. */
PRELOAD_EXPORT int open(const char *path, int flags, ...)
{
	va_list ap;
	mode_t mode;

	va_start(ap, flags);
	mode = open_mode(flags, ap);
	va_end(ap);
	return openat(AT_FDCWD, path, flags, mode);
}

EXPORT_ALIAS(int, open64, open, (const char *path, int flags, ...));
EXPORT_ALIAS(int, openat64, openat, (int dirfd, const char *path, int flags, ...));

/* _FORTIFY_SOURCE's forms, for opens without a mode. */
PRELOAD_EXPORT int __open_2(const char *path, int flags)
{
	return open(path, flags);
}
EXPORT_ALIAS(int, __open64_2, __open_2, (const char *path, int flags));

PRELOAD_EXPORT int __openat_2(int dirfd, const char *path, int flags)
{
	return openat(dirfd, path, flags);
}
EXPORT_ALIAS(int, __openat64_2, __openat_2, (int dirfd, const char *path, int flags));

/* ---- fd calls ------------------------------------------------------------------------------ */

#define OURS(fd) __builtin_expect(gm_file_maybe(fd), 0)
/* One of the library's internal fds, which the program must not close or replace. */
#define HIDDEN(fd) \
	__builtin_expect((fd) >= 0 && (fd) <= atomic_load_explicit(&gm_fd_hidden_max, memory_order_relaxed) && \
			 gm_fd_hidden(fd), 0)

/*
 * A soft vCPU runs guest functions, not the x86 code a program put in guest
 * memory (KVM_RUN's GM_FAIL_ENTRY_NO_GUEST), and an unmodified program cannot
 * install one: gmem-run ends it as a kselftest that cannot run here ends,
 * with KSFT_SKIP (4) and the reason.
 */
#define KSFT_SKIP 4
static void run_check_guest_code(int fd)
{
	int err;
	struct gm_object *obj = gm_file_get_typed(fd, GM_FILE_VCPU, &err);
	bool no_guest;

	if (!obj)
		return;
	struct kvm_run *run = gm_container_of(obj, struct vcpu, obj)->run;

	no_guest = run->exit_reason == KVM_EXIT_FAIL_ENTRY &&
		   run->fail_entry.hardware_entry_failure_reason == GM_FAIL_ENTRY_NO_GUEST;
	gm_object_put(obj);
	if (no_guest) {
		static const char msg[] = "gmem-run: guest code needs the kvm backend "
					  "(soft vCPUs run no x86 code)\n";

		(void)!NEXT(write)(2, msg, sizeof(msg) - 1);
		_exit(KSFT_SKIP);
	}
}

PRELOAD_EXPORT int ioctl(int fd, unsigned long request, ...)
{
	unsigned long arg;
	int ret;

	VA_ARG_ULONG(request, arg);
	if (!OURS(fd))
		return NEXT(ioctl)(fd, request, arg);
	ret = gm_ioctl(fd, request, arg);
	if (request == KVM_RUN && ret == 0)
		run_check_guest_code(fd);
	return ret;
}

PRELOAD_EXPORT int close(int fd)
{
	return OURS(fd) || HIDDEN(fd) ? gm_close(fd) : NEXT(close)(fd);
}

PRELOAD_EXPORT int close_range(unsigned int first, unsigned int last, int flags)
{
	return gm_close_range(first, last, flags);
}

PRELOAD_EXPORT int dup(int fd)
{
	return OURS(fd) ? gm_dup(fd) : NEXT(dup)(fd);
}

PRELOAD_EXPORT int dup2(int oldfd, int newfd)
{
	return OURS(oldfd) || OURS(newfd) || HIDDEN(newfd) ? gm_dup2(oldfd, newfd)
							   : NEXT(dup2)(oldfd, newfd);
}

PRELOAD_EXPORT int dup3(int oldfd, int newfd, int flags)
{
	return OURS(oldfd) || OURS(newfd) || HIDDEN(newfd) ? gm_dup3(oldfd, newfd, flags)
							   : NEXT(dup3)(oldfd, newfd, flags);
}

PRELOAD_EXPORT int fcntl(int fd, int cmd, ...)
{
	unsigned long arg;

	VA_ARG_ULONG(cmd, arg);
	return OURS(fd) ? gm_fcntl(fd, cmd, arg) : NEXT(fcntl)(fd, cmd, arg);
}
EXPORT_ALIAS(int, fcntl64, fcntl, (int fd, int cmd, ...));

PRELOAD_EXPORT int fstat(int fd, struct stat *st)
{
	return OURS(fd) ? gm_fstat(fd, st) : NEXT(fstat)(fd, st);
}
EXPORT_ALIAS(int, fstat64, fstat, (int fd, struct stat *st));

/* The stat forms of glibc before 2.33, still called by older binaries. */
PRELOAD_EXPORT int __fxstat(int ver, int fd, struct stat *st)
{
	(void)ver;
	return fstat(fd, st);
}
EXPORT_ALIAS(int, __fxstat64, __fxstat, (int ver, int fd, struct stat *st));

static bool empty_path_of_ours(int dirfd, const char *path, int flags)
{
	return (flags & AT_EMPTY_PATH) && path && !path[0] && OURS(dirfd);
}

PRELOAD_EXPORT int fstatat(int dirfd, const char *path, struct stat *st, int flags)
{
	return empty_path_of_ours(dirfd, path, flags) ? gm_fstat(dirfd, st)
						       : NEXT(fstatat)(dirfd, path, st, flags);
}
EXPORT_ALIAS(int, fstatat64, fstatat, (int dirfd, const char *path, struct stat *st, int flags));

PRELOAD_EXPORT int __fxstatat(int ver, int dirfd, const char *path, struct stat *st, int flags)
{
	(void)ver;
	return fstatat(dirfd, path, st, flags);
}
EXPORT_ALIAS(int, __fxstatat64, __fxstatat, (int ver, int dirfd, const char *path, struct stat *st, int flags));

PRELOAD_EXPORT int statx(int dirfd, const char *path, int flags, unsigned int mask,
			 struct statx *stx)
{
	return empty_path_of_ours(dirfd, path, flags) ? gm_statx(dirfd, path, flags, mask, stx)
						       : NEXT(statx)(dirfd, path, flags, mask, stx);
}

PRELOAD_EXPORT ssize_t read(int fd, void *buf, size_t n)
{
	return OURS(fd) ? gm_read(fd, buf, n) : NEXT(read)(fd, buf, n);
}

PRELOAD_EXPORT ssize_t __read_chk(int fd, void *buf, size_t n, size_t buflen)
{
	return OURS(fd) ? gm_read(fd, buf, n) : NEXT(__read_chk)(fd, buf, n, buflen);
}

PRELOAD_EXPORT ssize_t write(int fd, const void *buf, size_t n)
{
	return OURS(fd) ? gm_write(fd, buf, n) : NEXT(write)(fd, buf, n);
}

PRELOAD_EXPORT ssize_t pread(int fd, void *buf, size_t n, off_t off)
{
	return OURS(fd) ? gm_pread(fd, buf, n, off) : NEXT(pread)(fd, buf, n, off);
}
EXPORT_ALIAS(ssize_t, pread64, pread, (int fd, void *buf, size_t n, off_t off));

PRELOAD_EXPORT ssize_t __pread_chk(int fd, void *buf, size_t n, off_t off, size_t buflen)
{
	return OURS(fd) ? gm_pread(fd, buf, n, off) : NEXT(__pread_chk)(fd, buf, n, off, buflen);
}
EXPORT_ALIAS(ssize_t, __pread64_chk, __pread_chk, (int fd, void *buf, size_t n, off_t off, size_t buflen));

PRELOAD_EXPORT ssize_t pwrite(int fd, const void *buf, size_t n, off_t off)
{
	return OURS(fd) ? gm_pwrite(fd, buf, n, off) : NEXT(pwrite)(fd, buf, n, off);
}
EXPORT_ALIAS(ssize_t, pwrite64, pwrite, (int fd, const void *buf, size_t n, off_t off));

PRELOAD_EXPORT ssize_t readv(int fd, const struct iovec *iov, int cnt)
{
	return OURS(fd) ? gm_readv(fd, iov, cnt) : NEXT(readv)(fd, iov, cnt);
}

PRELOAD_EXPORT ssize_t writev(int fd, const struct iovec *iov, int cnt)
{
	return OURS(fd) ? gm_writev(fd, iov, cnt) : NEXT(writev)(fd, iov, cnt);
}

PRELOAD_EXPORT ssize_t preadv(int fd, const struct iovec *iov, int cnt, off_t off)
{
	return OURS(fd) ? gm_preadv(fd, iov, cnt, off) : NEXT(preadv)(fd, iov, cnt, off);
}
EXPORT_ALIAS(ssize_t, preadv64, preadv, (int fd, const struct iovec *iov, int cnt, off_t off));

PRELOAD_EXPORT ssize_t pwritev(int fd, const struct iovec *iov, int cnt, off_t off)
{
	return OURS(fd) ? gm_pwritev(fd, iov, cnt, off) : NEXT(pwritev)(fd, iov, cnt, off);
}
EXPORT_ALIAS(ssize_t, pwritev64, pwritev, (int fd, const struct iovec *iov, int cnt, off_t off));

/* Offset -1 means the file position, as readv does. */
PRELOAD_EXPORT ssize_t preadv2(int fd, const struct iovec *iov, int cnt, off_t off, int flags)
{
	if (!OURS(fd))
		return NEXT(preadv2)(fd, iov, cnt, off, flags);
	return off == -1 ? gm_readv(fd, iov, cnt) : gm_preadv(fd, iov, cnt, off);
}
EXPORT_ALIAS(ssize_t, preadv64v2, preadv2, (int fd, const struct iovec *iov, int cnt, off_t off, int flags));

PRELOAD_EXPORT ssize_t pwritev2(int fd, const struct iovec *iov, int cnt, off_t off, int flags)
{
	if (!OURS(fd))
		return NEXT(pwritev2)(fd, iov, cnt, off, flags);
	return off == -1 ? gm_writev(fd, iov, cnt) : gm_pwritev(fd, iov, cnt, off);
}
EXPORT_ALIAS(ssize_t, pwritev64v2, pwritev2, (int fd, const struct iovec *iov, int cnt, off_t off, int flags));

PRELOAD_EXPORT off_t lseek(int fd, off_t off, int whence)
{
	return OURS(fd) ? gm_lseek(fd, off, whence) : NEXT(lseek)(fd, off, whence);
}
EXPORT_ALIAS(off_t, lseek64, lseek, (int fd, off_t off, int whence));

PRELOAD_EXPORT int ftruncate(int fd, off_t len)
{
	return OURS(fd) ? gm_ftruncate(fd, len) : NEXT(ftruncate)(fd, len);
}
EXPORT_ALIAS(int, ftruncate64, ftruncate, (int fd, off_t len));

PRELOAD_EXPORT int fallocate(int fd, int mode, off_t off, off_t len)
{
	return OURS(fd) ? gm_fallocate(fd, mode, off, len) : NEXT(fallocate)(fd, mode, off, len);
}
EXPORT_ALIAS(int, fallocate64, fallocate, (int fd, int mode, off_t off, off_t len));

/* posix_fallocate returns the error instead of setting errno. */
PRELOAD_EXPORT int posix_fallocate(int fd, off_t off, off_t len)
{
	int saved = errno, ret;

	if (!OURS(fd))
		return NEXT(posix_fallocate)(fd, off, len);
	ret = gm_fallocate(fd, 0, off, len) < 0 ? errno : 0;
	errno = saved;
	return ret;
}
EXPORT_ALIAS(int, posix_fallocate64, posix_fallocate, (int fd, off_t off, off_t len));

/* ---- address-space calls ------------------------------------------------------------------- */

PRELOAD_EXPORT void *mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
	/* Library fds map through the library; a fixed mapping may replace one of its mappings. */
	if (((flags & MAP_ANONYMOUS) || !OURS(fd)) && (!(flags & MAP_FIXED) || !hostmap_exists()))
		return NEXT(mmap)(addr, len, prot, flags, fd, off);
	return gm_mmap(addr, len, prot, flags, fd, off);
}
EXPORT_ALIAS(void *, mmap64, mmap, (void *addr, size_t len, int prot, int flags, int fd, off_t off));

PRELOAD_EXPORT int munmap(void *addr, size_t len)
{
	return hostmap_exists() ? gm_munmap(addr, len) : NEXT(munmap)(addr, len);
}

PRELOAD_EXPORT void *mremap(void *old, size_t old_size, size_t new_size, int flags, ...)
{
	unsigned long new_addr = 0;

	if (flags & MREMAP_FIXED)
		VA_ARG_ULONG(flags, new_addr);
	if (!hostmap_exists())
		return NEXT(mremap)(old, old_size, new_size, flags, (void *)new_addr);
	return gm_mremap(old, old_size, new_size, flags, (void *)new_addr);
}

PRELOAD_EXPORT int mprotect(void *addr, size_t len, int prot)
{
	return hostmap_exists() ? gm_mprotect(addr, len, prot) : NEXT(mprotect)(addr, len, prot);
}

PRELOAD_EXPORT int madvise(void *addr, size_t len, int advice)
{
	return hostmap_exists() ? gm_madvise(addr, len, advice) : NEXT(madvise)(addr, len, advice);
}

/* ---- syscall(2): the same numbers, the same routes ---------------------------------------- */

PRELOAD_EXPORT long syscall(long nr, ...)
{
	long a[6];

	SYSCALL_ARGS(nr, a);
	switch (nr) {
	case SYS_open:
		return open((const char *)a[0], (int)a[1], (mode_t)a[2]);
	case SYS_openat:
		return openat((int)a[0], (const char *)a[1], (int)a[2], (mode_t)a[3]);
	case SYS_ioctl:
		return ioctl((int)a[0], (unsigned long)a[1], a[2]);
	case SYS_close:
		return close((int)a[0]);
	case SYS_close_range:
		return close_range((unsigned)a[0], (unsigned)a[1], (int)a[2]);
	case SYS_dup:
		return dup((int)a[0]);
	case SYS_dup2:
		return dup2((int)a[0], (int)a[1]);
	case SYS_dup3:
		return dup3((int)a[0], (int)a[1], (int)a[2]);
	case SYS_fcntl:
		return fcntl((int)a[0], (int)a[1], a[2]);
	case SYS_fstat:
		return fstat((int)a[0], (struct stat *)a[1]);
	case SYS_newfstatat:
		return fstatat((int)a[0], (const char *)a[1], (struct stat *)a[2], (int)a[3]);
	case SYS_statx:
		return statx((int)a[0], (const char *)a[1], (int)a[2], (unsigned)a[3],
			     (struct statx *)a[4]);
	case SYS_read:
		return read((int)a[0], (void *)a[1], (size_t)a[2]);
	case SYS_write:
		return write((int)a[0], (const void *)a[1], (size_t)a[2]);
	case SYS_pread64:
		return pread((int)a[0], (void *)a[1], (size_t)a[2], (off_t)a[3]);
	case SYS_pwrite64:
		return pwrite((int)a[0], (const void *)a[1], (size_t)a[2], (off_t)a[3]);
	case SYS_readv:
		return readv((int)a[0], (const struct iovec *)a[1], (int)a[2]);
	case SYS_writev:
		return writev((int)a[0], (const struct iovec *)a[1], (int)a[2]);
	/* The offset's high half (a[4]) is for 32-bit callers: on x86-64 a[3] holds all of it. */
	case SYS_preadv:
		return preadv((int)a[0], (const struct iovec *)a[1], (int)a[2], (off_t)a[3]);
	case SYS_pwritev:
		return pwritev((int)a[0], (const struct iovec *)a[1], (int)a[2], (off_t)a[3]);
	case SYS_preadv2:
		return preadv2((int)a[0], (const struct iovec *)a[1], (int)a[2], (off_t)a[3], (int)a[5]);
	case SYS_pwritev2:
		return pwritev2((int)a[0], (const struct iovec *)a[1], (int)a[2], (off_t)a[3], (int)a[5]);
	case SYS_lseek:
		return lseek((int)a[0], (off_t)a[1], (int)a[2]);
	case SYS_ftruncate:
		return ftruncate((int)a[0], (off_t)a[1]);
	case SYS_fallocate:
		return fallocate((int)a[0], (int)a[1], (off_t)a[2], (off_t)a[3]);
	case SYS_mmap:
		return (long)mmap((void *)a[0], (size_t)a[1], (int)a[2], (int)a[3], (int)a[4],
				  (off_t)a[5]);
	case SYS_munmap:
		return munmap((void *)a[0], (size_t)a[1]);
	case SYS_mremap:
		return (long)mremap((void *)a[0], (size_t)a[1], (size_t)a[2], (int)a[3],
				    (void *)a[4]);
	case SYS_mprotect:
		return mprotect((void *)a[0], (size_t)a[1], (int)a[2]);
	case SYS_madvise:
		return madvise((void *)a[0], (size_t)a[1], (int)a[2]);
	default:
		return NEXT(syscall)(nr, a[0], a[1], a[2], a[3], a[4], a[5]);
	}
}
