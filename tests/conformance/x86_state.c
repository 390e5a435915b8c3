/* x86 VM and vCPU state before any guest code runs: what the selftests' VM creation issues. */
#include "harness/surface.h"

#include <stdlib.h>
#include <string.h>

#define X86_CR0_PE (1ULL << 0)
#define X86_CR0_NW (1ULL << 29)
#define X86_CR0_PG (1ULL << 31)
#define X86_CR4_PAE (1ULL << 5)
#define EFER_LME (1ULL << 8)
#define EFER_LMA (1ULL << 10)
#define EFER_NX (1ULL << 11)

struct cpuid_buf {
	struct kvm_cpuid2 hdr;
	struct kvm_cpuid_entry2 e[256];
};

static const struct kvm_cpuid_entry2 *find_leaf(const struct cpuid_buf *c, uint32_t fn)
{
	for (uint32_t i = 0; i < c->hdr.nent; i++)
		if (c->e[i].function == fn && c->e[i].index == 0)
			return &c->e[i];
	return NULL;
}

static void supported_cpuid(int kvm, struct cpuid_buf *c)
{
	memset(c, 0, sizeof(*c));
	c->hdr.nent = 256;
	cr_assert_eq(sys_ioctl(kvm, KVM_GET_SUPPORTED_CPUID, c), 0, "%s", strerror(errno));
}

/* The state of a vCPU that nothing has set yet: the x86 reset state. */
Test(x86_state, reset)
{
	int vm = t_create_vm(KVM_X86_DEFAULT_VM);
	int bsp = sys_ioctl(vm, KVM_CREATE_VCPU, 0), ap = sys_ioctl(vm, KVM_CREATE_VCPU, 1);
	struct kvm_regs regs;
	struct kvm_sregs sregs;
	struct kvm_mp_state mp;

	cr_assert(bsp >= 0 && ap >= 0);
	cr_assert_eq(sys_ioctl(bsp, KVM_GET_REGS, &regs), 0);
	cr_expect_eq(regs.rip, 0xfff0);
	cr_expect_eq(regs.rflags, 0x2);
	cr_expect_eq(regs.rdx, 0x600);
	cr_expect_eq(regs.rsp, 0);
	cr_assert_eq(sys_ioctl(bsp, KVM_GET_SREGS, &sregs), 0);
	cr_expect_eq(sregs.cs.selector, 0xf000);
	cr_expect_eq(sregs.cs.base, 0xffff0000);
	cr_expect_eq(sregs.cs.limit, 0xffff);
	cr_expect_eq(sregs.cs.type, 11);
	cr_expect_eq(sregs.ds.type, 3);
	cr_expect_eq(sregs.cr0, 0x60000010);
	cr_expect_eq(sregs.cr4, 0);
	cr_expect_eq(sregs.efer, 0);
	/* Enabled at the default base; the BSP flag on vCPU 0 only. */
	cr_expect_eq(sregs.apic_base, 0xfee00900);
	cr_assert_eq(sys_ioctl(ap, KVM_GET_SREGS, &sregs), 0);
	cr_expect_eq(sregs.apic_base, 0xfee00800);
	/* Without an in-kernel APIC every vCPU is runnable. */
	cr_assert_eq(sys_ioctl(ap, KVM_GET_MP_STATE, &mp), 0);
	cr_expect_eq(mp.mp_state, KVM_MP_STATE_RUNNABLE);
	cr_expect_eq(ioctl_errno(bsp, KVM_GET_REGS, (void *)8), EFAULT);
	sys_close(ap);
	sys_close(bsp);
	sys_close(vm);
}

Test(x86_state, regs_read_back)
{
	int vm = t_create_vm(KVM_X86_DEFAULT_VM);
	int vcpu = sys_ioctl(vm, KVM_CREATE_VCPU, 0);
	struct kvm_regs in = { .rax = 1, .rbx = 2, .r15 = 3, .rsp = 0x7000, .rip = 0x1234, .rflags = 0 };
	struct kvm_regs out;

	cr_assert_eq(sys_ioctl(vcpu, KVM_SET_REGS, &in), 0);
	cr_assert_eq(sys_ioctl(vcpu, KVM_GET_REGS, &out), 0);
	/* RFLAGS bit 1 is always set. */
	in.rflags = 0x2;
	cr_expect_eq(memcmp(&in, &out, sizeof(in)), 0);
	cr_expect_eq(ioctl_errno(vcpu, KVM_SET_REGS, (void *)8), EFAULT);
	sys_close(vcpu);
	sys_close(vm);
}

