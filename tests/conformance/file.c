/* File methods of guest_memfd, VM and system fds: fstat, and read/write/pread/lseek/ftruncate refused. */
#include "harness/surface.h"

#include <linux/falloc.h>
#include <string.h>

#define FALLOC_PUNCH (FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE)

ParameterizedTestParameters(file, fstat)
{
	return cr_make_param_array(struct gm_case, gm_all_cases, gm_all_cases_nr);
}

/* A guest_memfd is a regular file of the creation size, 4K blocks, its own inode. */
ParameterizedTest(struct gm_case *c, file, fstat)
{
	struct gm_env e;
	struct stat st, st2;
	int other;

	t_env_setup(&e, c, 0);
	cr_assert_eq(sys_fstat(e.gmem, &st), 0, "%s", strerror(errno));
	cr_expect(S_ISREG(st.st_mode), "mode %o", st.st_mode);
	cr_expect_eq(st.st_mode & 07777, 0600, "mode %o", st.st_mode);
	cr_expect_eq(st.st_size, (off_t)e.size);
	cr_expect_eq(st.st_blksize, 4096);
	cr_expect_eq(st.st_nlink, 1);

	/* Allocating memory does not change the size: the file never grows or shrinks. */
	cr_expect_eq(sys_fallocate(e.gmem, FALLOC_FL_KEEP_SIZE, 0, e.size), 0, "%s",
		     strerror(errno));
	cr_assert_eq(sys_fstat(e.gmem, &st2), 0);
	cr_expect_eq(st2.st_size, (off_t)e.size);
	cr_expect_eq(st2.st_ino, st.st_ino);

	other = t_create_gmem(e.vm, e.size, e.flags);
	cr_assert_eq(sys_fstat(other, &st2), 0);
	cr_expect_neq(st2.st_ino, st.st_ino, "two files share an inode");
	sys_close(other);

	cr_expect_eq(sys_fstat(e.gmem, (struct stat *)8), -1);
	cr_expect_eq(errno, EFAULT);
	t_env_teardown(&e);
}

ParameterizedTestParameters(file, no_io_methods)
{
	return cr_make_param_array(struct gm_case, gm_all_cases, gm_all_cases_nr);
}

/*
 * guest_memfd has no read, write or llseek method and a setattr that refuses
 * every size: the VFS answers EINVAL, ESPIPE (pread/lseek on a pseudo file),
 * and EINVAL for ftruncate. A negative pread offset and an unknown whence are
 * checked before the missing method.
 */
