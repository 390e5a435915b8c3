/* Conversion figures: a 64 GiB sparse range, 1 GiB mapped against its mmap floor, 2M-leaf churn. */
/* bench.h first: it sets _GNU_SOURCE for every libc header. */
#include "bench.h"

#include <stdbool.h>

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

#define PRIVATE KVM_MEMORY_ATTRIBUTE_PRIVATE
#define GPA_BASE (1ULL << 30) /* 1 GiB aligned, so a 2M-folio slot can map 2M leaves */
#define SPARSE_SIZE (64 * GiB)
#define SMALL_SIZE (2 * MiB)
#define MAPPED_SIZE (1 * GiB)
#define CHURN_SIZE (1 * GiB)
#define CHURN_PAGES (CHURN_SIZE / PAGE_4K)
#define CHURN_NR (CHURN_PAGES / 100) /* 1% of the 4K pages */

/*
 * The kernel's per-VM attribute xarray: about 60 ns per 4K page. Quoted, not
 * measured: the host kernel here offers no KVM_X86_SW_PROTECTED_VM (and has no
 * per-file attributes at all), so there is nothing to run it on.
 */
#define KERNEL_XARRAY_NS_PER_PAGE 60.0

/* In-place conversion needs a VM type with private memory. */
static int sw_protected_vm(void)
{
	int kvm = gm_open_kvm(), vm;

	if (kvm < 0)
		die("gm_open_kvm: %s", strerror(errno));
	vm = gm_ioctl(kvm, KVM_CREATE_VM, KVM_X86_SW_PROTECTED_VM);
	gm_close(kvm);
	if (vm < 0)
		die("KVM_CREATE_VM(SW_PROTECTED): %s", strerror(errno));
	return vm;
}

static int gmem_create(int vm, uint64_t size, uint64_t folio_flags)
{
	struct kvm_create_guest_memfd args = {
		.size = size,
		.flags = GUEST_MEMFD_FLAG_MMAP | GUEST_MEMFD_FLAG_INIT_SHARED | folio_flags,
	};
	int fd = gm_ioctl(vm, KVM_CREATE_GUEST_MEMFD, &args);

	if (fd < 0)
		die("KVM_CREATE_GUEST_MEMFD %llu bytes: %s", (unsigned long long)size,
		    strerror(errno));
	return fd;
}

static void convert(int gmem, uint64_t off, uint64_t size, uint64_t attrs)
{
	struct kvm_memory_attributes2 a = { .offset = off, .size = size, .attributes = attrs };

	if (gm_ioctl(gmem, KVM_SET_MEMORY_ATTRIBUTES2, &a) < 0)
		die("KVM_SET_MEMORY_ATTRIBUTES2 [%#llx, +%#llx) -> %#llx: %s (error_offset %#llx)",
		    (unsigned long long)off, (unsigned long long)size, (unsigned long long)attrs,
		    strerror(errno), (unsigned long long)a.error_offset);
}

static struct gm_gmem_info gmem_info(int gmem)
{
	struct gm_gmem_info info;
	int ret = gm_gmem_info(gmem, &info);

	if (ret < 0)
		die("gm_gmem_info: %s", strerror(-ret));
	return info;
}

/* emit_timed_result with a unit of its own: these samples are per operation, not ms. */
static void emit_timed_unit(const char *fig, const char *impl, const char *unit, const double *cpu,
			    const double *wall, int n)
{
	printf("result\t%s\t%s\t%s", fig, impl, unit);
	emit_stats(cpu, n);
	emit_stats(wall, n);
	printf("\n");
	fflush(stdout);
}

/* ---- figures c1, c1p, c1m: one range, 64 GiB sparse against 2 MiB ---- */

/* n round trips shared -> private -> shared over the whole file. */
static struct timing convert_pairs(int gmem, uint64_t size, int n)
{
	struct stopwatch sw;

	stopwatch_start(&sw);
	for (int i = 0; i < n; i++) {
		convert(gmem, 0, size, PRIVATE);
		convert(gmem, 0, size, 0);
	}
	return stopwatch_stop(&sw);
}

/*
 * Round trips on the 64 GiB and the 2 MiB file, side by side; s gets the
 * 64 GiB CPU, 2 MiB CPU, 64 GiB elapsed and 2 MiB elapsed ns per round trip.
 * With map, each file has a host mapping over all of it that nothing touches:
 * the conversion then also replaces that mapping, with no page to zap.
 */
