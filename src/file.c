/* The fd table: real process fds that stand for library objects. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>
#include "rcu.h"

#include "internal.h"

/*
 * Each library fd is a memfd of its own (a "handle"), so it is a real, unique
 * fd of the process. The table maps its number to the object; the handle's
 * inode tells a later fd that reuses the number after a plain close() apart.
 */
struct fd_entry {
	enum gm_file_type type;
	struct gm_object *obj;
	dev_t dev;
	ino_t ino;
	struct rcu_head rcu;
	struct fd_entry *next_retired;
};

#define FD_CHUNK_SHIFT 10
#define FD_CHUNK_SIZE (1 << FD_CHUNK_SHIFT)
#define FD_CHUNKS 4096 /* 4M fds */

static struct fd_entry *_Atomic *_Atomic fd_chunks[FD_CHUNKS];
/* Serialises installs and closes; lookups are RCU readers. */
static pthread_mutex_t fd_table_lock = PTHREAD_MUTEX_INITIALIZER;

/*
 * Signals are blocked while it is held: a handler that closes or dups a
 * library fd (both async-signal-safe in the kernel) would wait for its own
 * thread. Returns the mask to give back to table_unlock.
 */
static sigset_t table_lock(void)
{
	sigset_t all, old;

	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	pthread_mutex_lock(&fd_table_lock);
	return old;
}

static void table_unlock(const sigset_t *old)
{
	pthread_mutex_unlock(&fd_table_lock);
	pthread_sigmask(SIG_SETMASK, old, NULL);
}
static atomic_ullong open_fds;

/*
 * The process whose memory this table is. A vfork child shares the memory but
 * has its own copy of the fd table: its close or dup2 of a library fd must not
 * drop the parent's entry (the parent's fd is still open), so outside the owner
 * the table is only read. fork's child has its own copy of both, and owns it.
 */
static _Atomic pid_t table_owner;
static pthread_once_t table_owner_once = PTHREAD_ONCE_INIT;

static void table_owner_set(void)
{
	atomic_store(&table_owner, getpid());
}

static void table_owner_init(void)
{
	table_owner_set();
}

/*
 * A fork while another thread holds the table lock would leave it held in the
 * child for good: its first close of a library fd would wait forever. The
 * forking thread takes it (signals blocked, as every holder) across fork. No
 * other library lock is taken under it, nor it under one: no order to keep.
 */
static sigset_t fork_sigmask;

static void table_fork_prepare(void)
{
	fork_sigmask = table_lock();
}

static void table_fork_parent(void)
{
	table_unlock(&fork_sigmask);
}

static void table_fork_child(void)
{
	table_owner_set();
	table_unlock(&fork_sigmask);
}

__attribute__((constructor)) static void table_fork_register(void)
{
	pthread_atfork(table_fork_prepare, table_fork_parent, table_fork_child);
}

#ifdef GM_TEST_HOOKS
void gm_file_call_locked(void (*fn)(void *), void *arg)
{
	sigset_t sigmask = table_lock();

	fn(arg);
	table_unlock(&sigmask);
}
#endif

/* Called once an entry exists (or in install), so the owner was set by the process that made it. */
static bool table_owned_here(void)
{
	pthread_once(&table_owner_once, table_owner_init);
	return atomic_load(&table_owner) == getpid();
}

static struct fd_entry *_Atomic *fd_slot(int fd, bool create)
{
	unsigned chunk = (unsigned)fd >> FD_CHUNK_SHIFT;
	struct fd_entry *_Atomic *c;

	if (fd < 0 || chunk >= FD_CHUNKS)
		return NULL;
	c = atomic_load_explicit(&fd_chunks[chunk], memory_order_acquire);
	if (!c && create) {
		c = gm_zalloc(FD_CHUNK_SIZE * sizeof(*c));
		if (!c)
			return NULL;
		atomic_store_explicit(&fd_chunks[chunk], c, memory_order_release);
	}
	return c ? &c[fd & (FD_CHUNK_SIZE - 1)] : NULL;
}

