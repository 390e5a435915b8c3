/* vCPU threads convert their own ranges by hypercall, in the shape of private_mem_conversions_test. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdbool.h>
#include <string.h>
#include <sys/mman.h>

#include <gmem/gmem.h>

#include "stress/check.h"

#define NR_VCPUS 2
#define PAGE 4096ULL
#define PER_VCPU (4ULL << 20)
#define BASE_GPA 0x100000000ULL
#define ROUNDS 16

/* Sizes and offsets each vCPU converts inside its range, as the kernel test walks them. */
static const uint64_t sizes[] = { PAGE, 4 * PAGE, 2ULL << 20 };

enum stage { STAGE_SHARED = 1, STAGE_PRIVATE = 2 };

static uint8_t pattern(int vcpu, int round, int which)
{
	return (uint8_t)(0x10 * (vcpu + 1) + 3 * round + which);
}

static void guest_fill(struct gm_guest *g, uint64_t gpa, uint64_t size, uint8_t v)
{
	uint8_t buf[PAGE];

	memset(buf, v, sizeof(buf));
	for (uint64_t off = 0; off < size; off += PAGE)
		gm_guest_write(g, gpa + off, buf, PAGE);
}

static void guest_check(struct gm_guest *g, uint64_t gpa, uint64_t size, uint8_t v)
{
	for (uint64_t off = 0; off < size; off += PAGE / 4) {
		uint8_t got = gm_guest_read8(g, gpa + off);

		if (got != v) {
			char what[96];

			snprintf(what, sizeof(what), "gpa %#llx: %#x, expected %#x",
				 (unsigned long long)(gpa + off), got, v);
			gm_guest_abort(g, __FILE__, __LINE__, what);
		}
	}
}

static void guest_convert(struct gm_guest *g, uint64_t gpa, uint64_t size, bool private)
{
	uint64_t ret = gm_guest_hypercall(g, KVM_HC_MAP_GPA_RANGE, gpa, size / PAGE,
					  private ? KVM_MAP_GPA_RANGE_ENCRYPTED
						  : KVM_MAP_GPA_RANGE_DECRYPTED);

	GM_GUEST_ASSERT(g, ret == 0);
}

static void guest_code(struct gm_guest *g, void *arg)
{
	int id = (int)(uintptr_t)arg;
	uint64_t base = BASE_GPA + id * PER_VCPU;

	for (int round = 0; round < ROUNDS; round++) {
		for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
			uint64_t size = sizes[s];
			uint64_t gpa = base + (round * 3 * PAGE) % (PER_VCPU - size);

			/* Private data first: memory starts private. */
			guest_fill(g, gpa, size, pattern(id, round, 1));
			guest_check(g, gpa, size, pattern(id, round, 1));
			/* Shared: the host sees the guest's data in place and writes its own. */
			guest_convert(g, gpa, size, false);
			gm_guest_ucall(g, GM_UCALL_SYNC, 4, (uint64_t)STAGE_SHARED, gpa, size,
				       (uint64_t)pattern(id, round, 1));
			guest_check(g, gpa, size, pattern(id, round, 2));
			/* Private again: the host's data stays, the host loses access. */
			guest_convert(g, gpa, size, true);
			guest_check(g, gpa, size, pattern(id, round, 2));
			gm_guest_ucall(g, GM_UCALL_SYNC, 4, (uint64_t)STAGE_PRIVATE, gpa, size,
				       (uint64_t)0);
			guest_fill(g, gpa, size, pattern(id, round, 3));
			guest_check(g, gpa, size, pattern(id, round, 3));
		}
	}
	gm_guest_ucall(g, GM_UCALL_DONE, 0);
}

static int gmem_fd;
static char *host_map;
static __thread sigjmp_buf sigbus_jmp;

static void on_sigbus(int sig)
{
	siglongjmp(sigbus_jmp, 1);
}

static bool host_faults(volatile char *p)
{
	if (sigsetjmp(sigbus_jmp, 1) == 0) {
		(void)*p;
		return false;
	}
	return true;
}

struct runner {
	int id, vcpu;
	struct kvm_run *run;
	char failure[160];
	uint64_t conversions;
};

static void fail(struct runner *r, const char *what)
{
	if (!r->failure[0])
		snprintf(r->failure, sizeof(r->failure), "%s", what);
}

/* The host's side of a MAP_GPA_RANGE exit: convert the file range in place. */
static void handle_hypercall(struct runner *r)
{
	struct kvm_memory_attributes2 a = {
		.offset = r->run->hypercall.args[0] - BASE_GPA,
		.size = r->run->hypercall.args[1] * PAGE,
		.attributes = (r->run->hypercall.args[2] & KVM_MAP_GPA_RANGE_ENCRYPTED)
				      ? KVM_MEMORY_ATTRIBUTE_PRIVATE : 0,
	};

	r->run->hypercall.ret = gm_ioctl(gmem_fd, KVM_SET_MEMORY_ATTRIBUTES2, &a) ? (uint64_t)errno : 0;
	r->conversions++;
}

