/*
 * libFuzzer target "vm_attrs": the per-VM attribute mode (kvm.vm_memory_attributes=1).
 * Random programs of KVM_SET_MEMORY_ATTRIBUTES on one VM (any range, wrapping
 * and unaligned ones too), guest_memfd slots with a userspace_addr, files
 * created, punched and closed, host writes to the shared memory and guest
 * accesses of each kind, replayed against a model of the VM's private gfns,
 * the slots and the first bytes of every file and host page.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/falloc.h>
#include <unistd.h>

#include "fuzz.h"

/* Slots, files and host memory live in a small window of guest-physical space... */
#define WINDOW_GFN 0x100ULL
#define WINDOW_PAGES 64
/* ...or in a 2 MiB-aligned one, where a 2 MiB-folio file's slot can have huge leaves. */
#define HUGE_GFN 0x400ULL
#define HUGE_PAGES 512
#define MAX_SLOTS 4
#define MAX_FILES 3
#define SMALL_FILE_PAGES 64
#define MAX_FILE_PAGES HUGE_PAGES
#define MAX_SLOT_PAGES 16
/* The VMM's memory for shared pages; a slot's userspace_addr starts in its first half. */
#define POOL_PAGES (2 * HUGE_PAGES)
#define MAX_PROBES 96
/* Attribute changes are cheap; each probe may cost a vCPU (a memory fault stops it). */
#define MAX_ATTR_OPS 256
/* The highest gfn a KVM_SET_MEMORY_ATTRIBUTES can reach: address + size may not wrap. */
#define GFN_LIMIT (1ULL << 52)

struct fz_file {
	int fd; /* -1: never made, or closed (the file is then gone: no mapping holds it) */
	uint64_t npages, flags;
	uint64_t tag[MAX_FILE_PAGES]; /* the first 8 bytes of each page; 0 until written */
};

struct fz_slot {
	bool used;
	uint64_t gfn, npages;
	uint64_t pool_page; /* userspace_addr, as a page of the pool */
	int file;           /* -1 once the file is gone */
	uint64_t pgoff;
	bool gmem_only; /* the file had MMAP: shared accesses go to the file too */
};

static struct state {
	int kvm, vm;
	unsigned long type;
	struct probe_vcpu probe;
	struct pageset priv; /* the VM's private gfns */
	struct fz_file file[MAX_FILES];
	struct fz_slot slot[MAX_SLOTS];
	uint64_t pool_tag[POOL_PAGES];
	unsigned probes, attr_ops;
} st;

static uint64_t *pool; /* POOL_PAGES pages, mapped once */
static bool trace;

static bool private_vm(void)
{
	return st.type == KVM_X86_SW_PROTECTED_VM;
}

static bool model_private(uint64_t gfn)
{
	return private_vm() && ps_meets(&st.priv, gfn, gfn + 1);
}

/* ---- guest accesses ------------------------------------------------------------------ */

/* The slot covering gfn, or NULL. */
static struct fz_slot *slot_at(uint64_t gfn)
{
	for (int i = 0; i < MAX_SLOTS; i++)
		if (st.slot[i].used && st.slot[i].gfn <= gfn && gfn - st.slot[i].gfn < st.slot[i].npages)
			return &st.slot[i];
	return NULL;
}

/* Where an access's 8 bytes live, as the model says: a file page's tag or a pool page's. */
struct place {
	int result;   /* enum probe_result */
	bool private; /* the access was private (a memory fault's flag) */
	uint64_t *tag;
};

/* kvm_mmu_faultin_pfn with per-VM attributes, for an access of the given kind at gfn. */
static struct place predict_access(uint64_t gfn, enum gm_access access)
{
	bool is_private = model_private(gfn);
	bool private = private_vm() && (access == GM_ACCESS_AUTO ? is_private
								  : access == GM_ACCESS_PRIVATE);
	struct fz_slot *m = slot_at(gfn);
	struct place p = { .result = PROBE_MEMORY, .private = private };

	if (!m)
		p.result = private ? PROBE_FAULT : PROBE_MMIO;
	else if (private != is_private || ((private || m->gmem_only) && m->file < 0))
		p.result = PROBE_FAULT;
	else if (private || m->gmem_only)
		p.tag = &st.file[m->file].tag[m->pgoff + gfn - m->gfn];
	else
		p.tag = &st.pool_tag[m->pool_page + gfn - m->gfn];
	return p;
}

