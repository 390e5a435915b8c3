/* CPUID on soft vCPUs: the supported table (KVM_GET_SUPPORTED_CPUID) and KVM_SET/GET_CPUID2. */
#include <cpuid.h>
#include <string.h>

#include "x86_cpuid.h"

/*
 * What a soft vCPU supports: the host's vendor and family (as KVM reports
 * them), long mode and NX (the guest is 64-bit code, and a VMM sets up long
 * mode with EFER.NX), and the stage-2's 48-bit guest-physical space. No
 * other feature: a soft vCPU executes no x86 instruction.
 */
static uint32_t soft_cpuid(struct kvm_cpuid_entry2 *out)
{
	unsigned int a, b, c, d;
	uint32_t n = 0;

	__cpuid(0, a, b, c, d);
	out[n++] = (struct kvm_cpuid_entry2){ .function = 0, .eax = 1, .ebx = b, .ecx = c, .edx = d };
	__cpuid(1, a, b, c, d);
	out[n++] = (struct kvm_cpuid_entry2){ .function = 1, .eax = a };
	__cpuid(0x80000000, a, b, c, d);
	out[n++] = (struct kvm_cpuid_entry2){
		.function = 0x80000000, .eax = 0x80000008, .ebx = b, .ecx = c, .edx = d,
	};
	out[n++] = (struct kvm_cpuid_entry2){
		.function = 0x80000001, .edx = CPUID_80000001_EDX_LM | CPUID_80000001_EDX_NX,
	};
	out[n++] = (struct kvm_cpuid_entry2){
		.function = 0x80000008, .eax = CPUID_SOFT_PHYS_BITS | (CPUID_SOFT_VIRT_BITS << 8),
	};
	return n;
}

#define SOFT_CPUID_MAX 8

/* kvm_dev_ioctl_get_cpuid's rules: nent 0 and a table that does not fit are E2BIG. */
long cpuid_get_supported(unsigned long arg)
{
	struct kvm_cpuid_entry2 table[SOFT_CPUID_MAX];
	struct kvm_cpuid2 hdr, *user = (struct kvm_cpuid2 *)arg;
	uint32_t n;
	int ret = gm_copy_from_user(&hdr, user, sizeof(hdr));

	if (ret)
		return ret;
	if (hdr.nent < 1)
		return -E2BIG;
	n = soft_cpuid(table);
	if ((hdr.nent > CPUID_MAX_ENTRIES ? CPUID_MAX_ENTRIES : hdr.nent) < n)
		return -E2BIG;
	ret = gm_copy_to_user(user->entries, table, n * sizeof(table[0]));
	if (ret)
		return ret;
	hdr.nent = n;
	return gm_copy_to_user(user, &hdr, sizeof(hdr));
}

static struct kvm_cpuid_entry2 *cpuid_find(const struct vcpu_cpuid *c, uint32_t fn)
{
	for (uint32_t i = 0; i < c->nent; i++)
		if (c->entries[i].function == fn && c->entries[i].index == 0)
			return &c->entries[i];
	return NULL;
}

uint32_t cpuid_reg(const struct vcpu_cpuid *c, uint32_t fn, int reg)
{
	const struct kvm_cpuid_entry2 *e = cpuid_find(c, fn);

	return e ? (&e->eax)[reg] : 0;
}

unsigned int cpuid_maxphyaddr(const struct vcpu_cpuid *c)
{
	const struct kvm_cpuid_entry2 *e = cpuid_find(c, 0x80000008);

	return e && (e->eax & 0xff) ? e->eax & 0xff : 36;
}

void cpuid_sync_apic(struct vcpu_cpuid *c, uint64_t apic_base)
{
	struct kvm_cpuid_entry2 *e = cpuid_find(c, 1);

	if (!e)
		return;
	if (apic_base & (1ULL << 11)) /* MSR_IA32_APICBASE_ENABLE */
		e->edx |= CPUID_1_EDX_APIC;
	else
		e->edx &= ~CPUID_1_EDX_APIC;
}

/* The fields kvm_cpuid_check_equal compares (not the padding). */
static bool cpuid_same(const struct vcpu_cpuid *c, const struct kvm_cpuid_entry2 *e, uint32_t n)
{
	if (n != c->nent)
		return false;
	for (uint32_t i = 0; i < n; i++) {
		const struct kvm_cpuid_entry2 *o = &c->entries[i];

		if (e[i].function != o->function || e[i].index != o->index ||
		    e[i].flags != o->flags || e[i].eax != o->eax || e[i].ebx != o->ebx ||
		    e[i].ecx != o->ecx || e[i].edx != o->edx)
			return false;
	}
	return true;
}

long cpuid_set(struct vcpu_cpuid *c, unsigned long arg, bool frozen, uint64_t apic_base)
{
	struct kvm_cpuid2 hdr, *user = (struct kvm_cpuid2 *)arg;
	struct kvm_cpuid_entry2 *e = NULL;
	struct vcpu_cpuid tmp;
	int ret = gm_copy_from_user(&hdr, user, sizeof(hdr));

	if (ret)
		return ret;
	if (hdr.nent > CPUID_MAX_ENTRIES)
		return -E2BIG;
	if (hdr.nent) {
		e = gm_zalloc(hdr.nent * sizeof(*e));
		if (!e)
			return -ENOMEM;
		ret = gm_copy_from_user(e, user->entries, hdr.nent * sizeof(*e));
		if (ret)
			goto err;
	}
	/* The runtime bits are fixed up before the comparison, as the kernel does. */
	tmp = (struct vcpu_cpuid){ .nent = hdr.nent, .entries = e };
	cpuid_sync_apic(&tmp, apic_base);
	ret = -EINVAL;
	if (frozen) {
		if (cpuid_same(c, e, hdr.nent))
			ret = 0;
		goto err;
	}
	/* kvm_check_cpuid: the linear address width is 48 or 57 bits, or unsaid. */
	uint32_t va = (cpuid_reg(&tmp, 0x80000008, 0) >> 8) & 0xff;

	if (va != 48 && va != 57 && va != 0)
		goto err;
	gm_free(c->entries);
	*c = tmp;
	return 0;
err:
	gm_free(e);
	return ret;
}

long cpuid_get(const struct vcpu_cpuid *c, unsigned long arg)
{
	struct kvm_cpuid2 hdr, *user = (struct kvm_cpuid2 *)arg;
	int ret = gm_copy_from_user(&hdr, user, sizeof(hdr));

	if (ret)
		return ret;
	if (hdr.nent < c->nent)
		return -E2BIG;
	if (c->nent) {
		ret = gm_copy_to_user(user->entries, c->entries, c->nent * sizeof(c->entries[0]));
		if (ret)
			return ret;
	}
	hdr.nent = c->nent;
	return gm_copy_to_user(user, &hdr, sizeof(hdr));
}

void cpuid_destroy(struct vcpu_cpuid *c)
{
	gm_free(c->entries);
	c->entries = NULL;
	c->nent = 0;
}
