/* The microVM's default guest as soft guests on libgmem, with the test playing gmem-vm's part. */
#include <linux/falloc.h>
#include <stdio.h>

#include "guest/guest_image.h"
#include "guest/layout.h"
#include "unit/vmm.h"

#define PAGE 4096ULL
#define MEM_SIZE (8ULL << 20)
#define DATA_GPA 0x200000ULL
#define DATA_SIZE 0x10000ULL /* per vCPU */
#define SHARED_GPA 0x300000ULL
#define PUNCH_GPA 0x400000ULL
#define PUNCH_SIZE 0x8000ULL /* per vCPU */

static int convert(int gmem, uint64_t offset, uint64_t size, uint64_t attrs)
{
	struct kvm_memory_attributes2 a = { .offset = offset, .size = size, .attributes = attrs };

	return gm_ioctl(gmem, KVM_SET_MEMORY_ATTRIBUTES2, &a) ? errno : 0;
}

static uint64_t allocated(int gmem)
{
	struct gm_gmem_info info;

	cr_assert_eq(gm_gmem_info(gmem, &info), 0);
	return info.allocated_bytes;
}

static uint64_t expected_checksum(unsigned vcpu)
{
	uint64_t sum = GUEST_CHECKSUM_INIT;

	for (uint64_t i = 0; i < DATA_SIZE / 8; i++)
		sum = guest_checksum_step(sum, guest_data_word(vcpu, i));
	return sum;
}

struct vm {
	struct vmm m;
	int gmem;
	char *host; /* the whole file, mapped at gpa 0: the slot makes gpa == offset */
	unsigned nr;
	int fd[GUEST_MAX_VCPUS];
	struct kvm_run *run[GUEST_MAX_VCPUS];
};

/* What gmem-vm does before launch: memory, boot parameters, data, all of it private. */
static void vm_create(struct vm *vm, unsigned nr, uint64_t magic)
{
	struct kvm_enable_cap cap = {
		.cap = KVM_CAP_EXIT_HYPERCALL, .args = { 1ULL << KVM_HC_MAP_GPA_RANGE },
	};
	struct gm_boot_params bp = {
		.magic = magic, .nr_vcpus = nr, .mem_size = MEM_SIZE,
		.data_gpa = DATA_GPA, .data_size = DATA_SIZE,
		.shared_gpa = SHARED_GPA,
		.punch_gpa = PUNCH_GPA, .punch_size = PUNCH_SIZE,
	};

	vmm_init(&vm->m, KVM_X86_SW_PROTECTED_VM);
	vm->nr = nr;
	vm->gmem = vmm_gmem(&vm->m, MEM_SIZE, GUEST_MEMFD_FLAG_MMAP | GUEST_MEMFD_FLAG_INIT_SHARED);
	vm->host = gm_mmap(NULL, MEM_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, vm->gmem, 0);
	cr_assert_neq(vm->host, MAP_FAILED);

	memcpy(vm->host + GUEST_BOOT_PARAMS_GPA, &bp, sizeof(bp));
	for (unsigned v = 0; v < nr; v++) {
		uint64_t *data = (uint64_t *)(vm->host + DATA_GPA + v * DATA_SIZE);

		for (uint64_t i = 0; i < DATA_SIZE / 8; i++)
			data[i] = guest_data_word(v, i);
	}
	cr_assert_eq(vmm_set_slot(&vm->m, 0, 0, MEM_SIZE, vm->gmem, 0), 0);
	cr_assert_eq(convert(vm->gmem, 0, MEM_SIZE, KVM_MEMORY_ATTRIBUTE_PRIVATE), 0);
	/* Private now: the VMM itself can no longer read what it wrote. */
	cr_expect(vmm_host_faults(vm->host + GUEST_BOOT_PARAMS_GPA));
	cr_expect(vmm_host_faults(vm->host + DATA_GPA));
	cr_expect(vmm_host_faults(vm->host + DATA_GPA + nr * DATA_SIZE - 1));
	cr_assert_eq(gm_ioctl(vm->m.vm, KVM_ENABLE_CAP, &cap), 0);

	for (unsigned v = 0; v < nr; v++) {
		vm->fd[v] = gm_ioctl(vm->m.vm, KVM_CREATE_VCPU, (unsigned long)v);
		cr_assert_geq(vm->fd[v], 0, "create vcpu: %s", strerror(errno));
		cr_assert_eq(gm_vcpu_set_guest(vm->fd[v], guest_soft_entry, (void *)(uintptr_t)v), 0);
		vm->run[v] = gm_mmap(NULL, 3 * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, vm->fd[v], 0);
		cr_assert_neq(vm->run[v], MAP_FAILED);
	}
}

