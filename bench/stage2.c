/* Stage-2 figures: a guest access on a hit against a plain pointer; first faults per 4K page and 2M leaf. */
/* bench.h first: it sets _GNU_SOURCE for every libc header. */
#include "bench.h"

#include <signal.h>

#define GPA_BASE (1ULL << 30) /* 1 GiB aligned, so a 2M-folio slot can map 2M leaves */
#define HIT_REGION (2 * MiB)
#define HIT_WORDS (HIT_REGION / sizeof(uint64_t))
#define HIT_PAGES (HIT_REGION / PAGE_4K)
#define FAULT_4K_SIZE (64 * MiB)
#define FAULT_2M_SIZE (128 * MiB)

#define NR_HUGEPAGES "/proc/sys/vm/nr_hugepages"
#define FREE_HUGEPAGES "/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages"

/* Keeps every value the loops read alive, so that no loop is dead code. */
static volatile uint64_t sink;

/*
 * Every time here is the measuring thread's CPU time, as the table's other
 * figures: the machine is shared and preemption adds any amount to elapsed
 * time. Faults run in the faulting thread's context, so their cost is in it.
 */
static double cpu_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ---- a VM with one gmem slot and one vCPU on libgmem ---- */

struct vmctx {
	int vm, gmem, vcpu;
	struct kvm_run *run;
};

static void vm_setup(struct vmctx *c, uint64_t size, uint64_t folio_flags)
{
	struct kvm_create_guest_memfd args = {
		.size = size,
		.flags = GUEST_MEMFD_FLAG_MMAP | GUEST_MEMFD_FLAG_INIT_SHARED | folio_flags,
	};
	struct kvm_userspace_memory_region2 region = {
		.slot = 0,
		.flags = KVM_MEM_GUEST_MEMFD,
		.guest_phys_addr = GPA_BASE,
		.memory_size = size,
		.guest_memfd_offset = 0,
	};
	int kvm = gm_open_kvm();

	if (kvm < 0)
		die("gm_open_kvm: %s", strerror(errno));
	c->vm = gm_ioctl(kvm, KVM_CREATE_VM, KVM_X86_DEFAULT_VM);
	gm_close(kvm);
	if (c->vm < 0)
		die("KVM_CREATE_VM: %s", strerror(errno));
	c->gmem = gm_ioctl(c->vm, KVM_CREATE_GUEST_MEMFD, &args);
	if (c->gmem < 0)
		die("KVM_CREATE_GUEST_MEMFD %llu bytes: %s", (unsigned long long)size,
		    strerror(errno));
	/* A gmem-only (MMAP) slot: the stage-2 maps the file, userspace_addr is unused. */
	region.guest_memfd = (uint32_t)c->gmem;
	if (gm_ioctl(c->vm, KVM_SET_USER_MEMORY_REGION2, &region) < 0)
		die("KVM_SET_USER_MEMORY_REGION2: %s", strerror(errno));
	c->vcpu = gm_ioctl(c->vm, KVM_CREATE_VCPU, 0);
	if (c->vcpu < 0)
		die("KVM_CREATE_VCPU: %s", strerror(errno));
	c->run = gm_mmap(NULL, sizeof(*c->run), PROT_READ, MAP_SHARED, c->vcpu, 0);
	if (c->run == MAP_FAILED)
		die("mmap kvm_run: %s", strerror(errno));
}

static void vm_teardown(struct vmctx *c)
{
	gm_munmap(c->run, sizeof(*c->run));
	gm_close(c->vcpu);
	gm_close(c->gmem);
	gm_close(c->vm);
}

static struct gm_mmu_stats vm_stats(struct vmctx *c)
{
	struct gm_mmu_stats st;
	int ret = gm_vm_mmu_stats(c->vm, &st);

	if (ret < 0)
		die("gm_vm_mmu_stats: %s", strerror(-ret));
	return st;
}

