/* Punch-hole and conversion edge cases, checked page by page through the stage-2 by a guest. */
#include <linux/falloc.h>

#include "internal.h"
#include "mmu/stage2.h"
#include "vm.h"
#include "harness/skip_report.h"
#include "unit/vmm.h"

#define PAGE 4096ULL
#define SZ_2M (2ULL << 20)
#define FOLIO_PAGES 512ULL
#define FILE_PAGES (2 * FOLIO_PAGES)      /* two 2M folios */
#define BASE_GPA (8 * SZ_2M)              /* 2M-aligned: the slot allows 2M leaves */
#define PRIVATE KVM_MEMORY_ATTRIBUTE_PRIVATE

/* What the guest reads: pages [from, to) of the file (all when to is 0), once per round. */
struct scan {
	enum gm_access access;
	uint64_t from, to;
	uint64_t seen[FILE_PAGES];
};

static void guest_scan(struct gm_guest *g, void *arg)
{
	struct scan *s = arg;

	for (uint64_t round = 0;; round++) {
		gm_guest_set_access(g, s->access);
		for (uint64_t i = s->from; i < (s->to ? s->to : FILE_PAGES); i++)
			s->seen[i] = gm_guest_read64(g, BASE_GPA + i * PAGE);
		gm_guest_ucall(g, GM_UCALL_SYNC, 1, round);
	}
}

struct pages_env {
	struct vmm m;
	int gmem;
	uint64_t *host;
	struct scan scan;
};

/* Default-size huge pages a new file could still reserve (0 when /proc says nothing). */
static long hugepages_free(void)
{
	FILE *f = fopen("/proc/meminfo", "r");
	long free_pages = 0, reserved = 0, v;
	char line[128];

	while (f && fgets(line, sizeof(line), f)) {
		if (sscanf(line, "HugePages_Free: %ld", &v) == 1)
			free_pages = v;
		if (sscanf(line, "HugePages_Rsvd: %ld", &v) == 1)
			reserved = v;
	}
	if (f)
		fclose(f);
	return free_pages > reserved ? free_pages - reserved : 0;
}

/*
 * A SW_PROTECTED VM with one slot over the first two folios of a file whose page i holds
 * i + 1. A 2M file is made larger than the free huge page pool so that it is a memfd
 * whatever other processes reserved: on hugetlbfs a partial conversion splits the folio,
 * which alone would already force 4K leaves and hide a wrong huge-leaf decision.
 */
static void env_setup(struct pages_env *e, uint64_t folio)
{
	uint64_t folios = folio == GM_GUEST_MEMFD_FOLIO_2M ? (uint64_t)hugepages_free() + 2 : 2;
	struct gm_gmem_info info;

	vmm_init(&e->m, KVM_X86_SW_PROTECTED_VM);
	e->gmem = vmm_gmem(&e->m, folios * FOLIO_PAGES * PAGE,
			   GUEST_MEMFD_FLAG_MMAP | GUEST_MEMFD_FLAG_INIT_SHARED | folio);
	cr_assert_eq(gm_gmem_info(e->gmem, &info), 0);
	if (info.backing != GM_BACKING_MEMFD) {
		gm_report_skip("unit stage2_pages (a 2M test)", "the huge page pool grew under the test");
		cr_skip_test("the file landed on hugetlbfs: the pool grew under the test");
	}
	e->host = gm_mmap(NULL, FILE_PAGES * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, e->gmem, 0);
	cr_assert_neq(e->host, MAP_FAILED);
	for (uint64_t i = 0; i < FILE_PAGES; i++)
		e->host[i * PAGE / 8] = i + 1;
	cr_assert_eq(vmm_set_slot(&e->m, 0, BASE_GPA, FILE_PAGES * PAGE, e->gmem, 0), 0);
	e->scan.access = GM_ACCESS_SHARED;
	vmm_vcpu(&e->m, 0, guest_scan, &e->scan);
}

static void env_teardown(struct pages_env *e)
{
	gm_munmap(e->host, FILE_PAGES * PAGE);
	gm_close(e->gmem);
	vmm_destroy(&e->m);
}

static int convert(int gmem, uint64_t first, uint64_t n, uint64_t attrs)
{
	struct kvm_memory_attributes2 a = { .offset = first * PAGE, .size = n * PAGE, .attributes = attrs };

	return gm_ioctl(gmem, KVM_SET_MEMORY_ATTRIBUTES2, &a) ? errno : 0;
}

/*
 * One round of the guest's scan. A shared access to a private page must exit with
 * KVM_EXIT_MEMORY_FAULT; the VMM answers as a VMM does, converting the page back to
 * shared, and notes it in faulted[].
 */
