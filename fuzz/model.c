/*
 * libFuzzer target "model": random programs of surface calls, replayed
 * against a reference model of what the library holds (attributes per page,
 * allocated pages, written contents, memslots and their bindings), compared
 * with what the library reports after every step.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/falloc.h>
#include <unistd.h>

#include "fuzz.h"

/*
 * Each input is a program: one opcode byte, then the bytes its arguments
 * need; a short input reads zeros. All objects live in one process, so every
 * input ends by closing and unmapping whatever it made, and checks that the
 * library is back where it started: inputs stay independent.
 */

#define MAX_KVM 2
#define MAX_VM 4
#define MAX_GMEM 8
#define MAX_MAP 16
#define MAX_PIN 16
#define MAX_SLOTS 32
/* Memory the fuzzer may make the library allocate per input (24 GiB machine, ASan, 2 jobs). */
#define ALLOC_BUDGET (64ULL << 20)
#define MAX_TOUCHES 32
#define MAX_PROBES 64

#define FALLOC_WRITE_ZEROES 0x80
#define FALLOC_MODE_MASK                                                                    \
	(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_COLLAPSE_RANGE | FALLOC_FL_ZERO_RANGE |            \
	 FALLOC_FL_INSERT_RANGE | FALLOC_FL_UNSHARE_RANGE | FALLOC_WRITE_ZEROES)

/* The memslot limits the library shares with x86 KVM. */
#define USER_MEM_SLOTS 32764
#define ADDRESS_SPACES 2
#define MEM_MAX_NR_PAGES ((1ULL << 31) - 1)
#define MAX_GFN ((1ULL << 36) - 1)
#define TASK_SIZE_MAX 0x7ffffffff000ULL


/* The first 8 bytes of a page that something wrote; pages not listed read zero. */
struct tag {
	uint64_t page, val;
};

struct fz_slot {
	bool used;
	uint32_t id; /* (address space << 16) | slot */
	uint32_t flags;
	uint64_t gfn, npages, uaddr;
	int gmem; /* the bound file, SLOT_NO_FILE for a host-address slot, SLOT_FILE_GONE */
	uint64_t pgoff;
	bool gmem_only; /* the file had MMAP: shared accesses go to the file too */
};

#define SLOT_NO_FILE (-1)
#define SLOT_FILE_GONE (-2)

struct fz_vm {
	int fd; /* -1 once closed */
	bool live; /* the object: its fd, or a file holding it */
	unsigned long type;
	struct fz_slot slot[MAX_SLOTS];
	struct probe_vcpu probe; /* while the VM fd is open */
};

struct fz_gmem {
	int fd; /* -1 once closed */
	bool live; /* the object: its fd, or a mapping holding it */
	int vm;
	uint64_t size;
	uint64_t flags;
	uint64_t folio;
	struct pageset priv; /* the pages whose attribute is private */
	/* The pages that hold memory; compared exactly on a plain memfd backing. */
	struct pageset alloc;
	bool alloc_exact;
	struct tag *tags;
	size_t nr_tags, cap_tags;
};

struct fz_map {
	bool used;
	char *addr;
	uint64_t len; /* page-rounded, as the library tracks it */
	uint64_t off;
	uint64_t unmap_unit; /* what munmap can always cut: the huge page on hugetlbfs, else a page */
	int prot;
	int gmem;
};

struct fz_pin {
	bool used;
	int gmem;
	uint64_t off, len;
};

static struct state {
	int kvm[MAX_KVM];
	struct fz_vm vm[MAX_VM];
	struct fz_gmem gmem[MAX_GMEM];
	struct fz_map map[MAX_MAP];
	struct fz_pin pin[MAX_PIN];
	uint64_t budget;
	unsigned touches;
	unsigned probes;
} st;

/* FUZZ_TRACE=1: print what each operation left behind, to read a reproducer. */
static bool trace;

/* ---- sizes and offsets: mostly plausible, sometimes wild ---------------------------- */

static const uint64_t wild_values[] = {
	0,
	-PAGE_SIZE,
	1,
	PAGE_SIZE - 1,
	PAGE_SIZE + 1,
	SZ_2M + PAGE_SIZE,
	SZ_1G,
	1ULL << 40,
	INT64_MAX & ~(PAGE_SIZE - 1),
	1ULL << 63,
	UINT64_MAX,
	UINT64_MAX & ~(PAGE_SIZE - 1),
};
#define NR_WILD (sizeof(wild_values) / sizeof(wild_values[0]))

/* A length: whole pages up to 4 MiB, whole 2 MiB folios, or a wild value. */
static uint64_t pick_len(struct input *in)
{
	uint8_t sel = u8(in);

	if (sel < 24)
		return wild_values[sel % NR_WILD];
	if (sel < 64)
		return (1 + u8(in) % 4) * SZ_2M;
	return (1 + u16(in) % 1024) * PAGE_SIZE;
}

/* An offset into a file of size: page or folio aligned inside (or just past) it, or wild. */
static uint64_t pick_off(struct input *in, uint64_t size)
{
	uint8_t sel = u8(in);
	uint64_t pages = size / PAGE_SIZE;

	if (pages > 2048)
		pages = 2048;
	if (sel < 24)
		return wild_values[sel % NR_WILD];
	if (sel < 64)
		return (u8(in) % 4) * SZ_2M;
	if (sel < 72)
		return size;
	return (u16(in) % (pages + 2)) * PAGE_SIZE;
}

/* ---- the model of a file's attributes: the set of its private pages ---------------- */

static bool model_private(const struct fz_gmem *g, uint64_t page)
{
	return ps_meets(&g->priv, page, page + 1);
}

static uint64_t model_shared_bytes(const struct fz_gmem *g)
{
	return g->size - ps_count(&g->priv) * PAGE_SIZE;
}

/* Whether the model says every page of [off, off + len) is shared. */
static bool model_all_shared(const struct fz_gmem *g, uint64_t off, uint64_t len)
{
	return !ps_meets(&g->priv, off / PAGE_SIZE, (off + len) / PAGE_SIZE);
}

static void model_set(struct fz_gmem *g, uint64_t off, uint64_t len, bool priv)
{
	if (priv)
		ps_add(&g->priv, off / PAGE_SIZE, (off + len) / PAGE_SIZE);
	else
		ps_remove(&g->priv, off / PAGE_SIZE, (off + len) / PAGE_SIZE);
}

/* ---- the model of a file's memory: allocated pages and what was written --------------- */

static uint64_t tag_get(const struct fz_gmem *g, uint64_t page)
{
	for (size_t i = 0; i < g->nr_tags; i++)
		if (g->tags[i].page == page)
			return g->tags[i].val;
	return 0;
}

static void tag_set(struct fz_gmem *g, uint64_t page, uint64_t val)
{
	for (size_t i = 0; i < g->nr_tags; i++)
		if (g->tags[i].page == page) {
			g->tags[i].val = val;
			return;
		}
	if (g->nr_tags == g->cap_tags) {
		g->cap_tags = g->cap_tags ? 2 * g->cap_tags : 16;
		g->tags = realloc(g->tags, g->cap_tags * sizeof(*g->tags));
		if (!g->tags)
			abort();
	}
	g->tags[g->nr_tags++] = (struct tag){ page, val };
}

/* Punch-hole: the pages of [first, last) read zero again. */
static void tag_clear(struct fz_gmem *g, uint64_t first, uint64_t last)
{
	size_t out = 0;

	for (size_t i = 0; i < g->nr_tags; i++)
		if (g->tags[i].page < first || g->tags[i].page >= last)
			g->tags[out++] = g->tags[i];
	g->nr_tags = out;
}

static void gmem_model_free(struct fz_gmem *g)
{
	free(g->priv.r);
	free(g->alloc.r);
	free(g->tags);
	g->priv = g->alloc = (struct pageset){ 0 };
	g->tags = NULL;
	g->nr_tags = g->cap_tags = 0;
}

