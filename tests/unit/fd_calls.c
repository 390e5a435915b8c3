/* The fd and mapping calls of the direct API that the interposer routes: dup, close_range, statx, madvise. */
#include "unit/vmm.h"

#include "gmem.h"
#include "internal.h"

#include <linux/stat.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <sys/stat.h>

#define PAGE 4096ULL

static uint64_t open_fds(void)
{
	struct gm_stats st;

	cr_assert_eq(gm_stats(&st), 0);
	return st.open_fds;
}

static uint64_t gmem_files(void)
{
	struct gm_stats st;

	cr_assert_eq(gm_stats(&st), 0);
	return st.gmem_files;
}

Test(fd_calls, a_duplicate_holds_the_file_until_its_close)
{
	struct vmm m;
	uint64_t files;
	int gmem, d;

	vmm_init(&m, KVM_X86_SW_PROTECTED_VM);
	gmem = vmm_gmem(&m, 16 * PAGE, GUEST_MEMFD_FLAG_MMAP | GUEST_MEMFD_FLAG_INIT_SHARED);
	files = gmem_files();
	d = gm_dup(gmem);
	cr_assert_geq(d, 0);
	cr_expect_eq(open_fds(), 4, "the duplicate is a library fd");
	cr_expect_eq(gm_close(gmem), 0);
	cr_expect_eq(gmem_files(), files, "the file ended with one of its two fds");
	cr_expect_eq(gm_fallocate(d, FALLOC_FL_KEEP_SIZE, 0, PAGE), 0, "%s", strerror(errno));
	cr_expect_eq(gm_close(d), 0);
	cr_expect_eq(gmem_files(), files - 1, "the file outlived its last fd");
	vmm_destroy(&m);
}

Test(fd_calls, dup2_over_a_library_fd_releases_it)
{
	struct vmm m;
	int gmem, other;
	uint64_t files;

	vmm_init(&m, KVM_X86_SW_PROTECTED_VM);
	gmem = vmm_gmem(&m, 16 * PAGE, 0);
	other = open("/dev/null", O_RDONLY);
	cr_assert_geq(other, 0);
	files = gmem_files();
	cr_expect_eq(gm_dup2(other, gmem), gmem);
	cr_expect_eq(gmem_files(), files - 1, "the replaced guest_memfd was not released");
	errno = 0;
	cr_expect_eq(gm_ioctl(gmem, KVM_CHECK_EXTENSION, 0), -1);
	cr_expect_eq(errno, ENOTTY, "the fd is /dev/null now: %s", strerror(errno));
	close(gmem);
	close(other);
	vmm_destroy(&m);
}

Test(fd_calls, close_range_releases_library_fds_and_leaves_others)
{
	int kvm = gm_open_kvm(), vm = gm_ioctl(kvm, KVM_CREATE_VM, 0);
	int lo = kvm < vm ? kvm : vm, hi = kvm < vm ? vm : kvm;
	uint64_t before = open_fds();

	cr_assert_geq(vm, 0);
	cr_expect_eq(gm_close_range((unsigned)lo, (unsigned)hi, CLOSE_RANGE_CLOEXEC), 0);
	cr_expect_eq(open_fds(), before, "CLOEXEC closed library fds");
	cr_expect_eq(gm_fcntl(vm, F_GETFD), FD_CLOEXEC);
	errno = 0;
	cr_expect_eq(gm_close_range((unsigned)hi, (unsigned)lo, 0), -1);
	cr_expect_eq(errno, hi == lo ? 0 : EINVAL, "first > last: %s", strerror(errno));
	cr_expect_eq(open_fds(), before, "a refused close_range closed library fds");
	cr_expect_eq(gm_close_range((unsigned)lo, (unsigned)hi, 0), 0);
	cr_expect_eq(open_fds(), before - 2);
	errno = 0;
	cr_expect_eq(gm_ioctl(kvm, KVM_GET_API_VERSION, 0), -1);
	cr_expect_eq(errno, EBADF);
}

