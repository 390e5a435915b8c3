/*
 * gmem-stress: vCPUs writing and reading, a converter, a puncher, a slot
 * cycler and a host prober, all at once on one VM, every access judged
 * against the page histories (history.c) as it completes.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <linux/falloc.h>
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <gmem/gmem.h>

#include "gmem.h"
#include "guest/guest_image.h"
#include "guest/layout.h"
#include "guest/stress.h"
#include "harness/hugepage_pool.h"
#include "harness/skip_report.h"
#include "history.h"
#include "tools/x86_boot.h"

#define PAGE 4096UL
#define SYS_SIZE (4UL << 20)
#define NR_FILES 2
#define FILE_SIZE (16UL << 20)
#define SLOT_SIZE (4UL << 20)
#define SLOTS_PER_FILE (FILE_SIZE / SLOT_SIZE)
#define NR_DATA_SLOTS (NR_FILES * SLOTS_PER_FILE)
#define PAGES_PER_FILE (FILE_SIZE / PAGE)
#define NR_PAGES (NR_FILES * PAGES_PER_FILE)
#define MAX_VCPUS 8

struct data_file {
	int fd;
	uint64_t folio;       /* bytes */
	uint64_t first_page;  /* global index of the file's page 0 */
	char *map;            /* the VMM's gm_mmap of the whole file */
	unsigned char *store; /* the backing store, mapped only to ask mincore(2) */
	uint8_t *private;     /* the attributes, one byte a page, under attr_lock */
	uint32_t backing;     /* enum gm_backing_kind */
	bool ever_split;      /* hugetlbfs: a conversion split a folio, so the split store exists */
	/* mincore(2) tells what the store holds (not on hugetlbfs, nor with shmem THP) */
	bool residency;
};

/* Figures: what was done and what was checked. */
struct figures {
	_Atomic uint64_t writes, write_pages, reads, read_pages;
	_Atomic uint64_t conversions, converted_pages, fault_conversions, pin_refusals;
	_Atomic uint64_t punches, punched_bytes, returned_bytes, allocations;
	_Atomic uint64_t slot_cycles, probes, probe_sigbus, probe_writes, new_mappings;
	_Atomic uint64_t memory_faults, mmio_exits, disturbed;
	_Atomic uint64_t word_checks, attr_checks, residency_checks, accounting_checks;
	_Atomic uint64_t slot_checks, final_checks, unknown;
};

struct stress {
	const char *backend;
	bool kvm;
	int kvm_fd, vm_fd, sys_fd;
	char *sys_map;
	struct data_file files[NR_FILES];
	struct page_history hist[NR_PAGES];
	/* Accesses begun and ended per folio (indexed by the folio's first page): punch checks. */
	_Atomic uint32_t unit_starts[NR_PAGES], unit_ends[NR_PAGES];
	/*
	 * unit_starts when a check last saw the folio gone with nothing touching
	 * it: while unit_starts still says so, it must stay gone.
	 */
	_Atomic uint32_t unit_clean[NR_PAGES];
	/*
	 * Per data slot, the slot cycler's phase: it adds one before deleting,
	 * after deleting, before re-adding and after re-adding, so gen % 4 is
	 * 0 while bound and 2 while surely deleted.
	 */
	_Atomic uint32_t slot_gen[NR_DATA_SLOTS];
	/* Conversions are serialized, so the attribute model is exact under it. */
	pthread_mutex_t attr_lock;
	_Atomic uint64_t next_write_id;
	_Atomic bool stop;
	unsigned nr_vcpus;
	uint64_t seed;
	struct figures fig;
};

struct vcpu_ctx {
	struct stress *st;
	unsigned id;
	int fd;
	struct kvm_run *run;
	uint64_t *mailbox;
	uint64_t rng;
};

struct command {
	int op;
	unsigned slot, slot_gen, access;
	uint64_t gpa, first_page, pages, start, end;
	bool disturbed;
};

static void pool_restore(void);
static const char *current_backend = "";
static uint64_t current_seed;

/* ---- reporting ------------------------------------------------------------------------- */

static void __attribute__((noreturn)) report_and_exit(const char *what, const char *fmt,
							va_list ap)
{
	fprintf(stderr, "gmem-stress: %s (%s backend, seed %" PRIu64 "): ", what, current_backend,
		current_seed);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	fflush(NULL);
	pool_restore();
	_exit(1);
}

static void __attribute__((noreturn, format(printf, 1, 2))) violation(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	report_and_exit("VIOLATION", fmt, ap);
}

/* Something the test needs failed: not a finding about the library's invariants, but a failure. */
static void __attribute__((noreturn, format(printf, 1, 2))) fatal(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	report_and_exit("error", fmt, ap);
}

static void judge(struct stress *st, enum verdict v, const char *what, uint64_t page,
		  const char *why)
{
	if (v == VERDICT_UNKNOWN)
		atomic_fetch_add(&st->fig.unknown, 1);
	if (v == VERDICT_BAD)
		violation("%s: page %" PRIu64 " (file %" PRIu64 ", offset %#" PRIx64 ") %s", what,
			  page, page / PAGES_PER_FILE, (page % PAGES_PER_FILE) * PAGE, why);
}

/* ---- small helpers ------------------------------------------------------------------- */

static uint64_t rnd(uint64_t *s)
{
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 0x2545f4914f6cdd1dUL;
}

/* A thread's own nonzero xorshift state from the run's seed (splitmix64). */
static uint64_t seed_for(uint64_t seed, uint64_t thread)
{
	uint64_t z = seed + (thread + 1) * 0x9e3779b97f4a7c15UL;

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9UL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebUL;
	z ^= z >> 31;
	return z ? z : 1;
}

