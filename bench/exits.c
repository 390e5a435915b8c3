/* Exit round trips of a soft vCPU (ucall; MAP_GPA_RANGE answered with a conversion) against a swapcontext round trip. */
/* bench.h first: it sets _GNU_SOURCE for every libc header. */
#include "bench.h"

#include <ucontext.h>

#define GPA_BASE (1ULL << 30)
#define MEM_SIZE (2 * MiB)
#define ROUND_TRIPS 20000

enum guest_mode { GUEST_UCALL, GUEST_MAP_GPA };

/* Exits forever: ucalls, or MAP_GPA_RANGE requests for page 0, private and shared in turn. */
static void guest_exits(struct gm_guest *g, void *arg)
{
	enum guest_mode mode = (enum guest_mode)(uintptr_t)arg;

	for (uint64_t i = 0;; i++) {
		if (mode == GUEST_UCALL)
			gm_guest_ucall(g, GM_UCALL_SYNC, 0);
		else
			gm_guest_hypercall(g, KVM_HC_MAP_GPA_RANGE, GPA_BASE, 1,
					   i & 1 ? 0 : KVM_MAP_GPA_RANGE_ENCRYPTED);
	}
}

struct exit_vm {
	int kvm, vm, gmem, vcpu;
	struct kvm_run *run;
	void *host;
};

static void exit_vm_create(struct exit_vm *e, enum guest_mode mode)
{
	struct kvm_create_guest_memfd c = {
		.size = MEM_SIZE, .flags = GUEST_MEMFD_FLAG_MMAP | GUEST_MEMFD_FLAG_INIT_SHARED,
	};
	struct kvm_enable_cap cap = { .cap = KVM_CAP_EXIT_HYPERCALL,
				      .args = { 1ULL << KVM_HC_MAP_GPA_RANGE } };
	struct kvm_userspace_memory_region2 r = {
		.flags = KVM_MEM_GUEST_MEMFD, .guest_phys_addr = GPA_BASE, .memory_size = MEM_SIZE,
	};

	e->kvm = gm_open_kvm();
	e->vm = gm_ioctl(e->kvm, KVM_CREATE_VM, KVM_X86_SW_PROTECTED_VM | GM_VM_BACKEND_SOFT);
	if (e->vm < 0 || gm_ioctl(e->vm, KVM_ENABLE_CAP, &cap))
		die("VM: %s", strerror(errno));
	e->gmem = gm_ioctl(e->vm, KVM_CREATE_GUEST_MEMFD, &c);
	r.guest_memfd = (uint32_t)e->gmem;
	if (e->gmem < 0 || gm_ioctl(e->vm, KVM_SET_USER_MEMORY_REGION2, &r))
		die("guest_memfd: %s", strerror(errno));
	/* A mapped file: the conversion also takes the page from the VMM's mapping and gives it back. */
	e->host = gm_mmap(NULL, MEM_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, e->gmem, 0);
	e->vcpu = gm_ioctl(e->vm, KVM_CREATE_VCPU, 0);
	if (e->host == MAP_FAILED || e->vcpu < 0 ||
	    gm_vcpu_set_guest(e->vcpu, guest_exits, (void *)(uintptr_t)mode))
		die("vCPU: %s", strerror(errno));
	e->run = gm_mmap(NULL, 3 * PAGE_4K, PROT_READ | PROT_WRITE, MAP_SHARED, e->vcpu, 0);
	if (e->run == MAP_FAILED)
		die("run area: %s", strerror(errno));
}

static void exit_vm_destroy(struct exit_vm *e)
{
	gm_munmap(e->run, 3 * PAGE_4K);
	gm_munmap(e->host, MEM_SIZE);
	gm_close(e->vcpu);
	gm_close(e->gmem);
	gm_close(e->vm);
	gm_close(e->kvm);
}

