/* Memory is real: punch-hole gives backing pages back to the system, seen in st_blocks, gm_gmem_info and RSS. */
#include "harness/skip_report.h"
#include "harness/surface.h"

#include <linux/falloc.h>
#include <stdio.h>
#include <string.h>

#define SZ_64M (64ULL << 20)
#define PUNCH (FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE)

/* Resident bytes of this process, from /proc/self/statm. */
static uint64_t rss_bytes(void)
{
	unsigned long long size, resident;
	FILE *f = fopen("/proc/self/statm", "r");

	cr_assert_not_null(f);
	cr_assert_eq(fscanf(f, "%llu %llu", &size, &resident), 2);
	fclose(f);
	return resident * (uint64_t)sysconf(_SC_PAGESIZE);
}

static uint64_t allocated(int fd)
{
	struct gm_gmem_info info;

	cr_assert_eq(gm_gmem_info(fd, &info), 0);
	return info.allocated_bytes;
}

static uint64_t blocks_bytes(int fd)
{
	struct stat st;

	cr_assert_eq(gm_fstat(fd, &st), 0);
	return (uint64_t)st.st_blocks * 512;
}

struct memory_case {
	uint64_t folio;
};

ParameterizedTestParameters(memory, punch_frees)
{
	static struct memory_case cases[] = { { GM_GUEST_MEMFD_FOLIO_4K },
					      { GM_GUEST_MEMFD_FOLIO_2M } };

	return cr_make_param_array(struct memory_case, cases, 2);
}

/* Touching memory allocates it; punching returns it, file-wide and in the process's RSS. */
ParameterizedTest(struct memory_case *c, memory, punch_frees)
{
	const uint64_t slack = 8ULL << 20;
	int vm = t_create_vm(KVM_X86_DEFAULT_VM);
	int gmem = t_create_gmem(vm, SZ_64M,
				 GUEST_MEMFD_FLAG_MMAP | GUEST_MEMFD_FLAG_INIT_SHARED | c->folio);
	uint64_t rss0, rss1, rss2;
	struct gm_gmem_info info;
	bool count_rss;
	char *p;

	/* hugetlbfs pages (2M folios when some process reserved huge pages) are not in RSS. */
	cr_assert_eq(gm_gmem_info(gmem, &info), 0);
	count_rss = info.backing == GM_BACKING_MEMFD;
	if (!count_rss)
		/* A check left out is a skip to report, not a warning that fails the run. */
		gm_report_skip("unit memory/punch_frees, its RSS check",
			       "the 2M file is on hugetlbfs (huge pages are reserved on this host), "
			       "whose pages are not in RSS");
	cr_expect_eq(allocated(gmem), 0, "a new file holds no memory");
	cr_expect_eq(blocks_bytes(gmem), 0);
	p = gm_mmap(NULL, SZ_64M, PROT_READ | PROT_WRITE, MAP_SHARED, gmem, 0);
	cr_assert_neq(p, MAP_FAILED, "%s", strerror(errno));
	rss0 = rss_bytes();
	memset(p, 0x77, SZ_64M);
	rss1 = rss_bytes();
	cr_expect_geq(allocated(gmem), SZ_64M);
	cr_expect_geq(blocks_bytes(gmem), SZ_64M, "st_blocks counts the backing's blocks");
	cr_expect(!count_rss || rss1 >= rss0 + SZ_64M - slack, "RSS %llu -> %llu",
		      (unsigned long long)rss0, (unsigned long long)rss1);

	/* Punch all but the first 2M: that memory goes back to the system. */
	cr_assert_eq(gm_fallocate(gmem, PUNCH, 2 << 20, SZ_64M - (2 << 20)), 0, "%s",
		     strerror(errno));
	rss2 = rss_bytes();
	cr_expect_eq(allocated(gmem), 2 << 20, "allocated %llu after punch",
		     (unsigned long long)allocated(gmem));
	cr_expect_eq(blocks_bytes(gmem), 2 << 20);
	cr_expect(!count_rss || rss2 + SZ_64M - slack <= rss1, "RSS %llu -> %llu after punch",
		      (unsigned long long)rss1, (unsigned long long)rss2);
	cr_expect_eq(p[0], 0x77);
	cr_expect_eq(p[SZ_64M - 1], 0);

	/* fallocate allocates without mapping anything in; punch frees it again. */
	cr_assert_eq(gm_fallocate(gmem, FALLOC_FL_KEEP_SIZE, 0, SZ_64M), 0, "%s", strerror(errno));
	cr_expect_geq(allocated(gmem), SZ_64M);
	cr_expect(!count_rss || rss_bytes() <= rss2 + slack,
		  "fallocate faulted pages into the mapping");
	cr_assert_eq(gm_fallocate(gmem, PUNCH, 0, SZ_64M), 0);
	cr_expect_eq(allocated(gmem), 0);
	cr_expect_eq(p[0], 0, "punched memory reads as zeros");

	gm_munmap(p, SZ_64M);
	gm_close(gmem);
	gm_close(vm);
}

