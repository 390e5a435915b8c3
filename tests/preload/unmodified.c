/*
 * An unmodified /dev/kvm program: plain open, ioctl, mmap, pwrite... and no
 * libgmem. It re-runs itself under gmem-run, then checks that each call
 * reached the library (with the kernel's results) and that plain fds and
 * plain memory did not.
 */
#define _GNU_SOURCE
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gmem/kvm.h>

#include "harness/skip_report.h"

#ifndef MADV_COLLAPSE
#define MADV_COLLAPSE 25
#endif
#define GMEM_SIZE (4UL << 20)

static int failures;
/* The system fd a constructor opened, before main: the interposer must already answer. */
static int early_kvm = -1;

__attribute__((constructor)) static void open_before_main(void)
{
	if (getenv("GMEM_PRELOAD_TEST_CHILD"))
		early_kvm = open("/dev/kvm", O_RDWR);
}

#define CHECK(cond, ...)                                                                     \
	do {                                                                                     \
		if (cond) {                                                                      \
			printf("ok   " __VA_ARGS__);                                             \
		} else {                                                                         \
			printf("FAIL %s:%d (%s): ", __FILE__, __LINE__, #cond);                  \
			printf(__VA_ARGS__);                                                     \
			failures++;                                                              \
		}                                                                                \
		putchar('\n');                                                                   \
	} while (0)

/* errno of a call that must fail, or 0 when it succeeded. */
#define FAILS_WITH(call) ((call) == -1 ? errno : 0)

static bool fd_is_memfd(int fd)
{
	char path[64], target[256];
	ssize_t n;

	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	n = readlink(path, target, sizeof(target) - 1);
	if (n < 0)
		return false;
	target[n] = '\0';
	return !strncmp(target, "/memfd:", 7);
}

static sigjmp_buf fault_jmp;

static void on_fault(int sig)
{
	siglongjmp(fault_jmp, sig);
}

/* The signal a read of *p raises, or 0. */
static int read_signal(volatile char *p)
{
	struct sigaction sa = { .sa_handler = on_fault }, old_segv, old_bus;
	int sig;

	sigaction(SIGSEGV, &sa, &old_segv);
	sigaction(SIGBUS, &sa, &old_bus);
	sig = sigsetjmp(fault_jmp, 1);
	if (!sig)
		(void)*p;
	sigaction(SIGSEGV, &old_segv, NULL);
	sigaction(SIGBUS, &old_bus, NULL);
	return sig;
}

static int count_maps(const char *what)
{
	FILE *f = fopen("/proc/self/maps", "r");
	char line[512];
	int n = 0;

	while (f && fgets(line, sizeof(line), f))
		n += strstr(line, what) != NULL;
	if (f)
		fclose(f);
	return n;
}

static int create_gmem(int vm, uint64_t flags)
{
	struct kvm_create_guest_memfd args = { .size = GMEM_SIZE, .flags = flags };

	return ioctl(vm, KVM_CREATE_GUEST_MEMFD, &args);
}

static void check_system_fd(void)
{
	struct stat st;
	int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC), again, vm;
	char path[64];

	CHECK(kvm >= 0 && fd_is_memfd(kvm), "open(\"/dev/kvm\") gives the library's system fd");
	CHECK(ioctl(kvm, KVM_GET_API_VERSION, 0) == KVM_API_VERSION, "KVM_GET_API_VERSION");
	CHECK(fstat(kvm, &st) == 0 && S_ISCHR(st.st_mode) && st.st_rdev == makedev(10, 232),
	      "fstat shows the character device 10:232");
	CHECK(fcntl(kvm, F_GETFD) == FD_CLOEXEC, "O_CLOEXEC is kept");
	snprintf(path, sizeof(path), "/proc/self/fd/%d", kvm);
	again = open(path, O_RDWR);
	CHECK(again >= 0 && again != kvm && fd_is_memfd(again) &&
		      ioctl(again, KVM_GET_API_VERSION, 0) == KVM_API_VERSION,
	      "reopening /proc/self/fd/N of the system fd opens /dev/kvm again");
	close(again);
	vm = ioctl(kvm, KVM_CREATE_VM, 0);
	snprintf(path, sizeof(path), "/dev/fd/%d", vm);
	CHECK(vm >= 0 && FAILS_WITH(open(path, O_RDWR)) == ENXIO,
	      "reopening a VM fd through /dev/fd is ENXIO (anonymous inode)");
	CHECK(FAILS_WITH(write(kvm, "x", 1)) == EINVAL && FAILS_WITH(pwrite(vm, "x", 1, 0)) == ESPIPE,
	      "write on the system fd EINVAL, pwrite on a VM fd ESPIPE");
	close(vm);
	CHECK(close(kvm) == 0 && FAILS_WITH(ioctl(kvm, KVM_GET_API_VERSION, 0)) == EBADF,
	      "close ends the system fd");
}