static uint64_t rnd_below(uint64_t *s, uint64_t n)
{
	return rnd(s) % n;
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static struct data_file *file_of(struct stress *st, uint64_t page)
{
	return &st->files[page / PAGES_PER_FILE];
}

/* The folio holding a page, named by its first page: the unit memory is allocated in. */
static uint64_t unit_of(struct stress *st, uint64_t page)
{
	uint64_t per = file_of(st, page)->folio / PAGE;

	return page - page % per;
}

static void units_begin(struct stress *st, uint64_t first, uint64_t pages)
{
	for (uint64_t p = first; p < first + pages; p++)
		atomic_fetch_add(&st->unit_starts[unit_of(st, p)], 1);
}

static void units_end(struct stress *st, uint64_t first, uint64_t pages)
{
	for (uint64_t p = first; p < first + pages; p++)
		atomic_fetch_add(&st->unit_ends[unit_of(st, p)], 1);
}

static unsigned resident_pages(struct data_file *f, uint64_t off, uint64_t len, unsigned char *vec)
{
	unsigned n = 0;

	if (mincore(f->store + off, len, vec))
		fatal("mincore: %s", strerror(errno));
	for (uint64_t i = 0; i < len / PAGE; i++)
		n += vec[i] & 1;
	return n;
}

static uint64_t shared_bytes_of(int fd)
{
	struct gm_gmem_info info;
	int err = gm_gmem_info(fd, &info);

	if (err)
		fatal("gm_gmem_info: %s", strerror(-err));
	return info.shared_bytes;
}

/* ---- host accesses through the VMM's mapping, which raise SIGBUS on private pages ----- */

static __thread sigjmp_buf *probe_jmp;

static void on_sigbus(int sig)
{
	if (probe_jmp)
		siglongjmp(*probe_jmp, 1);
	signal(sig, SIG_DFL);
	raise(sig);
}

/* Reads (or writes, when value is nonzero) one word; true when the access raised SIGBUS. */
static bool host_access(volatile uint64_t *addr, uint64_t value, uint64_t *seen)
{
	sigjmp_buf jmp;
	volatile bool faulted = false;

	probe_jmp = &jmp;
	if (sigsetjmp(jmp, 1) == 0) {
		if (value)
			*addr = value;
		else
			*seen = *addr;
	} else {
		faulted = true;
	}
	probe_jmp = NULL;
	return faulted;
}

/* ---- conversions --------------------------------------------------------------------- */

static int set_attributes(struct data_file *f, uint64_t off, uint64_t len, bool private,
			  uint64_t *error_offset)
{
	struct kvm_memory_attributes2 a = {
		.offset = off, .size = len,
		.attributes = private ? KVM_MEMORY_ATTRIBUTE_PRIVATE : 0,
	};
	int ret = gm_ioctl(f->fd, KVM_SET_MEMORY_ATTRIBUTES2, &a) ? errno : 0;

	if (error_offset)
		*error_offset = a.error_offset;
	return ret;
}

static uint64_t model_shared_bytes(struct data_file *f)
{
	uint64_t n = 0;

	for (uint64_t p = 0; p < PAGES_PER_FILE; p++)
		n += !f->private[p];
	return n * PAGE;
}

/* Converts [off, off + len) of f, recorded in the histories; attr_lock held. */
static void convert_locked(struct stress *st, struct data_file *f, uint64_t off, uint64_t len,
			   bool private)
{
	uint64_t first = f->first_page + off / PAGE, pages = len / PAGE, start, end;
	struct gm_gmem_info info;
	/* hugetlbfs: the folios the range touches may be copied whole, hidden meanwhile. */
	uint64_t hide_from = f->backing == GM_BACKING_HUGETLB ? off - off % f->folio : off;
	uint64_t hide_to = f->backing == GM_BACKING_HUGETLB ? (off + len + f->folio - 1) / f->folio * f->folio
							   : off;
	int err;

	start = history_tick();
	for (uint64_t o = hide_from; o < hide_to; o += PAGE)
		history_open(&st->hist[f->first_page + o / PAGE], EVENT_HIDDEN, 0, start);
	for (uint64_t p = first; p < first + pages; p++)
		history_open(&st->hist[p], private ? EVENT_TO_PRIVATE : EVENT_TO_SHARED, 0, start);
	err = set_attributes(f, off, len, private, NULL);
	end = history_tick();
	if (err)
		violation("KVM_SET_MEMORY_ATTRIBUTES2 [%#" PRIx64 ", +%#" PRIx64 ") to %s: %s", off,
			  len, private ? "private" : "shared", strerror(err));
	for (uint64_t p = first; p < first + pages; p++)
		history_close(&st->hist[p], start, end, false);
	for (uint64_t o = hide_from; o < hide_to; o += PAGE)
		history_close(&st->hist[f->first_page + o / PAGE], start, end, false);
	memset(f->private + off / PAGE, private, pages);
	atomic_fetch_add(&st->fig.conversions, 1);
	atomic_fetch_add(&st->fig.converted_pages, pages);
	/* Only conversions change the attributes, and they all happen under attr_lock. */
	if (gm_gmem_info(f->fd, &info))
		fatal("gm_gmem_info failed");
	if (info.shared_bytes != model_shared_bytes(f))
		violation("after a conversion of [%#" PRIx64 ", +%#" PRIx64 "): shared_bytes %" PRIu64
			  ", expected %" PRIu64, off, len, info.shared_bytes, model_shared_bytes(f));
	f->ever_split |= info.split_folios > 0;
	atomic_fetch_add(&st->fig.accounting_checks, 1);
}

/*
 * A pinned shared page must make a conversion to private of a range holding
 * it fail with EAGAIN at its offset, and change nothing; attr_lock held.
 */
static void check_pin_refusal(struct stress *st, struct data_file *f, uint64_t off, uint64_t len)
{
	uint64_t pinned = UINT64_MAX, error_offset = 0, shared = shared_bytes_of(f->fd);
	uint64_t first = f->first_page;
	int err;

	for (uint64_t o = off; o < off + len; o += PAGE)
		if (!f->private[o / PAGE]) {
			pinned = o;
			break;
		}
	if (pinned == UINT64_MAX)
		return;
	/* Pinning allocates the page: an access for the punch checks. */
	units_begin(st, first + pinned / PAGE, 1);
	err = -gm_gmem_pin(f->fd, pinned, PAGE, NULL);
	if (err)
		violation("gm_gmem_pin of shared page %#" PRIx64 ": %s", pinned, strerror(err));
	err = set_attributes(f, off, len, true, &error_offset);
	if (err != EAGAIN || error_offset != pinned)
		violation("conversion to private over a pinned page at %#" PRIx64 ": %s, error_offset "
			  "%#" PRIx64 " (expected EAGAIN at the pinned page)", pinned,
			  err ? strerror(err) : "succeeded", error_offset);
	if (shared_bytes_of(f->fd) != shared)
		violation("a refused conversion changed shared_bytes");
	err = -gm_gmem_unpin(f->fd, pinned, PAGE);
	units_end(st, first + pinned / PAGE, 1);
	if (err)
		violation("gm_gmem_unpin: %s", strerror(err));
	atomic_fetch_add(&st->fig.pin_refusals, 1);
	atomic_fetch_add(&st->fig.accounting_checks, 1);
}

/* A private page cannot be pinned for DMA: EFAULT, and nothing changes; attr_lock held. */
static void check_private_pin(struct stress *st, struct data_file *f, uint64_t off, uint64_t len)
{
	uint64_t shared = shared_bytes_of(f->fd);
	int err;

	for (uint64_t o = off; o < off + len; o += PAGE) {
		if (!f->private[o / PAGE])
			continue;
		err = -gm_gmem_pin(f->fd, o, PAGE, NULL);
		if (err != EFAULT)
			violation("gm_gmem_pin of private page %#" PRIx64 ": %s (expected EFAULT)", o,
				  err ? strerror(err) : "pinned");
		if (shared_bytes_of(f->fd) != shared)
			violation("a refused pin changed shared_bytes");
		atomic_fetch_add(&st->fig.pin_refusals, 1);
		atomic_fetch_add(&st->fig.accounting_checks, 1);
		return;
	}
}

static void *converter_thread(void *arg)
{
	struct stress *st = arg;
	uint64_t rng = seed_for(st->seed, 1);

	while (!atomic_load(&st->stop)) {
		struct data_file *f = &st->files[rnd_below(&rng, NR_FILES)];
		uint64_t pages = rnd_below(&rng, 4) ? 1 + rnd_below(&rng, 16) : 512;
		uint64_t off = rnd_below(&rng, PAGES_PER_FILE - pages + 1) * PAGE;
		bool private = rnd_below(&rng, 2);

		/* Half the 2 MiB conversions cover whole folios: merges and 2M leaves. */
		if (pages == 512 && rnd_below(&rng, 2))
			off -= off % (2UL << 20);
		pthread_mutex_lock(&st->attr_lock);
		if (!rnd_below(&rng, 8))
			check_pin_refusal(st, f, off, pages * PAGE);
		if (!rnd_below(&rng, 8))
			check_private_pin(st, f, off, pages * PAGE);
		convert_locked(st, f, off, pages * PAGE, private);
		pthread_mutex_unlock(&st->attr_lock);
		usleep(rnd_below(&rng, 200));
	}
	return NULL;
}

/* ---- punch-hole and allocation ------------------------------------------------------- */

/*
 * fallocate's pages are allocated but not yet cleared, which mincore(2)
 * does not count, so the puncher checks what it frees, not this.
 */
static void allocate(struct stress *st, struct data_file *f, uint64_t off, uint64_t len)
{
	uint64_t first = f->first_page + off / PAGE;

	units_begin(st, first, len / PAGE);
	if (gm_fallocate(f->fd, FALLOC_FL_KEEP_SIZE, (off_t)off, (off_t)len))
		violation("fallocate [%#" PRIx64 ", +%#" PRIx64 "): %s", off, len, strerror(errno));
	units_end(st, first, len / PAGE);
	atomic_fetch_add(&st->fig.allocations, 1);
}

#define MAX_PUNCH_PAGES 1024

/* Folios left alone since a check saw them gone must still be gone. */
static void check_clean(struct stress *st, struct data_file *f, uint64_t off, uint64_t len,
			const unsigned char *vec, const char *when)
{
	uint64_t first = f->first_page + off / PAGE, per = f->folio / PAGE;

	for (uint64_t u = 0; u < len / PAGE / per; u++) {
		uint64_t unit = first + u * per;

		if (atomic_load(&st->unit_clean[unit]) != atomic_load(&st->unit_starts[unit]))
			continue;
		for (uint64_t i = 0; i < per; i++)
			if (vec[u * per + i] & 1)
				violation("page at offset %#" PRIx64 " is in memory %s, though nothing "
					  "touched it since it was seen gone", off + (u * per + i) * PAGE,
					  when);
		atomic_fetch_add(&st->fig.residency_checks, 1);
	}
}

static void punch(struct stress *st, struct data_file *f, uint64_t off, uint64_t len,
		  unsigned char *vec)
{
	uint64_t first = f->first_page + off / PAGE, pages = len / PAGE, per = f->folio / PAGE;
	uint32_t starts[MAX_PUNCH_PAGES];
	bool quiet_unit[MAX_PUNCH_PAGES];
	uint64_t start, end, resident_before = 0;

	if (pages > MAX_PUNCH_PAGES)
		fatal("a punch of %" PRIu64 " pages: more than the checks hold", pages);
	/* A folio nothing touches from before the punch until after the check must be freed. */
	for (uint64_t u = 0; u < pages / per; u++) {
		uint64_t unit = first + u * per;
		uint32_t ends = atomic_load(&st->unit_ends[unit]);

		starts[u] = atomic_load(&st->unit_starts[unit]);
		quiet_unit[u] = starts[u] == ends;
	}
	if (f->residency) {
		resident_pages(f, off, len, vec);
		check_clean(st, f, off, len, vec, "before a punch-hole");
		for (uint64_t u = 0; u < pages / per; u++)
			for (uint64_t i = 0; quiet_unit[u] && i < per; i++)
				resident_before += vec[u * per + i] & 1;
	}
	start = history_tick();
	for (uint64_t p = first; p < first + pages; p++)
		history_open(&st->hist[p], EVENT_PUNCH, 0, start);
	if (gm_fallocate(f->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off, (off_t)len))
		violation("punch-hole [%#" PRIx64 ", +%#" PRIx64 "): %s", off, len, strerror(errno));
	end = history_tick();
	for (uint64_t p = first; p < first + pages; p++)
		history_close(&st->hist[p], start, end, false);
	atomic_fetch_add(&st->fig.punches, 1);
	atomic_fetch_add(&st->fig.punched_bytes, len);
	if (!f->residency)
		return;
	resident_pages(f, off, len, vec);
	for (uint64_t u = 0; u < pages / per; u++) {
		uint64_t unit = first + u * per;

		if (!quiet_unit[u] || atomic_load(&st->unit_starts[unit]) != starts[u])
			continue;
		for (uint64_t i = 0; i < per; i++)
			if (vec[u * per + i] & 1)
				violation("page at offset %#" PRIx64 " is still in memory after "
					  "punch-hole [%#" PRIx64 ", +%#" PRIx64 ") returned, and "
					  "nothing touched it since", off + (u * per + i) * PAGE,
					  off, len);
		atomic_store(&st->unit_clean[unit], starts[u]);
		atomic_fetch_add(&st->fig.residency_checks, 1);
	}
	atomic_fetch_add(&st->fig.returned_bytes, resident_before * PAGE);
}

static void *puncher_thread(void *arg)
{
	struct stress *st = arg;
	uint64_t rng = seed_for(st->seed, 2);
	unsigned char vec[MAX_PUNCH_PAGES];

	while (!atomic_load(&st->stop)) {
		struct data_file *f = &st->files[rnd_below(&rng, NR_FILES)];
		uint64_t folios = FILE_SIZE / f->folio;
		uint64_t n = f->folio == PAGE ? 1 + rnd_below(&rng, 64) : 1 + rnd_below(&rng, 2);
		uint64_t off = rnd_below(&rng, folios - n + 1) * f->folio;

		if (rnd_below(&rng, 4))
			punch(st, f, off, n * f->folio, vec);
		else
			allocate(st, f, off, n * f->folio);
		usleep(200 + rnd_below(&rng, 800));
	}
	return NULL;
}

/* ---- memslots ------------------------------------------------------------------------ */

static int set_slot(struct stress *st, unsigned slot, uint64_t size)
{
	struct data_file *f = &st->files[slot / SLOTS_PER_FILE];
	struct kvm_userspace_memory_region2 r = {
		.slot = 1 + slot, .flags = KVM_MEM_GUEST_MEMFD,
		.guest_phys_addr = STRESS_DATA_GPA + slot * SLOT_SIZE, .memory_size = size,
		.guest_memfd = (uint32_t)f->fd, .guest_memfd_offset = (slot % SLOTS_PER_FILE) * SLOT_SIZE,
	};

	return gm_ioctl(st->vm_fd, KVM_SET_USER_MEMORY_REGION2, &r) ? errno : 0;
}

static void *slot_thread(void *arg)
{
	struct stress *st = arg;
	uint64_t rng = seed_for(st->seed, 3);
	int err;

	while (!atomic_load(&st->stop)) {
		unsigned slot = (unsigned)rnd_below(&rng, NR_DATA_SLOTS);

		atomic_fetch_add(&st->slot_gen[slot], 1);
		if ((err = set_slot(st, slot, 0)))
			violation("deleting slot %u: %s", 1 + slot, strerror(err));
		atomic_fetch_add(&st->slot_gen[slot], 1);
		usleep(rnd_below(&rng, 500));
		atomic_fetch_add(&st->slot_gen[slot], 1);
		if ((err = set_slot(st, slot, SLOT_SIZE)))
			violation("re-adding slot %u: %s", 1 + slot, strerror(err));
		atomic_fetch_add(&st->slot_gen[slot], 1);
		atomic_fetch_add(&st->fig.slot_cycles, 1);
		usleep(500 + rnd_below(&rng, 2000));
	}
	return NULL;
}

/* ---- the host prober: the VMM's own reads and writes of guest memory ----------------- */

/* What may explain a SIGBUS on a shared page: the huge page pool, the file's split folios. */
static void describe_sigbus(struct data_file *f, char *why, size_t n)
{
	FILE *meminfo = fopen("/proc/meminfo", "r");
	long total = -1, free_pages = -1, rsvd = -1, surp = -1;
	struct gm_gmem_info info = { 0 };
	char line[128];
	size_t len = strlen(why);

	while (meminfo && fgets(line, sizeof(line), meminfo)) {
		sscanf(line, "HugePages_Total: %ld", &total);
		sscanf(line, "HugePages_Free: %ld", &free_pages);
		sscanf(line, "HugePages_Rsvd: %ld", &rsvd);
		sscanf(line, "HugePages_Surp: %ld", &surp);
	}
	if (meminfo)
		fclose(meminfo);
	gm_gmem_info(f->fd, &info);
	snprintf(why + len, n - len, "; the file is on %s with %" PRIu64 " split folios and %"
		 PRIu64 " bytes allocated; huge pages total %ld, free %ld, reserved %ld, surplus %ld",
		 info.backing == GM_BACKING_HUGETLB ? "hugetlbfs" : "a memfd or the host",
		 info.split_folios, info.allocated_bytes, total, free_pages, rsvd, surp);
}

/* Reads one word of a page, or writes all of them, as the VMM would through a mapping of it. */
static void probe(struct stress *st, uint64_t page, char *at, unsigned word, bool write)
{
	volatile uint64_t *base = (volatile uint64_t *)at;
	uint64_t id = 0, seen = 0, start, end;
	char why[512];
	bool faulted = false;
	enum verdict verdict;

	units_begin(st, page, 1);
	start = history_tick();
	if (write) {
		id = atomic_fetch_add(&st->next_write_id, 1);
		history_open(&st->hist[page], EVENT_WRITE, id, start);
		for (unsigned w = 0; w < STRESS_WORDS_PER_PAGE && !faulted; w++)
			faulted = host_access(base + w * STRESS_WORD_STRIDE / 8,
					      stress_value(id, page, w), &seen);
	} else {
		faulted = host_access(base + word * STRESS_WORD_STRIDE / 8, 0, &seen);
	}
	end = history_tick();
	units_end(st, page, 1);
	if (write)
		history_close(&st->hist[page], start, end, faulted);
	atomic_fetch_add(&st->fig.probes, 1);
	atomic_fetch_add(&st->fig.probe_sigbus, faulted);
	atomic_fetch_add(&st->fig.probe_writes, write && !faulted);
	/* SIGBUS exactly when private: no host mapping gives access to a private page. */
	verdict = history_could_be(&st->hist[page], faulted, start, end, why, sizeof(why));
	if (verdict == VERDICT_BAD && faulted)
		describe_sigbus(file_of(st, page), why, sizeof(why));
	judge(st, verdict,
	      faulted ? "the VMM's access raised SIGBUS, but the page"
		      : "the VMM's access through its mapping succeeded, but the page",
	      page, why);
	atomic_fetch_add(&st->fig.attr_checks, 1);
	if (!faulted && !write) {
		judge(st, history_check_word(&st->hist[page], page, word, seen, start, end, why,
					     sizeof(why)),
		      "the VMM's read", page, why);
		atomic_fetch_add(&st->fig.word_checks, 1);
	}
}

/*
 * A mapping made now, over a range whose pages are of both kinds, probed,
 * sometimes cut in two by a partial munmap, probed again, then unmapped.
 */
static void probe_new_mapping(struct stress *st, uint64_t *rng)
{
	struct data_file *f = &st->files[rnd_below(rng, NR_FILES)];
	uint64_t folios = FILE_SIZE / f->folio;
	uint64_t n = f->folio == PAGE ? 2 + rnd_below(rng, 63) : 1;
	uint64_t off = rnd_below(rng, folios - n + 1) * f->folio, len = n * f->folio, cut = 0;
	char *map = gm_mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, f->fd, (off_t)off);

	if (map == MAP_FAILED)
		violation("gm_mmap of [%#" PRIx64 ", +%#" PRIx64 "): %s", off, len, strerror(errno));
	atomic_fetch_add(&st->fig.new_mappings, 1);
	for (int i = 0; i < 8; i++) {
		uint64_t p = rnd_below(rng, len / PAGE);

		probe(st, f->first_page + off / PAGE + p, map + p * PAGE,
		      (unsigned)rnd_below(rng, STRESS_WORDS_PER_PAGE), !rnd_below(rng, 4));
	}
	/* 4 KiB folios: the front goes first, the rest must still work. */
	if (f->folio == PAGE) {
		cut = (1 + rnd_below(rng, n - 1)) * PAGE;
		if (gm_munmap(map, cut))
			violation("gm_munmap of the front of a mapping: %s", strerror(errno));
		for (int i = 0; i < 4; i++) {
			uint64_t p = cut / PAGE + rnd_below(rng, (len - cut) / PAGE);

			probe(st, f->first_page + off / PAGE + p, map + p * PAGE,
			      (unsigned)rnd_below(rng, STRESS_WORDS_PER_PAGE), false);
		}
	}
	if (gm_munmap(map + cut, len - cut))
		violation("gm_munmap of a mapping: %s", strerror(errno));
}

