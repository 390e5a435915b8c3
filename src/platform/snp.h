/* The software SEV-SNP platform: a VM's guest context and the KVM_MEMORY_ENCRYPT_OP commands. */
#ifndef GMEM_PLATFORM_SNP_H
#define GMEM_PLATFORM_SNP_H

#include "vm.h"

/* KVM_MEMORY_ENCRYPT_OP on a VM, as sev_mem_enc_ioctl. */
long snp_mem_enc_ioctl(struct vm *vm, unsigned long arg);

#endif