/* Answers a MAP_GPA_RANGE exit as a VMM does: converts the range in place. */
static void answer_map_gpa(struct exit_vm *e)
{
	struct kvm_memory_attributes2 a = {
		.offset = e->run->hypercall.args[0] - GPA_BASE,
		.size = e->run->hypercall.args[1] * PAGE_4K,
		.attributes = e->run->hypercall.args[2] & KVM_MAP_GPA_RANGE_ENCRYPTED
				      ? KVM_MEMORY_ATTRIBUTE_PRIVATE : 0,
	};

	e->run->hypercall.ret = gm_ioctl(e->gmem, KVM_SET_MEMORY_ATTRIBUTES2, &a) ? (uint64_t)-errno : 0;
}

/* Microseconds per round trip: KVM_RUN to the guest's next exit and back. */
static double exit_round_trip_us(struct exit_vm *e, enum guest_mode mode)
{
	uint32_t want = mode == GUEST_UCALL ? KVM_EXIT_IO : KVM_EXIT_HYPERCALL;
	double t0 = now_sec();

	for (int i = 0; i < ROUND_TRIPS; i++) {
		if (gm_ioctl(e->vcpu, KVM_RUN, 0) || e->run->exit_reason != want)
			die("KVM_RUN: %s, exit %u", strerror(errno), e->run->exit_reason);
		if (mode == GUEST_MAP_GPA)
			answer_map_gpa(e);
	}
	return (now_sec() - t0) * 1e6 / ROUND_TRIPS;
}

/* The floor: a same-thread context switch there and back with swapcontext(3). */
static ucontext_t main_ctx, peer_ctx;

static void swap_peer(void)
{
	for (;;)
		swapcontext(&peer_ctx, &main_ctx);
}

static double swapcontext_round_trip_us(void)
{
	static char stack[64 * 1024];
	double t0;

	getcontext(&peer_ctx);
	peer_ctx.uc_stack.ss_sp = stack;
	peer_ctx.uc_stack.ss_size = sizeof(stack);
	peer_ctx.uc_link = NULL;
	makecontext(&peer_ctx, swap_peer, 0);
	t0 = now_sec();
	for (int i = 0; i < ROUND_TRIPS; i++)
		swapcontext(&main_ctx, &peer_ctx);
	return (now_sec() - t0) * 1e6 / ROUND_TRIPS;
}

int main(void)
{
	int reps = bench_reps(7);
	double *ucall = alloc_samples(reps), *map_gpa = ucall + reps, *floor = ucall + 2 * reps;
	struct exit_vm u, h;

	exit_vm_create(&u, GUEST_UCALL);
	exit_vm_create(&h, GUEST_MAP_GPA);
	note("exits: %d round trips x %d reps\n", ROUND_TRIPS, reps);
	/* Rotated, so that drift in the machine's load reaches every peer alike. */
	for (int r = 0; r < reps; r++) {
		ucall[r] = exit_round_trip_us(&u, GUEST_UCALL);
		map_gpa[r] = exit_round_trip_us(&h, GUEST_MAP_GPA);
		floor[r] = swapcontext_round_trip_us();
	}
	emit_figure("e1", "ucall exit round trip (KVM_RUN -> guest -> gm_guest_ucall -> back) vs swapcontext there and back, us");
	emit_result("e1", "libgmem", "us", ucall, reps);
	emit_result("e1", "swapcontext", "us", floor, reps);
	emit_ratio_target("e1", "libgmem/swapcontext", ucall, floor, reps, "<=", 2);
	emit_target("e1", "libgmem us", best(ucall, reps), "<=", 3.05,
		    "at least 10x faster than the 30.5 us of a guest thread handoff");
	emit_figure("e2", "MAP_GPA_RANGE exit answered with a 4 KiB conversion of a mapped file, round trip, us");
	emit_result("e2", "libgmem", "us", map_gpa, reps);
	emit_result("e2", "swapcontext", "us", floor, reps);
	emit_info("e2", "libgmem/swapcontext", best(map_gpa, reps) / best(floor, reps),
		  "the conversion (host remap, stage-2 zap) is most of it");
	exit_vm_destroy(&h);
	exit_vm_destroy(&u);
	free(ucall);
	return 0;
}
