/* Per-VM attribute figure c1v: KVM_SET_MEMORY_ATTRIBUTES over 64 GiB of GPAs against 2 MiB. */
/* bench.h first: it sets _GNU_SOURCE for every libc header. */
#include "bench.h"

#define PRIVATE KVM_MEMORY_ATTRIBUTE_PRIVATE
#define BIG_GPA (64 * GiB)   /* slot 0: 64 GiB at 64 GiB */
#define SMALL_GPA (1 * GiB)  /* slot 1: 2 MiB at 1 GiB */
#define BIG_SIZE (64 * GiB)
#define SMALL_SIZE (2 * MiB)

/* kvm.vm_memory_attributes=1 must be chosen before the VM exists. */
static int per_vm_attrs_vm(void)
{
	int ret = gm_set_vm_memory_attributes(true);
	int kvm = gm_open_kvm(), vm;

	if (ret)
		die("gm_set_vm_memory_attributes: %s", strerror(-ret));
	if (kvm < 0)
		die("gm_open_kvm: %s", strerror(errno));
	vm = gm_ioctl(kvm, KVM_CREATE_VM, KVM_X86_SW_PROTECTED_VM);
	gm_close(kvm);
	if (vm < 0)
		die("KVM_CREATE_VM(SW_PROTECTED): %s", strerror(errno));
	return vm;
}

/* A guest_memfd slot of size at gpa, its shared side an untouched reservation. */
static void add_slot(int vm, uint32_t slot, uint64_t gpa, uint64_t size, int *gmem, void **hva)
{
	struct kvm_create_guest_memfd c = { .size = size };
	struct kvm_userspace_memory_region2 r = {
		.slot = slot, .flags = KVM_MEM_GUEST_MEMFD, .guest_phys_addr = gpa, .memory_size = size,
	};

	*gmem = gm_ioctl(vm, KVM_CREATE_GUEST_MEMFD, &c);
	if (*gmem < 0)
		die("KVM_CREATE_GUEST_MEMFD %llu bytes: %s", (unsigned long long)size, strerror(errno));
	*hva = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
		    -1, 0);
	if (*hva == MAP_FAILED)
		die("mmap %llu bytes: %s", (unsigned long long)size, strerror(errno));
	r.userspace_addr = (uint64_t)(uintptr_t)*hva;
	r.guest_memfd = (uint32_t)*gmem;
	if (gm_ioctl(vm, KVM_SET_USER_MEMORY_REGION2, &r) < 0)
		die("KVM_SET_USER_MEMORY_REGION2: %s", strerror(errno));
}

static void set_attrs(int vm, uint64_t gpa, uint64_t size, uint64_t attrs)
{
	struct kvm_memory_attributes a = { .address = gpa, .size = size, .attributes = attrs };

	if (gm_ioctl(vm, KVM_SET_MEMORY_ATTRIBUTES, &a) < 0)
		die("KVM_SET_MEMORY_ATTRIBUTES [%#llx, +%#llx): %s", (unsigned long long)gpa,
		    (unsigned long long)size, strerror(errno));
}

/* n round trips shared -> private -> shared over the whole slot. */
static struct timing convert_pairs(int vm, uint64_t gpa, uint64_t size, int n)
{
	struct stopwatch sw;

	stopwatch_start(&sw);
	for (int i = 0; i < n; i++) {
		set_attrs(vm, gpa, size, PRIVATE);
		set_attrs(vm, gpa, size, 0);
	}
	return stopwatch_stop(&sw);
}

/* s gets the 64 GiB CPU, 2 MiB CPU, 64 GiB elapsed and 2 MiB elapsed ns per round trip. */
static void vm_pairs(double *s, int reps)
{
	const uint64_t gpa[2] = { BIG_GPA, SMALL_GPA }, size[2] = { BIG_SIZE, SMALL_SIZE };
	int vm = per_vm_attrs_vm(), gmem[2], n;
	void *hva[2];
	struct timing t;

	for (int i = 0; i < 2; i++)
		add_slot(vm, (uint32_t)i, gpa[i], size[i], &gmem[i], &hva[i]);
	/* Both sides do the same number of calls; sized so that a rep takes ~20 ms. */
	t = convert_pairs(vm, gpa[0], size[0], 1);
	n = t.cpu_ms > 0 ? (int)(20.0 / t.cpu_ms) : 2000;
	n = n < 1 ? 1 : n > 2000 ? 2000 : n;
	convert_pairs(vm, gpa[1], size[1], n);
	note("convert_vm: %d reps of %d round trips, 64 GiB and 2 MiB of GPAs\n", reps, n);
	for (int r = 0; r < reps; r++) {
		for (int k = 0; k < 2; k++) {
			int i = (r + k) % 2;

			t = convert_pairs(vm, gpa[i], size[i], n);
			s[i * reps + r] = t.cpu_ms * 1e6 / n;
			s[(2 + i) * reps + r] = t.wall_ms * 1e6 / n;
		}
	}
	for (int i = 0; i < 2; i++) {
		munmap(hva[i], size[i]);
		gm_close(gmem[i]);
	}
	gm_close(vm);
}

static void emit_timed_unit(const char *fig, const char *impl, const char *unit, const double *cpu,
			    const double *wall, int n)
{
	printf("result\t%s\t%s\t%s", fig, impl, unit);
	emit_stats(cpu, n);
	emit_stats(wall, n);
	printf("\n");
	fflush(stdout);
}

int main(void)
{
	int reps = bench_reps(9);
	double *s = calloc((size_t)(4 * reps), sizeof(*s));

	if (!s)
		die("out of memory");
	vm_pairs(s, reps);
	emit_figure("c1v", "per-VM attributes: 64 GiB of GPAs to private and back, ns (plain: 2 MiB)");
	emit_timed_unit("c1v", "libgmem", "ns/op", s, s + 2 * reps, reps);
	emit_timed_unit("c1v", "plain", "ns/op", s + reps, s + 3 * reps, reps);
	emit_timed_target("c1v", "64G/2M", s, s + 2 * reps, s + reps, s + 3 * reps, reps, "<=", 2);
	free(s);
	return 0;
}