/* ---- bookkeeping ------------------------------------------------------------------ */

static unsigned maps_of(int gi)
{
	unsigned n = 0;

	for (int i = 0; i < MAX_MAP; i++)
		n += st.map[i].used && st.map[i].gmem == gi;
	return n;
}

/* A file lives while its fd or a mapping holds it; its VM while the VM fd or a file does. */
static void update_liveness(void)
{
	for (int i = 0; i < MAX_GMEM; i++) {
		struct fz_gmem *g = &st.gmem[i];

		if (g->live && g->fd < 0 && !maps_of(i)) {
			g->live = false;
			for (int p = 0; p < MAX_PIN; p++)
				if (st.pin[p].used && st.pin[p].gmem == i)
					st.pin[p].used = false;
			/* The file's slots stay, without it: faults through them fail. */
			for (int s = 0; s < MAX_SLOTS; s++)
				if (st.vm[g->vm].slot[s].used && st.vm[g->vm].slot[s].gmem == i)
					st.vm[g->vm].slot[s].gmem = SLOT_FILE_GONE;
		}
	}
	for (int v = 0; v < MAX_VM; v++) {
		bool held = st.vm[v].fd >= 0;

		for (int i = 0; i < MAX_GMEM; i++)
			held |= st.gmem[i].live && st.gmem[i].vm == v;
		if (st.vm[v].live && !held)
			memset(st.vm[v].slot, 0, sizeof(st.vm[v].slot));
		st.vm[v].live = held;
	}
}

static void check_gmem(int gi)
{
	struct fz_gmem *g = &st.gmem[gi];
	struct gm_gmem_info info;
	struct stat sb;
	int ret;

	if (g->fd < 0)
		return;
	ret = gm_gmem_info(g->fd, &info);
	if (ret)
		fail("gm_gmem_info(gmem %d) = %d", gi, ret);
	if (info.size != g->size || info.flags != g->flags)
		fail("gmem %d: info size/flags %#llx/%#llx, created %#llx/%#llx", gi,
		     (unsigned long long)info.size, (unsigned long long)info.flags,
		     (unsigned long long)g->size, (unsigned long long)g->flags);
	if (info.shared_bytes != model_shared_bytes(g))
		fail("gmem %d: shared_bytes %llu, model %llu", gi,
		     (unsigned long long)info.shared_bytes,
		     (unsigned long long)model_shared_bytes(g));
	if (info.host_mappings != maps_of(gi))
		fail("gmem %d: host_mappings %u, live mappings %u", gi, info.host_mappings,
		     maps_of(gi));
	if (g->alloc_exact && info.allocated_bytes != ps_count(&g->alloc) * PAGE_SIZE)
		fail("gmem %d: allocated_bytes %#llx, model %#llx", gi,
		     (unsigned long long)info.allocated_bytes,
		     (unsigned long long)(ps_count(&g->alloc) * PAGE_SIZE));
	if (gm_fstat(g->fd, &sb))
		fail("gm_fstat(gmem %d): %s", gi, strerror(errno));
	if ((uint64_t)sb.st_size != g->size || (uint64_t)sb.st_blocks * 512 != info.allocated_bytes)
		fail("gmem %d: fstat size %lld blocks %lld, info size %llu allocated %llu", gi,
		     (long long)sb.st_size, (long long)sb.st_blocks,
		     (unsigned long long)g->size, (unsigned long long)info.allocated_bytes);
}

static int open_fds_held(void)
{
	int n = 0;

	for (int i = 0; i < MAX_KVM; i++)
		n += st.kvm[i] >= 0;
	for (int i = 0; i < MAX_VM; i++)
		n += (st.vm[i].fd >= 0) + (st.vm[i].probe.fd >= 0);
	for (int i = 0; i < MAX_GMEM; i++)
		n += st.gmem[i].fd >= 0;
	return n;
}

static void check_vm(int v)
{
	struct gm_vm_info info;

	if (st.vm[v].fd < 0)
		return;
	if (gm_vm_info(st.vm[v].fd, &info))
		fail("gm_vm_info(vm %d) failed", v);
	if (info.type != st.vm[v].type || info.backend != GM_VM_BACKEND_SOFT ||
	    info.nr_vcpus != (st.vm[v].probe.fd >= 0))
		fail("vm %d: type %llu backend %#llx vcpus %u, model type %lu vcpus %d", v,
		     (unsigned long long)info.type, (unsigned long long)info.backend,
		     info.nr_vcpus, st.vm[v].type, st.vm[v].probe.fd >= 0);
}

static void trace_state(void)
{
	struct gm_gmem_info info;

	fprintf(stderr, "op %u: errno %d", fuzz_op, errno);
	for (int i = 0; i < MAX_GMEM; i++)
		if (st.gmem[i].live && st.gmem[i].fd >= 0 && !gm_gmem_info(st.gmem[i].fd, &info))
			fprintf(stderr, " | gmem %d size %#llx shared %#llx alloc %#llx maps %u", i,
				(unsigned long long)info.size, (unsigned long long)info.shared_bytes,
				(unsigned long long)info.allocated_bytes, info.host_mappings);
	for (int i = 0; i < MAX_MAP; i++)
		if (st.map[i].used)
			fprintf(stderr, " | map %d gmem %d off %#llx len %#llx", i, st.map[i].gmem,
				(unsigned long long)st.map[i].off, (unsigned long long)st.map[i].len);
	fputc('\n', stderr);
}

/* After every operation: the library's counts match what the program holds, files match the model. */
static void check_all(void)
{
	struct gm_stats s;
	uint64_t vms = 0, files = 0;

	update_liveness();
	for (int i = 0; i < MAX_VM; i++)
		vms += st.vm[i].live;
	for (int i = 0; i < MAX_GMEM; i++)
		files += st.gmem[i].live;
	if (gm_stats(&s))
		fail("gm_stats failed");
	if (s.vms != vms || s.gmem_files != files || s.open_fds != (uint64_t)open_fds_held())
		fail("gm_stats vms %llu files %llu fds %llu, expected %llu %llu %d",
		     (unsigned long long)s.vms, (unsigned long long)s.gmem_files,
		     (unsigned long long)s.open_fds, (unsigned long long)vms,
		     (unsigned long long)files, open_fds_held());
	for (int i = 0; i < MAX_GMEM; i++)
		check_gmem(i);
	for (int i = 0; i < MAX_VM; i++)
		check_vm(i);
	if (trace)
		trace_state();
}

static bool gmem_bytes(int gi, uint64_t *allocated, uint64_t *shared)
{
	struct gm_gmem_info info;

	if (gi < 0 || st.gmem[gi].fd < 0 || gm_gmem_info(st.gmem[gi].fd, &info))
		return false;
	*allocated = info.allocated_bytes;
	*shared = info.shared_bytes;
	return true;
}

/*
 * An fd to aim a call at: usually a file, sometimes another kind of library
 * fd or one that is not open. Never a closed number, which the library may
 * have reused for its own stores. *gi is the file's index, or -1. allow_kvm:
 * the call may go to a system fd.
 */
static int pick_target(struct input *in, int *gi, bool allow_kvm)
{
	uint8_t sel = u8(in);

	*gi = -1;
	switch (sel >> 5) {
	case 0:
		return sel & 1 ? -1 : BAD_FD;
	case 1:
		return st.vm[sel % MAX_VM].fd >= 0 ? st.vm[sel % MAX_VM].fd : BAD_FD;
	case 2:
		/* The system fd passes ioctls it does not know to the host's /dev/kvm. */
		if (!allow_kvm)
			return BAD_FD;
		return st.kvm[sel % MAX_KVM] >= 0 ? st.kvm[sel % MAX_KVM] : BAD_FD;
	default:
		*gi = sel % MAX_GMEM;
		if (st.gmem[*gi].fd < 0) {
			*gi = -1;
			return BAD_FD;
		}
		return st.gmem[*gi].fd;
	}
}

