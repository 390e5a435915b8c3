/* The process's userfaultfd and the thread that reads it. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "userfault.h"

#define UFFD_NEEDED (UFFD_FEATURE_MISSING_SHMEM | UFFD_FEATURE_MISSING_HUGETLBFS | \
		     UFFD_FEATURE_MINOR_SHMEM | UFFD_FEATURE_MINOR_HUGETLBFS | \
		     UFFD_FEATURE_EVENT_UNMAP | UFFD_FEATURE_EVENT_REMAP | UFFD_FEATURE_THREAD_ID)
#define UFFD_WANTED (UFFD_FEATURE_EXACT_ADDRESS | UFFD_FEATURE_POISON)

static pthread_once_t uffd_once = PTHREAD_ONCE_INIT;
static int uffd = -1, uffd_err;
/* A forked child inherits the fd, but it acts on its creator's address space, without a reader. */
static pid_t uffd_pid;

/*
 * Messages read but not yet handled. The reader holds queue_lock across its
 * read and the append, so that a munmap that has returned (its event was
 * read) finds its event here when anyone takes the queue afterwards. Plain
 * malloc: the reader's scratch is no object's metadata, and the library's
 * allocation-failure hook must not reach a thread the caller cannot see.
 */
static pthread_mutex_t queue_lock = PTHREAD_MUTEX_INITIALIZER;
static struct uffd_msg *queue;
static size_t queue_nr, queue_cap;

static int uffd_open(void)
{
	int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);

	/* Without the privilege for kernel-mode faults, user-mode faults still reach us. */
	if (fd < 0 && errno == EPERM)
		fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY);
	return fd < 0 ? -errno : gm_fd_hide(fd);
}

/* The features this kernel offers: UFFDIO_API works once per fd, so a probe takes its own. */
static int64_t uffd_features(void)
{
	struct uffdio_api api = { .api = UFFD_API };
	int fd = uffd_open();
	int64_t ret;

	if (fd < 0)
		return fd;
	ret = ioctl(fd, UFFDIO_API, &api) < 0 ? -errno : (int64_t)api.features;
	close(fd);
	return ret;
}

/* Appends what can be read now; returns with nothing left to read or no memory to hold it. */
static void queue_fill(void)
{
	pthread_mutex_lock(&queue_lock);
	for (;;) {
		ssize_t n;

		if (queue_nr == queue_cap) {
			size_t cap = queue_cap ? 2 * queue_cap : 64;
			struct uffd_msg *q = realloc(queue, cap * sizeof(*q));

			/* The kernel keeps the rest; the loop comes back for it. */
			if (!q)
				break;
			queue = q;
			queue_cap = cap;
		}
		n = read(uffd, &queue[queue_nr], (queue_cap - queue_nr) * sizeof(*queue));
		if (n <= 0)
			break;
		queue_nr += (size_t)n / sizeof(*queue);
	}
	pthread_mutex_unlock(&queue_lock);
}

void userfault_take(struct uffd_msg **msgs, size_t *nr)
{
	pthread_mutex_lock(&queue_lock);
	*msgs = queue;
	*nr = queue_nr;
	queue = NULL;
	queue_nr = queue_cap = 0;
	pthread_mutex_unlock(&queue_lock);
}

/*
 * Reads without taking any other lock: a munmap or mremap waits for its
 * event to be read, and its caller may hold hostmap_lock. Faults that wait
 * for a file's lock are tried again every millisecond.
 */
/* Who answers faults and events: the host mappings, which sit above this file. */
static bool (*_Atomic uffd_service)(void);

static void *uffd_reader(void *arg)
{
	struct pollfd pfd = { .fd = uffd, .events = POLLIN };
	bool waiting = false;

	(void)arg;
	for (;;) {
		poll(&pfd, 1, waiting ? 1 : -1);
		queue_fill();
		waiting = atomic_load(&uffd_service)();
	}
	return NULL;
}

