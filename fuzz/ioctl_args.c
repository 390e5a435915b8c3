/*
 * libFuzzer target "ioctl_args": raw bytes as the arguments of every ioctl,
 * fallocate and mmap of a live VM. Each input gets a fresh fixture (a soft
 * SW_PROTECTED VM with three guest_memfd files, memslots bound to them, vCPUs,
 * host mappings, allocated and converted pages, a pin), then a sequence of
 * calls on its fds. A call that fails must return an errno the kernel could
 * return and leave every observable thing as it was.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fuzz.h"

#define NR_GMEM 3
#define MAX_CALLS 64

/* The fixture's files: sizes, creation flags, what is bound where. */
static const struct {
	uint64_t size, flags;
	uint64_t slot_gpa, slot_size, slot_off; /* its slot in address space 0 */
} fixture_files[NR_GMEM] = {
	{ SZ_2M, GUEST_MEMFD_FLAG_MMAP | GUEST_MEMFD_FLAG_INIT_SHARED, 0, SZ_2M, 0 },
	{ 2 * SZ_2M, GUEST_MEMFD_FLAG_MMAP | GM_GUEST_MEMFD_FOLIO_2M, 2 * SZ_2M, SZ_2M, SZ_2M },
	{ 16 * PAGE_SIZE, 0, 4 * SZ_2M, 16 * PAGE_SIZE, 0 },
};
#define HVA_SIZE (16 * PAGE_SIZE)

/* Host pages sampled through the mappings of files 0 and 1: (file, page). */
static const unsigned host_samples[][2] = {
	{ 0, 0 }, { 0, 4 }, { 0, 12 }, { 0, 100 }, { 0, 511 }, { 1, 0 }, { 1, 512 },
};
#define NR_HOST (sizeof(host_samples) / sizeof(host_samples[0]))

/* Guest-physical addresses the probe reads: each slot, private and shared pages, no slot. */
static const uint64_t probe_gpas[] = {
	0, 4 * PAGE_SIZE, 2 * SZ_2M, 3 * SZ_2M, 4 * SZ_2M, 4 * SZ_2M + 15 * PAGE_SIZE, 6 * SZ_2M,
};
#define NR_PROBE (sizeof(probe_gpas) / sizeof(probe_gpas[0]))

/* What the fuzzed vCPU's guest reads, in turn, between its hypercalls and ucalls. */
static const uint64_t guest_gpas[] = { 0, 4 * PAGE_SIZE, 2 * SZ_2M, 4 * SZ_2M, 6 * SZ_2M };

enum fd_kind { FD_SYS, FD_VM, FD_VCPU, FD_GMEM0, FD_GMEM1, FD_GMEM2, FD_FOREIGN, FD_CLOSED, FD_NEG,
	       NR_FD_KINDS };

static struct fixture {
	int kvm, vm, vcpu, gmem[NR_GMEM];
	int foreign; /* an open fd that is not the library's (/dev/null) */
	int closed;  /* a number nothing of ours has open */
	struct kvm_run *run;
	struct probe_vcpu probe;
	char *map[2];
	char *hva;
	/* Argument buffers: RW pages ending at a PROT_NONE guard, and a read-only page. */
	char *args, *guard, *ro;
} fx;

/* Everything a call could change that a caller can see. */
struct snapshot {
	struct gm_stats stats;
	struct gm_gmem_info info[NR_GMEM];
	struct {
		off_t size;
		blkcnt_t blocks;
		mode_t mode;
		ino_t ino;
	} fst[NR_GMEM];
	struct gm_vm_info vm;
	struct gm_mmu_stats mmu;
	struct {
		bool sigbus;
		uint64_t val;
	} host[NR_HOST];
	struct {
		int result;
		uint64_t val;
	} probe[NR_PROBE];
	int fds;
};

static bool trace;

static void fixture_guest(struct gm_guest *guest, void *arg)
{
	(void)arg;
	for (unsigned i = 0;; i++) {
		uint8_t v = gm_guest_read8(guest, guest_gpas[i % (sizeof(guest_gpas) / 8)]);

		if (i % 4 == 3)
			gm_guest_hypercall(guest, KVM_HC_MAP_GPA_RANGE, 4 * PAGE_SIZE, 1,
					   KVM_MAP_GPA_RANGE_ENCRYPTED);
		gm_guest_ucall(guest, GM_UCALL_SYNC, 2, (uint64_t)i, (uint64_t)v);
	}
}

