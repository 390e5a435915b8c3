/* The contract between gmem-vm and its guest: guest-physical layout, boot parameters, ucalls. */
#ifndef GUEST_LAYOUT_H
#define GUEST_LAYOUT_H

#include <stdint.h>

/*
 * Guest-physical layout (identity-mapped with 2 MiB pages by the VMM):
 *   0x1000  page tables (PML4, PDPT, page directories)
 *   0x8000  struct gm_boot_params
 *   0x10000 stacks, GUEST_STACK_SIZE per vCPU, growing down
 *   GUEST_IMAGE_GPA  the guest image; entry point at its first byte
 *   then, as the boot parameters say: the data to checksum, one shared page and
 *   one punch area per vCPU.
 */
/*
 * Entry on KVM: 64-bit mode, paging on with that identity map, RIP =
 * GUEST_IMAGE_GPA, RSP = GUEST_STACKS_GPA + (vcpu + 1) * GUEST_STACK_SIZE,
 * RDI = vCPU id, RSI = GUEST_BOOT_PARAMS_GPA. After GUEST_UCALL_RESULT or
 * GUEST_UCALL_FAIL the guest halts for good (KVM_EXIT_HLT; on the soft
 * backend the guest function returns, which KVM_RUN reports the same way).
 * Hypercalls: RAX = nr, RBX, RCX, RDX = a0..a2, result in RAX, trapped with a
 * one-byte OUT to GUEST_HYPERCALL_PORT (libgmem's gate: kvm-pvm never completes VMCALL).
 */
#define GUEST_PAGE_TABLES_GPA 0x1000ULL
#define GUEST_BOOT_PARAMS_GPA 0x8000ULL
#define GUEST_STACKS_GPA 0x10000ULL
#define GUEST_STACK_SIZE 0x4000ULL
#define GUEST_MAX_VCPUS 8
#define GUEST_IMAGE_GPA 0x100000ULL
#define GUEST_BOOT_MAGIC 0x746f6f626d6d6567ULL /* "gmemboot" */

struct gm_boot_params {
	uint64_t magic;
	uint64_t nr_vcpus;
	uint64_t mem_size;
	uint64_t data_gpa;       /* private data the VMM filled before launch */
	uint64_t data_size;      /* per vCPU: vCPU i checksums [data_gpa + i * data_size, +data_size) */
	uint64_t shared_gpa;     /* vCPU i's message page: shared_gpa + i * 4096 */
	uint64_t punch_gpa;      /* vCPU i's punch area: punch_gpa + i * punch_size */
	uint64_t punch_size;
};

/*
 * ucalls: on KVM, a one-byte OUT to GUEST_UCALL_PORT (DX = the port, AL = 0)
 * with the command in RDI and arguments in RSI, R8, R9: DX carries the port,
 * so RDX cannot carry a value. The VMM reads the registers, never guest
 * memory, so private memory stays private. On the soft backend,
 * gm_guest_ucall(guest, cmd, 3, a0, a1, a2): gm_vcpu_get_ucall gives
 * uc.cmd = cmd and uc.args[0..2] = a0..a2.
 */
#define GUEST_UCALL_PORT 0x1000
/* libgmem's hypercall gate (GM_HYPERCALL_PORT), an 8-bit port so RDX stays an argument. */
#define GUEST_HYPERCALL_PORT 0xe0

enum guest_ucall {
	GUEST_UCALL_CHECKSUM = 0x100, /* a0 = vCPU, a1 = checksum of its data,
				       * a2 = words that differ from guest_data_word */
	GUEST_UCALL_PRINT,            /* a0 = vCPU, a1 = gpa of the message (shared), a2 = length */
	GUEST_UCALL_PUNCH,            /* a0 = vCPU, a1 = gpa, a2 = size: return it to the system */
	GUEST_UCALL_RESULT,           /* a0 = vCPU, a1 = 1 when every check passed, a2 = failed check */
	GUEST_UCALL_FAIL,             /* a0 = vCPU, a1 = number of the failed check;
				       * the guest cannot go on and halts after it */
	/* SNP guests (soft, vCPU 0), before the scenario: the attestation exchange. */
	GUEST_UCALL_NONCE,            /* a0 = vCPU, a1 = gpa of a shared page, a2 = 64: the VMM
				       * writes the nonce there */
	GUEST_UCALL_REPORT,           /* a0 = vCPU, a1 = gpa of the report (shared), a2 = its
				       * length, or the negative errno of the request */
};

/*
 * The scenario's checks, numbered so that a failure names one. The first two
 * are fatal (GUEST_UCALL_FAIL, then halt); the others are reported by
 * GUEST_UCALL_RESULT as the first that failed, the scenario going on.
 */
enum guest_check {
	GUEST_CHECK_NONE = 0,
	GUEST_CHECK_MAGIC,        /* boot parameters carry GUEST_BOOT_MAGIC */
	GUEST_CHECK_PARAMS,       /* vCPU < nr_vcpus <= GUEST_MAX_VCPUS, sizes whole words */
	GUEST_CHECK_DATA,         /* every data word is guest_data_word(vcpu, i) */
	GUEST_CHECK_TO_SHARED,    /* MAP_GPA_RANGE of the message page to shared returned 0 */
	GUEST_CHECK_TO_PRIVATE,   /* MAP_GPA_RANGE of it back to private returned 0 */
	GUEST_CHECK_MESSAGE_KEPT, /* the message survived the conversion in place */
	GUEST_CHECK_PUNCH_ZERO,   /* the punch area reads 0 after GUEST_UCALL_PUNCH */
};

static inline const char *guest_check_name(uint64_t check)
{
	switch (check) {
	case GUEST_CHECK_NONE: return "none";
	case GUEST_CHECK_MAGIC: return "boot magic";
	case GUEST_CHECK_PARAMS: return "boot parameters";
	case GUEST_CHECK_DATA: return "private data words";
	case GUEST_CHECK_TO_SHARED: return "conversion to shared";
	case GUEST_CHECK_TO_PRIVATE: return "conversion to private";
	case GUEST_CHECK_MESSAGE_KEPT: return "message kept in place";
	case GUEST_CHECK_PUNCH_ZERO: return "punched area reads zero";
	}
	return "unknown";
}

/* The checksum both sides compute: FNV-1a over 64-bit words. */
static inline uint64_t guest_checksum_step(uint64_t sum, uint64_t word)
{
	return (sum ^ word) * 0x100000001b3ULL;
}
#define GUEST_CHECKSUM_INIT 0xcbf29ce484222325ULL

/* What the VMM writes at word i of vCPU v's data. */
static inline uint64_t guest_data_word(unsigned vcpu, uint64_t i)
{
	return (i * 0x9e3779b97f4a7c15ULL) ^ ((uint64_t)(vcpu + 1) << 56);
}

#endif
