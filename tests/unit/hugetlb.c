/* 2M-folio guest_memfd on hugetlbfs when huge pages are reserved, and the memfd fallback when not. */
#include "harness/hugepage_pool.h"
#include "harness/skip_report.h"
#include "harness/surface.h"
#include "internal.h"

#include <linux/falloc.h>
#include <stdio.h>
#include <string.h>

#define PUNCH (FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE)
#define FILE_SIZE (2 * SZ_2M)

/*
 * All hugepage work is in one test: criterion runs tests in parallel
 * processes, and two of them changing the pool at once would race.
 */
static long saved_nr = -1;

/* Runs after the test however it ends (assertion, skip or success). */
static void restore_nr(void)
{
	if (saved_nr >= 0 && !hugepage_pool_write(saved_nr))
		cr_log_error("could not restore %s to %ld", HUGEPAGE_POOL, saved_nr);
	saved_nr = -1;
}

static long meminfo(const char *key)
{
	FILE *f = fopen("/proc/meminfo", "r");
	char line[128];
	long v = -1;

	cr_assert_not_null(f);
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, key, strlen(key)))
			sscanf(line + strlen(key), "%ld", &v);
	fclose(f);
	return v;
}

/* Default-size huge pages that a new reservation can still take. */
static long hugepages_available(void)
{
	return meminfo("HugePages_Free:") - meminfo("HugePages_Rsvd:");
}

static struct gm_gmem_info info_of(int fd)
{
	struct gm_gmem_info info;

	cr_assert_eq(gm_gmem_info(fd, &info), 0);
	return info;
}

static int create_2m_gmem(int vm)
{
	return t_create_gmem(vm, FILE_SIZE,
			     GUEST_MEMFD_FLAG_MMAP | GUEST_MEMFD_FLAG_INIT_SHARED |
				     GM_GUEST_MEMFD_FOLIO_2M);
}

/* No huge pages to reserve: the file still works, on a plain memfd. */
static void check_fallback(int vm)
{
	int gmem = create_2m_gmem(vm);
	struct gm_gmem_info info = info_of(gmem);
	char *p;

	cr_expect_eq(info.backing, GM_BACKING_MEMFD, "backing %u without huge pages", info.backing);
	cr_expect_eq(info.folio_size, SZ_2M);
	p = gm_mmap(NULL, FILE_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, gmem, 0);
	cr_assert_neq(p, MAP_FAILED, "%s", strerror(errno));
	p[SZ_2M] = 1;
	cr_expect_eq(gm_fallocate(gmem, PUNCH, SZ_2M, SZ_2M), 0);
	cr_expect_eq(p[SZ_2M], 0);
	gm_munmap(p, FILE_SIZE);
	gm_close(gmem);
}

/* Reserved huge pages: the file is on hugetlbfs; punch frees whole huge pages. */
static void check_hugetlb(int vm)
{
	int gmem = create_2m_gmem(vm);
	struct gm_gmem_info info = info_of(gmem);
	bool lost;
	char *p;

	cr_assert_eq(info.backing, GM_BACKING_HUGETLB, "backing %u with %ld huge pages free",
		     info.backing, hugepages_available());
	cr_expect_eq(info.folio_size, SZ_2M);
	p = gm_mmap(NULL, FILE_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, gmem, 0);
	cr_assert_neq(p, MAP_FAILED, "%s", strerror(errno));
	cr_expect_eq((uintptr_t)p % SZ_2M, 0, "mapping not huge-aligned");
	p[0] = 1;
	p[SZ_2M + 5] = 2;
	p[FILE_SIZE - 1] = 3;
	cr_expect_eq(info_of(gmem).allocated_bytes, FILE_SIZE);

	/* Huge folios are punched whole. */
	cr_expect_eq(gm_fallocate(gmem, PUNCH, SZ_2M, PAGE_SIZE), -1);
	cr_expect_eq(errno, EINVAL);
	cr_expect_eq(info_of(gmem).allocated_bytes, FILE_SIZE);
	cr_assert_eq(gm_fallocate(gmem, PUNCH, SZ_2M, SZ_2M), 0, "%s", strerror(errno));
	cr_expect_eq(info_of(gmem).allocated_bytes, SZ_2M, "allocated %llu after punch",
		     (unsigned long long)info_of(gmem).allocated_bytes);
	cr_expect_eq(p[0], 1, "the other huge page keeps its data");

	/*
	 * The file keeps its huge pages reserved after a punch: even with the
	 * pool shrunk to what is in use or reserved, the hole can be touched.
	 */
	cr_assert(hugepage_pool_write(0), "cannot write %s", HUGEPAGE_POOL);
	lost = t_access_sigbus(p + SZ_2M + 5, false);
	cr_expect_not(lost, "punched huge page lost its reservation");
	/* Touching it again would crash the worker and skip restoring the pool. */
	if (!lost) {
		cr_expect_eq(p[SZ_2M + 5], 0);
		cr_expect_eq(p[FILE_SIZE - 1], 0);
	}

	cr_expect_eq(gm_fallocate(gmem, FALLOC_FL_KEEP_SIZE, 0, FILE_SIZE), 0, "%s",
		     strerror(errno));
	cr_expect_eq(info_of(gmem).allocated_bytes, FILE_SIZE);
	gm_munmap(p, FILE_SIZE);
	gm_close(gmem);
}

