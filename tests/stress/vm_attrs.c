/*
 * The per-VM attribute mode under load: at once, owner vCPUs convert their own
 * ranges (MAP_GPA_RANGE, and memory faults resolved by converting) and check
 * each byte; a converter thread flips random ranges of a second region under a
 * reader vCPU, which must read one of that page's two copies; a slot thread
 * deletes and re-creates the slot of a third region under the same reader,
 * which must read the page, an MMIO exit or a private fault there. Runs under
 * every build, ThreadSanitizer's included.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdarg.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <gmem/gmem.h>

#include "stress/check.h"

#define PAGE 4096ULL
#define REGION_PAGES 512ULL /* 2 MiB: a whole huge leaf of the 2 MiB-folio file */
#define NR_OWNERS 2
/* Regions: one per owner, then B (flipped by the converter), then C (its slot comes and goes). */
#define REGION_B NR_OWNERS
#define REGION_C (NR_OWNERS + 1)
#define NR_REGIONS (NR_OWNERS + 2)
/* vCPUs: the owners (0, 1, ... as their regions), then the reader and the racer. */
#define READER NR_OWNERS
#define RACER (NR_OWNERS + 1)
#define BASE_GPA 0x100000000ULL
#define MEM_SIZE (NR_REGIONS * REGION_PAGES * PAGE)
#define ROUNDS 48
#define READER_PASSES 24
/* The reader goes on until the other threads have done this much under it, and it saw C gone. */
#define MIN_B_CONVERSIONS 64
#define MIN_C_SLOT_CYCLES 8
#define MAX_READER_PASSES 20000
#define MMIO_MARK 0x6d6d696f6d6d696fULL

static const uint64_t range_pages[] = { 1, 16, REGION_PAGES };

static uint64_t region_gpa(int region, uint64_t page)
{
	return BASE_GPA + (region * REGION_PAGES + page) * PAGE;
}

/* The first 8 bytes of each copy of a page, by what wrote them. */
static uint64_t owner_private(int id, int round, uint64_t page)
{
	return 0x5052000000000000ULL | (uint64_t)id << 40 | (uint64_t)round << 24 | page;
}

static uint64_t owner_host(int id, int round, uint64_t page)
{
	return 0x4853000000000000ULL | (uint64_t)id << 40 | (uint64_t)round << 24 | page;
}

static uint64_t owner_shared(int id, int round, uint64_t page)
{
	return 0x5348000000000000ULL | (uint64_t)id << 40 | (uint64_t)round << 24 | page;
}

/* B and C pages hold fixed values: one in the file (private), one in the VMM's memory (shared). */
static uint64_t fixed_private(int region, uint64_t page)
{
	return 0x4649580000000000ULL | (uint64_t)region << 32 | page;
}

static uint64_t fixed_shared(int region, uint64_t page)
{
	return 0x484f535400000000ULL | (uint64_t)region << 32 | page;
}

/* C's attributes never change: even pages private, odd ones shared. */
static bool c_page_private(uint64_t page)
{
	return !(page & 1);
}

/* What the converter and the slot thread have done so far: the reader reads until it is enough. */
static atomic_ulong b_conversions, c_slot_cycles;
/* The slot thread stopped: C's slot may never come back, so the reader must not wait for it. */
static atomic_bool slot_thread_gone;

enum stage { STAGE_EXPECT_SHARED_FAULT = 1, STAGE_CHECK_HOST = 2, STAGE_EXPECT_PRIVATE_FAULT = 3 };

/* ---- guests ---- */

static void guest_expect(struct gm_guest *g, uint64_t gpa, uint64_t got, uint64_t want)
{
	char what[96];

	if (got == want)
		return;
	snprintf(what, sizeof(what), "gpa %#llx: %#llx, expected %#llx", (unsigned long long)gpa,
		 (unsigned long long)got, (unsigned long long)want);
	gm_guest_abort(g, __FILE__, __LINE__, what);
}

