/* The kvm backend: a real x86 guest on /dev/kvm, its memory in the host's guest_memfd. */
#include <linux/falloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <unistd.h>

#include "../tools/x86_boot.h"
#include "internal.h"
#include "unit/vmm.h"

#define MEM (8ULL << 20)
#define CODE_GPA 0x100000ULL
#define BUF_GPA 0x200000ULL

/*
 * The guest: MAP_GPA_RANGE(BUF_GPA, 1, shared) through the gate, store the
 * result and a word at BUF_GPA, MAP_GPA_RANGE back to private, report RAX, halt.
 */
static const uint8_t guest_code[] = {
	0xb8, 12, 0, 0, 0,                               /* mov $12, %eax          */
	0x48, 0xc7, 0xc3, 0x00, 0x00, 0x20, 0x00,        /* mov $0x200000, %rbx    */
	0xb9, 1, 0, 0, 0,                                /* mov $1, %ecx           */
	0x31, 0xd2,                                      /* xor %edx, %edx         */
	0xe6, GM_HYPERCALL_PORT,                         /* out %al, $gate         */
	0x48, 0xc7, 0x03, 0x78, 0x56, 0x34, 0x12,        /* movq $0x12345678,(%rbx)*/
	0xb8, 12, 0, 0, 0,                               /* mov $12, %eax          */
	0xba, 0x10, 0, 0, 0,                             /* mov $0x10, %edx        */
	0xe6, GM_HYPERCALL_PORT,                         /* out %al, $gate         */
	0x48, 0x89, 0xc7,                                /* mov %rax, %rdi         */
	0x66, 0xba, 0x00, 0x10,                          /* mov $0x1000, %dx       */
	0xee,                                            /* out %al, (%dx)         */
	0xf4,                                            /* hlt                    */
};

/* Bytes of readable mappings of the host's guest_memfd in this process, from /proc/self/maps. */
static uint64_t readable_gmem_bytes(void)
{
	FILE *f = fopen("/proc/self/maps", "r");
	char line[512];
	uint64_t total = 0;

	cr_assert_not_null(f);
	while (fgets(line, sizeof(line), f)) {
		unsigned long lo, hi;
		char perms[8];

		if (sscanf(line, "%lx-%lx %7s", &lo, &hi, perms) == 3 && perms[0] == 'r' &&
		    strstr(line, "[kvm-gmem]"))
			total += hi - lo;
	}
	fclose(f);
	return total;
}

/* vCPU 0 of vm, in long mode at CODE_GPA with MAP_GPA_RANGE exits on; its run area. */
static struct kvm_run *boot_vcpu(int vm, int *vcpu)
{
	struct kvm_enable_cap cap = { .cap = KVM_CAP_EXIT_HYPERCALL,
				      .args = { 1ULL << KVM_HC_MAP_GPA_RANGE } };
	struct kvm_run *run;

	cr_assert_eq(gm_ioctl(vm, KVM_ENABLE_CAP, &cap), 0);
	*vcpu = gm_ioctl(vm, KVM_CREATE_VCPU, 0);
	cr_assert_geq(*vcpu, 0);
	run = gm_mmap(NULL, 3 * 4096, PROT_READ | PROT_WRITE, MAP_SHARED, *vcpu, 0);
	cr_assert_neq(run, MAP_FAILED);
	cr_assert_eq(x86_set_cpuid(*vcpu), 0);
	cr_assert_eq(x86_enter_long_mode(*vcpu, 0x1000, CODE_GPA, 0x80000, 0, 0), 0);
	return run;
}

static int convert(int gmem, uint64_t offset, uint64_t size, bool private)
{
	struct kvm_memory_attributes2 a = {
		.offset = offset, .size = size, .attributes = private ? KVM_MEMORY_ATTRIBUTE_PRIVATE : 0,
	};

	return gm_ioctl(gmem, KVM_SET_MEMORY_ATTRIBUTES2, &a) ? errno : 0;
}

