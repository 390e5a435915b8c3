/* Guest functions and the exits of KVM_RUN, in the shape of private_mem_kvm_exits_test. */
#include "internal.h"
#include "unit/vmm.h"

#define MEM_GPA 0x100000000ULL
#define MEM_SIZE (2ULL << 20)
#define MMIO_GPA 0xfee00000ULL

static void guest_private_read(struct gm_guest *g, void *arg)
{
	gm_guest_set_access(g, GM_ACCESS_PRIVATE);
	uint64_t v = gm_guest_read64(g, MEM_GPA);

	gm_guest_ucall(g, GM_UCALL_DONE, 1, v);
}

/* A private access where the slot has been deleted exits with a private memory fault. */
Test(vcpu_exits, private_access_memslot_deleted)
{
	struct vmm m;

	vmm_init(&m, KVM_X86_SW_PROTECTED_VM);
	int gmem = vmm_gmem(&m, MEM_SIZE, 0);

	cr_assert_eq(vmm_set_slot(&m, 0, MEM_GPA, MEM_SIZE, gmem, 0), 0);
	vmm_vcpu(&m, 0, guest_private_read, NULL);
	cr_assert_eq(vmm_set_slot(&m, 0, MEM_GPA, 0, gmem, 0), 0);

	cr_expect_eq(vmm_run(&m), EFAULT);
	cr_expect_eq(m.run->exit_reason, KVM_EXIT_MEMORY_FAULT);
	cr_expect_eq(m.run->memory_fault.flags, KVM_MEMORY_EXIT_FLAG_PRIVATE);
	cr_expect_eq(m.run->memory_fault.gpa, MEM_GPA);
	cr_expect_eq(m.run->memory_fault.size, 4096);

	/* Userspace restores the slot: the guest resumes at the same access. */
	cr_assert_eq(vmm_set_slot(&m, 0, MEM_GPA, MEM_SIZE, gmem, 0), 0);
	cr_expect_eq(vmm_expect_ucall(&m, GM_UCALL_DONE), 0);
	gm_close(gmem);
	vmm_destroy(&m);
}

/* A private access to a slot without guest_memfd exits with a private memory fault. */
Test(vcpu_exits, private_access_memslot_not_private)
{
	struct vmm m;
	void *mem = mmap(NULL, MEM_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);

	vmm_init(&m, KVM_X86_SW_PROTECTED_VM);
	cr_assert_eq(vmm_hva_slot(&m, 0, MEM_GPA, MEM_SIZE, mem), 0);
	vmm_vcpu(&m, 0, guest_private_read, NULL);
	cr_expect_eq(vmm_run(&m), EFAULT);
	cr_expect_eq(m.run->exit_reason, KVM_EXIT_MEMORY_FAULT);
	cr_expect_eq(m.run->memory_fault.flags, KVM_MEMORY_EXIT_FLAG_PRIVATE);
	cr_expect_eq(m.run->memory_fault.gpa, MEM_GPA);
	vmm_destroy(&m);
	munmap(mem, MEM_SIZE);
}

static void guest_auto_read(struct gm_guest *g, void *arg)
{
	uint64_t v = gm_guest_read64(g, MEM_GPA + 8);

	gm_guest_ucall(g, GM_UCALL_DONE, 1, v);
}

/* With attributes in the file, a deleted slot makes the range shared: MMIO, as in series v8. */
Test(vcpu_exits, deleted_slot_is_mmio)
{
	struct vmm m;

	vmm_init(&m, KVM_X86_SW_PROTECTED_VM);
	int gmem = vmm_gmem(&m, MEM_SIZE, 0);

	vmm_vcpu(&m, 0, guest_auto_read, NULL);
	cr_expect_eq(vmm_run(&m), 0);
	cr_assert_eq(m.run->exit_reason, KVM_EXIT_MMIO);
	cr_expect_eq(m.run->mmio.phys_addr, MEM_GPA + 8);
	cr_expect_eq(m.run->mmio.len, 8);
	cr_expect_eq(m.run->mmio.is_write, 0);
	memcpy(m.run->mmio.data, "\x01\x02\x03\x04\x05\x06\x07\x08", 8);
	cr_expect_eq(vmm_expect_ucall(&m, GM_UCALL_DONE), 0x0807060504030201ULL);
	gm_close(gmem);
	vmm_destroy(&m);
}