static void check_guest_memfd(int vm)
{
	int gfd = create_gmem(vm, GUEST_MEMFD_FLAG_MMAP | GUEST_MEMFD_FLAG_INIT_SHARED);
	char buf[64] = { 0 };
	struct iovec iov = { buf, sizeof(buf) };
	struct stat st;
	char *m;

	CHECK(gfd >= 0, "KVM_CREATE_GUEST_MEMFD on a SW_PROTECTED VM (fd %d, %s)", gfd,
	      gfd < 0 ? strerror(errno) : "");
	if (gfd < 0)
		return;
	CHECK(fstat(gfd, &st) == 0 && st.st_size == (off_t)GMEM_SIZE, "fstat gives the file's size");
	CHECK(FAILS_WITH(read(gfd, buf, sizeof(buf))) == EINVAL, "read: EINVAL (no read method)");
	CHECK(FAILS_WITH(write(gfd, buf, sizeof(buf))) == EINVAL, "write: EINVAL");
	CHECK(FAILS_WITH(pread(gfd, buf, sizeof(buf), 0)) == ESPIPE, "pread: ESPIPE");
	CHECK(FAILS_WITH(pwrite(gfd, buf, sizeof(buf), 0)) == ESPIPE, "pwrite: ESPIPE");
	CHECK(FAILS_WITH(pwrite(gfd, buf, sizeof(buf), -1)) == EINVAL, "pwrite at -1: EINVAL");
	CHECK(FAILS_WITH(readv(gfd, &iov, 1)) == EINVAL && FAILS_WITH(pwritev(gfd, &iov, 1, 0)) == ESPIPE,
	      "readv EINVAL, pwritev ESPIPE");
	CHECK(FAILS_WITH(syscall(SYS_pwrite64, gfd, buf, 1, 0)) == ESPIPE, "syscall(SYS_pwrite64): ESPIPE");
	CHECK(FAILS_WITH(syscall(SYS_preadv, gfd, &iov, 1, 0, 0)) == ESPIPE &&
		      FAILS_WITH(syscall(SYS_pwritev, gfd, &iov, 1, 0, 0)) == ESPIPE &&
		      FAILS_WITH(syscall(SYS_preadv2, gfd, &iov, 1, 0, 0, 0)) == ESPIPE &&
		      FAILS_WITH(syscall(SYS_pwritev2, gfd, &iov, 1, -1L, -1L, 0)) == EINVAL,
	      "syscall(SYS_preadv, SYS_pwritev and their v2 forms) reach the library");
	CHECK(FAILS_WITH(lseek(gfd, 0, SEEK_SET)) == ESPIPE && FAILS_WITH(ftruncate(gfd, 0)) == EINVAL,
	      "lseek ESPIPE, ftruncate EINVAL");
	CHECK(fallocate(gfd, FALLOC_FL_KEEP_SIZE, 0, 1 << 20) == 0 &&
		      FAILS_WITH(fallocate(gfd, 0, 0, 4096)) == EOPNOTSUPP,
	      "fallocate allocates with KEEP_SIZE; without it EOPNOTSUPP");
	CHECK(FAILS_WITH(fcntl(gfd, F_GET_SEALS)) == EINVAL && (fcntl(gfd, F_GETFL) & O_ACCMODE) == O_RDWR,
	      "fcntl: no seals, O_RDWR");

	m = mmap(NULL, GMEM_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, gfd, 0);
	CHECK(m != MAP_FAILED, "mmap of the guest_memfd");
	if (m == MAP_FAILED)
		goto out;
	memset(m, 0x5a, 8192);
	CHECK(m[4096] == 0x5a, "its shared pages read back");
	CHECK(FAILS_WITH(madvise(m, 2 << 20, MADV_COLLAPSE)) == EINVAL, "MADV_COLLAPSE: EINVAL");
	CHECK(madvise(m, 4096, MADV_REMOVE) == 0 && m[0] == 0 && m[4096] == 0x5a,
	      "MADV_REMOVE punches the page out of the file");
	CHECK(FAILS_WITH(mprotect(m, 4096, PROT_READ | PROT_EXEC)) == EACCES,
	      "mprotect(PROT_EXEC): EACCES (noexec)");
	CHECK(mprotect(m, 4096, PROT_READ) == 0, "mprotect(PROT_READ)");
	{
		char *small = mmap(NULL, 4096, PROT_READ, MAP_SHARED, gfd, 0), *grown;

		grown = small == MAP_FAILED ? MAP_FAILED : mremap(small, 4096, 8192, MREMAP_MAYMOVE);
		CHECK(grown != MAP_FAILED && grown[4096] == 0x5a,
		      "mremap grows a guest_memfd mapping over the file");
		if (grown != MAP_FAILED)
			munmap(grown, 8192);
	}
	{
		struct kvm_memory_attributes2 attrs = {
			.offset = 0, .size = 4096, .attributes = KVM_MEMORY_ATTRIBUTE_PRIVATE,
		};

		CHECK(ioctl(gfd, KVM_SET_MEMORY_ATTRIBUTES2, &attrs) == 0 && read_signal(m) == SIGBUS &&
			      read_signal(m + 4096) == 0,
		      "per-file KVM_SET_MEMORY_ATTRIBUTES2: the private page raises SIGBUS");
	}
	{
		pid_t pid = fork();
		int status;

		if (!pid)
			_exit(read_signal(m + 4096));
		waitpid(pid, &status, 0);
		CHECK(WIFEXITED(status) && WEXITSTATUS(status) == SIGSEGV,
		      "a forked child has no library mapping (SIGSEGV, docs/compat.md)");
	}
	CHECK(syscall(SYS_munmap, m, GMEM_SIZE) == 0 && read_signal(m + 4096) == SIGSEGV,
	      "syscall(SYS_munmap) unmaps it");
	m = (char *)syscall(SYS_mmap, NULL, GMEM_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, gfd, 0);
	CHECK(m != MAP_FAILED && m[4096] == 0x5a, "syscall(SYS_mmap) maps the file through the library");
	if (m != MAP_FAILED)
		munmap(m, GMEM_SIZE);
out:
	CHECK(close(gfd) == 0 && FAILS_WITH(fstat(gfd, &st)) == EBADF, "close of the guest_memfd");
}

