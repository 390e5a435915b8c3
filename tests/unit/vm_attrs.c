/* The fault path with per-VM attributes (kvm.vm_memory_attributes=1): private from the file, shared from the HVA. */
#include <linux/falloc.h>

#include "internal.h"
#include "unit/vmm.h"

#define MEM_GPA 0x100000000ULL
#define MEM_SIZE (2ULL << 20)
#define PRIVATE KVM_MEMORY_ATTRIBUTE_PRIVATE

static void per_vm_mode(void)
{
	cr_assert_eq(gm_set_vm_memory_attributes(true), 0);
}

TestSuite(vm_attrs, .init = per_vm_mode);

static int set_vm_attrs(struct vmm *m, uint64_t gpa, uint64_t size, uint64_t attrs)
{
	struct kvm_memory_attributes a = { .address = gpa, .size = size, .attributes = attrs };

	return gm_ioctl(m->vm, KVM_SET_MEMORY_ATTRIBUTES, &a) ? errno : 0;
}

/* A guest_memfd slot whose shared pages come from hva. */
static int vmm_gmem_hva_slot(struct vmm *m, int gmem, void *hva)
{
	struct kvm_userspace_memory_region2 r = {
		.slot = 0, .flags = KVM_MEM_GUEST_MEMFD, .guest_phys_addr = MEM_GPA,
		.memory_size = MEM_SIZE, .userspace_addr = (uint64_t)(uintptr_t)hva,
		.guest_memfd = (uint32_t)gmem,
	};

	return gm_ioctl(m->vm, KVM_SET_USER_MEMORY_REGION2, &r) ? errno : 0;
}

static void *hva_alloc(void)
{
	void *p = mmap(NULL, MEM_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);

	cr_assert_neq(p, MAP_FAILED);
	return p;
}

/* Writes a marker to pages 0 and 1, reads both back, then reads them again after each sync. */
static void guest_write_then_read(struct gm_guest *g, void *arg)
{
	gm_guest_write64(g, MEM_GPA, 0x1111);
	gm_guest_write64(g, MEM_GPA + 4096, 0x2222);
	for (;;)
		gm_guest_ucall(g, GM_UCALL_SYNC, 2, gm_guest_read64(g, MEM_GPA),
			       gm_guest_read64(g, MEM_GPA + 4096));
}

static void expect_sync(struct vmm *m, uint64_t page0, uint64_t page1)
{
	struct gm_ucall uc;

	cr_assert_eq(vmm_run(m), 0, "exit %u", m->run->exit_reason);
	cr_assert_eq(m->run->exit_reason, KVM_EXIT_IO);
	cr_assert_eq(gm_vcpu_get_ucall(m->vcpu, &uc), 0);
	cr_assert_eq(uc.cmd, GM_UCALL_SYNC, "guest: %s", uc.msg);
	cr_expect_eq(uc.args[0], page0, "page 0: %#llx", (unsigned long long)uc.args[0]);
	cr_expect_eq(uc.args[1], page1, "page 1: %#llx", (unsigned long long)uc.args[1]);
}

/* A private GPA is served from the file, a shared one from userspace_addr. */
Test(vm_attrs, private_from_file_shared_from_hva)
{
	struct vmm m;
	uint64_t *hva = hva_alloc();

	vmm_init(&m, KVM_X86_SW_PROTECTED_VM);
	int gmem = vmm_gmem(&m, MEM_SIZE, 0);

	cr_assert_eq(vmm_gmem_hva_slot(&m, gmem, hva), 0);
	cr_assert_eq(set_vm_attrs(&m, MEM_GPA, 4096, PRIVATE), 0);
	vmm_vcpu(&m, 0, guest_write_then_read, NULL);
	expect_sync(&m, 0x1111, 0x2222);
	/* The shared write landed in the VMM's memory, the private one did not. */
	cr_expect_eq(hva[0], 0);
	cr_expect_eq(hva[512], 0x2222);
	/* The private page is the file's: punching it out leaves the guest a zero page. */
	cr_assert_eq(gm_fallocate(gmem, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, 4096), 0);
	expect_sync(&m, 0, 0x2222);
	gm_close(gmem);
	vmm_destroy(&m);
	munmap(hva, MEM_SIZE);
}