/* Boots the guest, serves its two conversions, punches; host_gmem: the host's guest_memfd or a memfd. */
static void boot_convert_punch(bool host_gmem)
{
	if (!host_gmem)
		setenv("GMEM_KVM_HOST_GMEM", "0", 1);
	int kvm = gm_open_kvm();
	int vm = gm_ioctl(kvm, KVM_CREATE_VM, KVM_X86_SW_PROTECTED_VM | GM_VM_BACKEND_KVM);
	struct gm_vm_info info;

	if (vm < 0 && (errno == ENODEV || errno == ENOENT || errno == EACCES))
		cr_skip_test("no usable /dev/kvm on this machine: %s", strerror(errno));
	cr_assert_geq(vm, 0, "%s", strerror(errno));
	cr_assert_eq(gm_vm_info(vm, &info), 0);
	cr_expect_eq(info.backend, GM_VM_BACKEND_KVM);
	if (host_gmem && !host_kvm_has_gmem()) {
		cr_expect_eq(info.host_gmem, 0, "no host guest_memfd, yet the VM says it has one");
		cr_skip_test("the host's /dev/kvm has no guest_memfd (KVM_CAP_GUEST_MEMFD is 0): "
			     "only the memfd fallback can be tested here");
	}
	cr_expect_eq(info.host_gmem, host_gmem);

	struct kvm_create_guest_memfd c = {
		.size = MEM, .flags = GUEST_MEMFD_FLAG_MMAP | GUEST_MEMFD_FLAG_INIT_SHARED,
	};
	int gmem = gm_ioctl(vm, KVM_CREATE_GUEST_MEMFD, &c);
	cr_assert_geq(gmem, 0, "%s", strerror(errno));
	struct gm_gmem_info gi;
	gm_gmem_info(gmem, &gi);
	cr_expect_eq(gi.backing, host_gmem ? GM_BACKING_HOST_GMEM : GM_BACKING_MEMFD);

	/* The VMM loads the guest while memory is shared, then makes it private. */
	char *host = gm_mmap(NULL, MEM, PROT_READ | PROT_WRITE, MAP_SHARED, gmem, 0);
	cr_assert_neq(host, MAP_FAILED);
	x86_build_page_tables(host, 0x1000, MEM);
	memcpy(host + CODE_GPA, guest_code, sizeof(guest_code));
	struct kvm_userspace_memory_region2 r = {
		.slot = 0, .flags = KVM_MEM_GUEST_MEMFD, .memory_size = MEM, .guest_memfd = (uint32_t)gmem,
	};
	cr_assert_eq(gm_ioctl(vm, KVM_SET_USER_MEMORY_REGION2, &r), 0, "%s", strerror(errno));
	cr_assert_eq(convert(gmem, 0, MEM, true), 0);
	cr_expect(vmm_host_faults(host + CODE_GPA), "the VMM can read private memory");
	/*
	 * No readable mapping of the memory is left in the process, but for the
	 * view a shadow-paging host's KVM must read guest memory through.
	 */
	if (host_gmem)
		cr_expect_eq(readable_gmem_bytes(), info.host_hva_view ? MEM : 0,
			     "readable [kvm-gmem] mappings: %llu bytes (view needed: %u)",
			     (unsigned long long)readable_gmem_bytes(), info.host_hva_view);

	int vcpu;
	struct kvm_run *run = boot_vcpu(vm, &vcpu);

	/* The guest asks for its buffer to be shared. */
	cr_assert_eq(gm_ioctl(vcpu, KVM_RUN, 0), 0, "%s", strerror(errno));
	cr_assert_eq(run->exit_reason, KVM_EXIT_HYPERCALL, "exit %u", run->exit_reason);
	cr_expect_eq(run->hypercall.nr, KVM_HC_MAP_GPA_RANGE);
	cr_expect_eq(run->hypercall.args[0], BUF_GPA);
	cr_expect_eq(run->hypercall.args[1], 1);
	cr_assert_eq(convert(gmem, BUF_GPA, 4096, false), 0);
	run->hypercall.ret = 0;

	/* It writes there and asks for it back as private. */
	cr_assert_eq(gm_ioctl(vcpu, KVM_RUN, 0), 0);
	cr_assert_eq(run->exit_reason, KVM_EXIT_HYPERCALL);
	cr_expect_eq(run->hypercall.args[2], KVM_MAP_GPA_RANGE_ENCRYPTED);
	cr_expect_eq(*(volatile uint64_t *)(host + BUF_GPA), 0x12345678, "the guest's write, in place");
	cr_assert_eq(convert(gmem, BUF_GPA, 4096, true), 0);
	cr_expect(vmm_host_faults(host + BUF_GPA));
	run->hypercall.ret = 7;

	/* The guest saw userspace's answer in RAX and reports it, then halts. */
	cr_assert_eq(gm_ioctl(vcpu, KVM_RUN, 0), 0);
	cr_assert_eq(run->exit_reason, KVM_EXIT_IO);
	struct kvm_regs regs;
	cr_assert_eq(gm_ioctl(vcpu, KVM_GET_REGS, &regs), 0);
	cr_expect_eq(regs.rdi, 7);
	cr_assert_eq(gm_ioctl(vcpu, KVM_RUN, 0), 0);
	cr_expect_eq(run->exit_reason, KVM_EXIT_HLT);

	/* Punch-hole on this backend frees the host's memory: the page reads zero when shared again. */
	cr_assert_eq(gm_fallocate(gmem, FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE, BUF_GPA, 4096), 0);
	cr_assert_eq(convert(gmem, BUF_GPA, 4096, false), 0);
	cr_expect_eq(*(volatile uint64_t *)(host + BUF_GPA), 0);

	gm_munmap(run, 3 * 4096);
	gm_munmap(host, MEM);
	gm_close(vcpu);
	gm_close(gmem);
	gm_close(vm);
	gm_close(kvm);
}