static void guest_map_gpa(struct gm_guest *g, uint64_t gpa, uint64_t npages, bool private)
{
	uint64_t ret = gm_guest_hypercall(g, KVM_HC_MAP_GPA_RANGE, gpa, npages,
					  private ? KVM_MAP_GPA_RANGE_ENCRYPTED
						  : KVM_MAP_GPA_RANGE_DECRYPTED);

	GM_GUEST_ASSERT(g, ret == 0);
}

/* What an owner's guest knows of its region: each page's attribute and both copies. */
struct owner_model {
	bool private[REGION_PAGES];
	uint64_t file[REGION_PAGES], host[REGION_PAGES];
};

static struct owner_model owner_models[NR_OWNERS]; /* each only touched by its owner's guest */

/* Reads [first, first + n) with the given kind: the copy the model says, or of the kind asked. */
static uint64_t guest_check_range(struct gm_guest *g, int id, uint64_t first, uint64_t n,
				  enum gm_access access)
{
	const struct owner_model *m = &owner_models[id];

	gm_guest_set_access(g, access);
	for (uint64_t p = first; p < first + n; p++) {
		bool private = access == GM_ACCESS_AUTO ? m->private[p] : access == GM_ACCESS_PRIVATE;

		guest_expect(g, region_gpa(id, p), gm_guest_read64(g, region_gpa(id, p)),
			     private ? m->file[p] : m->host[p]);
	}
	return n;
}

/* After a conversion: every page of the region, as the guest reads it by default. */
static uint64_t guest_check_region(struct gm_guest *g, int id)
{
	return guest_check_range(g, id, 0, REGION_PAGES, GM_ACCESS_AUTO);
}

/* Writes value(page) to each page of [first, first + n) with the given kind, noting it in copy. */
static void guest_write_range(struct gm_guest *g, int id, uint64_t first, uint64_t n,
			      enum gm_access access, uint64_t *copy,
			      uint64_t (*value)(int, int, uint64_t), int round)
{
	gm_guest_set_access(g, access);
	for (uint64_t p = first; p < first + n; p++) {
		copy[p] = value(id, round, p);
		gm_guest_write64(g, region_gpa(id, p), copy[p]);
	}
}

static void model_convert(int id, uint64_t first, uint64_t n, bool private)
{
	for (uint64_t p = first; p < first + n; p++)
		owner_models[id].private[p] = private;
}

/*
 * An owner: converts ranges of its own region every way the per-VM mode allows,
 * and after each conversion reads its whole region (a leaf left over from before
 * the conversion, a huge one a racing fault mapped included, would show there).
 */
static void guest_owner(struct gm_guest *g, void *arg)
{
	int id = (int)(uintptr_t)arg;
	struct owner_model *m = &owner_models[id];
	uint64_t checked = 0;

	/* The setup left the region private, both copies zero. */
	model_convert(id, 0, REGION_PAGES, true);
	for (int round = 0; round < ROUNDS; round++) {
		uint64_t n = range_pages[round % 3], first = (round * 37ULL) % (REGION_PAGES - n + 1);
		uint64_t gpa = region_gpa(id, first);

		/* Shared and back by hypercall: the VMM's copy, then the file's, read by default. */
		guest_map_gpa(g, gpa, n, false);
		model_convert(id, first, n, false);
		checked += guest_check_region(g, id);
		/* Private by hypercall: the file's copy, written and read with private accesses. */
		guest_map_gpa(g, gpa, n, true);
		model_convert(id, first, n, true);
		checked += guest_check_region(g, id);
		guest_write_range(g, id, first, n, GM_ACCESS_PRIVATE, m->file, owner_private, round);
		checked += guest_check_range(g, id, first, n, GM_ACCESS_PRIVATE);
		checked += guest_check_range(g, id, first, n, GM_ACCESS_AUTO);
		/* A shared access faults; the VMM writes its copy, converts the range, and the access reads it. */
		gm_guest_ucall(g, GM_UCALL_SYNC, 4, (uint64_t)STAGE_EXPECT_SHARED_FAULT, gpa, n,
			       (uint64_t)round);
		for (uint64_t p = first; p < first + n; p++)
			m->host[p] = owner_host(id, round, p);
		checked += guest_check_range(g, id, first, 1, GM_ACCESS_SHARED);
		model_convert(id, first, n, false);
		checked += guest_check_region(g, id);
		guest_write_range(g, id, first, n, GM_ACCESS_SHARED, m->host, owner_shared, round);
		checked += guest_check_range(g, id, first, n, GM_ACCESS_AUTO);
		gm_guest_ucall(g, GM_UCALL_SYNC, 4, (uint64_t)STAGE_CHECK_HOST, gpa, n, (uint64_t)round);
		/* Private again by fault: the file kept its copy while the range was shared. */
		gm_guest_ucall(g, GM_UCALL_SYNC, 4, (uint64_t)STAGE_EXPECT_PRIVATE_FAULT, gpa, n,
			       (uint64_t)round);
		checked += guest_check_range(g, id, first, 1, GM_ACCESS_PRIVATE);
		model_convert(id, first, n, true);
		checked += guest_check_region(g, id);
		checked += guest_check_range(g, id, first, n, GM_ACCESS_PRIVATE);
	}
	gm_guest_ucall(g, GM_UCALL_DONE, 1, checked);
}