/* /dev/sev is the software SNP platform's device: SEV commands accept it, not a plain fd. */
/* The first fd whose /proc/self/fd link holds what, or -1. */
static int find_fd(const char *what)
{
	char path[64], target[256];

	for (int fd = 0; fd < 4096; fd++) {
		ssize_t n;

		snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
		n = readlink(path, target, sizeof(target) - 1);
		if (n < 0)
			continue;
		target[n] = '\0';
		if (strstr(target, what))
			return fd;
	}
	return -1;
}

/*
 * The library's own fds (a guest_memfd's store) do not exist in the kernel: a
 * program that closes every fd it does not know, then opens a file that takes
 * the number, must not get guest memory written into that file.
 */
static void check_internal_fds(int vm)
{
	int gfd = create_gmem(vm, 0), store, plain = open("/dev/null", O_RDONLY);

	CHECK(gfd >= 0 && fallocate(gfd, FALLOC_FL_KEEP_SIZE, 0, GMEM_SIZE) == 0, "a guest_memfd with memory");
	store = find_fd("kvm-gmem-backing");
	CHECK(store >= 0, "its store has an fd (%d)", store);
	if (store < 0 || gfd < 0)
		return;
	CHECK(FAILS_WITH(close(store)) == EBADF && FAILS_WITH(syscall(SYS_close, store)) == EBADF,
	      "close of the library's store fd: EBADF, as for an fd the kernel does not have");
	CHECK(FAILS_WITH(dup2(plain, store)) == EBUSY && FAILS_WITH(dup3(plain, store, O_CLOEXEC)) == EBUSY,
	      "dup2/dup3 onto it: EBUSY");
	CHECK(close_range((unsigned)store - 1, (unsigned)store + 1, 0) == 0 &&
		      fcntl(store, F_GETFD) >= 0 && find_fd("kvm-gmem-backing") == store,
	      "close_range over it closes the numbers around it only");
	CHECK(fallocate(gfd, FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE, 0, GMEM_SIZE) == 0 &&
		      fallocate(gfd, FALLOC_FL_KEEP_SIZE, 0, GMEM_SIZE) == 0,
	      "the guest_memfd keeps working");
	close(gfd);
	close(plain);
}