static const char *const result_names[] = { "memory", "MMIO", "memory fault" };

/* One guest read of the first bytes of gfn (and a write of a fresh tag after it, if write). */
static void probe_gfn(uint64_t gfn, enum gm_access access, bool write)
{
	struct place want = predict_access(gfn, access);
	uint64_t expect = want.tag ? *want.tag : 0, tag = (uint64_t)fuzz_op << 32 | 0x76610000 | st.probes;
	int got;

	if (gfn >= GFN_LIMIT || st.probes >= MAX_PROBES)
		return;
	st.probes++;
	if (st.probe.fd < 0 && !probe_start(&st.probe, st.vm, 0))
		fail("KVM_CREATE_VCPU for the probe: %s", strerror(errno));
	got = probe_access_kind(&st.probe, gfn * PAGE_SIZE, access, write, expect, tag);
	if (trace) {
		struct gm_mmu_stats ms = { 0 };

		gm_vm_mmu_stats(st.vm, &ms);
		fprintf(stderr, "  probe gfn %#llx kind %d: %s (2 MiB leaves: %llu)\n",
			(unsigned long long)gfn, access, result_names[got],
			(unsigned long long)(ms.mapped_2m_bytes / SZ_2M));
	}
	if (got != want.result)
		fail("guest access (kind %d) at gfn %#llx: %s, model %s (private %d)", access,
		     (unsigned long long)gfn, result_names[got], result_names[want.result],
		     model_private(gfn));
	if (got == PROBE_FAULT &&
	    probe_req.fault_flags != (want.private ? KVM_MEMORY_EXIT_FLAG_PRIVATE : 0))
		fail("memory fault at gfn %#llx: flags %#llx, the access was %s",
		     (unsigned long long)gfn, (unsigned long long)probe_req.fault_flags,
		     want.private ? "private" : "shared");
	if (got != PROBE_MEMORY)
		return;
	if (probe_req.val != expect)
		fail("guest read at gfn %#llx (kind %d, %s): %#llx, model %#llx", (unsigned long long)gfn,
		     access, want.private ? "from the file" : "shared", (unsigned long long)probe_req.val,
		     (unsigned long long)expect);
	if (write)
		*want.tag = tag;
}

/* Reads each of gfns[0..n) with AUTO accesses, 16 to a run of the probe, against the model. */
static void sweep(const uint64_t *gfns, size_t n)
{
	uint64_t gpas[16], vals[16];
	int results[16];

	for (size_t at = 0; at < n; at += 16) {
		size_t k = n - at < 16 ? n - at : 16;

		for (size_t i = 0; i < k; i++)
			gpas[i] = gfns[at + i] * PAGE_SIZE;
		probe_batch(&st.probe, st.vm, 0, gpas, k, results, vals);
		for (size_t i = 0; i < k; i++) {
			uint64_t gfn = gfns[at + i];
			struct place want = predict_access(gfn, GM_ACCESS_AUTO);

			if (results[i] != want.result || (want.tag && vals[i] != *want.tag))
				fail("sweep: gfn %#llx read %s %#llx, model %s %#llx (private %d)",
				     (unsigned long long)gfn, result_names[results[i]],
				     (unsigned long long)vals[i], result_names[want.result],
				     (unsigned long long)(want.tag ? *want.tag : 0), model_private(gfn));
		}
	}
}

/* At the end: every page of the window and its two neighbours, and every 8th of the huge one. */
static void sweep_windows(void)
{
	uint64_t gfns[WINDOW_PAGES + 2 + HUGE_PAGES / 8 + 3];
	size_t n = 0;

	for (uint64_t gfn = WINDOW_GFN - 1; gfn <= WINDOW_GFN + WINDOW_PAGES; gfn++)
		gfns[n++] = gfn;
	gfns[n++] = HUGE_GFN - 1;
	for (uint64_t p = 0; p < HUGE_PAGES; p += 8)
		gfns[n++] = HUGE_GFN + p;
	gfns[n++] = HUGE_GFN + HUGE_PAGES - 1;
	gfns[n++] = HUGE_GFN + HUGE_PAGES;
	sweep(gfns, n);
}