/* Fills e for the handle open as fd: its inode tells it apart from a later fd of that number. */
static int entry_fill(struct fd_entry *e, enum gm_file_type type, struct gm_object *obj, int fd)
{
	struct stat st;

	if (fstat(fd, &st) < 0)
		return -errno;
	e->type = type;
	e->obj = obj;
	e->dev = st.st_dev;
	e->ino = st.st_ino;
	return 0;
}

static void fd_entry_free(struct rcu_head *head);

/* Entries unpublished by a signal handler, freed after the next grace period someone waits for. */
static struct fd_entry *_Atomic retired;

/*
 * Frees e, no longer in the table, once no reader can hold it. A signal
 * handler that interrupted this thread's own lookup (close() of a library fd
 * is async-signal-safe in the kernel) cannot wait for that: e waits for the
 * next grace period instead.
 */
static void fd_entry_retire(struct fd_entry *e)
{
	struct fd_entry *earlier;

	if (gm_rcu_read_held()) {
		e->next_retired = atomic_load(&retired);
		while (!atomic_compare_exchange_weak(&retired, &e->next_retired, e))
			;
		return;
	}
	/* Taken before the grace period, which then covers them too. */
	earlier = atomic_exchange(&retired, NULL);
	gm_synchronize_rcu();
	fd_entry_free(&e->rcu);
	while (earlier) {
		e = earlier;
		earlier = e->next_retired;
		fd_entry_free(&e->rcu);
	}
}

/* Puts e in fd's slot; an entry already there is stale (its fd was closed or replaced). */
static int publish(int fd, struct fd_entry *e)
{
	struct fd_entry *_Atomic *slot;
	struct fd_entry *stale;
	sigset_t sigmask;

	sigmask = table_lock();
	slot = fd_slot(fd, true);
	if (!slot) {
		table_unlock(&sigmask);
		return -EMFILE;
	}
	stale = atomic_exchange(slot, e);
	/* Under the lock, so it only grows. */
	if (fd > atomic_load_explicit(&gm_file_max_fd, memory_order_relaxed))
		atomic_store_explicit(&gm_file_max_fd, fd, memory_order_relaxed);
	table_unlock(&sigmask);
	atomic_fetch_add(&open_fds, 1);
	if (stale) {
		atomic_fetch_sub(&open_fds, 1);
		fd_entry_retire(stale);
	}
	return 0;
}

int gm_file_install(enum gm_file_type type, struct gm_object *obj, const char *name, bool cloexec)
{
	struct fd_entry *e = gm_zalloc(sizeof(*e));
	int fd, ret;

	if (!e)
		return -ENOMEM;
	/* A vfork child's new fd number may be one of its parent's library fds. */
	if (!table_owned_here()) {
		ret = -EPERM;
		goto err_free;
	}
	fd = memfd_create(name, MFD_ALLOW_SEALING | (cloexec ? MFD_CLOEXEC : 0));
	if (fd < 0) {
		ret = -errno;
		goto err_free;
	}
	/*
	 * A plain ftruncate, fallocate or write on the fd must change nothing the
	 * library relies on. A vCPU's handle is sized for its run area first and
	 * sealed by vcpu_create; every other handle stays empty for good.
	 */
	if (type != GM_FILE_VCPU &&
	    fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL) < 0) {
		ret = -errno;
		goto err_close;
	}
	ret = entry_fill(e, type, obj, fd);
	if (ret)
		goto err_close;
	ret = publish(fd, e);
	if (ret)
		goto err_close;
	return fd;

err_close:
	close(fd);
err_free:
	gm_free(e);
	return ret;
}

static void device_release(struct gm_object *obj)
{
	gm_free(obj);
}

int gm_file_open_device(enum gm_file_type type, const char *name, bool cloexec)
{
	struct gm_object *obj = gm_zalloc(sizeof(*obj));
	int fd;

	if (!obj)
		return -ENOMEM;
	gm_object_init(obj, device_release);
	fd = gm_file_install(type, obj, name, cloexec);
	if (fd < 0)
		gm_object_put(obj);
	return fd;
}