/* A conversion zaps the stage-2: the guest faults again and reads the other copy of the page. */
Test(vm_attrs, conversion_zaps_stage2)
{
	struct vmm m;
	struct gm_mmu_stats before, after;
	uint64_t *hva = hva_alloc();

	vmm_init(&m, KVM_X86_SW_PROTECTED_VM);
	int gmem = vmm_gmem(&m, MEM_SIZE, 0);

	cr_assert_eq(vmm_gmem_hva_slot(&m, gmem, hva), 0);
	vmm_vcpu(&m, 0, guest_write_then_read, NULL);
	expect_sync(&m, 0x1111, 0x2222);
	cr_assert_eq(gm_vm_mmu_stats(m.vm, &before), 0);
	/* Both pages were shared: the private copy of page 0 is the file's, still zero. */
	cr_assert_eq(set_vm_attrs(&m, MEM_GPA, 4096, PRIVATE), 0);
	cr_assert_eq(gm_vm_mmu_stats(m.vm, &after), 0);
	cr_expect_gt(after.zaps, before.zaps, "the shared leaf of page 0 was zapped");
	expect_sync(&m, 0, 0x2222);
	hva[0] = 0x3333;
	cr_assert_eq(set_vm_attrs(&m, MEM_GPA, 4096, 0), 0);
	expect_sync(&m, 0x3333, 0x2222);
	/* A no-op change zaps nothing. */
	cr_assert_eq(gm_vm_mmu_stats(m.vm, &before), 0);
	cr_assert_eq(set_vm_attrs(&m, MEM_GPA, MEM_SIZE, 0), 0);
	cr_assert_eq(gm_vm_mmu_stats(m.vm, &after), 0);
	cr_expect_eq(after.zaps, before.zaps);
	gm_close(gmem);
	vmm_destroy(&m);
	munmap(hva, MEM_SIZE);
}

static void guest_explicit(struct gm_guest *g, void *arg)
{
	gm_guest_set_access(g, (enum gm_access)(uintptr_t)arg);
	gm_guest_ucall(g, GM_UCALL_DONE, 1, gm_guest_read64(g, MEM_GPA + 8192));
}

/* An access of the other kind exits with KVM_EXIT_MEMORY_FAULT until userspace converts. */
static void check_mismatch(enum gm_access access, uint64_t wrong, uint64_t right, uint64_t flags)
{
	struct vmm m;
	uint64_t *hva = hva_alloc();

	hva[1024] = 0x4444;
	vmm_init(&m, KVM_X86_SW_PROTECTED_VM);
	int gmem = vmm_gmem(&m, MEM_SIZE, 0);

	cr_assert_eq(vmm_gmem_hva_slot(&m, gmem, hva), 0);
	cr_assert_eq(set_vm_attrs(&m, MEM_GPA, MEM_SIZE, wrong), 0);
	vmm_vcpu(&m, 0, guest_explicit, (void *)(uintptr_t)access);
	for (int i = 0; i < 2; i++) {
		cr_expect_eq(vmm_run(&m), EFAULT);
		cr_expect_eq(m.run->exit_reason, KVM_EXIT_MEMORY_FAULT);
		cr_expect_eq(m.run->memory_fault.flags, flags);
		cr_expect_eq(m.run->memory_fault.gpa, MEM_GPA + 8192);
		cr_expect_eq(m.run->memory_fault.size, 4096);
	}
	cr_assert_eq(set_vm_attrs(&m, MEM_GPA + 8192, 4096, right), 0);
	cr_expect_eq(vmm_expect_ucall(&m, GM_UCALL_DONE), right ? 0 : 0x4444);
	gm_close(gmem);
	vmm_destroy(&m);
	munmap(hva, MEM_SIZE);
}