/* Runs the guest to its next ucall SYNC (returns 1) or to its end (returns 0). */
static int vm_run(struct vmctx *c)
{
	struct gm_ucall uc;
	uint32_t reason;

	if (gm_ioctl(c->vcpu, KVM_RUN, 0) < 0)
		die("KVM_RUN: %s", strerror(errno));
	reason = c->run->exit_reason;
	if (reason == KVM_EXIT_HLT)
		return 0;
	if (reason != KVM_EXIT_IO || gm_vcpu_get_ucall(c->vcpu, &uc) < 0)
		die("unexpected exit %u", reason);
	if (uc.cmd == GM_UCALL_ABORT)
		die("guest: %s", uc.msg);
	if (uc.cmd != GM_UCALL_SYNC)
		die("unexpected ucall %llu", (unsigned long long)uc.cmd);
	return 1;
}

static void vm_run_to_end(struct vmctx *c, gm_guest_fn fn, void *arg)
{
	int ret = gm_vcpu_set_guest(c->vcpu, fn, arg);

	if (ret < 0)
		die("gm_vcpu_set_guest: %s", strerror(-ret));
	while (vm_run(c))
		;
}

/* ---- figures s1a, s1b: accesses that hit the stage-2 ---- */

/*
 * The plain baseline. gm_guest_read64 and gm_guest_read are out-of-line calls
 * into the library, so the plain access is one out-of-line call too: noipa
 * keeps GCC from inlining it, cloning it or learning it is pure (which would
 * let it hoist or merge calls), and the volatile load happens on every call.
 */
static __attribute__((noipa)) uint64_t plain_read64(const uint64_t *p)
{
	return *(const volatile uint64_t *)p;
}

static __attribute__((noipa)) void plain_copy(void *dst, const void *src, size_t len)
{
	memcpy(dst, src, len);
}

struct hit_args {
	int reps, passes;
	uint64_t *plain;                    /* HIT_REGION of host memory, faulted in */
	double *copy_gm, *copy_plain;       /* ns per 4 KiB copy, one per rep */
	double *read_gm, *read_call, *read_inline; /* ns per 8-byte read */
};

static double read_gm_loop(struct gm_guest *g, int passes)
{
	uint64_t sum = 0;
	double t0 = cpu_now();

	for (int p = 0; p < passes; p++)
		for (uint64_t i = 0; i < HIT_WORDS; i++)
			sum += gm_guest_read64(g, GPA_BASE + i * sizeof(uint64_t));
	t0 = cpu_now() - t0;
	sink += sum;
	return t0 * 1e9 / ((double)passes * HIT_WORDS);
}

static double read_call_loop(const uint64_t *buf, int passes)
{
	uint64_t sum = 0;
	double t0 = cpu_now();

	for (int p = 0; p < passes; p++)
		for (uint64_t i = 0; i < HIT_WORDS; i++)
			sum += plain_read64(buf + i);
	t0 = cpu_now() - t0;
	sink += sum;
	return t0 * 1e9 / ((double)passes * HIT_WORDS);
}

/* The strictest baseline: a load inlined in the loop, volatile so it is not hoisted or vectorized. */
static double read_inline_loop(const uint64_t *buf, int passes)
{
	const volatile uint64_t *v = buf;
	uint64_t sum = 0;
	double t0 = cpu_now();

	for (int p = 0; p < passes; p++)
		for (uint64_t i = 0; i < HIT_WORDS; i++)
			sum += v[i];
	t0 = cpu_now() - t0;
	sink += sum;
	return t0 * 1e9 / ((double)passes * HIT_WORDS);
}

static double copy_gm_loop(struct gm_guest *g, char *dst, int passes)
{
	double t0 = cpu_now();

	for (int p = 0; p < passes; p++)
		for (uint64_t i = 0; i < HIT_PAGES; i++)
			gm_guest_read(g, dst, GPA_BASE + i * PAGE_4K, PAGE_4K);
	t0 = cpu_now() - t0;
	sink += (uint64_t)dst[0];
	return t0 * 1e9 / ((double)passes * HIT_PAGES);
}