static void check_sev_device(int kvm)
{
	struct kvm_sev_init init = { 0 };
	struct kvm_sev_snp_launch_start start = { .policy = (1ULL << 17) | (1ULL << 16) };
	struct kvm_sev_cmd cmd = { .id = KVM_SEV_INIT2, .data = (uintptr_t)&init };
	int sev = open("/dev/sev", O_RDWR | O_CLOEXEC), again, plain, vm;
	char path[64];
	struct stat st;

	CHECK(sev >= 0 && fd_is_memfd(sev), "open(\"/dev/sev\") gives the library's platform device");
	CHECK(fstat(sev, &st) == 0 && S_ISCHR(st.st_mode), "fstat shows a character device");
	CHECK(fcntl(sev, F_GETFD) == FD_CLOEXEC, "O_CLOEXEC is kept on /dev/sev");
	snprintf(path, sizeof(path), "/proc/self/fd/%d", sev);
	again = open(path, O_RDWR);
	CHECK(again >= 0 && again != sev && fd_is_memfd(again),
	      "reopening /proc/self/fd/N of /dev/sev opens the device again");
	vm = ioctl(kvm, KVM_CREATE_VM, KVM_X86_SNP_VM);
	CHECK(vm >= 0, "KVM_CREATE_VM(KVM_X86_SNP_VM)");
	cmd.sev_fd = (uint32_t)sev;
	CHECK(ioctl(vm, KVM_MEMORY_ENCRYPT_OP, &cmd) == 0, "KVM_SEV_INIT2");
	/*
	 * LAUNCH_START is the first command that hands sev_fd to the platform; the
	 * context creation it starts with fails, which KVM reports as ENOTTY.
	 */
	plain = open("/dev/null", O_RDWR);
	cmd = (struct kvm_sev_cmd){ .id = KVM_SEV_SNP_LAUNCH_START, .data = (uintptr_t)&start,
				    .sev_fd = (uint32_t)plain };
	CHECK(FAILS_WITH(ioctl(vm, KVM_MEMORY_ENCRYPT_OP, &cmd)) == ENOTTY,
	      "SNP_LAUNCH_START with a sev_fd that is not the device: ENOTTY");
	cmd.sev_fd = (uint32_t)again;
	CHECK(ioctl(vm, KVM_MEMORY_ENCRYPT_OP, &cmd) == 0, "SNP_LAUNCH_START with the reopened device");
	close(plain);
	close(again);
	close(vm);
	close(sev);
}