Test(vm_attrs, private_access_to_shared_gpa)
{
	check_mismatch(GM_ACCESS_PRIVATE, 0, PRIVATE, KVM_MEMORY_EXIT_FLAG_PRIVATE);
}

Test(vm_attrs, shared_access_to_private_gpa)
{
	check_mismatch(GM_ACCESS_SHARED, PRIVATE, 0, 0);
}

/* The mode is fixed with the first VM, as a read-only module parameter. */
Test(vm_attrs, mode_fixed_once_a_vm_exists)
{
	struct vmm m;

	cr_expect_eq(gm_set_vm_memory_attributes(true), 0, "before any VM it can change");
	vmm_init(&m, KVM_X86_DEFAULT_VM);
	cr_expect_eq(gm_set_vm_memory_attributes(false), -EBUSY);
	cr_expect_eq(gm_set_vm_memory_attributes(true), -EBUSY);
	vmm_destroy(&m);
	cr_expect_eq(gm_set_vm_memory_attributes(false), -EBUSY);
}

/* A bad call changes nothing: the private page stays private. */
Test(vm_attrs, rejected_call_changes_nothing)
{
	struct vmm m;
	struct kvm_memory_attributes a = { .address = MEM_GPA, .size = 4096, .flags = 1 };
	uint64_t *hva = hva_alloc();

	vmm_init(&m, KVM_X86_SW_PROTECTED_VM);
	int gmem = vmm_gmem(&m, MEM_SIZE, 0);

	cr_assert_eq(vmm_gmem_hva_slot(&m, gmem, hva), 0);
	cr_assert_eq(set_vm_attrs(&m, MEM_GPA, 4096, PRIVATE), 0);
	cr_expect_eq(gm_ioctl(m.vm, KVM_SET_MEMORY_ATTRIBUTES, &a), -1);
	cr_expect_eq(errno, EINVAL);
	a.flags = 0;
	a.size = 4095;
	cr_expect_eq(gm_ioctl(m.vm, KVM_SET_MEMORY_ATTRIBUTES, &a), -1);
	cr_expect_eq(errno, EINVAL);
	vmm_vcpu(&m, 0, guest_write_then_read, NULL);
	expect_sync(&m, 0x1111, 0x2222);
	cr_expect_eq(hva[0], 0, "page 0 is still private");
	gm_close(gmem);
	vmm_destroy(&m);
	munmap(hva, MEM_SIZE);
}

static void guest_private_read_all(struct gm_guest *g, void *arg)
{
	gm_guest_set_access(g, GM_ACCESS_PRIVATE);
	for (;;) {
		for (uint64_t off = 0; off < MEM_SIZE; off += 4096)
			gm_guest_read64(g, MEM_GPA + off);
		gm_guest_ucall(g, GM_UCALL_SYNC, 0);
	}
}

