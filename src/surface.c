/* The kernel-compatible surface: each gm_* call acts as the syscall would on the kernel's fd. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdarg.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "gmem.h"
#include "vcpu.h"

/* Sets errno from a negative errno result, as a syscall returns. */
static long sys_ret(long ret)
{
	if (ret < 0) {
		errno = (int)-ret;
		return -1;
	}
	return ret;
}

static void kvm_release(struct gm_object *obj)
{
	gm_free(obj);
}

GM_EXPORT int gm_open_kvm(void)
{
	struct gm_object *obj = gm_zalloc(sizeof(*obj));
	int fd;

	if (!obj)
		return (int)sys_ret(-ENOMEM);
	gm_object_init(obj, kvm_release);
	fd = gm_file_install(GM_FILE_KVM, obj, "kvm", false);
	if (fd < 0)
		gm_object_put(obj);
	return (int)sys_ret(fd);
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
		ret = vm_ioctl(gm_container_of(obj, struct vm, obj), request, arg);
		break;
	case GM_FILE_VCPU:
		ret = vcpu_ioctl(gm_container_of(obj, struct vcpu, obj), request, arg);
		break;
	default:
		ret = -ENOTTY;
		break;
	}
	gm_object_put(obj);
	return (int)sys_ret(ret);
}

GM_EXPORT void *gm_mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
	enum gm_file_type type;
	struct gm_object *obj;
	void *out = MAP_FAILED;
	int ret;

	/* An anonymous mapping ignores the fd, as mmap(2) does. */
	if (flags & MAP_ANONYMOUS)
		return mmap(addr, len, prot, flags, fd, off);
	obj = gm_file_get(fd, &type);
	if (!obj)
		return mmap(addr, len, prot, flags, fd, off);
	switch (type) {
	case GM_FILE_GMEM:
		ret = hostmap_create(gm_container_of(obj, struct gmem, obj), addr, len, prot, flags,
				     off, &out);
		break;
	case GM_FILE_VCPU:
		ret = vcpu_mmap(gm_container_of(obj, struct vcpu, obj), addr, len, prot, flags, off,
				&out);
		break;
	default:
		/* anon-inode files without an mmap method */
		ret = -ENODEV;
		break;
	}
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

GM_EXPORT int gm_fallocate(int fd, int mode, off_t off, off_t len)
{
	enum gm_file_type type;
	struct gm_object *obj = gm_file_get(fd, &type);
	long ret;

	if (!obj)
		return fallocate(fd, mode, off, len);
	if (type == GM_FILE_GMEM)
		ret = gmem_fallocate(gm_container_of(obj, struct gmem, obj), mode, off, len);
	else
		ret = (off < 0 || len <= 0) ? -EINVAL : -ENODEV; /* not a regular file */
	gm_object_put(obj);
	return (int)sys_ret(ret);
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
		ret = fstat(fd, st) < 0 ? -errno : 0;
	gm_object_put(obj);
	return (int)sys_ret(ret);
}

/* Library fds have no read, write or llseek methods: the VFS answers for them. */
static long no_method(int fd, long err)
{
	enum gm_file_type type;
	struct gm_object *obj = gm_file_get(fd, &type);

	if (!obj)
		return 1;
	gm_object_put(obj);
	return err;
}

GM_EXPORT ssize_t gm_read(int fd, void *buf, size_t n)
{
	long ret = no_method(fd, -EINVAL);

	return ret == 1 ? read(fd, buf, n) : sys_ret(ret);
}

GM_EXPORT ssize_t gm_write(int fd, const void *buf, size_t n)
{
	long ret = no_method(fd, -EINVAL);

	return ret == 1 ? write(fd, buf, n) : sys_ret(ret);
}

GM_EXPORT ssize_t gm_pread(int fd, void *buf, size_t n, off_t off)
{
	long ret = no_method(fd, -ESPIPE);

	return ret == 1 ? pread(fd, buf, n, off) : sys_ret(ret);
}

GM_EXPORT off_t gm_lseek(int fd, off_t off, int whence)
{
	long ret = no_method(fd, -ESPIPE);

	return ret == 1 ? lseek(fd, off, whence) : sys_ret(ret);
}

GM_EXPORT int gm_ftruncate(int fd, off_t len)
{
	/* guest_memfd's setattr refuses any size change; anon inodes are not regular files. */
	long ret = no_method(fd, -EINVAL);

	return ret == 1 ? ftruncate(fd, len) : (int)sys_ret(ret);
}

GM_EXPORT int gm_close(int fd)
{
	return gm_file_close(fd) ? 0 : close(fd);
}

GM_EXPORT int gm_gmem_info(int fd, struct gm_gmem_info *info)
{
	enum gm_file_type type;
	struct gm_object *obj = gm_file_get(fd, &type);
	int ret;

	if (!obj)
		return -EBADF;
	ret = type == GM_FILE_GMEM ? gmem_info(gm_container_of(obj, struct gmem, obj), info)
				   : -EINVAL;
	gm_object_put(obj);
	return ret;
}

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
	enum gm_file_type type;
	struct gm_object *obj = gm_file_get(vm_fd, &type);
	int ret;

	if (!obj)
		return -EBADF;
	ret = type == GM_FILE_VM ? vm_mmu_stats(gm_container_of(obj, struct vm, obj), stats) : -EINVAL;
	gm_object_put(obj);
	return ret;
}
