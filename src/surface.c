/* The kernel-compatible surface: each gm_* call acts as the syscall would on the kernel's fd. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <limits.h>
#include <linux/falloc.h>
#include <stdarg.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/uio.h>
#include <unistd.h>

#include "gmem.h"
#include "kvm.h"
#include "platform/snp.h"
#include "vcpu.h"

/* The mode bits of fallocate(2) that name an operation; WRITE_ZEROES is new in 6.17. */
#define FALLOC_WRITE_ZEROES 0x80
#define FALLOC_MODE_MASK                                                                    \
	(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_COLLAPSE_RANGE | FALLOC_FL_ZERO_RANGE |            \
	 FALLOC_FL_INSERT_RANGE | FALLOC_FL_UNSHARE_RANGE | FALLOC_WRITE_ZEROES)

/* Sets errno from a negative errno result, as a syscall returns. */
static long sys_ret(long ret)
{
	if (ret < 0) {
		errno = (int)-ret;
		return -1;
	}
	return ret;
}

int kvm_dev_open(bool cloexec)
{
	return gm_file_open_device(GM_FILE_KVM, "kvm", cloexec);
}

GM_EXPORT int gm_open_kvm(void)
{
	return (int)sys_ret(kvm_dev_open(false));
}

GM_EXPORT int gm_ioctl(int fd, unsigned long request, ...)
{
	enum gm_file_type type;
	struct gm_object *obj;
	unsigned long arg;
	va_list ap;
	long ret;

	va_start(ap, request);
	arg = va_arg(ap, unsigned long);
	va_end(ap);

	obj = gm_file_get(fd, &type);
	if (!obj)
		return ioctl(fd, request, arg);
	switch (type) {
	case GM_FILE_KVM:
		ret = kvm_dev_ioctl(request, arg);
		break;
	case GM_FILE_VM:
		/* The vCPU sits above the VM, so the VM's ioctl does not create it. */
		if (request == KVM_CREATE_VCPU)
			ret = vcpu_create(gm_container_of(obj, struct vm, obj), arg);
		/* The platform sits above the VM too: it populates through the VM's slots. */
		else if (request == KVM_MEMORY_ENCRYPT_OP)
			ret = snp_mem_enc_ioctl(gm_container_of(obj, struct vm, obj), arg);
		else
			ret = vm_ioctl(gm_container_of(obj, struct vm, obj), request, arg);
		break;
	case GM_FILE_VCPU:
		ret = vcpu_ioctl(gm_container_of(obj, struct vcpu, obj), request, arg);
		break;
	case GM_FILE_GMEM:
		ret = gmem_ioctl(gm_container_of(obj, struct gmem, obj), request, arg);
		break;
	default:
		ret = -ENOTTY;
		break;
	}
	gm_object_put(obj);
	return (int)sys_ret(ret);
}

/*
 * mmap of a library fd that has no mmap method: mmap(2)'s generic checks,
 * then PROT_EXEC on the noexec pseudo filesystem of anonymous inodes, then
 * the missing method.
 */
static int other_mmap(enum gm_file_type type, void *addr, size_t len, int prot, int flags,
		      int64_t off)
{
	int ret = hostmap_check_generic(addr, len, prot, flags, off);

	if (ret)
		return ret;
	if ((prot & PROT_EXEC) && type != GM_FILE_KVM)
		return -EPERM;
	return -ENODEV;
}

/* mmap(2) of a fd that is not ours; a fixed mapping replaces any of ours below it. */
static void *plain_mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
	void *p = mmap(addr, len, prot, flags, fd, off);

	if (p != MAP_FAILED && (flags & MAP_FIXED))
		hostmap_forget(p, len);
	return p;
}

GM_EXPORT void *gm_mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
	enum gm_file_type type;
	struct gm_object *obj;
	void *out = MAP_FAILED;
	int ret;

	/* An anonymous mapping ignores the fd, as mmap(2) does. */
	if (flags & MAP_ANONYMOUS)
		return plain_mmap(addr, len, prot, flags, fd, off);
	obj = gm_file_get(fd, &type);
	if (!obj)
		return plain_mmap(addr, len, prot, flags, fd, off);
	if (type == GM_FILE_GMEM)
		ret = hostmap_create(gm_container_of(obj, struct gmem, obj), addr, len, prot, flags,
				     off, &out);
	else if (type == GM_FILE_VCPU)
		ret = vcpu_mmap(gm_container_of(obj, struct vcpu, obj), addr, len, prot, flags, off,
				&out);
	else
		ret = other_mmap(type, addr, len, prot, flags, off);
	gm_object_put(obj);
	if (ret) {
		errno = -ret;
		return MAP_FAILED;
	}
	return out;
}