/* ---- operations -------------------------------------------------------------------- */

static void op_open_kvm(struct input *in)
{
	int i = u8(in) % MAX_KVM, fd;

	if (st.kvm[i] >= 0)
		return;
	fd = gm_open_kvm();
	if (fd < 0)
		check_errno("gm_open_kvm", errno, ENOMEM, EMFILE, ENFILE, 0);
	st.kvm[i] = fd;
}

static void op_create_vm(struct input *in)
{
	int k = u8(in) % MAX_KVM, v = u8(in) % MAX_VM, fd;
	uint8_t type = u8(in);
	unsigned long arg = (unsigned long)(type % 4 == 3 ? type : type % 3) | GM_VM_BACKEND_SOFT;

	if (st.kvm[k] < 0 || st.vm[v].live)
		return;
	fd = gm_ioctl(st.kvm[k], KVM_CREATE_VM, arg);
	if (fd < 0) {
		check_errno("KVM_CREATE_VM", errno, EINVAL, ENOMEM, EMFILE, ENFILE, 0);
		return;
	}
	if ((arg & 0xff) > KVM_X86_SW_PROTECTED_VM)
		fail("KVM_CREATE_VM type %#lx succeeded", arg);
	st.vm[v] = (struct fz_vm){ .fd = fd, .live = true, .type = arg & 0xff, .probe.fd = -1 };
}

static const uint64_t folio_flags[] = {
	GM_GUEST_MEMFD_FOLIO_4K,
	GM_GUEST_MEMFD_FOLIO_2M,
	GM_GUEST_MEMFD_FOLIO_1G,
	12ULL << GM_GUEST_MEMFD_FOLIO_SHIFT,
	13ULL << GM_GUEST_MEMFD_FOLIO_SHIFT,
	GM_GUEST_MEMFD_FOLIO_MASK,
};

static void op_create_gmem(struct input *in)
{
	int v = u8(in) % MAX_VM, gi = u8(in) % MAX_GMEM, fd;
	uint8_t fsel = u8(in);
	struct kvm_create_guest_memfd args = { 0 };
	uint64_t folio_size = PAGE_SIZE, shift;
	struct fz_gmem *g = &st.gmem[gi];
	struct gm_gmem_info info;

	args.flags = (fsel & 3) | folio_flags[(fsel >> 2) % 6];
	if (fsel & 0x80)
		args.flags |= 1ULL << (u8(in) % 64);
	args.size = pick_len(in);
	if (fsel & 0x40)
		args.reserved[0] = u64(in); /* not checked, as in 6.18 */
	if (st.vm[v].fd < 0 || g->live)
		return;
	fd = gm_ioctl(st.vm[v].fd, KVM_CREATE_GUEST_MEMFD, (fsel & 0x3c) == 0x3c ? NULL : &args);
	if (fd < 0) {
		check_errno("KVM_CREATE_GUEST_MEMFD", errno, EINVAL, ENOMEM, EMFILE, ENFILE, EFBIG,
			    ENOSPC, EFAULT, 0);
		return;
	}
	shift = (args.flags & GM_GUEST_MEMFD_FOLIO_MASK) >> GM_GUEST_MEMFD_FOLIO_SHIFT;
	if (shift)
		folio_size = 1ULL << shift;
	if ((args.flags & ~(GUEST_MEMFD_FLAG_MMAP | GUEST_MEMFD_FLAG_INIT_SHARED |
			    GM_GUEST_MEMFD_FOLIO_MASK)) ||
	    (shift && shift != 12 && shift != 21 && shift != 30) || (int64_t)args.size <= 0 ||
	    args.size % folio_size)
		fail("KVM_CREATE_GUEST_MEMFD size %#llx flags %#llx succeeded",
		     (unsigned long long)args.size, (unsigned long long)args.flags);
	gmem_model_free(g);
	*g = (struct fz_gmem){
		.fd = fd, .live = true, .vm = v, .size = args.size, .flags = args.flags,
		.folio = folio_size,
	};
	if (!(args.flags & GUEST_MEMFD_FLAG_INIT_SHARED))
		ps_add(&g->priv, 0, args.size / PAGE_SIZE);
	/* hugetlbfs allocates whole huge pages and moves split folios: only a memfd is modelled exactly. */
	g->alloc_exact = !gm_gmem_info(fd, &info) && info.backing == GM_BACKING_MEMFD;
}

static const int falloc_modes[] = {
	FALLOC_FL_KEEP_SIZE,
	FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE,
	FALLOC_FL_KEEP_SIZE,
	FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE,
	0,
	FALLOC_FL_PUNCH_HOLE,
	FALLOC_FL_ZERO_RANGE,
	FALLOC_FL_COLLAPSE_RANGE,
	FALLOC_FL_INSERT_RANGE,
	FALLOC_FL_UNSHARE_RANGE,
	FALLOC_WRITE_ZEROES,
	FALLOC_FL_KEEP_SIZE | FALLOC_FL_ZERO_RANGE,
};

/* What fallocate(2) answers: vfs_fallocate's checks, then the guest_memfd's (errno or 0). */
static int predict_fallocate(int fd, int gi, int mode, int64_t off, int64_t len)
{
	const struct fz_gmem *g = gi >= 0 ? &st.gmem[gi] : NULL;
	int64_t end;

	if (fd == -1 || fd == BAD_FD)
		return EBADF;
	if (off < 0 || len <= 0)
		return EINVAL;
	if (mode & ~(FALLOC_MODE_MASK | FALLOC_FL_KEEP_SIZE))
		return EOPNOTSUPP;
	switch (mode & FALLOC_MODE_MASK) {
	case 0:
	case FALLOC_FL_UNSHARE_RANGE:
	case FALLOC_FL_ZERO_RANGE:
		break;
	case FALLOC_FL_PUNCH_HOLE:
		if (!(mode & FALLOC_FL_KEEP_SIZE))
			return EOPNOTSUPP;
		break;
	case FALLOC_FL_COLLAPSE_RANGE:
	case FALLOC_FL_INSERT_RANGE:
	case FALLOC_WRITE_ZEROES:
		if (mode & FALLOC_FL_KEEP_SIZE)
			return EOPNOTSUPP;
		break;
	default:
		return EOPNOTSUPP;
	}
	if (!g)
		return ENODEV;
	if (__builtin_add_overflow(off, len, &end))
		return EFBIG;
	/* guest_memfd: KEEP_SIZE, optionally with PUNCH_HOLE, and nothing else. */
	if (mode != FALLOC_FL_KEEP_SIZE && mode != (FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE))
		return EOPNOTSUPP;
	if ((uint64_t)off % g->folio || (uint64_t)len % g->folio)
		return EINVAL;
	if (!(mode & FALLOC_FL_PUNCH_HOLE) && (uint64_t)end > g->size)
		return EINVAL;
	return 0;
}