static void *prober_thread(void *arg)
{
	struct stress *st = arg;
	uint64_t rng = seed_for(st->seed, 4);

	while (!atomic_load(&st->stop)) {
		uint64_t page = rnd_below(&rng, NR_PAGES);
		struct data_file *f = file_of(st, page);

		probe(st, page, f->map + (page % PAGES_PER_FILE) * PAGE,
		      (unsigned)rnd_below(&rng, STRESS_WORDS_PER_PAGE), !rnd_below(&rng, 4));
		if (!rnd_below(&rng, 256))
			probe_new_mapping(st, &rng);
		if (!rnd_below(&rng, 16))
			usleep(50);
	}
	return NULL;
}

/* ---- vCPUs --------------------------------------------------------------------------- */

static bool slot_disturbed(struct stress *st, const struct command *c)
{
	uint32_t gen = atomic_load(&st->slot_gen[c->slot]);

	return gen != c->slot_gen || gen % 4;
}

static bool in_command(const struct command *c, uint64_t gpa)
{
	return c && gpa >= c->gpa && gpa < c->gpa + c->pages * PAGE;
}

static void handle_mmio(struct vcpu_ctx *v, struct command *c)
{
	struct stress *st = v->st;
	uint64_t gpa = v->run->mmio.phys_addr;

	if (!in_command(c, gpa))
		violation("vCPU %u: MMIO exit at gpa %#" PRIx64 ", outside the pages it was asked "
			  "to access", v->id, gpa);
	/* Only a slot that went away during the command leaves its gpa without memory. */
	if (!slot_disturbed(st, c))
		violation("vCPU %u: MMIO exit at gpa %#" PRIx64 " though slot %u stayed bound", v->id,
			  gpa, 1 + c->slot);
	c->disturbed = true;
	if (!v->run->mmio.is_write)
		memset(v->run->mmio.data, 0, sizeof(v->run->mmio.data));
	atomic_fetch_add(&st->fig.mmio_exits, 1);
}

