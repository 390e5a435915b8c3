/*
 * Figure p1: what libgmem-preload.so costs calls that are not the library's:
 * read, write, close, mmap and munmap of ordinary fds and memory, each timed
 * in a child process without and with the preload library, alternating, in
 * the same run, with the library in use (a VM and a mapped guest_memfd).
 */
#include "bench.h"

#include <pthread.h>
#include <sys/wait.h>

#include <gmem/kvm.h>

#define OPS 20000
#define CLOSE_BATCH 500 /* divides OPS */

enum op { OP_READ, OP_WRITE, OP_CLOSE, OP_MMAP, OP_MUNMAP, NR_OPS };
static const char *const op_names[NR_OPS] = { "read", "write", "close", "mmap", "munmap" };

static void *idle_thread(void *arg)
{
	for (;;)
		pause();
	return arg;
}

/*
 * The library in use, as in a VMM: its fds above the ordinary ones (so each
 * call on an ordinary fd looks at the fd table) and a guest_memfd mapped (so
 * each munmap looks at the mapping list). The plain run makes the same calls
 * on the host's /dev/kvm, where there is one; none of this is timed. Both runs
 * have a second thread, as a VMM has its vCPUs: the library's fault thread
 * would otherwise put the C library's multi-threaded paths (~40 ns a call)
 * on one side only.
 */
static void use_the_library(bool preloaded)
{
	pthread_t idle;

	if (pthread_create(&idle, NULL, idle_thread, NULL))
		die("interposer: pthread_create");
	struct kvm_create_guest_memfd args = {
		.size = 2 * MiB, .flags = GUEST_MEMFD_FLAG_MMAP | GUEST_MEMFD_FLAG_INIT_SHARED
	};
	int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	int vm = kvm < 0 ? -1 : ioctl(kvm, KVM_CREATE_VM, KVM_X86_SW_PROTECTED_VM);
	int gmem = vm < 0 ? -1 : ioctl(vm, KVM_CREATE_GUEST_MEMFD, &args);
	void *m = gmem < 0 ? MAP_FAILED : mmap(NULL, 2 * MiB, PROT_READ | PROT_WRITE, MAP_SHARED, gmem, 0);

	if (m == MAP_FAILED && preloaded)
		die("interposer: the library's guest_memfd mapping: %s", strerror(errno));
}

/* CPU ns per call of each op, in this process. */
static void measure(bool preloaded, double ns[NR_OPS])
{
	static int fds[CLOSE_BATCH];
	static void *maps[OPS];
	int zero = open("/dev/zero", O_RDONLY), null = open("/dev/null", O_WRONLY);
	int memfd = memfd_create("bench-plain", 0);
	struct stopwatch sw;
	char byte = 0;

	if (zero < 0 || null < 0 || memfd < 0 || ftruncate(memfd, PAGE_4K) < 0)
		die("interposer: setup: %s", strerror(errno));
	use_the_library(preloaded);
	stopwatch_start(&sw);
	for (int i = 0; i < OPS; i++)
		if (read(zero, &byte, 1) != 1)
			die("read: %s", strerror(errno));
	ns[OP_READ] = stopwatch_stop(&sw).cpu_ms * 1e6 / OPS;
	stopwatch_start(&sw);
	for (int i = 0; i < OPS; i++)
		if (write(null, &byte, 1) != 1)
			die("write: %s", strerror(errno));
	ns[OP_WRITE] = stopwatch_stop(&sw).cpu_ms * 1e6 / OPS;
	/* close needs open fds: made outside the timed loops, a batch at a time (RLIMIT_NOFILE). */
	ns[OP_CLOSE] = 0;
	for (int done = 0; done < OPS; done += CLOSE_BATCH) {
		for (int i = 0; i < CLOSE_BATCH; i++)
			if ((fds[i] = dup(null)) < 0)
				die("dup: %s", strerror(errno));
		stopwatch_start(&sw);
		for (int i = 0; i < CLOSE_BATCH; i++)
			close(fds[i]);
		ns[OP_CLOSE] += stopwatch_stop(&sw).cpu_ms * 1e6 / OPS;
	}
	stopwatch_start(&sw);
	for (int i = 0; i < OPS; i++)
		if ((maps[i] = mmap(NULL, PAGE_4K, PROT_READ, MAP_SHARED, memfd, 0)) == MAP_FAILED)
			die("mmap: %s", strerror(errno));
	ns[OP_MMAP] = stopwatch_stop(&sw).cpu_ms * 1e6 / OPS;
	stopwatch_start(&sw);
	for (int i = 0; i < OPS; i++)
		if (munmap(maps[i], PAGE_4K) < 0)
			die("munmap: %s", strerror(errno));
	ns[OP_MUNMAP] = stopwatch_stop(&sw).cpu_ms * 1e6 / OPS;
	close(memfd);
	close(null);
	close(zero);
}

