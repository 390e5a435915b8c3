/* libFuzzer target: programs of surface calls, checked against what the library promises. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <gmem/gmem.h>
#include <urcu-bp.h>

/*
 * Each input is a program: one opcode byte, then the bytes its arguments
 * need; a short input reads zeros. All objects live in one process, so every
 * input ends by closing and unmapping whatever it made, and checks that the
 * library is back where it started: inputs stay independent.
 */

#define PAGE_SIZE 4096ULL
#define SZ_2M (2ULL << 20)
#define SZ_1G (1ULL << 30)

#define MAX_KVM 2
#define MAX_VM 4
#define MAX_GMEM 8
#define MAX_MAP 16
#define MAX_PIN 16
/* Memory the fuzzer may make the library allocate per input (24 GiB machine, ASan, 2 jobs). */
#define ALLOC_BUDGET (64ULL << 20)
/* Files up to this size get a per-page model of their attributes. */
#define MODEL_MAX_BYTES (64ULL << 20)
#define MAX_TOUCHES 32
/* An fd number no process of ours reaches, for the EBADF paths. */
#define BAD_FD (1 << 24)

#define FALLOC_WRITE_ZEROES 0x80

struct input {
	const uint8_t *p;
	size_t n;
};

struct fz_vm {
	int fd; /* -1 once closed */
	bool live; /* the object: its fd, or a file holding it */
	unsigned long type;
};

struct fz_gmem {
	int fd; /* -1 once closed */
	bool live; /* the object: its fd, or a mapping holding it */
	int vm;
	uint64_t size;
	uint64_t flags;
	uint64_t folio;
	/*
	 * The attributes the file must have: one byte per page (1 = private) for
	 * files up to MODEL_MAX_BYTES; bigger files are modelled only while uniform.
	 */
	uint8_t *priv;
	bool big_known;
	bool big_private;
};

struct fz_map {
	bool used;
	char *addr;
	uint64_t len; /* page-rounded, as the library tracks it */
	uint64_t off;
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
	unsigned op; /* index of the operation, for reports */
} st;

/* FUZZ_TRACE=1: print what each operation left behind, to read a reproducer. */
static bool trace;

static uint8_t u8(struct input *in)
{
	if (!in->n)
		return 0;
	in->n--;
	return *in->p++;
}

/* Little-endian; each byte read in its own statement, so the order is defined. */
static uint16_t u16(struct input *in)
{
	uint16_t lo = u8(in);

	return (uint16_t)(lo | u8(in) << 8);
}

static uint32_t u32(struct input *in)
{
	uint32_t lo = u16(in);

	return lo | (uint32_t)u16(in) << 16;
}

static uint64_t u64(struct input *in)
{
	uint64_t lo = u32(in);

	return lo | (uint64_t)u32(in) << 32;
}

/* An invariant the library promises does not hold: abort, so libFuzzer keeps the input. */
static void __attribute__((noreturn, format(printf, 1, 2))) fail(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "\nINVARIANT FAILED at op %u: ", st.op);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	abort();
}

/* A failed call must return -1 and set one of the errnos listed (0-terminated). */
static void check_errno(const char *what, int err, ...)
{
	va_list ap;
	int e;

	va_start(ap, err);
	while ((e = va_arg(ap, int)))
		if (e == err) {
			va_end(ap);
			return;
		}
	va_end(ap);
	fail("%s: unexpected errno %d (%s)", what, err, strerror(err));
}

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

/* ---- the model of a file's attributes ---------------------------------------------- */

static bool model_known(const struct fz_gmem *g)
{
	return g->priv || g->big_known;
}

static bool model_private(const struct fz_gmem *g, uint64_t page)
{
	return g->priv ? g->priv[page] : g->big_private;
}

static uint64_t model_shared_bytes(const struct fz_gmem *g)
{
	uint64_t n = 0;

	if (!g->priv)
		return g->big_private ? 0 : g->size;
	for (uint64_t i = 0; i < g->size / PAGE_SIZE; i++)
		n += !g->priv[i];
	return n * PAGE_SIZE;
}