static void op_probe(struct input *in)
{
	uint8_t sel = u8(in), at = u8(in);
	enum gm_access access = (enum gm_access)(sel % 3);
	uint64_t gfn = WINDOW_GFN + at % WINDOW_PAGES;

	/* Now and then in the huge window, just outside the window, or far out in guest-physical space. */
	if (sel & 0x20)
		gfn = HUGE_GFN + (at * 2 + (sel >> 7)) % HUGE_PAGES;
	if (sel & 0x40)
		gfn = (sel & 0x80) ? u64(in) >> 12 : WINDOW_GFN - 1 + (at & 1) * (WINDOW_PAGES + 1);
	probe_gfn(gfn, access, sel & 0x08);
}

/* ---- KVM_SET_MEMORY_ATTRIBUTES -------------------------------------------------------- */

static uint64_t pick_gpa(struct input *in, uint8_t sel)
{
	switch (sel % 8) {
	case 0:
	case 1:
	case 2:
		return (WINDOW_GFN - 2 + u8(in) % (WINDOW_PAGES + 4)) * PAGE_SIZE;
	case 3:
		return (HUGE_GFN - 2 + u16(in) % (HUGE_PAGES + 4)) * PAGE_SIZE;
	case 4:
		return u64(in); /* anything, aligned or not */
	case 5:
		return (u64(in) % GFN_LIMIT) * PAGE_SIZE;
	case 6:
		return -(uint64_t)(u8(in) % 8) * PAGE_SIZE; /* near the top: sizes wrap */
	default: {
		uint64_t huge = u8(in) % 4;

		return huge * SZ_2M + (u8(in) % 2) * 0x800;
	}
	}
}

static uint64_t pick_size(struct input *in, uint8_t sel, uint64_t gpa)
{
	switch (sel % 8) {
	case 0:
	case 1:
	case 2:
		return (u8(in) % 24) * PAGE_SIZE;
	case 3:
		return (u16(in) % (HUGE_PAGES + 2)) * PAGE_SIZE;
	case 4:
		return u64(in);
	case 5:
		return -gpa - (u8(in) % 3) * PAGE_SIZE; /* up to the top, one past it, or short of it */
	case 6: {
		uint64_t pages = u16(in) % 4096;

		return pages * PAGE_SIZE + (u8(in) % 8 == 0) * 0x10;
	}
	default:
		return SZ_1G << (u8(in) % 24);
	}
}

/* The run of gfns with gfn's attribute around it, as the model has it (short of the top page). */
static void model_run(uint64_t gfn, uint64_t *start, uint64_t *end)
{
	*start = 0;
	*end = GFN_LIMIT - 1;
	for (size_t i = 0; i < st.priv.nr; i++) {
		uint64_t a = st.priv.r[i][0], b = st.priv.r[i][1];

		if (a <= gfn && gfn < b) {
			*start = a;
			*end = b < *end ? b : *end;
			return;
		}
		if (b <= gfn && b > *start)
			*start = b;
		if (a > gfn && a < *end)
			*end = a;
	}
}

/*
 * Sets the whole run around gfn to the attribute it has: a no-op, which must zap
 * nothing (the edge probes just mapped leaves in it). It is one only if the
 * library merged the ranges that make up the run.
 */
static void check_run_is_one(uint64_t gfn)
{
	struct gm_mmu_stats before, after;
	struct kvm_memory_attributes a = { 0 };
	uint64_t start, end;

	if (gfn >= GFN_LIMIT - 1)
		return;
	model_run(gfn, &start, &end);
	a.address = start * PAGE_SIZE;
	a.size = (end - start) * PAGE_SIZE;
	a.attributes = model_private(gfn) ? KVM_MEMORY_ATTRIBUTE_PRIVATE : 0;
	if (gm_vm_mmu_stats(st.vm, &before) || gm_ioctl(st.vm, KVM_SET_MEMORY_ATTRIBUTES, &a) ||
	    gm_vm_mmu_stats(st.vm, &after))
		fail("KVM_SET_MEMORY_ATTRIBUTES over the run [%#llx, %#llx): %s",
		     (unsigned long long)start, (unsigned long long)end, strerror(errno));
	if (after.zaps != before.zaps)
		fail("setting the run [%#llx, %#llx) to the attribute it has zapped %llu leaves",
		     (unsigned long long)start, (unsigned long long)end,
		     (unsigned long long)(after.zaps - before.zaps));
}

