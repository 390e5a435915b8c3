/* Host mappings in either layout: plain munmap and mremap, failed allocations and hides, mapping count. */
#define _GNU_SOURCE
#include <linux/falloc.h>
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <stdatomic.h>
#include <signal.h>
#include <stdio.h>
#include <sys/wait.h>

#include "harness/hostmap_layout.h"
#include "internal.h"
#include "unit/vmm.h"

#define PAGE 4096ULL
#define SZ_2M (2ULL << 20)
#define PRIVATE KVM_MEMORY_ATTRIBUTE_PRIVATE
#define SHARED_FLAGS (GUEST_MEMFD_FLAG_MMAP | GUEST_MEMFD_FLAG_INIT_SHARED)

static int convert(int gmem, uint64_t offset, uint64_t size, uint64_t attrs)
{
	struct kvm_memory_attributes2 a = { .offset = offset, .size = size, .attributes = attrs };

	return gm_ioctl(gmem, KVM_SET_MEMORY_ATTRIBUTES2, &a) ? errno : 0;
}

static struct gm_gmem_info info_of(int fd)
{
	struct gm_gmem_info info;

	cr_assert_eq(gm_gmem_info(fd, &info), 0);
	return info;
}

/* The kernel mappings of the process that overlap [p, p + len). */
static long kernel_mappings(const char *p, uint64_t len)
{
	FILE *f = fopen("/proc/self/maps", "re");
	uintptr_t start = (uintptr_t)p, end = start + len, lo, hi;
	char line[512];
	long n = 0;

	cr_assert_not_null(f);
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "%lx-%lx", &lo, &hi) == 2 && lo < end && start < hi)
			n++;
	fclose(f);
	return n;
}

/* A SW_PROTECTED VM and one shared file, its first map_len bytes mapped: where most tests start. */
struct mapped {
	struct vmm vmm;
	int gmem;
	char *p;
	uint64_t map_len;
	bool laid;      /* the file's mappings are laid (harness/hostmap_layout.h) */
};

static void mapped_open(struct mapped *f, uint64_t size, uint64_t map_len, uint64_t flags)
{
	vmm_init(&f->vmm, KVM_X86_SW_PROTECTED_VM);
	f->gmem = vmm_gmem(&f->vmm, size, flags);
	f->laid = hostmap_laid(f->gmem);
	f->map_len = map_len;
	f->p = gm_mmap(NULL, map_len, PROT_READ | PROT_WRITE, MAP_SHARED, f->gmem, 0);
	cr_assert_neq(f->p, MAP_FAILED, "gm_mmap: %s", strerror(errno));
}

/* Closes the file and the VM; the mapping is the test's to unmap. */
static void mapped_close(struct mapped *f)
{
	gm_close(f->gmem);
	vmm_destroy(&f->vmm);
}

/* Ends the test, reported as skipped for why, unless it runs in this layout. */
static void skip_unless(struct mapped *f, bool runs, const char *why)
{
	if (runs)
		return;
	gm_munmap(f->p, f->map_len);
	mapped_close(f);
	cr_skip_test("%s", why);
}

/*
 * With unrelated memory at 8 pages the file's mapping p once held: no
 * conversion or punch may touch it, and the file counts no mapping.
 */
static void check_new_occupant(int gmem, char *p)
{
	char *q = mmap(p, 8 * PAGE, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);

	cr_assert_eq(q, p, "the address was not free after munmap");
	memset(q, 0x77, 8 * PAGE);
	cr_expect_eq(info_of(gmem).host_mappings, 0, "the stale record is still counted");
	for (int round = 0; round < 2; round++) {
		cr_assert_eq(convert(gmem, 0, 8 * PAGE, PRIVATE), 0);
		cr_assert_eq(convert(gmem, 2 * PAGE, 2 * PAGE, 0), 0);
		cr_assert_eq(gm_fallocate(gmem, FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE, 0, PAGE), 0);
		cr_assert_eq(convert(gmem, 0, 8 * PAGE, 0), 0);
	}
	for (int i = 0; i < 8; i++) {
		cr_assert_not(t_read_faults(q + i * PAGE), "page %d of the new occupant unmapped", i);
		cr_expect_eq(q[i * PAGE], 0x77, "page %d of the new occupant changed", i);
		cr_expect_eq(q[i * PAGE + PAGE - 1], 0x77, "page %d of the new occupant changed", i);
	}
	munmap(q, 8 * PAGE);
}

