/* Declarations shared by the library's objects; not installed. */
#ifndef GMEM_INTERNAL_H
#define GMEM_INTERNAL_H

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

#include <gmem/gmem.h>

#define GM_EXPORT __attribute__((visibility("default")))

/* Sanitizer builds: GCC defines __SANITIZE_*__, Clang (make fuzz) only answers __has_feature. */
#if defined(__SANITIZE_ADDRESS__)
#define GM_SANITIZE_ADDRESS 1
#endif
#if defined(__SANITIZE_THREAD__)
#define GM_SANITIZE_THREAD 1
#endif
#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define GM_SANITIZE_ADDRESS 1
#endif
#if __has_feature(thread_sanitizer)
#define GM_SANITIZE_THREAD 1
#endif
#endif

/* The hypercalls KVM_CAP_EXIT_HYPERCALL can route to userspace: KVM keeps this mask internal too. */
#define KVM_EXIT_HYPERCALL_VALID_MASK (1 << KVM_HC_MAP_GPA_RANGE)

#define GM_PAGE_SHIFT 12
#define GM_PAGE_SIZE (1ULL << GM_PAGE_SHIFT)
#define GM_HUGE_2M_SHIFT 21
#define GM_HUGE_1G_SHIFT 30

#define GM_ALIGNED(x, a) (((x) & ((a) - 1)) == 0)

/* Distinct types for guest-physical addresses, frame numbers and file offsets. */
typedef uint64_t gpa_t;
typedef uint64_t gfn_t;
typedef uint64_t pgoff_t; /* page index in a guest_memfd */

/* start + len without wrapping, the one check for caller-supplied ranges. */
static inline bool gm_range_ok(uint64_t start, uint64_t len, uint64_t *end)
{
	return !__builtin_add_overflow(start, len, end);
}

/* Heap accounting: every allocation the library holds for its objects. */
void *gm_zalloc(size_t size);
void *gm_realloc(void *ptr, size_t size);
void gm_free(void *ptr);
uint64_t gm_heap_bytes(void);
#ifdef GM_TEST_HOOKS
/* Test hooks, only in the test build of the library (libgmem-test.a). */
/* The n-th allocation from now fails. */
void gm_heap_fail_after(long n);
/* Host-mapping mmaps fail from the after-th from now (1 = the next), times in a row. */
void gm_hostmap_fail(long after, long times);
/* Tests only: runs fn(arg) holding the host-mapping lock. */
void gm_hostmap_call_locked(void (*fn)(void *), void *arg);
/* Tests only: runs fn(arg) holding the fd table's lock. */
void gm_file_call_locked(void (*fn)(void *), void *arg);
/* kvm backend: VMs made from now on use at most n host slot ids per address space (0: all). */
void gm_host_slot_ids_limit(uint32_t n);
/* kvm backend: the n-th host KVM_SET_USER_MEMORY_REGION2 (not a delete) from now fails with EIO (0: none). */
void gm_host_region_fail_after(long n);
/* kvm backend: a digest of the host slots every VM's host has taken (what succeeded). */
uint64_t gm_host_slots_digest(void);
#endif

/* Copies to and from caller memory that fail with -EFAULT instead of crashing. */
int gm_copy_from_user(void *dst, const void *src, size_t n);
int gm_copy_to_user(void *dst, const void *src, size_t n);

/* Reference-counted object behind a library fd. */
struct gm_object {
	atomic_long refs;
	void (*release)(struct gm_object *obj);
};

static inline void gm_object_init(struct gm_object *obj, void (*release)(struct gm_object *))
{
	atomic_init(&obj->refs, 1);
	obj->release = release;
}

static inline void gm_object_get(struct gm_object *obj)
{
	atomic_fetch_add_explicit(&obj->refs, 1, memory_order_relaxed);
}

/* A reference unless the object is already being released. */
static inline bool gm_object_tryget(struct gm_object *obj)
{
	long refs = atomic_load_explicit(&obj->refs, memory_order_relaxed);

	while (refs > 0)
		if (atomic_compare_exchange_weak_explicit(&obj->refs, &refs, refs + 1,
							  memory_order_acquire, memory_order_relaxed))
			return true;
	return false;
}

static inline void gm_object_put(struct gm_object *obj)
{
	if (atomic_fetch_sub_explicit(&obj->refs, 1, memory_order_acq_rel) == 1)
		obj->release(obj);
}

enum gm_file_type {
	GM_FILE_KVM = 1,
	GM_FILE_VM,
	GM_FILE_VCPU,
	GM_FILE_GMEM,
	GM_FILE_SEV,   /* the platform device, /dev/sev */
};

/* fd table (file.c): user-visible fds that stand for library objects. */
int gm_file_install(enum gm_file_type type, struct gm_object *obj, const char *name, bool cloexec);
/* A new fd for a device file with no state of its own (/dev/kvm, /dev/sev), or -errno. */
int gm_file_open_device(enum gm_file_type type, const char *name, bool cloexec);
struct gm_object *gm_file_get(int fd, enum gm_file_type *type);
/* The object behind fd if it is of type want; else NULL, *err = -EBADF (not ours) or -EINVAL. */
struct gm_object *gm_file_get_typed(int fd, enum gm_file_type want, int *err);
int gm_file_close(int fd);
uint64_t gm_file_count(void);
/* The highest fd the library has installed, -1 before the first: fds above it are not ours. */
extern _Atomic int gm_file_max_fd;
bool gm_file_slot_used(int fd);
/*
 * Whether fd may be a library fd: false is certain, true needs gm_file_get.
 * Lock-free, and inline: the interposer asks it on every fd call it passes on.
 */
static inline bool gm_file_maybe(int fd)
{
	return fd <= atomic_load_explicit(&gm_file_max_fd, memory_order_relaxed) &&
	       gm_file_slot_used(fd);
}
/*
 * After newfd became a duplicate of oldfd (dup, dup2, F_DUPFD): newfd stands
 * for oldfd's object too. 1 when oldfd is ours, 0 when not, or -errno.
 */
int gm_file_dup(int oldfd, int newfd);
/* Forgets fd's entry if fd no longer is the handle it recorded (replaced by dup2). */
void gm_file_drop_stale(int fd);
/*
 * fd, moved above the numbers a program uses (or left where it is if it
 * cannot move). The library's internal fds (stores, the userfaultfd, the
 * host's KVM fds) do not exist in the kernel: a program that closes a library
 * fd gets its number back from its next open, as with the kernel's.
 */
int gm_fd_hide(int fd);
/*
 * Whether fd is one of those internal fds, still open: the kernel has no such
 * fd, so a program's close of it is EBADF and its dup2 onto it EBUSY (closing
 * it would let a file of the program's reuse the number the library writes to).
 */
bool gm_fd_hidden(int fd);
/* The highest fd ever hidden, -1 before the first: a cheap test before gm_fd_hidden. */
extern _Atomic int gm_fd_hidden_max;
/* The lowest internal fd >= from, or -1. */
int gm_fd_hidden_next(int from);
/* The lowest fd >= from that may be a library fd, or -1. */
int gm_file_next(int from);

#define gm_container_of(ptr, type, member) \
	((type *)((char *)(ptr) - offsetof(type, member)))

#endif