static void check_dup(int vm)
{
	int d = dup(vm), d2 = fcntl(vm, F_DUPFD_CLOEXEC, 100), d3 = dup2(vm, 200);

	CHECK(d >= 0 && ioctl(d, KVM_CHECK_EXTENSION, KVM_CAP_USER_MEMORY) == 1,
	      "dup of a VM fd works as the VM");
	CHECK(d2 >= 100 && fcntl(d2, F_GETFD) == FD_CLOEXEC &&
		      ioctl(d2, KVM_CHECK_EXTENSION, KVM_CAP_USER_MEMORY) == 1,
	      "fcntl(F_DUPFD_CLOEXEC) of a VM fd works as the VM");
	CHECK(d3 == 200 && ioctl(d3, KVM_CHECK_EXTENSION, KVM_CAP_USER_MEMORY) == 1,
	      "dup2 of a VM fd works as the VM");
	CHECK(close(d) == 0 && close(d2) == 0 && close(d3) == 0 &&
		      ioctl(vm, KVM_CHECK_EXTENSION, KVM_CAP_USER_MEMORY) == 1,
	      "closing the duplicates leaves the VM");
}

/*
 * A vfork child shares the parent's memory but has a copy of its fd table: its
 * close and dup2 act on its own fds, and the parent's library fds stay the library's.
 */
static void check_vfork(int vm)
{
	int closed = dup(vm), covered = dup(vm), plain = open("/dev/null", O_RDONLY), status;
	pid_t pid = vfork();

	if (!pid) {
		close(closed);
		dup2(plain, covered);
		_exit(0);
	}
	waitpid(pid, &status, 0);
	CHECK(ioctl(closed, KVM_CHECK_EXTENSION, KVM_CAP_USER_MEMORY) == 1 &&
		      ioctl(covered, KVM_CHECK_EXTENSION, KVM_CAP_USER_MEMORY) == 1,
	      "a vfork child's close and dup2 leave the parent's library fds the library's");
	close(closed);
	close(covered);
	close(plain);
}

/*
 * close() is async-signal-safe: a handler may close a library fd while its
 * thread is inside the library looking one up (every ioctl does). Waiting for
 * that lookup to end from within it would hang the thread for good.
 */
#define SIGNAL_CLOSES 300
static int signal_fds[SIGNAL_CLOSES];
static volatile int signal_closed;

static void close_one(int sig)
{
	(void)sig;
	if (signal_closed < SIGNAL_CLOSES)
		close(signal_fds[signal_closed++]);
}

static void *signal_watchdog(void *arg)
{
	(void)arg;
	sleep(20);
	printf("FAIL a signal handler's close of a library fd hung the thread it interrupted\n");
	_exit(1);
}

static void check_signal_close(int vm)
{
	struct itimerval every = { { 0, 20 }, { 0, 20 } }, off = { 0 };
	struct sigaction sa = { .sa_handler = close_one }, old;
	pthread_t watchdog;
	sigset_t alrm;
	struct stat st;
	int opened = 0;

	for (; opened < SIGNAL_CLOSES; opened++)
		if ((signal_fds[opened] = dup(vm)) < 0)
			break;
	/* The watchdog inherits SIGALRM blocked: the handler interrupts this thread only. */
	sigemptyset(&alrm);
	sigaddset(&alrm, SIGALRM);
	pthread_sigmask(SIG_BLOCK, &alrm, NULL);
	pthread_create(&watchdog, NULL, signal_watchdog, NULL);
	pthread_sigmask(SIG_UNBLOCK, &alrm, NULL);
	sigaction(SIGALRM, &sa, &old);
	setitimer(ITIMER_REAL, &every, NULL);
	/* Lookups only: no allocation the handler's could interrupt. */
	while (signal_closed < opened)
		if (ioctl(vm, KVM_CHECK_EXTENSION, KVM_CAP_USER_MEMORY) != 1 || fstat(vm, &st) < 0)
			break;
	setitimer(ITIMER_REAL, &off, NULL);
	sigaction(SIGALRM, &old, NULL);
	pthread_cancel(watchdog);
	pthread_join(watchdog, NULL);
	CHECK(opened == SIGNAL_CLOSES && signal_closed == opened &&
		      FAILS_WITH(fcntl(signal_fds[opened - 1], F_GETFD)) == EBADF &&
		      ioctl(vm, KVM_CHECK_EXTENSION, KVM_CAP_USER_MEMORY) == 1,
	      "a signal handler closes library fds while its thread looks them up (%d closes)",
	      signal_closed);
}

