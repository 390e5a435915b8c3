/*
 * Which layout libgmem's host mappings of a file use (docs/compat.md, "Host
 * mappings"): faults answered through userfaultfd, or "laid" (one kernel
 * mapping per run of pages) where there is no userfaultfd, where
 * GMEM_USERFAULTFD=0 says so, or where the store is the host's guest_memfd.
 */
#ifndef TESTS_HARNESS_HOSTMAP_LAYOUT_H
#define TESTS_HARNESS_HOSTMAP_LAYOUT_H

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <gmem/gmem.h>

/* What the library needs of userfaultfd for the faulting layout (src/userfault.c). */
#define HOSTMAP_UFFD_NEEDED                                                                        \
	(UFFD_FEATURE_MISSING_SHMEM | UFFD_FEATURE_MISSING_HUGETLBFS | UFFD_FEATURE_MINOR_SHMEM |  \
	 UFFD_FEATURE_MINOR_HUGETLBFS | UFFD_FEATURE_EVENT_UNMAP | UFFD_FEATURE_EVENT_REMAP |      \
	 UFFD_FEATURE_THREAD_ID)

/* Whether this process can have a userfaultfd with the features the library needs. */
static inline bool hostmap_userfaultfd_usable(void)
{
	struct uffdio_api api = { .api = UFFD_API };
	int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	bool ok;

	if (fd < 0 && errno == EPERM)
		fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY);
	if (fd < 0)
		return false;
	ok = !ioctl(fd, UFFDIO_API, &api) &&
	     (api.features & HOSTMAP_UFFD_NEEDED) == HOSTMAP_UFFD_NEEDED;
	close(fd);
	return ok;
}

/* Whether mappings of the guest_memfd gmem (a library fd) are laid rather than faulting. */
static inline bool hostmap_laid(int gmem)
{
	const char *env = getenv("GMEM_USERFAULTFD");
	struct gm_gmem_info info;

	if (env && !strcmp(env, "0"))
		return true;
	if (!gm_gmem_info(gmem, &info) && info.backing == GM_BACKING_HOST_GMEM)
		return true;
	return !hostmap_userfaultfd_usable();
}

/* Skip reasons, one string each so that make test's summary groups them. */
#define HOSTMAP_SKIP_LAID_UNSEEN                                                                   \
	"laid host mappings (no userfaultfd): a plain munmap or mremap is not seen, "              \
	"use gm_munmap (docs/compat.md)"
#define HOSTMAP_SKIP_LAID_RUNS                                                                     \
	"laid host mappings (no userfaultfd): one kernel mapping per run, by design (docs/compat.md)"
#define HOSTMAP_SKIP_FAULTING                                                                      \
	"a limit of laid host mappings only: make test runs it with GMEM_USERFAULTFD=0"

#endif