/* What the selftests do: the supported CPUID, then 64-bit mode with paging. */
static void long_mode(struct kvm_sregs *s, uint64_t cr3)
{
	s->cr0 = X86_CR0_PE | X86_CR0_PG | (1ULL << 5) /* NE */;
	s->cr4 = X86_CR4_PAE;
	s->efer = EFER_LME | EFER_LMA | EFER_NX;
	s->cr3 = cr3;
	s->cs = (struct kvm_segment){ .limit = 0xffffffff, .selector = 8, .type = 11, .present = 1,
				      .s = 1, .l = 1, .g = 1 };
}

Test(x86_state, sregs_checks)
{
	int kvm = t_open_kvm(), vm = t_create_vm(KVM_X86_DEFAULT_VM);
	int vcpu = sys_ioctl(vm, KVM_CREATE_VCPU, 0);
	struct kvm_sregs reset, s, out;
	struct cpuid_buf *c = calloc(1, sizeof(*c));

	cr_assert_eq(sys_ioctl(vcpu, KVM_GET_SREGS, &reset), 0);
	s = reset;
	long_mode(&s, 0x1000);
	supported_cpuid(kvm, c);
	const struct kvm_cpuid_entry2 *width = find_leaf(c, 0x80000008);
	cr_assert(width, "the supported CPUID has no leaf 0x80000008");
	unsigned int maxphyaddr = width->eax & 0xff;
	cr_assert_eq(sys_ioctl(vcpu, KVM_SET_CPUID2, c), 0, "%s", strerror(errno));

	cr_expect_eq(ioctl_errno(vcpu, KVM_SET_SREGS, &s), 0);
	cr_assert_eq(sys_ioctl(vcpu, KVM_GET_SREGS, &out), 0);
	cr_expect_eq(out.cr3, 0x1000);
	cr_expect_eq(out.efer, s.efer);
	cr_expect_eq(out.cs.l, 1);
	cr_expect_eq(out.cs.selector, 8);

	/* Each of these is refused and leaves the state as it was. */
	struct kvm_sregs bad[7];
	for (int i = 0; i < 7; i++)
		bad[i] = s;
	bad[0].cr4 &= ~X86_CR4_PAE;                 /* long mode without PAE */
	bad[1].efer &= ~EFER_LMA;                   /* LME and PG without LMA */
	bad[2].cr3 = 1ULL << maxphyaddr;            /* CR3 past MAXPHYADDR */
	bad[3] = reset;
	bad[3].cs.l = 1;                            /* a 64-bit code segment outside long mode */
	bad[4] = reset;
	bad[4].cr0 = X86_CR0_PG;                    /* paging without protection */
	bad[5] = reset;
	bad[5].cr0 = X86_CR0_NW;                    /* not-write-through without cache disable */
	bad[6].apic_base |= 1;                      /* a reserved APIC base bit */
	for (int i = 0; i < 7; i++) {
		cr_expect_eq(ioctl_errno(vcpu, KVM_SET_SREGS, &bad[i]), EINVAL, "case %d", i);
		cr_assert_eq(sys_ioctl(vcpu, KVM_GET_SREGS, &out), 0);
		cr_expect_eq(out.cr3, 0x1000, "case %d", i);
		cr_expect_eq(out.efer, s.efer, "case %d", i);
	}
	cr_expect_eq(ioctl_errno(vcpu, KVM_SET_SREGS, (void *)8), EFAULT);
	free(c);
	sys_close(vcpu);
	sys_close(vm);
	sys_close(kvm);
}