static void scan_round(struct pages_env *e, bool *faulted)
{
	struct gm_ucall uc;

	for (;;) {
		int err = vmm_run(&e->m);

		if (err == EFAULT && e->m.run->exit_reason == KVM_EXIT_MEMORY_FAULT) {
			uint64_t page = (e->m.run->memory_fault.gpa - BASE_GPA) / PAGE;

			cr_assert(faulted, "memory fault at gpa %#llx where none may be",
				  (unsigned long long)e->m.run->memory_fault.gpa);
			cr_assert_lt(page, FILE_PAGES);
			cr_assert_eq(e->m.run->memory_fault.flags, 0, "a shared access faults as shared");
			cr_assert_not(faulted[page], "page %llu faulted twice", (unsigned long long)page);
			faulted[page] = true;
			cr_assert_eq(convert(e->gmem, page, 1, 0), 0);
			continue;
		}
		cr_assert_eq(err, 0, "KVM_RUN: %s, exit %u", strerror(err), e->m.run->exit_reason);
		cr_assert_eq(e->m.run->exit_reason, KVM_EXIT_IO, "exit %u", e->m.run->exit_reason);
		cr_assert_eq(gm_vcpu_get_ucall(e->m.vcpu, &uc), 0);
		cr_assert_eq(uc.cmd, GM_UCALL_SYNC, "guest: %s", uc.msg);
		return;
	}
}

/* Whether the stage-2 holds a leaf for the file page (a leaf of any size covering it). */
static bool page_mapped(struct pages_env *e, uint64_t page)
{
	int err;
	struct gm_object *obj = gm_file_get_typed(e->m.vm, GM_FILE_VM, &err);
	struct vm *vm = gm_container_of(obj, struct vm, obj);
	enum mmu_level level;
	uint64_t spte;

	cr_assert_not_null(obj);
	spte = mmu_lookup(&vm->mmu, (BASE_GPA / PAGE) + page, &level);
	gm_object_put(obj);
	return spte & SPTE_PRESENT;
}

/* ---- punch-hole ---- */

struct punch_case {
	uint64_t folio, first, n;
};

static void check_punch(const struct punch_case *c)
{
	struct pages_env e;
	uint64_t end = c->first + c->n;

	env_setup(&e, c->folio);
	scan_round(&e, NULL);
	for (uint64_t i = 0; i < FILE_PAGES; i++)
		cr_assert(page_mapped(&e, i), "page %llu mapped by the first scan", (unsigned long long)i);
	cr_assert_eq(gm_fallocate(e.gmem, FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE, c->first * PAGE,
				  c->n * PAGE), 0);
	/* Every punched page lost its leaf, each page outside the hole kept its own. */
	for (uint64_t i = 0; i < FILE_PAGES; i++) {
		bool punched = i >= c->first && i < end;

		if (c->folio == GM_GUEST_MEMFD_FOLIO_4K || punched)
			cr_expect_eq(page_mapped(&e, i), !punched, "page %llu after punching [%llu, %llu)",
				     (unsigned long long)i, (unsigned long long)c->first,
				     (unsigned long long)end);
	}
	/* The guest reads zeroes in the hole and the old contents around it. */
	scan_round(&e, NULL);
	for (uint64_t i = 0; i < FILE_PAGES; i++) {
		bool punched = i >= c->first && i < end;

		cr_expect_eq(e.scan.seen[i], punched ? 0 : i + 1, "guest page %llu", (unsigned long long)i);
		cr_expect_eq(e.host[i * PAGE / 8], punched ? 0 : i + 1, "host page %llu",
			     (unsigned long long)i);
	}
	env_teardown(&e);
}

Test(stage2_pages, punch_unaligned_range_4k)
{
	check_punch(&(struct punch_case){ GM_GUEST_MEMFD_FOLIO_4K, 3, 4 });
}

Test(stage2_pages, punch_one_page_4k)
{
	check_punch(&(struct punch_case){ GM_GUEST_MEMFD_FOLIO_4K, 511, 1 });
}

Test(stage2_pages, punch_across_2m_boundary_4k)
{
	check_punch(&(struct punch_case){ GM_GUEST_MEMFD_FOLIO_4K, 500, 30 });
}

Test(stage2_pages, punch_second_folio_2m)
{
	check_punch(&(struct punch_case){ GM_GUEST_MEMFD_FOLIO_2M, FOLIO_PAGES, FOLIO_PAGES });
}

Test(stage2_pages, punch_first_folio_2m)
{
	check_punch(&(struct punch_case){ GM_GUEST_MEMFD_FOLIO_2M, 0, FOLIO_PAGES });
}

/* ---- conversion ---- */

struct range {
	uint64_t first, n;
};

/*
 * Converts the ranges to private in order after the guest mapped every page shared, then
 * has the guest read every page shared again: exactly the private pages must fault, each
 * page must still hold its contents, and the VMM must see them shared again afterwards.
 */