Test(kvm_backend, boot_convert_punch)
{
	boot_convert_punch(true);
}

/* A host without guest_memfd: memfd memory bound as host-address memory, the same guest. */
Test(kvm_backend, without_host_guest_memfd)
{
	boot_convert_punch(false);
}

/* Without a backend bit, GMEM_BACKEND chooses; soft is the default. */
Test(kvm_backend, backend_from_environment)
{
	static const struct { const char *env; uint64_t want; bool needs_kvm; } cases[] = {
		{ NULL, GM_VM_BACKEND_SOFT, false },
		{ "soft", GM_VM_BACKEND_SOFT, false },
		{ "kvm", GM_VM_BACKEND_KVM, true },
		{ "auto", GM_VM_BACKEND_KVM, true },
	};
	int kvm = gm_open_kvm();
	bool usable = access("/dev/kvm", R_OK | W_OK) == 0;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct gm_vm_info info;
		int vm;

		if (cases[i].needs_kvm && !usable)
			continue;
		if (cases[i].env)
			setenv("GMEM_BACKEND", cases[i].env, 1);
		else
			unsetenv("GMEM_BACKEND");
		vm = gm_ioctl(kvm, KVM_CREATE_VM, KVM_X86_SW_PROTECTED_VM);
		cr_assert_geq(vm, 0, "GMEM_BACKEND=%s: %s", cases[i].env, strerror(errno));
		cr_assert_eq(gm_vm_info(vm, &info), 0);
		cr_expect_eq(info.backend, cases[i].want, "GMEM_BACKEND=%s", cases[i].env);
		cr_expect_eq(info.type, KVM_X86_SW_PROTECTED_VM);
		gm_close(vm);
	}
	/* Both bits at once is no backend at all. */
	cr_expect_eq(gm_ioctl(kvm, KVM_CREATE_VM, GM_VM_BACKEND_SOFT | GM_VM_BACKEND_KVM), -1);
	cr_expect_eq(errno, EINVAL);
	gm_close(kvm);
}

#define SENTINEL_SHARED 0x5555555555555555ULL
#define PRIVATE_WORD 0x11111111ULL
#define SHARED_WORD 0x12345678ULL

/*
 * The guest for per-VM attributes: a word to its private BUF_GPA page,
 * MAP_GPA_RANGE(BUF_GPA, 1, shared) through the gate, another word there,
 * MAP_GPA_RANGE back to private, then it reports what it reads (RDI) and halts.
 */
