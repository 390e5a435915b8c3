/* Soft vCPUs' x86 state where libgmem decides: its supported CPUID, the kernel rules it keeps. */
#include <cpuid.h>
#include <stdlib.h>

#include "vmm.h"

#define EFER_LME (1ULL << 8)
#define EFER_LMA (1ULL << 10)

struct cpuid_buf {
	struct kvm_cpuid2 hdr;
	struct kvm_cpuid_entry2 e[256];
};

static struct kvm_cpuid_entry2 *leaf(struct cpuid_buf *c, uint32_t fn)
{
	for (uint32_t i = 0; i < c->hdr.nent; i++)
		if (c->e[i].function == fn && c->e[i].index == 0)
			return &c->e[i];
	return NULL;
}

static struct cpuid_buf *get_supported(int fd, bool host)
{
	struct cpuid_buf *c = calloc(1, sizeof(*c));

	c->hdr.nent = 256;
	cr_assert_eq(host ? ioctl(fd, KVM_GET_SUPPORTED_CPUID, c) : gm_ioctl(fd, KVM_GET_SUPPORTED_CPUID, c),
		     0, "%s", strerror(errno));
	return c;
}

/* The soft vCPU's table: the host's vendor, long mode and NX, the stage-2's 48 bits. */
Test(x86_state, soft_supported_cpuid)
{
	int kvm = gm_open_kvm();
	struct cpuid_buf *c = get_supported(kvm, false);
	unsigned int a, b, cx, d;

	__cpuid(0, a, b, cx, d);
	cr_assert(leaf(c, 0) && leaf(c, 0x80000001) && leaf(c, 0x80000008));
	cr_expect(leaf(c, 0)->ebx == b && leaf(c, 0)->ecx == cx && leaf(c, 0)->edx == d);
	cr_expect_eq(leaf(c, 0x80000008)->eax & 0xffff, 48 | 48 << 8);
	cr_expect_eq(leaf(c, 0x80000001)->edx, 1U << 29 | 1U << 20);
	cr_expect_eq(leaf(c, 1)->ecx, 0, "no instruction set feature");
	free(c);
	gm_close(kvm);
}

/* With GMEM_BACKEND=kvm the system fd is the host's, whose vCPUs get that table. */
Test(x86_state, kvm_default_backend_asks_the_host)
{
	int host = open("/dev/kvm", O_RDWR | O_CLOEXEC);

	if (host < 0)
		cr_skip_test("no usable /dev/kvm: %s", strerror(errno));
	setenv("GMEM_BACKEND", "kvm", 1);
	int kvm = gm_open_kvm();
	struct cpuid_buf *ours = get_supported(kvm, false), *theirs = get_supported(host, true);

	cr_expect_eq(ours->hdr.nent, theirs->hdr.nent);
	cr_expect_eq(memcmp(ours->e, theirs->e, theirs->hdr.nent * sizeof(theirs->e[0])), 0);
	free(ours);
	free(theirs);
	gm_close(kvm);
	close(host);
}

static void long_mode(struct kvm_sregs *s)
{
	s->cr0 = 1 | 1ULL << 31;
	s->cr4 = 1 << 5;
	s->efer = EFER_LME | EFER_LMA;
	s->cs.l = 1;
}

/* 6.12's kvm_valid_efer: long mode only with LM in the vCPU's CPUID. */
Test(x86_state, long_mode_needs_lm)
{
	struct vmm m;
	struct kvm_sregs s;
	struct cpuid_buf *c = calloc(1, sizeof(*c));

	vmm_init(&m, KVM_X86_DEFAULT_VM);
	vmm_vcpu(&m, 0, NULL, NULL);
	cr_assert_eq(gm_ioctl(m.vcpu, KVM_GET_SREGS, &s), 0);
	long_mode(&s);
	cr_expect_eq(gm_ioctl(m.vcpu, KVM_SET_SREGS, &s), -1);
	cr_expect_eq(errno, EINVAL);
	c->hdr.nent = 1;
	c->e[0] = (struct kvm_cpuid_entry2){ .function = 0x80000001, .edx = 1U << 29 };
	cr_assert_eq(gm_ioctl(m.vcpu, KVM_SET_CPUID2, c), 0);
	cr_expect_eq(gm_ioctl(m.vcpu, KVM_SET_SREGS, &s), 0, "%s", strerror(errno));
	free(c);
	vmm_destroy(&m);
}

static void guest_returns(struct gm_guest *g, void *arg)
{
}

/* Once the vCPU has run, only the same CPUID can be set again. */
Test(x86_state, cpuid_fixed_after_run)
{
	struct vmm m;
	struct cpuid_buf *c = calloc(1, sizeof(*c));

	vmm_init(&m, KVM_X86_DEFAULT_VM);
	vmm_vcpu(&m, 0, guest_returns, NULL);
	c->hdr.nent = 1;
	c->e[0] = (struct kvm_cpuid_entry2){ .function = 0, .eax = 1 };
	cr_assert_eq(gm_ioctl(m.vcpu, KVM_SET_CPUID2, c), 0);
	c->e[0].eax = 2;
	cr_expect_eq(gm_ioctl(m.vcpu, KVM_SET_CPUID2, c), 0, "before the first run it can change");
	cr_assert_eq(vmm_run(&m), 0);
	c->e[0].eax = 3;
	cr_expect_eq(gm_ioctl(m.vcpu, KVM_SET_CPUID2, c), -1);
	cr_expect_eq(errno, EINVAL);
	c->e[0].eax = 2;
	cr_expect_eq(gm_ioctl(m.vcpu, KVM_SET_CPUID2, c), 0, "the same table is accepted");
	free(c);
	vmm_destroy(&m);
}