static void op_fallocate(struct input *in)
{
	int gi, fd = pick_target(in, &gi, true);
	uint8_t msel = u8(in);
	int mode = msel < 240 ? falloc_modes[msel % 12] : u8(in);
	uint64_t size = gi >= 0 ? st.gmem[gi].size : 0;
	int64_t off = (int64_t)pick_off(in, size), len = (int64_t)pick_len(in);
	uint64_t alloc_before = 0, shared_before = 0, alloc_after, shared_after, charge = 0;
	bool have = gmem_bytes(gi, &alloc_before, &shared_before);
	int ret, expect;

	/* Allocation costs memory: stay inside the input's budget. */
	if (!(mode & FALLOC_FL_PUNCH_HOLE) && gi >= 0 && off >= 0 && len > 0 &&
	    (uint64_t)off < size)
		charge = (uint64_t)len < size - (uint64_t)off ? (uint64_t)len : size - (uint64_t)off;
	if (charge > st.budget)
		return;
	st.budget -= charge;
	expect = predict_fallocate(fd, gi, mode, off, len);
	ret = gm_fallocate(fd, mode, off, len);
	if (ret) {
		if (ret != -1)
			fail("gm_fallocate returned %d", ret);
		check_errno("gm_fallocate", errno, EINVAL, EOPNOTSUPP, EFBIG, ENODEV, EBADF, ENOSPC,
			    ENOMEM, 0);
	} else if (gi < 0) {
		fail("gm_fallocate on a fd that is no guest_memfd succeeded");
	}
	if ((ret ? errno : 0) != expect)
		fail("fallocate(mode %#x, %#llx, %#llx) on gmem %d: errno %d, model %d", mode,
		     (unsigned long long)off, (unsigned long long)len, gi, ret ? errno : 0, expect);
	if (!ret && (mode & FALLOC_FL_PUNCH_HOLE)) {
		struct fz_gmem *g = &st.gmem[gi];
		uint64_t last = (uint64_t)len < size - (uint64_t)off ? (uint64_t)(off + len) : size;

		if ((uint64_t)off < size) {
			ps_remove(&g->alloc, (uint64_t)off / PAGE_SIZE, last / PAGE_SIZE);
			tag_clear(g, (uint64_t)off / PAGE_SIZE, last / PAGE_SIZE);
		}
	} else if (!ret) {
		ps_add(&st.gmem[gi].alloc, (uint64_t)off / PAGE_SIZE, (uint64_t)(off + len) / PAGE_SIZE);
	}
	if (!have || !gmem_bytes(gi, &alloc_after, &shared_after))
		return;
	if (ret && alloc_after != alloc_before)
		fail("failed fallocate(mode %#x, %lld, %lld) changed allocated_bytes %llu -> %llu",
		     mode, (long long)off, (long long)len, (unsigned long long)alloc_before,
		     (unsigned long long)alloc_after);
	if (shared_after != shared_before)
		fail("fallocate changed shared_bytes %llu -> %llu", (unsigned long long)shared_before,
		     (unsigned long long)shared_after);
	if (!ret && !(mode & FALLOC_FL_PUNCH_HOLE) && alloc_after < alloc_before)
		fail("allocation shrank allocated_bytes");
	if (!ret && (mode & FALLOC_FL_PUNCH_HOLE) && alloc_after > alloc_before)
		fail("punch-hole grew allocated_bytes");
}

static bool pin_overlaps(int gi, uint64_t off, uint64_t len)
{
	for (int i = 0; i < MAX_PIN; i++) {
		struct fz_pin *p = &st.pin[i];

		if (p->used && p->gmem == gi && p->off < off + len && off < p->off + p->len)
			return true;
	}
	return false;
}

/*
 * Where an EAGAIN may point: inside the range, or (docs/compat.md) at a
 * pinned page of a hugetlbfs folio at either edge that the conversion would split.
 */
static bool error_offset_ok(int gi, const struct kvm_memory_attributes2 *a)
{
	uint64_t lo = a->offset, hi = a->offset + a->size;

	if (gi >= 0 && !st.gmem[gi].alloc_exact) {
		lo -= lo % st.gmem[gi].folio;
		hi += (st.gmem[gi].folio - hi % st.gmem[gi].folio) % st.gmem[gi].folio;
	}
	return a->error_offset >= lo && a->error_offset < hi;
}

static void op_set_attributes(struct input *in)
{
	int gi, fd = pick_target(in, &gi, false);
	uint8_t sel = u8(in);
	uint64_t size = gi >= 0 ? st.gmem[gi].size : 0;
	struct kvm_memory_attributes2 a = { 0 };
	uint64_t alloc_before = 0, shared_before = 0, alloc_after, shared_after;
	bool have, to_private;
	int ret;

	a.offset = pick_off(in, size);
	a.size = pick_len(in);
	a.attributes = sel & 1 ? KVM_MEMORY_ATTRIBUTE_PRIVATE : 0;
	if ((sel & 0x0e) == 0x0e)
		a.attributes = u64(in);
	if ((sel & 0x30) == 0x30)
		a.flags = u64(in);
	if ((sel & 0xc0) == 0xc0)
		a.reserved[u8(in) % 11] = u64(in);
	a.error_offset = 0xdeadbeef;
	to_private = a.attributes & KVM_MEMORY_ATTRIBUTE_PRIVATE;
	have = gmem_bytes(gi, &alloc_before, &shared_before);
	ret = gm_ioctl(fd, KVM_SET_MEMORY_ATTRIBUTES2, (sel & 0x0e) == 0x08 ? NULL : &a);
	if (ret) {
		if (ret != -1)
			fail("KVM_SET_MEMORY_ATTRIBUTES2 returned %d", ret);
		check_errno("KVM_SET_MEMORY_ATTRIBUTES2", errno, EINVAL, EAGAIN, ENOMEM, EFAULT,
			    ENOTTY, EBADF, 0);
		if (errno == EAGAIN && !error_offset_ok(gi, &a))
			fail("EAGAIN with error_offset %#llx outside [%#llx, +%#llx)",
			     (unsigned long long)a.error_offset, (unsigned long long)a.offset,
			     (unsigned long long)a.size);
		if (have && gmem_bytes(gi, &alloc_after, &shared_after) &&
		    shared_after != shared_before)
			fail("failed KVM_SET_MEMORY_ATTRIBUTES2 (errno %d) changed shared_bytes "
			     "%llu -> %llu", errno, (unsigned long long)shared_before,
			     (unsigned long long)shared_after);
		return;
	}
	if (gi < 0)
		fail("KVM_SET_MEMORY_ATTRIBUTES2 on a fd that is no guest_memfd succeeded");
	if (a.flags || (a.attributes & ~KVM_MEMORY_ATTRIBUTE_PRIVATE) || !a.size ||
	    a.offset % PAGE_SIZE || a.size % PAGE_SIZE || a.offset >= size ||
	    a.size > size - a.offset || st.vm[st.gmem[gi].vm].type != KVM_X86_SW_PROTECTED_VM)
		fail("KVM_SET_MEMORY_ATTRIBUTES2 [%#llx, +%#llx) attrs %#llx flags %#llx succeeded",
		     (unsigned long long)a.offset, (unsigned long long)a.size,
		     (unsigned long long)a.attributes, (unsigned long long)a.flags);
	for (int i = 0; i < 11; i++)
		if (a.reserved[i])
			fail("KVM_SET_MEMORY_ATTRIBUTES2 with reserved[%d] set succeeded", i);
	if (to_private && pin_overlaps(gi, a.offset, a.size))
		fail("conversion to private of pinned pages succeeded");
	model_set(&st.gmem[gi], a.offset, a.size, to_private);
}

/* ---- memslots: the model of each VM's slots, and what a change must answer --------- */

static struct fz_slot *slot_by_id(int v, uint32_t id)
{
	for (int i = 0; i < MAX_SLOTS; i++)
		if (st.vm[v].slot[i].used && st.vm[v].slot[i].id == id)
			return &st.vm[v].slot[i];
	return NULL;
}

/* The slot of address space as covering gfn, or NULL. */
static struct fz_slot *slot_at(int v, unsigned as, uint64_t gfn)
{
	for (int i = 0; i < MAX_SLOTS; i++) {
		struct fz_slot *m = &st.vm[v].slot[i];

		if (m->used && m->id >> 16 == as && m->gfn <= gfn && gfn - m->gfn < m->npages)
			return m;
	}
	return NULL;
}