static void sparse_pairs(double *s, int reps, bool map)
{
	int vm = sw_protected_vm(), fd[2], n;
	const uint64_t size[2] = { SPARSE_SIZE, SMALL_SIZE };
	struct gm_gmem_info info;
	void *m[2] = { NULL, NULL };
	struct timing t;

	/* Never touched: the figure is the attribute work (and the mapping's replacement). */
	for (int i = 0; i < 2; i++) {
		fd[i] = gmem_create(vm, size[i], GM_GUEST_MEMFD_FOLIO_4K);
		if (map) {
			m[i] = gm_mmap(NULL, size[i], PROT_READ | PROT_WRITE, MAP_SHARED, fd[i], 0);
			if (m[i] == MAP_FAILED)
				die("gm_mmap %llu bytes: %s", (unsigned long long)size[i],
				    strerror(errno));
		}
	}
	/* Both sides do the same number of calls; sized so that a rep of the 64 GiB side takes ~20 ms. */
	t = convert_pairs(fd[0], size[0], 1);
	n = t.cpu_ms > 0 ? (int)(20.0 / t.cpu_ms) : 2000;
	n = n < 1 ? 1 : n > 2000 ? 2000 : n;
	convert_pairs(fd[1], size[1], n);
	note("convert: sparse%s: %d reps of %d round trips, 64 GiB and 2 MiB\n",
	     map ? ", mapped" : "", reps, n);
	for (int r = 0; r < reps; r++) {
		for (int k = 0; k < 2; k++) {
			int i = (r + k) % 2;

			t = convert_pairs(fd[i], size[i], n);
			s[i * reps + r] = t.cpu_ms * 1e6 / n;
			s[(2 + i) * reps + r] = t.wall_ms * 1e6 / n;
		}
	}
	info = gmem_info(fd[0]);
	if (info.allocated_bytes || info.shared_bytes != SPARSE_SIZE)
		die("64 GiB file: %llu bytes allocated, %llu shared after the figure",
		    (unsigned long long)info.allocated_bytes, (unsigned long long)info.shared_bytes);
	for (int i = 0; i < 2; i++) {
		if (map)
			gm_munmap(m[i], size[i]);
		gm_close(fd[i]);
	}
	gm_close(vm);
}

static void fig_sparse(void)
{
	int reps = bench_reps(9);
	double *s = calloc((size_t)(5 * reps), sizeof(*s)), *per_page = s + 4 * reps;
	char text[320];

	if (!s)
		die("out of memory");
	sparse_pairs(s, reps, false);
	emit_figure("c1", "convert 64 GiB sparse to private and back, ns (plain: 2 MiB file)");
	emit_timed_unit("c1", "libgmem", "ns/op", s, s + 2 * reps, reps);
	emit_timed_unit("c1", "plain", "ns/op", s + reps, s + 3 * reps, reps);
	emit_timed_target("c1", "64G/2M", s, s + 2 * reps, s + reps, s + 3 * reps, reps, "<=", 2);

	/* Per 4K page, one direction: half a round trip over 16M pages. */
	for (int r = 0; r < reps; r++)
		per_page[r] = s[r] / 2 / (double)(SPARSE_SIZE / PAGE_4K);
	emit_figure("c1p", "convert 64 GiB sparse, ns per 4K page (kernel: quoted 60 ns)");
	emit_result("c1p", "libgmem", "ns/page", per_page, reps);
	snprintf(text, sizeof(text),
		 "no target; CPU time, best of %d; libgmem %.3g ns/page (%.3g us per 64 GiB) vs the "
		 "kernel's per-VM xarray ~%.0f ns/page (~1 s per 64 GiB), a quoted reference not "
		 "measured here: the host kernel has no per-file attributes and no SW_PROTECTED VM",
		 reps, best(per_page, reps), best(s, reps) / 2 / 1e3, KERNEL_XARRAY_NS_PER_PAGE);
	emit_info("c1p", "quoted-kernel/libgmem", KERNEL_XARRAY_NS_PER_PAGE / best(per_page, reps),
		  text);

	sparse_pairs(s, reps, true);
	emit_figure("c1m", "as c1, each file host-mapped whole (untouched), ns");
	emit_timed_unit("c1m", "libgmem", "ns/op", s, s + 2 * reps, reps);
	emit_timed_unit("c1m", "plain", "ns/op", s + reps, s + 3 * reps, reps);
	snprintf(text, sizeof(text), "no target; CPU time, best of %d; ratio of medians %.3g", reps,
		 median(s, reps) / median(s + reps, reps));
	emit_info("c1m", "64G/2M", best(s, reps) / best(s + reps, reps), text);
	free(s);
}