/* A plain munmap, then the address reused by unrelated memory: the library saw the munmap. */
Test(hostmap, plain_munmap_then_reuse)
{
	struct mapped f;

	mapped_open(&f, 8 * PAGE, 8 * PAGE, SHARED_FLAGS);
	skip_unless(&f, !f.laid, HOSTMAP_SKIP_LAID_UNSEEN);
	memset(f.p, 0x11, 8 * PAGE);
	cr_assert_eq(munmap(f.p, 8 * PAGE), 0);
	check_new_occupant(f.gmem, f.p);
	mapped_close(&f);
}

/*
 * In either layout, gm_munmap after a plain munmap forgets the mapping, and
 * the address can be reused. Laid, the record (and its reference on the
 * file) outlives the plain munmap until then, as docs/compat.md says.
 */
Test(hostmap, gm_munmap_after_plain_munmap_then_reuse)
{
	struct mapped f;

	mapped_open(&f, 8 * PAGE, 8 * PAGE, SHARED_FLAGS);
	memset(f.p, 0x11, 8 * PAGE);
	cr_assert_eq(munmap(f.p, 8 * PAGE), 0);
	cr_expect_eq(info_of(f.gmem).host_mappings, f.laid ? 1 : 0,
		     "laid: the record stays until gm_munmap; faulting: the munmap is seen");
	cr_assert_eq(gm_munmap(f.p, 8 * PAGE), 0, "%s", strerror(errno));
	check_new_occupant(f.gmem, f.p);
	mapped_close(&f);
}

/* Growing a one-page shared mapping must not show the private page after it. */
Test(hostmap, mremap_grow_hides_private)
{
	struct mapped f;

	mapped_open(&f, 4 * PAGE, PAGE, SHARED_FLAGS);
	skip_unless(&f, !f.laid, HOSTMAP_SKIP_LAID_UNSEEN);
	cr_assert_eq(convert(f.gmem, PAGE, PAGE, PRIVATE), 0);
	f.p[0] = 1;
	char *q = mremap(f.p, PAGE, 2 * PAGE, MREMAP_MAYMOVE);

	cr_assert_neq(q, MAP_FAILED, "mremap: %s", strerror(errno));
	cr_expect(t_read_faults(q + PAGE), "the private page is readable through a grown mapping");
	cr_expect_not(t_read_faults(q), "the shared page went with the move");
	cr_expect_eq(q[0], 1);
	munmap(q, 2 * PAGE);
	mapped_close(&f);
}

