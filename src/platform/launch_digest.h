/* SEV-SNP's launch digest (GCTX.LD): the SHA-384 chain over each page's PAGE_INFO. */
#ifndef GMEM_PLATFORM_LAUNCH_DIGEST_H
#define GMEM_PLATFORM_LAUNCH_DIGEST_H

#include "internal.h"

#define SNP_DIGEST_SIZE    48
#define SNP_PAGE_INFO_SIZE 0x70
/* The page type LAUNCH_FINISH measures each vCPU's save area with. */
#define SNP_PAGE_TYPE_VMSA 0x2
/* Where KVM says the initial VMSAs live (INITIAL_VMSA_GPA), for the digest only. */
#define SNP_VMSA_GPA       0xFFFFFFFFF000ULL

/*
 * Folds one page into ld: ld = SHA-384(PAGE_INFO(ld, contents, type, gpa)).
 * page is read for NORMAL and VMSA pages; the other types measure zero
 * contents. 0, or -ENOMEM when libcrypto fails.
 */
int launch_digest_page(uint8_t ld[SNP_DIGEST_SIZE], uint8_t type, uint64_t gpa, const void *page);

#endif