Test(x86_state, cpuid)
{
	int kvm = t_open_kvm(), vm = t_create_vm(KVM_X86_DEFAULT_VM);
	int vcpu = sys_ioctl(vm, KVM_CREATE_VCPU, 0);
	struct cpuid_buf *c = calloc(1, sizeof(*c)), *out = calloc(1, sizeof(*out));

	cr_expect_eq(ioctl_errno(kvm, KVM_GET_SUPPORTED_CPUID, &c->hdr), E2BIG);
	c->hdr.nent = 1;
	cr_expect_eq(ioctl_errno(kvm, KVM_GET_SUPPORTED_CPUID, &c->hdr), E2BIG);
	cr_expect_eq(c->hdr.nent, 1, "a refused call leaves nent alone");
	supported_cpuid(kvm, c);
	cr_assert_gt(c->hdr.nent, 1);
	cr_expect(find_leaf(c, 0), "no leaf 0");
	cr_expect(find_leaf(c, 0x80000000), "no leaf 0x80000000");

	/* A vCPU has no CPUID until one is set. */
	out->hdr.nent = 256;
	cr_assert_eq(sys_ioctl(vcpu, KVM_GET_CPUID2, out), 0);
	cr_expect_eq(out->hdr.nent, 0);

	cr_assert_eq(sys_ioctl(vcpu, KVM_SET_CPUID2, c), 0, "%s", strerror(errno));
	out->hdr.nent = c->hdr.nent - 1;
	cr_expect_eq(ioctl_errno(vcpu, KVM_GET_CPUID2, out), E2BIG);
	out->hdr.nent = 256;
	cr_assert_eq(sys_ioctl(vcpu, KVM_GET_CPUID2, out), 0);
	cr_expect_eq(out->hdr.nent, c->hdr.nent);
	/* Leaves the kernel does not update at run time read back as written. */
	const struct kvm_cpuid_entry2 *w = find_leaf(c, 0), *r = find_leaf(out, 0);
	cr_assert(w && r);
	cr_expect(w->eax == r->eax && w->ebx == r->ebx && w->ecx == r->ecx && w->edx == r->edx);

	/* Too many entries; a linear address width other than 48 or 57. */
	struct cpuid_buf *big = calloc(1, sizeof(*big) + sizeof(big->e[0]));
	big->hdr.nent = 257;
	cr_expect_eq(ioctl_errno(vcpu, KVM_SET_CPUID2, big), E2BIG);
	struct kvm_cpuid_entry2 *width = (struct kvm_cpuid_entry2 *)find_leaf(c, 0x80000008);
	cr_assert(width);
	width->eax = (width->eax & ~0xff00U) | (40 << 8);
	cr_expect_eq(ioctl_errno(vcpu, KVM_SET_CPUID2, c), EINVAL);
	cr_expect_eq(ioctl_errno(vcpu, KVM_SET_CPUID2, (void *)8), EFAULT);
	free(big);
	free(out);
	free(c);
	sys_close(vcpu);
	sys_close(vm);
	sys_close(kvm);
}

Test(x86_state, mp_state)
{
	int vm = t_create_vm(KVM_X86_DEFAULT_VM);
	int vcpu = sys_ioctl(vm, KVM_CREATE_VCPU, 0);
	struct kvm_mp_state mp = { KVM_MP_STATE_HALTED };

	/* Without an in-kernel APIC only RUNNABLE exists. */
	cr_expect_eq(ioctl_errno(vcpu, KVM_SET_MP_STATE, &mp), EINVAL);
	mp.mp_state = KVM_MP_STATE_RUNNABLE;
	cr_expect_eq(ioctl_errno(vcpu, KVM_SET_MP_STATE, &mp), 0);
	sys_close(vcpu);
	sys_close(vm);

	vm = t_create_vm(KVM_X86_DEFAULT_VM);
	cr_assert_eq(sys_ioctl(vm, KVM_CREATE_IRQCHIP, 0), 0, "%s", strerror(errno));
	vcpu = sys_ioctl(vm, KVM_CREATE_VCPU, 0);
	int ap = sys_ioctl(vm, KVM_CREATE_VCPU, 1);
	/* With one, the APs wait for INIT and SIPI. */
	cr_assert_eq(sys_ioctl(ap, KVM_GET_MP_STATE, &mp), 0);
	cr_expect_eq(mp.mp_state, KVM_MP_STATE_UNINITIALIZED);
	/* A received SIPI starts the AP: it reads back runnable. */
	mp.mp_state = KVM_MP_STATE_SIPI_RECEIVED;
	cr_expect_eq(ioctl_errno(ap, KVM_SET_MP_STATE, &mp), 0);
	cr_assert_eq(sys_ioctl(ap, KVM_GET_MP_STATE, &mp), 0);
	cr_expect_eq(mp.mp_state, KVM_MP_STATE_RUNNABLE);
	cr_assert_eq(sys_ioctl(vcpu, KVM_GET_MP_STATE, &mp), 0);
	cr_expect_eq(mp.mp_state, KVM_MP_STATE_RUNNABLE);
	mp.mp_state = KVM_MP_STATE_HALTED;
	cr_expect_eq(ioctl_errno(vcpu, KVM_SET_MP_STATE, &mp), 0);
	cr_assert_eq(sys_ioctl(vcpu, KVM_GET_MP_STATE, &mp), 0);
	cr_expect_eq(mp.mp_state, KVM_MP_STATE_HALTED);
	mp.mp_state = KVM_MP_STATE_SUSPENDED + 1;
	cr_expect_eq(ioctl_errno(vcpu, KVM_SET_MP_STATE, &mp), EINVAL);
	cr_expect_eq(ioctl_errno(vcpu, KVM_SET_MP_STATE, (void *)8), EFAULT);
	sys_close(ap);
	sys_close(vcpu);
	sys_close(vm);
}

