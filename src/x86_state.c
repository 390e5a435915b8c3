/* The x86 register state of a soft vCPU, with KVM's validation (arch/x86/kvm/x86.c, regs.c). */
#include <cpuid.h>
#include <pthread.h>
#include <string.h>
#include <time.h>
#include <x86intrin.h>

#include "x86_state.h"

#define X86_CR0_PE (1ULL << 0)
#define X86_CR0_ET (1ULL << 4)
#define X86_CR0_NW (1ULL << 29)
#define X86_CR0_CD (1ULL << 30)
#define X86_CR0_PG (1ULL << 31)
#define X86_CR4_PAE (1ULL << 5)
#define EFER_SCE (1ULL << 0)
#define EFER_LME (1ULL << 8)
#define EFER_LMA (1ULL << 10)
#define EFER_NX  (1ULL << 11)
#define APIC_BASE_DEFAULT 0xfee00000ULL
#define APIC_BASE_BSP     (1ULL << 8)
#define APIC_BASE_X2APIC  (1ULL << 10)
#define APIC_BASE_ENABLE  (1ULL << 11)

/*
 * CR4 bits a soft vCPU accepts: those KVM allows whatever the CPUID says
 * (VME, PVI, TSD, DE, PSE, PAE, MCE, PGE, PCE, OSFXSR, OSXMMEXCPT). The rest
 * depend on features the soft CPUID does not have (XSAVE, SMEP, PCID, ...),
 * which KVM refuses when its own capabilities lack them.
 */
#define CR4_SOFT_VALID 0x7ffULL

void x86_state_init(struct x86_state *s, unsigned long vcpu_id, bool lapic)
{
	const struct kvm_segment data = { .limit = 0xffff, .type = 3, .present = 1, .s = 1 };

	memset(s, 0, sizeof(*s));
	s->lapic = lapic;
	/* The BSP runs and the APs wait for INIT/SIPI, which only an in-kernel APIC models. */
	s->mp_state = lapic && vcpu_id ? KVM_MP_STATE_UNINITIALIZED : KVM_MP_STATE_RUNNABLE;
	/* RDX holds the family, model and stepping: 0x600 until a CPUID says otherwise. */
	s->regs.rdx = 0x600;
	s->regs.rip = 0xfff0;
	s->regs.rflags = 0x2;
	s->sregs.cs = (struct kvm_segment){
		.base = 0xffff0000, .limit = 0xffff, .selector = 0xf000, .type = 11, .present = 1, .s = 1,
	};
	s->sregs.ds = s->sregs.es = s->sregs.fs = s->sregs.gs = s->sregs.ss = data;
	s->sregs.tr = (struct kvm_segment){ .limit = 0xffff, .type = 11, .present = 1 };
	s->sregs.ldt = (struct kvm_segment){ .limit = 0xffff, .type = 2, .present = 1 };
	s->sregs.gdt.limit = s->sregs.idt.limit = 0xffff;
	s->sregs.cr0 = X86_CR0_CD | X86_CR0_NW | X86_CR0_ET;
	s->sregs.apic_base = APIC_BASE_DEFAULT | APIC_BASE_ENABLE | (vcpu_id ? 0 : APIC_BASE_BSP);
}

void x86_state_destroy(struct x86_state *s)
{
	cpuid_destroy(&s->cpuid);
}

static bool has_feature(const struct x86_state *s, uint32_t fn, int reg, uint32_t bit)
{
	return cpuid_reg(&s->cpuid, fn, reg) & bit;
}

/* kvm_apic_set_base with host_initiated: no reserved bit, no x2APIC without xAPIC. */
static bool apic_base_ok(const struct x86_state *s, uint64_t base)
{
	uint64_t reserved = ~0ULL << cpuid_maxphyaddr(&s->cpuid) | 0x2ff;

	if (!has_feature(s, 1, 2, CPUID_1_ECX_X2APIC))
		reserved |= APIC_BASE_X2APIC;
	if (base & reserved)
		return false;
	return !((base & APIC_BASE_X2APIC) && !(base & APIC_BASE_ENABLE));
}