/* A moved mapping follows later conversions at its new address. */
Test(hostmap, mremap_move_follows_conversions)
{
	struct mapped f;

	mapped_open(&f, 4 * PAGE, 4 * PAGE, SHARED_FLAGS);
	skip_unless(&f, !f.laid, HOSTMAP_SKIP_LAID_UNSEEN);
	int gmem = f.gmem;
	char *p = f.p;
	char *target = mmap(NULL, 4 * PAGE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	cr_assert_neq(target, MAP_FAILED);
	for (int i = 0; i < 4; i++)
		p[i * PAGE] = (char)(i + 1);
	char *q = mremap(p, 4 * PAGE, 4 * PAGE, MREMAP_MAYMOVE | MREMAP_FIXED, target);

	cr_assert_eq(q, target, "mremap: %s", strerror(errno));
	cr_assert_eq(q[PAGE], 2);
	cr_assert_eq(convert(gmem, PAGE, 2 * PAGE, PRIVATE), 0);
	cr_expect(t_read_faults(q + PAGE), "a page made private after the move is readable");
	cr_expect(t_read_faults(q + 2 * PAGE), "a page made private after the move is readable");
	cr_expect_eq(q[0], 1);
	cr_expect_eq(q[3 * PAGE], 4);
	cr_assert_eq(convert(gmem, PAGE, 2 * PAGE, 0), 0);
	cr_expect_not(t_read_faults(q + PAGE), "shared again, the page must come back");
	cr_expect_eq(info_of(gmem).host_mappings, 1);
	/* The old address is free again: a new occupant there is never touched. */
	char *r = mmap(p, 4 * PAGE, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);

	cr_assert_eq(r, p);
	memset(r, 0x33, 4 * PAGE);
	cr_assert_eq(convert(gmem, 0, 4 * PAGE, PRIVATE), 0);
	cr_expect_eq(r[PAGE], 0x33);
	cr_expect(t_read_faults(q), "private after the move");
	cr_expect_eq(gm_munmap(q, 4 * PAGE), 0);
	cr_expect_eq(info_of(gmem).host_mappings, 0);
	munmap(r, 4 * PAGE);
	mapped_close(&f);
}

/*
 * The record of a mapping a plain mremap moved: faulting, it follows the
 * move; laid, it stays at the old address until gm_munmap there, as
 * docs/compat.md says. Either way gm_munmap leaves no record behind.
 */
Test(hostmap, plain_mremap_record_until_gm_munmap)
{
	struct mapped f;
	char *target = mmap(NULL, 4 * PAGE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	cr_assert_neq(target, MAP_FAILED);
	mapped_open(&f, 4 * PAGE, 4 * PAGE, SHARED_FLAGS);
	char *q = mremap(f.p, 4 * PAGE, 4 * PAGE, MREMAP_MAYMOVE | MREMAP_FIXED, target);

	cr_assert_eq(q, target, "mremap: %s", strerror(errno));
	cr_expect_eq(info_of(f.gmem).host_mappings, 1);
	cr_assert_eq(gm_munmap(f.p, 4 * PAGE), 0, "%s", strerror(errno));
	cr_expect_eq(info_of(f.gmem).host_mappings, f.laid ? 0 : 1,
		     "gm_munmap at the old address, %s layout", f.laid ? "laid" : "faulting");
	cr_assert_eq(gm_munmap(q, 4 * PAGE), 0, "%s", strerror(errno));
	cr_expect_eq(info_of(f.gmem).host_mappings, 0);
	mapped_close(&f);
}

/*
 * gm_mremap (what the interposer calls for mremap) moving unrelated memory
 * over a mapping: the mapping it replaced is gone for the library too, so no
 * conversion touches the memory that took its place, in either layout.
 */
Test(hostmap, gm_mremap_over_a_mapping_spares_the_memory_moved_there)
{
	struct mapped f;
	char *plain = mmap(NULL, 4 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0), *q;

	cr_assert_neq(plain, MAP_FAILED);
	memset(plain, 0x77, 4 * PAGE);
	mapped_open(&f, 8 * PAGE, 8 * PAGE, SHARED_FLAGS);
	q = gm_mremap(plain, 4 * PAGE, 4 * PAGE, MREMAP_MAYMOVE | MREMAP_FIXED, f.p);
	cr_assert_eq(q, f.p, "gm_mremap: %s", strerror(errno));
	cr_assert_eq(convert(f.gmem, 0, 8 * PAGE, PRIVATE), 0);
	cr_assert_eq(convert(f.gmem, 0, 8 * PAGE, 0), 0);
	for (int i = 0; i < 4; i++) {
		cr_assert_not(t_read_faults(q + i * PAGE), "page %d of the moved memory unmapped", i);
		cr_expect_eq(q[i * PAGE], 0x77, "page %d of the moved memory changed", i);
	}
	cr_expect_eq(gm_munmap(f.p, 8 * PAGE), 0, "%s", strerror(errno));
	cr_expect_eq(info_of(f.gmem).host_mappings, 0);
	mapped_close(&f);
}

/*
 * A laid mapping is laid again by address: gm_mremap moves its record with
 * it (conversions reach the new address, not the old), and its shrink
 * forgets the tail, which no conversion lays again.
 */
Test(hostmap, gm_mremap_of_a_laid_mapping_moves_and_shrinks_its_record)
{
	struct mapped f;
	char *target = mmap(NULL, 8 * PAGE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0), *tail, *old;

	cr_assert_neq(target, MAP_FAILED);
	mapped_open(&f, 8 * PAGE, 8 * PAGE, SHARED_FLAGS);
	skip_unless(&f, f.laid, "needs the laid layout (make test-laid)");
	old = f.p;
	memset(f.p, 0x5a, 8 * PAGE);
	f.p = gm_mremap(f.p, 8 * PAGE, 8 * PAGE, MREMAP_MAYMOVE | MREMAP_FIXED, target);
	cr_assert_eq(f.p, target, "gm_mremap: %s", strerror(errno));
	tail = mmap(old, 8 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE,
		    -1, 0);
	cr_assert_eq(tail, old, "the move left the old address mapped");
	memset(tail, 0x77, 8 * PAGE);
	cr_assert_eq(convert(f.gmem, 0, 8 * PAGE, PRIVATE), 0);
	cr_expect(t_read_faults(f.p), "the moved mapping's private page is readable");
	cr_assert_eq(convert(f.gmem, 0, 8 * PAGE, 0), 0);
	cr_expect_eq(f.p[0], 0x5a, "the moved mapping lost the file");
	cr_expect_eq(tail[0], 0x77, "a conversion laid the file at the old address");
	munmap(tail, 8 * PAGE);
	cr_expect_eq(gm_mremap(f.p, 8 * PAGE, 4 * PAGE, 0), f.p, "%s", strerror(errno));
	tail = mmap(f.p + 4 * PAGE, 4 * PAGE, PROT_READ | PROT_WRITE,
		    MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
	cr_assert_eq(tail, f.p + 4 * PAGE, "the shrink left the tail mapped");
	memset(tail, 0x77, 4 * PAGE);
	cr_assert_eq(convert(f.gmem, 0, 8 * PAGE, PRIVATE), 0);
	cr_assert_eq(convert(f.gmem, 0, 8 * PAGE, 0), 0);
	cr_expect_eq(tail[0], 0x77, "a conversion laid the file over the memory after the shrink");
	munmap(tail, 4 * PAGE);
	cr_expect_eq(gm_munmap(f.p, 4 * PAGE), 0, "%s", strerror(errno));
	cr_expect_eq(info_of(f.gmem).host_mappings, 0);
	mapped_close(&f);
}

/*
 * A fixed mapping into the middle of another needs a record for the right
 * part. Whichever allocation fails, either the call fails with ENOMEM and
 * nothing changed, or the right part still follows conversions.
 */
Test(hostmap, fixed_middle_allocation_failure)
{
	struct vmm m;
	int failed = 0;

	vmm_init(&m, KVM_X86_SW_PROTECTED_VM);
	int gmem = vmm_gmem(&m, 8 * PAGE, SHARED_FLAGS);

	for (long after = 1; after <= 6; after++) {
		char *p = gm_mmap(NULL, 8 * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, gmem, 0);
		char *q;

		cr_assert_neq(p, MAP_FAILED);
		memset(p, 0x42, 8 * PAGE);
		gm_heap_fail_after(after);
		q = gm_mmap(p + 3 * PAGE, PAGE, PROT_READ, MAP_SHARED | MAP_FIXED, gmem, 3 * PAGE);
		gm_heap_fail_after(0);
		if (q == MAP_FAILED) {
			cr_expect_eq(errno, ENOMEM, "after %ld: %s", after, strerror(errno));
			cr_expect_eq(p[3 * PAGE], 0x42, "after %ld: a failed call changed the mapping", after);
			failed++;
		}
		cr_assert_eq(convert(gmem, 6 * PAGE, PAGE, PRIVATE), 0);
		cr_expect(t_read_faults(p + 6 * PAGE), "after %ld: the right part shows a private page",
			  after);
		cr_expect_not(t_read_faults(p + 5 * PAGE), "after %ld: a shared page was lost", after);
		cr_assert_eq(convert(gmem, 6 * PAGE, PAGE, 0), 0);
		cr_expect_eq(p[6 * PAGE], 0x42, "after %ld", after);
		cr_assert_eq(gm_munmap(p, 8 * PAGE), 0);
		cr_expect_eq(info_of(gmem).host_mappings, 0, "after %ld", after);
	}
	cr_expect_gt(failed, 0, "no allocation failure reached the call");
	gm_close(gmem);
	vmm_destroy(&m);
}

/* ASan and TSan map memory of their own as the test runs. */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
static const bool sanitized = true;
#else
static const bool sanitized = false;
#endif

/* Converts islands private pages at p + PAGE, p + 3 * PAGE, ...: 0, or the first failure's errno. */
static int make_islands(struct mapped *f, uint64_t islands, uint64_t *made)
{
	int err = 0;

	for (*made = 0; *made < islands && !err; (*made)++)
		err = convert(f->gmem, (2 * *made + 1) * PAGE, PAGE, PRIVATE);
	if (err)
		(*made)--;
	return err;
}

/* Whether the process can still make a few more mappings. */
static void check_can_still_map(void)
{
	for (int i = 0; i < 64; i++) {
		void *a = mmap(NULL, PAGE, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

		cr_assert_neq(a, MAP_FAILED, "mmap %d after the islands: %s", i, strerror(errno));
		mprotect(a, PAGE, PROT_NONE);
		munmap(a, PAGE);
	}
}

/*
 * The kernel uses one VMA whatever the attributes: 100,000 private islands
 * in a mapped 1 GiB file must not cost the process its mappings.
 */
Test(hostmap, private_islands_cost_no_mappings, .timeout = 120)
{
	const uint64_t size = 1ULL << 30, islands = 100000;
	struct mapped f;
	uint64_t made;
	long before, after;

	mapped_open(&f, size, size, SHARED_FLAGS);
	skip_unless(&f, !f.laid, HOSTMAP_SKIP_LAID_RUNS);
	char *p = f.p;

	before = kernel_mappings(p, size);
	cr_expect_eq(before, 1, "a fresh mapping of a shared file is %ld kernel mappings", before);
	cr_assert_eq(make_islands(&f, islands, &made), 0, "island %llu", (unsigned long long)made);
	after = kernel_mappings(p, size);
	cr_expect_eq(after, before, "%ld kernel mappings before the islands, %ld after", before, after);
	cr_expect(t_read_faults(p + PAGE));
	cr_expect(t_read_faults(p + (2 * islands - 1) * PAGE));
	cr_expect_not(t_read_faults(p + 2 * islands * PAGE));
	p[4 * PAGE] = 9;
	cr_expect_eq(p[4 * PAGE], 9);
	check_can_still_map();
	cr_expect_eq(gm_munmap(p, size), 0);
	mapped_close(&f);
}

/*
 * What private islands cost in kernel mappings, as docs/compat.md says:
 * nothing with userfaultfd; laid, one mapping per run, and shared again
 * the runs are one mapping again.
 */
Test(hostmap, islands_cost_what_the_layout_says)
{
	const uint64_t size = 256 * PAGE, islands = 64;
	struct mapped f;
	uint64_t made;

	mapped_open(&f, size, size, SHARED_FLAGS);
	memset(f.p, 0x2e, size);
	cr_expect_eq(kernel_mappings(f.p, size), 1);
	cr_assert_eq(make_islands(&f, islands, &made), 0, "island %llu", (unsigned long long)made);
	cr_expect_eq(kernel_mappings(f.p, size), f.laid ? 2 * islands + 1 : 1,
		     "%s layout", f.laid ? "laid" : "faulting");
	for (uint64_t i = 0; i < 2 * islands + 1; i++)
		cr_expect_eq(t_read_faults(f.p + i * PAGE), i % 2 == 1, "page %llu",
			     (unsigned long long)i);
	cr_assert_eq(convert(f.gmem, 0, size, 0), 0);
	cr_expect_eq(kernel_mappings(f.p, size), 1);
	cr_expect_eq(f.p[3 * PAGE], 0x2e, "a page lost its data across the conversions");
	cr_expect_eq(gm_munmap(f.p, size), 0);
	mapped_close(&f);
}

/*
 * Laid, vm.max_map_count bounds the private islands: the conversion that
 * would pass it fails with ENOMEM and changes nothing; converting back gives
 * the process its mappings again.
 */
Test(hostmap, laid_map_count_bounds_islands, .timeout = 120)
{
	const uint64_t size = 1ULL << 30, islands = 100000;
	struct mapped f;
	uint64_t made;

	mapped_open(&f, size, size, SHARED_FLAGS);
	skip_unless(&f, f.laid, HOSTMAP_SKIP_FAULTING);
	skip_unless(&f, !sanitized, "a sanitizer's runtime aborts when it cannot map (vm.max_map_count)");
	char *island;
	/* A mapping of the test's own, given back at the bound: see below. */
	void *spare = mmap(NULL, PAGE, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	cr_assert_neq(spare, MAP_FAILED);
	cr_assert_eq(make_islands(&f, islands, &made), ENOMEM,
		     "%llu islands and no bound", (unsigned long long)made);
	island = f.p + (2 * made + 1) * PAGE;
	cr_expect_eq(info_of(f.gmem).shared_bytes, size - made * PAGE,
		     "the failed conversion changed attributes");
	cr_expect_not(t_read_faults(island), "the failed conversion hid its page");
	island[0] = 5;
	cr_expect_eq(island[0], 5);
	cr_expect(t_read_faults(island - 2 * PAGE), "the last island made is readable");
	/*
	 * At the bound even a conversion that frees mappings may need one first: free two.
	 * The failed conversion leaves the process at its bound or one short of it, and
	 * exactly at it the kernel refuses every mmap, even one that replaces a whole
	 * mapping: the VMM unmaps one of its own first (docs/compat.md).
	 */
	cr_assert_eq(munmap(spare, PAGE), 0);
	cr_assert_eq(convert(f.gmem, (2 * made - 1) * PAGE, PAGE, 0), 0);
	cr_expect_not(t_read_faults(island - 2 * PAGE));
	cr_assert_eq(convert(f.gmem, 0, size, 0), 0);
	cr_expect_eq(kernel_mappings(f.p, size), 1);
	check_can_still_map();
	cr_expect_eq(gm_munmap(f.p, size), 0);
	mapped_close(&f);
}

/* 8 shared pages of 0x5a, mapped, whose conversion to private failed: all three zaps. */
static void open_with_failed_hide(struct mapped *f)
{
	mapped_open(f, 8 * PAGE, 8 * PAGE, SHARED_FLAGS);
	memset(f->p, 0x5a, 8 * PAGE);
	gm_hostmap_fail(1, 3);
	cr_expect_eq(convert(f->gmem, 0, 8 * PAGE, PRIVATE), ENOMEM);
	gm_hostmap_fail(0, 0);
	cr_expect_eq(info_of(f->gmem).shared_bytes, 8 * PAGE, "a failed conversion changed attributes");
}

/*
 * A hide that cannot be done leaves the range inaccessible, and the
 * conversion says it failed: here the zap, the undo's zap and the hide's
 * own zap all fail.
 */
Test(hostmap, failed_hide_leaves_range_inaccessible)
{
	struct mapped f;

	open_with_failed_hide(&f);
	char *p = f.p;

	for (int i = 0; i < 8; i++)
		cr_expect(t_read_faults(p + i * PAGE), "page %d readable after a failed hide", i);
	/* The next conversion that can reach the mapping lays it again. */
	cr_assert_eq(convert(f.gmem, 7 * PAGE, PAGE, PRIVATE), 0);
	cr_assert_not(t_read_faults(p), "the shared page did not come back");
	cr_expect_eq(p[0], 0x5a);
	cr_expect(t_read_faults(p + 7 * PAGE));
	gm_munmap(p, 8 * PAGE);
	mapped_close(&f);
}

/*
 * A conversion undone by a hide (the change and the undo failed, the hide
 * worked): faulting, the pages fault in from the restored attributes; laid,
 * they stay hidden until the file's next conversion, even of pages that
 * this mapping does not hold.
 */
Test(hostmap, hidden_range_comes_back_at_next_conversion)
{
	struct mapped f;

	mapped_open(&f, 8 * PAGE, 4 * PAGE, SHARED_FLAGS);
	memset(f.p, 0x4d, 4 * PAGE);
	gm_hostmap_fail(1, 2);
	cr_expect_eq(convert(f.gmem, 0, 4 * PAGE, PRIVATE), ENOMEM);
	gm_hostmap_fail(0, 0);
	cr_expect_eq(info_of(f.gmem).shared_bytes, 8 * PAGE, "a failed conversion changed attributes");
	for (int i = 0; i < 4; i++)
		cr_expect_eq(t_read_faults(f.p + i * PAGE), f.laid, "page %d, %s layout", i,
			     f.laid ? "laid" : "faulting");
	cr_assert_eq(convert(f.gmem, 6 * PAGE, PAGE, PRIVATE), 0);
	for (int i = 0; i < 4; i++) {
		cr_assert_not(t_read_faults(f.p + i * PAGE), "shared page %d did not come back", i);
		cr_expect_eq(f.p[i * PAGE], 0x4d, "page %d lost its data", i);
	}
	gm_munmap(f.p, 4 * PAGE);
	mapped_close(&f);
}

/* A SIGBUS on a private page is the kernel's: BUS_ADRERR at the faulting address. */
static siginfo_t bus_info;
static sigjmp_buf fault_jmp;

static void on_bus_info(int sig, siginfo_t *si, void *uc)
{
	(void)uc;
	bus_info = *si;
	siglongjmp(fault_jmp, sig);
}

Test(hostmap, sigbus_is_the_kernels)
{
	struct sigaction sa = { .sa_sigaction = on_bus_info, .sa_flags = SA_SIGINFO }, old;
	struct mapped f;

	mapped_open(&f, 4 * PAGE, 4 * PAGE, SHARED_FLAGS);
	volatile char *p = f.p;

	cr_assert_eq(convert(f.gmem, 2 * PAGE, PAGE, PRIVATE), 0);
	sigemptyset(&sa.sa_mask);
	sigaction(SIGBUS, &sa, &old);
	if (sigsetjmp(fault_jmp, 1) == 0) {
		(void)p[2 * PAGE + 123];
		cr_expect_fail("no SIGBUS");
	}
	sigaction(SIGBUS, &old, NULL);
	cr_expect_eq(bus_info.si_signo, SIGBUS);
	cr_expect_eq(bus_info.si_code, BUS_ADRERR);
	cr_expect_eq(bus_info.si_addr, (void *)(p + 2 * PAGE + 123));
	/* A syscall that reads the private page fails, as copy_to_user would. */
	int pipefd[2];

	cr_assert_eq(pipe(pipefd), 0);
	cr_expect_eq(write(pipefd[1], (const void *)(p + 2 * PAGE), 16), -1);
	cr_expect_eq(errno, EFAULT);
	close(pipefd[0]);
	close(pipefd[1]);
	gm_munmap(f.p, 4 * PAGE);
	mapped_close(&f);
}

/*
 * On hugetlbfs, a conversion that splits a folio first hides it from the
 * host. When that hide fails, the conversion says so (ENOMEM) and changes
 * nothing; no page of the folio is readable meanwhile.
 */
Test(hostmap, split_hide_failure_is_reported)
{
	struct mapped f;

	mapped_open(&f, 2 * SZ_2M, 2 * SZ_2M, SHARED_FLAGS | GM_GUEST_MEMFD_FOLIO_2M);
	skip_unless(&f, info_of(f.gmem).backing == GM_BACKING_HUGETLB,
		    "no free 2 MiB huge pages: the file is on a memfd");
	int gmem = f.gmem;
	char *p = f.p;

	memset(p, 0x6b, 2 * SZ_2M);
	gm_hostmap_fail(1, 1);
	cr_expect_eq(convert(gmem, 5 * PAGE, PAGE, PRIVATE), ENOMEM,
		     "a conversion whose hide failed reported success");
	gm_hostmap_fail(0, 0);
	cr_expect_eq(info_of(gmem).shared_bytes, 2 * SZ_2M);
	cr_expect_not(t_read_faults(p + 5 * PAGE), "the failed conversion left the page hidden");
	cr_expect_eq(p[5 * PAGE], 0x6b);
	cr_expect_eq(info_of(gmem).split_folios, 0, "the folio stayed split");
	/* Without the failure the same conversion works, and the page is the guest's. */
	cr_assert_eq(convert(gmem, 5 * PAGE, PAGE, PRIVATE), 0);
	cr_expect(t_read_faults(p + 5 * PAGE));
	cr_expect_eq(p[6 * PAGE], 0x6b);
	cr_expect_eq(p[SZ_2M], 0x6b);
	gm_munmap(p, 2 * SZ_2M);
	mapped_close(&f);
}

/*
 * A hide that failed (the pages are hidden, their record remembers them), then
 * gm_munmap of the middle of the hidden range and unrelated memory there: the
 * conversions that lay the hidden pages again lay only what is still the
 * file's mapping, never the new occupant.
 */
Test(hostmap, hidden_then_unmapped_range_is_never_laid_again)
{
	struct mapped f;

	open_with_failed_hide(&f);
	char *p = f.p;

	cr_assert_eq(gm_munmap(p + 2 * PAGE, 4 * PAGE), 0);
	char *q = mmap(p + 2 * PAGE, 4 * PAGE, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
	cr_assert_eq(q, p + 2 * PAGE, "the unmapped middle was not free");
	memset(q, 0x77, 4 * PAGE);
	cr_assert_eq(convert(f.gmem, 7 * PAGE, PAGE, PRIVATE), 0);
	cr_assert_eq(convert(f.gmem, 0, 8 * PAGE, 0), 0);
	for (int i = 0; i < 4; i++) {
		cr_assert_not(t_read_faults(q + i * PAGE), "page %d of the new occupant unmapped", i);
		cr_expect_eq(q[i * PAGE], 0x77, "page %d of the new occupant changed", i);
	}
	for (int i = 0; i < 8; i += 7) {
		cr_assert_not(t_read_faults(p + i * PAGE), "shared page %d did not come back", i);
		cr_expect_eq(p[i * PAGE], 0x5a, "page %d lost its data", i);
	}
	munmap(q, 4 * PAGE);
	gm_munmap(p, 2 * PAGE);
	gm_munmap(p + 6 * PAGE, 2 * PAGE);
	mapped_close(&f);
}

/* A child forked after conversions, in either layout, has none of the file's pages mapped. */
Test(hostmap, forked_child_has_no_pages_after_conversions)
{
	struct mapped f;
	int status;
	pid_t pid;

	mapped_open(&f, 8 * PAGE, 8 * PAGE, SHARED_FLAGS);
	memset(f.p, 0x3c, 8 * PAGE);
	cr_assert_eq(convert(f.gmem, 2 * PAGE, 2 * PAGE, PRIVATE), 0);
	cr_assert_eq(convert(f.gmem, 3 * PAGE, PAGE, 0), 0);
	gm_hostmap_fail(1, 1);
	cr_expect_eq(convert(f.gmem, 6 * PAGE, PAGE, PRIVATE), ENOMEM);
	gm_hostmap_fail(0, 0);
	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		for (int i = 0; i < 8; i++)
			if (!t_read_faults(f.p + i * PAGE))
				_exit(10 + i);
		_exit(0);
	}
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	cr_expect(WIFEXITED(status) && WEXITSTATUS(status) == 0,
		  "the child could read page %d (%s layout)", WEXITSTATUS(status) - 10,
		  f.laid ? "laid" : "faulting");
	gm_munmap(f.p, 8 * PAGE);
	mapped_close(&f);
}

struct converter {
	int gmem;
	atomic_bool stop;
	atomic_long rounds;
};

static void *convert_loop(void *arg)
{
	struct converter *c = arg;

	while (!atomic_load(&c->stop)) {
		pgoff_t at = (pgoff_t)(atomic_load(&c->rounds) % 15);

		convert(c->gmem, at * PAGE, 2 * PAGE, PRIVATE);
		convert(c->gmem, 0, 16 * PAGE, 0);
		atomic_fetch_add(&c->rounds, 1);
	}
	return NULL;
}

/*
 * Conversions race with gm_munmap and unrelated memory put where the mapping
 * was: a conversion lays only mappings still the file's, so the new occupant
 * keeps its bytes, in either layout.
 */
Test(hostmap, conversions_racing_gm_munmap_spare_the_next_occupant, .timeout = 60)
{
	struct converter c = { .rounds = 0 };
	struct vmm vmm;
	pthread_t t;

	vmm_init(&vmm, KVM_X86_SW_PROTECTED_VM);
	c.gmem = vmm_gmem(&vmm, 16 * PAGE, SHARED_FLAGS);
	cr_assert_eq(pthread_create(&t, NULL, convert_loop, &c), 0);
	int occupied = 0;

	for (int i = 0; i < 300; i++) {
		char *p = gm_mmap(NULL, 16 * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, c.gmem, 0);

		cr_assert_neq(p, MAP_FAILED, "gm_mmap: %s", strerror(errno));
		cr_assert_eq(gm_munmap(p + (i % 4) * PAGE, 8 * PAGE), 0);
		char *q = mmap(p + (i % 4) * PAGE, 8 * PAGE, PROT_READ | PROT_WRITE,
			       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
		/* Another thread's allocation (ASan's, the converter's) may take the hole first. */
		if (q == MAP_FAILED && errno == EEXIST) {
			gm_munmap(p, 16 * PAGE);
			continue;
		}
		cr_assert_eq(q, p + (i % 4) * PAGE, "the unmapped part was not free: %s", strerror(errno));
		occupied++;
		memset(q, 0x77, 8 * PAGE);
		/* Two whole rounds of conversions while the occupant is there. */
		for (long seen = atomic_load(&c.rounds); atomic_load(&c.rounds) < seen + 2;)
			sched_yield();
		for (int j = 0; j < 8; j++) {
			cr_assert_not(t_read_faults(q + j * PAGE), "round %d: occupant page %d gone", i, j);
			cr_assert_eq(q[j * PAGE], 0x77, "round %d: occupant page %d changed", i, j);
		}
		munmap(q, 8 * PAGE);
		gm_munmap(p, 16 * PAGE);
	}
	atomic_store(&c.stop, true);
	pthread_join(t, NULL);
	cr_expect_geq(occupied, 150, "only %d of 300 rounds had an occupant", occupied);
	gm_close(c.gmem);
	vmm_destroy(&vmm);
}

/*
 * Laid, the pages a failed conversion left hidden come back at the next
 * conversion, laid apart from it: the private islands between the two are
 * not laid again. Here every lay after the second fails, so a conversion
 * that laid the whole span from the hidden page to its own would fail.
 */
Test(hostmap, hidden_pages_come_back_without_laying_the_span_between)
{
	struct mapped f;

	mapped_open(&f, 16 * PAGE, 16 * PAGE, SHARED_FLAGS);
	skip_unless(&f, f.laid, HOSTMAP_SKIP_FAULTING);
	memset(f.p, 0x2e, 16 * PAGE);
	for (int i = 6; i <= 10; i += 2)
		cr_assert_eq(convert(f.gmem, i * PAGE, PAGE, PRIVATE), 0);
	gm_hostmap_fail(1, 2);
	cr_assert_eq(convert(f.gmem, PAGE, PAGE, PRIVATE), ENOMEM);
	gm_hostmap_fail(0, 0);
	cr_assert(t_read_faults(f.p + PAGE), "the failed conversion did not hide its page");
	gm_hostmap_fail(3, 100);
	int err = convert(f.gmem, 14 * PAGE, PAGE, PRIVATE);
	gm_hostmap_fail(0, 0);
	cr_expect_eq(err, 0, "the conversion laid more than its page and the hidden one: %s",
		     strerror(err));
	cr_expect_not(t_read_faults(f.p + PAGE), "the hidden page did not come back");
	cr_expect_eq(f.p[PAGE], 0x2e);
	for (int i = 6; i <= 14; i += i == 10 ? 4 : 2)
		cr_expect(t_read_faults(f.p + i * PAGE), "private page %d is readable", i);
	for (int i = 5; i <= 11; i += 2)
		cr_expect_eq(f.p[i * PAGE], 0x2e, "shared page %d", i);
	gm_munmap(f.p, 16 * PAGE);
	mapped_close(&f);
}
