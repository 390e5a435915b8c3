/* Copies between the library and caller memory that report -EFAULT instead of crashing. */
#define _GNU_SOURCE
#include <sys/uio.h>
#include <unistd.h>

#if __has_include(<valgrind/memcheck.h>)
#include <valgrind/memcheck.h>
#define HAVE_MEMCHECK 1
#else
#define HAVE_MEMCHECK 0
#endif

#include "internal.h"

/*
 * Valgrind does not follow process_vm_readv/writev into our own address space: it would
 * see the destination as never written, and every later use of it as uninitialised. Under
 * valgrind, hand the source's validity bits to the destination, so a copy of defined bytes
 * is defined and a copy of uninitialised bytes stays uninitialised, as with memcpy.
 */
static void copy_validity(void *dst, const void *src, size_t n)
{
#if HAVE_MEMCHECK
	unsigned char vbits[512];

	if (!RUNNING_ON_VALGRIND)
		return;
	for (size_t done = 0, chunk; done < n; done += chunk) {
		chunk = n - done < sizeof(vbits) ? n - done : sizeof(vbits);
		if (VALGRIND_GET_VBITS((const char *)src + done, vbits, chunk) != 1 ||
		    VALGRIND_SET_VBITS((char *)dst + done, vbits, chunk) != 1)
			VALGRIND_MAKE_MEM_DEFINED_IF_ADDRESSABLE((char *)dst + done, chunk);
	}
#endif
}

/*
 * process_vm_readv/writev on our own pid let the kernel check the caller's
 * pointer, as copy_from_user does for an ioctl argument.
 */
int gm_copy_from_user(void *dst, const void *src, size_t n)
{
	struct iovec local = { dst, n };
	struct iovec remote = { (void *)src, n };
	ssize_t done = process_vm_readv(getpid(), &local, 1, &remote, 1, 0);

	if (done != (ssize_t)n)
		return -EFAULT;
	copy_validity(dst, src, n);
	return 0;
}

int gm_copy_to_user(void *dst, const void *src, size_t n)
{
	struct iovec local = { (void *)src, n };
	struct iovec remote = { dst, n };
	ssize_t done = process_vm_writev(getpid(), &local, 1, &remote, 1, 0);

	if (done != (ssize_t)n)
		return -EFAULT;
	copy_validity(dst, src, n);
	return 0;
}