static void check_conversion(uint64_t folio, const struct range *ranges, size_t nr)
{
	struct pages_env e;
	bool want[FILE_PAGES] = { false }, faulted[FILE_PAGES] = { false };

	env_setup(&e, folio);
	scan_round(&e, NULL);
	for (size_t r = 0; r < nr; r++) {
		cr_assert_eq(convert(e.gmem, ranges[r].first, ranges[r].n, PRIVATE), 0);
		for (uint64_t i = ranges[r].first; i < ranges[r].first + ranges[r].n; i++)
			want[i] = true;
	}
	for (uint64_t i = 0; i < FILE_PAGES; i++)
		cr_expect_eq(vmm_host_faults(&e.host[i * PAGE / 8]), want[i], "host access to page %llu",
			     (unsigned long long)i);
	scan_round(&e, faulted);
	for (uint64_t i = 0; i < FILE_PAGES; i++) {
		cr_expect_eq(faulted[i], want[i], "page %llu: %s", (unsigned long long)i,
			     want[i] ? "private, yet the guest read it shared"
				     : "shared, yet the guest's shared read faulted");
		cr_expect_eq(e.scan.seen[i], i + 1, "page %llu contents", (unsigned long long)i);
	}
	/* All shared again, as the VMM's answers made them; a last scan faults nowhere. */
	scan_round(&e, NULL);
	env_teardown(&e);
}

#define CONVERSION_TESTS(name, folio)                                                             \
	Test(stage2_pages, convert_first_page_##name)                                             \
	{                                                                                         \
		check_conversion(folio, (struct range[]){ { 0, 1 } }, 1);                          \
	}                                                                                         \
	Test(stage2_pages, convert_last_page_of_folio_##name)                                     \
	{                                                                                         \
		check_conversion(folio, (struct range[]){ { FOLIO_PAGES - 1, 1 } }, 1);            \
	}                                                                                         \
	Test(stage2_pages, convert_one_middle_page_##name)                                        \
	{                                                                                         \
		check_conversion(folio, (struct range[]){ { 300, 1 } }, 1);                        \
	}                                                                                         \
	Test(stage2_pages, convert_head_of_folio_##name)                                          \
	{                                                                                         \
		check_conversion(folio, (struct range[]){ { FOLIO_PAGES, 37 } }, 1);               \
	}                                                                                         \
	Test(stage2_pages, convert_tail_of_folio_##name)                                          \
	{                                                                                         \
		check_conversion(folio, (struct range[]){ { FOLIO_PAGES - 32, 32 } }, 1);          \
	}                                                                                         \
	Test(stage2_pages, convert_whole_folio_##name)                                            \
	{                                                                                         \
		check_conversion(folio, (struct range[]){ { FOLIO_PAGES, FOLIO_PAGES } }, 1);      \
	}                                                                                         \
	Test(stage2_pages, convert_across_folios_##name)                                          \
	{                                                                                         \
		check_conversion(folio, (struct range[]){ { FOLIO_PAGES - 12, 30 } }, 1);          \
	}                                                                                         \
	Test(stage2_pages, convert_last_page_of_file_##name)                                      \
	{                                                                                         \
		check_conversion(folio, (struct range[]){ { FILE_PAGES - 1, 1 } }, 1);             \
	}                                                                                         \
	Test(stage2_pages, convert_range_whose_first_page_is_private_##name)                      \
	{                                                                                         \
		check_conversion(folio, (struct range[]){ { 5, 1 }, { 5, 9 } }, 2);                \
	}

/*
 * The guest's last access before the conversion was to the converted page itself: its
 * vCPU's cached translation must not outlive the conversion either.
 */
static void check_reread(uint64_t folio, uint64_t page)
{
	struct pages_env e;
	bool faulted[FILE_PAGES] = { false };

	env_setup(&e, folio);
	e.scan.from = page;
	e.scan.to = page + 1;
	scan_round(&e, NULL);
	cr_assert_eq(convert(e.gmem, page, 1, PRIVATE), 0);
	scan_round(&e, faulted);
	cr_expect(faulted[page], "the guest read private page %llu through a stale translation",
		  (unsigned long long)page);
	env_teardown(&e);
}

Test(stage2_pages, convert_page_just_read_4k)
{
	check_reread(GM_GUEST_MEMFD_FOLIO_4K, 7);
}

Test(stage2_pages, convert_page_just_read_2m)
{
	check_reread(GM_GUEST_MEMFD_FOLIO_2M, FOLIO_PAGES + 7);
}

/* A slot whose guest frames and file pages disagree modulo 2M: 4K leaves, each its own page. */
Test(stage2_pages, misaligned_slot_reads_its_own_pages_2m)
{
	struct pages_env e;

	env_setup(&e, GM_GUEST_MEMFD_FOLIO_2M);
	/* Rebind one page higher: guest page i (from 1) is file page i - 1, holding i. */
	cr_assert_eq(vmm_set_slot(&e.m, 0, BASE_GPA, 0, -1, 0), 0);
	cr_assert_eq(vmm_set_slot(&e.m, 1, BASE_GPA + PAGE, (FILE_PAGES - 1) * PAGE, e.gmem, 0), 0);
	e.scan.from = 1;
	scan_round(&e, NULL);
	for (uint64_t i = 1; i < FILE_PAGES; i++)
		cr_expect_eq(e.scan.seen[i], i, "guest page %llu", (unsigned long long)i);
	env_teardown(&e);
}

CONVERSION_TESTS(4k, GM_GUEST_MEMFD_FOLIO_4K)
CONVERSION_TESTS(2m, GM_GUEST_MEMFD_FOLIO_2M)
