/* The software SEV-SNP platform: a VM's guest context and the KVM_MEMORY_ENCRYPT_OP commands. */
#ifndef GMEM_PLATFORM_SNP_H
#define GMEM_PLATFORM_SNP_H

#include "vm.h"

/* KVM_MEMORY_ENCRYPT_OP on a VM, as sev_mem_enc_ioctl. */
long snp_mem_enc_ioctl(struct vm *vm, unsigned long arg);

/*
 * MSG_REPORT_REQ from the guest of vm, straight to the platform: the signed
 * ATTESTATION_REPORT over data (64 bytes) at vmpl, into report (0x4A0 bytes).
 * -EINVAL when the VM is not a launched SNP guest, or the signer's -errno.
 */
int snp_guest_report(struct vm *vm, const uint8_t data[64], uint32_t vmpl, uint8_t *report);

#endif