/* The store's fd is the library's: the kernel has no such fd, and a file reusing its number would get guest memory. */
Test(fd_calls, the_library_s_own_fds_cannot_be_closed_or_replaced)
{
	struct vmm m;
	int gmem, store, other;

	vmm_init(&m, KVM_X86_SW_PROTECTED_VM);
	gmem = vmm_gmem(&m, 16 * PAGE, 0);
	store = gmem_backing_fd(gmem);
	other = open("/dev/null", O_RDONLY);
	cr_assert_geq(store, 0);
	cr_assert_geq(other, 0);
	errno = 0;
	cr_expect_eq(gm_close(store), -1);
	cr_expect_eq(errno, EBADF, "%s", strerror(errno));
	errno = 0;
	cr_expect_eq(gm_dup2(other, store), -1);
	cr_expect_eq(errno, EBUSY, "%s", strerror(errno));
	cr_expect_eq(gm_close_range((unsigned)store, (unsigned)store, 0), 0);
	cr_expect_geq(fcntl(store, F_GETFD), 0, "close_range closed the store");
	cr_expect_eq(gm_fallocate(gmem, FALLOC_FL_KEEP_SIZE, 0, 16 * PAGE), 0, "%s", strerror(errno));
	close(other);
	vmm_destroy(&m);
}

Test(fd_calls, statx_of_a_library_fd_is_its_fstat)
{
	struct vmm m;
	struct statx stx;
	struct stat st;
	int gmem;

	vmm_init(&m, KVM_X86_SW_PROTECTED_VM);
	gmem = vmm_gmem(&m, 16 * PAGE, 0);
	cr_assert_eq(gm_fstat(gmem, &st), 0);
	cr_assert_eq(gm_statx(gmem, "", AT_EMPTY_PATH, STATX_BASIC_STATS, &stx), 0, "%s",
		     strerror(errno));
	cr_expect_eq(stx.stx_size, 16 * PAGE);
	cr_expect_eq(stx.stx_mode, st.st_mode);
	cr_expect_eq(stx.stx_ino, st.st_ino);
	errno = 0;
	cr_expect_eq(gm_statx(gmem, "", AT_EMPTY_PATH, STATX_BASIC_STATS, (struct statx *)8), -1);
	cr_expect_eq(errno, EFAULT);
	/* A path is not the fd: the plain statx answers. */
	cr_expect_eq(gm_statx(AT_FDCWD, "/", 0, STATX_BASIC_STATS, &stx), 0);
	cr_expect(S_ISDIR(stx.stx_mode));
	vmm_destroy(&m);
}

/*
 * MADV_REMOVE over a library mapping and plain memory on both sides: the
 * plain parts get the plain advice, the file is punched exactly under its part.
 */