/* Soft vCPUs take no interrupts: a pending one in KVM_SET_SREGS is not kept. */
Test(x86_state, no_pending_interrupt)
{
	struct vmm m;
	struct kvm_sregs s;

	vmm_init(&m, KVM_X86_DEFAULT_VM);
	vmm_vcpu(&m, 0, NULL, NULL);
	cr_assert_eq(gm_ioctl(m.vcpu, KVM_GET_SREGS, &s), 0);
	s.interrupt_bitmap[0] = 1 << 5;
	cr_assert_eq(gm_ioctl(m.vcpu, KVM_SET_SREGS, &s), 0);
	cr_assert_eq(gm_ioctl(m.vcpu, KVM_GET_SREGS, &s), 0);
	cr_expect_eq(s.interrupt_bitmap[0], 0);
	vmm_destroy(&m);
}

/* GMEM_GUEST_MEMFD_FLAGS=0: the guest_memfd of a kernel before 6.17, which has no flags. */
Test(backend_caps, guest_memfd_flags_offered)
{
	struct vmm m;
	struct kvm_create_guest_memfd c = { .size = 4096, .flags = GUEST_MEMFD_FLAG_MMAP };

	setenv("GMEM_GUEST_MEMFD_FLAGS", "0", 1);
	vmm_init(&m, KVM_X86_DEFAULT_VM);
	cr_expect_eq(gm_ioctl(m.vm, KVM_CHECK_EXTENSION, KVM_CAP_GUEST_MEMFD_FLAGS), 0);
	cr_expect_eq(gm_ioctl(m.vm, KVM_CREATE_GUEST_MEMFD, &c), -1);
	cr_expect_eq(errno, EINVAL);
	c.flags = 0;
	int fd = gm_ioctl(m.vm, KVM_CREATE_GUEST_MEMFD, &c);
	cr_expect_geq(fd, 0);
	gm_close(fd);
	vmm_destroy(&m);
}

/* Per-VM attributes on the kvm backend: SW_PROTECTED with PRIVATE, as on the soft backend. */
Test(backend_caps, per_vm_attributes_kvm_backend_types)
{
	int host = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	const long all = (1 << KVM_X86_DEFAULT_VM) | (1 << KVM_X86_SW_PROTECTED_VM) |
			 (1 << KVM_X86_SNP_VM);

	if (host < 0)
		cr_skip_test("no usable /dev/kvm: %s", strerror(errno));
	close(host);
	cr_assert_eq(gm_set_vm_memory_attributes(true), 0);
	setenv("GMEM_BACKEND", "kvm", 1);
	int kvm = gm_open_kvm();

	cr_expect_eq(gm_ioctl(kvm, KVM_CHECK_EXTENSION, KVM_CAP_VM_TYPES), all);
	cr_expect_eq(gm_ioctl(kvm, KVM_CHECK_EXTENSION, KVM_CAP_MEMORY_ATTRIBUTES),
		     KVM_MEMORY_ATTRIBUTE_PRIVATE);
	int vm = gm_ioctl(kvm, KVM_CREATE_VM, KVM_X86_SW_PROTECTED_VM);
	cr_assert_geq(vm, 0, "%s", strerror(errno));
	struct gm_vm_info info;
	cr_assert_eq(gm_vm_info(vm, &info), 0);
	cr_expect_eq(info.backend, GM_VM_BACKEND_KVM);
	cr_expect_eq(gm_ioctl(vm, KVM_CHECK_EXTENSION, KVM_CAP_VM_TYPES), all);
	cr_expect_eq(gm_ioctl(vm, KVM_CHECK_EXTENSION, KVM_CAP_MEMORY_ATTRIBUTES),
		     KVM_MEMORY_ATTRIBUTE_PRIVATE);
	/* A DEFAULT VM has no private memory: no attribute, as the kernel's. */
	int def = gm_ioctl(kvm, KVM_CREATE_VM, KVM_X86_DEFAULT_VM);
	cr_assert_geq(def, 0, "%s", strerror(errno));
	cr_expect_eq(gm_ioctl(def, KVM_CHECK_EXTENSION, KVM_CAP_MEMORY_ATTRIBUTES), 0);
	gm_close(def);
	gm_close(vm);
	gm_close(kvm);
}

/* A soft vCPU has no MSR: the lists are empty, and reads and writes stop at the first entry. */
Test(x86_state, no_msrs)
{
	struct vmm m;
	struct {
		struct kvm_msr_list hdr;
		uint32_t indices[4];
	} list = { .hdr.nmsrs = 4 };
	struct {
		struct kvm_msrs hdr;
		struct kvm_msr_entry e[1];
	} msrs = { .hdr.nmsrs = 1, .e = { { .index = 0xc0000080 /* EFER */, .data = 7 } } };

	vmm_init(&m, KVM_X86_DEFAULT_VM);
	vmm_vcpu(&m, 0, NULL, NULL);
	cr_expect_eq(gm_ioctl(m.kvm, KVM_GET_MSR_INDEX_LIST, &list), 0);
	cr_expect_eq(list.hdr.nmsrs, 0);
	list.hdr.nmsrs = 4;
	cr_expect_eq(gm_ioctl(m.kvm, KVM_GET_MSR_FEATURE_INDEX_LIST, &list), 0);
	cr_expect_eq(list.hdr.nmsrs, 0);
	cr_expect_eq(gm_ioctl(m.vcpu, KVM_SET_MSRS, &msrs), 0);
	cr_expect_eq(gm_ioctl(m.vcpu, KVM_GET_MSRS, &msrs), 0);
	cr_expect_eq(msrs.e[0].data, 0);
	vmm_destroy(&m);
}