static void op_set_attributes(struct input *in)
{
	uint8_t sel = u8(in), ssel = u8(in);
	struct kvm_memory_attributes a = { 0 };
	struct gm_mmu_stats before, after;
	uint64_t end = 0, supported = private_vm() ? KVM_MEMORY_ATTRIBUTE_PRIVATE : 0;
	bool bad_ptr = (sel & 0xf0) == 0xf0, no_op;
	int expect = 0, ret;

	a.address = pick_gpa(in, sel);
	a.size = pick_size(in, ssel, a.address);
	a.attributes = (sel & 0x10) ? KVM_MEMORY_ATTRIBUTE_PRIVATE : 0;
	if ((ssel & 0xe0) == 0xe0)
		a.attributes = 1ULL << (u8(in) % 64);
	if ((ssel & 0x18) == 0x18)
		a.flags = 1ULL << (u8(in) % 64);
	if (st.attr_ops >= MAX_ATTR_OPS)
		return;
	st.attr_ops++;
	/* kvm_vm_ioctl_set_mem_attributes' checks, in its order (docs/api.md). */
	if (bad_ptr)
		expect = EFAULT;
	else if (a.flags)
		expect = EINVAL;
	else if (a.attributes & ~supported)
		expect = EINVAL;
	else if (!a.size || __builtin_add_overflow(a.address, a.size, &end))
		expect = EINVAL;
	else if (a.address % PAGE_SIZE || a.size % PAGE_SIZE)
		expect = EINVAL;
	no_op = !expect && (a.attributes ? ps_meets_all(&st.priv, a.address / PAGE_SIZE, end / PAGE_SIZE)
					 : !ps_meets(&st.priv, a.address / PAGE_SIZE, end / PAGE_SIZE));
	if (gm_vm_mmu_stats(st.vm, &before))
		fail("gm_vm_mmu_stats failed");
	ret = gm_ioctl(st.vm, KVM_SET_MEMORY_ATTRIBUTES, bad_ptr ? NULL : &a);
	if (trace)
		fprintf(stderr, "  set [%#llx, +%#llx) attrs %#llx flags %#llx: %d (%s)\n",
			(unsigned long long)a.address, (unsigned long long)a.size,
			(unsigned long long)a.attributes, (unsigned long long)a.flags, ret,
			ret ? strerror(errno) : "ok");
	if (ret && ret != -1)
		fail("KVM_SET_MEMORY_ATTRIBUTES returned %d", ret);
	if ((ret ? errno : 0) != expect)
		fail("KVM_SET_MEMORY_ATTRIBUTES [%#llx, +%#llx) attrs %#llx flags %#llx: errno %d, model %d",
		     (unsigned long long)a.address, (unsigned long long)a.size,
		     (unsigned long long)a.attributes, (unsigned long long)a.flags, ret ? errno : 0,
		     expect);
	if (gm_vm_mmu_stats(st.vm, &after))
		fail("gm_vm_mmu_stats failed");
	/* A failed call, or a range that already had the attributes, zaps nothing. */
	if ((ret || no_op) && after.zaps != before.zaps)
		fail("KVM_SET_MEMORY_ATTRIBUTES that changed nothing zapped %llu leaves",
		     (unsigned long long)(after.zaps - before.zaps));
	if (ret)
		return;
	if (a.attributes)
		ps_add(&st.priv, a.address / PAGE_SIZE, end / PAGE_SIZE);
	else
		ps_remove(&st.priv, a.address / PAGE_SIZE, end / PAGE_SIZE);
	/* Both edges of the range, inside and out: neighbours must not have merged or moved. */
	probe_gfn(a.address / PAGE_SIZE - 1, GM_ACCESS_AUTO, false);
	probe_gfn(a.address / PAGE_SIZE, GM_ACCESS_AUTO, false);
	probe_gfn(end / PAGE_SIZE - 1, GM_ACCESS_AUTO, false);
	probe_gfn(end / PAGE_SIZE, GM_ACCESS_AUTO, false);
	check_run_is_one(a.address / PAGE_SIZE);
	check_run_is_one(end / PAGE_SIZE);
}

/* ---- files and slots ----------------------------------------------------------------- */