static void handle_memory_fault(struct vcpu_ctx *v, struct command *c)
{
	struct stress *st = v->st;
	uint64_t gpa = v->run->memory_fault.gpa & ~(PAGE - 1), page;
	bool private = v->run->memory_fault.flags & KVM_MEMORY_EXIT_FLAG_PRIVATE;
	struct data_file *f;
	char why[256];

	if (!in_command(c, gpa))
		violation("vCPU %u: memory fault at gpa %#" PRIx64 ", outside its pages", v->id, gpa);
	atomic_fetch_add(&st->fig.memory_faults, 1);
	page = (gpa - STRESS_DATA_GPA) / PAGE;
	if (slot_disturbed(st, c)) {
		/* A private access to a gpa without a slot faults: wait for the slot. */
		while (atomic_load(&st->slot_gen[c->slot]) % 4)
			sched_yield();
		c->slot_gen = atomic_load(&st->slot_gen[c->slot]);
		return;
	}
	judge(st, history_could_be(&st->hist[page], !private, c->start, history_tick(), why,
				   sizeof(why)),
	      private ? "a private access faulted, but the page"
		      : "a shared access faulted, but the page", page, why);
	atomic_fetch_add(&st->fig.attr_checks, 1);
	if (c->access == GM_ACCESS_AUTO)
		return; /* the guest asks again as the attribute now says */
	/* As a VMM does: give the guest the kind it asked for. */
	f = file_of(st, page);
	pthread_mutex_lock(&st->attr_lock);
	convert_locked(st, f, (page % PAGES_PER_FILE) * PAGE, PAGE, private);
	pthread_mutex_unlock(&st->attr_lock);
	atomic_fetch_add(&st->fig.fault_conversions, 1);
}

static uint64_t ucall_cmd(struct vcpu_ctx *v)
{
	if (v->st->kvm) {
		struct kvm_regs regs;

		if (gm_ioctl(v->fd, KVM_GET_REGS, &regs))
			fatal("KVM_GET_REGS: %s", strerror(errno));
		return regs.rdi;
	} else {
		struct gm_ucall uc;
		int err = gm_vcpu_get_ucall(v->fd, &uc);

		if (err)
			fatal("gm_vcpu_get_ucall: %s", strerror(-err));
		if (uc.cmd == GM_UCALL_ABORT)
			violation("vCPU %u: the guest failed: %s", v->id, uc.msg);
		return uc.cmd;
	}
}

/* Runs the guest until it asks for its next command (or, for quit, halts). */
static void run_guest(struct vcpu_ctx *v, struct command *c, bool until_halt)
{
	for (;;) {
		int ret;

		/* A stale exit reason must never pass for this run's. */
		v->run->exit_reason = KVM_EXIT_UNKNOWN;
		ret = gm_ioctl(v->fd, KVM_RUN, 0);
		if (ret && (errno != EFAULT || v->run->exit_reason != KVM_EXIT_MEMORY_FAULT))
			fatal("vCPU %u: KVM_RUN: %s (exit %u)", v->id, strerror(errno),
			      v->run->exit_reason);
		if (!ret && v->run->exit_reason == KVM_EXIT_MEMORY_FAULT)
			violation("vCPU %u: a memory-fault exit without EFAULT", v->id);
		switch (v->run->exit_reason) {
		case KVM_EXIT_IO:
			if (v->run->io.port != GUEST_UCALL_PORT || ucall_cmd(v) != STRESS_UCALL_NEXT)
				violation("vCPU %u: I/O exit to port %#x, not the guest's ucall", v->id,
					  v->run->io.port);
			if (until_halt)
				violation("vCPU %u: the guest asked for a command after quit", v->id);
			return;
		case KVM_EXIT_MMIO:
			handle_mmio(v, c);
			break;
		case KVM_EXIT_MEMORY_FAULT:
			handle_memory_fault(v, c);
			break;
		case KVM_EXIT_HLT:
			if (until_halt)
				return;
			violation("vCPU %u: the guest halted", v->id);
		default:
			violation("vCPU %u: unexpected exit %u", v->id, v->run->exit_reason);
		}
	}
}