static const uint8_t per_vm_guest_code[] = {
	0x48, 0xc7, 0xc3, 0x00, 0x00, 0x20, 0x00,        /* mov $0x200000, %rbx    */
	0x48, 0xc7, 0x03, 0x11, 0x11, 0x11, 0x11,        /* movq $PRIVATE_WORD,(%rbx) */
	0xb8, 12, 0, 0, 0,                               /* mov $12, %eax          */
	0xb9, 1, 0, 0, 0,                                /* mov $1, %ecx           */
	0x31, 0xd2,                                      /* xor %edx, %edx         */
	0xe6, GM_HYPERCALL_PORT,                         /* out %al, $gate         */
	0x48, 0xc7, 0x03, 0x78, 0x56, 0x34, 0x12,        /* movq $SHARED_WORD,(%rbx) */
	0xb8, 12, 0, 0, 0,                               /* mov $12, %eax          */
	0xb9, 1, 0, 0, 0,                                /* mov $1, %ecx           */
	0xba, 0x10, 0, 0, 0,                             /* mov $0x10, %edx        */
	0xe6, GM_HYPERCALL_PORT,                         /* out %al, $gate         */
	0x48, 0x8b, 0x3b,                                /* mov (%rbx), %rdi       */
	0x66, 0xba, 0x00, 0x10,                          /* mov $0x1000, %dx       */
	0xee,                                            /* out %al, (%dx)         */
	0xf4,                                            /* hlt                    */
};

static int set_vm_attrs(int vm, uint64_t gpa, uint64_t size, bool private)
{
	struct kvm_memory_attributes a = {
		.address = gpa, .size = size, .attributes = private ? KVM_MEMORY_ATTRIBUTE_PRIVATE : 0,
	};

	return gm_ioctl(vm, KVM_SET_MEMORY_ATTRIBUTES, &a) ? errno : 0;
}

/* MEM bytes of plain memory with the identity map and code at CODE_GPA. */
static char *guest_memory(const uint8_t *code, size_t len)
{
	char *mem = mmap(NULL, MEM, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);

	cr_assert_neq(mem, MAP_FAILED);
	x86_build_page_tables(mem, 0x1000, MEM);
	memcpy(mem + CODE_GPA, code, len);
	return mem;
}

/* A per-VM-mode SW_PROTECTED kvm-backend VM with one guest_memfd slot over shared; -1: skip. */
static int per_vm_setup(int kvm, void *shared, uint64_t size, int *gmem)
{
	int vm = gm_ioctl(kvm, KVM_CREATE_VM, KVM_X86_SW_PROTECTED_VM | GM_VM_BACKEND_KVM);

	if (vm < 0 && (errno == ENODEV || errno == ENOENT || errno == EACCES))
		cr_skip_test("no usable /dev/kvm on this machine: %s", strerror(errno));
	cr_assert_geq(vm, 0, "%s", strerror(errno));
	struct kvm_create_guest_memfd c = { .size = size };
	*gmem = gm_ioctl(vm, KVM_CREATE_GUEST_MEMFD, &c);
	cr_assert_geq(*gmem, 0, "%s", strerror(errno));
	struct kvm_userspace_memory_region2 r = {
		.slot = 0, .flags = KVM_MEM_GUEST_MEMFD, .memory_size = size,
		.userspace_addr = (uint64_t)(uintptr_t)shared, .guest_memfd = (uint32_t)*gmem,
	};
	cr_assert_eq(gm_ioctl(vm, KVM_SET_USER_MEMORY_REGION2, &r), 0, "%s", strerror(errno));
	return vm;
}

/* Runs the vCPU to its MAP_GPA_RANGE(BUF_GPA, 1) exit and sets the page's attribute as asked. */
static void serve_conversion(int vm, int vcpu, struct kvm_run *run, bool private)
{
	cr_assert_eq(gm_ioctl(vcpu, KVM_RUN, 0), 0, "%s", strerror(errno));
	cr_assert_eq(run->exit_reason, KVM_EXIT_HYPERCALL, "exit %u", run->exit_reason);
	cr_expect_eq(run->hypercall.args[0], BUF_GPA);
	cr_expect_eq(run->hypercall.args[1], 1);
	cr_expect_eq(run->hypercall.args[2], private ? KVM_MAP_GPA_RANGE_ENCRYPTED : 0);
	cr_assert_eq(set_vm_attrs(vm, BUF_GPA, 4096, private), 0);
	run->hypercall.ret = 0;
}

/*
 * Per-VM attributes (Linux 6.8-7.3): the host VM's slot is split by attribute,
 * so a private GPA is the file's and a shared one the slot's userspace_addr,
 * and converting is not in place. The guest converts with the gate.
 */