static void op_create_file(struct input *in)
{
	uint8_t sel = u8(in);
	struct kvm_create_guest_memfd args = {
		.size = (1 + u8(in) % SMALL_FILE_PAGES) * PAGE_SIZE,
		.flags = sel & 0x03, /* MMAP, INIT_SHARED */
	};
	struct kvm_memory_attributes2 conv = { .size = PAGE_SIZE };
	struct fz_file *f = &st.file[sel % 16 % MAX_FILES];
	/* Per-VM attributes: INIT_SHARED only for a VM without private memory (6.18). */
	int expect = private_vm() && (args.flags & GUEST_MEMFD_FLAG_INIT_SHARED) ? EINVAL : 0;
	int fd;

	if (f->fd >= 0)
		return;
	if (sel & 0x80) {
		/* One 2 MiB folio (on hugetlbfs while the host has huge pages, else a memfd). */
		args.size = HUGE_PAGES * PAGE_SIZE;
		args.flags |= GM_GUEST_MEMFD_FOLIO_2M;
	}
	fd = gm_ioctl(st.vm, KVM_CREATE_GUEST_MEMFD, &args);
	if ((fd < 0 ? errno : 0) != expect)
		fail("KVM_CREATE_GUEST_MEMFD flags %#llx: %d (%s), model errno %d",
		     (unsigned long long)args.flags, fd, fd < 0 ? strerror(errno) : "ok", expect);
	if (fd < 0)
		return;
	*f = (struct fz_file){ .fd = fd, .npages = args.size / PAGE_SIZE, .flags = args.flags };
	/* The file has no attributes of its own in this mode. */
	if (gm_ioctl(fd, KVM_SET_MEMORY_ATTRIBUTES2, &conv) != -1 || errno != ENOTTY)
		fail("KVM_SET_MEMORY_ATTRIBUTES2 on a per-VM-mode file: not ENOTTY");
}

static void op_close_file(struct input *in)
{
	struct fz_file *f = &st.file[u8(in) % MAX_FILES];
	int i = (int)(f - st.file);

	if (f->fd < 0)
		return;
	if (gm_close(f->fd))
		fail("gm_close(gmem): %s", strerror(errno));
	f->fd = -1;
	/* Nothing else holds the file: it is released and its slots lose it. */
	for (int s = 0; s < MAX_SLOTS; s++)
		if (st.slot[s].used && st.slot[s].file == i) {
			st.slot[s].file = -1;
			probe_gfn(st.slot[s].gfn, GM_ACCESS_SHARED, false);
			probe_gfn(st.slot[s].gfn, GM_ACCESS_PRIVATE, false);
		}
}

static void op_punch(struct input *in)
{
	struct fz_file *f = &st.file[u8(in) % MAX_FILES];
	uint64_t first = u8(in), n = 1 + u8(in) % 8;

	if (f->fd < 0)
		return;
	first %= f->npages;
	if (n > f->npages - first)
		n = f->npages - first;
	/* A 2 MiB-folio file punches whole folios. */
	if (f->flags & GM_GUEST_MEMFD_FOLIO_2M) {
		first = 0;
		n = f->npages;
	}
	if (gm_fallocate(f->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)(first * PAGE_SIZE),
			 (off_t)(n * PAGE_SIZE)))
		fail("punching pages %llu+%llu: %s", (unsigned long long)first, (unsigned long long)n,
		     strerror(errno));
	memset(&f->tag[first], 0, n * sizeof(f->tag[0]));
}

/* The VMM writes its shared memory; a mapped shared leaf shows it at once. */
static void op_host_write(struct input *in)
{
	uint64_t page = u8(in) % POOL_PAGES;

	st.pool_tag[page] = (uint64_t)fuzz_op << 32 | 0x686f0000 | page;
	pool[page * PAGE_SIZE / 8] = st.pool_tag[page];
}

/*
 * KVM_SET_USER_MEMORY_REGION2 of a guest_memfd slot, as kvm_set_memory_region
 * and kvm_gmem_bind check it (the full matrix is the model target's): the errno.
 */