ParameterizedTest(struct gm_case *c, file, no_io_methods)
{
	struct gm_env e;
	char buf[16] = { 0 };
	struct stat st;

	t_env_setup(&e, c, 0);
	for (size_t n = 0; n <= 1; n++) {
		errno = 0;
		cr_expect_eq(sys_read(e.gmem, buf, n), -1);
		cr_expect_eq(errno, EINVAL, "read(%zu): %s", n, strerror(errno));
		errno = 0;
		cr_expect_eq(sys_write(e.gmem, buf, n), -1);
		cr_expect_eq(errno, EINVAL, "write(%zu): %s", n, strerror(errno));
	}

	errno = 0;
	cr_expect_eq(sys_pread(e.gmem, buf, 1, 0), -1);
	cr_expect_eq(errno, ESPIPE, "pread: %s", strerror(errno));
	errno = 0;
	cr_expect_eq(sys_pread(e.gmem, buf, 1, -1), -1);
	cr_expect_eq(errno, EINVAL, "pread at -1: %s", strerror(errno));
	errno = 0;
	cr_expect_eq(sys_pwrite(e.gmem, buf, 1, 0), -1);
	cr_expect_eq(errno, ESPIPE, "pwrite: %s", strerror(errno));
	errno = 0;
	cr_expect_eq(sys_pwrite(e.gmem, buf, 1, -1), -1);
	cr_expect_eq(errno, EINVAL, "pwrite at -1: %s", strerror(errno));

	/* The vector forms: the missing method is found before the iovec is read. */
	struct iovec iov = { buf, sizeof(buf) }, *bad_iov = (struct iovec *)8;

	for (int bad = 0; bad <= 1; bad++) {
		const struct iovec *v = bad ? bad_iov : &iov;

		errno = 0;
		cr_expect_eq(sys_readv(e.gmem, v, 1), -1);
		cr_expect_eq(errno, EINVAL, "readv (bad iovec %d): %s", bad, strerror(errno));
		errno = 0;
		cr_expect_eq(sys_writev(e.gmem, v, 1), -1);
		cr_expect_eq(errno, EINVAL, "writev (bad iovec %d): %s", bad, strerror(errno));
		errno = 0;
		cr_expect_eq(sys_preadv(e.gmem, v, 1, 0), -1);
		cr_expect_eq(errno, ESPIPE, "preadv (bad iovec %d): %s", bad, strerror(errno));
		errno = 0;
		cr_expect_eq(sys_pwritev(e.gmem, v, 1, 0), -1);
		cr_expect_eq(errno, ESPIPE, "pwritev (bad iovec %d): %s", bad, strerror(errno));
	}
	errno = 0;
	cr_expect_eq(sys_pwritev(e.gmem, &iov, 1, -1), -1);
	cr_expect_eq(errno, EINVAL, "pwritev at -1: %s", strerror(errno));

	for (int whence = SEEK_SET; whence <= SEEK_HOLE; whence++) {
		errno = 0;
		cr_expect_eq(sys_lseek(e.gmem, 0, whence), -1);
		cr_expect_eq(errno, ESPIPE, "lseek whence %d: %s", whence, strerror(errno));
	}
	errno = 0;
	cr_expect_eq(sys_lseek(e.gmem, 4096, SEEK_HOLE + 1), -1);
	cr_expect_eq(errno, EINVAL, "lseek bad whence: %s", strerror(errno));

	const off_t lens[] = { 0, PAGE_SIZE, (off_t)e.size, (off_t)e.size * 2, -1 };

	for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
		errno = 0;
		cr_expect_eq(sys_ftruncate(e.gmem, lens[i]), -1);
		cr_expect_eq(errno, EINVAL, "ftruncate(%lld): %s", (long long)lens[i],
			     strerror(errno));
	}
	cr_assert_eq(sys_fstat(e.gmem, &st), 0);
	cr_expect_eq(st.st_size, (off_t)e.size, "a refused ftruncate changed the size");
	t_env_teardown(&e);
}

/* fallocate on a fd that is not a regular file: mode and range checks, then ENODEV. */
static void expect_fallocate_nodev(int fd, const char *what)
{
	errno = 0;
	cr_expect_eq(sys_fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, PAGE_SIZE), -1);
	cr_expect_eq(errno, ENODEV, "%s: %s", what, strerror(errno));
	errno = 0;
	cr_expect_eq(sys_fallocate(fd, 0, 1, INT64_MAX), -1);
	cr_expect_eq(errno, ENODEV, "%s, overflowing range: %s", what, strerror(errno));
	errno = 0;
	cr_expect_eq(sys_fallocate(fd, FALLOC_PUNCH, 0, PAGE_SIZE), -1);
	cr_expect_eq(errno, ENODEV, "%s, punch: %s", what, strerror(errno));
	errno = 0;
	cr_expect_eq(sys_fallocate(fd, FALLOC_FL_PUNCH_HOLE, 0, PAGE_SIZE), -1);
	cr_expect_eq(errno, EOPNOTSUPP, "%s, punch without KEEP_SIZE: %s", what, strerror(errno));
	errno = 0;
	cr_expect_eq(sys_fallocate(fd, 0xff00, 0, PAGE_SIZE), -1);
	cr_expect_eq(errno, EOPNOTSUPP, "%s, unknown mode: %s", what, strerror(errno));
	errno = 0;
	cr_expect_eq(sys_fallocate(fd, 0xff00, -1, PAGE_SIZE), -1);
	cr_expect_eq(errno, EINVAL, "%s, negative offset: %s", what, strerror(errno));
	errno = 0;
	cr_expect_eq(sys_fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, 0), -1);
	cr_expect_eq(errno, EINVAL, "%s, empty range: %s", what, strerror(errno));
}

