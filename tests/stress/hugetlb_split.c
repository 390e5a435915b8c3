/* hugetlbfs folios split when a conversion mixes them and merge when they are of one kind again. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <linux/falloc.h>
#include <stdbool.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <gmem/gmem.h>

#include "harness/hugepage_pool.h"
#include "harness/skip_report.h"
#include "stress/check.h"

#define SZ_2M (2ULL << 20)
#define SIZE (4 * SZ_2M)
#define PAGE 4096ULL
#define GPA (1ULL << 30)

static long pool_before = -1;

static void restore_pool(void)
{
	if (pool_before >= 0)
		hugepage_pool_write(pool_before);
}

static sigjmp_buf jmp;

static void on_sigbus(int sig)
{
	siglongjmp(jmp, 1);
}

static bool host_faults(volatile uint64_t *p)
{
	if (sigsetjmp(jmp, 1) == 0) {
		(void)*p;
		return false;
	}
	return true;
}

/* The guest: reads the first word of every page and reports how many differ from their index. */
static void guest_scan(struct gm_guest *g, void *arg)
{
	for (;;) {
		uint64_t bad = 0;

		for (uint64_t p = 0; p < SIZE / PAGE; p++)
			bad += gm_guest_read64(g, GPA + p * PAGE) != p;
		gm_guest_ucall(g, GM_UCALL_SYNC, 1, bad);
	}
}

static int convert_range(int gmem, uint64_t off, uint64_t size, bool private,
			 uint64_t *error_offset)
{
	struct kvm_memory_attributes2 a = {
		.offset = off, .size = size, .attributes = private ? KVM_MEMORY_ATTRIBUTE_PRIVATE : 0,
	};
	int ret = gm_ioctl(gmem, KVM_SET_MEMORY_ATTRIBUTES2, &a) ? errno : 0;

	if (error_offset)
		*error_offset = a.error_offset;
	return ret;
}

static int convert(int gmem, uint64_t off, bool private, uint64_t *error_offset)
{
	return convert_range(gmem, off, PAGE, private, error_offset);
}

static uint64_t scan(int vcpu, struct kvm_run *run)
{
	struct gm_ucall uc;

	REQUIRE(gm_ioctl(vcpu, KVM_RUN, 0) == 0 && run->exit_reason == KVM_EXIT_IO, "run: exit %u",
		run->exit_reason);
	gm_vcpu_get_ucall(vcpu, &uc);
	return uc.args[0];
}