/* The file a guest_memfd field names: its index, or -1 with *err the errno of kvm_gmem_bind. */
static int bind_target(uint32_t field, int *err)
{
	int fd = (int)field;

	for (int i = 0; i < MAX_GMEM; i++)
		if (st.gmem[i].fd >= 0 && st.gmem[i].fd == fd)
			return i;
	/* Any other open fd, the library's or not, is no guest_memfd; a closed one is EBADF. */
	*err = fcntl(fd, F_GETFD) < 0 ? EBADF : EINVAL;
	return -1;
}

/*
 * KVM_SET_USER_MEMORY_REGION(2) as kvm_set_memory_region and kvm_gmem_bind
 * validate it, in their order (docs/compat.md: EEXIST for a file range bound
 * twice, a 48-bit guest-physical space): the errno, or 0 with the slot it
 * replaces in *old (NULL for a new slot) and the bound file in *gi.
 */
static int predict_region(int v, bool v1, const struct kvm_userspace_memory_region2 *r,
			  struct fz_slot **old, int *gi)
{
	uint32_t valid = KVM_MEM_LOG_DIRTY_PAGES | KVM_MEM_GUEST_MEMFD;
	uint64_t end, npages = r->memory_size / PAGE_SIZE, gfn = r->guest_phys_addr / PAGE_SIZE;
	int err = 0;

	*old = NULL;
	*gi = SLOT_NO_FILE;
	if (v1 && (r->flags & ~(KVM_MEM_LOG_DIRTY_PAGES | KVM_MEM_READONLY)))
		return EINVAL;
	if ((uint16_t)r->slot >= USER_MEM_SLOTS)
		return EINVAL;
	if (r->flags & KVM_MEM_GUEST_MEMFD)
		valid &= ~KVM_MEM_LOG_DIRTY_PAGES;
	else
		valid |= KVM_MEM_READONLY;
	if (r->flags & ~valid)
		return EINVAL;
	if (r->memory_size % PAGE_SIZE || r->guest_phys_addr % PAGE_SIZE)
		return EINVAL;
	if (r->userspace_addr % PAGE_SIZE ||
	    __builtin_add_overflow(r->userspace_addr, r->memory_size, &end) || end > TASK_SIZE_MAX)
		return EINVAL;
	if ((r->flags & KVM_MEM_GUEST_MEMFD) &&
	    (r->guest_memfd_offset % PAGE_SIZE ||
	     __builtin_add_overflow(r->guest_memfd_offset, r->memory_size, &end)))
		return EINVAL;
	if (r->slot >> 16 >= ADDRESS_SPACES)
		return EINVAL;
	if (__builtin_add_overflow(r->guest_phys_addr, r->memory_size, &end))
		return EINVAL;
	if (npages > MEM_MAX_NR_PAGES)
		return EINVAL;
	*old = slot_by_id(v, r->slot);
	if (!r->memory_size)
		return *old ? 0 : EINVAL;
	if (*old) {
		/* Guest_memfd slots are immutable; nor may one drop the flag. */
		if (r->flags & KVM_MEM_GUEST_MEMFD)
			return EINVAL;
		if (r->userspace_addr != (*old)->uaddr || npages != (*old)->npages ||
		    ((r->flags ^ (*old)->flags) & (KVM_MEM_READONLY | KVM_MEM_GUEST_MEMFD)))
			return EINVAL;
		if (gfn == (*old)->gfn && r->flags == (*old)->flags)
			return 0;
	}
	for (int i = 0; i < MAX_SLOTS; i++) {
		struct fz_slot *m = &st.vm[v].slot[i];

		if (m->used && m->id != r->slot && m->id >> 16 == r->slot >> 16 && m->gfn < gfn + npages &&
		    gfn < m->gfn + m->npages)
			return EEXIST;
	}
	if (r->flags & KVM_MEM_GUEST_MEMFD) {
		const struct fz_gmem *g;
		uint64_t first = r->guest_memfd_offset / PAGE_SIZE;

		*gi = bind_target(r->guest_memfd, &err);
		if (*gi < 0)
			return err;
		g = &st.gmem[*gi];
		if (g->vm != v || (int64_t)r->guest_memfd_offset < 0 ||
		    __builtin_add_overflow(r->guest_memfd_offset, r->memory_size, &end) || end > g->size)
			return EINVAL;
		/* A file range backs one slot (EEXIST, as mainline after 6.18). */
		for (int i = 0; i < MAX_SLOTS; i++) {
			struct fz_slot *m = &st.vm[v].slot[i];

			if (m->used && m->gmem == *gi && m->pgoff < first + npages &&
			    first < m->pgoff + m->npages)
				return EEXIST;
		}
	}
	/* The stage-2 covers 48 bits of guest-physical space. */
	if (gfn + npages - 1 > MAX_GFN)
		return EINVAL;
	return 0;
}

static void probe_gpa(int v, uint64_t gpa, bool write, uint64_t tag);

static void op_set_region(struct input *in)
{
	uint8_t sel = u8(in), gsel = u8(in);
	int v = sel % MAX_VM, gi, expect;
	struct kvm_userspace_memory_region2 r = { 0 }, seen;
	unsigned long request = sel & 0x80 ? KVM_SET_USER_MEMORY_REGION : KVM_SET_USER_MEMORY_REGION2;
	struct fz_slot *old, *m = NULL, before = { 0 };
	int ret;

	r.slot = u8(in) % 8;
	if (sel & 0x08)
		r.slot = u32(in);
	r.flags = u8(in) & 0x0f;
	if ((sel & 0x30) == 0x30)
		r.flags = u32(in);
	r.guest_phys_addr = (sel & 0x40) ? pick_len(in) : (u16(in) % 4096) * PAGE_SIZE;
	/* A size of zero deletes the slot. */
	r.memory_size = (sel & 0x04) ? 0 : pick_len(in);
	r.guest_memfd_offset = pick_off(in, gsel < 224 ? st.gmem[gsel % MAX_GMEM].size : 0);
	if (sel & 0x02)
		r.userspace_addr = pick_len(in);
	if (gsel < 224)
		r.guest_memfd = (uint32_t)(st.gmem[gsel % MAX_GMEM].fd >= 0 ?
						   st.gmem[gsel % MAX_GMEM].fd : BAD_FD);
	else if (gsel < 240)
		r.guest_memfd = (uint32_t)(st.vm[gsel % MAX_VM].fd);
	else
		r.guest_memfd = u32(in);
	if (st.vm[v].fd < 0)
		return;
	/* The v1 ioctl reads only the v1 struct. */
	seen = r;
	if (request == KVM_SET_USER_MEMORY_REGION) {
		seen.guest_memfd_offset = 0;
		seen.guest_memfd = 0;
	}
	expect = predict_region(v, request == KVM_SET_USER_MEMORY_REGION, &seen, &old, &gi);
	if (!expect && seen.memory_size && !old) {
		/* A new slot needs room in the model. */
		for (int i = 0; i < MAX_SLOTS && !m; i++)
			if (!st.vm[v].slot[i].used)
				m = &st.vm[v].slot[i];
		if (!m)
			return;
	}
	ret = gm_ioctl(st.vm[v].fd, request, &r);
	if (ret) {
		if (ret != -1)
			fail("KVM_SET_USER_MEMORY_REGION returned %d", ret);
		check_errno("KVM_SET_USER_MEMORY_REGION", errno, EINVAL, EEXIST, ENOMEM, EBADF,
			    EFAULT, 0);
	}
	if ((ret ? errno : 0) != expect)
		fail("%s slot %#x flags %#x gpa %#llx size %#llx offset %#llx fd %d: errno %d, model %d",
		     request == KVM_SET_USER_MEMORY_REGION ? "KVM_SET_USER_MEMORY_REGION"
							   : "KVM_SET_USER_MEMORY_REGION2",
		     seen.slot, seen.flags, (unsigned long long)seen.guest_phys_addr,
		     (unsigned long long)seen.memory_size, (unsigned long long)seen.guest_memfd_offset,
		     (int)seen.guest_memfd, ret ? errno : 0, expect);
	if (ret) {
		/* Nothing changed: what the slot (or the address) showed, it still shows. */
		if ((old = slot_by_id(v, seen.slot)) && !(old->id >> 16))
			probe_gpa(v, old->gfn * PAGE_SIZE, false, 0);
		return;
	}
	if (old)
		before = *old;
	if (!seen.memory_size) {
		old->used = false;
	} else if (old) {
		old->gfn = seen.guest_phys_addr / PAGE_SIZE;
		old->flags = seen.flags;
		m = old;
	} else {
		*m = (struct fz_slot){
			.used = true, .id = seen.slot, .flags = seen.flags,
			.gfn = seen.guest_phys_addr / PAGE_SIZE, .npages = seen.memory_size / PAGE_SIZE,
			.uaddr = seen.userspace_addr, .gmem = gi,
			.pgoff = seen.guest_memfd_offset / PAGE_SIZE,
			.gmem_only = gi >= 0 && (st.gmem[gi].flags & GUEST_MEMFD_FLAG_MMAP),
		};
	}
	/* What the guest sees now: the old place (gone or elsewhere), the new one's two ends. */
	if (before.used && !(before.id >> 16))
		probe_gpa(v, before.gfn * PAGE_SIZE, false, 0);
	if (m && !(m->id >> 16)) {
		probe_gpa(v, m->gfn * PAGE_SIZE, false, 0);
		probe_gpa(v, (m->gfn + m->npages - 1) * PAGE_SIZE, false, 0);
	}
}