/* Whether model says every page of [off, off + len) is shared; -1 when it cannot say. */
static int model_all_shared(const struct fz_gmem *g, uint64_t off, uint64_t len)
{
	if (!model_known(g))
		return -1;
	if (!g->priv)
		return !g->big_private;
	for (uint64_t p = off / PAGE_SIZE; p < (off + len) / PAGE_SIZE; p++)
		if (model_private(g, p))
			return 0;
	return 1;
}

static void model_set(struct fz_gmem *g, uint64_t off, uint64_t len, bool priv)
{
	if (g->priv) {
		memset(g->priv + off / PAGE_SIZE, priv, len / PAGE_SIZE);
		return;
	}
	if (off == 0 && len == g->size) {
		g->big_known = true;
		g->big_private = priv;
	} else if (g->big_known && g->big_private != priv) {
		g->big_known = false;
	}
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
		}
	}
	for (int v = 0; v < MAX_VM; v++) {
		bool held = st.vm[v].fd >= 0;

		for (int i = 0; i < MAX_GMEM; i++)
			held |= st.gmem[i].live && st.gmem[i].vm == v;
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
	if (model_known(g) && info.shared_bytes != model_shared_bytes(g))
		fail("gmem %d: shared_bytes %llu, model %llu", gi,
		     (unsigned long long)info.shared_bytes,
		     (unsigned long long)model_shared_bytes(g));
	if (info.host_mappings != maps_of(gi))
		fail("gmem %d: host_mappings %u, live mappings %u", gi, info.host_mappings,
		     maps_of(gi));
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
		n += st.vm[i].fd >= 0;
	for (int i = 0; i < MAX_GMEM; i++)
		n += st.gmem[i].fd >= 0;
	return n;
}