Test(x86_state, vm_ioctls)
{
	int kvm = t_open_kvm(), vm = t_create_vm(KVM_X86_DEFAULT_VM);

	for (int fd = kvm, i = 0; i < 2; fd = vm, i++) {
		cr_expect_eq(sys_ioctl(fd, KVM_CHECK_EXTENSION, KVM_CAP_IRQCHIP), 1);
		cr_expect_eq(sys_ioctl(fd, KVM_CHECK_EXTENSION, KVM_CAP_GET_TSC_KHZ), 1);
		cr_expect_eq(sys_ioctl(fd, KVM_CHECK_EXTENSION, KVM_CAP_EXT_CPUID), 1);
		cr_expect_eq(sys_ioctl(fd, KVM_CHECK_EXTENSION, KVM_CAP_MP_STATE), 1);
		cr_expect_eq(sys_ioctl(fd, KVM_CHECK_EXTENSION, KVM_CAP_SET_TSS_ADDR), 1);
		cr_expect_eq(sys_ioctl(fd, KVM_CHECK_EXTENSION, KVM_CAP_SET_IDENTITY_MAP_ADDR), 1);
		int nr = sys_ioctl(fd, KVM_CHECK_EXTENSION, KVM_CAP_NR_VCPUS);
		cr_expect(nr >= 1 && nr <= sys_ioctl(fd, KVM_CHECK_EXTENSION, KVM_CAP_MAX_VCPUS));
	}
	cr_expect_eq(ioctl_errno(vm, KVM_CREATE_IRQCHIP, 0), 0);
	cr_expect_eq(ioctl_errno(vm, KVM_CREATE_IRQCHIP, 0), EEXIST);
	cr_expect_eq(ioctl_errno(vm, KVM_SET_NR_MMU_PAGES, 63), EINVAL);
	cr_expect_eq(ioctl_errno(vm, KVM_SET_NR_MMU_PAGES, 64), 0);
	/* The TSS's three pages lie below 4 GiB; the identity map is set before any vCPU. */
	cr_expect_eq(ioctl_errno(vm, KVM_SET_TSS_ADDR, 0xfffbd000UL), 0);
	cr_expect_eq(ioctl_errno(vm, KVM_SET_TSS_ADDR, 0xffffe000UL), EINVAL);
	uint64_t ident = 0xfeffc000;
	cr_expect_eq(ioctl_errno(vm, KVM_SET_IDENTITY_MAP_ADDR, &ident), 0);
	cr_expect_eq(ioctl_errno(vm, KVM_SET_IDENTITY_MAP_ADDR, (void *)8), EFAULT);
	int khz = sys_ioctl(vm, KVM_GET_TSC_KHZ, 0);
	cr_expect_gt(khz, 0);
	int vcpu = sys_ioctl(vm, KVM_CREATE_VCPU, 0);
	cr_expect_eq(sys_ioctl(vcpu, KVM_GET_TSC_KHZ, 0), khz);
	sys_close(vcpu);
	sys_close(vm);

	/* The irqchip comes before the vCPUs. */
	vm = t_create_vm(KVM_X86_DEFAULT_VM);
	vcpu = sys_ioctl(vm, KVM_CREATE_VCPU, 0);
	cr_expect_eq(ioctl_errno(vm, KVM_CREATE_IRQCHIP, 0), EINVAL);
	cr_expect_eq(ioctl_errno(vm, KVM_SET_IDENTITY_MAP_ADDR, &ident), EINVAL);
	sys_close(vcpu);
	sys_close(vm);
	sys_close(kvm);
}

