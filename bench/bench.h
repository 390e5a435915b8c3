/* Shared benchmark helpers: timing, medians, the three guest_memfd peers and the result records. */
#ifndef GMEM_BENCH_H
#define GMEM_BENCH_H

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <gmem/gmem.h>

#define MiB (1ULL << 20)
#define GiB (1ULL << 30)
#define PAGE_4K 4096ULL

#ifndef MFD_HUGETLB
#define MFD_HUGETLB 0x0004U
#endif
#ifndef MFD_HUGE_2MB
#define MFD_HUGE_2MB (21U << 26)
#endif
#ifndef FALLOC_FL_KEEP_SIZE
#define FALLOC_FL_KEEP_SIZE 0x01
#endif
#ifndef FALLOC_FL_PUNCH_HOLE
#define FALLOC_FL_PUNCH_HOLE 0x02
#endif

/* Environment overrides keep a quick run possible (BENCH_REPS=3 make bench). */
static inline int bench_reps(int def)
{
	const char *s = getenv("BENCH_REPS");
	int n = s ? atoi(s) : 0;

	return n > 0 ? n : def;
}

static inline double now_sec(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/*
 * Both clocks of one measured span. The figures judge the thread's CPU time:
 * this machine is shared (2 CPUs, other builds and tests running), and time
 * spent preempted inflates elapsed time by any amount. Every operation
 * measured here runs synchronously in the calling thread (faults and
 * fallocate execute in its context), so its CPU time is its cost. Elapsed
 * time is kept in the results next to it.
 */
struct timing {
	double cpu_ms;
	double wall_ms;
};

struct stopwatch {
	double wall, cpu;
};

static inline double thread_cpu_sec(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static inline void stopwatch_start(struct stopwatch *sw)
{
	sw->wall = now_sec();
	sw->cpu = thread_cpu_sec();
}

static inline struct timing stopwatch_stop(const struct stopwatch *sw)
{
	double cpu = thread_cpu_sec(), wall = now_sec();

	return (struct timing){ (cpu - sw->cpu) * 1e3, (wall - sw->wall) * 1e3 };
}

static inline int bench_cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

/* Median of n samples; the input is left in its measured order. */
static inline double median(const double *v, int n)
{
	double tmp[n];

	memcpy(tmp, v, sizeof(tmp));
	qsort(tmp, (size_t)n, sizeof(double), bench_cmp_double);
	return n % 2 ? tmp[n / 2] : (tmp[n / 2 - 1] + tmp[n / 2]) / 2;
}

static inline double best(const double *v, int n)
{
	double b = v[0];

	for (int i = 1; i < n; i++)
		if (v[i] < b)
			b = v[i];
	return b;
}

__attribute__((noreturn, format(printf, 1, 2))) static inline void die(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fprintf(stderr, "bench: ");
	vfprintf(stderr, fmt, ap);
	fprintf(stderr, "\n");
	va_end(ap);
	exit(1);
}

/* Progress goes to stderr so that stdout carries only the records. */
#define note(...) fprintf(stderr, __VA_ARGS__)

/*
 * One write per 4 KiB page, in order: the first-touch pattern the figures
 * name. volatile keeps the compiler from merging or dropping the stores.
 */
static inline void touch_pages(void *p, uint64_t len)
{
	volatile char *c = p;

	for (uint64_t off = 0; off < len; off += PAGE_4K)
		c[off] = 1;
}

/*
 * A guest_memfd peer: libgmem through its surface, the host kernel through
 * raw syscalls on /dev/kvm, or a plain memfd (the floor: what the same
 * operation costs on shmem with nothing around it).
 */
struct peer {
	const char *name;       /* libgmem, kernel, memfd: the result columns */
	int vm_fd;              /* kvm peers: the DEFAULT VM the files belong to */
	uint64_t flags;         /* extra KVM_CREATE_GUEST_MEMFD flags (folio size) */
	unsigned mfd_flags;     /* memfd peer: memfd_create flags */
	int (*create)(struct peer *p, uint64_t size);
	void *(*map)(int fd, uint64_t size);
	int (*unmap)(void *addr, uint64_t size);
	int (*falloc)(int fd, int mode, off_t off, off_t len);
	int (*fstat)(int fd, struct stat *st);
	int (*close)(int fd);
};

static inline int gm_peer_create(struct peer *p, uint64_t size)
{
	struct kvm_create_guest_memfd args = {
		.size = size,
		.flags = GUEST_MEMFD_FLAG_MMAP | GUEST_MEMFD_FLAG_INIT_SHARED | p->flags,
	};

	return gm_ioctl(p->vm_fd, KVM_CREATE_GUEST_MEMFD, &args);
}

static inline void *gm_peer_map(int fd, uint64_t size)
{
	return gm_mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
}

static inline int gm_peer_unmap(void *addr, uint64_t size)
{
	return gm_munmap(addr, size);
}

static inline int kernel_peer_create(struct peer *p, uint64_t size)
{
	struct kvm_create_guest_memfd args = {
		.size = size,
		.flags = GUEST_MEMFD_FLAG_MMAP | GUEST_MEMFD_FLAG_INIT_SHARED | p->flags,
	};

	return ioctl(p->vm_fd, KVM_CREATE_GUEST_MEMFD, &args);
}

static inline int memfd_peer_create(struct peer *p, uint64_t size)
{
	int fd = memfd_create("bench", MFD_CLOEXEC | p->mfd_flags);

	if (fd < 0)
		return -1;
	if (ftruncate(fd, (off_t)size) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

static inline void *sys_map(int fd, uint64_t size)
{
	return mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
}

static inline int sys_unmap(void *addr, uint64_t size)
{
	return munmap(addr, size);
}

/* The libgmem peer on a DEFAULT VM; extra_flags selects the folio size. */
static inline void peer_libgmem(struct peer *p, uint64_t extra_flags)
{
	int kvm = gm_open_kvm();

	if (kvm < 0)
		die("gm_open_kvm: %s", strerror(errno));
	*p = (struct peer){
		.name = "libgmem",
		.vm_fd = gm_ioctl(kvm, KVM_CREATE_VM, KVM_X86_DEFAULT_VM),
		.flags = extra_flags,
		.create = gm_peer_create,
		.map = gm_peer_map,
		.unmap = gm_peer_unmap,
		.falloc = gm_fallocate,
		.fstat = gm_fstat,
		.close = gm_close,
	};
	if (p->vm_fd < 0)
		die("libgmem KVM_CREATE_VM: %s", strerror(errno));
	gm_close(kvm);
}

/* The host kernel's guest_memfd; returns -1 with errno when it has none. */
static inline int peer_kernel(struct peer *p)
{
	int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);

	if (kvm < 0)
		return -1;
	*p = (struct peer){
		.name = "kernel",
		.vm_fd = ioctl(kvm, KVM_CREATE_VM, KVM_X86_DEFAULT_VM),
		.create = kernel_peer_create,
		.map = sys_map,
		.unmap = sys_unmap,
		.falloc = fallocate,
		.fstat = NULL, /* st_blocks stays 0 on the kernel's guest_memfd */
		.close = close,
	};
	close(kvm);
	return p->vm_fd < 0 ? -1 : 0;
}

static inline void peer_memfd(struct peer *p, unsigned mfd_flags)
{
	*p = (struct peer){
		.name = "memfd",
		.vm_fd = -1,
		.mfd_flags = mfd_flags,
		.create = memfd_peer_create,
		.map = sys_map,
		.unmap = sys_unmap,
		.falloc = fallocate,
		.fstat = fstat,
		.close = close,
	};
}

/*
 * Backs bytes of guest-physical memory on the host, then frees it. This
 * machine is a VM whose balloon reports free pages to its host, which drops
 * them: the next first touch of such a page pays a host fault on top of the
 * guest's. Touching and freeing memory just before a measured first touch
 * makes the allocator likely to hand out pages the host still backs, so the
 * figure measures the guest's fault path rather than the host's.
 */
static inline void host_prewarm(uint64_t bytes)
{
	void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);

	if (p != MAP_FAILED)
		munmap(p, bytes);
}

/* Time to write one byte per 4 KiB page of a fresh size-byte file through its mapping. */
static inline struct timing measure_first_touch(struct peer *p, uint64_t size)
{
	struct stopwatch sw;
	struct timing t;
	void *m;
	int fd;

	host_prewarm(size + size / 4);
	fd = p->create(p, size);
	if (fd < 0)
		die("%s: create %llu bytes: %s", p->name, (unsigned long long)size, strerror(errno));
	m = p->map(fd, size);
	if (m == MAP_FAILED)
		die("%s: mmap: %s", p->name, strerror(errno));
	stopwatch_start(&sw);
	touch_pages(m, size);
	t = stopwatch_stop(&sw);
	/* Teardown (freeing the memory) is outside the figure. */
	if (p->unmap(m, size) < 0)
		die("%s: munmap: %s", p->name, strerror(errno));
	p->close(fd);
	return t;
}

/* The same, as elapsed milliseconds alone. */
static inline double time_first_touch(struct peer *p, uint64_t size)
{
	return measure_first_touch(p, size).wall_ms;
}

/*
 * Runs fn on every peer reps times, rotating which peer goes first so that
 * drift in the machine (page cache, frequency, neighbours) spreads evenly.
 * cpu[i * reps + r] and wall[i * reps + r] are peer i's rep r.
 */
static inline void run_rotated(struct peer **peers, int npeers, int reps, uint64_t size,
			       struct timing (*fn)(struct peer *, uint64_t), double *cpu,
			       double *wall)
{
	for (int r = 0; r < reps; r++) {
		for (int k = 0; k < npeers; k++) {
			int i = (r + k) % npeers;
			struct timing t = fn(peers[i], size);

			cpu[i * reps + r] = t.cpu_ms;
			wall[i * reps + r] = t.wall_ms;
		}
	}
}

/* Informational rows: measured and printed, with no target of their own. */
static inline void emit_info(const char *fig, const char *metric, double value, const char *text)
{
	printf("target\t%s\t%s\t%.6g\t-\t-\tinfo\t%s\n", fig, metric, value, text);
	fflush(stdout);
}

/*
 * Records on stdout, tab-separated, read by scripts/bench.sh:
 *   result <fig> <impl> <unit> <median> <best> <samples,...>
 *          [<wall median> <wall best> <wall samples,...>]   (timed results: cpu, then wall)
 *   figure <fig> <title>
 *   target <fig> <metric> <value> <op> <limit> <met|not-met|skipped> <note>
 * Each figure prints its title first, then its results, then its target.
 */
static inline void emit_figure(const char *fig, const char *title)
{
	printf("figure\t%s\t%s\n", fig, title);
	fflush(stdout);
}

static inline void emit_stats(const double *v, int n)
{
	printf("\t%.10g\t%.10g\t", median(v, n), best(v, n));
	for (int i = 0; i < n; i++)
		printf("%s%.10g", i ? "," : "", v[i]);
}

static inline void emit_result(const char *fig, const char *impl, const char *unit,
			       const double *v, int n)
{
	printf("result\t%s\t%s\t%s", fig, impl, unit);
	emit_stats(v, n);
	printf("\n");
	fflush(stdout);
}

/* A timed result in ms: CPU time (what is judged), then elapsed time. */
static inline void emit_timed_result(const char *fig, const char *impl, const double *cpu,
				     const double *wall, int n)
{
	printf("result\t%s\t%s\tms", fig, impl);
	emit_stats(cpu, n);
	emit_stats(wall, n);
	printf("\n");
	fflush(stdout);
}

/* A target's operator: "<=", "<" or ">="; anything else is a bug in the benchmark. */
static inline void check_target_op(const char *fig, const char *op)
{
	if (strcmp(op, "<=") && strcmp(op, "<") && strcmp(op, ">="))
		die("figure %s: target operator \"%s\" is not <=, < or >=", fig, op);
}

/* op is "<=", "<" or ">=": how value must compare with limit to meet the target. */
static inline void emit_target(const char *fig, const char *metric, double value, const char *op,
			       double limit, const char *note_text)
{
	int met;

	check_target_op(fig, op);
	met = !strcmp(op, "<=") ? value <= limit : !strcmp(op, "<") ? value < limit : value >= limit;

	printf("target\t%s\t%s\t%.6g\t%s\t%.6g\t%s\t%s\n", fig, metric, value, op, limit,
	       met ? "met" : "not-met", note_text ? note_text : "");
	fflush(stdout);
}

static inline void emit_skip(const char *fig, const char *metric, const char *op, double limit,
			     const char *reason)
{
	check_target_op(fig, op);
	printf("target\t%s\t%s\t-\t%s\t%.6g\tskipped\t%s\n", fig, metric, op, limit, reason);
	fflush(stdout);
}

/*
 * Target on the ratio of the best samples: the noise here (host faults,
 * neighbours) only ever adds time, so the fastest run is the closest to what
 * the code costs. The ratio of the medians goes in the note for comparison.
 */
static inline void emit_ratio_target(const char *fig, const char *metric, const double *a,
				     const double *b, int reps, const char *op, double limit)
{
	char text[96];

	snprintf(text, sizeof(text), "best of %d; ratio of medians %.3g", reps,
		 median(a, reps) / median(b, reps));
	emit_target(fig, metric, best(a, reps) / best(b, reps), op, limit, text);
}

/* As emit_ratio_target on CPU times, with the elapsed-time ratio in the note for comparison. */
static inline void emit_timed_target(const char *fig, const char *metric, const double *a_cpu,
				     const double *a_wall, const double *b_cpu,
				     const double *b_wall, int reps, const char *op, double limit)
{
	char text[128];

	snprintf(text, sizeof(text),
		 "CPU time, best of %d; ratio of medians %.3g; elapsed-time best ratio %.3g", reps,
		 median(a_cpu, reps) / median(b_cpu, reps), best(a_wall, reps) / best(b_wall, reps));
	emit_target(fig, metric, best(a_cpu, reps) / best(b_cpu, reps), op, limit, text);
}

/*
 * libgmem, the kernel's guest_memfd and a memfd, all with 4 KiB pages, in
 * peers[0..2]; without the kernel's, the memfd moves up and there are two.
 */
static inline int peers_4k(struct peer *peers[3], struct peer *lib, struct peer *kern,
			   struct peer *mfd, const char *who)
{
	peers[0] = lib;
	peers[1] = kern;
	peers[2] = mfd;
	peer_libgmem(lib, GM_GUEST_MEMFD_FOLIO_4K);
	peer_memfd(mfd, 0);
	if (peer_kernel(kern) == 0)
		return 3;
	/* Without the peer there is no ratio; the floor is still worth a row. */
	note("%s: no kernel guest_memfd: %s\n", who, strerror(errno));
	peers[1] = mfd;
	return 2;
}

/* Room for reps samples of each of three peers. */
static inline double *alloc_samples(int reps)
{
	double *v = calloc((size_t)(3 * reps), sizeof(*v));

	if (!v)
		die("out of memory");
	return v;
}

/* libgmem (first peer) over the kernel (second) against limit, or why there is no ratio. */
static inline void emit_kernel_target(const char *fig, const double *cpu, const double *wall,
				      int reps, int npeers, double limit)
{
	if (npeers < 3)
		emit_skip(fig, "libgmem/kernel", "<=", limit, "no kernel guest_memfd on this host");
	else
		emit_timed_target(fig, "libgmem/kernel", cpu, wall, cpu + reps, wall + reps, reps,
				  "<=", limit);
}

#endif