static void trace_state(void)
{
	struct gm_gmem_info info;

	fprintf(stderr, "op %u: errno %d", st.op, errno);
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
	st.vm[v] = (struct fz_vm){ .fd = fd, .live = true, .type = arg & 0xff };
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
	free(g->priv);
	*g = (struct fz_gmem){
		.fd = fd, .live = true, .vm = v, .size = args.size, .flags = args.flags,
		.folio = folio_size, .big_known = true,
		.big_private = !(args.flags & GUEST_MEMFD_FLAG_INIT_SHARED),
	};
	if (args.size <= MODEL_MAX_BYTES) {
		g->priv = malloc(args.size / PAGE_SIZE);
		if (!g->priv)
			abort();
		memset(g->priv, g->big_private, args.size / PAGE_SIZE);
	}
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

static void op_fallocate(struct input *in)
{
	int gi, fd = pick_target(in, &gi, true);
	uint8_t msel = u8(in);
	int mode = msel < 240 ? falloc_modes[msel % 12] : u8(in);
	uint64_t size = gi >= 0 ? st.gmem[gi].size : 0;
	int64_t off = (int64_t)pick_off(in, size), len = (int64_t)pick_len(in);
	uint64_t alloc_before = 0, shared_before = 0, alloc_after, shared_after, charge = 0;
	bool have = gmem_bytes(gi, &alloc_before, &shared_before);
	int ret;

	/* Allocation costs memory: stay inside the input's budget. */
	if (!(mode & FALLOC_FL_PUNCH_HOLE) && gi >= 0 && off >= 0 && len > 0 &&
	    (uint64_t)off < size)
		charge = (uint64_t)len < size - (uint64_t)off ? (uint64_t)len : size - (uint64_t)off;
	if (charge > st.budget)
		return;
	st.budget -= charge;
	ret = gm_fallocate(fd, mode, off, len);
	if (ret) {
		if (ret != -1)
			fail("gm_fallocate returned %d", ret);
		check_errno("gm_fallocate", errno, EINVAL, EOPNOTSUPP, EFBIG, ENODEV, EBADF, ENOSPC,
			    ENOMEM, 0);
	} else if (gi < 0) {
		fail("gm_fallocate on a fd that is no guest_memfd succeeded");
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
		if (errno == EAGAIN && (a.error_offset < a.offset ||
					a.error_offset >= a.offset + a.size))
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

static void op_set_region(struct input *in)
{
	uint8_t sel = u8(in), gsel = u8(in);
	int v = sel % MAX_VM;
	struct kvm_userspace_memory_region2 r = { 0 };
	unsigned long request = sel & 0x80 ? KVM_SET_USER_MEMORY_REGION : KVM_SET_USER_MEMORY_REGION2;
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
	ret = gm_ioctl(st.vm[v].fd, request, &r);
	if (ret) {
		if (ret != -1)
			fail("KVM_SET_USER_MEMORY_REGION returned %d", ret);
		check_errno("KVM_SET_USER_MEMORY_REGION", errno, EINVAL, EEXIST, ENOMEM, EBADF,
			    EFAULT, 0);
		return;
	}
	/*
	 * A replaced slot is freed by call_rcu, on liburcu's thread, some time
	 * later: wait for it here, so that a later use of the old slot is a
	 * use-after-free every time the input runs, not when the timing is right.
	 */
	rcu_barrier();
}

static void op_pin(struct input *in)
{
	int gi, fd = pick_target(in, &gi, true);
	uint8_t sel = u8(in);
	uint64_t size = gi >= 0 ? st.gmem[gi].size : 0;
	uint64_t off = pick_off(in, size), len = pick_len(in), charge = 0, a, s0, s1;
	void *dma = NULL;
	bool have;
	int ret, all_shared;

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
			     len <= size - off ? model_all_shared(&st.gmem[gi], off, len) : -1;
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
		.off = off, .prot = prot, .gmem = gi,
	};
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

static sigjmp_buf sigbus_jmp;

static void on_sigbus(int sig)
{
	(void)sig;
	siglongjmp(sigbus_jmp, 1);
}

/* Touches one byte; true when the access raised SIGBUS. */
static bool touch(volatile char *addr, bool write, uint8_t val, uint8_t *seen)
{
	struct sigaction sa = { .sa_handler = on_sigbus }, old;
	volatile bool faulted = false;

	sigemptyset(&sa.sa_mask);
	sigaction(SIGBUS, &sa, &old);
	if (sigsetjmp(sigbus_jmp, 1) == 0) {
		if (write)
			*addr = (char)val;
		*seen = (uint8_t)*addr;
	} else {
		faulted = true;
	}
	sigaction(SIGBUS, &old, NULL);
	return faulted;
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
	if (!model_known(g))
		return;
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

static int count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	int n = 0;

	if (!d)
		abort();
	while (readdir(d))
		n++;
	closedir(d);
	return n;
}

static void cleanup(void)
{
	/* VMs first, then files, then mappings: each object must outlive the fd that made it. */
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
		free(st.gmem[i].priv);
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
	int fds_before = count_fds(), fds_after;
	struct gm_stats s;

	memset(&st, 0, sizeof(st));
	for (int i = 0; i < MAX_KVM; i++)
		st.kvm[i] = -1;
	for (int i = 0; i < MAX_VM; i++)
		st.vm[i].fd = -1;
	for (int i = 0; i < MAX_GMEM; i++)
		st.gmem[i].fd = -1;
	st.budget = ALLOC_BUDGET;

	while (in.n) {
		uint8_t op = u8(&in);

		st.op++;
		errno = 0;
		if (trace)
			fprintf(stderr, "op %u: opcode %u\n", st.op, op % 12);
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
			else
				op_other_calls(&in);
			break;
		}
		check_all();
	}
	cleanup();

	if (gm_stats(&s))
		fail("gm_stats failed");
	if (s.vms || s.gmem_files || s.open_fds)
		fail("after cleanup: %llu VMs, %llu files, %llu fds still live",
		     (unsigned long long)s.vms, (unsigned long long)s.gmem_files,
		     (unsigned long long)s.open_fds);
	fds_after = count_fds();
	if (fds_after != fds_before)
		fail("process fds %d before the input, %d after", fds_before, fds_after);
	return 0;
}