static int predict_slot(const struct kvm_userspace_memory_region2 *r, int file)
{
	uint64_t gfn = r->guest_phys_addr / PAGE_SIZE, npages = r->memory_size / PAGE_SIZE;
	uint64_t first = r->guest_memfd_offset / PAGE_SIZE;
	struct fz_slot *old = &st.slot[r->slot];

	if (!npages)
		return old->used ? 0 : EINVAL;
	/* Guest_memfd slots cannot be changed, only deleted. */
	if (old->used)
		return EINVAL;
	for (int i = 0; i < MAX_SLOTS; i++)
		if (st.slot[i].used && st.slot[i].gfn < gfn + npages && gfn < st.slot[i].gfn + st.slot[i].npages)
			return EEXIST;
	if (file < 0)
		return EBADF;
	if (first + npages > st.file[file].npages)
		return EINVAL;
	/* A file range backs one slot. */
	for (int i = 0; i < MAX_SLOTS; i++)
		if (st.slot[i].used && st.slot[i].file == file && st.slot[i].pgoff < first + npages &&
		    first < st.slot[i].pgoff + st.slot[i].npages)
			return EEXIST;
	return 0;
}

static void op_set_slot(struct input *in)
{
	/* Each byte in its own statement: the order of reads is defined. */
	uint8_t sel = u8(in);
	struct fz_file *f = &st.file[u8(in) % MAX_FILES];
	struct kvm_userspace_memory_region2 r = { .slot = sel % MAX_SLOTS, .flags = KVM_MEM_GUEST_MEMFD };
	struct fz_slot *m = &st.slot[r.slot], before = *m;
	int file = f->fd >= 0 ? (int)(f - st.file) : -1, expect, ret;
	uint64_t pool_page;

	r.guest_phys_addr = (WINDOW_GFN + u8(in) % WINDOW_PAGES) * PAGE_SIZE;
	r.memory_size = (sel & 0x80) ? 0 : (1 + u8(in) % MAX_SLOT_PAGES) * PAGE_SIZE;
	r.guest_memfd_offset = (u8(in) % SMALL_FILE_PAGES) * PAGE_SIZE;
	pool_page = u8(in) % (POOL_PAGES / 2);
	if (sel & 0x40) {
		/* The huge window: all of it from the file's start, or a part at the same offset. */
		uint64_t skip = (sel & 0x20) ? u8(in) % HUGE_PAGES : 0;

		r.guest_phys_addr = (HUGE_GFN + skip) * PAGE_SIZE;
		r.guest_memfd_offset = skip * PAGE_SIZE;
		if (r.memory_size)
			r.memory_size = (HUGE_PAGES - skip) * PAGE_SIZE;
	}
	/* The slot cannot leave the window: reads there are what sweep_windows checks. */
	if (!(sel & 0x40) && r.guest_phys_addr + r.memory_size > (WINDOW_GFN + WINDOW_PAGES) * PAGE_SIZE)
		r.memory_size = (WINDOW_GFN + WINDOW_PAGES) * PAGE_SIZE - r.guest_phys_addr;
	r.userspace_addr = (uint64_t)(uintptr_t)pool + pool_page * PAGE_SIZE;
	r.guest_memfd = (uint32_t)(f->fd >= 0 ? f->fd : BAD_FD);
	expect = predict_slot(&r, file);
	ret = gm_ioctl(st.vm, KVM_SET_USER_MEMORY_REGION2, &r);
	if (trace)
		fprintf(stderr, "  slot %u gfn %#llx pages %llu file %d pgoff %llu: %d (%s)\n", r.slot,
			(unsigned long long)r.guest_phys_addr / PAGE_SIZE,
			(unsigned long long)r.memory_size / PAGE_SIZE, file,
			(unsigned long long)r.guest_memfd_offset / PAGE_SIZE, ret,
			ret ? strerror(errno) : "ok");
	if ((ret ? errno : 0) != expect)
		fail("KVM_SET_USER_MEMORY_REGION2 slot %u gpa %#llx size %#llx file %d offset %#llx: "
		     "errno %d, model %d", r.slot, (unsigned long long)r.guest_phys_addr,
		     (unsigned long long)r.memory_size, file, (unsigned long long)r.guest_memfd_offset,
		     ret ? errno : 0, expect);
	if (ret)
		return;
	if (!r.memory_size) {
		m->used = false;
		probe_gfn(before.gfn, (enum gm_access)(sel % 3), false);
		return;
	}
	*m = (struct fz_slot){
		.used = true, .gfn = r.guest_phys_addr / PAGE_SIZE, .npages = r.memory_size / PAGE_SIZE,
		.pool_page = pool_page, .file = file, .pgoff = r.guest_memfd_offset / PAGE_SIZE,
		.gmem_only = f->flags & GUEST_MEMFD_FLAG_MMAP,
	};
	probe_gfn(m->gfn, (enum gm_access)(sel % 3), false);
	probe_gfn(m->gfn + m->npages - 1, GM_ACCESS_AUTO, false);
}

