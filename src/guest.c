/* The guest's side of a soft vCPU: gm_guest_* accesses through the stage-2, hypercalls and ucalls. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "mmu/fault.h"
#include "platform/snp.h"
#include "platform/snp_report.h"
#include "vcpu.h"

static struct vcpu *guest_vcpu(struct gm_guest *guest)
{
	return &guest->vcpu;
}

/* SNP's #VC: the guest's handler for an access to a page it has not validated. */
static void guest_vc(struct vcpu *v, gpa_t gpa)
{
	char what[96];

	if (!v->vc_handler || v->in_vc) {
		snprintf(what, sizeof(what), "#VC %#x (page not validated) at gpa %#llx%s",
			 GM_VC_NOT_VALIDATED, (unsigned long long)gpa,
			 v->in_vc ? " in the #VC handler" : " without a handler");
		gm_guest_abort((struct gm_guest *)v, __FILE__, __LINE__, what);
	}
	v->in_vc = true;
	v->vc_handler((struct gm_guest *)v, GM_VC_NOT_VALIDATED, gpa & ~(GM_PAGE_SIZE - 1), v->vc_arg);
	v->in_vc = false;
}

/* Copies one piece that stays inside a page; loops through faults and exits until done. */
static void guest_access_page(struct vcpu *v, gpa_t gpa, void *buf, size_t len, bool write)
{
	for (;;) {
		struct mmu_fault f;
		uint64_t spte;
		char *hva;

		vcpu_check_kick(v);
		mmu_access_begin(&v->mmu);
		spte = mmu_tlb_lookup(&v->mmu, gpa, write);
		hva = spte ? mmu_spte_addr(spte, gpa) : mmu_translate(&v->mmu, gpa, write);
		if (hva) {
			if (write)
				memcpy(hva, buf, len);
			else
				memcpy(buf, hva, len);
			mmu_access_end(&v->mmu);
			return;
		}
		mmu_access_end(&v->mmu);
		f = mmu_page_fault(v->vm, gpa, v->access, write);
		switch (f.result) {
		case MMU_FAULT_MAPPED:
			break;
		case MMU_FAULT_MEMORY:
			vcpu_exit_memory_fault(v, gpa, f.private);
			break;
		case MMU_FAULT_MMIO:
			for (size_t done = 0; done < len; done += 8) {
				size_t n = len - done < 8 ? len - done : 8;

				vcpu_exit_mmio(v, gpa + done, (char *)buf + done, n, write);
			}
			return;
		case MMU_FAULT_ERROR:
			/* As KVM_RUN failing in kvm_mmu_page_fault; the next run retries the access. */
			vcpu_exit(v, KVM_EXIT_UNKNOWN, f.error);
			break;
		case MMU_FAULT_VC:
			guest_vc(v, gpa);
			break;
		}
	}
}

static void guest_access(struct vcpu *v, gpa_t gpa, void *buf, size_t len, bool write)
{
	vcpu_check_kick(v);
	while (len) {
		size_t n = GM_PAGE_SIZE - (gpa & (GM_PAGE_SIZE - 1));

		if (n > len)
			n = len;
		guest_access_page(v, gpa, buf, n, write);
		gpa += n;
		buf = (char *)buf + n;
		len -= n;
	}
}

GM_EXPORT void gm_guest_set_access(struct gm_guest *guest, enum gm_access access)
{
	struct vcpu *v = guest_vcpu(guest);

	vcpu_check_kick(v);
	v->access = access;
	/* An explicit kind on a VM with private memory must match the leaf's. */
	mmu_vcpu_set_kind(&v->mmu, v->private_vm && access != GM_ACCESS_AUTO,
			  access == GM_ACCESS_PRIVATE);
}

/* The full path of a typed access, kept out of line so the hit path stays a leaf. */
static __attribute__((noinline)) void guest_access_slow(struct vcpu *v, gpa_t gpa, void *buf,
							size_t len, bool write)
{
	guest_access(v, gpa, buf, len, write);
}