/* read/write/pread/lseek/ftruncate/fallocate/mmap on a VM or system fd. */
static void expect_char_or_anon_methods(int fd, bool is_system, const char *what)
{
	char buf[8];

	errno = 0;
	cr_expect_eq(sys_read(fd, buf, 1), -1);
	cr_expect_eq(errno, EINVAL, "%s read: %s", what, strerror(errno));
	errno = 0;
	cr_expect_eq(sys_write(fd, buf, 0), -1);
	cr_expect_eq(errno, EINVAL, "%s write: %s", what, strerror(errno));
	/* /dev/kvm is a character device, which can pread; the VM fd is a pseudo file. */
	errno = 0;
	cr_expect_eq(sys_pread(fd, buf, 1, 0), -1);
	cr_expect_eq(errno, is_system ? EINVAL : ESPIPE, "%s pread: %s", what, strerror(errno));
	errno = 0;
	cr_expect_eq(sys_pread(fd, buf, 1, -1), -1);
	cr_expect_eq(errno, EINVAL, "%s pread at -1: %s", what, strerror(errno));
	errno = 0;
	cr_expect_eq(sys_pwrite(fd, buf, 1, 0), -1);
	cr_expect_eq(errno, is_system ? EINVAL : ESPIPE, "%s pwrite: %s", what, strerror(errno));

	struct iovec iov = { buf, sizeof(buf) };

	errno = 0;
	cr_expect_eq(sys_readv(fd, &iov, 1), -1);
	cr_expect_eq(errno, EINVAL, "%s readv: %s", what, strerror(errno));
	errno = 0;
	cr_expect_eq(sys_pwritev(fd, &iov, 1, 0), -1);
	cr_expect_eq(errno, is_system ? EINVAL : ESPIPE, "%s pwritev: %s", what, strerror(errno));

	/* open(2) adds O_LARGEFILE (the kernel's bit; glibc's is 0) on 64-bit; anonymous inodes lack it. */
	cr_expect_eq(sys_fcntl(fd, F_GETFL), is_system ? O_RDWR | 0100000 : O_RDWR,
		     "%s F_GETFL %#x", what, sys_fcntl(fd, F_GETFL));
	errno = 0;
	cr_expect_eq(sys_fcntl(fd, F_GET_SEALS), -1);
	cr_expect_eq(errno, EINVAL, "%s F_GET_SEALS: %s", what, strerror(errno));

	/* Both have a no-op llseek: the position stays 0 whatever is asked. */
	for (int whence = SEEK_SET; whence <= SEEK_HOLE; whence++) {
		errno = 0;
		cr_expect_eq(sys_lseek(fd, 100, whence), 0, "%s lseek whence %d: %s", what, whence,
			     strerror(errno));
		cr_expect_eq(sys_lseek(fd, -100, whence), 0);
	}
	errno = 0;
	cr_expect_eq(sys_lseek(fd, 0, SEEK_HOLE + 1), -1);
	cr_expect_eq(errno, EINVAL, "%s lseek bad whence: %s", what, strerror(errno));

	errno = 0;
	cr_expect_eq(sys_ftruncate(fd, 0), -1);
	cr_expect_eq(errno, EINVAL, "%s ftruncate: %s", what, strerror(errno));
	expect_fallocate_nodev(fd, what);

	errno = 0;
	cr_expect_eq(sys_mmap(NULL, PAGE_SIZE, PROT_READ, MAP_SHARED, fd, 0), MAP_FAILED);
	cr_expect_eq(errno, ENODEV, "%s mmap: %s", what, strerror(errno));
	errno = 0;
	cr_expect_eq(sys_mmap(NULL, PAGE_SIZE, PROT_READ, MAP_PRIVATE, fd, 0), MAP_FAILED);
	cr_expect_eq(errno, ENODEV, "%s private mmap: %s", what, strerror(errno));
	/* The generic mmap checks come first. */
	errno = 0;
	cr_expect_eq(sys_mmap(NULL, 0, PROT_READ, MAP_SHARED, fd, 0), MAP_FAILED);
	cr_expect_eq(errno, EINVAL, "%s mmap of 0 bytes: %s", what, strerror(errno));
	errno = 0;
	cr_expect_eq(sys_mmap(NULL, PAGE_SIZE, PROT_READ, MAP_SHARED, fd, 1), MAP_FAILED);
	cr_expect_eq(errno, EINVAL, "%s mmap at offset 1: %s", what, strerror(errno));
}

