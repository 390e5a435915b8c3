/* Closing every fd and unmapping every mapping releases every object and all library metadata. */
#include "harness/process.h"
#include "harness/surface.h"

#include <linux/falloc.h>
#include <string.h>

static struct gm_stats stats(void)
{
	struct gm_stats s;

	cr_assert_eq(gm_stats(&s), 0);
	return s;
}

/* What the process holds, beside the library's own count of it. */
struct held {
	struct gm_stats lib;
	int fds, memfd_maps, maps;
};

static void expect_released(const struct held *before)
{
	const struct gm_stats *base = &before->lib;
	struct gm_stats s = stats();

	/* The process, not only the library's counters, is back where it was. */
	cr_expect_eq(process_fds(), before->fds, "open fds: %d before, %d after", before->fds,
		     process_fds());
	cr_expect_eq(process_maps("memfd:"), before->memfd_maps, "memfd mappings: %d before, %d after",
		     before->memfd_maps, process_maps("memfd:"));
	cr_expect_eq(process_maps(NULL), before->maps, "mappings: %d before, %d after", before->maps,
		     process_maps(NULL));

	cr_expect_eq(s.gmem_files, 0, "%llu files left", (unsigned long long)s.gmem_files);
	cr_expect_eq(s.vms, 0, "%llu VMs left", (unsigned long long)s.vms);
	cr_expect_eq(s.open_fds, 0, "%llu fds left", (unsigned long long)s.open_fds);
	cr_expect_eq(s.metadata_bytes, base->metadata_bytes, "metadata %llu -> %llu bytes",
		     (unsigned long long)base->metadata_bytes,
		     (unsigned long long)s.metadata_bytes);
}

/* What the library keeps for good once used is warmed before taking the baseline. */
static struct held baseline(void)
{
	/* The fd table's first chunk and the host mappings' empty store stay for good. */
	int kvm = gm_open_kvm();
	int vm = gm_ioctl(kvm, KVM_CREATE_VM, KVM_X86_DEFAULT_VM);
	struct kvm_create_guest_memfd args = { .size = PAGE_SIZE, .flags = GUEST_MEMFD_FLAG_MMAP };
	int gmem = gm_ioctl(vm, KVM_CREATE_GUEST_MEMFD, &args);
	void *p = gm_mmap(NULL, PAGE_SIZE, PROT_READ, MAP_SHARED, gmem, 0);

	cr_assert_neq(p, MAP_FAILED, "warming up: %s", strerror(errno));
	gm_munmap(p, PAGE_SIZE);
	gm_close(gmem);
	gm_close(vm);
	gm_close(kvm);
	return (struct held){ stats(), process_fds(), process_maps("memfd:"), process_maps(NULL) };
}

static int create_gmem(int vm, uint64_t size, uint64_t flags)
{
	struct kvm_create_guest_memfd args = { .size = size, .flags = flags };
	int fd = gm_ioctl(vm, KVM_CREATE_GUEST_MEMFD, &args);

	cr_assert_geq(fd, 0, "%s", strerror(errno));
	return fd;
}

/* VM fd first, then files, then mappings: each keeps the one before alive until it goes. */
Test(release, vm_first)
{
	struct held base = baseline();
	struct gm_stats s;
	const uint64_t shared = GUEST_MEMFD_FLAG_MMAP | GUEST_MEMFD_FLAG_INIT_SHARED;
	int kvm = gm_open_kvm(), vm, g[3];
	char *p, *q;

	vm = gm_ioctl(kvm, KVM_CREATE_VM, KVM_X86_SW_PROTECTED_VM);
	cr_assert_geq(vm, 0);
	g[0] = create_gmem(vm, 64 * PAGE_SIZE, shared);
	g[1] = create_gmem(vm, 4 << 20, shared | GM_GUEST_MEMFD_FOLIO_2M);
	g[2] = create_gmem(vm, 16 * PAGE_SIZE, GUEST_MEMFD_FLAG_MMAP);
	s = stats();
	cr_expect_eq(s.gmem_files, 3);
	cr_expect_eq(s.vms, 1);
	cr_expect_eq(s.open_fds, 5);
	cr_expect_gt(s.metadata_bytes, base.lib.metadata_bytes);
	cr_expect_geq(process_fds(), base.fds + 5, "the process holds at least the 5 fds");

	p = gm_mmap(NULL, 64 * PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, g[0], 0);
	cr_assert_neq(p, MAP_FAILED);
	memset(p, 1, 64 * PAGE_SIZE);
	cr_assert_eq(gm_munmap(p + 8 * PAGE_SIZE, 8 * PAGE_SIZE), 0); /* splits the mapping */
	q = gm_mmap(NULL, 4 << 20, PROT_READ | PROT_WRITE, MAP_SHARED, g[1], 0);
	cr_assert_neq(q, MAP_FAILED);
	q[0] = 1;
	cr_assert_eq(gm_fallocate(g[2], FALLOC_FL_KEEP_SIZE, 0, 16 * PAGE_SIZE), 0);

	gm_close(kvm);
	gm_close(vm);
	cr_expect_eq(stats().vms, 1, "the files keep the VM");
	for (int i = 0; i < 3; i++)
		gm_close(g[i]);
	s = stats();
	cr_expect_eq(s.gmem_files, 2, "the mappings keep their files");
	cr_expect_eq(s.vms, 1);
	cr_expect_eq(s.open_fds, 0);
	gm_munmap(p, 8 * PAGE_SIZE);
	gm_munmap(q, 4 << 20);
	cr_expect_eq(stats().gmem_files, 1, "one part of the split mapping is left");
	gm_munmap(p + 16 * PAGE_SIZE, 48 * PAGE_SIZE);
	expect_released(&base);
}

/* Files first, VM last, and a file that was never mapped. */
Test(release, files_first)
{
	struct held base = baseline();
	int kvm = gm_open_kvm();
	int vm = gm_ioctl(kvm, KVM_CREATE_VM, KVM_X86_DEFAULT_VM);
	int g;

	cr_assert_geq(vm, 0);
	gm_close(kvm);
	g = create_gmem(vm, 8 * PAGE_SIZE, 0);
	gm_close(g);
	cr_expect_eq(stats().gmem_files, 0);
	cr_expect_eq(stats().vms, 1, "the VM fd keeps the VM");
	gm_close(vm);
	expect_released(&base);
}