static void guest_shared_read_private(struct gm_guest *g, void *arg)
{
	gm_guest_set_access(g, GM_ACCESS_SHARED);
	gm_guest_write32(g, MEM_GPA + 4096, 7);
	gm_guest_ucall(g, GM_UCALL_DONE, 0);
}

/* A shared access to private memory exits with a shared (flags 0) memory fault. */
Test(vcpu_exits, shared_access_to_private)
{
	struct vmm m;

	vmm_init(&m, KVM_X86_SW_PROTECTED_VM);
	int gmem = vmm_gmem(&m, MEM_SIZE, 0);

	cr_assert_eq(vmm_set_slot(&m, 0, MEM_GPA, MEM_SIZE, gmem, 0), 0);
	vmm_vcpu(&m, 0, guest_shared_read_private, NULL);
	for (int i = 0; i < 2; i++) {
		/* Nothing changed: the guest faults again at the same place. */
		cr_expect_eq(vmm_run(&m), EFAULT);
		cr_expect_eq(m.run->exit_reason, KVM_EXIT_MEMORY_FAULT);
		cr_expect_eq(m.run->memory_fault.flags, 0);
		cr_expect_eq(m.run->memory_fault.gpa, MEM_GPA + 4096);
	}
	gm_close(gmem);
	vmm_destroy(&m);
}

static void guest_private_write_read(struct gm_guest *g, void *arg)
{
	gm_guest_set_access(g, GM_ACCESS_PRIVATE);
	for (uint64_t off = 0; off < MEM_SIZE; off += 4096)
		gm_guest_write64(g, MEM_GPA + off, off ^ 0xabcdef);
	uint64_t bad = 0;
	for (uint64_t off = 0; off < MEM_SIZE; off += 4096)
		bad += gm_guest_read64(g, MEM_GPA + off) != (off ^ 0xabcdef);
	gm_guest_ucall(g, GM_UCALL_SYNC, 1, bad);
	/* The file is closed now: its slot can no longer be served. */
	gm_guest_read64(g, MEM_GPA);
	gm_guest_ucall(g, GM_UCALL_DONE, 0);
}

/* Private memory round-trips; once the file is released, accesses are memory faults. */
Test(vcpu_exits, private_memory_then_file_released)
{
	struct vmm m;

	vmm_init(&m, KVM_X86_SW_PROTECTED_VM);
	int gmem = vmm_gmem(&m, MEM_SIZE, GUEST_MEMFD_FLAG_MMAP);

	cr_assert_eq(vmm_set_slot(&m, 0, MEM_GPA, MEM_SIZE, gmem, 0), 0);
	vmm_vcpu(&m, 0, guest_private_write_read, NULL);
	cr_expect_eq(vmm_expect_ucall(&m, GM_UCALL_SYNC), 0);
	/* The host cannot read what the guest wrote. */
	char *host = gm_mmap(NULL, MEM_SIZE, PROT_READ, MAP_SHARED, gmem, 0);
	cr_assert_neq(host, MAP_FAILED);
	gm_munmap(host, MEM_SIZE);
	gm_close(gmem);
	cr_expect_eq(vmm_run(&m), EFAULT);
	cr_expect_eq(m.run->exit_reason, KVM_EXIT_MEMORY_FAULT);
	cr_expect_eq(m.run->memory_fault.flags, KVM_MEMORY_EXIT_FLAG_PRIVATE);
	vmm_destroy(&m);
}

static void guest_mmio_write(struct gm_guest *g, void *arg)
{
	gm_guest_write32(g, MMIO_GPA + 0x30, 0xfeedbeef);
	gm_guest_ucall(g, GM_UCALL_DONE, 0);
}

Test(vcpu_exits, mmio_write)
{
	struct vmm m;
	uint32_t data;

	vmm_init(&m, KVM_X86_DEFAULT_VM);
	vmm_vcpu(&m, 0, guest_mmio_write, NULL);
	cr_expect_eq(vmm_run(&m), 0);
	cr_assert_eq(m.run->exit_reason, KVM_EXIT_MMIO);
	cr_expect_eq(m.run->mmio.phys_addr, MMIO_GPA + 0x30);
	cr_expect_eq(m.run->mmio.len, 4);
	cr_expect_eq(m.run->mmio.is_write, 1);
	memcpy(&data, m.run->mmio.data, 4);
	cr_expect_eq(data, 0xfeedbeef);
	vmm_expect_ucall(&m, GM_UCALL_DONE);
	vmm_destroy(&m);
}