#define CHECK(cond)                                                                         \
	do {                                                                                \
		if (!(cond))                                                                \
			fail("fixture: %s: %s", #cond, strerror(errno));                    \
	} while (0)

static void fixture_build(void)
{
	struct kvm_memory_attributes2 attr = { 0 };
	void *dma;

	fx.kvm = gm_open_kvm();
	CHECK(fx.kvm >= 0);
	fx.vm = gm_ioctl(fx.kvm, KVM_CREATE_VM, KVM_X86_SW_PROTECTED_VM | GM_VM_BACKEND_SOFT);
	CHECK(fx.vm >= 0);
	fx.hva = mmap(NULL, HVA_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	CHECK(fx.hva != MAP_FAILED);
	for (int i = 0; i < NR_GMEM; i++) {
		struct kvm_create_guest_memfd c = { .size = fixture_files[i].size,
						    .flags = fixture_files[i].flags };
		struct kvm_userspace_memory_region2 r = {
			.slot = (uint32_t)i, .flags = KVM_MEM_GUEST_MEMFD,
			.guest_phys_addr = fixture_files[i].slot_gpa,
			.memory_size = fixture_files[i].slot_size,
			.userspace_addr = i == 2 ? (uint64_t)(uintptr_t)fx.hva : 0,
			.guest_memfd_offset = fixture_files[i].slot_off,
		};

		fx.gmem[i] = gm_ioctl(fx.vm, KVM_CREATE_GUEST_MEMFD, &c);
		CHECK(fx.gmem[i] >= 0);
		r.guest_memfd = (uint32_t)fx.gmem[i];
		CHECK(gm_ioctl(fx.vm, KVM_SET_USER_MEMORY_REGION2, &r) == 0);
	}
	/* A host-address slot in address space 1 (SMM). */
	struct kvm_userspace_memory_region2 smm = {
		.slot = 1U << 16, .memory_size = HVA_SIZE, .userspace_addr = (uint64_t)(uintptr_t)fx.hva,
	};
	CHECK(gm_ioctl(fx.vm, KVM_SET_USER_MEMORY_REGION2, &smm) == 0);

	/* Memory: file 0's first 64 KiB, file 1's first folio; part of file 0 private, file 1's first folio shared. */
	CHECK(gm_fallocate(fx.gmem[0], FALLOC_FL_KEEP_SIZE, 0, 16 * PAGE_SIZE) == 0);
	CHECK(gm_fallocate(fx.gmem[1], FALLOC_FL_KEEP_SIZE, 0, SZ_2M) == 0);
	attr = (struct kvm_memory_attributes2){ .offset = 4 * PAGE_SIZE, .size = 4 * PAGE_SIZE,
						.attributes = KVM_MEMORY_ATTRIBUTE_PRIVATE };
	CHECK(gm_ioctl(fx.gmem[0], KVM_SET_MEMORY_ATTRIBUTES2, &attr) == 0);
	attr = (struct kvm_memory_attributes2){ .offset = 0, .size = SZ_2M };
	CHECK(gm_ioctl(fx.gmem[1], KVM_SET_MEMORY_ATTRIBUTES2, &attr) == 0);
	for (int i = 0; i < 2; i++) {
		fx.map[i] = gm_mmap(NULL, fixture_files[i].size, PROT_READ | PROT_WRITE, MAP_SHARED,
				    fx.gmem[i], 0);
		CHECK(fx.map[i] != MAP_FAILED);
	}
	/* Contents the samples and probes can recognise. */
	for (uint64_t p = 0; p < 16; p++)
		if (p < 4 || p >= 8)
			memcpy(fx.map[0] + p * PAGE_SIZE, &(uint64_t){ 0xf00d0000 + p }, 8);
	memcpy(fx.map[1], &(uint64_t){ 0xf11e0001 }, 8);
	/* A device holds file 0's page 12: converting it to private is EAGAIN. */
	CHECK(gm_gmem_pin(fx.gmem[0], 12 * PAGE_SIZE, PAGE_SIZE, &dma) == 0);

	fx.vcpu = gm_ioctl(fx.vm, KVM_CREATE_VCPU, 0UL);
	CHECK(fx.vcpu >= 0);
	CHECK(gm_vcpu_set_guest(fx.vcpu, fixture_guest, NULL) == 0);
	fx.run = gm_mmap(NULL, 3 * PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fx.vcpu, 0);
	CHECK(fx.run != MAP_FAILED);
	/* A new VM: its vCPU ids start over (the counter only keeps a closed id from coming back). */
	fx.probe.started = 0;
	CHECK(probe_start(&fx.probe, fx.vm, 1));

	fx.foreign = open("/dev/null", O_RDWR | O_CLOEXEC);
	CHECK(fx.foreign >= 0);
	if (trace)
		fprintf(stderr, "fixture: kvm %d vm %d vcpu %d probe %d gmem %d %d %d foreign %d\n",
			fx.kvm, fx.vm, fx.vcpu, fx.probe.fd, fx.gmem[0], fx.gmem[1], fx.gmem[2],
			fx.foreign);
}

static void fixture_destroy(void)
{
	probe_stop(&fx.probe);
	CHECK(gm_munmap(fx.run, 3 * PAGE_SIZE) == 0);
	CHECK(gm_close(fx.vcpu) == 0);
	for (int i = 0; i < 2; i++)
		CHECK(gm_munmap(fx.map[i], fixture_files[i].size) == 0);
	CHECK(gm_gmem_unpin(fx.gmem[0], 12 * PAGE_SIZE, PAGE_SIZE) == 0);
	for (int i = 0; i < NR_GMEM; i++)
		CHECK(gm_close(fx.gmem[i]) == 0);
	CHECK(gm_close(fx.vm) == 0);
	CHECK(gm_close(fx.kvm) == 0);
	CHECK(munmap(fx.hva, HVA_SIZE) == 0);
	CHECK(close(fx.foreign) == 0);
}

/* ---- the observable state ---------------------------------------------------------- */

static void snapshot(struct snapshot *s)
{
	int results[NR_PROBE];
	uint64_t vals[NR_PROBE];

	memset(s, 0, sizeof(*s));
	/* Accesses first: a sampled page that was not allocated is now, before the counts are read. */
	for (size_t i = 0; i < NR_HOST; i++)
		s->host[i].sigbus = peek64(fx.map[host_samples[i][0]] + host_samples[i][1] * PAGE_SIZE,
					   &s->host[i].val);
	probe_batch(&fx.probe, fx.vm, 1, probe_gpas, NR_PROBE, results, vals);
	for (size_t i = 0; i < NR_PROBE; i++) {
		s->probe[i].result = results[i];
		s->probe[i].val = vals[i];
	}
	CHECK(gm_stats(&s->stats) == 0);
	for (int i = 0; i < NR_GMEM; i++) {
		struct stat sb;

		CHECK(gm_gmem_info(fx.gmem[i], &s->info[i]) == 0);
		CHECK(gm_fstat(fx.gmem[i], &sb) == 0);
		s->fst[i].size = sb.st_size;
		s->fst[i].blocks = sb.st_blocks;
		s->fst[i].mode = sb.st_mode;
		s->fst[i].ino = sb.st_ino;
	}
	CHECK(gm_vm_info(fx.vm, &s->vm) == 0);
	CHECK(gm_vm_mmu_stats(fx.vm, &s->mmu) == 0);
	/* Each probe that finds no mapping (MMIO, a memory fault) counts a fault, every time. */
	s->mmu.faults = 0;
	s->fds = count_fds();
}

/* The first difference between two snapshots, or NULL. */
static const char *snapshot_diff(const struct snapshot *a, const struct snapshot *b)
{
	static char what[160];

	if (memcmp(&a->stats, &b->stats, sizeof(a->stats))) {
		snprintf(what, sizeof(what),
			 "gm_stats (metadata %llu -> %llu, files %llu -> %llu, VMs %llu -> %llu, fds "
			 "%llu -> %llu)", (unsigned long long)a->stats.metadata_bytes,
			 (unsigned long long)b->stats.metadata_bytes,
			 (unsigned long long)a->stats.gmem_files,
			 (unsigned long long)b->stats.gmem_files, (unsigned long long)a->stats.vms,
			 (unsigned long long)b->stats.vms, (unsigned long long)a->stats.open_fds,
			 (unsigned long long)b->stats.open_fds);
		return what;
	}
	for (int i = 0; i < NR_GMEM; i++) {
		if (memcmp(&a->info[i], &b->info[i], sizeof(a->info[i]))) {
			snprintf(what, sizeof(what),
				 "gm_gmem_info of file %d (allocated %#llx -> %#llx, shared %#llx -> %#llx)",
				 i, (unsigned long long)a->info[i].allocated_bytes,
				 (unsigned long long)b->info[i].allocated_bytes,
				 (unsigned long long)a->info[i].shared_bytes,
				 (unsigned long long)b->info[i].shared_bytes);
			return what;
		}
		if (memcmp(&a->fst[i], &b->fst[i], sizeof(a->fst[i])))
			return "fstat of a file";
	}
	if (memcmp(&a->vm, &b->vm, sizeof(a->vm)))
		return "gm_vm_info";
	if (memcmp(&a->mmu, &b->mmu, sizeof(a->mmu)))
		return "gm_vm_mmu_stats";
	for (size_t i = 0; i < NR_HOST; i++)
		if (a->host[i].sigbus != b->host[i].sigbus || a->host[i].val != b->host[i].val) {
			snprintf(what, sizeof(what), "host view of file %u page %u", host_samples[i][0],
				 host_samples[i][1]);
			return what;
		}
	for (size_t i = 0; i < NR_PROBE; i++)
		if (a->probe[i].result != b->probe[i].result || a->probe[i].val != b->probe[i].val) {
			snprintf(what, sizeof(what), "guest view of gpa %#llx (%d %#llx -> %d %#llx)",
				 (unsigned long long)probe_gpas[i], a->probe[i].result,
				 (unsigned long long)a->probe[i].val, b->probe[i].result,
				 (unsigned long long)b->probe[i].val);
			return what;
		}
	if (a->fds != b->fds)
		return "the process's open fds";
	return NULL;
}

/* ---- the calls ------------------------------------------------------------------------- */

static int fd_of(enum fd_kind k)
{
	switch (k) {
	case FD_SYS:
		return fx.kvm;
	case FD_VM:
		return fx.vm;
	case FD_VCPU:
		return fx.vcpu;
	case FD_GMEM0:
	case FD_GMEM1:
	case FD_GMEM2:
		return fx.gmem[k - FD_GMEM0];
	case FD_FOREIGN:
		return fx.foreign;
	case FD_CLOSED:
		return fx.closed;
	default:
		return -1;
	}
}

/* Every request the library answers on some fd, and kernel ones it leaves to others. */
static const unsigned long known_requests[] = {
	KVM_GET_API_VERSION, KVM_CREATE_VM, KVM_CHECK_EXTENSION, KVM_GET_VCPU_MMAP_SIZE,
	KVM_CREATE_VCPU, KVM_SET_USER_MEMORY_REGION, KVM_SET_USER_MEMORY_REGION2, KVM_ENABLE_CAP,
	KVM_CREATE_GUEST_MEMFD, KVM_SET_MEMORY_ATTRIBUTES2, KVM_RUN,
	KVM_SET_MEMORY_ATTRIBUTES, KVM_PRE_FAULT_MEMORY, KVM_SET_TSS_ADDR, KVM_SET_IDENTITY_MAP_ADDR,
	KVM_GET_SUPPORTED_CPUID, KVM_GET_STATS_FD, KVM_GET_REGS, KVM_SET_REGS, KVM_GET_SREGS,
	KVM_SET_SREGS, KVM_SET_CPUID2, KVM_GET_CPUID2, KVM_GET_MP_STATE, KVM_SET_MP_STATE,
	KVM_CREATE_IRQCHIP, KVM_SET_NR_MMU_PAGES, KVM_GET_TSC_KHZ, KVM_GET_MSRS, KVM_SET_MSRS,
};
#define NR_KNOWN (sizeof(known_requests) / sizeof(known_requests[0]))

/* Requests whose argument is a number, not a pointer. */
static bool by_value(unsigned long request)
{
	return request == KVM_GET_API_VERSION || request == KVM_CREATE_VM ||
	       request == KVM_CHECK_EXTENSION || request == KVM_GET_VCPU_MMAP_SIZE ||
	       request == KVM_CREATE_VCPU || request == KVM_RUN || request == KVM_SET_TSS_ADDR ||
	       request == KVM_GET_STATS_FD || request == KVM_CREATE_IRQCHIP ||
	       request == KVM_SET_NR_MMU_PAGES || request == KVM_GET_TSC_KHZ;
}

/*
 * Whether the request may be sent to fd at all. The library hands system-fd
 * requests it does not know to the host's /dev/kvm, and a fd that is not
 * the library's gets the real ioctl: those get only requests of a type
 * neither KVM nor the VFS knows (so the host answers EINVAL or ENOTTY and
 * writes nothing), or the library's own KVM requests. Raw creation of a
 * VM on the kvm backend would make a host VM: the fixture is soft only.
 */
static bool request_allowed(enum fd_kind k, unsigned long *request, unsigned long *arg)
{
	if (k == FD_SYS) {
		if (*request == KVM_CREATE_VM &&
		    (*arg & (GM_VM_BACKEND_SOFT | GM_VM_BACKEND_KVM)) == GM_VM_BACKEND_KVM)
			*arg ^= GM_VM_BACKEND_SOFT | GM_VM_BACKEND_KVM;
		if (*request == KVM_GET_API_VERSION || *request == KVM_CREATE_VM ||
		    *request == KVM_CHECK_EXTENSION || *request == KVM_GET_VCPU_MMAP_SIZE)
			return true;
		return _IOC_TYPE(*request) == 0xaf;
	}
	if (k == FD_FOREIGN)
		return _IOC_TYPE(*request) == KVMIO || _IOC_TYPE(*request) == 0xaf;
	return true;
}

/* The errnos a failed ioctl may have: the kernel's for this request on this kind of fd. */
static void check_ioctl_errno(enum fd_kind k, unsigned long request, int err)
{
	const char *what = "ioctl";

	switch (k) {
	case FD_CLOSED:
	case FD_NEG:
		check_errno(what, err, EBADF, 0);
		return;
	case FD_FOREIGN:
		check_errno(what, err, ENOTTY, EINVAL, 0);
		return;
	case FD_SYS:
		if (request == KVM_CREATE_VM)
			check_errno(what, err, EINVAL, ENOMEM, EMFILE, ENFILE, 0);
		else
			check_errno(what, err, EINVAL, 0);
		return;
	case FD_VM:
		switch (request) {
		case KVM_CREATE_GUEST_MEMFD:
			check_errno(what, err, EFAULT, EINVAL, ENOMEM, EMFILE, ENFILE, 0);
			return;
		case KVM_SET_USER_MEMORY_REGION:
		case KVM_SET_USER_MEMORY_REGION2:
			check_errno(what, err, EFAULT, EINVAL, EEXIST, EBADF, ENOMEM, 0);
			return;
		case KVM_CREATE_VCPU:
			check_errno(what, err, EINVAL, EEXIST, ENOMEM, EMFILE, ENFILE, 0);
			return;
		case KVM_ENABLE_CAP:
		case KVM_SET_IDENTITY_MAP_ADDR:
			check_errno(what, err, EFAULT, EINVAL, 0);
			return;
		case KVM_CREATE_IRQCHIP:
			check_errno(what, err, EEXIST, EINVAL, 0);
			return;
		case KVM_SET_NR_MMU_PAGES:
		case KVM_SET_TSS_ADDR:
			check_errno(what, err, EINVAL, 0);
			return;
		default:
			check_errno(what, err, ENOTTY, 0);
			return;
		}
	case FD_VCPU:
		if (request == KVM_RUN)
			check_errno(what, err, EINVAL, EFAULT, EBUSY, EAGAIN, 0);
		else /* the x86 state's ioctls: bad pointers, CPUID sizes (src/x86_state.c) */
			check_errno(what, err, EINVAL, EFAULT, E2BIG, ENOMEM, 0);
		return;
	default:
		if (request == KVM_SET_MEMORY_ATTRIBUTES2)
			check_errno(what, err, EFAULT, EINVAL, EAGAIN, ENOMEM, 0);
		else
			check_errno(what, err, ENOTTY, 0);
		return;
	}
}

/*
 * The argument: raw bytes in a buffer (the struct's size, or what _IOC_SIZE
 * says), a buffer that runs into a PROT_NONE guard page, a read-only copy
 * (copies back fail), NULL, a pointer into the guard, or a raw number for
 * requests that take one (and for others only numbers that are no address of
 * ours: the library must refuse them, not follow them).
 */
static unsigned long pick_arg(struct input *in, unsigned long request)
{
	uint8_t sel = u8(in);
	size_t size = _IOC_SIZE(request);
	char *end = fx.guard;

	if (size == 0 || size > 2 * PAGE_SIZE)
		size = 256;
	switch (sel % 8) {
	case 0:
	case 1:
	case 2:
		if (by_value(request))
			return (unsigned long)(sel & 0x80 ? u64(in) : u8(in));
		take_bytes(in, end - size, size);
		return (unsigned long)(end - size);
	case 3: {
		size_t cut = 1 + u8(in) % size;

		take_bytes(in, end - cut, cut);
		return (unsigned long)(end - cut);
	}
	case 4:
		mprotect(fx.ro, PAGE_SIZE, PROT_READ | PROT_WRITE);
		take_bytes(in, fx.ro, size < PAGE_SIZE ? size : PAGE_SIZE);
		mprotect(fx.ro, PAGE_SIZE, PROT_READ);
		return (unsigned long)fx.ro;
	case 5:
		return 0;
	case 6:
		return (unsigned long)(fx.guard + u8(in));
	default: {
		/* Low pages, kernel addresses, non-canonical ones. */
		static const unsigned long wild[] = { 1, 8, 4095, 0xffff800000000000UL,
						      0xffffffffffffffffUL, 0x8000000000000000UL };

		return wild[u8(in) % (sizeof(wild) / sizeof(wild[0]))];
	}
	}
}

/* Undoes a creation the call made, so the fixture stays the fixture. */
static void drop_created(enum fd_kind k, unsigned long request, int ret)
{
	if ((k == FD_SYS && request == KVM_CREATE_VM) ||
	    (k == FD_VM && (request == KVM_CREATE_GUEST_MEMFD || request == KVM_CREATE_VCPU))) {
		if (ret < 0 || gm_close(ret))
			fail("ioctl %#lx made fd %d, which gm_close refuses", request, ret);
	}
}

static bool call_ioctl(struct input *in, enum fd_kind k, bool *may_change)
{
	uint8_t sel = u8(in);
	unsigned long request = sel < 200 ? known_requests[sel % NR_KNOWN] : u32(in), arg;
	int fd = fd_of(k), ret, err;

	if (k == FD_SYS && sel >= 200)
		request = (request & ~(0xffUL << _IOC_TYPESHIFT)) | (0xafUL << _IOC_TYPESHIFT);
	arg = pick_arg(in, request);
	if (!request_allowed(k, &request, &arg))
		return false;
	errno = 0;
	ret = gm_ioctl(fd, request, arg);
	err = errno;
	if (trace)
		fprintf(stderr, "op %u: ioctl(%d kind %d, %#lx, %#lx) = %d errno %d\n", fuzz_op, fd, k,
			request, arg, ret, ret < 0 ? err : 0);
	/* A guest ran: whatever it did, it did on purpose. */
	*may_change = ret >= 0 || (k == FD_VCPU && request == KVM_RUN);
	if (ret < 0) {
		if (ret != -1)
			fail("ioctl %#lx returned %d", request, ret);
		check_ioctl_errno(k, request, err);
		return true;
	}
	drop_created(k, request, ret);
	return true;
}

static bool call_fallocate(struct input *in, enum fd_kind k, bool *may_change)
{
	int mode = (int)u32(in), fd = fd_of(k), ret, err;
	off_t off = (off_t)u64(in), len = (off_t)u64(in);

	/* Mostly the modes and sizes a guest_memfd cares about, in files of a few MiB. */
	if (!(mode & 0x100)) {
		mode &= FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE;
		off &= 0x7ff000;
		len &= 0x7ff000;
	}
	ret = gm_fallocate(fd, mode, off, len);
	err = errno;
	if (trace)
		fprintf(stderr, "op %u: fallocate(%d kind %d, %#x, %#llx, %#llx) = %d errno %d\n", fuzz_op,
			fd, k, mode, (unsigned long long)off, (unsigned long long)len, ret,
			ret ? err : 0);
	*may_change = ret == 0;
	if (ret) {
		if (ret != -1)
			fail("fallocate returned %d", ret);
		check_errno("fallocate", err, EBADF, EINVAL, EOPNOTSUPP, ENODEV, EFBIG, ENOSPC, ENOMEM,
			    0);
	} else if (k < FD_GMEM0 || k > FD_GMEM2) {
		fail("fallocate on fd kind %d succeeded", k);
	}
	return true;
}

static bool call_mmap(struct input *in, enum fd_kind k, bool *may_change)
{
	size_t len = (size_t)u64(in);
	int prot = (int)u32(in), flags = (int)u32(in), fd = fd_of(k), err;
	off_t off = (off_t)u64(in);
	void *p;

	if (!(prot & 0x100)) {
		prot &= PROT_READ | PROT_WRITE | PROT_EXEC;
		len &= 0xffffff;
		off &= 0xfff000;
	}
	/*
	 * Never MAP_FIXED: it would replace whatever lies at the address, the
	 * fuzzer's own memory included. Anonymous mappings are not the library's
	 * and could lock or populate any size.
	 */
	flags &= ~(MAP_FIXED | MAP_ANONYMOUS);
#if defined(__SANITIZE_THREAD__)
	/* ThreadSanitizer dies on a mapping outside its application ranges, such as address 0. */
	flags &= ~MAP_FIXED_NOREPLACE;
#endif
	p = gm_mmap(NULL, len, prot, flags, fd, off);
	err = errno;
	if (trace)
		fprintf(stderr, "op %u: mmap(%#zx, %#x, %#x, %d kind %d, %#llx) = %p errno %d\n", fuzz_op,
			len, prot, flags, fd, k, (unsigned long long)off, p,
			p == MAP_FAILED ? err : 0);
	*may_change = p != MAP_FAILED;
	if (p == MAP_FAILED) {
		check_errno("mmap", err, EBADF, EINVAL, ENODEV, EPERM, ENOMEM, EACCES, EOVERFLOW,
			    EOPNOTSUPP, EAGAIN, EEXIST, ENFILE, 0);
		return true;
	}
	if (k != FD_GMEM0 && k != FD_GMEM1 && k != FD_VCPU)
		fail("mmap of fd kind %d succeeded", k);
	if (gm_munmap(p, len))
		fail("gm_munmap of a fresh mapping: %s", strerror(errno));
	return true;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	trace = getenv("FUZZ_TRACE") != NULL;
	/* Creation without a backend bit must mean soft. */
	unsetenv("GMEM_BACKEND");
	fx.args = mmap(NULL, 3 * PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
		       -1, 0);
	fx.ro = mmap(NULL, PAGE_SIZE, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (fx.args == MAP_FAILED || fx.ro == MAP_FAILED)
		abort();
	fx.guard = fx.args + 2 * PAGE_SIZE;
	mprotect(fx.guard, PAGE_SIZE, PROT_NONE);
	/* A number far above what the process has open: nothing of ours reuses it. */
	fx.closed = 1000;
	if (fcntl(fx.closed, F_GETFD) >= 0)
		abort();
	/*
	 * The library's process-wide fds before fds are counted: the host
	 * mappings' hole, and the host's /dev/kvm that unknown system-fd
	 * requests go to.
	 */
	fixture_build();
	gm_ioctl(fx.kvm, _IO(0xaf, 0), 0UL);
	fixture_destroy();
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct input in = { data, size };
	int fds_before = count_fds(), calls = 0;
	struct snapshot before, after;

	fuzz_op = 0;
	fixture_build();
	snapshot(&before);
	while (in.n && calls < MAX_CALLS) {
		uint8_t op = u8(&in);
		enum fd_kind k = (enum fd_kind)((op >> 2) % NR_FD_KINDS);
		bool may_change = false, made;
		const char *diff;

		fuzz_op++;
		switch (op & 3) {
		case 0:
		case 1:
			made = call_ioctl(&in, k, &may_change);
			break;
		case 2:
			made = call_fallocate(&in, k, &may_change);
			break;
		default:
			made = call_mmap(&in, k, &may_change);
			break;
		}
		if (!made)
			continue;
		calls++;
		snapshot(&after);
		if (!may_change && (diff = snapshot_diff(&before, &after)))
			fail("a failed call changed %s", diff);
		before = after;
	}
	fixture_destroy();
	check_nothing_left(fds_before);
	return 0;
}