static void check_read(struct vcpu_ctx *v, const struct command *c)
{
	struct stress *st = v->st;
	char why[256];

	for (uint64_t p = 0; p < c->pages; p++)
		for (unsigned w = 0; w < STRESS_WORDS_PER_PAGE; w++) {
			uint64_t page = c->first_page + p;
			uint64_t seen = v->mailbox[STRESS_MAILBOX_RESULTS + p * STRESS_WORDS_PER_PAGE + w];

			judge(st, history_check_word(&st->hist[page], page, w, seen, c->start, c->end,
						     why, sizeof(why)),
			      "a guest read", page, why);
			atomic_fetch_add(&st->fig.word_checks, 1);
		}
}

/* One command: the guest writes or reads pages of one slot, then every page is judged. */
static void command(struct vcpu_ctx *v, struct command *c)
{
	struct stress *st = v->st;
	uint64_t id0 = 0;
	char why[256];

	c->disturbed = false;
	c->slot_gen = atomic_load(&st->slot_gen[c->slot]);
	units_begin(st, c->first_page, c->pages);
	c->start = history_tick();
	if (c->op == STRESS_OP_WRITE) {
		id0 = atomic_fetch_add(&st->next_write_id, c->pages);
		for (uint64_t p = 0; p < c->pages; p++)
			history_open(&st->hist[c->first_page + p], EVENT_WRITE, id0 + p, c->start);
	}
	v->mailbox[STRESS_MAILBOX_OP] = (uint64_t)c->op;
	v->mailbox[STRESS_MAILBOX_GPA_WORD] = c->gpa;
	v->mailbox[STRESS_MAILBOX_PAGES] = c->pages;
	v->mailbox[STRESS_MAILBOX_VALUE] = stress_value(id0, c->first_page, 0);
	v->mailbox[STRESS_MAILBOX_ACCESS] = c->access;
	run_guest(v, c, false);
	c->end = history_tick();
	units_end(st, c->first_page, c->pages);
	/* A slot deleted before the command and not back after it: nothing may have gone through. */
	if (!c->disturbed && c->slot_gen % 4 == 2 && atomic_load(&st->slot_gen[c->slot]) == c->slot_gen)
		violation("vCPU %u: the guest accessed gpa %#" PRIx64 "+%" PRIu64 " pages while slot %u "
			  "was deleted, without an exit", v->id, c->gpa, c->pages, 1 + c->slot);
	atomic_fetch_add(&st->fig.slot_checks, c->slot_gen % 4 == 2);
	if (c->op == STRESS_OP_WRITE) {
		for (uint64_t p = 0; p < c->pages; p++)
			history_close(&st->hist[c->first_page + p], c->start, c->end, c->disturbed);
		atomic_fetch_add(&st->fig.writes, 1);
		atomic_fetch_add(&st->fig.write_pages, c->pages);
	} else {
		atomic_fetch_add(&st->fig.reads, 1);
		atomic_fetch_add(&st->fig.read_pages, c->pages);
		if (!c->disturbed)
			check_read(v, c);
	}
	if (c->disturbed) {
		atomic_fetch_add(&st->fig.disturbed, 1);
		return;
	}
	/* An access of one kind that went through: the page was of that kind at some point. */
	if (c->access != GM_ACCESS_AUTO)
		for (uint64_t p = 0; p < c->pages; p++) {
			uint64_t page = c->first_page + p;

			judge(st, history_could_be(&st->hist[page], c->access == GM_ACCESS_PRIVATE,
						   c->start, c->end, why, sizeof(why)),
			      c->access == GM_ACCESS_PRIVATE ? "a private guest access went through, "
							       "but the page"
							     : "a shared guest access went through, "
							       "but the page",
			      page, why);
			atomic_fetch_add(&st->fig.attr_checks, 1);
		}
}

static void random_command(struct vcpu_ctx *v, struct command *c)
{
	uint64_t slot_pages = SLOT_SIZE / PAGE, first;
	unsigned sel = (unsigned)rnd_below(&v->rng, 8);

	c->op = rnd_below(&v->rng, 5) < 2 ? STRESS_OP_WRITE : STRESS_OP_READ;
	c->slot = (unsigned)rnd_below(&v->rng, NR_DATA_SLOTS);
	c->pages = sel < 4 ? 1 : sel < 7 ? 1 + rnd_below(&v->rng, 8) : STRESS_MAX_PAGES;
	first = rnd_below(&v->rng, slot_pages - c->pages + 1);
	c->first_page = c->slot * slot_pages + first;
	c->gpa = STRESS_DATA_GPA + c->first_page * PAGE;
	c->access = GM_ACCESS_AUTO;
	/* Soft vCPUs can also ask for one kind, as a CoCo guest does with its C-bit. */
	if (!v->st->kvm && rnd_below(&v->rng, 4) == 0)
		c->access = rnd_below(&v->rng, 2) ? GM_ACCESS_PRIVATE : GM_ACCESS_SHARED;
}

static void *vcpu_thread(void *arg)
{
	struct vcpu_ctx *v = arg;
	struct command c;

	while (!atomic_load(&v->st->stop)) {
		random_command(v, &c);
		command(v, &c);
	}
	return NULL;
}

/* ---- setup and teardown -------------------------------------------------------------- */

/*
 * With shmem THP on, a memfd's pages come in 2 MiB folios that a partial
 * punch-hole zeroes but cannot free: the memory is not returned, by the host
 * kernel's choice (docs/compat.md), and mincore cannot judge punches then.
 */
static bool shmem_thp;
static char shmem_thp_setting[32] = "unknown";

static void read_shmem_thp(void)
{
	FILE *f = fopen("/sys/kernel/mm/transparent_hugepage/shmem_enabled", "r");
	char line[256], *open_bracket, *close_bracket;

	if (!f)
		return;
	if (fgets(line, sizeof(line), f) && (open_bracket = strchr(line, '[')) &&
	    (close_bracket = strchr(open_bracket, ']'))) {
		*close_bracket = 0;
		snprintf(shmem_thp_setting, sizeof(shmem_thp_setting), "%s", open_bracket + 1);
		shmem_thp = !strcmp(shmem_thp_setting, "always") ||
			    !strcmp(shmem_thp_setting, "within_size") ||
			    !strcmp(shmem_thp_setting, "force");
	}
	fclose(f);
}

/* The huge page pool, grown for the 2 MiB file and given back however the run ends. */
static long pool_saved = -1;

static void pool_restore(void)
{
	if (pool_saved >= 0)
		hugepage_pool_write(pool_saved);
	pool_saved = -1;
}

/*
 * Room for the 2 MiB file's folios, plus two; false without root. The pool is
 * the test's until it ends: shrinking it meanwhile makes faults on punched
 * huge pages raise SIGBUS.
 */
static long pool_pages;

static bool pool_grow(void)
{
	long now = geteuid() == 0 ? hugepage_pool_read() : -1;

	if (now < 0 || !hugepage_pool_write(now + FILE_SIZE / (2UL << 20) + 2))
		return false;
	pool_saved = now;
	pool_pages = hugepage_pool_read();
	return true;
}

static int create_gmem(struct stress *st, uint64_t size, uint64_t flags)
{
	struct kvm_create_guest_memfd c = { .size = size, .flags = flags };
	int fd = gm_ioctl(st->vm_fd, KVM_CREATE_GUEST_MEMFD, &c);

	if (fd < 0)
		fatal("KVM_CREATE_GUEST_MEMFD: %s", strerror(errno));
	return fd;
}