static void check_release(void)
{
	int kvm = open("/dev/kvm", O_RDWR), vm, gfd;

	vm = ioctl(kvm, KVM_CREATE_VM, KVM_X86_SW_PROTECTED_VM);
	gfd = create_gmem(vm, GUEST_MEMFD_FLAG_MMAP | GUEST_MEMFD_FLAG_INIT_SHARED);
	CHECK(gfd >= 0 && fallocate(gfd, FALLOC_FL_KEEP_SIZE, 0, GMEM_SIZE) == 0 &&
		      count_maps("kvm-gmem-backing") > 0,
	      "a guest_memfd holds its store");
	close(gfd);
	close(vm);
	CHECK(count_maps("kvm-gmem-backing") == 0,
	      "closing the guest_memfd and the VM frees the store");
	CHECK(syscall(SYS_close, kvm) == 0 && FAILS_WITH(ioctl(kvm, KVM_GET_API_VERSION, 0)) == EBADF,
	      "syscall(SYS_close) of the system fd");
	kvm = open("/dev/kvm", O_RDWR);
	vm = ioctl(kvm, KVM_CREATE_VM, 0);
	CHECK(close_range((unsigned)kvm, (unsigned)vm, 0) == 0 &&
		      FAILS_WITH(ioctl(vm, KVM_CHECK_EXTENSION, 0)) == EBADF,
	      "close_range closes library fds");
}

static void check_plain(void)
{
	char path[] = "/tmp/gmem-preload-XXXXXX", buf[8] = { 0 };
	int fd = mkstemp(path), p[2];
	struct stat st;
	char *m;

	unlink(path);
	CHECK(pwrite(fd, "abcdefgh", 8, 0) == 8 && pread(fd, buf, 8, 0) == 8 && !memcmp(buf, "abcdefgh", 8),
	      "pwrite/pread of a plain file");
	CHECK(!fd_is_memfd(fd) && fstat(fd, &st) == 0 && st.st_size == 8 && S_ISREG(st.st_mode),
	      "fstat of a plain file");
	m = mmap(NULL, 4096, PROT_READ, MAP_SHARED, fd, 0);
	CHECK(m != MAP_FAILED && m[7] == 'h' && munmap(m, 4096) == 0, "mmap of a plain file");
	CHECK(ftruncate(fd, 0) == 0 && fallocate(fd, 0, 0, 4096) == 0 && lseek(fd, 0, SEEK_END) == 4096,
	      "ftruncate, fallocate, lseek of a plain file");
	CHECK(close(fd) == 0, "close of a plain file");
	CHECK(pipe(p) == 0 && write(p[1], "x", 1) == 1 && read(p[0], buf, 1) == 1 && buf[0] == 'x',
	      "read/write of a pipe");
	close(p[0]);
	close(p[1]);
	CHECK(syscall(SYS_getpid) == getpid(), "other syscall() numbers pass through");
	{
		/* Six arguments, the last a flag the kernel refuses when it is not 0. */
		char from[8] = "sixargs", to[8] = "";
		struct iovec local = { to, sizeof(to) }, remote = { from, sizeof(from) };

		CHECK(syscall(SYS_process_vm_readv, (long)getpid(), &local, 1L, &remote, 1L, 0L) == 8 &&
			      !strcmp(to, "sixargs") &&
			      FAILS_WITH(syscall(SYS_process_vm_readv, (long)getpid(), &local, 1L, &remote,
						 1L, 1L)) == EINVAL,
		      "a syscall() number not routed gets all six arguments");
	}
}

static void *open_close_loop(void *arg)
{
	for (int i = 0; i < 200; i++) {
		int kvm = open("/dev/kvm", O_RDWR);
		int vm = ioctl(kvm, KVM_CREATE_VM, 0);

		if (kvm < 0 || vm < 0 || close(vm) || close(kvm))
			return (void *)1;
	}
	return arg;
}