Test(kvm_backend, per_vm_attributes_split_host_slots)
{
	cr_assert_eq(gm_set_vm_memory_attributes(true), 0);
	int kvm = gm_open_kvm(), gmem;
	char *shared = guest_memory(per_vm_guest_code, sizeof(per_vm_guest_code));
	*(volatile uint64_t *)(shared + BUF_GPA) = SENTINEL_SHARED;
	int vm = per_vm_setup(kvm, shared, MEM, &gmem);
	cr_assert_eq(set_vm_attrs(vm, BUF_GPA, 4096, true), 0);

	int vcpu;
	struct kvm_run *run = boot_vcpu(vm, &vcpu);

	/* The private write went to the file: userspace_addr still holds the VMM's word. */
	serve_conversion(vm, vcpu, run, false);
	cr_expect_eq(*(volatile uint64_t *)(shared + BUF_GPA), SENTINEL_SHARED,
		     "the guest's private write reached userspace_addr");

	/* The shared write is in userspace_addr memory. */
	serve_conversion(vm, vcpu, run, true);
	cr_expect_eq(*(volatile uint64_t *)(shared + BUF_GPA), SHARED_WORD,
		     "the guest's shared write is not in userspace_addr");

	/* Private again: the guest reads the file's word, not the shared one. */
	cr_assert_eq(gm_ioctl(vcpu, KVM_RUN, 0), 0, "%s", strerror(errno));
	cr_assert_eq(run->exit_reason, KVM_EXIT_IO, "exit %u", run->exit_reason);
	struct kvm_regs regs;
	cr_assert_eq(gm_ioctl(vcpu, KVM_GET_REGS, &regs), 0);
	cr_expect_eq(regs.rdi, PRIVATE_WORD, "the guest read %#llx after converting back",
		     (unsigned long long)regs.rdi);
	cr_assert_eq(gm_ioctl(vcpu, KVM_RUN, 0), 0);
	cr_expect_eq(run->exit_reason, KVM_EXIT_HLT, "exit %u", run->exit_reason);

	gm_munmap(run, 3 * 4096);
	gm_close(vcpu);
	gm_close(gmem);
	gm_close(vm);
	gm_close(kvm);
	munmap(shared, MEM);
}

/* The guest reads BUF_GPA into RDI, reports it and halts. */
static const uint8_t read_buf_guest_code[] = {
	0x48, 0xc7, 0xc3, 0x00, 0x00, 0x20, 0x00,        /* mov $0x200000, %rbx    */
	0x48, 0x8b, 0x3b,                                /* mov (%rbx), %rdi       */
	0x66, 0xba, 0x00, 0x10,                          /* mov $0x1000, %dx       */
	0xee,                                            /* out %al, (%dx)         */
	0xf4,                                            /* hlt                    */
};

/*
 * A private GPA in a slot without a file: the kernel's private memory fault
 * (private_mem_kvm_exits_test). After the VMM makes it shared, KVM_RUN does
 * the access again and the guest reads userspace_addr.
 */
Test(kvm_backend, per_vm_private_access_without_file_faults)
{
	cr_assert_eq(gm_set_vm_memory_attributes(true), 0);
	int kvm = gm_open_kvm();
	char *mem = guest_memory(read_buf_guest_code, sizeof(read_buf_guest_code));
	*(volatile uint64_t *)(mem + BUF_GPA) = SHARED_WORD;
	int vm = gm_ioctl(kvm, KVM_CREATE_VM, KVM_X86_SW_PROTECTED_VM | GM_VM_BACKEND_KVM);
	if (vm < 0 && (errno == ENODEV || errno == ENOENT || errno == EACCES))
		cr_skip_test("no usable /dev/kvm on this machine: %s", strerror(errno));
	cr_assert_geq(vm, 0, "%s", strerror(errno));
	struct kvm_userspace_memory_region r = {
		.slot = 0, .memory_size = MEM, .userspace_addr = (uint64_t)(uintptr_t)mem,
	};
	cr_assert_eq(gm_ioctl(vm, KVM_SET_USER_MEMORY_REGION, &r), 0, "%s", strerror(errno));
	cr_assert_eq(set_vm_attrs(vm, BUF_GPA, 4096, true), 0);
	int vcpu;
	struct kvm_run *run = boot_vcpu(vm, &vcpu);

	cr_assert_eq(gm_ioctl(vcpu, KVM_RUN, 0), -1);
	cr_expect_eq(errno, EFAULT);
	cr_assert_eq(run->exit_reason, KVM_EXIT_MEMORY_FAULT, "exit %u", run->exit_reason);
	cr_expect_eq(run->memory_fault.flags, KVM_MEMORY_EXIT_FLAG_PRIVATE);
	cr_expect_eq(run->memory_fault.gpa, BUF_GPA);
	cr_expect_eq(run->memory_fault.size, 4096);
	/* Still private: the same fault again. */
	cr_assert_eq(gm_ioctl(vcpu, KVM_RUN, 0), -1);
	cr_expect_eq(run->exit_reason, KVM_EXIT_MEMORY_FAULT);

	cr_assert_eq(set_vm_attrs(vm, BUF_GPA, 4096, false), 0);
	cr_assert_eq(gm_ioctl(vcpu, KVM_RUN, 0), 0, "%s", strerror(errno));
	cr_assert_eq(run->exit_reason, KVM_EXIT_IO, "exit %u", run->exit_reason);
	struct kvm_regs regs;
	cr_assert_eq(gm_ioctl(vcpu, KVM_GET_REGS, &regs), 0);
	cr_expect_eq(regs.rdi, SHARED_WORD, "the guest read %#llx", (unsigned long long)regs.rdi);

	gm_munmap(run, 3 * 4096);
	gm_close(vcpu);
	gm_close(vm);
	gm_close(kvm);
	munmap(mem, MEM);
}