Test(fd_calls, madv_remove_across_plain_and_library_memory)
{
	struct vmm m;
	char *area, *lib;
	int gmem, memfd;

	vmm_init(&m, KVM_X86_SW_PROTECTED_VM);
	gmem = vmm_gmem(&m, 4 * PAGE, GUEST_MEMFD_FLAG_MMAP | GUEST_MEMFD_FLAG_INIT_SHARED);
	memfd = memfd_create("plain", 0);
	cr_assert_eq(ftruncate(memfd, 8 * PAGE), 0);
	area = mmap(NULL, 8 * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
	cr_assert_neq(area, MAP_FAILED);
	lib = gm_mmap(area + 2 * PAGE, 4 * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, gmem, 0);
	cr_assert_eq(lib, area + 2 * PAGE, "%s", strerror(errno));
	memset(area, 0x11, 2 * PAGE);
	memset(lib, 0x22, 4 * PAGE);
	memset(area + 6 * PAGE, 0x33, 2 * PAGE);
	cr_expect_eq(gm_madvise(area + PAGE, 6 * PAGE, MADV_REMOVE), 0, "%s", strerror(errno));
	cr_expect_eq(area[0], 0x11);
	cr_expect_eq(area[PAGE], 0, "the plain memfd before was not punched");
	cr_expect_eq(lib[0], 0, "the file was not punched");
	cr_expect_eq(lib[3 * PAGE], 0);
	cr_expect_eq(area[6 * PAGE], 0, "the plain memfd after was not punched");
	cr_expect_eq(area[7 * PAGE], 0x33, "MADV_REMOVE went past its range");
	errno = 0;
	cr_expect_eq(gm_madvise(area, 8 * PAGE, 25 /* MADV_COLLAPSE */), -1);
	cr_expect_eq(errno, EINVAL);
	gm_munmap(area, 8 * PAGE);
	close(memfd);
	vmm_destroy(&m);
}

/*
 * The kernel's guest_memfd is one fd: after its close, the next open gets its
 * number. The library's own fds (the store...) sit above the program's.
 */
Test(fd_calls, a_closed_library_fd_number_is_the_next_open)
{
	struct vmm m;
	int gmem, next;

	vmm_init(&m, KVM_X86_SW_PROTECTED_VM);
	gmem = vmm_gmem(&m, 16 * PAGE, GUEST_MEMFD_FLAG_MMAP | GUEST_MEMFD_FLAG_INIT_SHARED);
	cr_assert_eq(gm_close(gmem), 0);
	next = open("/dev/null", O_RDONLY);
	cr_expect_eq(next, gmem, "the number went to an fd of the library's own (got %d)", next);
	close(next);
	vmm_destroy(&m);
}

/*
 * Under gmem-run, liburcu-bp's own mmap, mremap and munmap reach the mapping
 * calls, possibly while the library holds its mapping lock on the same
 * thread: they act on the memory at once instead of waiting for the lock.
 */
static void anonymous_calls(void *arg)
{
	int *ok = arg;
	char *p = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	char *q;

	if (p == MAP_FAILED)
		return;
	q = gm_mremap(p, PAGE, 2 * PAGE, MREMAP_MAYMOVE);
	if (q == MAP_FAILED)
		return;
	q[PAGE] = 1;
	*ok = gm_madvise(q, 2 * PAGE, MADV_DOFORK) == 0 &&
	      gm_mmap(q, PAGE, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) == q &&
	      gm_munmap(q, 2 * PAGE) == 0;
}

Test(fd_calls, mapping_calls_under_the_mapping_lock_do_not_wait, .timeout = 20)
{
	struct vmm m;
	char *lib;
	int gmem, ok = 0;

	vmm_init(&m, KVM_X86_SW_PROTECTED_VM);
	gmem = vmm_gmem(&m, 4 * PAGE, GUEST_MEMFD_FLAG_MMAP | GUEST_MEMFD_FLAG_INIT_SHARED);
	/* With a library mapping, the calls look at the mapping list. */
	lib = gm_mmap(NULL, 4 * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, gmem, 0);
	cr_assert_neq(lib, MAP_FAILED);
	gm_hostmap_call_locked(anonymous_calls, &ok);
	cr_expect(ok, "a mapping call under the lock failed");
	gm_munmap(lib, 4 * PAGE);
	vmm_destroy(&m);
}

struct lock_holder {
	void (*call_locked)(void (*fn)(void *), void *arg);
	atomic_bool held, forked;
};

/* Holds the lock until the fork is done (at most 10 s, so a broken fork cannot hang it). */
static void hold_until_forked(void *arg)
{
	struct lock_holder *h = arg;

	atomic_store(&h->held, true);
	for (int i = 0; i < 10000 && !atomic_load(&h->forked); i++)
		usleep(1000);
}

static void *hold_lock(void *arg)
{
	struct lock_holder *h = arg;

	h->call_locked(hold_until_forked, h);
	return NULL;
}

/*
 * Forks while another thread holds call_locked's lock; the child closes a
 * library fd and munmaps memory through the library. Returns its wait status,
 * or -1 when it did not exit within 5 s (it is killed).
 */
static int fork_under_held_lock(void (*call_locked)(void (*)(void *), void *))
{
	struct lock_holder h = { .call_locked = call_locked };
	struct vmm m;
	pthread_t holder;
	int gmem, status = -1;
	void *plain;
	pid_t pid;

	vmm_init(&m, KVM_X86_SW_PROTECTED_VM);
	gmem = vmm_gmem(&m, 16 * PAGE, GUEST_MEMFD_FLAG_MMAP | GUEST_MEMFD_FLAG_INIT_SHARED);
	plain = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	cr_assert_neq(plain, MAP_FAILED);
	cr_assert_eq(pthread_create(&holder, NULL, hold_lock, &h), 0);
	while (!atomic_load(&h.held))
		usleep(100);
	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0)
		_exit(gm_close(gmem) != 0 ? 1 : gm_munmap(plain, PAGE) != 0 ? 2 : 0);
	atomic_store(&h.forked, true);
	for (int i = 0; i < 500; i++) {
		if (waitpid(pid, &status, WNOHANG) == pid)
			break;
		status = -1;
		usleep(10000);
	}
	if (status == -1) {
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
	}
	pthread_join(holder, NULL);
	munmap(plain, PAGE);
	cr_expect_eq(gm_close(gmem), 0, "the parent's fd is still the library's");
	vmm_destroy(&m);
	return status;
}

Test(fd_calls, child_forked_while_the_fd_table_is_locked_can_close)
{
	int status = fork_under_held_lock(gm_file_call_locked);

	cr_expect_neq(status, -1, "the child hung on the fd table's lock");
	cr_expect(status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 0,
		  "the child's close or munmap failed (status %#x)", status);
}

Test(fd_calls, child_forked_while_host_mappings_are_locked_can_munmap)
{
	int status = fork_under_held_lock(gm_hostmap_call_locked);

	cr_expect_neq(status, -1, "the child hung on the host-mapping lock");
	cr_expect(status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 0,
		  "the child's close or munmap failed (status %#x)", status);
}