static void vm_destroy(struct vm *vm)
{
	for (unsigned v = 0; v < vm->nr; v++) {
		gm_munmap(vm->run[v], 3 * PAGE);
		gm_close(vm->fd[v]);
	}
	gm_munmap(vm->host, MEM_SIZE);
	gm_close(vm->gmem);
	vmm_destroy(&vm->m);
}

/* What the guest should say; the scenario composes the same text byte by byte. */
static int expected_message(char *buf, size_t size, unsigned vcpu)
{
	return snprintf(buf, size, "hello from vCPU %u: private memory checksummed, %llu words",
			vcpu, (unsigned long long)(DATA_SIZE / 8));
}

/* MAP_GPA_RANGE: the guest asks for its page's kind; the gmem file converts in place. */
static void handle_hypercall(struct vm *vm, struct kvm_run *run)
{
	uint64_t gpa = run->hypercall.args[0], pages = run->hypercall.args[1];
	bool private = run->hypercall.args[2] & KVM_MAP_GPA_RANGE_ENCRYPTED;

	cr_assert_eq(run->hypercall.nr, KVM_HC_MAP_GPA_RANGE);
	cr_assert_eq(convert(vm->gmem, gpa, pages * PAGE, private ? KVM_MEMORY_ATTRIBUTE_PRIVATE : 0),
		     0);
	run->hypercall.ret = 0;
	/* The host sees the page exactly when it is shared. */
	cr_expect_eq(vmm_host_faults(vm->host + gpa), private, "gpa %#llx", (unsigned long long)gpa);
}

struct outcome {
	bool checksummed, printed, punched, done;
	uint64_t ok, failed;
	uint64_t sum, differ;
};

/* One exit of vCPU v; returns true once it has reported its result (or failed fatally). */
static bool handle_exit(struct vm *vm, unsigned v, struct outcome *o)
{
	struct kvm_run *run = vm->run[v];
	struct gm_ucall uc;
	char want[128];
	int len;

	cr_assert_eq(gm_ioctl(vm->fd[v], KVM_RUN, 0), 0, "vCPU %u: KVM_RUN: %s, exit %u", v,
		     strerror(errno), run->exit_reason);
	if (run->exit_reason == KVM_EXIT_HYPERCALL) {
		handle_hypercall(vm, run);
		return false;
	}
	cr_assert_eq(run->exit_reason, KVM_EXIT_IO, "vCPU %u: exit %u", v, run->exit_reason);
	cr_assert_eq(gm_vcpu_get_ucall(vm->fd[v], &uc), 0);
	cr_assert_neq(uc.cmd, GM_UCALL_ABORT, "vCPU %u: %s", v, uc.msg);
	cr_assert_eq(uc.args[0], v, "vCPU %u: ucall %#llx from vCPU %llu", v,
		     (unsigned long long)uc.cmd, (unsigned long long)uc.args[0]);
	switch (uc.cmd) {
	case GUEST_UCALL_CHECKSUM:
		o->checksummed = true;
		o->sum = uc.args[1];
		o->differ = uc.args[2];
		return false;
	case GUEST_UCALL_PRINT:
		len = expected_message(want, sizeof(want), v);
		cr_expect_eq(uc.args[1], SHARED_GPA + v * PAGE);
		cr_assert_eq(uc.args[2], (uint64_t)len);
		/* Shared now: the host reads the message where the guest wrote it. */
		cr_assert_not(vmm_host_faults(vm->host + uc.args[1]));
		cr_expect_arr_eq(vm->host + uc.args[1], want, len, "vCPU %u said \"%.*s\"", v, len,
				 vm->host + uc.args[1]);
		o->printed = true;
		return false;
	case GUEST_UCALL_PUNCH: {
		uint64_t before = allocated(vm->gmem);

		cr_expect_eq(uc.args[1], PUNCH_GPA + v * PUNCH_SIZE);
		cr_assert_eq(uc.args[2], PUNCH_SIZE);
		cr_expect(vmm_host_faults(vm->host + uc.args[1]), "the punch area is private");
		/* Private memory can still be punched: the file frees it and keeps its kind. */
		cr_assert_eq(gm_fallocate(vm->gmem, FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE,
					  (off_t)uc.args[1], (off_t)uc.args[2]), 0, "%s", strerror(errno));
		cr_expect_eq(before - allocated(vm->gmem), PUNCH_SIZE, "the punch freed the area");
		cr_expect(vmm_host_faults(vm->host + uc.args[1]));
		o->punched = true;
		return false;
	}
	case GUEST_UCALL_RESULT:
		o->ok = uc.args[1];
		o->failed = uc.args[2];
		o->done = true;
		return true;
	case GUEST_UCALL_FAIL:
		o->ok = 0;
		o->failed = uc.args[1];
		return true;
	}
	cr_assert_fail("vCPU %u: unknown ucall %#llx", v, (unsigned long long)uc.cmd);
	return true;
}