/*
 * Each attribute run is a host slot: when the host's slot ids run out,
 * KVM_SET_MEMORY_ATTRIBUTES is ENOMEM and changes nothing (a retry fails
 * alike rather than finding the range already set); merging runs frees ids.
 * The host's 32764 ids are capped at 16 to keep the test short.
 */
Test(kvm_backend, per_vm_host_slot_ids_run_out)
{
	const uint64_t pages = 64, size = pages * 4096;

	gm_host_slot_ids_limit(16);
	cr_assert_eq(gm_set_vm_memory_attributes(true), 0);
	int kvm = gm_open_kvm(), gmem;
	char *shared = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);

	cr_assert_neq(shared, MAP_FAILED);
	int vm = per_vm_setup(kvm, shared, size, &gmem);
	uint64_t page;
	int err = 0;

	for (page = 1; page < pages; page += 2) {
		err = set_vm_attrs(vm, page * 4096, 4096, true);
		if (err)
			break;
	}
	/* Slot 0 and 15 more ids: 16 runs, pages 0 to 15; page 15 would need a 17th. */
	cr_assert_eq(err, ENOMEM, "page %llu: %s", (unsigned long long)page, strerror(err));
	cr_expect_eq(page, 15);
	cr_expect_eq(set_vm_attrs(vm, page * 4096, 4096, true), ENOMEM,
		     "the failed call changed something");
	/* Pages 1 to 3 private as one run: two ids come back. */
	cr_assert_eq(set_vm_attrs(vm, 4096, 3 * 4096, true), 0);
	cr_expect_eq(set_vm_attrs(vm, page * 4096, 4096, true), 0);

	/*
	 * A new slot whose id a run holds gets it: the run moves to another id
	 * (15 runs now, on ids 0 to 14 with one to spare). Then slot 14 finds no
	 * id to move its run to, until runs merge.
	 */
	char *more = mmap(NULL, 2 * 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	struct kvm_userspace_memory_region r = {
		.slot = 15, .guest_phys_addr = size, .memory_size = 4096,
		.userspace_addr = (uint64_t)(uintptr_t)more,
	};
	cr_expect_eq(gm_ioctl(vm, KVM_SET_USER_MEMORY_REGION, &r), 0, "%s", strerror(errno));
	r.slot = 14;
	r.guest_phys_addr += 4096;
	r.userspace_addr += 4096;
	cr_expect_eq(gm_ioctl(vm, KVM_SET_USER_MEMORY_REGION, &r), -1, "no id left to move the run to");
	cr_expect_eq(errno, ENOMEM);
	cr_assert_eq(set_vm_attrs(vm, 0, 8 * 4096, true), 0);
	cr_expect_eq(gm_ioctl(vm, KVM_SET_USER_MEMORY_REGION, &r), 0, "%s", strerror(errno));
	gm_close(gmem);
	gm_close(vm);
	gm_close(kvm);
	munmap(more, 2 * 4096);
	munmap(shared, size);
}