/* ---- probes: guest accesses that show where an address leads ------------------------ */

/*
 * What a guest read at gpa meets (with AUTO accesses, SW_PROTECTED
 * semantics): no slot is MMIO; a guest_memfd slot serves private pages, and
 * shared ones too when the file has MMAP; a slot whose file is gone faults.
 * PROBE_SKIP where the access would reach a host address: the fuzzer's own
 * memory is no guest's. *gi and *page: the file page the read must show.
 */
#define PROBE_SKIP (-1)

static int probe_predict(int v, uint64_t gfn, int *gi, uint64_t *page)
{
	struct fz_slot *m = slot_at(v, 0, gfn);
	struct fz_gmem *g;

	if (!m)
		return PROBE_MMIO;
	if (!(m->flags & KVM_MEM_GUEST_MEMFD))
		return PROBE_SKIP;
	if (m->gmem == SLOT_FILE_GONE)
		return m->gmem_only ? PROBE_FAULT : PROBE_SKIP;
	*gi = m->gmem;
	*page = m->pgoff + (gfn - m->gfn);
	g = &st.gmem[*gi];
	if (st.vm[v].type == KVM_X86_SW_PROTECTED_VM) {
		if (model_private(g, *page))
			return PROBE_MEMORY;
	}
	return m->gmem_only ? PROBE_MEMORY : PROBE_SKIP;
}

/* One guest read at gpa (and a write of tag after it, if write), checked against the model. */
static void probe_gpa(int v, uint64_t gpa, bool write, uint64_t tag)
{
	struct fz_vm *vm = &st.vm[v];
	uint64_t page = 0, expect = 0;
	int gi = -1, want = probe_predict(v, gpa / PAGE_SIZE, &gi, &page);
	int got;

	if (want == PROBE_SKIP || vm->fd < 0 || st.probes >= MAX_PROBES ||
	    (want == PROBE_MEMORY && st.budget < PAGE_SIZE))
		return;
	if (vm->probe.fd < 0 && !probe_start(&vm->probe, vm->fd, 0))
		fail("KVM_CREATE_VCPU for the probe: %s", strerror(errno));
	st.probes++;
	if (want == PROBE_MEMORY) {
		st.budget -= PAGE_SIZE;
		expect = tag_get(&st.gmem[gi], page);
	}
	got = probe_access(&vm->probe, gpa, write && want == PROBE_MEMORY, expect, tag);
	if (got != want)
		fail("guest read at %#llx in vm %d: result %d, model %d (gmem %d page %#llx)",
		     (unsigned long long)gpa, v, got, want, gi, (unsigned long long)page);
	if (want != PROBE_MEMORY)
		return;
	if (probe_req.val != expect)
		fail("guest read at %#llx (gmem %d page %#llx): %#llx, model %#llx",
		     (unsigned long long)gpa, gi, (unsigned long long)page,
		     (unsigned long long)probe_req.val, (unsigned long long)expect);
	/* The access allocated the page; a write left the tag in it. */
	ps_add(&st.gmem[gi].alloc, page, page + 1);
	if (write)
		tag_set(&st.gmem[gi], page, tag);
}

static void op_probe(struct input *in)
{
	int v = u8(in) % MAX_VM;
	uint8_t sel = u8(in);
	uint16_t at = u16(in);
	uint64_t gpa = (at % 4096) * PAGE_SIZE;

	if (sel & 1) {
		struct fz_slot *m = &st.vm[v].slot[at % MAX_SLOTS];

		if (!m->used || m->id >> 16)
			return;
		gpa = (m->gfn + (sel & 2 ? m->npages - 1 : (at >> 5) % m->npages)) * PAGE_SIZE;
	}
	probe_gpa(v, gpa, sel & 4, (uint64_t)fuzz_op << 32 | 0x7a6700 | sel);
}

static void op_pin(struct input *in)
{
	int gi, fd = pick_target(in, &gi, true);
	uint8_t sel = u8(in);
	uint64_t size = gi >= 0 ? st.gmem[gi].size : 0;
	uint64_t off = pick_off(in, size), len = pick_len(in), charge = 0, a, s0, s1;
	void *dma = NULL;
	bool have;
	int ret, all_shared; /* -1: the range is not one the library pins */

	if (sel & 1) {
		/* Unpin: a pin the program made, or an arbitrary range. */
		struct fz_pin *p = &st.pin[u8(in) % MAX_PIN];

		if (sel & 2 && p->used && st.gmem[p->gmem].fd >= 0) {
			gi = p->gmem;
			fd = st.gmem[gi].fd;
			off = p->off;
			len = p->len;
		}
		ret = gm_gmem_unpin(fd, off, len);
		if (!ret) {
			/* Every live pin is tracked: one with this very range must exist. */
			for (int i = 0; i < MAX_PIN; i++) {
				p = &st.pin[i];
				if (p->used && p->gmem == gi && p->off == off && p->len == len) {
					p->used = false;
					return;
				}
			}
			fail("gm_gmem_unpin [%#llx, +%#llx) succeeded without such a pin",
			     (unsigned long long)off, (unsigned long long)len);
		}
		check_errno("gm_gmem_unpin", -ret, EINVAL, ENOENT, EBADF, 0);
		return;
	}
	if (gi >= 0 && off < size)
		charge = len < size - off ? len : size - off;
	if (charge > st.budget)
		return;
	st.budget -= charge;
	have = gmem_bytes(gi, &a, &s0);
	ret = gm_gmem_pin(fd, off, len, sel & 2 ? &dma : NULL);
	if (have && gmem_bytes(gi, &a, &s1) && s1 != s0)
		fail("gm_gmem_pin changed shared_bytes");
	all_shared = gi >= 0 && !(off % PAGE_SIZE) && !(len % PAGE_SIZE) && len && off < size &&
			     len <= size - off ? (int)model_all_shared(&st.gmem[gi], off, len) : -1;
	if (ret) {
		check_errno("gm_gmem_pin", -ret, EINVAL, EFAULT, ENOMEM, EOPNOTSUPP, EBADF, ENOSPC,
			    0);
		if (ret == -EFAULT && all_shared == 1)
			fail("gm_gmem_pin of shared pages [%#llx, +%#llx): EFAULT",
			     (unsigned long long)off, (unsigned long long)len);
		return;
	}
	if (gi < 0)
		fail("gm_gmem_pin on a fd that is no guest_memfd succeeded");
	if (all_shared != 1)
		fail("gm_gmem_pin of [%#llx, +%#llx) succeeded, model all-shared %d",
		     (unsigned long long)off, (unsigned long long)len, all_shared);
	if ((sel & 2) && !dma)
		fail("gm_gmem_pin gave no DMA address");
	ps_add(&st.gmem[gi].alloc, off / PAGE_SIZE, (off + len) / PAGE_SIZE);
	for (int i = 0; i < MAX_PIN; i++)
		if (!st.pin[i].used) {
			st.pin[i] = (struct fz_pin){ .used = true, .gmem = gi, .off = off, .len = len };
			return;
		}
	/* No room to track it: drop it again so the model stays exact. */
	if (gm_gmem_unpin(fd, off, len))
		fail("gm_gmem_unpin of a fresh pin failed");
}