/* ---- one input ----------------------------------------------------------------------- */

static void check_capabilities(void)
{
	long want = private_vm() ? KVM_MEMORY_ATTRIBUTE_PRIVATE : 0;

	if (gm_ioctl(st.vm, KVM_CHECK_EXTENSION, KVM_CAP_MEMORY_ATTRIBUTES) != want)
		fail("KVM_CAP_MEMORY_ATTRIBUTES on the VM is not %ld", want);
	if (gm_ioctl(st.vm, KVM_CHECK_EXTENSION, KVM_CAP_GUEST_MEMFD_MEMORY_ATTRIBUTES) != 0)
		fail("KVM_CAP_GUEST_MEMFD_MEMORY_ATTRIBUTES is not 0 in the per-VM mode");
}

static void cleanup(void)
{
	probe_stop(&st.probe);
	for (int i = 0; i < MAX_FILES; i++)
		if (st.file[i].fd >= 0 && gm_close(st.file[i].fd))
			fail("gm_close(gmem)");
	if (gm_close(st.vm) || gm_close(st.kvm))
		fail("gm_close(vm or kvm)");
	free(st.priv.r);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	int kvm, vm;

	(void)argc;
	(void)argv;
	trace = getenv("FUZZ_TRACE") != NULL;
	if (gm_set_vm_memory_attributes(true)) {
		fprintf(stderr, "fuzz: cannot select per-VM attributes\n");
		abort();
	}
	pool = mmap(NULL, POOL_PAGES * PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
		    -1, 0);
	/* The library's process-wide fds come with the first VM and vCPU: have them before counting. */
	kvm = gm_open_kvm();
	vm = gm_ioctl(kvm, KVM_CREATE_VM, KVM_X86_SW_PROTECTED_VM | GM_VM_BACKEND_SOFT);
	if (pool == MAP_FAILED || kvm < 0 || vm < 0) {
		fprintf(stderr, "fuzz: cannot set up a VM\n");
		abort();
	}
	st.probe.fd = -1;
	probe_start(&st.probe, vm, 0);
	probe_stop(&st.probe);
	gm_close(vm);
	gm_close(kvm);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct input in = { data, size };
	int fds_before = count_fds();

	memset(&st, 0, sizeof(st));
	st.probe.fd = -1;
	for (int i = 0; i < MAX_FILES; i++)
		st.file[i].fd = -1;
	/* The first byte: a DEFAULT VM now and then, which has no private memory. */
	st.type = u8(&in) % 8 == 7 ? KVM_X86_DEFAULT_VM : KVM_X86_SW_PROTECTED_VM;
	st.kvm = gm_open_kvm();
	st.vm = gm_ioctl(st.kvm, KVM_CREATE_VM, st.type | GM_VM_BACKEND_SOFT);
	if (st.kvm < 0 || st.vm < 0)
		fail("cannot create a VM: %s", strerror(errno));
	for (uint64_t p = 0; p < POOL_PAGES; p++) {
		st.pool_tag[p] = 0x706f6f6c00000000ULL | p;
		pool[p * PAGE_SIZE / 8] = st.pool_tag[p];
	}
	fuzz_op = 0;
	check_capabilities();
	while (in.n) {
		uint8_t op = u8(&in);

		fuzz_op++;
		errno = 0;
		if (trace)
			fprintf(stderr, "op %u: opcode %u\n", fuzz_op, op % 8);
		switch (op % 8) {
		case 0:
		case 1:
			op_set_attributes(&in);
			break;
		case 2:
			op_set_slot(&in);
			break;
		case 3:
		case 4:
			op_probe(&in);
			break;
		case 5:
			op_create_file(&in);
			break;
		case 6:
			op_host_write(&in);
			break;
		default:
			if (op & 0x80)
				op_close_file(&in);
			else
				op_punch(&in);
			break;
		}
	}
	sweep_windows();
	cleanup();
	check_nothing_left(fds_before);
	return 0;
}