static bool fd_matches(int fd, const struct fd_entry *e)
{
	struct stat st;

	return fstat(fd, &st) == 0 && st.st_dev == e->dev && st.st_ino == e->ino;
}

struct gm_object *gm_file_get(int fd, enum gm_file_type *type)
{
	struct fd_entry *_Atomic *slot = fd_slot(fd, false);
	struct gm_object *obj = NULL;
	struct fd_entry *e;

	if (!slot)
		return NULL;
	gm_rcu_read_lock();
	e = atomic_load_explicit(slot, memory_order_acquire);
	if (e && fd_matches(fd, e)) {
		gm_object_get(e->obj);
		obj = e->obj;
		*type = e->type;
	}
	gm_rcu_read_unlock();
	return obj;
}

struct gm_object *gm_file_get_typed(int fd, enum gm_file_type want, int *err)
{
	enum gm_file_type type;
	struct gm_object *obj = gm_file_get(fd, &type);

	if (!obj) {
		*err = -EBADF;
		return NULL;
	}
	if (type != want) {
		gm_object_put(obj);
		*err = -EINVAL;
		return NULL;
	}
	return obj;
}

static void fd_entry_free(struct rcu_head *head)
{
	struct fd_entry *e = caa_container_of(head, struct fd_entry, rcu);

	gm_object_put(e->obj);
	gm_free(e);
}

/* Returns 1 when fd was a library fd (now closed), 0 when it is not ours. */
int gm_file_close(int fd)
{
	struct fd_entry *_Atomic *slot = fd_slot(fd, false);
	struct fd_entry *e;
	sigset_t sigmask;

	if (!slot)
		return 0;
	sigmask = table_lock();
	e = atomic_load(slot);
	if (!e || !fd_matches(fd, e)) {
		table_unlock(&sigmask);
		return 0;
	}
	if (!table_owned_here()) {
		table_unlock(&sigmask);
		close(fd);
		return 1;
	}
	atomic_store(slot, NULL);
	close(fd);
	table_unlock(&sigmask);
	atomic_fetch_sub(&open_fds, 1);
	/* Readers may still hold the entry: the object's reference goes after a grace period. */
	fd_entry_retire(e);
	return 1;
}

/*
 * The library's internal fds (gm_fd_hide), by number, with the inode that
 * tells a later fd of that number apart once the library closed its own.
 */
struct hidden_fd {
	_Atomic dev_t dev;
	_Atomic ino_t ino; /* 0: none */
};

static struct hidden_fd *_Atomic hidden_chunks[FD_CHUNKS];
_Atomic int gm_fd_hidden_max = -1;

static struct hidden_fd *hidden_slot(int fd, bool create)
{
	unsigned chunk = (unsigned)fd >> FD_CHUNK_SHIFT;
	struct hidden_fd *c, *none = NULL;

	if (fd < 0 || chunk >= FD_CHUNKS)
		return NULL;
	c = atomic_load_explicit(&hidden_chunks[chunk], memory_order_acquire);
	if (!c && create) {
		c = gm_zalloc(FD_CHUNK_SIZE * sizeof(*c));
		if (c && !atomic_compare_exchange_strong(&hidden_chunks[chunk], &none, c)) {
			gm_free(c);
			c = none;
		}
	}
	return c ? &c[fd & (FD_CHUNK_SIZE - 1)] : NULL;
}

static void hidden_mark(int fd)
{
	struct hidden_fd *h = hidden_slot(fd, true);
	struct stat st;
	int max;

	if (!h || fstat(fd, &st) < 0)
		return;
	atomic_store(&h->dev, st.st_dev);
	atomic_store(&h->ino, st.st_ino);
	max = atomic_load(&gm_fd_hidden_max);
	while (fd > max && !atomic_compare_exchange_weak(&gm_fd_hidden_max, &max, fd))
		;
}