GM_EXPORT int gm_munmap(void *addr, size_t len)
{
	int ret = hostmap_unmap(addr, len);

	return ret < 0 ? (int)sys_ret(ret) : 0;
}

/*
 * vfs_fallocate's own checks, made for every file before its fallocate
 * method: the range, then the modes the VFS knows at all, then the file type
 * (library fds other than guest_memfd are anonymous inodes or a character
 * device), then a range that wraps past the largest offset.
 */
static long vfs_fallocate_check(enum gm_file_type type, int mode, int64_t off, int64_t len)
{
	int64_t end;

	if (off < 0 || len <= 0)
		return -EINVAL;
	if (mode & ~(FALLOC_MODE_MASK | FALLOC_FL_KEEP_SIZE))
		return -EOPNOTSUPP;
	switch (mode & FALLOC_MODE_MASK) {
	case 0: /* allocate */
	case FALLOC_FL_UNSHARE_RANGE:
	case FALLOC_FL_ZERO_RANGE:
		break;
	case FALLOC_FL_PUNCH_HOLE:
		/* A hole never shrinks the file. */
		if (!(mode & FALLOC_FL_KEEP_SIZE))
			return -EOPNOTSUPP;
		break;
	case FALLOC_FL_COLLAPSE_RANGE:
	case FALLOC_FL_INSERT_RANGE:
	case FALLOC_WRITE_ZEROES:
		/* These change the size or write it, so KEEP_SIZE makes no sense. */
		if (mode & FALLOC_FL_KEEP_SIZE)
			return -EOPNOTSUPP;
		break;
	default:
		return -EOPNOTSUPP;
	}
	if (type != GM_FILE_GMEM)
		return -ENODEV;
	if (__builtin_add_overflow(off, len, &end))
		return -EFBIG;
	return 0;
}

GM_EXPORT int gm_fallocate(int fd, int mode, off_t off, off_t len)
{
	enum gm_file_type type;
	struct gm_object *obj = gm_file_get(fd, &type);
	long ret;

	if (!obj)
		return fallocate(fd, mode, off, len);
	ret = vfs_fallocate_check(type, mode, off, len);
	if (!ret)
		ret = gmem_fallocate(gm_container_of(obj, struct gmem, obj), mode, off, len);
	gm_object_put(obj);
	return (int)sys_ret(ret);
}

/* What fstat says of the system, VM and vCPU fds, whose handles are memfds. */
static long other_fstat(enum gm_file_type type, int fd, struct stat *st)
{
	struct stat tmp;

	if (fstat(fd, &tmp) < 0)
		return -errno;
	/*
	 * /dev/kvm and /dev/sev are character devices (/dev/sev's minor is dynamic:
	 * 0 here); anonymous inodes have no file type bits.
	 */
	tmp.st_mode = (type == GM_FILE_KVM || type == GM_FILE_SEV ? S_IFCHR : 0) | S_IRUSR | S_IWUSR;
	tmp.st_rdev = type == GM_FILE_KVM ? makedev(10, 232) : 0;
	tmp.st_nlink = 1;
	tmp.st_size = 0;
	tmp.st_blocks = 0;
	tmp.st_blksize = GM_PAGE_SIZE;
	return gm_copy_to_user(st, &tmp, sizeof(tmp));
}

GM_EXPORT int gm_fstat(int fd, struct stat *st)
{
	enum gm_file_type type;
	struct gm_object *obj = gm_file_get(fd, &type);
	long ret;

	if (!obj)
		return fstat(fd, st);
	if (type == GM_FILE_GMEM)
		ret = gmem_fstat(gm_container_of(obj, struct gmem, obj), fd, st);
	else
		ret = other_fstat(type, fd, st);
	gm_object_put(obj);
	return (int)sys_ret(ret);
}

/*
 * Library fds have no read or write method, so the VFS refuses them with
 * EINVAL, and no setattr that takes a size (guest_memfd refuses every size;
 * the others are not regular files), so ftruncate is EINVAL too. Returns the
 * fd's type, or 0 when it is not a library fd.
 */
static enum gm_file_type lib_fd_type(int fd)
{
	enum gm_file_type type;
	struct gm_object *obj = gm_file_get(fd, &type);

	if (!obj)
		return 0;
	gm_object_put(obj);
	return type;
}

