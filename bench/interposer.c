/*
 * Figure p1: what libgmem-preload.so costs calls that are not the library's:
 * read, write, close and mmap of ordinary fds, each timed in a child process
 * without and with the preload library, alternating, in the same run.
 */
#include "bench.h"

#include <sys/wait.h>

#define OPS 20000
#define CLOSE_BATCH 500 /* divides OPS */

enum op { OP_READ, OP_WRITE, OP_CLOSE, OP_MMAP, NR_OPS };
static const char *const op_names[NR_OPS] = { "read", "write", "close", "mmap" };

/* CPU ns per call of each op, in this process. */
static void measure(double ns[NR_OPS])
{
	static int fds[CLOSE_BATCH];
	static void *maps[OPS];
	int zero = open("/dev/zero", O_RDONLY), null = open("/dev/null", O_WRONLY);
	int memfd = memfd_create("bench-plain", 0);
	struct stopwatch sw;
	char byte = 0;

	if (zero < 0 || null < 0 || memfd < 0 || ftruncate(memfd, PAGE_4K) < 0)
		die("interposer: setup: %s", strerror(errno));
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
	for (int i = 0; i < OPS; i++)
		munmap(maps[i], PAGE_4K);
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
		execl(self, self, "--child", (char *)NULL);
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

	if (argc > 1 && !strcmp(argv[1], "--child")) {
		measure(ns);
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
			 "%s of an ordinary fd, ns CPU per call: plain vs under libgmem-preload.so",
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