Test(file, vm_fd_methods)
{
	int vm = t_create_vm(KVM_X86_DEFAULT_VM);
	struct stat st;

	expect_char_or_anon_methods(vm, false, "VM fd");
	/* The VM lives on a noexec pseudo filesystem: PROT_EXEC fails before the missing mmap. */
	errno = 0;
	cr_expect_eq(sys_mmap(NULL, PAGE_SIZE, PROT_READ | PROT_EXEC, MAP_SHARED, vm, 0),
		     MAP_FAILED);
	cr_expect_eq(errno, EPERM, "VM fd exec mmap: %s", strerror(errno));
	/* An anonymous inode has no file type bits. */
	cr_assert_eq(sys_fstat(vm, &st), 0);
	cr_expect_eq(st.st_mode & S_IFMT, 0, "VM fd mode %o", st.st_mode);
	cr_expect_eq(st.st_size, 0);
	sys_close(vm);
}

Test(file, system_fd_methods)
{
	int kvm = t_open_kvm();
	struct stat st;

	expect_char_or_anon_methods(kvm, true, "system fd");
	cr_assert_eq(sys_fstat(kvm, &st), 0);
	cr_expect(S_ISCHR(st.st_mode), "system fd mode %o", st.st_mode);
	sys_close(kvm);
}

/* A duplicate is the same file: it works, and the file lives until its last fd closes. */
Test(file, dup_keeps_the_file)
{
	int kvm = t_open_kvm(), vm = t_create_vm(KVM_X86_DEFAULT_VM);
	int d, d2, d3, high = 300;

	d = sys_dup(vm);
	cr_assert_geq(d, 0, "dup: %s", strerror(errno));
	d2 = sys_fcntl(vm, F_DUPFD_CLOEXEC, high);
	cr_assert_geq(d2, high, "F_DUPFD_CLOEXEC: %s", strerror(errno));
	cr_expect_eq(sys_fcntl(d2, F_GETFD), FD_CLOEXEC);
	d3 = sys_dup3(kvm, high + 10, O_CLOEXEC);
	cr_assert_eq(d3, high + 10, "dup3: %s", strerror(errno));
	cr_expect_eq(sys_ioctl(d3, KVM_GET_API_VERSION, 0), KVM_API_VERSION);
	cr_expect_eq(sys_close(vm), 0);
	cr_expect_eq(sys_ioctl(d, KVM_CHECK_EXTENSION, KVM_CAP_USER_MEMORY), 1,
		     "the VM ended with its first fd: %s", strerror(errno));
	cr_expect_eq(sys_close(d), 0);
	cr_expect_eq(sys_ioctl(d2, KVM_CHECK_EXTENSION, KVM_CAP_USER_MEMORY), 1);
	/* dup2 over a library fd replaces it: d2 is now the system fd. */
	cr_expect_eq(sys_dup2(kvm, d2), d2);
	cr_expect_eq(sys_ioctl(d2, KVM_GET_API_VERSION, 0), KVM_API_VERSION);
	cr_expect_eq(sys_dup2(kvm, kvm), kvm, "dup2 onto itself");
	errno = 0;
	cr_expect_eq(sys_dup3(kvm, kvm, 0), -1);
	cr_expect_eq(errno, EINVAL, "dup3 onto itself: %s", strerror(errno));
	sys_close(d2);
	sys_close(d3);
	sys_close(kvm);
}