static void uffd_init(void)
{
	int64_t offered = uffd_features();
	struct uffdio_api api = { .api = UFFD_API };
	sigset_t all, old;
	pthread_t thread;
	int fd;

	if (offered < 0 || (offered & UFFD_NEEDED) != UFFD_NEEDED) {
		uffd_err = offered < 0 ? (int)offered : -EOPNOTSUPP;
		return;
	}
	fd = uffd_open();
	if (fd < 0) {
		uffd_err = fd;
		return;
	}
	api.features = (uint64_t)offered & (UFFD_NEEDED | UFFD_WANTED);
	if (ioctl(fd, UFFDIO_API, &api) < 0)
		goto err_close;
	uffd = fd;
	uffd_pid = getpid();
	/* The reader takes no signal: a VMM's handlers must not run on it. */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	errno = pthread_create(&thread, NULL, uffd_reader, NULL);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (errno) {
		uffd = -1;
		goto err_close;
	}
	pthread_detach(thread);
	return;

err_close:
	uffd_err = -errno;
	close(fd);
}

int userfault_init(bool (*service)(void))
{
	/* One service for the process (hostmap_service); set before the reader can run. */
	atomic_store(&uffd_service, service);
	pthread_once(&uffd_once, uffd_init);
	if (uffd >= 0 && uffd_pid != getpid())
		return -EOPNOTSUPP;
	return uffd >= 0 ? 0 : uffd_err ? uffd_err : -EOPNOTSUPP;
}

/* Whether tid faulted in user mode: outside a syscall, where a signal is the kernel's answer. */
static bool in_user_mode(pid_t tid)
{
	char path[64];
	long nr = 0;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/self/task/%d/syscall", (int)tid);
	f = fopen(path, "re");
	if (!f)
		return false;
	if (fscanf(f, "%ld", &nr) != 1)
		nr = 0;
	fclose(f);
	return nr == -1;
}

/* Whether a SIGBUS queued to tid reaches a handler or the default action; false if it would be lost. */
static bool sigbus_deliverable(pid_t tid)
{
	struct sigaction sa;
	char path[64], line[128];
	unsigned long long mask;
	bool ok = true;
	FILE *f;

	if (sigaction(SIGBUS, NULL, &sa) || sa.sa_handler == SIG_IGN || !in_user_mode(tid))
		return false;
	snprintf(path, sizeof(path), "/proc/self/task/%d/status", (int)tid);
	f = fopen(path, "re");
	if (!f)
		return false;
	/* Blocked, or still pending from the last fault: the thread is in the kernel or ignores it. */
	while (ok && fgets(line, sizeof(line), f))
		if ((sscanf(line, "SigPnd: %llx", &mask) == 1 || sscanf(line, "SigBlk: %llx", &mask) == 1) &&
		    (mask & (1ULL << (SIGBUS - 1))))
			ok = false;
	fclose(f);
	return ok;
}

bool userfault_sigbus(pid_t tid, void *addr)
{
	siginfo_t si = { .si_signo = SIGBUS, .si_code = BUS_ADRERR };

	si.si_addr = addr;
	return sigbus_deliverable(tid) &&
	       !syscall(SYS_rt_tgsigqueueinfo, getpid(), tid, SIGBUS, &si);
}

int userfault_register(void *addr, size_t len)
{
	struct uffdio_register reg = {
		.range = { (uintptr_t)addr, len },
		.mode = UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_MINOR,
	};

	return ioctl(uffd, UFFDIO_REGISTER, &reg) < 0 ? -errno : 0;
}

int userfault_continue(void *addr, size_t len)
{
	struct uffdio_continue cont = { .range = { (uintptr_t)addr, len } };

	return ioctl(uffd, UFFDIO_CONTINUE, &cont) < 0 ? -errno : 0;
}

int userfault_poison(void *addr, size_t len)
{
	struct uffdio_poison poison = { .range = { (uintptr_t)addr, len } };

	return ioctl(uffd, UFFDIO_POISON, &poison) < 0 ? -errno : 0;
}

void userfault_wake(void *addr, size_t len)
{
	struct uffdio_range range = { (uintptr_t)addr, len };

	ioctl(uffd, UFFDIO_WAKE, &range);
}