static double copy_plain_loop(const uint64_t *buf, char *dst, int passes)
{
	double t0 = cpu_now();

	for (int p = 0; p < passes; p++)
		for (uint64_t i = 0; i < HIT_PAGES; i++)
			plain_copy(dst, (const char *)buf + i * PAGE_4K, PAGE_4K);
	t0 = cpu_now() - t0;
	sink += (uint64_t)dst[0];
	return t0 * 1e9 / ((double)passes * HIT_PAGES);
}

/*
 * Everything runs on the vCPU's thread, the plain loops included, so that
 * both sides see the same core, caches and TLB state. The guest memory and
 * the plain buffer hold the same 2 MiB, both already faulted in.
 */
static void guest_hit(struct gm_guest *g, void *arg)
{
	struct hit_args *a = arg;
	char dst[PAGE_4K] __attribute__((aligned(64)));

	for (uint64_t i = 0; i < HIT_PAGES; i++)
		gm_guest_write(g, GPA_BASE + i * PAGE_4K, (char *)a->plain + i * PAGE_4K, PAGE_4K);
	gm_guest_ucall(g, GM_UCALL_SYNC, 0);
	/*
	 * Each timed loop follows an untimed pass of itself, so that its own
	 * buffer is the one in cache whatever ran before; alternating which
	 * side goes first spreads any remaining drift over both.
	 */
	for (int r = 0; r < a->reps; r++) {
		if (r & 1) {
			read_call_loop(a->plain, 1);
			a->read_call[r] = read_call_loop(a->plain, a->passes);
			read_inline_loop(a->plain, 1);
			a->read_inline[r] = read_inline_loop(a->plain, a->passes);
			read_gm_loop(g, 1);
			a->read_gm[r] = read_gm_loop(g, a->passes);
			copy_plain_loop(a->plain, dst, 1);
			a->copy_plain[r] = copy_plain_loop(a->plain, dst, a->passes);
			copy_gm_loop(g, dst, 1);
			a->copy_gm[r] = copy_gm_loop(g, dst, a->passes);
		} else {
			read_gm_loop(g, 1);
			a->read_gm[r] = read_gm_loop(g, a->passes);
			read_inline_loop(a->plain, 1);
			a->read_inline[r] = read_inline_loop(a->plain, a->passes);
			read_call_loop(a->plain, 1);
			a->read_call[r] = read_call_loop(a->plain, a->passes);
			copy_gm_loop(g, dst, 1);
			a->copy_gm[r] = copy_gm_loop(g, dst, a->passes);
			copy_plain_loop(a->plain, dst, 1);
			a->copy_plain[r] = copy_plain_loop(a->plain, dst, a->passes);
		}
	}
}

static void fig_hit(void)
{
	int reps = bench_reps(25);
	struct hit_args a = { .reps = reps, .passes = 4 };
	double *s = calloc((size_t)(5 * reps), sizeof(*s));
	struct gm_mmu_stats st0, st1;
	struct vmctx c;
	char text[256];

	if (!s || posix_memalign((void **)&a.plain, 2 * MiB, HIT_REGION))
		die("out of memory");
	/* 4 KiB pages, as the guest's memfd backing has: the figure is the stage-2, not the host TLB. */
	madvise(a.plain, HIT_REGION, MADV_NOHUGEPAGE);
	for (uint64_t i = 0; i < HIT_WORDS; i++)
		a.plain[i] = i * 0x9e3779b97f4a7c15ULL;
	a.copy_gm = s;
	a.copy_plain = s + reps;
	a.read_gm = s + 2 * reps;
	a.read_call = s + 3 * reps;
	a.read_inline = s + 4 * reps;

	note("stage2: hit: %d reps of %d passes over 2 MiB\n", reps, a.passes);
	vm_setup(&c, HIT_REGION, GM_GUEST_MEMFD_FOLIO_4K);
	if (gm_vcpu_set_guest(c.vcpu, guest_hit, &a) < 0)
		die("gm_vcpu_set_guest");
	if (!vm_run(&c))
		die("guest ended before faulting its memory in");
	st0 = vm_stats(&c);
	if (vm_run(&c))
		die("unexpected ucall");
	st1 = vm_stats(&c);
	/* A hit figure is only one if the measured loops took no stage-2 fault. */
	if (st1.faults != st0.faults)
		die("hit loops faulted %llu times", (unsigned long long)(st1.faults - st0.faults));
	vm_teardown(&c);

	/* Ids of three characters keep the table's fig column aligned. */
	emit_figure("s1a", "guest 4 KiB copy, stage-2 hit (gm_guest_read) vs memcpy, ns/op");
	emit_result("s1a", "libgmem", "ns/op", a.copy_gm, reps);
	emit_result("s1a", "plain", "ns/op", a.copy_plain, reps);
	emit_ratio_target("s1a", "libgmem/plain", a.copy_gm, a.copy_plain, reps, "<=", 1.2);

	emit_figure("s1b", "guest 8-byte read, stage-2 hit (gm_guest_read64) vs plain, ns/op");
	emit_result("s1b", "libgmem", "ns/op", a.read_gm, reps);
	emit_result("s1b", "plain", "ns/op", a.read_call, reps);
	emit_result("s1b", "plain-inline", "ns/op", a.read_inline, reps);
	snprintf(text, sizeof(text),
		 "best of %d; plain is a noipa call doing a volatile load; ratio of medians %.3g; "
		 "vs an inlined volatile load %.3g",
		 reps, median(a.read_gm, reps) / median(a.read_call, reps),
		 best(a.read_gm, reps) / best(a.read_inline, reps));
	emit_target("s1b", "libgmem/plain", best(a.read_gm, reps) / best(a.read_call, reps), "<=", 5,
		    text);
	free(a.plain);
	free(s);
}