/* ---- figure c2: 1 GiB of mapped memory against the mmap floor ---- */

/*
 * Faults every page of the range into the mapping again, untimed: a
 * conversion's cost is in zapping the host's page tables, which a previous
 * round trip left empty. The pages are already in the file (the page cache),
 * so this only lays PTEs.
 */
static void populate(void *p, uint64_t len)
{
	if (madvise(p, len, MADV_POPULATE_WRITE) < 0)
		touch_pages(p, len);
}

struct mapped {
	int gmem;               /* libgmem side */
	int mfd, hole;          /* floor side: the backing memfd and an empty one */
	char *gm_map, *mfd_map;
};

static struct timing mapped_libgmem(struct mapped *m)
{
	struct stopwatch sw;

	populate(m->gm_map, MAPPED_SIZE);
	stopwatch_start(&sw);
	convert(m->gmem, 0, MAPPED_SIZE, PRIVATE);
	convert(m->gmem, 0, MAPPED_SIZE, 0);
	return stopwatch_stop(&sw);
}

/*
 * The floor: what the host must do to take the range away from its mapping
 * and give it back, and nothing more. One MAP_FIXED mmap of an empty memfd
 * over the range (accesses past its end raise SIGBUS, as a private page must;
 * the kernel zaps the populated PTEs here), then one MAP_FIXED mmap of the
 * backing memfd at the same offset. Same prot and flags as libgmem's own
 * mappings; the memory stays in the file throughout, as it does in place.
 */
static struct timing mapped_floor(struct mapped *m)
{
	struct stopwatch sw;
	void *p;

	populate(m->mfd_map, MAPPED_SIZE);
	stopwatch_start(&sw);
	p = mmap(m->mfd_map, MAPPED_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, m->hole,
		 0);
	if (p == MAP_FAILED)
		die("floor: mmap hole: %s", strerror(errno));
	p = mmap(m->mfd_map, MAPPED_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, m->mfd,
		 0);
	if (p == MAP_FAILED)
		die("floor: mmap memfd: %s", strerror(errno));
	return stopwatch_stop(&sw);
}

/* The data must survive in place: a conversion that dropped it would be cheaper. */
static void check_mapped(struct mapped *m)
{
	struct gm_gmem_info info;

	convert(m->gmem, 0, MAPPED_SIZE, PRIVATE);
	info = gmem_info(m->gmem);
	if (info.shared_bytes || info.allocated_bytes < MAPPED_SIZE)
		die("1 GiB private: %llu bytes shared, %llu allocated",
		    (unsigned long long)info.shared_bytes,
		    (unsigned long long)info.allocated_bytes);
	convert(m->gmem, 0, MAPPED_SIZE, 0);
	for (uint64_t off = 0; off < MAPPED_SIZE; off += 4093 * PAGE_4K)
		if (m->gm_map[off] != (char)0xa5)
			die("1 GiB converted back: byte at %#llx lost", (unsigned long long)off);
}