static void guest_hypercalls(struct gm_guest *g, void *arg)
{
	uint64_t a = gm_guest_hypercall(g, KVM_HC_MAP_GPA_RANGE, MEM_GPA, 4, KVM_MAP_GPA_RANGE_DECRYPTED);

	gm_guest_ucall(g, GM_UCALL_SYNC, 1, a);
	a = gm_guest_hypercall(g, KVM_HC_MAP_GPA_RANGE, MEM_GPA, 4, KVM_MAP_GPA_RANGE_ENCRYPTED);
	gm_guest_ucall(g, GM_UCALL_SYNC, 1, a);
	a = gm_guest_hypercall(g, KVM_HC_MAP_GPA_RANGE, MEM_GPA + 1, 4, 0);
	gm_guest_ucall(g, GM_UCALL_SYNC, 1, a);
	a = gm_guest_hypercall(g, KVM_HC_MAP_GPA_RANGE, MEM_GPA, 0, 0);
	gm_guest_ucall(g, GM_UCALL_SYNC, 1, a);
	a = gm_guest_hypercall(g, 99, 0, 0, 0);
	gm_guest_ucall(g, GM_UCALL_DONE, 1, a);
}

/* MAP_GPA_RANGE: -KVM_ENOSYS until enabled, then a KVM_EXIT_HYPERCALL that userspace answers. */
Test(vcpu_exits, map_gpa_range_hypercall)
{
	struct vmm m;
	struct kvm_enable_cap cap = { .cap = KVM_CAP_EXIT_HYPERCALL };

	vmm_init(&m, KVM_X86_SW_PROTECTED_VM);
	vmm_vcpu(&m, 0, guest_hypercalls, NULL);
	cr_expect_eq(gm_ioctl(m.vm, KVM_CHECK_EXTENSION, KVM_CAP_EXIT_HYPERCALL),
		     1 << KVM_HC_MAP_GPA_RANGE);
	cr_expect_eq(vmm_expect_ucall(&m, GM_UCALL_SYNC), (uint64_t)-KVM_ENOSYS);

	cap.args[0] = 1ULL << 3;
	cr_expect_eq(gm_ioctl(m.vm, KVM_ENABLE_CAP, &cap), -1);
	cr_expect_eq(errno, EINVAL);
	cap.args[0] = 1ULL << KVM_HC_MAP_GPA_RANGE;
	cap.flags = 1;
	cr_expect_eq(gm_ioctl(m.vm, KVM_ENABLE_CAP, &cap), -1);
	cap.flags = 0;
	cr_assert_eq(gm_ioctl(m.vm, KVM_ENABLE_CAP, &cap), 0);

	cr_expect_eq(vmm_run(&m), 0);
	cr_assert_eq(m.run->exit_reason, KVM_EXIT_HYPERCALL);
	cr_expect_eq(m.run->hypercall.nr, KVM_HC_MAP_GPA_RANGE);
	cr_expect_eq(m.run->hypercall.args[0], MEM_GPA);
	cr_expect_eq(m.run->hypercall.args[1], 4);
	cr_expect_eq(m.run->hypercall.args[2], KVM_MAP_GPA_RANGE_ENCRYPTED);
	cr_expect(m.run->hypercall.flags & KVM_EXIT_HYPERCALL_LONG_MODE);
	m.run->hypercall.ret = 0;
	cr_expect_eq(vmm_expect_ucall(&m, GM_UCALL_SYNC), 0);
	/* Bad ranges never reach userspace; other hypercalls are unknown. */
	cr_expect_eq(vmm_expect_ucall(&m, GM_UCALL_SYNC), (uint64_t)-KVM_EINVAL, "unaligned gpa");
	cr_expect_eq(vmm_expect_ucall(&m, GM_UCALL_SYNC), (uint64_t)-KVM_EINVAL, "no pages");
	cr_expect_eq(vmm_expect_ucall(&m, GM_UCALL_DONE), (uint64_t)-KVM_ENOSYS);
	vmm_destroy(&m);
}

static void guest_assert_fails(struct gm_guest *g, void *arg)
{
	GM_GUEST_ASSERT(g, 1 + 1 == 3);
}

static void guest_returns(struct gm_guest *g, void *arg)
{
}