GM_EXPORT ssize_t gm_read(int fd, void *buf, size_t n)
{
	return lib_fd_type(fd) ? sys_ret(-EINVAL) : read(fd, buf, n);
}

GM_EXPORT ssize_t gm_write(int fd, const void *buf, size_t n)
{
	return lib_fd_type(fd) ? sys_ret(-EINVAL) : write(fd, buf, n);
}

/*
 * pread, pwrite and their vector forms on a library fd: a negative offset is
 * refused first. Pseudo files (guest_memfd, VM, vCPU) cannot do positioned
 * I/O at all; /dev/kvm can, but has no read or write method.
 */
static long positioned_io(enum gm_file_type type, off_t off)
{
	if (off < 0 || type == GM_FILE_KVM)
		return sys_ret(-EINVAL);
	return sys_ret(-ESPIPE);
}

GM_EXPORT ssize_t gm_pread(int fd, void *buf, size_t n, off_t off)
{
	enum gm_file_type type = lib_fd_type(fd);

	return type ? positioned_io(type, off) : pread(fd, buf, n, off);
}

GM_EXPORT ssize_t gm_pwrite(int fd, const void *buf, size_t n, off_t off)
{
	enum gm_file_type type = lib_fd_type(fd);

	return type ? positioned_io(type, off) : pwrite(fd, buf, n, off);
}

/* The VFS refuses a file without read or write methods before it looks at the iovec. */
GM_EXPORT ssize_t gm_readv(int fd, const struct iovec *iov, int iovcnt)
{
	return lib_fd_type(fd) ? sys_ret(-EINVAL) : readv(fd, iov, iovcnt);
}

GM_EXPORT ssize_t gm_writev(int fd, const struct iovec *iov, int iovcnt)
{
	return lib_fd_type(fd) ? sys_ret(-EINVAL) : writev(fd, iov, iovcnt);
}

GM_EXPORT ssize_t gm_preadv(int fd, const struct iovec *iov, int iovcnt, off_t off)
{
	enum gm_file_type type = lib_fd_type(fd);

	return type ? positioned_io(type, off) : preadv(fd, iov, iovcnt, off);
}

GM_EXPORT ssize_t gm_pwritev(int fd, const struct iovec *iov, int iovcnt, off_t off)
{
	enum gm_file_type type = lib_fd_type(fd);

	return type ? positioned_io(type, off) : pwritev(fd, iov, iovcnt, off);
}

GM_EXPORT off_t gm_lseek(int fd, off_t off, int whence)
{
	enum gm_file_type type = lib_fd_type(fd);

	if (!type)
		return lseek(fd, off, whence);
	/* An unknown whence is refused before the file is asked. */
	if (whence < SEEK_SET || whence > SEEK_HOLE)
		return sys_ret(-EINVAL);
	/* guest_memfd cannot seek; /dev/kvm, VM and vCPU fds seek nowhere and stay at 0. */
	return type == GM_FILE_GMEM ? sys_ret(-ESPIPE) : 0;
}

GM_EXPORT int gm_ftruncate(int fd, off_t len)
{
	return lib_fd_type(fd) ? (int)sys_ret(-EINVAL) : ftruncate(fd, len);
}

GM_EXPORT int gm_close(int fd)
{
	if (gm_file_close(fd))
		return 0;
	return gm_fd_hidden(fd) ? (int)sys_ret(-EBADF) : close(fd);
}

/* newfd is a new fd of oldfd's file: a library fd's gets its object too, or is closed again. */
static int dup_result(int oldfd, int newfd)
{
	int ret;

	if (newfd < 0)
		return newfd;
	ret = gm_file_dup(oldfd, newfd);
	if (ret < 0) {
		close(newfd);
		return (int)sys_ret(ret);
	}
	return newfd;
}

GM_EXPORT int gm_dup(int fd)
{
	return dup_result(fd, dup(fd));
}

GM_EXPORT int gm_dup3(int oldfd, int newfd, int flags)
{
	int ret;

	/* The number is the library's own: the kernel's EBUSY for an fd not ready to replace. */
	if (oldfd != newfd && gm_fd_hidden(newfd))
		return (int)sys_ret(-EBUSY);
	ret = dup3(oldfd, newfd, flags);

	if (ret < 0)
		return ret;
	/* The kernel closed what newfd was, silently: if it was ours, its entry goes. */
	gm_file_drop_stale(newfd);
	return dup_result(oldfd, ret);
}