static void fig_mapped(void)
{
	int reps = bench_reps(7), vm = sw_protected_vm();
	double *s = calloc((size_t)(4 * reps), sizeof(*s));
	struct mapped m;

	if (!s)
		die("out of memory");
	host_prewarm(2 * MAPPED_SIZE + MAPPED_SIZE / 2);
	m.gmem = gmem_create(vm, MAPPED_SIZE, GM_GUEST_MEMFD_FOLIO_4K);
	m.gm_map = gm_mmap(NULL, MAPPED_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, m.gmem, 0);
	if (m.gm_map == MAP_FAILED)
		die("gm_mmap 1 GiB: %s", strerror(errno));
	m.mfd = memfd_create("bench-convert", MFD_CLOEXEC);
	m.hole = memfd_create("bench-convert-hole", MFD_CLOEXEC);
	if (m.mfd < 0 || m.hole < 0 || ftruncate(m.mfd, (off_t)MAPPED_SIZE) < 0)
		die("memfd: %s", strerror(errno));
	m.mfd_map = mmap(NULL, MAPPED_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, m.mfd, 0);
	if (m.mfd_map == MAP_FAILED)
		die("mmap memfd: %s", strerror(errno));
	/* Fully written, both: every 4K page allocated and mapped. */
	memset(m.gm_map, 0xa5, MAPPED_SIZE);
	memset(m.mfd_map, 0xa5, MAPPED_SIZE);
	if (gmem_info(m.gmem).backing != GM_BACKING_MEMFD)
		die("1 GiB 4K file is not on a plain memfd");
	check_mapped(&m);

	note("convert: mapped: %d reps of 1 GiB, libgmem and the mmap floor\n", reps);
	for (int r = 0; r < reps; r++) {
		for (int k = 0; k < 2; k++) {
			int which = (r + k) % 2;
			struct timing t = which ? mapped_floor(&m) : mapped_libgmem(&m);

			s[which * reps + r] = t.cpu_ms;
			s[(2 + which) * reps + r] = t.wall_ms;
		}
	}
	check_mapped(&m);
	gm_munmap(m.gm_map, MAPPED_SIZE);
	munmap(m.mfd_map, MAPPED_SIZE);
	close(m.mfd);
	close(m.hole);
	gm_close(m.gmem);
	gm_close(vm);

	emit_figure("c2", "convert 1 GiB mapped+written 4K, ms (memfd: mmap hole+back floor)");
	emit_timed_result("c2", "libgmem", s, s + 2 * reps, reps);
	emit_timed_result("c2", "memfd", s + reps, s + 3 * reps, reps);
	emit_timed_target("c2", "libgmem/floor", s, s + 2 * reps, s + reps, s + 3 * reps, reps, "<=",
			  1.5);
	free(s);
}

/* ---- figure c3: 1% of 4K pages churned on 1 GiB of 2M folios ---- */

struct churn {
	int vm, gmem, vcpu;
	struct kvm_run *run;
	int rounds;
};

/* Touches every 4K page, then tells the host; once per round. */
static void guest_touch_all(struct gm_guest *g, void *arg)
{
	struct churn *c = arg;

	for (int round = 0; round < c->rounds; round++) {
		for (uint64_t off = 0; off < CHURN_SIZE; off += PAGE_4K)
			gm_guest_write8(g, GPA_BASE + off, (uint8_t)round);
		gm_guest_ucall(g, GM_UCALL_SYNC, 1, (uint64_t)round);
	}
}

static void run_to_sync(struct churn *c)
{
	struct gm_ucall uc;

	if (gm_ioctl(c->vcpu, KVM_RUN, 0) < 0)
		die("KVM_RUN: %s", strerror(errno));
	if (c->run->exit_reason != KVM_EXIT_IO || gm_vcpu_get_ucall(c->vcpu, &uc) < 0 ||
	    uc.cmd != GM_UCALL_SYNC)
		die("unexpected exit %u (ucall %llu: %s)", c->run->exit_reason,
		    (unsigned long long)uc.cmd, uc.cmd == GM_UCALL_ABORT ? uc.msg : "");
}

static struct gm_mmu_stats mmu_stats(int vm)
{
	struct gm_mmu_stats st;
	int ret = gm_vm_mmu_stats(vm, &st);

	if (ret < 0)
		die("gm_vm_mmu_stats: %s", strerror(-ret));
	return st;
}

