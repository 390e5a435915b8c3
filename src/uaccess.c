/* Copies between the library and caller memory that report -EFAULT instead of crashing. */
#define _GNU_SOURCE
#include <sys/uio.h>
#include <unistd.h>

#include "internal.h"

/*
 * process_vm_readv/writev on our own pid let the kernel check the caller's
 * pointer, as copy_from_user does for an ioctl argument.
 */
int gm_copy_from_user(void *dst, const void *src, size_t n)
{
	struct iovec local = { dst, n };
	struct iovec remote = { (void *)src, n };
	ssize_t done = process_vm_readv(getpid(), &local, 1, &remote, 1, 0);

	return done == (ssize_t)n ? 0 : -EFAULT;
}

int gm_copy_to_user(void *dst, const void *src, size_t n)
{
	struct iovec local = { (void *)src, n };
	struct iovec remote = { dst, n };
	ssize_t done = process_vm_writev(getpid(), &local, 1, &remote, 1, 0);

	return done == (ssize_t)n ? 0 : -EFAULT;
}