#define LOOPS 1000000
#define NEXT_GPA (BUF_GPA + 4096)

/* The guest adds 1 to the word at BUF_GPA LOOPS times, reports, halts. */
static const uint8_t counting_guest_code[] = {
	0x48, 0xc7, 0xc3, 0x00, 0x00, 0x20, 0x00,        /* mov $0x200000, %rbx    */
	0xb9, LOOPS & 0xff, (LOOPS >> 8) & 0xff,
	(LOOPS >> 16) & 0xff, LOOPS >> 24,               /* mov $LOOPS, %ecx       */
	0x48, 0xff, 0x03,                                /* 1: incq (%rbx)         */
	0xff, 0xc9,                                      /* dec %ecx               */
	0x75, 0xf9,                                      /* jnz 1b                 */
	0x66, 0xba, 0x00, 0x10,                          /* mov $0x1000, %dx       */
	0xee,                                            /* out %al, (%dx)         */
	0xf4,                                            /* hlt                    */
};

struct counting_run {
	int vcpu;
	struct kvm_run *run;
	long ret;
	atomic_bool done;
};

static void *run_counting_vcpu(void *arg)
{
	struct counting_run *c = arg;

	c->ret = gm_ioctl(c->vcpu, KVM_RUN, 0) ? errno : 0;
	atomic_store(&c->done, true);
	return NULL;
}

/*
 * The host slot under a running guest's page is deleted and made again by
 * every conversion of the next page (the run holding it ends there): the
 * guest's accesses in between must neither exit to the VMM nor be lost.
 */
Test(kvm_backend, per_vm_resplit_under_running_vcpu, .timeout = 60)
{
	cr_assert_eq(gm_set_vm_memory_attributes(true), 0);
	int kvm = gm_open_kvm(), gmem;
	char *shared = guest_memory(counting_guest_code, sizeof(counting_guest_code));
	int vm = per_vm_setup(kvm, shared, MEM, &gmem);
	/* A private page before BUF_GPA keeps the code's and page tables' run out of the churn. */
	cr_assert_eq(set_vm_attrs(vm, BUF_GPA - 4096, 4096, true), 0);
	struct counting_run c = { 0 };
	c.run = boot_vcpu(vm, &c.vcpu);
	pthread_t t;
	unsigned long flips = 0;

	cr_assert_eq(pthread_create(&t, NULL, run_counting_vcpu, &c), 0);
	while (!atomic_load(&c.done)) {
		cr_assert_eq(set_vm_attrs(vm, NEXT_GPA, 4096, !(flips & 1)), 0);
		flips++;
	}
	pthread_join(t, NULL);
	cr_assert_eq(c.ret, 0, "%s", strerror((int)c.ret));
	cr_assert_eq(c.run->exit_reason, KVM_EXIT_IO, "exit %u at %#llx", c.run->exit_reason,
		     (unsigned long long)c.run->mmio.phys_addr);
	cr_expect_eq(*(volatile uint64_t *)(shared + BUF_GPA), LOOPS, "%llu increments of %u survived",
		     (unsigned long long)*(volatile uint64_t *)(shared + BUF_GPA), LOOPS);
	cr_expect_geq(flips, 100, "only %lu conversions while the guest ran", flips);
	cr_log_info("%lu conversions while the guest counted", flips);

	gm_munmap(c.run, 3 * 4096);
	gm_close(c.vcpu);
	gm_close(gmem);
	gm_close(vm);
	gm_close(kvm);
	munmap(shared, MEM);
}

/*
 * Fails the n-th allocation of `change` for n = 1, 2, ... until it succeeds;
 * after each failure slot 2 (`probe`) can take the GPA `change` wanted: the
 * host refuses overlapping slots with EEXIST. Returns how many failed.
 */
static int failed_change_leaves_gpa_free(int vm, const struct kvm_userspace_memory_region *change,
					 const struct kvm_userspace_memory_region *probe)
{
	struct kvm_userspace_memory_region gone = { .slot = probe->slot };
	int failed = 0, ret;

	for (long n = 1;; n++) {
		gm_heap_fail_after(n);
		ret = gm_ioctl(vm, KVM_SET_USER_MEMORY_REGION, change);
		gm_heap_fail_after(0);
		if (!ret)
			return failed;
		cr_assert_eq(errno, ENOMEM, "allocation %ld: %s", n, strerror(errno));
		failed++;
		cr_expect_eq(gm_ioctl(vm, KVM_SET_USER_MEMORY_REGION, probe), 0,
			     "allocation %ld: a host slot is still at the GPA: %s", n, strerror(errno));
		cr_assert_eq(gm_ioctl(vm, KVM_SET_USER_MEMORY_REGION, &gone), 0);
	}
}