/* ---- figures s2a, s2b: first faults ---- */

struct touch_args {
	uint64_t size, step;
	double ns;
};

/* One write per step (4K page or 2M leaf) of a slot nothing has touched. */
static void guest_touch(struct gm_guest *g, void *arg)
{
	struct touch_args *a = arg;
	double t0 = cpu_now();

	for (uint64_t off = 0; off < a->size; off += a->step)
		gm_guest_write8(g, GPA_BASE + off, 1);
	a->ns = (cpu_now() - t0) * 1e9;
}

/* The pool size found at start, preformatted so that a signal handler can restore it. */
static char old_nr[32];
static size_t old_nr_len;
static volatile sig_atomic_t reserved;

static long read_long(const char *path)
{
	char buf[32] = "";
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return -1;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	return n > 0 ? atol(buf) : -1;
}

/* Only async-signal-safe calls: this runs from exit and from signal handlers. */
static void restore_hugepages(void)
{
	int fd;

	if (!reserved)
		return;
	reserved = 0;
	fd = open(NR_HUGEPAGES, O_WRONLY | O_CLOEXEC);
	if (fd >= 0) {
		if (write(fd, old_nr, old_nr_len) < 0) {
			/* Nothing more to do from here. */
		}
		close(fd);
	}
}

static void on_signal(int sig)
{
	restore_hugepages();
	signal(sig, SIG_DFL);
	raise(sig);
}

/*
 * A 2M-folio file sits on hugetlbfs only if the pool has the pages; without
 * them libgmem falls back to 4 KiB backing and a 2M leaf's first touch would
 * fault one 4 KiB host page, flattering the figure. Grows the pool by what is
 * missing, restores it at exit. Returns NULL, or why not.
 */
static const char *reserve_hugepages(long need, char *why, size_t why_len)
{
	long nr = read_long(NR_HUGEPAGES), avail = read_long(FREE_HUGEPAGES);
	char buf[32];
	int fd, len;
	ssize_t w;

	if (nr < 0 || avail < 0)
		return snprintf(why, why_len, "no 2 MiB hugetlb pool"), why;
	if (avail >= need)
		return NULL;
	/* Called again if a neighbour took the pages: the size to restore is the first one seen. */
	if (!old_nr_len) {
		old_nr_len = (size_t)snprintf(old_nr, sizeof(old_nr), "%ld\n", nr);
		atexit(restore_hugepages);
		signal(SIGINT, on_signal);
		signal(SIGTERM, on_signal);
		signal(SIGHUP, on_signal);
	}
	len = snprintf(buf, sizeof(buf), "%ld\n", nr + need - avail);
	reserved = 1;
	fd = open(NR_HUGEPAGES, O_WRONLY | O_CLOEXEC);
	w = fd < 0 ? -1 : write(fd, buf, (size_t)len);
	if (fd >= 0)
		close(fd);
	if (w != len)
		return snprintf(why, why_len, "cannot grow the hugetlb pool: %s", strerror(errno)),
		       why;
	if (read_long(FREE_HUGEPAGES) < need)
		return snprintf(why, why_len, "could reserve only %ld of %ld huge pages",
				read_long(FREE_HUGEPAGES), need),
		       why;
	return NULL;
}