static int convert(int gmem, uint64_t offset, uint64_t size, uint64_t attrs)
{
	struct kvm_memory_attributes2 a = { .offset = offset, .size = size, .attributes = attrs };

	return gm_ioctl(gmem, KVM_SET_MEMORY_ATTRIBUTES2, &a) ? errno : 0;
}

/*
 * A split folio made uniform again merges back to a huge page, which hides
 * it from the host and maps it again. When those mmaps fail the host's view
 * must still match the attributes: a shared page readable with its data once
 * a retry works, hidden (SIGBUS) otherwise, a private page never readable.
 */
static void check_merge_remap_failure(void)
{
	int vm = t_create_vm(KVM_X86_SW_PROTECTED_VM);
	int gmem = create_2m_gmem(vm);
	int injected = 0;
	char *p;

	cr_assert_eq(info_of(gmem).backing, GM_BACKING_HUGETLB);
	p = gm_mmap(NULL, FILE_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, gmem, 0);
	cr_assert_neq(p, MAP_FAILED, "%s", strerror(errno));
	for (uint64_t i = 0; i < SZ_2M / PAGE_SIZE; i++)
		p[i * PAGE_SIZE] = (char)(i + 1);
	for (long times = 1; times <= 2; times++)
		for (long after = 1; after <= 6; after++) {
			int ret;

			cr_assert_eq(convert(gmem, 7 * PAGE_SIZE, PAGE_SIZE, KVM_MEMORY_ATTRIBUTE_PRIVATE), 0);
			cr_assert_eq(info_of(gmem).split_folios, 1);
			gm_hostmap_fail(after, times);
			ret = convert(gmem, 7 * PAGE_SIZE, PAGE_SIZE, 0);
			gm_hostmap_fail(0, 0);
			if (ret) {
				/* The conversion's own remap failed: nothing changed, page 7 is private. */
				cr_expect_eq(ret, ENOMEM);
				cr_expect(t_access_sigbus(p + 7 * PAGE_SIZE, false));
				cr_assert_eq(convert(gmem, 7 * PAGE_SIZE, PAGE_SIZE, 0), 0);
				continue;
			}
			injected++;
			for (uint64_t i = 0; i < SZ_2M / PAGE_SIZE; i++) {
				volatile char *page = p + i * PAGE_SIZE;
				bool hidden = t_access_sigbus(page, false);

				/* One failure is retried: the shared folio is shown again, with its data. */
				if (times == 1)
					cr_expect_not(hidden, "shared page %llu hidden (after %ld)",
						      (unsigned long long)i, after);
				if (!hidden)
					cr_expect_eq(*page, (char)(i + 1), "page %llu lost its data (after %ld, "
						     "%ld failing)", (unsigned long long)i, after, times);
			}
			/* A later conversion lays a hidden folio again. */
			cr_assert_eq(convert(gmem, 0, SZ_2M, 0), 0);
		}
	cr_expect_gt(injected, 0);
	gm_munmap(p, FILE_SIZE);
	gm_close(gmem);
	gm_close(vm);
}