static void handle_sync(struct runner *r, const struct gm_ucall *uc)
{
	char *p = host_map + (uc->args[1] - BASE_GPA);
	uint64_t size = uc->args[2];

	if (uc->args[0] == STAGE_SHARED) {
		for (uint64_t off = 0; off < size; off += PAGE)
			if (host_faults(p + off) || p[off] != (char)uc->args[3])
				return fail(r, "shared memory lost the guest's data or is not mapped");
		/* Pattern 2 of the round is pattern 1 plus one. */
		memset(p, (char)(uc->args[3] + 1), size);
	} else {
		for (uint64_t off = 0; off < size; off += PAGE)
			if (!host_faults(p + off))
				return fail(r, "the host can read private memory");
	}
}

static void *vcpu_thread(void *arg)
{
	struct runner *r = arg;
	struct gm_ucall uc;

	for (;;) {
		if (gm_ioctl(r->vcpu, KVM_RUN, 0)) {
			fail(r, "KVM_RUN failed");
			return NULL;
		}
		switch (r->run->exit_reason) {
		case KVM_EXIT_HYPERCALL:
			handle_hypercall(r);
			continue;
		case KVM_EXIT_IO:
			gm_vcpu_get_ucall(r->vcpu, &uc);
			if (uc.cmd == GM_UCALL_SYNC) {
				handle_sync(r, &uc);
				continue;
			}
			if (uc.cmd == GM_UCALL_ABORT)
				fail(r, uc.msg);
			return NULL;
		default:
			fail(r, "unexpected exit");
			return NULL;
		}
	}
}

int main(void)
{
	struct sigaction sa = { .sa_handler = on_sigbus };
	struct runner runners[NR_VCPUS];
	pthread_t threads[NR_VCPUS];
	uint64_t size = NR_VCPUS * PER_VCPU;
	int kvm = gm_open_kvm();
	int vm = gm_ioctl(kvm, KVM_CREATE_VM, KVM_X86_SW_PROTECTED_VM);
	struct kvm_create_guest_memfd c = { .size = size, .flags = GUEST_MEMFD_FLAG_MMAP };
	struct kvm_enable_cap cap = { .cap = KVM_CAP_EXIT_HYPERCALL,
				      .args = { 1ULL << KVM_HC_MAP_GPA_RANGE } };

	sigaction(SIGBUS, &sa, NULL);
	gmem_fd = gm_ioctl(vm, KVM_CREATE_GUEST_MEMFD, &c);
	REQUIRE(gmem_fd >= 0, "create: %s", strerror(errno));
	host_map = gm_mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, gmem_fd, 0);
	REQUIRE(host_map != MAP_FAILED, "mmap");
	REQUIRE(gm_ioctl(vm, KVM_ENABLE_CAP, &cap) == 0, "enable MAP_GPA_RANGE exits");
	struct kvm_userspace_memory_region2 r = {
		.slot = 0, .flags = KVM_MEM_GUEST_MEMFD, .guest_phys_addr = BASE_GPA,
		.memory_size = size, .guest_memfd = (uint32_t)gmem_fd,
	};
	REQUIRE(gm_ioctl(vm, KVM_SET_USER_MEMORY_REGION2, &r) == 0, "slot");

	for (int i = 0; i < NR_VCPUS; i++) {
		runners[i] = (struct runner){ .id = i, .vcpu = gm_ioctl(vm, KVM_CREATE_VCPU, i) };
		REQUIRE(runners[i].vcpu >= 0, "vcpu");
		runners[i].run = gm_mmap(NULL, 3 * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED,
					 runners[i].vcpu, 0);
		REQUIRE(gm_vcpu_set_guest(runners[i].vcpu, guest_code, (void *)(uintptr_t)i) == 0, "guest");
		REQUIRE(pthread_create(&threads[i], NULL, vcpu_thread, &runners[i]) == 0, "thread");
	}
	uint64_t conversions = 0;
	for (int i = 0; i < NR_VCPUS; i++) {
		pthread_join(threads[i], NULL);
		CHECK(!runners[i].failure[0], "vCPU %d: %s", i, runners[i].failure);
		CHECK(runners[i].conversions == 2 * ROUNDS * 3, "vCPU %d converted %llu times", i,
		      (unsigned long long)runners[i].conversions);
		conversions += runners[i].conversions;
		gm_munmap(runners[i].run, 3 * PAGE);
		gm_close(runners[i].vcpu);
	}
	struct gm_gmem_info info;
	gm_gmem_info(gmem_fd, &info);
	CHECK(info.shared_bytes == 0, "everything ends private, %llu bytes shared",
	      (unsigned long long)info.shared_bytes);
	printf("conversions: %llu conversions by %d vCPUs\n", (unsigned long long)conversions, NR_VCPUS);
	gm_munmap(host_map, size);
	gm_close(gmem_fd);
	gm_close(vm);
	gm_close(kvm);
	return check_summary("conversions");
}