GM_EXPORT int gm_dup2(int oldfd, int newfd)
{
	/* dup2 onto itself only checks that the fd is open; dup3 would refuse it. */
	if (oldfd == newfd)
		return dup2(oldfd, newfd);
	return gm_dup3(oldfd, newfd, 0);
}

#define KERNEL_O_LARGEFILE 0100000

GM_EXPORT int gm_fcntl(int fd, int cmd, ...)
{
	enum gm_file_type type;
	unsigned long arg;
	va_list ap;
	int ret;

	va_start(ap, cmd);
	arg = va_arg(ap, unsigned long);
	va_end(ap);
	if (cmd == F_DUPFD || cmd == F_DUPFD_CLOEXEC)
		return dup_result(fd, fcntl(fd, cmd, arg));
	type = lib_fd_type(fd);
	if (!type)
		return fcntl(fd, cmd, arg);
	switch (cmd) {
	case F_ADD_SEALS:
	case F_GET_SEALS:
		/* The handle is a memfd, the kernel's files are not: they have no seals. */
		return (int)sys_ret(-EINVAL);
	case F_GETFL:
		ret = fcntl(fd, cmd, arg);
		/*
		 * Anonymous inodes are made without O_LARGEFILE; only open(2) of
		 * /dev/kvm adds it. (glibc's O_LARGEFILE is 0 on 64-bit: the kernel's bit.)
		 */
		if (ret >= 0 && type != GM_FILE_KVM)
			ret &= ~KERNEL_O_LARGEFILE;
		return ret;
	default:
		return fcntl(fd, cmd, arg);
	}
}

#ifndef CLOSE_RANGE_UNSHARE
#define CLOSE_RANGE_UNSHARE (1U << 1)
#endif
#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif

GM_EXPORT int gm_close_range(unsigned int first, unsigned int last, int flags)
{
	if ((unsigned)flags & ~(CLOSE_RANGE_UNSHARE | CLOSE_RANGE_CLOEXEC) || first > last)
		return (int)sys_ret(-EINVAL);
	/* Marking close-on-exec closes nothing: the library's objects stay. */
	if (!(flags & CLOSE_RANGE_CLOEXEC)) {
		for (int fd = gm_file_next((int)(first > INT_MAX ? INT_MAX : first));
		     fd >= 0 && (unsigned)fd <= last; fd = gm_file_next(fd + 1))
			gm_file_close(fd);
	}
	/* The range goes to the kernel in pieces around the library's internal fds. */
	for (int fd = gm_fd_hidden_next((int)(first > INT_MAX ? INT_MAX : first));
	     fd >= 0 && (unsigned)fd <= last; fd = gm_fd_hidden_next(fd + 1)) {
		if ((unsigned)fd > first && syscall(SYS_close_range, first, fd - 1, flags) < 0)
			return -1;
		first = (unsigned)fd + 1;
	}
	if (first > last)
		return 0;
	return (int)syscall(SYS_close_range, first, last, flags);
}

GM_EXPORT int gm_statx(int dirfd, const char *path, int flags, unsigned int mask,
		       struct statx *stx)
{
	struct statx out = { 0 };
	struct stat st;

	if (!path || path[0] || !(flags & AT_EMPTY_PATH) || !lib_fd_type(dirfd))
		return statx(dirfd, path, flags, mask, stx);
	if (gm_fstat(dirfd, &st) < 0)
		return -1;
	out.stx_mask = STATX_BASIC_STATS;
	out.stx_blksize = (uint32_t)st.st_blksize;
	out.stx_nlink = (uint32_t)st.st_nlink;
	out.stx_uid = st.st_uid;
	out.stx_gid = st.st_gid;
	out.stx_mode = (uint16_t)st.st_mode;
	out.stx_ino = st.st_ino;
	out.stx_size = (uint64_t)st.st_size;
	out.stx_blocks = (uint64_t)st.st_blocks;
	out.stx_atime.tv_sec = st.st_atim.tv_sec;
	out.stx_atime.tv_nsec = (uint32_t)st.st_atim.tv_nsec;
	out.stx_mtime.tv_sec = st.st_mtim.tv_sec;
	out.stx_mtime.tv_nsec = (uint32_t)st.st_mtim.tv_nsec;
	out.stx_ctime.tv_sec = st.st_ctim.tv_sec;
	out.stx_ctime.tv_nsec = (uint32_t)st.st_ctim.tv_nsec;
	out.stx_rdev_major = major(st.st_rdev);
	out.stx_rdev_minor = minor(st.st_rdev);
	out.stx_dev_major = major(st.st_dev);
	out.stx_dev_minor = minor(st.st_dev);
	return (int)sys_ret(gm_copy_to_user(stx, &out, sizeof(out)));
}