/* kvm_is_valid_sregs, in its order, with the soft CPUID's reserved bits. */
static bool sregs_ok(const struct x86_state *s, const struct kvm_sregs *sr)
{
	uint64_t efer_ok = EFER_SCE | EFER_LME | EFER_LMA | EFER_NX;

	if ((sr->efer & EFER_LME) && (sr->cr0 & X86_CR0_PG)) {
		/* 64-bit mode: PAE and LMA are set, and CR3 is a legal guest-physical address. */
		if (!(sr->cr4 & X86_CR4_PAE) || !(sr->efer & EFER_LMA))
			return false;
		if (sr->cr3 >> cpuid_maxphyaddr(&s->cpuid))
			return false;
	} else if ((sr->efer & EFER_LMA) || sr->cs.l) {
		return false;
	}
	if (sr->cr4 & ~CR4_SOFT_VALID)
		return false;
	if ((sr->cr0 >> 32) || ((sr->cr0 & X86_CR0_NW) && !(sr->cr0 & X86_CR0_CD)) ||
	    ((sr->cr0 & X86_CR0_PG) && !(sr->cr0 & X86_CR0_PE)))
		return false;
	if (sr->efer & ~efer_ok)
		return false;
	if ((sr->efer & (EFER_LME | EFER_LMA)) && !has_feature(s, 0x80000001, 3, CPUID_80000001_EDX_LM))
		return false;
	return !((sr->efer & EFER_NX) && !has_feature(s, 0x80000001, 3, CPUID_80000001_EDX_NX));
}

static long set_sregs(struct x86_state *s, unsigned long arg)
{
	struct kvm_sregs sr;
	int ret = gm_copy_from_user(&sr, (void *)arg, sizeof(sr));

	if (ret)
		return ret;
	if (!sregs_ok(s, &sr) || !apic_base_ok(s, sr.apic_base))
		return -EINVAL;
	/*
	 * A pending interrupt in the bitmap is queued by KVM and reported back
	 * by KVM_GET_SREGS; soft vCPUs take no interrupts, so none is kept.
	 */
	memset(sr.interrupt_bitmap, 0, sizeof(sr.interrupt_bitmap));
	s->sregs = sr;
	cpuid_sync_apic(&s->cpuid, sr.apic_base);
	return 0;
}

static long set_mp_state(struct x86_state *s, unsigned long arg)
{
	struct kvm_mp_state mp;
	int ret = gm_copy_from_user(&mp, (void *)arg, sizeof(mp));

	if (ret)
		return ret;
	switch (mp.mp_state) {
	case KVM_MP_STATE_RUNNABLE:
		break;
	case KVM_MP_STATE_UNINITIALIZED:
	case KVM_MP_STATE_HALTED:
	case KVM_MP_STATE_AP_RESET_HOLD:
	case KVM_MP_STATE_INIT_RECEIVED:
	case KVM_MP_STATE_SIPI_RECEIVED:
		/* These belong to an in-kernel local APIC. */
		if (!s->lapic)
			return -EINVAL;
		break;
	default:
		return -EINVAL;
	}
	/* KVM reads a received SIPI back as the vCPU it starts: runnable. */
	s->mp_state = mp.mp_state == KVM_MP_STATE_SIPI_RECEIVED ? KVM_MP_STATE_RUNNABLE : mp.mp_state;
	return 0;
}