/* The reader: B pages read one of their two copies; C pages their copy, or MMIO while C has no slot. */
static void guest_reader(struct gm_guest *g, void *arg)
{
	uint64_t reads = 0, mmio = 0;

	(void)arg;
	for (int pass = 0; pass < MAX_READER_PASSES; pass++) {
		if (pass >= READER_PASSES && mmio && atomic_load(&b_conversions) >= MIN_B_CONVERSIONS &&
		    atomic_load(&c_slot_cycles) >= MIN_C_SLOT_CYCLES)
			break;
		for (uint64_t p = 0; p < REGION_PAGES; p++) {
			uint64_t gpa = region_gpa(REGION_B, p), v = gm_guest_read64(g, gpa);

			if (v != fixed_shared(REGION_B, p))
				guest_expect(g, gpa, v, fixed_private(REGION_B, p));
			gpa = region_gpa(REGION_C, p);
			v = gm_guest_read64(g, gpa);
			if (v == MMIO_MARK && !c_page_private(p))
				mmio++;
			else
				guest_expect(g, gpa, v, c_page_private(p) ? fixed_private(REGION_C, p)
									  : fixed_shared(REGION_C, p));
			reads += 2;
		}
	}
	gm_guest_ucall(g, GM_UCALL_DONE, 2, reads, mmio);
}

/*
 * The racer: reads the owners' regions over and over, unchecked (a page may be
 * either copy), so that its faults map huge leaves while an owner converts.
 */
static atomic_bool owners_done;

static void guest_racer(struct gm_guest *g, void *arg)
{
	uint64_t reads = 0;

	(void)arg;
	while (!atomic_load(&owners_done)) {
		for (int id = 0; id < NR_OWNERS; id++)
			for (uint64_t p = 0; p < REGION_PAGES; p += 8)
				(void)gm_guest_read64(g, region_gpa(id, p));
		reads += NR_OWNERS * REGION_PAGES / 8;
	}
	gm_guest_ucall(g, GM_UCALL_DONE, 1, reads);
}

/* Writes the file's copy of every B and C page (all private then). */
static void guest_setup(struct gm_guest *g, void *arg)
{
	(void)arg;
	gm_guest_set_access(g, GM_ACCESS_PRIVATE);
	for (int region = REGION_B; region <= REGION_C; region++)
		for (uint64_t p = 0; p < REGION_PAGES; p++)
			gm_guest_write64(g, region_gpa(region, p), fixed_private(region, p));
	gm_guest_ucall(g, GM_UCALL_DONE, 0);
}

/* ---- the VMM ---- */

static int vm_fd, gmem_fd;
static uint64_t *host_mem; /* the slots' userspace_addr */
static atomic_bool stop;

static int set_attrs(uint64_t gpa, uint64_t size, bool private)
{
	struct kvm_memory_attributes a = {
		.address = gpa, .size = size, .attributes = private ? KVM_MEMORY_ATTRIBUTE_PRIVATE : 0,
	};

	return gm_ioctl(vm_fd, KVM_SET_MEMORY_ATTRIBUTES, &a) ? errno : 0;
}