Test(vcpu_exits, run_states)
{
	struct vmm m;
	struct gm_ucall uc;

	vmm_init(&m, KVM_X86_DEFAULT_VM);
	/* No guest installed and no memslot: the kernel's emulation failure at the reset vector. */
	vmm_vcpu(&m, 0, NULL, NULL);
	cr_expect_eq(vmm_run(&m), 0);
	cr_expect_eq(m.run->exit_reason, KVM_EXIT_INTERNAL_ERROR);
	cr_expect_eq(m.run->internal.suberror, KVM_INTERNAL_ERROR_EMULATION);
	/* With memory, the vCPU would run x86 code from it: the entry fails, saying why. */
	void *mem = mmap(NULL, MEM_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);

	cr_assert_neq(mem, MAP_FAILED);
	cr_assert_eq(vmm_hva_slot(&m, 0, MEM_GPA, MEM_SIZE, mem), 0);
	cr_expect_eq(vmm_run(&m), 0);
	cr_expect_eq(m.run->exit_reason, KVM_EXIT_FAIL_ENTRY);
	cr_expect_eq(m.run->fail_entry.hardware_entry_failure_reason, GM_FAIL_ENTRY_NO_GUEST);
	cr_expect_eq(gm_vcpu_set_guest(m.vcpu, guest_returns, NULL), 0);
	cr_expect_eq(vmm_run(&m), 0);
	cr_expect_eq(m.run->exit_reason, KVM_EXIT_HLT);
	cr_expect_eq(vmm_run(&m), 0);
	cr_expect_eq(m.run->exit_reason, KVM_EXIT_HLT);
	/* Ids are unique and bounded; the run area has the kernel's size. */
	cr_expect_eq(gm_ioctl(m.vm, KVM_CREATE_VCPU, 0), -1);
	cr_expect_eq(errno, EEXIST);
	cr_expect_eq(gm_ioctl(m.vm, KVM_CREATE_VCPU, 4096), -1);
	cr_expect_eq(errno, EINVAL);
	cr_expect_eq(gm_ioctl(m.kvm, KVM_GET_VCPU_MMAP_SIZE, 0), 3 * 4096);

	int v1 = vmm_vcpu(&m, 1, guest_assert_fails, NULL);
	struct kvm_run *run1 = gm_mmap(NULL, 3 * 4096, PROT_READ, MAP_SHARED, v1, 0);
	for (int i = 0; i < 2; i++) {
		cr_expect_eq(gm_ioctl(v1, KVM_RUN, 0), 0);
		cr_expect_eq(run1->exit_reason, KVM_EXIT_IO);
		cr_expect_eq(gm_vcpu_get_ucall(v1, &uc), 0);
		cr_expect_eq(uc.cmd, GM_UCALL_ABORT);
		cr_expect(strstr(uc.msg, "1 + 1 == 3"), "%s", uc.msg);
	}
	gm_munmap(run1, 3 * 4096);
	gm_close(v1);
	vmm_destroy(&m);
	munmap(mem, MEM_SIZE);
}

static void guest_default_vm(struct gm_guest *g, void *arg)
{
	/* A DEFAULT VM has no private accesses: this one is shared and served from the file. */
	gm_guest_set_access(g, GM_ACCESS_PRIVATE);
	gm_guest_write64(g, MEM_GPA + 64, 0x1122334455667788ULL);
	gm_guest_ucall(g, GM_UCALL_DONE, 1, gm_guest_read64(g, MEM_GPA + 64));
}

Test(vcpu_exits, default_vm_is_shared)
{
	struct vmm m;

	vmm_init(&m, KVM_X86_DEFAULT_VM);
	int gmem = vmm_gmem(&m, MEM_SIZE, GUEST_MEMFD_FLAG_MMAP | GUEST_MEMFD_FLAG_INIT_SHARED);
	uint64_t *host = gm_mmap(NULL, MEM_SIZE, PROT_READ, MAP_SHARED, gmem, 0);

	cr_assert_eq(vmm_set_slot(&m, 0, MEM_GPA, MEM_SIZE, gmem, 0), 0);
	vmm_vcpu(&m, 0, guest_default_vm, NULL);
	cr_expect_eq(vmm_expect_ucall(&m, GM_UCALL_DONE), 0x1122334455667788ULL);
	/* In place: the host sees the guest's write through its own mapping of the file. */
	cr_expect_eq(host[8], 0x1122334455667788ULL);
	gm_munmap(host, MEM_SIZE);
	gm_close(gmem);
	vmm_destroy(&m);
}

