/* Figure 3: first-touch fault-in of 1 GiB of a 2 MiB-folio guest_memfd on hugetlbfs, against the kernel's 4 KiB one. */
/* bench.h first: it sets _GNU_SOURCE for every libc header. */
#include "bench.h"

#include <signal.h>
#include <stdbool.h>

#define NR_HUGEPAGES "/proc/sys/vm/nr_hugepages"
#define FREE_HUGEPAGES "/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages"

/*
 * What this run added to the pool. Others may resize the pool meanwhile (the
 * machine is shared), so the restore takes back our pages rather than
 * writing the size found at start over theirs.
 */
static volatile sig_atomic_t added;

static long read_long(const char *path)
{
	char buf[32] = "";
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n;
	long v = 0;

	if (fd < 0)
		return -1;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return -1;
	/* By hand rather than atol: the restore calls this from signal handlers. */
	for (ssize_t i = 0; i < n && buf[i] >= '0' && buf[i] <= '9'; i++)
		v = v * 10 + (buf[i] - '0');
	return v;
}

static int write_str(const char *path, const char *s, size_t len)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return -1;
	n = write(fd, s, len);
	close(fd);
	return n == (ssize_t)len ? 0 : -1;
}

/* Only async-signal-safe calls: this runs from exit and from signal handlers. */
static void restore_hugepages(void)
{
	char buf[24], *p = buf + sizeof(buf);
	long nr, n = added;

	if (!n)
		return;
	added = 0;
	nr = read_long(NR_HUGEPAGES) - n;
	if (nr < 0)
		nr = 0;
	/* snprintf is not async-signal-safe: format by hand. */
	*--p = '\n';
	do {
		*--p = (char)('0' + nr % 10);
		nr /= 10;
	} while (nr);
	write_str(NR_HUGEPAGES, p, (size_t)(buf + sizeof(buf) - p));
}

static void on_signal(int sig)
{
	restore_hugepages();
	signal(sig, SIG_DFL);
	raise(sig);
}

/*
 * Makes need free 2 MiB pages available, growing the pool only by what is
 * missing. Returns NULL, or why it could not.
 */
static const char *reserve_hugepages(long need, char *why, size_t why_len)
{
	long nr = read_long(NR_HUGEPAGES), avail = read_long(FREE_HUGEPAGES), grown;
	static bool handlers;
	sigset_t block, old;
	int len, ret, err;
	char buf[32];

	if (nr < 0 || avail < 0) {
		snprintf(why, why_len, "no 2 MiB hugetlb pool on this kernel");
		return why;
	}
	if (avail >= need)
		return NULL;
	if (geteuid() != 0) {
		snprintf(why, why_len, "needs root to reserve %ld huge pages (%ld free)", need,
			 avail);
		return why;
	}
	if (!handlers) {
		atexit(restore_hugepages);
		signal(SIGINT, on_signal);
		signal(SIGTERM, on_signal);
		signal(SIGHUP, on_signal);
		handlers = true;
	}
	/* No signal between growing the pool and knowing by how much. */
	sigemptyset(&block);
	sigaddset(&block, SIGINT);
	sigaddset(&block, SIGTERM);
	sigaddset(&block, SIGHUP);
	sigprocmask(SIG_BLOCK, &block, &old);
	len = snprintf(buf, sizeof(buf), "%ld\n", nr + need - avail);
	ret = write_str(NR_HUGEPAGES, buf, (size_t)len);
	err = errno;
	/* What the kernel really added, which may be less than asked. */
	grown = read_long(NR_HUGEPAGES) - nr;
	if (grown > 0)
		added += (sig_atomic_t)grown;
	sigprocmask(SIG_SETMASK, &old, NULL);
	if (ret < 0) {
		snprintf(why, why_len, "cannot write %s: %s", NR_HUGEPAGES, strerror(err));
		return why;
	}
	avail = read_long(FREE_HUGEPAGES);
	if (avail < need) {
		/* Fragmented memory: the kernel grew the pool by less than asked. */
		snprintf(why, why_len, "could reserve only %ld of %ld huge pages", avail, need);
		return why;
	}
	note("fault2m: huge page pool %ld -> %ld\n", nr, nr + grown);
	return NULL;
}

