/* gapi on libgmem's soft vCPUs: the scenario's accesses and exits go through struct gm_guest. */
#include <errno.h>

#include <gmem/gmem.h>

#include "gapi.h"
#include "guest_image.h"
#include "layout.h"

/* struct gapi is never defined: on the soft backend its pointer is the vCPU's gm_guest. */
static struct gm_guest *soft(struct gapi *g)
{
	return (struct gm_guest *)g;
}

uint8_t gapi_read8(struct gapi *g, uint64_t gpa)
{
	return gm_guest_read8(soft(g), gpa);
}

uint64_t gapi_read64(struct gapi *g, uint64_t gpa)
{
	return gm_guest_read64(soft(g), gpa);
}

void gapi_write8(struct gapi *g, uint64_t gpa, uint8_t val)
{
	gm_guest_write8(soft(g), gpa, val);
}

void gapi_write64(struct gapi *g, uint64_t gpa, uint64_t val)
{
	gm_guest_write64(soft(g), gpa, val);
}

void gapi_set_access(struct gapi *g, unsigned access)
{
	gm_guest_set_access(soft(g), (enum gm_access)access);
}

uint64_t gapi_hypercall(struct gapi *g, uint64_t nr, uint64_t a0, uint64_t a1, uint64_t a2)
{
	return gm_guest_hypercall(soft(g), nr, a0, a1, a2);
}

void gapi_ucall(struct gapi *g, uint64_t cmd, uint64_t a0, uint64_t a1, uint64_t a2)
{
	gm_guest_ucall(soft(g), cmd, 3, a0, a1, a2);
}

void guest_soft_entry(struct gm_guest *g, void *arg)
{
	guest_scenario((struct gapi *)g, (unsigned)(uintptr_t)arg, GUEST_BOOT_PARAMS_GPA);
}

/* The SNP guest's #VC handler: a page it has not validated yet is one it starts to use. */
static void validate_on_vc(struct gm_guest *g, uint64_t code, uint64_t gpa, void *arg)
{
	if (code != GM_VC_NOT_VALIDATED || gm_guest_pvalidate(g, gpa, true) != GM_PVALIDATE_SUCCESS)
		gm_guest_abort(g, __FILE__, __LINE__, "#VC: the page cannot be validated");
}

/*
 * The attestation exchange, through the vCPU's message page made shared: the
 * VMM's nonce in, the platform's report over it out. The request itself goes
 * to the platform, not through the VMM.
 */
static void attest(struct gm_guest *g, unsigned vcpu)
{
	uint64_t page = gm_guest_read64(g, GUEST_BOOT_PARAMS_GPA +
					       __builtin_offsetof(struct gm_boot_params, shared_gpa)) +
			vcpu * 4096;
	static uint8_t report[GM_SNP_REPORT_SIZE]; /* vCPU 0 only */
	uint8_t nonce[64];
	int ret;

	if (gm_guest_hypercall(g, KVM_HC_MAP_GPA_RANGE, page, 1, KVM_MAP_GPA_RANGE_DECRYPTED)) {
		gm_guest_ucall(g, GUEST_UCALL_REPORT, 3, (uint64_t)vcpu, page, (uint64_t)-EIO);
		return;
	}
	gm_guest_ucall(g, GUEST_UCALL_NONCE, 3, (uint64_t)vcpu, page, (uint64_t)sizeof(nonce));
	gm_guest_read(g, nonce, page, sizeof(nonce));
	ret = gm_guest_snp_report(g, nonce, report, sizeof(report));
	if (!ret)
		gm_guest_write(g, page, report, sizeof(report));
	gm_guest_ucall(g, GUEST_UCALL_REPORT, 3, (uint64_t)vcpu, page,
		       ret ? (uint64_t)(int64_t)ret : (uint64_t)sizeof(report));
	gm_guest_hypercall(g, KVM_HC_MAP_GPA_RANGE, page, 1, KVM_MAP_GPA_RANGE_ENCRYPTED);
}

void guest_snp_soft_entry(struct gm_guest *g, void *arg)
{
	unsigned vcpu = (unsigned)(uintptr_t)arg;

	gm_guest_set_vc_handler(g, validate_on_vc, NULL);
	if (vcpu == 0)
		attest(g, vcpu);
	guest_scenario((struct gapi *)g, vcpu, GUEST_BOOT_PARAMS_GPA);
}

void stress_guest_soft_entry(struct gm_guest *g, void *arg)
{
	stress_guest_scenario((struct gapi *)g, (unsigned)(uintptr_t)arg, GUEST_BOOT_PARAMS_GPA);
}