bool gm_fd_hidden(int fd)
{
	struct hidden_fd *h = hidden_slot(fd, false);
	struct stat st;
	ino_t ino = h ? atomic_load(&h->ino) : 0;

	return ino && fstat(fd, &st) == 0 && st.st_ino == ino && st.st_dev == atomic_load(&h->dev);
}

int gm_fd_hidden_next(int from)
{
	int max = atomic_load(&gm_fd_hidden_max);

	for (int fd = from < 0 ? 0 : from; fd <= max; fd++) {
		if (!atomic_load_explicit(&hidden_chunks[(unsigned)fd >> FD_CHUNK_SHIFT],
					  memory_order_acquire)) {
			fd |= FD_CHUNK_SIZE - 1;
			continue;
		}
		if (gm_fd_hidden(fd))
			return fd;
	}
	return -1;
}

int gm_fd_hide(int fd)
{
	struct rlimit rl;
	int high, flags;

	if (fd < 0 || getrlimit(RLIMIT_NOFILE, &rl) < 0)
		goto out;
	/* Above the numbers a program uses, within the limit, without growing the table much. */
	high = rl.rlim_cur / 2 < 1024 ? (int)(rl.rlim_cur / 2) : 1024;
	if (fd >= high || (flags = fcntl(fd, F_GETFD)) < 0)
		goto out;
	high = fcntl(fd, (flags & FD_CLOEXEC) ? F_DUPFD_CLOEXEC : F_DUPFD, high);
	if (high < 0)
		goto out;
	close(fd);
	fd = high;
out:
	if (fd >= 0)
		hidden_mark(fd);
	return fd;
}

uint64_t gm_file_count(void)
{
	return atomic_load(&open_fds);
}

_Atomic int gm_file_max_fd = -1;

bool gm_file_slot_used(int fd)
{
	struct fd_entry *_Atomic *slot = fd_slot(fd, false);

	return slot && atomic_load_explicit(slot, memory_order_relaxed);
}

int gm_file_dup(int oldfd, int newfd)
{
	struct fd_entry *e = gm_zalloc(sizeof(*e));
	enum gm_file_type type;
	struct gm_object *obj;
	int ret;

	if (!e)
		return -ENOMEM;
	obj = gm_file_get(oldfd, &type);
	/* In a vfork child the duplicate stays a plain fd: recording it would change the parent's table. */
	if (obj && !table_owned_here()) {
		gm_object_put(obj);
		obj = NULL;
	}
	if (!obj) {
		gm_free(e);
		return 0;
	}
	/* newfd is a second fd of the same handle: the same inode tells it apart from reuse. */
	ret = entry_fill(e, type, obj, newfd);
	if (!ret)
		ret = publish(newfd, e);
	if (ret)
		goto err;
	return 1;
err:
	gm_object_put(obj);
	gm_free(e);
	return ret;
}

void gm_file_drop_stale(int fd)
{
	struct fd_entry *_Atomic *slot = fd_slot(fd, false);
	struct fd_entry *e;
	sigset_t sigmask;

	if (!slot)
		return;
	sigmask = table_lock();
	e = atomic_load(slot);
	if (!e || fd_matches(fd, e) || !table_owned_here()) {
		table_unlock(&sigmask);
		return;
	}
	atomic_store(slot, NULL);
	table_unlock(&sigmask);
	atomic_fetch_sub(&open_fds, 1);
	fd_entry_retire(e);
}

int gm_file_next(int from)
{
	int max = atomic_load(&gm_file_max_fd);

	for (int fd = from < 0 ? 0 : from; fd <= max;) {
		struct fd_entry *_Atomic *c =
			atomic_load_explicit(&fd_chunks[(unsigned)fd >> FD_CHUNK_SHIFT],
					     memory_order_acquire);

		if (!c) {
			fd = (fd | (FD_CHUNK_SIZE - 1)) + 1;
			continue;
		}
		if (atomic_load_explicit(&c[fd & (FD_CHUNK_SIZE - 1)], memory_order_relaxed))
			return fd;
		fd++;
	}
	return -1;
}