static void check_threads(void)
{
	pthread_t t[4];
	void *ret;
	bool ok = true;

	for (int i = 0; i < 4; i++)
		pthread_create(&t[i], NULL, open_close_loop, NULL);
	for (int i = 0; i < 4; i++) {
		pthread_join(t[i], &ret);
		ok &= ret == NULL;
	}
	CHECK(ok, "four threads open and close the system and VM fds at once");
}

/* The exit status of a shell command, or -1. */
static int run(const char *fmt, ...)
{
	char cmd[4096];
	va_list ap;
	int rc;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	rc = system(cmd);
	return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

/* Whether the first line of a command's output is want. */
static bool output_is(const char *want, const char *fmt, ...)
{
	char cmd[4096], line[256] = "";
	va_list ap;
	FILE *p;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	p = popen(cmd, "r");
	if (!p)
		return false;
	if (!fgets(line, sizeof(line), p))
		line[0] = '\0';
	pclose(p);
	line[strcspn(line, "\n")] = '\0';
	return !strcmp(line, want);
}

/* What this program prints with --probe-attrs: KVM_CAP_MEMORY_ATTRIBUTES of a SW_PROTECTED VM. */
static int probe_attrs(void)
{
	int kvm = open("/dev/kvm", O_RDWR), vm = ioctl(kvm, KVM_CREATE_VM, KVM_X86_SW_PROTECTED_VM);

	printf("%d\n", ioctl(vm, KVM_CHECK_EXTENSION, KVM_CAP_MEMORY_ATTRIBUTES));
	return 0;
}

/* A file in the test's temporary directory with the given bytes and mode. */
static bool make_file(const char *path, const void *data, size_t len, mode_t mode)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0700);
	bool ok = fd >= 0 && write(fd, data, len) == (ssize_t)len;

	if (fd >= 0)
		close(fd);
	return ok && chmod(path, mode) == 0;
}

/* Programs the preload cannot reach: a 32-bit one, a set-user-ID one. gmem-run refuses both. */
static void check_foreign_programs(void)
{
	/* An ELFCLASS32 header is all gmem-run reads: it must not exec it. */
	static const unsigned char elf32[52] = { 0x7f, 'E', 'L', 'F', ELFCLASS32, ELFDATA2LSB, 1,
						 [16] = ET_EXEC, [18] = EM_386, [20] = 1 };
	char dir[] = "/tmp/gmem-run-test-XXXXXX", path[64];
	char self_copy[96];

	if (!mkdtemp(dir)) {
		CHECK(0, "mkdtemp: %s", strerror(errno));
		return;
	}
	snprintf(path, sizeof(path), "%s/elf32", dir);
	CHECK(make_file(path, elf32, sizeof(elf32), 0755) &&
		      run("%s -- %s 2>/dev/null", GMEM_RUN_BIN, path) == 2,
	      "gmem-run refuses a 32-bit program (exit 2)");
	unlink(path);
	{
		static const char script[] = "#!/bin/sh\ncase \"$LD_PRELOAD\" in *libgmem-preload.so*) echo \"$1|$2\";; esac\n";

		snprintf(path, sizeof(path), "%s/script", dir);
		CHECK(make_file(path, script, sizeof(script) - 1, 0755) &&
			      output_is("a b|c", "%s -- %s 'a b' c", GMEM_RUN_BIN, path),
		      "gmem-run runs a #! script under the preload, its arguments intact");
		unlink(path);
	}
	/* Set-user-ID to another user: only root can give a file away. */
	snprintf(self_copy, sizeof(self_copy), "%s/suid-true", dir);
	if (geteuid() != 0) {
		gm_report_skip("preload-unmodified/setuid", "not root: cannot make a set-user-ID file of another user");
	} else {
		CHECK(run("cp /bin/true %s && chown 65534 %s && chmod 4755 %s", self_copy, self_copy,
			  self_copy) == 0 &&
			      run("%s -- %s 2>/dev/null", GMEM_RUN_BIN, self_copy) == 2,
		      "gmem-run refuses a set-user-ID program, which the loader would run without the preload (exit 2)");
		unlink(self_copy);
	}
	rmdir(dir);
}