/*
 * Before each file on hugetlbfs: others on this machine may shrink the pool
 * while we run (tests that reserve and give back pages of their own).
 */
static long need_pages;

static void top_up_hugepages(void)
{
	char why[160];

	if (reserve_hugepages(need_pages, why, sizeof(why)))
		die("huge page pool shrunk under the benchmark and cannot grow back: %s", why);
}

static int memfd_huge_create(struct peer *p, uint64_t size)
{
	top_up_hugepages();
	return memfd_peer_create(p, size);
}

/* The libgmem peer must really sit on hugetlbfs: a silent fallback to 4 KiB would flatter nothing. */
static int gm_huge_create(struct peer *p, uint64_t size)
{
	struct gm_gmem_info info;
	int fd;

	top_up_hugepages();
	fd = gm_peer_create(p, size);
	if (fd < 0)
		return fd;
	if (gm_gmem_info(fd, &info) < 0 || info.backing != GM_BACKING_HUGETLB)
		die("libgmem 2M: backing %u, not hugetlbfs", info.backing);
	return fd;
}

static const char *probe_libgmem(struct peer *p, uint64_t size, char *why, size_t why_len)
{
	struct gm_gmem_info info;
	int fd = gm_peer_create(p, size), ret;

	if (fd < 0) {
		snprintf(why, why_len, "libgmem 2M create: %s", strerror(errno));
		return why;
	}
	ret = gm_gmem_info(fd, &info);
	gm_close(fd);
	if (ret < 0) {
		snprintf(why, why_len, "gm_gmem_info: %s", strerror(-ret));
		return why;
	}
	if (info.backing != GM_BACKING_HUGETLB) {
		snprintf(why, why_len, "libgmem fell back to backing %u, not hugetlbfs",
			 info.backing);
		return why;
	}
	return NULL;
}

int main(void)
{
	struct peer lib, kern, mfd;
	struct peer *peers[3] = { &lib, &kern, &mfd };
	const uint64_t size = 1 * GiB;
	const long need = (long)(size / (2 * MiB)) + 16; /* margin for the pool's rounding */
	int reps = bench_reps(7);
	const char *skip;
	char why[160];
	double *cpu, *wall;

	emit_figure("3", "fault-in 1 GiB: libgmem 2M hugetlb vs kernel 4K (memfd: hugetlb 2M)");
	if (peer_kernel(&kern) < 0) {
		emit_skip("3", "kernel/libgmem", ">=", 5, "no kernel guest_memfd on this host");
		return 0;
	}
	need_pages = need;
	skip = reserve_hugepages(need, why, sizeof(why));
	peer_libgmem(&lib, GM_GUEST_MEMFD_FOLIO_2M);
	if (!skip)
		skip = probe_libgmem(&lib, size, why, sizeof(why));
	if (skip) {
		note("fault2m: skipped: %s\n", skip);
		emit_skip("3", "kernel/libgmem", ">=", 5, skip);
		return 0;
	}
	lib.create = gm_huge_create;
	peer_memfd(&mfd, MFD_HUGETLB | MFD_HUGE_2MB);
	mfd.create = memfd_huge_create;

	cpu = calloc((size_t)(3 * reps), sizeof(*cpu));
	wall = calloc((size_t)(3 * reps), sizeof(*wall));
	if (!cpu || !wall)
		die("out of memory");
	/* One discarded pass: the pool's pages take their host faults once, here. */
	note("fault2m: warm-up pass\n");
	run_rotated(peers, 3, 1, size, measure_first_touch, cpu, wall);
	note("fault2m: %d reps of 1 GiB on 3 peers\n", reps);
	run_rotated(peers, 3, reps, size, measure_first_touch, cpu, wall);
	for (int i = 0; i < 3; i++)
		emit_timed_result("3", peers[i]->name, cpu + i * reps, wall + i * reps, reps);
	/* Speedup: the kernel's time over ours. */
	emit_timed_target("3", "kernel/libgmem", cpu + reps, wall + reps, cpu, wall, reps, ">=", 5);
	restore_hugepages();
	return 0;
}
