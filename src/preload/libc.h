/*
 * The C library's calls that the preload interposes: NEXT_CALLS lists each
 * once. The library's own objects are linked into the preload with these
 * names renamed to gm_next_<name> (objcopy --redefine-syms, see the Makefile),
 * so the library's internal calls reach the C library, never the interposer.
 */
#ifndef GMEM_PRELOAD_LIBC_H
#define GMEM_PRELOAD_LIBC_H

#define _GNU_SOURCE
#include <stdarg.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

struct statx;

/*
 * X(name, return type, parameter list, argument list). NEXT_RENAMED: the
 * calls the library itself makes with a fixed parameter list, whose
 * gm_next_<name> preload.c defines; NEXT_OTHER: the variadic ones (their
 * gm_next_* are written out) and those only the interposer passes on.
 */
#define NEXT_RENAMED(X)                                                                      \
	X(munmap, int, (void *a, size_t l), (a, l))                                             \
	X(mprotect, int, (void *a, size_t l, int p), (a, l, p))                                 \
	X(madvise, int, (void *a, size_t l, int adv), (a, l, adv))                              \
	X(mmap, void *, (void *a, size_t l, int p, int f, int fd, off_t o), (a, l, p, f, fd, o)) \
	X(fallocate, int, (int fd, int m, off_t o, off_t l), (fd, m, o, l))                     \
	X(close, int, (int fd), (fd))                                                           \
	X(dup, int, (int fd), (fd))                                                             \
	X(dup2, int, (int o, int n), (o, n))                                                    \
	X(dup3, int, (int o, int n, int f), (o, n, f))                                          \
	X(fstat, int, (int fd, struct stat *st), (fd, st))                                      \
	X(statx, int, (int d, const char *p, int f, unsigned m, struct statx *s), (d, p, f, m, s)) \
	X(read, ssize_t, (int fd, void *b, size_t n), (fd, b, n))                               \
	X(write, ssize_t, (int fd, const void *b, size_t n), (fd, b, n))                        \
	X(pread, ssize_t, (int fd, void *b, size_t n, off_t o), (fd, b, n, o))                  \
	X(pwrite, ssize_t, (int fd, const void *b, size_t n, off_t o), (fd, b, n, o))           \
	X(readv, ssize_t, (int fd, const struct iovec *v, int c), (fd, v, c))                   \
	X(writev, ssize_t, (int fd, const struct iovec *v, int c), (fd, v, c))                  \
	X(preadv, ssize_t, (int fd, const struct iovec *v, int c, off_t o), (fd, v, c, o))      \
	X(pwritev, ssize_t, (int fd, const struct iovec *v, int c, off_t o), (fd, v, c, o))     \
	X(lseek, off_t, (int fd, off_t o, int w), (fd, o, w))                                   \
	X(ftruncate, int, (int fd, off_t l), (fd, l))

#define NEXT_OTHER(X)                                                                        \
	X(openat, int, (int d, const char *p, int f, ...), ())                                  \
	X(ioctl, int, (int fd, unsigned long r, ...), ())                                       \
	X(mremap, void *, (void *a, size_t o, size_t n, int f, ...), ())                        \
	X(fcntl, int, (int fd, int c, ...), ())                                                 \
	X(syscall, long, (long nr, ...), ())                                                    \
	X(posix_fallocate, int, (int fd, off_t o, off_t l), (fd, o, l))                         \
	X(fstatat, int, (int d, const char *p, struct stat *st, int f), (d, p, st, f))          \
	X(preadv2, ssize_t, (int fd, const struct iovec *v, int c, off_t o, int f), (fd, v, c, o, f)) \
	X(pwritev2, ssize_t, (int fd, const struct iovec *v, int c, off_t o, int f), (fd, v, c, o, f)) \
	X(__read_chk, ssize_t, (int fd, void *b, size_t n, size_t bl), (fd, b, n, bl))          \
	X(__pread_chk, ssize_t, (int fd, void *b, size_t n, off_t o, size_t bl), (fd, b, n, o, bl))

#define NEXT_CALLS(X) NEXT_RENAMED(X) NEXT_OTHER(X)

#endif