int main(void)
{
	struct sigaction sa = { .sa_handler = on_sigbus };
	struct gm_gmem_info info;
	struct gm_mmu_stats st;
	uint64_t err_off;

	/* Without huge pages nothing here can run: exit 77 (skipped), never 0. */
	if (geteuid() != 0) {
		gm_report_skip("stress-hugetlb_split", "reserving huge pages needs root");
		return GM_EXIT_SKIPPED;
	}
	pool_before = hugepage_pool_read();
	atexit(restore_pool);
	if (pool_before < 0 || !hugepage_pool_write(pool_before + SIZE / SZ_2M + 2)) {
		gm_report_skip("stress-hugetlb_split", "cannot grow %s", HUGEPAGE_POOL);
		return GM_EXIT_SKIPPED;
	}
	sigaction(SIGBUS, &sa, NULL);

	int kvm = gm_open_kvm();
	int vm = gm_ioctl(kvm, KVM_CREATE_VM, KVM_X86_SW_PROTECTED_VM | GM_VM_BACKEND_SOFT);
	struct kvm_create_guest_memfd c = {
		.size = SIZE, .flags = GUEST_MEMFD_FLAG_MMAP | GUEST_MEMFD_FLAG_INIT_SHARED |
				       GM_GUEST_MEMFD_FOLIO_2M,
	};
	int gmem = gm_ioctl(vm, KVM_CREATE_GUEST_MEMFD, &c);

	REQUIRE(gmem >= 0, "create: %s", strerror(errno));
	gm_gmem_info(gmem, &info);
	if (info.backing != GM_BACKING_HUGETLB) {
		gm_report_skip("stress-hugetlb_split", "the huge page pool did not give %llu pages",
			       (unsigned long long)(SIZE / SZ_2M));
		return GM_EXIT_SKIPPED;
	}
	uint64_t *host = gm_mmap(NULL, SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, gmem, 0);
	REQUIRE(host != MAP_FAILED, "mmap: %s", strerror(errno));
	for (uint64_t p = 0; p < SIZE / PAGE; p++)
		host[p * 512] = p;
	struct kvm_userspace_memory_region2 r = {
		.slot = 0, .flags = KVM_MEM_GUEST_MEMFD, .guest_phys_addr = GPA, .memory_size = SIZE,
		.guest_memfd = (uint32_t)gmem,
	};
	REQUIRE(gm_ioctl(vm, KVM_SET_USER_MEMORY_REGION2, &r) == 0, "slot");
	int vcpu = gm_ioctl(vm, KVM_CREATE_VCPU, 0);
	struct kvm_run *run = gm_mmap(NULL, 3 * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
	REQUIRE(gm_vcpu_set_guest(vcpu, guest_scan, NULL) == 0, "guest");

	CHECK(scan(vcpu, run) == 0, "the guest sees the host's data");
	gm_vm_mmu_stats(vm, &st);
	CHECK(st.mapped_2m_bytes == SIZE, "2M leaves: %llu", (unsigned long long)st.mapped_2m_bytes);

	/* One page of folio 1 turns private: the folio splits, its data where it was. */
	uint64_t page5 = SZ_2M + 5 * PAGE;
	CHECK(convert(gmem, page5, true, NULL) == 0, "convert to private");
	gm_gmem_info(gmem, &info);
	CHECK(info.split_folios == 1, "split folios: %llu", (unsigned long long)info.split_folios);
	CHECK(host_faults(&host[page5 / 8]), "the private page is hidden from the host");
	CHECK(!host_faults(&host[(page5 + PAGE) / 8]) && host[(page5 + PAGE) / 8] == page5 / PAGE + 1,
	      "the folio's shared neighbour kept its data");
	CHECK(host[0] == 0 && host[3 * SZ_2M / 8] == 3 * SZ_2M / PAGE, "other folios untouched");
	CHECK(scan(vcpu, run) == 0, "the guest reads every page in place, the private one too");
	gm_vm_mmu_stats(vm, &st);
	CHECK(st.mapped_4k_bytes == SZ_2M && st.mapped_2m_bytes == SIZE - SZ_2M,
	      "split folio on 4K leaves: 4K %llu, 2M %llu", (unsigned long long)st.mapped_4k_bytes,
	      (unsigned long long)st.mapped_2m_bytes);

	/* The host writes in the split folio; converting back merges it, data and all. */
	host[(page5 + PAGE) / 8] = 0x5eed;
	CHECK(convert(gmem, page5, false, NULL) == 0, "convert back");
	gm_gmem_info(gmem, &info);
	CHECK(info.split_folios == 0, "merged: split folios %llu", (unsigned long long)info.split_folios);
	CHECK(host[page5 / 8] == page5 / PAGE, "the page is back for the host, contents kept");
	CHECK(host[(page5 + PAGE) / 8] == 0x5eed, "the host's write survived the merge");
	host[(page5 + PAGE) / 8] = page5 / PAGE + 1;
	CHECK(scan(vcpu, run) == 0, "the guest sees the same");
	gm_vm_mmu_stats(vm, &st);
	CHECK(st.mapped_2m_bytes == SIZE && st.mapped_4k_bytes == 0,
	      "one 2M leaf per folio again: 2M %llu, 4K %llu",
	      (unsigned long long)st.mapped_2m_bytes, (unsigned long long)st.mapped_4k_bytes);

	/* A pinned page would move with its folio: the split is refused, nothing changes. */
	uint64_t folio2 = 2 * SZ_2M;
	CHECK(gm_gmem_pin(gmem, folio2, PAGE, NULL) == 0, "pin");
	CHECK(convert(gmem, folio2 + 3 * PAGE, true, &err_off) == EAGAIN, "split of a pinned folio");
	CHECK(err_off == folio2, "error_offset %#llx", (unsigned long long)err_off);
	gm_gmem_info(gmem, &info);
	CHECK(info.split_folios == 0 && info.shared_bytes == SIZE, "nothing changed");
	CHECK(gm_gmem_unpin(gmem, folio2, PAGE) == 0, "unpin");
	CHECK(convert(gmem, folio2 + 3 * PAGE, true, NULL) == 0, "split once unpinned");

	/*
	 * A shared run that starts inside a split folio and goes on into a whole
	 * one: each folio's pages come from its own store.
	 */
	uint64_t folio3 = 3 * SZ_2M, from = folio2 + 100 * PAGE;
	CHECK(convert_range(gmem, folio3, SZ_2M, true, NULL) == 0, "folio 3 to private, whole");
	CHECK(convert_range(gmem, from, folio3 + SZ_2M - from, false, NULL) == 0,
	      "shared from inside split folio 2 to the end of whole folio 3");
	gm_gmem_info(gmem, &info);
	CHECK(info.split_folios == 1, "only folio 2 split: %llu", (unsigned long long)info.split_folios);
	CHECK(host_faults(&host[(folio2 + 3 * PAGE) / 8]), "folio 2's private page stays hidden");
	bool intact = true;
	for (uint64_t p = folio2 + 4 * PAGE; p < SIZE; p += PAGE)
		intact &= !host_faults(&host[p / 8]) && host[p / 8] == p / PAGE;
	CHECK(intact, "folios 2 and 3 read their own data through the host mapping");
	CHECK(scan(vcpu, run) == 0, "and through the guest");

	/* Punching a split folio frees it from the split store; it stays split while mixed. */
	CHECK(gm_fallocate(gmem, FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE, folio2, SZ_2M) == 0,
	      "punch");
	CHECK(host[(folio2 + PAGE) / 8] == 0, "punched shared page reads zero");
	CHECK(host_faults(&host[(folio2 + 3 * PAGE) / 8]), "punched private page stays private");

	gm_munmap(run, 3 * PAGE);
	gm_close(vcpu);
	gm_munmap(host, SIZE);
	gm_close(gmem);
	gm_close(vm);
	gm_close(kvm);
	return check_summary("hugetlb_split");
}