#ifndef MADV_COLLAPSE
#define MADV_COLLAPSE 25 /* Linux 6.1 */
#endif
#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22 /* Linux 5.14 */
#define MADV_POPULATE_WRITE 23
#endif

static bool page_aligned(const void *addr)
{
	return !((uintptr_t)addr & (GM_PAGE_SIZE - 1));
}

/* MADV_REMOVE on a guest_memfd mapping punches a hole in the file, as fallocate does. */
static long remove_piece(const struct hostmap_piece *p)
{
	uint64_t end = p->off + (p->end - p->start);

	if (end > p->gmem->size)
		end = p->gmem->size;
	if (p->off >= end)
		return 0;
	return gmem_fallocate(p->gmem, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
			      (int64_t)p->off, (int64_t)(end - p->off));
}

GM_EXPORT int gm_madvise(void *addr, size_t len, int advice)
{
	struct hostmap_piece *pieces;
	uintptr_t at = (uintptr_t)addr, end = at + len;
	long ret = 0;
	int n;

	if (advice != MADV_COLLAPSE && advice != MADV_REMOVE && advice != MADV_DOFORK &&
	    advice != MADV_POPULATE_READ && advice != MADV_POPULATE_WRITE)
		return madvise(addr, len, advice);
	if (!page_aligned(addr))
		return (int)sys_ret(-EINVAL);
	n = hostmap_pieces(addr, len, &pieces);
	if (n <= 0)
		return n ? (int)sys_ret(n) : madvise(addr, len, advice);
	if (advice == MADV_POPULATE_READ || advice == MADV_POPULATE_WRITE) {
		hostmap_pieces_put(pieces, n);
		/*
		 * A private page refuses the fault: the kernel's populate says EFAULT.
		 * Here the kernel met the poison marker the fault handler laid.
		 */
		if (madvise(addr, len, advice) < 0)
			return (int)sys_ret(errno == EHWPOISON ? -EFAULT : -errno);
		return 0;
	}
	/* guest_memfd has no huge pages khugepaged could make; the library keeps a child out. */
	if (advice == MADV_COLLAPSE) {
		hostmap_pieces_put(pieces, n);
		return (int)sys_ret(-EINVAL);
	}
	for (int i = 0; i <= n && !ret; i++) {
		uintptr_t gap_end = i < n ? pieces[i].start : end;

		if (gap_end > at && madvise((void *)at, gap_end - at, advice) < 0)
			ret = -errno;
		else if (i < n && advice == MADV_REMOVE)
			ret = remove_piece(&pieces[i]);
		if (i < n)
			at = pieces[i].end;
	}
	hostmap_pieces_put(pieces, n);
	return (int)sys_ret(ret);
}

GM_EXPORT int gm_mprotect(void *addr, size_t len, int prot)
{
	struct hostmap_piece *pieces;
	int n;

	if (!(prot & PROT_EXEC) || !page_aligned(addr))
		return mprotect(addr, len, prot);
	n = hostmap_pieces(addr, len, &pieces);
	if (n <= 0)
		return n ? (int)sys_ret(n) : mprotect(addr, len, prot);
	hostmap_pieces_put(pieces, n);
	/* guest_memfd lives on a noexec mount: no mapping of it may become executable. */
	return (int)sys_ret(-EACCES);
}

/* Whether [addr, addr + len) holds a laid library mapping (1), none (0), or -errno. */
static int holds_laid(const void *addr, size_t len)
{
	struct hostmap_piece *pieces;
	int n = hostmap_pieces((void *)addr, len, &pieces), laid = 0;

	for (int i = 0; i < n; i++)
		laid |= pieces[i].laid;
	if (n > 0)
		hostmap_pieces_put(pieces, n);
	return n < 0 ? n : laid;
}

/*
 * A laid mapping is laid again by address at each conversion, and no event
 * tells the library that mremap moved or cut it: the library moves or shrinks
 * it itself (it cannot grow: hostmap_grow refuses), and a fixed destination
 * over one is unmapped through the library first, as the kernel's mremap
 * unmaps it. 1: done, *out holds the result; 0: go on; -errno.
 */