static int set_slot(uint32_t slot, int region, uint64_t npages)
{
	struct kvm_userspace_memory_region2 r = {
		.slot = slot, .flags = KVM_MEM_GUEST_MEMFD, .guest_phys_addr = region_gpa(region, 0),
		.memory_size = npages * PAGE,
		.userspace_addr = (uint64_t)(uintptr_t)&host_mem[region * REGION_PAGES * PAGE / 8],
		.guest_memfd_offset = region * REGION_PAGES * PAGE, .guest_memfd = (uint32_t)gmem_fd,
	};

	return gm_ioctl(vm_fd, KVM_SET_USER_MEMORY_REGION2, &r) ? errno : 0;
}

static uint64_t *host_page(int region, uint64_t page)
{
	return &host_mem[(region * REGION_PAGES + page) * PAGE / 8];
}

struct runner {
	int id, vcpu;
	struct kvm_run *run;
	char failure[200];
	uint64_t conversions, faults, mmio_exits, retried_faults, reads, guest_mmio;
	/* The memory fault the guest announced, and its range. */
	uint64_t want_fault_gpa, want_fault_flags, range_npages;
};

/* The thread's first failure; main reports it (check.h's counters are main's alone). */
static void __attribute__((format(printf, 2, 3))) fail(struct runner *r, const char *fmt, ...)
{
	va_list ap;

	if (r->failure[0])
		return;
	va_start(ap, fmt);
	vsnprintf(r->failure, sizeof(r->failure), fmt, ap);
	va_end(ap);
}

static void owner_sync(struct runner *r, const struct gm_ucall *uc)
{
	uint64_t gpa = uc->args[1], n = uc->args[2], first = (gpa - region_gpa(r->id, 0)) / PAGE;
	int round = (int)uc->args[3];

	r->range_npages = n;
	switch (uc->args[0]) {
	case STAGE_EXPECT_SHARED_FAULT:
		/* The VMM's copy the guest will read once the range is shared. */
		for (uint64_t p = first; p < first + n; p++)
			*host_page(r->id, p) = owner_host(r->id, round, p);
		r->want_fault_gpa = gpa;
		r->want_fault_flags = 0;
		break;
	case STAGE_CHECK_HOST:
		for (uint64_t p = first; p < first + n; p++)
			if (*host_page(r->id, p) != owner_shared(r->id, round, p))
				return fail(r, "the guest's shared write to gpa %#llx did not reach the VMM (%#llx)",
					    (unsigned long long)region_gpa(r->id, p),
					    (unsigned long long)*host_page(r->id, p));
		break;
	case STAGE_EXPECT_PRIVATE_FAULT:
		r->want_fault_gpa = gpa;
		r->want_fault_flags = KVM_MEMORY_EXIT_FLAG_PRIVATE;
		break;
	default:
		fail(r, "unknown stage %llu", (unsigned long long)uc->args[0]);
	}
}

/* The announced fault, resolved as a VMM does: convert the range to what the guest wants. */
static void owner_fault(struct runner *r)
{
	uint64_t gpa = r->run->memory_fault.gpa, flags = r->run->memory_fault.flags;
	int err;

	if (gpa != r->want_fault_gpa || flags != r->want_fault_flags)
		return fail(r, "memory fault at %#llx flags %#llx, not the announced one",
			    (unsigned long long)gpa, (unsigned long long)flags);
	r->want_fault_gpa = 0;
	err = set_attrs(gpa, r->range_npages * PAGE, flags & KVM_MEMORY_EXIT_FLAG_PRIVATE);
	if (err)
		return fail(r, "KVM_SET_MEMORY_ATTRIBUTES at %#llx: %s", (unsigned long long)gpa,
			    strerror(err));
	r->faults++;
}

static void owner_hypercall(struct runner *r)
{
	uint64_t gpa = r->run->hypercall.args[0], n = r->run->hypercall.args[1];
	int err = set_attrs(gpa, n * PAGE, r->run->hypercall.args[2] & KVM_MAP_GPA_RANGE_ENCRYPTED);

	r->run->hypercall.ret = (uint64_t)err;
	if (err)
		return fail(r, "MAP_GPA_RANGE at %#llx: %s", (unsigned long long)gpa, strerror(err));
	r->conversions++;
}