/* xorshift64: a fixed seed keeps every run churning the same pages. */
static uint64_t rng_next(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

/* CHURN_NR distinct 4K page indices in random order: a partial Fisher-Yates shuffle. */
static void pick_pages(uint32_t *pick, uint64_t *seed)
{
	static uint32_t all[CHURN_PAGES];

	for (uint32_t i = 0; i < CHURN_PAGES; i++)
		all[i] = i;
	for (uint32_t i = 0; i < CHURN_NR; i++) {
		uint32_t j = i + (uint32_t)(rng_next(seed) % (CHURN_PAGES - i));
		uint32_t t = all[i];

		all[i] = all[j];
		all[j] = t;
		pick[i] = all[i];
	}
}

static void fig_churn(void)
{
	int reps = bench_reps(5);
	double *s = calloc((size_t)(3 * reps), sizeof(*s)), *share;
	struct kvm_userspace_memory_region2 region = {
		.slot = 0,
		.flags = KVM_MEM_GUEST_MEMFD,
		.guest_phys_addr = GPA_BASE,
		.memory_size = CHURN_SIZE,
	};
	static uint32_t pick[CHURN_NR];
	uint64_t seed = 0x9e3779b97f4a7c15ULL;
	struct gm_gmem_info info;
	struct gm_mmu_stats st;
	struct churn c = { .rounds = reps + 1 };
	const char *backing;
	char title[160], text[320];

	if (!s)
		die("out of memory");
	share = s + 2 * reps;
	/*
	 * No huge pages are reserved here: the 2M-folio file should sit on a
	 * plain memfd. If a neighbour left pages in the pool it may land on
	 * hugetlbfs instead; the title says which it got.
	 */
	c.vm = sw_protected_vm();
	c.gmem = gmem_create(c.vm, CHURN_SIZE, GM_GUEST_MEMFD_FOLIO_2M);
	info = gmem_info(c.gmem);
	backing = info.backing == GM_BACKING_HUGETLB ? "hugetlbfs" :
		  info.backing == GM_BACKING_MEMFD   ? "plain memfd" : "unknown";
	region.guest_memfd = (uint32_t)c.gmem;
	if (gm_ioctl(c.vm, KVM_SET_USER_MEMORY_REGION2, &region) < 0)
		die("KVM_SET_USER_MEMORY_REGION2: %s", strerror(errno));
	c.vcpu = gm_ioctl(c.vm, KVM_CREATE_VCPU, 0);
	if (c.vcpu < 0)
		die("KVM_CREATE_VCPU: %s", strerror(errno));
	c.run = gm_mmap(NULL, sizeof(*c.run), PROT_READ, MAP_SHARED, c.vcpu, 0);
	if (c.run == MAP_FAILED)
		die("mmap kvm_run: %s", strerror(errno));
	if (gm_vcpu_set_guest(c.vcpu, guest_touch_all, &c) < 0)
		die("gm_vcpu_set_guest");

	note("convert: churn: %d reps of %llu 4K pages of 1 GiB 2M folios (%s)\n", reps,
	     (unsigned long long)CHURN_NR, backing);
	run_to_sync(&c);
	st = mmu_stats(c.vm);
	if (st.mapped_2m_bytes != CHURN_SIZE)
		die("first touch maps %llu bytes at 2M, %llu at 4K; expected all at 2M",
		    (unsigned long long)st.mapped_2m_bytes, (unsigned long long)st.mapped_4k_bytes);
	for (int r = 0; r < reps; r++) {
		struct stopwatch sw;
		struct timing t;
		uint64_t mapped;

		pick_pages(pick, &seed);
		stopwatch_start(&sw);
		for (uint32_t i = 0; i < CHURN_NR; i++)
			convert(c.gmem, (uint64_t)pick[i] * PAGE_4K, PAGE_4K, PRIVATE);
		for (uint32_t i = 0; i < CHURN_NR; i++)
			convert(c.gmem, (uint64_t)pick[i] * PAGE_4K, PAGE_4K, 0);
		t = stopwatch_stop(&sw);
		s[r] = t.cpu_ms;
		s[reps + r] = t.wall_ms;
		run_to_sync(&c);
		st = mmu_stats(c.vm);
		mapped = st.mapped_4k_bytes + st.mapped_2m_bytes + st.mapped_1g_bytes;
		if (mapped != CHURN_SIZE)
			die("after the churn the guest maps %llu of %llu bytes",
			    (unsigned long long)mapped, (unsigned long long)CHURN_SIZE);
		share[r] = 100.0 * (double)st.mapped_2m_bytes / (double)CHURN_SIZE;
	}
	gm_munmap(c.run, sizeof(*c.run));
	gm_close(c.vcpu);
	gm_close(c.gmem);
	gm_close(c.vm);

	snprintf(title, sizeof(title),
		 "churn 1%% of 4K pages, 1 GiB 2M folios (%s), ms; 2M share after",
		 backing);
	emit_figure("c3", title);
	/* The share first: the table takes a figure's unit from its last result. */
	emit_result("c3", "2m-share", "percent", share, reps);
	emit_timed_result("c3", "libgmem", s, s + reps, reps);
	snprintf(text, sizeof(text),
		 "worst of %d rounds; %llu pages to private then back, one ioctl each: best %.3g ms "
		 "CPU (%.3g us per ioctl), median %.3g ms; backing %s",
		 reps, (unsigned long long)CHURN_NR, best(s, reps),
		 best(s, reps) * 1e3 / (2.0 * CHURN_NR), median(s, reps), backing);
	/* Judged on the worst round (best() is the minimum): every round must keep its huge leaves. */
	emit_target("c3", "percent mapped at 2M", best(share, reps), ">=", 99, text);
	free(s);
}

int main(void)
{
	fig_sparse();
	fig_mapped();
	fig_churn();
	return 0;
}