static int mremap_laid(void *old, size_t old_size, size_t new_size, int flags, void *new_addr,
		       void **out)
{
	int ret;

	if ((flags & MREMAP_FIXED) && page_aligned(new_addr) &&
	    ((uintptr_t)new_addr + new_size <= (uintptr_t)old ||
	     (uintptr_t)old + old_size <= (uintptr_t)new_addr)) {
		ret = holds_laid(new_addr, new_size);
		if (ret > 0)
			ret = hostmap_unmap(new_addr, new_size);
		if (ret < 0)
			return ret;
	}
	ret = holds_laid(old, old_size ? old_size : 1);
	if (ret <= 0)
		return ret;
	/* Two mappings of the same pages, one of them unrecorded. */
	if (flags & MREMAP_DONTUNMAP)
		return -EINVAL;
	if (new_size > old_size)
		return 0;
	return hostmap_move(old, old_size, new_size, flags, new_addr, out);
}

GM_EXPORT void *gm_mremap(void *old, size_t old_size, size_t new_size, int flags, ...)
{
	void *new_addr = NULL, *out;
	va_list ap;
	int ret;

	va_start(ap, flags);
	if (flags & MREMAP_FIXED)
		new_addr = va_arg(ap, void *);
	va_end(ap);
	if (!page_aligned(old) || !hostmap_exists())
		return mremap(old, old_size, new_size, flags, new_addr);
	ret = mremap_laid(old, old_size, new_size, flags, new_addr, &out);
	/* Faulting mappings' moves and shrinks reach the library as userfaultfd events; growth needs it first. */
	if (!ret && new_size > old_size)
		ret = hostmap_grow(old, old_size, new_size, flags, new_addr, &out);
	if (ret > 0)
		return out;
	if (ret < 0) {
		errno = -ret;
		return MAP_FAILED;
	}
	return mremap(old, old_size, new_size, flags, new_addr);
}

GM_EXPORT int gm_gmem_info(int fd, struct gm_gmem_info *info)
{
	int ret;
	struct gm_object *obj = gm_file_get_typed(fd, GM_FILE_GMEM, &ret);

	if (!obj)
		return ret;
	ret = gmem_info(gm_container_of(obj, struct gmem, obj), info);
	gm_object_put(obj);
	return ret;
}

#ifdef GM_TEST_HOOKS
int gmem_backing_fd(int fd)
{
	int ret;
	struct gm_object *obj = gm_file_get_typed(fd, GM_FILE_GMEM, &ret);

	if (!obj)
		return ret;
	ret = gm_container_of(obj, struct gmem, obj)->backing.fd;
	gm_object_put(obj);
	return ret;
}
#endif

GM_EXPORT int gm_stats(struct gm_stats *stats)
{
	struct gm_stats out = {
		.metadata_bytes = gm_heap_bytes(),
		.gmem_files = gmem_count(),
		.vms = vm_count(),
		.open_fds = gm_file_count(),
	};

	return gm_copy_to_user(stats, &out, sizeof(out));
}

GM_EXPORT int gm_vm_mmu_stats(int vm_fd, struct gm_mmu_stats *stats)
{
	int ret;
	struct gm_object *obj = gm_file_get_typed(vm_fd, GM_FILE_VM, &ret);

	if (!obj)
		return ret;
	ret = vm_mmu_stats(gm_container_of(obj, struct vm, obj), stats);
	gm_object_put(obj);
	return ret;
}


GM_EXPORT int gm_gmem_pin(int fd, uint64_t offset, uint64_t len, void **dma)
{
	int ret;
	struct gm_object *obj = gm_file_get_typed(fd, GM_FILE_GMEM, &ret);

	if (!obj)
		return ret;
	ret = gmem_pin(gm_container_of(obj, struct gmem, obj), offset, len, dma);
	gm_object_put(obj);
	return ret;
}

GM_EXPORT int gm_gmem_unpin(int fd, uint64_t offset, uint64_t len)
{
	int ret;
	struct gm_object *obj = gm_file_get_typed(fd, GM_FILE_GMEM, &ret);

	if (!obj)
		return ret;
	ret = gmem_unpin(gm_container_of(obj, struct gmem, obj), offset, len);
	gm_object_put(obj);
	return ret;
}

GM_EXPORT int gm_vm_info(int vm_fd, struct gm_vm_info *info)
{
	int ret;
	struct gm_object *obj = gm_file_get_typed(vm_fd, GM_FILE_VM, &ret);

	if (!obj)
		return ret;
	ret = vm_info(gm_container_of(obj, struct vm, obj), info);
	gm_object_put(obj);
	return ret;
}