static void *map_file(int fd, uint64_t size)
{
	void *p = gm_mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);

	if (p == MAP_FAILED)
		fatal("gm_mmap: %s", strerror(errno));
	return p;
}

/* The system slot: page tables, the image and the mailboxes, shared and never touched. */
static void setup_system(struct stress *st)
{
	struct kvm_userspace_memory_region2 r = {
		.slot = 0, .flags = KVM_MEM_GUEST_MEMFD, .memory_size = SYS_SIZE,
	};

	st->sys_fd = create_gmem(st, SYS_SIZE, GUEST_MEMFD_FLAG_MMAP | GUEST_MEMFD_FLAG_INIT_SHARED);
	st->sys_map = map_file(st->sys_fd, SYS_SIZE);
	x86_build_page_tables(st->sys_map, GUEST_PAGE_TABLES_GPA, 1UL << 30);
	memcpy(st->sys_map + GUEST_IMAGE_GPA, stress_image_start,
	       (size_t)(stress_image_end - stress_image_start));
	r.guest_memfd = (uint32_t)st->sys_fd;
	if (gm_ioctl(st->vm_fd, KVM_SET_USER_MEMORY_REGION2, &r))
		fatal("binding the system slot: %s", strerror(errno));
}

static void setup_files(struct stress *st)
{
	static const uint64_t folio_flag[NR_FILES] = { GM_GUEST_MEMFD_FOLIO_4K, GM_GUEST_MEMFD_FOLIO_2M };
	static const uint64_t folio[NR_FILES] = { PAGE, 2UL << 20 };
	struct gm_gmem_info info;
	int err;

	for (unsigned i = 0; i < NR_FILES; i++) {
		struct data_file *f = &st->files[i];
		int store_fd;

		f->fd = create_gmem(st, FILE_SIZE, GUEST_MEMFD_FLAG_MMAP | GUEST_MEMFD_FLAG_INIT_SHARED |
							   folio_flag[i]);
		f->folio = folio[i];
		f->first_page = i * PAGES_PER_FILE;
		f->map = map_file(f->fd, FILE_SIZE);
		if (gm_gmem_info(f->fd, &info))
			fatal("gm_gmem_info failed");
		f->backing = info.backing;
		/* mincore(2) sees hugetlbfs pages only where they are mapped, and not through ours. */
		f->residency = f->backing == GM_BACKING_HOST_GMEM ||
			       (f->backing == GM_BACKING_MEMFD && !shmem_thp);
		store_fd = gmem_backing_fd(f->fd);
		if (store_fd < 0)
			fatal("the file's backing store: %s", strerror(-store_fd));
		f->store = f->residency ? mmap(NULL, FILE_SIZE, PROT_READ, MAP_SHARED, store_fd, 0)
					: NULL;
		if (f->store == MAP_FAILED)
			fatal("mapping the backing store for mincore: %s", strerror(errno));
		f->private = calloc(PAGES_PER_FILE, 1);
		if (!f->private)
			fatal("out of memory");
	}
	for (unsigned s = 0; s < NR_DATA_SLOTS; s++)
		if ((err = set_slot(st, s, SLOT_SIZE)))
			fatal("binding data slot %u: %s", 1 + s, strerror(err));
}

static void setup_vcpu(struct stress *st, struct vcpu_ctx *v, unsigned id)
{
	int err;

	v->st = st;
	v->id = id;
	v->rng = seed_for(st->seed, 5 + id);
	v->mailbox = (uint64_t *)(st->sys_map + STRESS_MAILBOX_GPA + id * PAGE);
	v->fd = gm_ioctl(st->vm_fd, KVM_CREATE_VCPU, id);
	if (v->fd < 0)
		fatal("KVM_CREATE_VCPU: %s", strerror(errno));
	v->run = gm_mmap(NULL, 3 * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, v->fd, 0);
	if (v->run == MAP_FAILED)
		fatal("mapping kvm_run: %s", strerror(errno));
	if (st->kvm) {
		err = x86_set_cpuid(v->fd);
		if (!err)
			err = x86_enter_long_mode(v->fd, GUEST_PAGE_TABLES_GPA, GUEST_IMAGE_GPA,
						  GUEST_STACKS_GPA + (id + 1) * GUEST_STACK_SIZE, id,
						  GUEST_BOOT_PARAMS_GPA);
	} else {
		err = gm_vcpu_set_guest(v->fd, stress_guest_soft_entry, (void *)(uintptr_t)id);
	}
	if (err)
		fatal("setting up vCPU %u: %s", id, strerror(-err));
	/* The guest starts by asking for its first command. */
	run_guest(v, NULL, false);
}

/* ---- the checks at the end, with nothing running ------------------------------------- */

/* The guests read every page, each judged against its history. */
static void read_everything(struct stress *st, struct vcpu_ctx *vcpus)
{
	uint64_t slot_pages = SLOT_SIZE / PAGE;
	struct command c;

	for (uint64_t first = 0, n = 0; first < NR_PAGES; first += c.pages, n++) {
		c = (struct command){
			.op = STRESS_OP_READ, .slot = (unsigned)(first / slot_pages),
			.first_page = first, .gpa = STRESS_DATA_GPA + first * PAGE,
			.pages = STRESS_MAX_PAGES, .access = GM_ACCESS_AUTO,
		};
		/* Commands stay inside one slot. */
		if (first + c.pages > (c.slot + 1) * slot_pages)
			c.pages = (c.slot + 1) * slot_pages - first;
		command(&vcpus[n % st->nr_vcpus], &c);
		if (c.disturbed)
			violation("the final read of pages %" PRIu64 "+%" PRIu64 " hit a missing slot",
				  first, c.pages);
		atomic_fetch_add(&st->fig.final_checks, c.pages);
	}
}

/*
 * With nothing else running: every page read by the guests and probed by the
 * VMM, the files' accounting, then every file punched whole and read back as
 * zeros.
 */
static void final_checks(struct stress *st, struct vcpu_ctx *vcpus)
{
	unsigned char vec[MAX_PUNCH_PAGES];

	read_everything(st, vcpus);
	for (uint64_t page = 0; page < NR_PAGES; page++) {
		struct data_file *f = file_of(st, page);
		uint64_t seen;
		bool faulted = host_access((volatile uint64_t *)(f->map + (page % PAGES_PER_FILE) * PAGE),
					   0, &seen);

		if (faulted != (bool)f->private[page % PAGES_PER_FILE])
			violation("at the end, page %" PRIu64 " is %s but the VMM's read %s", page,
				  f->private[page % PAGES_PER_FILE] ? "private" : "shared",
				  faulted ? "raised SIGBUS" : "went through");
		atomic_fetch_add(&st->fig.final_checks, 1);
	}
	for (unsigned i = 0; i < NR_FILES; i++) {
		struct data_file *f = &st->files[i];
		struct gm_gmem_info info;
		uint64_t resident = 0;

		if (gm_gmem_info(f->fd, &info))
			fatal("gm_gmem_info failed");
		if (info.shared_bytes != model_shared_bytes(f))
			violation("file %u: shared_bytes %" PRIu64 ", conversions made it %" PRIu64, i,
				  info.shared_bytes, model_shared_bytes(f));
		if (info.host_mappings != 1)
			violation("file %u: %u host mappings, but only the VMM's first one is left", i,
				  info.host_mappings);
		for (uint64_t off = 0; f->residency && off < FILE_SIZE; off += sizeof(vec) * PAGE) {
			resident += resident_pages(f, off, sizeof(vec) * PAGE, vec) * PAGE;
			check_clean(st, f, off, sizeof(vec) * PAGE, vec, "at the end");
		}
		/* In memory: touched pages; allocated: those and fallocate's, not yet cleared. */
		if (info.backing != GM_BACKING_HOST_GMEM && info.allocated_bytes < resident)
			violation("file %u: allocated_bytes %" PRIu64 ", but %" PRIu64 " bytes are in "
				  "memory", i, info.allocated_bytes, resident);
		atomic_fetch_add(&st->fig.final_checks, 3);
	}
	/* Punching all of it gives all of it back, and it reads zero. */
	for (unsigned i = 0; i < NR_FILES; i++) {
		struct data_file *f = &st->files[i];
		struct gm_gmem_info info;

		for (uint64_t off = 0; off < FILE_SIZE; off += sizeof(vec) * PAGE)
			punch(st, f, off, sizeof(vec) * PAGE, vec);
		if (gm_gmem_info(f->fd, &info) ||
		    (info.backing != GM_BACKING_HOST_GMEM && info.allocated_bytes))
			violation("file %u: allocated_bytes %" PRIu64 " after punching it whole", i,
				  info.allocated_bytes);
		atomic_fetch_add(&st->fig.final_checks, 1);
	}
	read_everything(st, vcpus);
}