/* The reader's exits: MMIO only at a shared C page, a fault only at a private one (slot gone). */
static void reader_exit(struct runner *r, bool fault)
{
	uint64_t gpa = fault ? r->run->memory_fault.gpa : r->run->mmio.phys_addr;
	uint64_t page = (gpa - region_gpa(REGION_C, 0)) / PAGE;
	bool in_c = gpa >= region_gpa(REGION_C, 0) && page < REGION_PAGES;

	if (fault) {
		if (!in_c || !c_page_private(page) ||
		    r->run->memory_fault.flags != KVM_MEMORY_EXIT_FLAG_PRIVATE)
			return fail(r, "reader: memory fault at %#llx flags %#llx", (unsigned long long)gpa,
				    (unsigned long long)r->run->memory_fault.flags);
		if (atomic_load(&slot_thread_gone))
			return fail(r, "reader: C's slot is gone for good at %#llx", (unsigned long long)gpa);
		r->retried_faults++;
		usleep(20); /* the slot comes back soon: run again */
		return;
	}
	if (!in_c || c_page_private(page) || r->run->mmio.is_write || r->run->mmio.len != 8)
		return fail(r, "reader: MMIO exit at %#llx len %u", (unsigned long long)gpa,
			    r->run->mmio.len);
	memcpy(r->run->mmio.data, &(uint64_t){ MMIO_MARK }, 8);
	r->mmio_exits++;
}

static void *vcpu_thread(void *arg)
{
	struct runner *r = arg;
	bool reader = r->id == READER;
	struct gm_ucall uc;

	while (!r->failure[0]) {
		int ret = gm_ioctl(r->vcpu, KVM_RUN, 0);

		if (ret && errno == EFAULT && r->run->exit_reason == KVM_EXIT_MEMORY_FAULT) {
			if (reader)
				reader_exit(r, true);
			else
				owner_fault(r);
			continue;
		}
		if (ret) {
			fail(r, "KVM_RUN: %s, exit %u", strerror(errno), r->run->exit_reason);
			break;
		}
		switch (r->run->exit_reason) {
		case KVM_EXIT_HYPERCALL:
			owner_hypercall(r);
			continue;
		case KVM_EXIT_MMIO:
			reader_exit(r, false);
			continue;
		case KVM_EXIT_IO:
			gm_vcpu_get_ucall(r->vcpu, &uc);
			if (uc.cmd == GM_UCALL_SYNC) {
				owner_sync(r, &uc);
				continue;
			}
			if (uc.cmd == GM_UCALL_ABORT)
				fail(r, "guest: %s", uc.msg);
			if (uc.cmd == GM_UCALL_DONE) {
				r->reads = uc.args[0];
				r->guest_mmio = uc.args[1];
			}
			return NULL;
		default:
			fail(r, "unexpected exit %u", r->run->exit_reason);
		}
	}
	return NULL;
}

/* Flips random ranges of B, inside B only, until the vCPUs are done. */
static void *converter_thread(void *arg)
{
	struct runner *r = arg;
	uint64_t seed = 0x9e3779b97f4a7c15ULL;

	while (!atomic_load(&stop) && !r->failure[0]) {
		uint64_t first, n;
		int err;

		seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
		first = (seed >> 33) % REGION_PAGES;
		n = 1 + (seed >> 13) % (REGION_PAGES - first);
		err = set_attrs(region_gpa(REGION_B, first), n * PAGE, (seed >> 7) & 1);
		if (err)
			fail(r, "converter: KVM_SET_MEMORY_ATTRIBUTES at page %llu: %s",
			     (unsigned long long)first, strerror(err));
		r->conversions++;
		atomic_fetch_add(&b_conversions, 1);
	}
	return NULL;
}