static const int prots[] = {
	PROT_READ | PROT_WRITE, PROT_READ | PROT_WRITE, PROT_READ, PROT_WRITE,
	PROT_NONE, PROT_READ | PROT_EXEC, PROT_EXEC, PROT_READ | PROT_WRITE | PROT_EXEC,
};

static const int map_types[] = {
	MAP_SHARED, MAP_SHARED, MAP_SHARED, MAP_SHARED_VALIDATE, MAP_PRIVATE, 0,
	MAP_SHARED | MAP_PRIVATE, MAP_SHARED_VALIDATE | MAP_SYNC,
};

static void op_mmap(struct input *in)
{
	int gi, fd = pick_target(in, &gi, true), slot = -1;
	uint8_t psel = u8(in), fsel = u8(in);
	uint64_t size = gi >= 0 ? st.gmem[gi].size : 0;
	int prot = prots[psel % 8], flags = map_types[fsel % 8];
	uint64_t len = pick_len(in), off = pick_off(in, size);
	struct gm_gmem_info info;
	char *p;

	if (psel & 0x80)
		prot |= u8(in) << 3; /* bits mmap(2) has no meaning for */
	if (fsel & 0x10)
		flags |= MAP_POPULATE;
	if (fsel & 0x20)
		flags |= MAP_NORESERVE;
	if (fsel & 0x40)
		flags |= MAP_LOCKED;
	if (fsel & 0x80)
		len -= len > 1 ? 1 : 0; /* not page-aligned */
	/* mmap(2) with a huge length may fail; keep reservations within reach of the address space. */
	if (len > (1ULL << 40) && len < UINT64_MAX - PAGE_SIZE)
		len = 1ULL << 40;
	for (int i = 0; i < MAX_MAP; i++)
		if (!st.map[i].used) {
			slot = i;
			break;
		}
	if (slot < 0)
		return;
	/* Only NULL hints: a fixed address could land on the fuzzer's own memory. */
	p = gm_mmap(NULL, len, prot, flags, fd, (off_t)off);
	if (p == MAP_FAILED) {
		check_errno("gm_mmap", errno, EINVAL, ENODEV, EPERM, ENOMEM, EACCES, EOVERFLOW,
			    EOPNOTSUPP, EAGAIN, EBADF, 0);
		return;
	}
	if (gi < 0 || !(st.gmem[gi].flags & GUEST_MEMFD_FLAG_MMAP) || (prot & PROT_EXEC) ||
	    (flags & MAP_TYPE) == MAP_PRIVATE)
		fail("gm_mmap(len %#llx prot %#x flags %#x off %#llx) on fd %d (gmem %d) succeeded",
		     (unsigned long long)len, prot, flags, (unsigned long long)off, fd, gi);
	st.map[slot] = (struct fz_map){
		.used = true, .addr = p, .len = (len + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1),
		.off = off, .prot = prot, .gmem = gi, .unmap_unit = PAGE_SIZE,
	};
	/* docs/compat.md: a hugetlbfs-backed mapping is cut in whole huge pages only. */
	if (!gm_gmem_info(fd, &info) && info.backing == GM_BACKING_HUGETLB)
		st.map[slot].unmap_unit = info.folio_size;
}

static void op_munmap(struct input *in)
{
	struct fz_map *m = &st.map[u8(in) % MAX_MAP], *rest = NULL;
	uint8_t sel = u8(in);
	uint64_t pages, first, n;
	int ret;

	if (!m->used)
		return;
	pages = m->len / PAGE_SIZE;
	first = sel & 1 ? u16(in) % pages : 0;
	n = sel & 2 ? 1 + u16(in) % (pages - first) : pages - first;
	if (sel & 4) {
		/* An address munmap(2) refuses, nothing unmapped. */
		ret = gm_munmap(m->addr + first * PAGE_SIZE + 1, n * PAGE_SIZE);
		if (ret != -1 || errno != EINVAL)
			fail("gm_munmap of an unaligned address: %d errno %d", ret, errno);
		return;
	}
	if (first && first + n < pages) {
		for (int i = 0; i < MAX_MAP; i++)
			if (!st.map[i].used) {
				rest = &st.map[i];
				break;
			}
		/* No record for the right part: unmap to the end instead. */
		if (!rest)
			n = pages - first;
	}
	ret = gm_munmap(m->addr + first * PAGE_SIZE, n * PAGE_SIZE);
	/*
	 * docs/compat.md: a cut inside a huge page that the mapping shows whole
	 * (a shared, unsplit hugetlbfs folio) is refused and unmaps nothing
	 * (touches check the pages); private and split folios are mapped in
	 * 4 KiB pieces and can be cut anywhere.
	 */
	if (ret && errno == EINVAL &&
	    ((first * PAGE_SIZE) % m->unmap_unit || (n * PAGE_SIZE) % m->unmap_unit))
		return;
	if (ret)
		fail("gm_munmap of a mapping: %s", strerror(errno));
	/* The library splits its record of the mapping the same way. */
	if (rest && first + n < pages) {
		*rest = *m;
		rest->addr = m->addr + (first + n) * PAGE_SIZE;
		rest->off = m->off + (first + n) * PAGE_SIZE;
		rest->len = (pages - first - n) * PAGE_SIZE;
		m->len = first * PAGE_SIZE;
	} else if (first) {
		m->len = first * PAGE_SIZE;
	} else if (n < pages) {
		m->addr += n * PAGE_SIZE;
		m->off += n * PAGE_SIZE;
		m->len -= n * PAGE_SIZE;
	} else {
		m->used = false;
	}
}

