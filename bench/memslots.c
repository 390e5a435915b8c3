/* Memslot changes: the cost of one slot change with 1k and with 32k slots in the VM (should not grow with n). */
/* bench.h first: it sets _GNU_SOURCE for every libc header. */
#include "bench.h"

#define SMALL_VM 1024
#define LARGE_VM 32000 /* just under KVM_CAP_NR_MEMSLOTS (32764) */
#define CHANGES 2000

static int set_slot(int vm, uint32_t slot, uint64_t gpa, uint64_t size, void *hva)
{
	struct kvm_userspace_memory_region2 r = {
		.slot = slot, .guest_phys_addr = gpa, .memory_size = size,
		.userspace_addr = (uint64_t)(uintptr_t)hva,
	};

	return gm_ioctl(vm, KVM_SET_USER_MEMORY_REGION2, &r);
}

/*
 * A VM with n one-page slots; then microseconds per change, each change a
 * delete or a create of one slot among them (CHANGES of each). *fill gets
 * microseconds per slot for filling the VM.
 */
static double change_us(void *page, int n, double *fill)
{
	int kvm = gm_open_kvm(), vm = gm_ioctl(kvm, KVM_CREATE_VM, KVM_X86_DEFAULT_VM | GM_VM_BACKEND_SOFT);
	double t0;

	if (vm < 0)
		die("KVM_CREATE_VM: %s", strerror(errno));
	t0 = now_sec();
	for (int i = 0; i < n; i++)
		if (set_slot(vm, (uint32_t)i, (uint64_t)i * 2 * PAGE_4K, PAGE_4K, page))
			die("slot %d: %s", i, strerror(errno));
	*fill = (now_sec() - t0) * 1e6 / n;
	t0 = now_sec();
	for (int c = 0; c < CHANGES; c++) {
		/* Spread over the whole array: the middle of a sorted array costs the most to copy. */
		int i = (int)(((uint64_t)c * 7919) % (uint64_t)n);

		if (set_slot(vm, (uint32_t)i, (uint64_t)i * 2 * PAGE_4K, 0, page) ||
		    set_slot(vm, (uint32_t)i, (uint64_t)i * 2 * PAGE_4K, PAGE_4K, page))
			die("change %d: %s", c, strerror(errno));
	}
	t0 = (now_sec() - t0) * 1e6 / (2.0 * CHANGES);
	gm_close(vm);
	gm_close(kvm);
	return t0;
}

int main(void)
{
	int reps = bench_reps(5);
	double *small = alloc_samples(reps), *large = small + reps, *fill = small + 2 * reps;
	double fill_small;
	void *page = mmap(NULL, PAGE_4K, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (page == MAP_FAILED)
		die("mmap: %s", strerror(errno));
	note("memslots: %d changes with %d and %d slots, %d reps\n", 2 * CHANGES, SMALL_VM, LARGE_VM,
	     reps);
	for (int r = 0; r < reps; r++) {
		small[r] = change_us(page, SMALL_VM, &fill_small);
		large[r] = change_us(page, LARGE_VM, &fill[r]);
	}
	emit_figure("m1", "one memslot change (delete or create) with 1k vs 32k slots in the VM, us");
	emit_result("m1", "1k slots", "us", small, reps);
	emit_result("m1", "32k slots", "us", large, reps);
	emit_ratio_target("m1", "32k/1k", large, small, reps, "<=", 2);
	emit_info("m1", "fill 32k slots, s", best(fill, reps) * LARGE_VM / 1e6,
		  "creating 32000 slots one by one (was 29 s with a copied array and a grace period per change)");
	munmap(page, PAGE_4K);
	free(small);
	return 0;
}