/* A failed fallocate or mmap leaves the allocation and the mappings as they were. */
Test(memory, failed_calls_change_nothing)
{
	int vm = t_create_vm(KVM_X86_DEFAULT_VM);
	int gmem = t_create_gmem(vm, 16 * PAGE_SIZE,
				 GUEST_MEMFD_FLAG_MMAP | GUEST_MEMFD_FLAG_INIT_SHARED);
	struct gm_gmem_info before, after;
	char *p;

	p = gm_mmap(NULL, 16 * PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, gmem, 0);
	cr_assert_neq(p, MAP_FAILED);
	memset(p, 0x3c, 8 * PAGE_SIZE);
	cr_assert_eq(gm_gmem_info(gmem, &before), 0);

	cr_expect_eq(gm_fallocate(gmem, PUNCH, 1, PAGE_SIZE), -1);
	cr_expect_eq(gm_fallocate(gmem, PUNCH | FALLOC_FL_ZERO_RANGE, 0, PAGE_SIZE), -1);
	cr_expect_eq(gm_fallocate(gmem, FALLOC_FL_PUNCH_HOLE, 0, 16 * PAGE_SIZE), -1);
	cr_expect_eq(gm_fallocate(gmem, FALLOC_FL_KEEP_SIZE, 8 * PAGE_SIZE, 16 * PAGE_SIZE), -1);
	cr_expect_eq(gm_fallocate(gmem, PUNCH, PAGE_SIZE, INT64_MAX & ~4095LL), -1);
	cr_expect_eq(gm_fallocate(gmem, 0, 0, 16 * PAGE_SIZE), -1);
	cr_expect_eq(gm_mmap(NULL, PAGE_SIZE, PROT_READ, MAP_PRIVATE, gmem, 0), MAP_FAILED);
	cr_expect_eq(gm_mmap(NULL, PAGE_SIZE, PROT_EXEC, MAP_SHARED, gmem, 0), MAP_FAILED);
	cr_expect_eq(gm_mmap(p, PAGE_SIZE, PROT_READ | PROT_EXEC, MAP_SHARED | MAP_FIXED, gmem, 0),
		     MAP_FAILED);
	cr_expect_eq(gm_mmap(NULL, 0, PROT_READ, MAP_SHARED, gmem, 0), MAP_FAILED);
	cr_expect_eq(gm_munmap((char *)p + 1, PAGE_SIZE), -1, "munmap of an unaligned address");

	cr_assert_eq(gm_gmem_info(gmem, &after), 0);
	cr_expect_eq(after.allocated_bytes, before.allocated_bytes);
	cr_expect_eq(after.host_mappings, before.host_mappings);
	cr_expect_eq(after.shared_bytes, before.shared_bytes);
	for (size_t i = 0; i < 8 * PAGE_SIZE; i += PAGE_SIZE / 2)
		cr_assert_eq(p[i], 0x3c, "byte %zu changed", i);
	gm_munmap(p, 16 * PAGE_SIZE);
	gm_close(gmem);
	gm_close(vm);
}