long x86_state_ioctl(struct x86_state *s, unsigned long request, unsigned long arg, bool ran)
{
	struct kvm_mp_state mp;
	struct kvm_regs regs;

	switch (request) {
	case KVM_GET_REGS:
		return gm_copy_to_user((void *)arg, &s->regs, sizeof(s->regs));
	case KVM_SET_REGS:
		if (gm_copy_from_user(&regs, (void *)arg, sizeof(regs)))
			return -EFAULT;
		/* KVM sets the reserved RFLAGS bit 1 whatever userspace wrote. */
		regs.rflags |= 0x2;
		s->regs = regs;
		return 0;
	case KVM_GET_SREGS:
		return gm_copy_to_user((void *)arg, &s->sregs, sizeof(s->sregs));
	case KVM_SET_SREGS:
		return set_sregs(s, arg);
	case KVM_GET_MP_STATE:
		mp.mp_state = s->mp_state;
		return gm_copy_to_user((void *)arg, &mp, sizeof(mp));
	case KVM_SET_MP_STATE:
		return set_mp_state(s, arg);
	case KVM_SET_CPUID2:
		return cpuid_set(&s->cpuid, arg, ran, s->sregs.apic_base);
	case KVM_GET_CPUID2:
		return cpuid_get(&s->cpuid, arg);
	case KVM_GET_TSC_KHZ:
		return x86_tsc_khz();
	case KVM_GET_MSRS:
	case KVM_SET_MSRS:
		return x86_msr_io(arg, request == KVM_GET_MSRS);
	default:
		return -ENOTTY;
	}
}

long x86_msr_list(unsigned long arg)
{
	struct kvm_msr_list hdr, *user = (struct kvm_msr_list *)arg;
	int ret = gm_copy_from_user(&hdr, user, sizeof(hdr));

	if (ret)
		return ret;
	hdr.nmsrs = 0;
	return gm_copy_to_user(user, &hdr, sizeof(hdr));
}

#define MAX_IO_MSRS 256

long x86_msr_io(unsigned long arg, bool writeback)
{
	struct kvm_msrs hdr, *user = (struct kvm_msrs *)arg;
	struct kvm_msr_entry entries[MAX_IO_MSRS];
	int ret = gm_copy_from_user(&hdr, user, sizeof(hdr));

	if (ret)
		return ret;
	if (hdr.nmsrs >= MAX_IO_MSRS)
		return -E2BIG;
	ret = gm_copy_from_user(entries, user->entries, hdr.nmsrs * sizeof(entries[0]));
	if (ret)
		return ret;
	/* The first MSR is unknown: nothing is done; a failed read zeroes its data, as the kernel's. */
	if (writeback) {
		if (hdr.nmsrs)
			entries[0].data = 0;
		ret = gm_copy_to_user(user->entries, entries, hdr.nmsrs * sizeof(entries[0]));
	}
	return ret;
}

static long tsc_khz;
static pthread_once_t tsc_once = PTHREAD_ONCE_INIT;

/* CPUID 0x15 when it names the crystal; otherwise the TSC against CLOCK_MONOTONIC_RAW for 10 ms. */
static void tsc_measure(void)
{
	unsigned int a, b, c, d;
	struct timespec t0, t1;
	uint64_t c0, c1, ns;

	if (__get_cpuid_max(0, NULL) >= 0x15) {
		__cpuid(0x15, a, b, c, d);
		if (a && b && c) {
			tsc_khz = (long)((uint64_t)c * b / a / 1000);
			return;
		}
	}
	clock_gettime(CLOCK_MONOTONIC_RAW, &t0);
	c0 = __rdtsc();
	do {
		clock_gettime(CLOCK_MONOTONIC_RAW, &t1);
		ns = (uint64_t)(t1.tv_sec - t0.tv_sec) * 1000000000ULL + t1.tv_nsec - t0.tv_nsec;
	} while (ns < 10000000);
	c1 = __rdtsc();
	/* Rounded to the MHz, as the kernel's calibrated value mostly is. */
	tsc_khz = (long)(((c1 - c0) * 1000000ULL / ns + 500) / 1000 * 1000);
	if (tsc_khz <= 0)
		tsc_khz = 1000000;
}

long x86_tsc_khz(void)
{
	pthread_once(&tsc_once, tsc_measure);
	return tsc_khz;
}