/* ---- leaks: what the process holds before and after --------------------------------- */

struct holdings {
	unsigned fds, maps;
	uint64_t metadata;
};

static struct holdings holdings(void)
{
	struct holdings h = { 0 };
	struct gm_stats s;
	char line[512];
	struct dirent *d;
	DIR *dir = opendir("/proc/self/fd");
	FILE *maps = fopen("/proc/self/maps", "r");

	if (!dir || !maps)
		fatal("reading /proc/self: %s", strerror(errno));
	while ((d = readdir(dir)))
		h.fds += d->d_name[0] != '.';
	closedir(dir);
	/* The library's mappings: memfd stores, the host's guest_memfd, the empty overlay. */
	while (fgets(line, sizeof(line), maps))
		h.maps += strstr(line, "memfd:") || strstr(line, "kvm");
	fclose(maps);
	if (gm_stats(&s))
		fatal("gm_stats failed");
	h.metadata = s.metadata_bytes;
	if (s.vms || s.gmem_files || s.open_fds)
		h.metadata |= 1UL << 63; /* objects alive: never equal to a clean state */
	return h;
}

/* The library sets up process-wide state (its store for host mappings) at first use. */
static bool warm_up(unsigned long backend)
{
	struct kvm_create_guest_memfd c = { .size = PAGE, .flags = GUEST_MEMFD_FLAG_MMAP };
	int kvm = gm_open_kvm(), vm, gmem;
	void *p;

	vm = gm_ioctl(kvm, KVM_CREATE_VM, KVM_X86_SW_PROTECTED_VM | backend);
	if (vm < 0) {
		gm_close(kvm);
		return false;
	}
	gmem = gm_ioctl(vm, KVM_CREATE_GUEST_MEMFD, &c);
	p = gmem < 0 ? MAP_FAILED : gm_mmap(NULL, PAGE, PROT_READ, MAP_SHARED, gmem, 0);
	if (p != MAP_FAILED)
		gm_munmap(p, PAGE);
	if (gmem >= 0)
		gm_close(gmem);
	gm_close(vm);
	gm_close(kvm);
	return p != MAP_FAILED;
}

/* ---- one run on one backend ---------------------------------------------------------- */

static void print_figures(struct stress *st, double seconds)
{
	struct figures *f = &st->fig;
	uint64_t checks = f->word_checks + f->attr_checks + f->residency_checks +
			  f->accounting_checks + f->slot_checks + f->final_checks;

#define RATE(x) (double)(x) / seconds
	char pool_desc[48];
	static const char *const backing_name[] = {
		[GM_BACKING_MEMFD] = "memfd", [GM_BACKING_HUGETLB] = "hugetlbfs",
		[GM_BACKING_HOST_GMEM] = "the host's guest_memfd",
	};

	snprintf(pool_desc, sizeof(pool_desc), "%ld huge pages)", pool_pages);
	printf("gmem-stress: %s backend, %u vCPUs, %u slots, %.1f s, seed %" PRIu64 "\n",
	       st->backend, st->nr_vcpus, (unsigned)NR_DATA_SLOTS, seconds, st->seed);
	for (unsigned i = 0; i < NR_FILES; i++)
		printf("  file %u: %llu MiB, %llu KiB folios on %s%s%s; punches %s\n", i,
		       (unsigned long long)(FILE_SIZE >> 20),
		       (unsigned long long)(st->files[i].folio >> 10),
		       backing_name[st->files[i].backing],
		       st->files[i].backing == GM_BACKING_HUGETLB ? " (a pool of " : "",
		       st->files[i].backing == GM_BACKING_HUGETLB ? pool_desc : "",
		       st->files[i].residency ? "checked page by page with mincore(2)"
		       : st->files[i].backing == GM_BACKING_HUGETLB
			       ? "checked by allocated_bytes at the end (mincore cannot see hugetlbfs)"
			       : "checked at the end only (shmem THP is on: partial punches cannot free)");
	printf("  %-22s %12s %12s\n", "operations", "count", "per second");
	printf("  %-22s %12" PRIu64 " %12.0f  (%" PRIu64 " pages)\n", "guest writes", f->writes,
	       RATE(f->writes), f->write_pages);
	printf("  %-22s %12" PRIu64 " %12.0f  (%" PRIu64 " pages)\n", "guest reads", f->reads,
	       RATE(f->reads), f->read_pages);
	printf("  %-22s %12" PRIu64 " %12.0f  (%" PRIu64 " pages; %" PRIu64 " on memory faults; %"
	       PRIu64 " pins refused as they must be)\n", "conversions", f->conversions,
	       RATE(f->conversions), f->converted_pages, f->fault_conversions, f->pin_refusals);
	printf("  %-22s %12" PRIu64 " %12.0f  (%" PRIu64 " MiB; %" PRIu64 " KiB of it in memory and "
	       "left alone, seen gone after)\n", "punch-holes", f->punches, RATE(f->punches),
	       f->punched_bytes >> 20, f->returned_bytes >> 10);
	printf("  %-22s %12" PRIu64 " %12.0f\n", "allocations", f->allocations, RATE(f->allocations));
	printf("  %-22s %12" PRIu64 " %12.0f\n", "slot delete + re-add", f->slot_cycles,
	       RATE(f->slot_cycles));
	printf("  %-22s %12" PRIu64 " %12.0f  (%" PRIu64 " writes; %" PRIu64 " SIGBUS; %" PRIu64
	       " through new mappings, partly unmapped)\n", "VMM accesses", f->probes,
	       RATE(f->probes), f->probe_writes, f->probe_sigbus, f->new_mappings);
	printf("  %-22s %12" PRIu64 " %12.0f  (%" PRIu64 " MMIO exits for missing slots; %" PRIu64
	       " commands disturbed)\n", "memory-fault exits", f->memory_faults,
	       RATE(f->memory_faults), f->mmio_exits, f->disturbed);
	printf("  invariant checks %" PRIu64 ": words %" PRIu64 ", attributes %" PRIu64
	       ", residency %" PRIu64 ", accounting %" PRIu64 ", deleted slots %" PRIu64
	       ", final %" PRIu64 "; %" PRIu64 " undecidable (history aged out)\n", checks,
	       f->word_checks, f->attr_checks, f->residency_checks, f->accounting_checks,
	       f->slot_checks, f->final_checks, f->unknown);
	printf("  violations 0\n");
#undef RATE
}