/* A 2 MiB leaf needs the VM's attributes uniform over it, not only the file's folio. */
Test(vm_attrs, huge_leaf_needs_uniform_vm_attributes)
{
	struct vmm m;
	struct gm_mmu_stats st;
	uint64_t *hva = hva_alloc();

	vmm_init(&m, KVM_X86_SW_PROTECTED_VM);
	int gmem = vmm_gmem(&m, MEM_SIZE, GM_GUEST_MEMFD_FOLIO_2M);

	cr_assert_eq(vmm_gmem_hva_slot(&m, gmem, hva), 0);
	cr_assert_eq(set_vm_attrs(&m, MEM_GPA, MEM_SIZE, PRIVATE), 0);
	vmm_vcpu(&m, 0, guest_private_read_all, NULL);
	cr_assert_eq(vmm_expect_ucall(&m, GM_UCALL_SYNC), 0);
	cr_assert_eq(gm_vm_mmu_stats(m.vm, &st), 0);
	cr_expect_eq(st.mapped_2m_bytes, MEM_SIZE);
	/* The last page goes shared: the rest is mapped with 4 KiB leaves, and no 2 MiB one. */
	cr_assert_eq(set_vm_attrs(&m, MEM_GPA + MEM_SIZE - 4096, 4096, 0), 0);
	cr_assert_eq(set_vm_attrs(&m, MEM_GPA + MEM_SIZE - 4096, 4096, PRIVATE), 0);
	cr_assert_eq(set_vm_attrs(&m, MEM_GPA + 4096, 4096, 0), 0);
	cr_assert_eq(set_vm_attrs(&m, MEM_GPA + 4096, 4096, PRIVATE), 0);
	cr_assert_eq(set_vm_attrs(&m, MEM_GPA + MEM_SIZE - 4096, 4096, 0), 0);
	cr_expect_eq(vmm_run(&m), EFAULT, "the private read of the shared last page exits");
	cr_expect_eq(m.run->exit_reason, KVM_EXIT_MEMORY_FAULT);
	cr_expect_eq(m.run->memory_fault.gpa, MEM_GPA + MEM_SIZE - 4096);
	cr_assert_eq(gm_vm_mmu_stats(m.vm, &st), 0);
	cr_expect_eq(st.mapped_2m_bytes, 0);
	cr_expect_eq(st.mapped_4k_bytes, MEM_SIZE - 4096);
	gm_close(gmem);
	vmm_destroy(&m);
	munmap(hva, MEM_SIZE);
}

static void guest_auto_read(struct gm_guest *g, void *arg)
{
	gm_guest_ucall(g, GM_UCALL_DONE, 1, gm_guest_read64(g, (uint64_t)(uintptr_t)arg));
}

/* Without a slot the VM's attribute still decides, as in 6.18: private is a memory fault, shared MMIO. */
Test(vm_attrs, no_slot_follows_vm_attributes)
{
	struct vmm m;

	vmm_init(&m, KVM_X86_SW_PROTECTED_VM);
	cr_assert_eq(set_vm_attrs(&m, MEM_GPA, 4096, PRIVATE), 0);
	vmm_vcpu(&m, 0, guest_auto_read, (void *)(uintptr_t)(MEM_GPA + 8));
	cr_expect_eq(vmm_run(&m), EFAULT);
	cr_expect_eq(m.run->exit_reason, KVM_EXIT_MEMORY_FAULT);
	cr_expect_eq(m.run->memory_fault.flags, KVM_MEMORY_EXIT_FLAG_PRIVATE);
	cr_expect_eq(m.run->memory_fault.gpa, MEM_GPA);
	cr_assert_eq(set_vm_attrs(&m, MEM_GPA, 4096, 0), 0);
	cr_expect_eq(vmm_run(&m), 0);
	cr_expect_eq(m.run->exit_reason, KVM_EXIT_MMIO);
	cr_expect_eq(m.run->mmio.phys_addr, MEM_GPA + 8);
	vmm_destroy(&m);
}

/* A file with MMAP serves shared GPAs too (6.18's gmem-only slots), not userspace_addr. */
Test(vm_attrs, mmap_file_serves_shared_gpas)
{
	struct vmm m;
	uint64_t *hva = hva_alloc();

	vmm_init(&m, KVM_X86_SW_PROTECTED_VM);
	int gmem = vmm_gmem(&m, MEM_SIZE, GUEST_MEMFD_FLAG_MMAP);

	cr_assert_eq(vmm_gmem_hva_slot(&m, gmem, hva), 0);
	cr_assert_eq(set_vm_attrs(&m, MEM_GPA, 4096, PRIVATE), 0);
	vmm_vcpu(&m, 0, guest_write_then_read, NULL);
	expect_sync(&m, 0x1111, 0x2222);
	cr_expect_eq(hva[512], 0, "the shared write went to the file, not to userspace_addr");
	/* Private and shared pages are the same file's: converting keeps what the guest wrote. */
	cr_assert_eq(set_vm_attrs(&m, MEM_GPA, 4096, 0), 0);
	expect_sync(&m, 0x1111, 0x2222);
	gm_close(gmem);
	vmm_destroy(&m);
	munmap(hva, MEM_SIZE);
}
