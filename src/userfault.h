/* The process's userfaultfd: faults on host mappings of guest_memfd files come to the library through it. */
#ifndef GMEM_USERFAULT_H
#define GMEM_USERFAULT_H

#include <linux/userfaultfd.h>
#include <sys/types.h>

#include "internal.h"

/* Linux 6.6 UAPI, for older system headers. */
#ifndef UFFD_FEATURE_POISON
#define UFFD_FEATURE_POISON (1 << 14)
#define _UFFDIO_POISON 0x08
struct uffdio_poison {
	struct uffdio_range range;
	__u64 mode;
	__s64 updated;
};
#define UFFDIO_POISON _IOWR(UFFDIO, _UFFDIO_POISON, struct uffdio_poison)
#endif

/*
 * Opens the userfaultfd and starts its reader once; 0, or -errno where the
 * host has none. The reader calls service after reading messages; it returns
 * whether faults still wait (the reader then polls again within 1 ms).
 */
int userfault_init(bool (*service)(void));
/* Registers [addr, addr + len) for missing and minor faults. */
int userfault_register(void *addr, size_t len);
/* Maps the page cache's pages at [addr, addr + len) and wakes the faulting threads. */
int userfault_continue(void *addr, size_t len);
/* Makes [addr, addr + len) raise SIGBUS in the kernel itself (a poison marker, gone with the next zap). */
int userfault_poison(void *addr, size_t len);
/*
 * Queues the kernel's SIGBUS for a fault at addr (BUS_ADRERR) to thread tid;
 * false where a signal would not do what the kernel's does: a fault taken in
 * kernel mode (inside a syscall), or SIGBUS blocked, ignored or pending.
 */
bool userfault_sigbus(pid_t tid, void *addr);
/* Wakes the threads waiting on [addr, addr + len) to fault again. */
void userfault_wake(void *addr, size_t len);
/*
 * Moves the messages read so far to *msgs (the caller frees it with
 * free(3)); their number in *nr. Every event that a munmap or mremap has
 * waited for is among them once that call has returned.
 */
void userfault_take(struct uffd_msg **msgs, size_t *nr);

#endif