static void guest_shared_read(struct gm_guest *g, void *arg)
{
	uint64_t v = gm_guest_read64(g, MEM_GPA);

	gm_guest_ucall(g, GM_UCALL_DONE, 1, v);
}

/* A fault that cannot allocate a stage-2 table fails KVM_RUN with ENOMEM; the next run retries. */
Test(vcpu_exits, fault_without_memory_fails_run)
{
	struct vmm m;

	vmm_init(&m, KVM_X86_SW_PROTECTED_VM);
	int gmem = vmm_gmem(&m, MEM_SIZE, GUEST_MEMFD_FLAG_MMAP | GUEST_MEMFD_FLAG_INIT_SHARED);
	uint64_t *host = gm_mmap(NULL, MEM_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, gmem, 0);

	cr_assert_neq(host, MAP_FAILED);
	host[0] = 0x1234;
	cr_assert_eq(vmm_set_slot(&m, 0, MEM_GPA, MEM_SIZE, gmem, 0), 0);
	vmm_vcpu(&m, 0, guest_shared_read, NULL);

	/* The first allocation from here is the fault's first stage-2 table. */
	gm_heap_fail_after(1);
	int err = vmm_run(&m);
	gm_heap_fail_after(0);
	cr_expect_eq(err, ENOMEM);
	cr_expect_eq(m.run->exit_reason, KVM_EXIT_UNKNOWN);
	cr_expect_eq(vmm_expect_ucall(&m, GM_UCALL_DONE), 0x1234);
	gm_munmap(host, MEM_SIZE);
	gm_close(gmem);
	vmm_destroy(&m);
}

/* Reads the first page of the slot twice; the VMM converts it between the two reads. */
static void guest_read_twice(struct gm_guest *g, void *arg)
{
	gm_guest_ucall(g, GM_UCALL_SYNC, 1, gm_guest_read64(g, MEM_GPA));
	gm_guest_ucall(g, GM_UCALL_DONE, 1, gm_guest_read64(g, MEM_GPA));
}

static int set_private(int gmem, uint64_t off, bool private)
{
	struct kvm_memory_attributes2 a = {
		.offset = off, .size = 4096, .attributes = private ? KVM_MEMORY_ATTRIBUTE_PRIVATE : 0,
	};

	return gm_ioctl(gmem, KVM_SET_MEMORY_ATTRIBUTES2, &a) ? errno : 0;
}

/*
 * A plain slot over a gm_mmap mapping: once the page is private, the guest's
 * next access exits with a memory fault (as GUP fails in the kernel), never
 * SIGBUS in the VMM; shared again, it reads the page.
 */
Test(vcpu_exits, hva_slot_over_gmem_mapping_page_made_private)
{
	struct vmm m;

	vmm_init(&m, KVM_X86_SW_PROTECTED_VM);
	int gmem = vmm_gmem(&m, MEM_SIZE, GUEST_MEMFD_FLAG_MMAP | GUEST_MEMFD_FLAG_INIT_SHARED);
	uint64_t *host = gm_mmap(NULL, MEM_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, gmem, 0);

	cr_assert_neq(host, MAP_FAILED);
	host[0] = 0xfeed;
	cr_assert_eq(vmm_hva_slot(&m, 0, MEM_GPA, MEM_SIZE, host), 0);
	vmm_vcpu(&m, 0, guest_read_twice, NULL);
	cr_expect_eq(vmm_expect_ucall(&m, GM_UCALL_SYNC), 0xfeed);

	cr_assert_eq(set_private(gmem, 0, true), 0);
	cr_expect_eq(vmm_run(&m), EFAULT);
	cr_expect_eq(m.run->exit_reason, KVM_EXIT_MEMORY_FAULT);
	cr_expect_eq(m.run->memory_fault.gpa, MEM_GPA);
	cr_expect_eq(m.run->memory_fault.flags, 0);

	cr_assert_eq(set_private(gmem, 0, false), 0);
	cr_expect_eq(vmm_expect_ucall(&m, GM_UCALL_DONE), 0xfeed);
	gm_munmap(host, MEM_SIZE);
	gm_close(gmem);
	vmm_destroy(&m);
}