/* Runs every vCPU in turn, one exit at a time, so their conversions interleave. */
static void vm_run(struct vm *vm, struct outcome *o)
{
	bool finished[GUEST_MAX_VCPUS] = { false };
	unsigned left = vm->nr;

	for (int steps = 0; left; steps++) {
		cr_assert_lt(steps, 1000, "the guests never finished");
		for (unsigned v = 0; v < vm->nr; v++) {
			if (finished[v] || !handle_exit(vm, v, &o[v]))
				continue;
			finished[v] = true;
			left--;
		}
	}
	/* A finished guest halts. */
	for (unsigned v = 0; v < vm->nr; v++) {
		cr_assert_eq(gm_ioctl(vm->fd[v], KVM_RUN, 0), 0);
		cr_expect_eq(vm->run[v]->exit_reason, KVM_EXIT_HLT);
	}
}

static void run_scenario(unsigned nr)
{
	struct outcome o[GUEST_MAX_VCPUS] = { 0 };
	struct vm vm;

	vm_create(&vm, nr, GUEST_BOOT_MAGIC);
	vm_run(&vm, o);
	for (unsigned v = 0; v < nr; v++) {
		cr_expect(o[v].done, "vCPU %u never reported", v);
		cr_expect(o[v].checksummed && o[v].printed && o[v].punched, "vCPU %u skipped a step", v);
		cr_expect_eq(o[v].sum, expected_checksum(v), "vCPU %u checksum", v);
		cr_expect_eq(o[v].differ, 0);
		cr_expect_eq(o[v].ok, 1, "vCPU %u failed check %llu (%s)", v,
			     (unsigned long long)o[v].failed, guest_check_name(o[v].failed));
		cr_expect_eq(o[v].failed, GUEST_CHECK_NONE);
		/* Back to private: the message is the guest's again. */
		cr_expect(vmm_host_faults(vm.host + SHARED_GPA + v * PAGE));
	}
	vm_destroy(&vm);
}

Test(guest_soft, one_vcpu)
{
	run_scenario(1);
}

Test(guest_soft, two_vcpus)
{
	run_scenario(2);
}

Test(guest_soft, max_vcpus)
{
	run_scenario(GUEST_MAX_VCPUS);
}

/* Without the magic the guest trusts nothing else and stops at once. */
Test(guest_soft, bad_magic_fails)
{
	struct outcome o[1] = { 0 };
	struct vm vm;

	vm_create(&vm, 1, GUEST_BOOT_MAGIC + 1);
	vm_run(&vm, o);
	cr_expect_not(o[0].done);
	cr_expect_not(o[0].checksummed);
	cr_expect_eq(o[0].failed, GUEST_CHECK_MAGIC);
	vm_destroy(&vm);
}

/* A corrupted data word is counted, changes the checksum, and names check 3. */
static void corrupt_word(struct vm *vm, uint64_t gpa)
{
	cr_assert_eq(convert(vm->gmem, gpa & ~(PAGE - 1), PAGE, 0), 0);
	vm->host[gpa] ^= 1;
	cr_assert_eq(convert(vm->gmem, gpa & ~(PAGE - 1), PAGE, KVM_MEMORY_ATTRIBUTE_PRIVATE), 0);
}

Test(guest_soft, corrupt_data_is_named)
{
	struct outcome o[2] = { 0 };
	struct vm vm;

	vm_create(&vm, 2, GUEST_BOOT_MAGIC);
	corrupt_word(&vm, DATA_GPA + DATA_SIZE + 8 * 100);
	vm_run(&vm, o);
	cr_expect_eq(o[0].ok, 1);
	cr_expect_eq(o[0].sum, expected_checksum(0));
	cr_expect_eq(o[1].ok, 0);
	cr_expect_eq(o[1].differ, 1);
	cr_expect_neq(o[1].sum, expected_checksum(1));
	cr_expect_eq(o[1].failed, GUEST_CHECK_DATA, "failed %llu", (unsigned long long)o[1].failed);
	/* The later steps still ran. */
	cr_expect(o[1].done && o[1].printed && o[1].punched);
	vm_destroy(&vm);
}