/* KVM_RUN with no memory at all: the fetch at the reset vector cannot be emulated. */
Test(x86_state, run_without_memory)
{
	int kvm = t_open_kvm(), vm = t_create_vm(KVM_X86_DEFAULT_VM);
	int vcpu = sys_ioctl(vm, KVM_CREATE_VCPU, 0);
	int size = sys_ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
	struct kvm_run *run = sys_mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);

	cr_assert_neq(run, MAP_FAILED);
	cr_assert_eq(sys_ioctl(vm, KVM_SET_NR_MMU_PAGES, 64), 0);
	cr_expect_eq(sys_ioctl(vcpu, KVM_RUN, 0), 0, "%s", strerror(errno));
	cr_expect_eq(run->exit_reason, KVM_EXIT_INTERNAL_ERROR);
	cr_expect_eq(run->internal.suberror, KVM_INTERNAL_ERROR_EMULATION);
	sys_munmap(run, size);
	sys_close(vcpu);
	sys_close(vm);
	sys_close(kvm);
}

/* An MSR no x86 has: KVM_GET_MSRS and KVM_SET_MSRS stop before it and say how many were done. */
Test(x86_state, msrs)
{
	int kvm = t_open_kvm(), vm = t_create_vm(KVM_X86_DEFAULT_VM);
	int vcpu = sys_ioctl(vm, KVM_CREATE_VCPU, 0);
	struct {
		struct kvm_msrs hdr;
		struct kvm_msr_entry e[1];
	} m = { .hdr.nmsrs = 1, .e = { { .index = 0xdeadbeef, .data = 5 } } };

	/* A failed read zeroes the entry's data. */
	cr_expect_eq(sys_ioctl(vcpu, KVM_GET_MSRS, &m), 0);
	cr_expect_eq(m.e[0].data, 0);
	m.e[0].data = 5;
	cr_expect_eq(sys_ioctl(vcpu, KVM_SET_MSRS, &m), 0);
	cr_expect_eq(m.e[0].data, 5, "a write gives nothing back");
	/* The system fd reads feature MSRs, with the same rule. */
	cr_expect_eq(sys_ioctl(kvm, KVM_GET_MSRS, &m), 0);
	cr_expect_eq(m.e[0].data, 0);
	m.hdr.nmsrs = 256;
	cr_expect_eq(ioctl_errno(vcpu, KVM_GET_MSRS, &m), E2BIG);
	cr_expect_eq(ioctl_errno(vcpu, KVM_SET_MSRS, (void *)8), EFAULT);

	/* The index lists give their length back; one that does not fit is E2BIG. */
	struct kvm_msr_list *list = calloc(1, sizeof(*list) + 1024 * sizeof(uint32_t));
	unsigned long lists[] = { KVM_GET_MSR_INDEX_LIST, KVM_GET_MSR_FEATURE_INDEX_LIST };

	for (int i = 0; i < 2; i++) {
		list->nmsrs = 1024;
		cr_assert_eq(sys_ioctl(kvm, lists[i], list), 0, "%s", strerror(errno));
		uint32_t n = list->nmsrs;

		cr_expect_leq(n, 1024);
		if (n) {
			list->nmsrs = n - 1;
			cr_expect_eq(ioctl_errno(kvm, lists[i], list), E2BIG);
			cr_expect_eq(list->nmsrs, n);
		}
		cr_expect_eq(ioctl_errno(kvm, lists[i], (void *)8), EFAULT);
	}
	free(list);
	sys_close(vcpu);
	sys_close(vm);
	sys_close(kvm);
}