/*
 * ns per step for a guest's first touch of a fresh slot; checks the stage-2
 * did what it says. A 2M file that fell back to 4 KiB backing (the hugetlb
 * pool taken by a neighbour) would fault one 4 KiB host page per leaf and
 * flatter the figure: that sample is refused and taken again.
 */
static double soft_first_touch(uint64_t size, uint64_t folio_flags, uint64_t step)
{
	struct touch_args a = { .size = size, .step = step };
	uint64_t n = size / step;
	struct gm_gmem_info info;
	struct gm_mmu_stats st;
	struct vmctx c;
	char why[160];

	if (step == PAGE_4K)
		host_prewarm(size + size / 4);
	for (int tries = 0;; tries++) {
		vm_setup(&c, size, folio_flags);
		if (step == PAGE_4K)
			break;
		if (gm_gmem_info(c.gmem, &info) == 0 && info.backing == GM_BACKING_HUGETLB)
			break;
		vm_teardown(&c);
		if (tries == 5)
			return -1;
		note("stage2: 2M file not on hugetlbfs, taking the sample again\n");
		reserve_hugepages(size / (2 * MiB) + 16, why, sizeof(why));
		usleep(100 * 1000);
	}
	vm_run_to_end(&c, guest_touch, &a);
	st = vm_stats(&c);
	if (st.faults != n)
		die("%llu stage-2 faults for %llu first touches", (unsigned long long)st.faults,
		    (unsigned long long)n);
	if ((step == PAGE_4K ? st.mapped_4k_bytes : st.mapped_2m_bytes) != size)
		die("stage-2 maps %llu bytes at 4K, %llu at 2M; expected %llu at %s",
		    (unsigned long long)st.mapped_4k_bytes, (unsigned long long)st.mapped_2m_bytes,
		    (unsigned long long)size, step == PAGE_4K ? "4K" : "2M");
	vm_teardown(&c);
	return a.ns / (double)n;
}

/* ns per page for the host's first write to each page of a fresh kernel guest_memfd. */
static double kernel_first_touch(struct peer *p, uint64_t size)
{
	double t;
	void *m;
	int fd;

	host_prewarm(size + size / 4);
	fd = p->create(p, size);
	if (fd < 0)
		die("kernel: create %llu bytes: %s", (unsigned long long)size, strerror(errno));
	m = p->map(fd, size);
	if (m == MAP_FAILED)
		die("kernel: mmap: %s", strerror(errno));
	t = cpu_now();
	touch_pages(m, size);
	t = cpu_now() - t;
	/* Teardown (freeing the memory) is outside the figure. */
	if (p->unmap(m, size) < 0)
		die("kernel: munmap: %s", strerror(errno));
	p->close(fd);
	return t * 1e9 / (double)(size / PAGE_4K);
}

static const char *probe_hugetlb(char *why, size_t why_len)
{
	struct gm_gmem_info info;
	struct vmctx c;
	int ret;

	vm_setup(&c, FAULT_2M_SIZE, GM_GUEST_MEMFD_FOLIO_2M);
	ret = gm_gmem_info(c.gmem, &info);
	vm_teardown(&c);
	if (ret < 0)
		return snprintf(why, why_len, "gm_gmem_info: %s", strerror(-ret)), why;
	if (info.backing != GM_BACKING_HUGETLB)
		return snprintf(why, why_len, "2M folio fell back to backing %u", info.backing), why;
	return NULL;
}