/*
 * Typed accesses: a cached translation and one load or store of a constant
 * size; anything else (a miss, a page boundary, an exit) takes the full path.
 */
#define GUEST_RW(bits)                                                                      \
	typedef uint##bits##_t __attribute__((may_alias, aligned(1))) guest_u##bits;         \
	GM_EXPORT uint##bits##_t gm_guest_read##bits(struct gm_guest *guest, uint64_t gpa)  \
	{                                                                                   \
		struct vcpu *v = guest_vcpu(guest);                                         \
		uint##bits##_t val;                                                         \
		vcpu_check_kick(v);                                                         \
		if (__builtin_expect((gpa & (GM_PAGE_SIZE - 1)) <= GM_PAGE_SIZE - sizeof(val), 1)) { \
			mmu_access_begin(&v->mmu);                                          \
			uint64_t spte = mmu_tlb_lookup(&v->mmu, gpa, false);                \
			if (__builtin_expect(spte != 0, 1)) {                               \
				val = *(const guest_u##bits *)mmu_spte_addr(spte, gpa);     \
				mmu_access_end(&v->mmu);                                    \
				return val;                                                 \
			}                                                                   \
			mmu_access_end(&v->mmu);                                            \
		}                                                                           \
		guest_access_slow(v, gpa, &val, sizeof(val), false);                        \
		return val;                                                                 \
	}                                                                                   \
	GM_EXPORT void gm_guest_write##bits(struct gm_guest *guest, uint64_t gpa,           \
					    uint##bits##_t val)                             \
	{                                                                                   \
		struct vcpu *v = guest_vcpu(guest);                                         \
		vcpu_check_kick(v);                                                         \
		if (__builtin_expect((gpa & (GM_PAGE_SIZE - 1)) <= GM_PAGE_SIZE - sizeof(val), 1)) { \
			mmu_access_begin(&v->mmu);                                          \
			uint64_t spte = mmu_tlb_lookup(&v->mmu, gpa, true);                 \
			if (__builtin_expect(spte != 0, 1)) {                               \
				*(guest_u##bits *)mmu_spte_addr(spte, gpa) = val;           \
				mmu_access_end(&v->mmu);                                    \
				return;                                                     \
			}                                                                   \
			mmu_access_end(&v->mmu);                                            \
		}                                                                           \
		guest_access_slow(v, gpa, &val, sizeof(val), true);                         \
	}
GUEST_RW(8)
GUEST_RW(16)
GUEST_RW(32)
GUEST_RW(64)

GM_EXPORT void gm_guest_read(struct gm_guest *guest, void *dst, uint64_t gpa, size_t len)
{
	guest_access(guest_vcpu(guest), gpa, dst, len, false);
}

GM_EXPORT void gm_guest_write(struct gm_guest *guest, uint64_t gpa, const void *src, size_t len)
{
	guest_access(guest_vcpu(guest), gpa, (void *)src, len, true);
}

GM_EXPORT void gm_guest_fetch(struct gm_guest *guest, void *dst, uint64_t gpa, size_t len)
{
	guest_access(guest_vcpu(guest), gpa, dst, len, false);
}

GM_EXPORT uint64_t gm_guest_hypercall(struct gm_guest *guest, uint64_t nr, uint64_t a0,
				      uint64_t a1, uint64_t a2)
{
	struct vcpu *v = guest_vcpu(guest);
	uint64_t mask = atomic_load(&v->vm->exit_hypercall_mask);

	vcpu_check_kick(v);
	if (nr != KVM_HC_MAP_GPA_RANGE || !(mask & (1ULL << KVM_HC_MAP_GPA_RANGE)))
		return (uint64_t)-KVM_ENOSYS;
	/* KVM checks the range itself; the attributes go to userspace unchecked. */
	if (!GM_ALIGNED(a0, GM_PAGE_SIZE) || !a1 ||
	    (a0 >> GM_PAGE_SHIFT) + a1 <= (a0 >> GM_PAGE_SHIFT))
		return (uint64_t)-KVM_EINVAL;
	return vcpu_exit_hypercall(v, nr, a0, a1, a2);
}

GM_EXPORT void gm_guest_ucall(struct gm_guest *guest, uint64_t cmd, int nargs, ...)
{
	struct vcpu *v = guest_vcpu(guest);
	va_list ap;

	vcpu_check_kick(v);
	memset(&v->ucall, 0, sizeof(v->ucall));
	v->ucall.cmd = cmd;
	va_start(ap, nargs);
	for (int i = 0; i < nargs && i < GM_UCALL_MAX_ARGS; i++)
		v->ucall.args[i] = va_arg(ap, uint64_t);
	va_end(ap);
	vcpu_exit_ucall(v);
}

GM_EXPORT void gm_guest_abort(struct gm_guest *guest, const char *file, int line, const char *what)
{
	struct vcpu *v = guest_vcpu(guest);

	vcpu_check_kick(v);
	memset(&v->ucall, 0, sizeof(v->ucall));
	v->ucall.cmd = GM_UCALL_ABORT;
	v->ucall.args[0] = (uint64_t)line;
	snprintf(v->ucall.msg, sizeof(v->ucall.msg), "%s:%d: %s", file, line, what);
	/* An aborted guest never continues: each KVM_RUN reports the abort again. */
	for (;;)
		vcpu_exit_ucall(v);
}

GM_EXPORT void gm_guest_set_vc_handler(struct gm_guest *guest, gm_guest_vc_fn fn, void *arg)
{
	struct vcpu *v = guest_vcpu(guest);

	vcpu_check_kick(v);
	v->vc_handler = fn;
	v->vc_arg = arg;
}

GM_EXPORT int gm_guest_pvalidate(struct gm_guest *guest, uint64_t gpa, bool validate)
{
	struct vcpu *v = guest_vcpu(guest);

	vcpu_check_kick(v);
	if (!GM_ALIGNED(gpa, GM_PAGE_SIZE) || vm_type(v->vm) != KVM_X86_SNP_VM)
		return GM_PVALIDATE_FAIL_INPUT;
	for (;;) {
		/* The instruction's own private access: it faults the page in (and assigns it). */
		struct mmu_fault f = mmu_page_fault(v->vm, gpa, GM_ACCESS_PRIVATE, false);
		int ret;

		switch (f.result) {
		case MMU_FAULT_MEMORY:
			vcpu_exit_memory_fault(v, gpa, f.private);
			continue;
		case MMU_FAULT_MMIO:
			return GM_PVALIDATE_FAIL_INPUT;
		case MMU_FAULT_ERROR:
			vcpu_exit(v, KVM_EXIT_UNKNOWN, f.error);
			continue;
		case MMU_FAULT_MAPPED:
		case MMU_FAULT_VC:
			break;
		}
		ret = mmu_pvalidate(v->vm, gpa, validate);
		if (ret >= 0)
			return ret;
		if (ret != -EAGAIN)
			vcpu_exit(v, KVM_EXIT_UNKNOWN, -ret);
	}
}

GM_EXPORT int gm_guest_snp_report(struct gm_guest *guest, const uint8_t data[64], void *report,
				  size_t len)
{
	struct vcpu *v = guest_vcpu(guest);
	uint8_t out[SNP_REPORT_SIZE], in[64];
	int ret;

	vcpu_check_kick(v);
	if (len < SNP_REPORT_SIZE)
		return -EINVAL;
	if (gm_copy_from_user(in, data, sizeof(in)))
		return -EFAULT;
	/* The guest runs at VMPL 0: a soft guest has no lower privilege levels. */
	ret = snp_guest_report(v->vm, in, 0, out);
	if (!ret)
		ret = gm_copy_to_user(report, out, sizeof(out));
	return ret;
}