/* Deletes and re-creates C's slot until the vCPUs are done; a slot over A must stay refused. */
static void *slot_thread(void *arg)
{
	struct runner *r = arg;
	int err;

	while (!atomic_load(&stop) && !r->failure[0]) {
		if ((err = set_slot(1, REGION_C, 0)))
			fail(r, "deleting C's slot: %s", strerror(err));
		usleep(1000); /* leave the reader a moment without the slot */
		if ((err = set_slot(2, 0, 1)) != EEXIST)
			fail(r, "a slot over A's: errno %d, not EEXIST", err);
		if ((err = set_slot(1, REGION_C, REGION_PAGES)))
			fail(r, "re-creating C's slot: %s", strerror(err));
		r->conversions++;
		atomic_fetch_add(&c_slot_cycles, 1);
	}
	atomic_store(&slot_thread_gone, true);
	return NULL;
}

static int new_vcpu(int id, gm_guest_fn fn, void *arg, struct kvm_run **run)
{
	int fd = gm_ioctl(vm_fd, KVM_CREATE_VCPU, id);

	REQUIRE(fd >= 0, "KVM_CREATE_VCPU %d: %s", id, strerror(errno));
	*run = gm_mmap(NULL, 3 * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	REQUIRE(*run != MAP_FAILED, "mmap of vCPU %d", id);
	REQUIRE(gm_vcpu_set_guest(fd, fn, arg) == 0, "guest of vCPU %d", id);
	return fd;
}

/* B's and C's copies: the file's by a guest while all is private, the VMM's by hand. */
static void setup_memory(void)
{
	struct kvm_run *run;
	struct gm_ucall uc;
	int fd = new_vcpu(NR_REGIONS + 1, guest_setup, NULL, &run);

	REQUIRE(set_attrs(BASE_GPA, MEM_SIZE, true) == 0, "all private");
	REQUIRE(gm_ioctl(fd, KVM_RUN, 0) == 0 && run->exit_reason == KVM_EXIT_IO &&
			gm_vcpu_get_ucall(fd, &uc) == 0 && uc.cmd == GM_UCALL_DONE,
		"the setup guest: exit %u", run->exit_reason);
	gm_munmap(run, 3 * PAGE);
	gm_close(fd);
	for (int region = REGION_B; region <= REGION_C; region++)
		for (uint64_t p = 0; p < REGION_PAGES; p++)
			*host_page(region, p) = fixed_shared(region, p);
	REQUIRE(set_attrs(region_gpa(REGION_B, 0), REGION_PAGES * PAGE, false) == 0, "B shared");
	for (uint64_t p = 0; p < REGION_PAGES; p++)
		if (!c_page_private(p))
			REQUIRE(set_attrs(region_gpa(REGION_C, p), PAGE, false) == 0, "C page shared");
}

int main(void)
{
	struct runner runners[NR_OWNERS + 2], converter = { .id = -1 }, slotter = { .id = -2 };
	pthread_t threads[NR_OWNERS + 2], conv_thread, slot_thr;
	struct kvm_enable_cap cap = { .cap = KVM_CAP_EXIT_HYPERCALL,
				      .args = { 1ULL << KVM_HC_MAP_GPA_RANGE } };
	struct kvm_create_guest_memfd c = { .size = MEM_SIZE, .flags = GM_GUEST_MEMFD_FOLIO_2M };
	uint64_t owner_faults = 0;
	int kvm;

	REQUIRE(gm_set_vm_memory_attributes(true) == 0, "per-VM attributes");
	kvm = gm_open_kvm();
	vm_fd = gm_ioctl(kvm, KVM_CREATE_VM, KVM_X86_SW_PROTECTED_VM | GM_VM_BACKEND_SOFT);
	REQUIRE(vm_fd >= 0, "KVM_CREATE_VM: %s", strerror(errno));
	REQUIRE(gm_ioctl(vm_fd, KVM_CHECK_EXTENSION, KVM_CAP_MEMORY_ATTRIBUTES) ==
			KVM_MEMORY_ATTRIBUTE_PRIVATE, "per-VM attributes on the VM");
	gmem_fd = gm_ioctl(vm_fd, KVM_CREATE_GUEST_MEMFD, &c);
	REQUIRE(gmem_fd >= 0, "KVM_CREATE_GUEST_MEMFD: %s", strerror(errno));
	host_mem = mmap(NULL, MEM_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	REQUIRE(host_mem != MAP_FAILED, "the VMM's memory");
	REQUIRE(gm_ioctl(vm_fd, KVM_ENABLE_CAP, &cap) == 0, "MAP_GPA_RANGE exits");
	/* Slot 0: the owners' regions and B; slot 1: C. */
	REQUIRE(set_slot(0, 0, REGION_C * REGION_PAGES) == 0, "slot 0");
	REQUIRE(set_slot(1, REGION_C, REGION_PAGES) == 0, "slot 1");
	setup_memory();

	for (int i = 0; i <= RACER; i++) {
		gm_guest_fn fn = i == READER ? guest_reader : i == RACER ? guest_racer : guest_owner;

		runners[i] = (struct runner){ .id = i };
		runners[i].vcpu = new_vcpu(i, fn, (void *)(uintptr_t)i, &runners[i].run);
	}
	for (int i = 0; i <= RACER; i++)
		REQUIRE(pthread_create(&threads[i], NULL, vcpu_thread, &runners[i]) == 0, "thread");
	REQUIRE(pthread_create(&conv_thread, NULL, converter_thread, &converter) == 0, "thread");
	REQUIRE(pthread_create(&slot_thr, NULL, slot_thread, &slotter) == 0, "thread");
	for (int i = 0; i <= READER; i++)
		pthread_join(threads[i], NULL);
	atomic_store(&owners_done, true);
	pthread_join(threads[RACER], NULL);
	atomic_store(&stop, true);
	pthread_join(conv_thread, NULL);
	pthread_join(slot_thr, NULL);

	for (int i = 0; i < NR_OWNERS; i++) {
		CHECK(!runners[i].failure[0], "owner %d: %s", i, runners[i].failure);
		CHECK(runners[i].conversions == 2 * ROUNDS, "owner %d: %llu MAP_GPA_RANGE conversions", i,
		      (unsigned long long)runners[i].conversions);
		CHECK(runners[i].faults == 2 * ROUNDS, "owner %d: %llu memory faults resolved", i,
		      (unsigned long long)runners[i].faults);
		/* Each read the guest checked, it checked exactly (a wrong value aborts it). */
		check_add_passed(runners[i].reads);
		owner_faults += runners[i].faults;
	}
	struct runner *rd = &runners[READER];
	CHECK(!runners[RACER].failure[0], "racer: %s", runners[RACER].failure);
	CHECK(runners[RACER].reads > 0, "the racer never read");
	CHECK(!rd->failure[0], "reader: %s", rd->failure);
	CHECK(rd->reads >= 2 * READER_PASSES * REGION_PAGES, "reader: %llu reads",
	      (unsigned long long)rd->reads);
	CHECK(rd->mmio_exits > 0, "the reader never met C without its slot");
	check_add_passed(rd->reads);
	CHECK(rd->guest_mmio == rd->mmio_exits, "reader: %llu MMIO reads, %llu MMIO exits",
	      (unsigned long long)rd->guest_mmio, (unsigned long long)rd->mmio_exits);
	CHECK(!converter.failure[0], "%s", converter.failure);
	CHECK(converter.conversions >= MIN_B_CONVERSIONS, "the converter ran %llu times",
	      (unsigned long long)converter.conversions);
	CHECK(!slotter.failure[0], "%s", slotter.failure);
	CHECK(slotter.conversions >= MIN_C_SLOT_CYCLES, "the slot thread ran %llu times",
	      (unsigned long long)slotter.conversions);
	printf("vm_attrs: %llu owner faults resolved, %llu B conversions, %llu C slot cycles, "
	       "reader: %llu reads, %llu MMIO, %llu faults retried\n",
	       (unsigned long long)owner_faults, (unsigned long long)converter.conversions,
	       (unsigned long long)slotter.conversions, (unsigned long long)rd->reads,
	       (unsigned long long)rd->mmio_exits, (unsigned long long)rd->retried_faults);
	for (int i = 0; i <= RACER; i++) {
		gm_munmap(runners[i].run, 3 * PAGE);
		gm_close(runners[i].vcpu);
	}
	gm_close(gmem_fd);
	gm_close(vm_fd);
	gm_close(kvm);
	munmap(host_mem, MEM_SIZE);
	return check_summary("vm_attrs");
}