static void fig_fault(void)
{
	int reps = bench_reps(9), have_kernel, have_2m;
	double *s4k, *s2m, *sk;
	const char *skip;
	struct peer kern;
	char why[160], text[256];

	s4k = calloc((size_t)(3 * reps), sizeof(double));
	if (!s4k)
		die("out of memory");
	s2m = s4k + reps;
	sk = s4k + 2 * reps;
	have_kernel = peer_kernel(&kern) == 0;
	if (!have_kernel)
		note("stage2: no kernel guest_memfd: %s\n", strerror(errno));
	/* A margin for the pool's rounding, as fault2m keeps. */
	skip = reserve_hugepages((long)(FAULT_2M_SIZE / (2 * MiB)) + 16, why, sizeof(why));
	if (!skip)
		skip = probe_hugetlb(why, sizeof(why));
	have_2m = !skip;
	if (skip)
		note("stage2: no 2M leaf figure: %s\n", skip);

	note("stage2: first fault: %d reps (%llu MiB 4K, %llu MiB 2M)\n", reps,
	     (unsigned long long)(FAULT_4K_SIZE / MiB), (unsigned long long)(FAULT_2M_SIZE / MiB));
	/* One discarded round: the pool's pages and the allocator warm up once, here. */
	for (int r = -1; r < reps; r++) {
		for (int k = 0; k < 3; k++) {
			int which = (r + 1 + k) % 3;
			double v;

			if (which == 0) {
				v = soft_first_touch(FAULT_4K_SIZE, GM_GUEST_MEMFD_FOLIO_4K, PAGE_4K);
				if (r >= 0)
					s4k[r] = v;
			} else if (which == 1 && have_2m) {
				v = soft_first_touch(FAULT_2M_SIZE, GM_GUEST_MEMFD_FOLIO_2M, 2 * MiB);
				if (v < 0) {
					skip = "the hugetlb pool was taken by another process";
					note("stage2: no 2M leaf figure: %s\n", skip);
					have_2m = 0;
				} else if (r >= 0) {
					s2m[r] = v;
				}
			} else if (which == 2 && have_kernel) {
				v = kernel_first_touch(&kern, FAULT_4K_SIZE);
				if (r >= 0)
					sk[r] = v;
			}
		}
	}
	restore_hugepages();

	emit_figure("s2a", "first fault per 4K page: guest touch of a fresh 4K slot, ns/page");
	emit_result("s2a", "libgmem", "ns/page", s4k, reps);
	if (have_kernel)
		emit_result("s2a", "kernel", "ns/page", sk, reps);
	emit_figure("s2b", "first fault per 2M leaf (kernel: per 4K page), ns");
	if (have_2m)
		emit_result("s2b", "libgmem", "ns/leaf", s2m, reps);
	if (have_kernel)
		emit_result("s2b", "kernel", "ns/page", sk, reps);
	if (!have_kernel) {
		emit_skip("s2a", "libgmem/kernel", "-", 0, "no kernel guest_memfd");
		emit_skip("s2b", "libgmem/kernel", "-", 0, "no kernel guest_memfd");
		free(s4k);
		return;
	}
	snprintf(text, sizeof(text),
		 "no target; best of %d; kernel: host mmap write of a 4K guest_memfd; ratio of medians %.3g",
		 reps, median(s4k, reps) / median(sk, reps));
	emit_info("s2a", "libgmem/kernel", best(s4k, reps) / best(sk, reps), text);
	if (!have_2m) {
		emit_skip("s2b", "libgmem/kernel", "-", 0, skip);
		free(s4k);
		return;
	}
	snprintf(text, sizeof(text),
		 "no target; best of %d; one 2M leaf vs one 4K page; vs 512 kernel pages (same bytes) %.3g; "
		 "ratio of medians %.3g",
		 reps, best(s2m, reps) / (512 * best(sk, reps)), median(s2m, reps) / median(sk, reps));
	emit_info("s2b", "libgmem/kernel", best(s2m, reps) / best(sk, reps), text);
	free(s4k);
}

int main(void)
{
	fig_hit();
	fig_fault();
	return 0;
}