static void op_touch(struct input *in)
{
	struct fz_map *m = &st.map[u8(in) % MAX_MAP];
	uint8_t sel = u8(in), val = u8(in), seen = 0;
	uint16_t page = u16(in);
	struct fz_gmem *g;
	uint64_t off;
	bool write, faulted;

	if (!m->used || !(m->prot & PROT_READ) || st.touches >= MAX_TOUCHES ||
	    st.budget < PAGE_SIZE)
		return;
	/* The first pages of a mapping and its last one (which may lie past the end of the file). */
	page = sel & 1 ? (uint16_t)(m->len / PAGE_SIZE - 1) : page % 4;
	if (page >= m->len / PAGE_SIZE)
		return;
	st.touches++;
	st.budget -= PAGE_SIZE;
	g = &st.gmem[m->gmem];
	off = m->off + page * PAGE_SIZE;
	write = (sel & 2) && (m->prot & PROT_WRITE);
	faulted = touch(m->addr + page * PAGE_SIZE + (sel >> 4) * 64, write, val, &seen);
	if (off >= g->size) {
		if (!faulted)
			fail("access past the end of the file (offset %#llx, size %#llx) did not fault",
			     (unsigned long long)off, (unsigned long long)g->size);
		return;
	}
	if (!faulted) {
		uint64_t tag = tag_get(g, off / PAGE_SIZE);

		/* The first bytes of a page are what the model follows. */
		if (!(sel >> 4) && !write && seen != (uint8_t)tag)
			fail("read %#x at offset %#llx, model %#x", seen, (unsigned long long)off,
			     (uint8_t)tag);
		if (!(sel >> 4) && write)
			tag_set(g, off / PAGE_SIZE, (tag & ~0xffULL) | val);
		ps_add(&g->alloc, off / PAGE_SIZE, off / PAGE_SIZE + 1);
	}
	if (model_private(g, off / PAGE_SIZE) && !faulted)
		fail("host %s of private page at offset %#llx did not fault",
		     write ? "write" : "read", (unsigned long long)off);
	if (!model_private(g, off / PAGE_SIZE) && faulted)
		fail("host %s of shared page at offset %#llx raised SIGBUS",
		     write ? "write" : "read", (unsigned long long)off);
	if (write && !faulted && seen != val)
		fail("wrote %#x at offset %#llx, read back %#x", val, (unsigned long long)off, seen);
}

static void op_other_calls(struct input *in)
{
	int gi, fd = pick_target(in, &gi, true);
	uint8_t sel = u8(in);
	char buf[8];
	long ret;

	switch (sel % 5) {
	case 0:
		ret = gm_read(fd, buf, sizeof(buf));
		break;
	case 1:
		ret = gm_pread(fd, buf, sizeof(buf), (off_t)(int8_t)u8(in));
		break;
	case 2: {
		off_t off = (int8_t)u8(in);

		ret = gm_lseek(fd, off, u8(in) % 6);
		if (ret >= 0 && gi < 0 && fd != -1 && fd != BAD_FD)
			return; /* VM and system fds seek nowhere */
		break;
	}
	case 3:
		ret = gm_ftruncate(fd, (off_t)(u8(in) * PAGE_SIZE));
		break;
	default:
		/* The system fd only knows its own ioctls; anything else would reach /dev/kvm. */
		if (gi >= 0 || (fd != -1 && fd != BAD_FD && !(sel & 0x80)))
			ret = gm_ioctl(fd, KVM_CHECK_EXTENSION, (unsigned long)u8(in));
		else
			ret = gm_ioctl(fd, KVM_GET_API_VERSION, 0UL);
		if (ret >= 0)
			return;
		check_errno("ioctl", errno, ENOTTY, EBADF, EINVAL, 0);
		return;
	}
	if (ret >= 0)
		fail("call %u on fd %d (gmem %d) succeeded", sel % 5, fd, gi);
	check_errno("read/pread/lseek/ftruncate", errno, EINVAL, ESPIPE, EBADF, 0);
}

static void op_close(struct input *in)
{
	uint8_t sel = u8(in);
	int *fdp;

	switch (sel % 3) {
	case 0:
		fdp = &st.kvm[(sel >> 2) % MAX_KVM];
		break;
	case 1:
		/* The probe vCPU goes with the VM fd, so it never holds the VM alone. */
		probe_stop(&st.vm[(sel >> 2) % MAX_VM].probe);
		fdp = &st.vm[(sel >> 2) % MAX_VM].fd;
		break;
	default:
		fdp = &st.gmem[(sel >> 2) % MAX_GMEM].fd;
		break;
	}
	if (*fdp < 0)
		return;
	if (gm_close(*fdp))
		fail("gm_close(%d): %s", *fdp, strerror(errno));
	*fdp = -1;
}

/* ---- one input ----------------------------------------------------------------------- */

static void cleanup(void)
{
	/* VMs first, then files, then mappings: each object must outlive the fd that made it. */
	for (int i = 0; i < MAX_VM; i++)
		probe_stop(&st.vm[i].probe);
	for (int i = 0; i < MAX_KVM; i++)
		if (st.kvm[i] >= 0 && gm_close(st.kvm[i]))
			fail("gm_close(kvm)");
	for (int i = 0; i < MAX_VM; i++)
		if (st.vm[i].fd >= 0 && gm_close(st.vm[i].fd))
			fail("gm_close(vm)");
	for (int i = 0; i < MAX_KVM; i++)
		st.kvm[i] = -1;
	for (int i = 0; i < MAX_VM; i++)
		st.vm[i].fd = -1;
	check_all();
	for (int i = 0; i < MAX_GMEM; i++) {
		if (st.gmem[i].fd >= 0 && gm_close(st.gmem[i].fd))
			fail("gm_close(gmem)");
		st.gmem[i].fd = -1;
		check_all();
	}
	for (int i = 0; i < MAX_MAP; i++) {
		if (st.map[i].used && gm_munmap(st.map[i].addr, st.map[i].len))
			fail("gm_munmap at cleanup");
		st.map[i].used = false;
		check_all();
	}
	for (int i = 0; i < MAX_GMEM; i++)
		gmem_model_free(&st.gmem[i]);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	int kvm, vm, gmem;
	struct kvm_create_guest_memfd args = { .size = PAGE_SIZE, .flags = GUEST_MEMFD_FLAG_MMAP };
	void *p;

	(void)argc;
	(void)argv;
	trace = getenv("FUZZ_TRACE") != NULL;
	/* The library keeps one process-wide fd for host mappings: have it before counting fds. */
	kvm = gm_open_kvm();
	vm = gm_ioctl(kvm, KVM_CREATE_VM, KVM_X86_SW_PROTECTED_VM | GM_VM_BACKEND_SOFT);
	gmem = gm_ioctl(vm, KVM_CREATE_GUEST_MEMFD, &args);
	p = gm_mmap(NULL, PAGE_SIZE, PROT_READ, MAP_SHARED, gmem, 0);
	if (kvm < 0 || vm < 0 || gmem < 0 || p == MAP_FAILED) {
		fprintf(stderr, "fuzz: cannot set up a guest_memfd\n");
		abort();
	}
	gm_munmap(p, PAGE_SIZE);
	gm_close(gmem);
	gm_close(vm);
	gm_close(kvm);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct input in = { data, size };
	int fds_before = count_fds();

	memset(&st, 0, sizeof(st));
	for (int i = 0; i < MAX_KVM; i++)
		st.kvm[i] = -1;
	for (int i = 0; i < MAX_VM; i++)
		st.vm[i].fd = st.vm[i].probe.fd = -1;
	for (int i = 0; i < MAX_GMEM; i++)
		st.gmem[i].fd = -1;
	st.budget = ALLOC_BUDGET;
	fuzz_op = 0;

	while (in.n) {
		uint8_t op = u8(&in);

		fuzz_op++;
		errno = 0;
		if (trace)
			fprintf(stderr, "op %u: opcode %u\n", fuzz_op, op % 12);
		switch (op % 12) {
		case 0:
			op_open_kvm(&in);
			break;
		case 1:
			op_create_vm(&in);
			break;
		case 2:
			op_create_gmem(&in);
			break;
		case 3:
			op_fallocate(&in);
			break;
		case 4:
		case 5:
			op_set_attributes(&in);
			break;
		case 6:
			op_set_region(&in);
			break;
		case 7:
			op_pin(&in);
			break;
		case 8:
			op_mmap(&in);
			break;
		case 9:
			op_munmap(&in);
			break;
		case 10:
			op_touch(&in);
			break;
		default:
			if (op & 0x80)
				op_close(&in);
			else if (op & 0x40)
				op_probe(&in);
			else
				op_other_calls(&in);
			break;
		}
		check_all();
	}
	cleanup();
	check_nothing_left(fds_before);
	return 0;
}