static void run_backend(const char *name, unsigned long backend, unsigned nr_vcpus, double seconds,
			uint64_t seed)
{
	struct stress *st;
	struct vcpu_ctx vcpus[MAX_VCPUS];
	pthread_t threads[MAX_VCPUS], helpers[4];
	void *(*helper_fns[4])(void *) = { converter_thread, puncher_thread, slot_thread,
					   prober_thread };
	struct holdings before, running, after;
	double t0, elapsed;

	current_backend = name;
	current_seed = seed;
	if (!warm_up(backend))
		fatal("cannot create a VM on the %s backend", name);
	before = holdings();
	/* The soft backend puts the 2 MiB file on hugetlbfs when the pool has room. */
	if (backend == GM_VM_BACKEND_SOFT)
		pool_grow();
	st = calloc(1, sizeof(*st));
	if (!st)
		fatal("out of memory");
	st->backend = name;
	st->kvm = backend == GM_VM_BACKEND_KVM;
	st->nr_vcpus = nr_vcpus;
	st->seed = seed;
	st->next_write_id = 1;
	pthread_mutex_init(&st->attr_lock, NULL);
	for (unsigned p = 0; p < NR_PAGES; p++)
		history_init(&st->hist[p]);
	st->kvm_fd = gm_open_kvm();
	st->vm_fd = gm_ioctl(st->kvm_fd, KVM_CREATE_VM, KVM_X86_SW_PROTECTED_VM | backend);
	if (st->kvm_fd < 0 || st->vm_fd < 0)
		fatal("creating the VM: %s", strerror(errno));
	setup_system(st);
	setup_files(st);
	for (unsigned i = 0; i < nr_vcpus; i++)
		setup_vcpu(st, &vcpus[i], i);
	running = holdings();

	t0 = now_s();
	for (unsigned i = 0; i < nr_vcpus; i++)
		if (pthread_create(&threads[i], NULL, vcpu_thread, &vcpus[i]))
			fatal("pthread_create");
	for (unsigned i = 0; i < 4; i++)
		if (pthread_create(&helpers[i], NULL, helper_fns[i], st))
			fatal("pthread_create");
	while (now_s() - t0 < seconds)
		usleep(100 * 1000);
	atomic_store(&st->stop, true);
	for (unsigned i = 0; i < nr_vcpus; i++)
		pthread_join(threads[i], NULL);
	for (unsigned i = 0; i < 4; i++)
		pthread_join(helpers[i], NULL);
	elapsed = now_s() - t0;
	/*
	 * The same objects as before the threads ran, all shared again, so one
	 * mapping each: whatever the threads made is gone. A hugetlbfs file that
	 * ever split keeps its split store (an fd and its mapping) for its life.
	 */
	for (unsigned i = 0; i < NR_FILES; i++) {
		convert_locked(st, &st->files[i], 0, FILE_SIZE, false);
		running.fds += st->files[i].ever_split;
		running.maps += st->files[i].ever_split;
	}
	after = holdings();
	if (after.fds != running.fds || after.maps != running.maps)
		violation("leak while running: expected %u fds and %u library mappings, as after setup, "
			  "but %u and %u are open after the threads", running.fds, running.maps,
			  after.fds, after.maps);
	atomic_fetch_add(&st->fig.final_checks, 2);

	final_checks(st, vcpus);
	for (unsigned i = 0; i < nr_vcpus; i++) {
		vcpus[i].mailbox[STRESS_MAILBOX_OP] = STRESS_OP_QUIT;
		run_guest(&vcpus[i], NULL, true);
		gm_munmap(vcpus[i].run, 3 * PAGE);
		gm_close(vcpus[i].fd);
	}
	for (unsigned i = 0; i < NR_FILES; i++) {
		if (st->files[i].store)
			munmap(st->files[i].store, FILE_SIZE);
		gm_munmap(st->files[i].map, FILE_SIZE);
		gm_close(st->files[i].fd);
		free(st->files[i].private);
	}
	gm_munmap(st->sys_map, SYS_SIZE);
	gm_close(st->sys_fd);
	gm_close(st->vm_fd);
	gm_close(st->kvm_fd);
	pool_restore();
	after = holdings();
	if (after.fds != before.fds || after.maps != before.maps || after.metadata != before.metadata)
		violation("leak: before the run %u fds, %u library mappings, %" PRIu64 " metadata "
			  "bytes; after it %u, %u, %" PRIu64 "%s", before.fds, before.maps,
			  before.metadata & ~(1UL << 63), after.fds, after.maps,
			  after.metadata & ~(1UL << 63),
			  after.metadata >> 63 ? " (objects still alive)" : "");
	atomic_fetch_add(&st->fig.final_checks, 3);
	print_figures(st, elapsed);
	printf("  leaks: none (%u fds, %u library mappings, %" PRIu64 " metadata bytes, as before)\n",
	       after.fds, after.maps, after.metadata);
	for (unsigned p = 0; p < NR_PAGES; p++)
		history_destroy(&st->hist[p]);
	pthread_mutex_destroy(&st->attr_lock);
	free(st);
}

/*
 * How long each backend runs. The time is split between the backends that can run here:
 * where the kvm backend cannot, the soft one gets all of it, and the skip is reported
 * (make test's summary). Asked for the kvm backend alone where it cannot run, there is
 * nothing to do: that is a failure, not a pass.
 */
static void plan_backends(const char *backend, double seconds, double *soft, double *kvm)
{
	bool want_soft = strcmp(backend, "kvm") != 0, want_kvm = strcmp(backend, "soft") != 0;

	if (want_kvm && !warm_up(GM_VM_BACKEND_KVM)) {
		if (!want_soft) {
			fprintf(stderr, "gmem-stress: the kvm backend cannot run here (/dev/kvm is "
				"missing or refuses a VM): nothing to do\n");
			exit(1);
		}
		gm_report_skip("gmem-stress kvm backend",
			       "no VM on it here (/dev/kvm is missing or refuses); the soft backend "
			       "ran the whole %.0f s", seconds);
		want_kvm = false;
	}
	*soft = want_soft ? (want_kvm ? seconds / 2 : seconds) : 0;
	*kvm = want_kvm ? (want_soft ? seconds / 2 : seconds) : 0;
}

static void usage(FILE *out)
{
	fprintf(out,
		"usage: gmem-stress [-t SECONDS] [-b soft|kvm|both] [-c VCPUS] [-s SEED]\n"
		"Runs vCPUs, a converter, a puncher, a slot cycler and a VMM prober at once on one\n"
		"VM, checks every access against what happened to the page, and prints counts.\n"
		"Exit status: 0 when no invariant was violated, 1 at the first violation (or\n"
		"when the test cannot go on), 2 for bad arguments.\n\n"
		"  -t SECONDS  total running time, split between the backends that can run\n"
		"              (default 180; all of it on soft where kvm cannot run)\n"
		"  -b BACKEND  soft, kvm or both (default both; kvm is skipped, and the skip\n"
		"              reported, without /dev/kvm; -b kvm without it fails)\n"
		"  -c VCPUS    vCPU threads, 1 to %d (default 3)\n"
		"  -s SEED     the threads' random choices (default: the time); the\n"
		"              interleaving still differs from run to run\n", MAX_VCPUS);
}

int main(int argc, char **argv)
{
	double seconds = 180, soft_seconds, kvm_seconds;
	const char *backend = "both";
	unsigned nr_vcpus = 3;
	uint64_t seed = (uint64_t)time(NULL);
	struct sigaction sa = { .sa_handler = on_sigbus };
	int opt;

	while ((opt = getopt(argc, argv, "t:b:c:s:h")) != -1) {
		char *end;

		switch (opt) {
		case 't':
			seconds = strtod(optarg, &end);
			if (*end || !(seconds > 0) || seconds > 86400) {
				fprintf(stderr, "gmem-stress: -t wants seconds, 0 < t <= 86400\n");
				return 2;
			}
			break;
		case 'b':
			backend = optarg;
			if (strcmp(backend, "soft") && strcmp(backend, "kvm") && strcmp(backend, "both")) {
				fprintf(stderr, "gmem-stress: -b wants soft, kvm or both\n");
				return 2;
			}
			break;
		case 'c':
			nr_vcpus = (unsigned)strtoul(optarg, &end, 10);
			if (*end || nr_vcpus < 1 || nr_vcpus > MAX_VCPUS) {
				fprintf(stderr, "gmem-stress: -c wants 1 to %d vCPUs\n", MAX_VCPUS);
				return 2;
			}
			break;
		case 's':
			seed = strtoull(optarg, &end, 0);
			if (*end || !*optarg) {
				fprintf(stderr, "gmem-stress: -s wants a number\n");
				return 2;
			}
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind != argc) {
		usage(stderr);
		return 2;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	read_shmem_thp();
	sigemptyset(&sa.sa_mask);
	sigaction(SIGBUS, &sa, NULL);
	plan_backends(backend, seconds, &soft_seconds, &kvm_seconds);
	if (soft_seconds > 0)
		run_backend("soft", GM_VM_BACKEND_SOFT, nr_vcpus, soft_seconds, seed);
	if (kvm_seconds > 0)
		run_backend("kvm", GM_VM_BACKEND_KVM, nr_vcpus, kvm_seconds, seed);
	printf("gmem-stress: passed\n");
	return 0;
}