/* Runs this program as a child (with the preload or without) and reads its figures. */
static void run_child(const char *self, bool preload, double ns[NR_OPS])
{
	int pipefd[2], status;
	FILE *in;
	pid_t pid;

	if (pipe(pipefd) < 0)
		die("pipe: %s", strerror(errno));
	pid = fork();
	if (pid < 0)
		die("fork: %s", strerror(errno));
	if (!pid) {
		dup2(pipefd[1], STDOUT_FILENO);
		close(pipefd[0]);
		if (preload)
			setenv("LD_PRELOAD", GMEM_PRELOAD_LIB, 1);
		else
			unsetenv("LD_PRELOAD");
		execl(self, self, "--child", preload ? "preloaded" : "plain", (char *)NULL);
		_exit(127);
	}
	close(pipefd[1]);
	in = fdopen(pipefd[0], "r");
	for (int i = 0; i < NR_OPS; i++)
		if (!in || fscanf(in, "%lf", &ns[i]) != 1)
			die("interposer: no figures from the child");
	fclose(in);
	if (waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status))
		die("interposer: the child failed");
}

int main(int argc, char **argv)
{
	int reps = bench_reps(15);
	double plain[NR_OPS][64], preload[NR_OPS][64], ns[NR_OPS];
	char self[4096], fig[16], title[160];
	ssize_t n;

	if (argc > 2 && !strcmp(argv[1], "--child")) {
		measure(!strcmp(argv[2], "preloaded"), ns);
		for (int i = 0; i < NR_OPS; i++)
			printf("%.6f\n", ns[i]);
		return 0;
	}
	if (reps > 64)
		reps = 64;
	n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (n < 0)
		die("readlink: %s", strerror(errno));
	self[n] = '\0';
	if (access(GMEM_PRELOAD_LIB, R_OK))
		die("interposer: %s: %s", GMEM_PRELOAD_LIB, strerror(errno));
	for (int r = 0; r < reps; r++) {
		/* Alternate which goes first: a drift of the machine hits both alike. */
		for (int k = 0; k < 2; k++) {
			bool with = (r + k) % 2;

			note("interposer: rep %d/%d, %s\n", r + 1, reps, with ? "preload" : "plain");
			run_child(self, with, ns);
			for (int i = 0; i < NR_OPS; i++)
				(with ? preload : plain)[i][r] = ns[i];
		}
	}
	for (int i = 0; i < NR_OPS; i++) {
		double ratio;

		snprintf(fig, sizeof(fig), "p1-%s", op_names[i]);
		snprintf(title, sizeof(title),
			 "%s of an ordinary fd or memory, ns CPU per call: plain vs under libgmem-preload.so "
			 "with the library in use",
			 op_names[i]);
		emit_figure(fig, title);
		emit_result(fig, "plain", "ns", plain[i], reps);
		emit_result(fig, "libgmem", "ns", preload[i], reps);
		ratio = best(preload[i], reps) / best(plain[i], reps);
		emit_target(fig, "preload/plain", ratio, "<=", 1.05,
			    "the interposer's cost on a call that is not the library's (best of each)");
	}
	return 0;
}