/* Outside gmem-run: check gmem-run itself, then run this program again under it. */
static int relaunch(char **argv)
{
	CHECK(run("%s -- %s >/dev/null 2>&1", GMEM_RUN_BIN, GMEM_STATIC_BIN) == 2,
	      "gmem-run refuses a static program (exit 2)");
	CHECK(run("%s --backend bogus -- true 2>/dev/null", GMEM_RUN_BIN) == 2 &&
		      run("%s --vm-memory-attributes 2 -- true 2>/dev/null", GMEM_RUN_BIN) == 2 &&
		      run("%s 2>/dev/null", GMEM_RUN_BIN) == 2,
	      "gmem-run refuses bad options (exit 2)");
	CHECK(run("%s -- /nonexistent/program 2>/dev/null", GMEM_RUN_BIN) == 127,
	      "gmem-run: a missing program is exit 127");
	CHECK(run("GMEM_PRELOAD=/nonexistent/libgmem-preload.so %s -- true 2>/dev/null", GMEM_RUN_BIN) == 2,
	      "gmem-run refuses a GMEM_PRELOAD that is not there (exit 2), which would run the program without the library");
	check_foreign_programs();
	CHECK(output_is("kvm 1", "%s --backend kvm --vm-memory-attributes 1 -- sh -c "
			"'echo $GMEM_BACKEND $GMEM_VM_MEMORY_ATTRIBUTES'", GMEM_RUN_BIN),
	      "gmem-run sets GMEM_BACKEND and GMEM_VM_MEMORY_ATTRIBUTES");
	CHECK(output_is("yes", "LD_PRELOAD=/lib/x86_64-linux-gnu/libc.so.6 %s -- sh -c "
			"'case \"$LD_PRELOAD\" in *libgmem-preload.so*libc.so.6) echo yes;; esac'",
			GMEM_RUN_BIN),
	      "gmem-run puts the preload first in LD_PRELOAD and keeps what was there");
	CHECK(output_is("8", "%s --vm-memory-attributes 1 -- %s --probe-attrs", GMEM_RUN_BIN,
			argv[0]) &&
		      output_is("0", "%s --vm-memory-attributes 0 -- %s --probe-attrs", GMEM_RUN_BIN,
				argv[0]),
	      "--vm-memory-attributes 1 gives per-VM attributes (KVM_CAP_MEMORY_ATTRIBUTES PRIVATE)");
	fflush(stdout);
	setenv("GMEM_PRELOAD_TEST_CHILD", "1", 1);
	execl(GMEM_RUN_BIN, GMEM_RUN_BIN, "--backend", "soft", "--", argv[0], (char *)NULL);
	perror("exec gmem-run");
	return 1;
}

int main(int argc, char **argv)
{
	int kvm, vm;

	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc > 1 && !strcmp(argv[1], "--probe-attrs"))
		return probe_attrs();
	if (!getenv("GMEM_PRELOAD_TEST_CHILD"))
		return relaunch(argv);
	CHECK(early_kvm >= 0 && fd_is_memfd(early_kvm) &&
		      ioctl(early_kvm, KVM_GET_API_VERSION, 0) == KVM_API_VERSION,
	      "a constructor's open(\"/dev/kvm\") before main gets the library");
	close(early_kvm);
	check_system_fd();
	kvm = open("/dev/kvm", O_RDWR);
	vm = ioctl(kvm, KVM_CREATE_VM, KVM_X86_SW_PROTECTED_VM);
	CHECK(vm >= 0, "KVM_CREATE_VM(KVM_X86_SW_PROTECTED_VM)");
	check_guest_memfd(vm);
	check_sev_device(kvm);
	check_dup(vm);
	check_vfork(vm);
	check_signal_close(vm);
	check_internal_fds(vm);
	close(vm);
	close(kvm);
	check_release();
	check_plain();
	check_threads();
	printf("%s: %d failed\n", argv[0], failures);
	return failures ? 1 : 0;
}