/* A slot create or move that fails at any allocation leaves the host VM as it was. */
Test(kvm_backend, failed_slot_change_leaves_no_host_slot)
{
	int kvm = gm_open_kvm();
	int vm = gm_ioctl(kvm, KVM_CREATE_VM, GM_VM_BACKEND_KVM);

	if (vm < 0 && (errno == ENODEV || errno == ENOENT || errno == EACCES))
		cr_skip_test("no usable /dev/kvm on this machine: %s", strerror(errno));
	cr_assert_geq(vm, 0, "%s", strerror(errno));
	char *mem = mmap(NULL, 4 * 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	cr_assert_neq(mem, MAP_FAILED);
	struct kvm_userspace_memory_region r = {
		.slot = 1, .guest_phys_addr = 0x10000, .memory_size = 4096,
		.userspace_addr = (uint64_t)(uintptr_t)mem,
	};
	struct kvm_userspace_memory_region probe = r;

	probe.slot = 2;
	cr_expect_gt(failed_change_leaves_gpa_free(vm, &r, &probe), 0, "no allocation to fail");
	/* A move (same id, new GPA) that fails goes back to the old GPA on the host too. */
	r.guest_phys_addr = probe.guest_phys_addr = 0x20000;
	cr_expect_gt(failed_change_leaves_gpa_free(vm, &r, &probe), 0, "no allocation to fail");
	gm_close(vm);
	gm_close(kvm);
	munmap(mem, 4 * 4096);
}

/*
 * Fails the n-th host slot change of set_vm_attrs(vm, gpa, size, private) for
 * n = 1, 2, ... until the call succeeds; each failed call must leave the host
 * slots exactly as they were (ids, ranges, flags, offsets). Returns how many failed.
 */
static int attrs_change_rolls_back(int vm, uint64_t gpa, uint64_t size, bool private)
{
	int failed = 0, err;

	for (long n = 1;; n++) {
		uint64_t before = gm_host_slots_digest();

		gm_host_region_fail_after(n);
		err = set_vm_attrs(vm, gpa, size, private);
		gm_host_region_fail_after(0);
		if (!err)
			return failed;
		cr_assert_eq(err, EIO, "change %ld: %s", n, strerror(err));
		cr_expect_eq(gm_host_slots_digest(), before,
			     "failing host change %ld left the host slots changed", n);
		failed++;
	}
}

Test(kvm_backend, per_vm_failed_resplit_restores_host_slots)
{
	const uint64_t pages = 16, size = pages * 4096;

	cr_assert_eq(gm_set_vm_memory_attributes(true), 0);
	int kvm = gm_open_kvm(), gmem;
	char *shared = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);

	cr_assert_neq(shared, MAP_FAILED);
	int vm = per_vm_setup(kvm, shared, size, &gmem);

	for (uint64_t page = 1; page < pages; page += 4)
		cr_assert_eq(set_vm_attrs(vm, page * 4096, 2 * 4096, true), 0);
	/* Splits a shared run in three, then merges runs, then shares everything. */
	cr_expect_gt(attrs_change_rolls_back(vm, 4 * 4096, 4096, true), 1);
	cr_expect_gt(attrs_change_rolls_back(vm, 0, 8 * 4096, true), 1);
	cr_expect_gt(attrs_change_rolls_back(vm, 0, size, false), 0);
	/* A new split slot (no file) that fails at any allocation leaves no host slot either. */
	struct kvm_userspace_memory_region r = {
		.slot = 1, .guest_phys_addr = size, .memory_size = 4096,
		.userspace_addr = (uint64_t)(uintptr_t)shared,
	};
	struct kvm_userspace_memory_region probe = r;

	probe.slot = 2;
	cr_expect_gt(failed_change_leaves_gpa_free(vm, &r, &probe), 0, "no allocation to fail");
	gm_close(gmem);
	gm_close(vm);
	gm_close(kvm);
	munmap(shared, size);
}
