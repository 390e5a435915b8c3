/* SEV-SNP ATTESTATION_REPORT (SNP ABI 56860, version 2 layout): build, sign, verify, parse. */
#ifndef GMEM_SNP_REPORT_H
#define GMEM_SNP_REPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SNP_REPORT_SIZE        0x4A0
#define SNP_REPORT_SIGNED_SIZE 0x2A0   /* the signature covers bytes 0 .. 0x29F */
#define SNP_REPORT_VERSION     2

/* Byte offsets in the report (docs/spec/guest_memfd-linux.md §6.6). */
#define SNP_REPORT_OFF_VERSION           0x000
#define SNP_REPORT_OFF_GUEST_SVN         0x004
#define SNP_REPORT_OFF_POLICY            0x008
#define SNP_REPORT_OFF_FAMILY_ID         0x010
#define SNP_REPORT_OFF_IMAGE_ID          0x020
#define SNP_REPORT_OFF_VMPL              0x030
#define SNP_REPORT_OFF_SIGNATURE_ALGO    0x034
#define SNP_REPORT_OFF_CURRENT_TCB       0x038
#define SNP_REPORT_OFF_PLATFORM_INFO     0x040
#define SNP_REPORT_OFF_FLAGS             0x048
#define SNP_REPORT_OFF_REPORT_DATA       0x050
#define SNP_REPORT_OFF_MEASUREMENT       0x090
#define SNP_REPORT_OFF_HOST_DATA         0x0C0
#define SNP_REPORT_OFF_ID_KEY_DIGEST     0x0E0
#define SNP_REPORT_OFF_AUTHOR_KEY_DIGEST 0x110
#define SNP_REPORT_OFF_REPORT_ID         0x140
#define SNP_REPORT_OFF_REPORT_ID_MA      0x160
#define SNP_REPORT_OFF_REPORTED_TCB      0x180
#define SNP_REPORT_OFF_CHIP_ID           0x1A0
#define SNP_REPORT_OFF_COMMITTED_TCB     0x1E0
#define SNP_REPORT_OFF_CURRENT_VERSION   0x1E8   /* build, minor, major */
#define SNP_REPORT_OFF_COMMITTED_VERSION 0x1EC   /* build, minor, major */
#define SNP_REPORT_OFF_LAUNCH_TCB        0x1F0
#define SNP_REPORT_OFF_SIGNATURE         0x2A0
#define SNP_REPORT_SIG_R                 0x000   /* within the signature */
#define SNP_REPORT_SIG_S                 0x048
#define SNP_REPORT_SIG_COMPONENT_SIZE    72      /* little-endian, zero-padded */

/* SIGNATURE_ALGO 1: ECDSA P-384 with SHA-384. */
#define SNP_SIGNATURE_ALGO_ECDSA_P384_SHA384 1

/* The flags word: AUTHOR_KEY_EN, MASK_CHIP_KEY, SIGNING_KEY (bits 4:2). */
#define SNP_REPORT_FLAG_AUTHOR_KEY_EN  (1u << 0)
#define SNP_REPORT_FLAG_MASK_CHIP_KEY  (1u << 1)
#define SNP_REPORT_SIGNING_KEY_SHIFT   2
#define SNP_REPORT_SIGNING_KEY_MASK    (7u << SNP_REPORT_SIGNING_KEY_SHIFT)
#define SNP_SIGNING_KEY_VCEK 0
#define SNP_SIGNING_KEY_VLEK 1
/*
 * No AMD key: what the software platform writes. Its key is neither a VCEK nor a VLEK,
 * and no AMD certificate chain leads to it (docs/platform.md, "Attestation").
 */
#define SNP_SIGNING_KEY_NONE 7

struct snp_report_fields {           /* host-endian; the builder lays them out LE */
	uint32_t version, guest_svn;
	uint64_t policy;
	uint8_t family_id[16], image_id[16];
	uint32_t vmpl;
	uint64_t current_tcb;
	uint64_t platform_info;
	bool author_key_en;
	bool mask_chip_key;
	uint8_t report_data[64];
	uint8_t measurement[48];
	uint8_t host_data[32];
	uint8_t id_key_digest[48], author_key_digest[48];
	uint8_t report_id[32];
	uint8_t report_id_ma[32];
	uint64_t reported_tcb;
	uint8_t chip_id[64];
	uint64_t committed_tcb;
	uint8_t current_build, current_minor, current_major;
	uint8_t committed_build, committed_minor, committed_major;
	uint64_t launch_tcb;
	/* Written by snp_report_sign whatever they hold here; snp_report_parse reads them. */
	uint32_t signature_algo;
	uint32_t signing_key;
};

/*
 * Lays out ATTESTATION_REPORT from f, SIGNATURE_ALGO 1 and SIGNING_KEY none, and signs
 * bytes 0..0x29F with the platform key (platform_key_get). report is written only on
 * success. -errno (the platform key's errors, -ENOMEM).
 */
int snp_report_sign(const struct snp_report_fields *f, uint8_t report[SNP_REPORT_SIZE]);

/*
 * Checks report's signature against key_pem (a PEM P-384 public key), or the platform
 * key when key_pem is NULL. 0 when it verifies; otherwise a sentence in why and -EINVAL
 * (len is not SNP_REPORT_SIZE), -EBADMSG (signature algorithm other than 1, or the
 * signature does not verify, or key_pem is not a P-384 public key) or the platform
 * key's -errno.
 */
int snp_report_verify(const uint8_t *report, size_t len, const char *key_pem, char *why,
		      size_t n);

/* The fields of a report, signature not checked. */
int snp_report_parse(const uint8_t report[SNP_REPORT_SIZE], struct snp_report_fields *f);

#endif