/*
 * A mapping cut inside a split folio (private and split folios map in 4 KiB
 * pieces) cannot show the folio as one huge page again: when it becomes
 * uniform, it stays split and every shared page stays readable.
 */
static void check_merge_with_cut_mapping(void)
{
	int vm = t_create_vm(KVM_X86_SW_PROTECTED_VM);
	int gmem = create_2m_gmem(vm);
	char *p;

	cr_assert_eq(info_of(gmem).backing, GM_BACKING_HUGETLB);
	p = gm_mmap(NULL, FILE_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, gmem, 0);
	cr_assert_neq(p, MAP_FAILED, "%s", strerror(errno));
	for (uint64_t i = 0; i < SZ_2M / PAGE_SIZE; i++)
		p[i * PAGE_SIZE] = (char)(i + 1);
	cr_assert_eq(convert(gmem, 7 * PAGE_SIZE, PAGE_SIZE, KVM_MEMORY_ATTRIBUTE_PRIVATE), 0);
	cr_assert_eq(gm_munmap(p + 7 * PAGE_SIZE, PAGE_SIZE), 0, "%s", strerror(errno));
	cr_assert_eq(convert(gmem, 7 * PAGE_SIZE, PAGE_SIZE, 0), 0);
	for (uint64_t i = 0; i < SZ_2M / PAGE_SIZE; i++) {
		volatile char *page = p + i * PAGE_SIZE;

		if (i == 7)
			continue;
		cr_assert_not(t_access_sigbus(page, false), "shared page %llu hidden",
			      (unsigned long long)i);
		cr_expect_eq(*page, (char)(i + 1), "page %llu lost its data", (unsigned long long)i);
	}
	gm_munmap(p, 7 * PAGE_SIZE);
	gm_munmap(p + 8 * PAGE_SIZE, FILE_SIZE - 8 * PAGE_SIZE);
	gm_close(gmem);
	gm_close(vm);
}

Test(hugetlb, backing_and_fallback, .fini = restore_nr)
{
	int vm;

	if (geteuid() != 0)
		cr_skip_test("not root: cannot change %s", HUGEPAGE_POOL);
	if (meminfo("Hugepagesize:") != 2048)
		cr_skip_test("the default huge page size is %ld kB, not 2048",
			     meminfo("Hugepagesize:"));
	saved_nr = hugepage_pool_read();
	cr_assert_geq(saved_nr, 0, "cannot read %s", HUGEPAGE_POOL);
	vm = t_create_vm(KVM_X86_DEFAULT_VM);

	cr_assert(hugepage_pool_write(0), "cannot write %s", HUGEPAGE_POOL);
	if (hugepages_available() == 0)
		check_fallback(vm);
	else
		/* A check left out is a reported skip; a Criterion warning would fail the run. */
		gm_report_skip("unit hugetlb/backing_and_fallback, its memfd fallback",
			       "huge pages still free after emptying the pool (another process holds them)");

	/* Room for the file plus a margin for other processes that map huge pages. */
	if (!hugepage_pool_write(saved_nr + 8) || hugepages_available() < 2) {
		long avail = hugepages_available();

		gm_close(vm);
		restore_nr();
		cr_skip_test("could not reserve two 2M huge pages (%ld available)", avail);
	}
	check_hugetlb(vm);
	/* check_hugetlb shrank the pool to what it used: grow it again. */
	if (!hugepage_pool_write(saved_nr + 8) || hugepages_available() < 2) {
		long avail = hugepages_available();

		gm_close(vm);
		restore_nr();
		cr_skip_test("merge checks: could not reserve two 2M huge pages (%ld available)", avail);
	}
	check_merge_remap_failure();
	check_merge_with_cut_mapping();
	gm_close(vm);
	restore_nr();
}
