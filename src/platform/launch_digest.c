/* The launch digest as the SNP firmware ABI defines it, with libcrypto's SHA-384. */
#include <string.h>

#include <openssl/evp.h>

#include "platform/launch_digest.h"

/* The contents field: the page's digest for the types whose contents are measured. */
static int page_contents(uint8_t out[SNP_DIGEST_SIZE], uint8_t type, const void *page)
{
	if (type != KVM_SEV_SNP_PAGE_TYPE_NORMAL && type != SNP_PAGE_TYPE_VMSA) {
		memset(out, 0, SNP_DIGEST_SIZE);
		return 0;
	}
	return EVP_Digest(page, GM_PAGE_SIZE, out, NULL, EVP_sha384(), NULL) ? 0 : -ENOMEM;
}

int launch_digest_page(uint8_t ld[SNP_DIGEST_SIZE], uint8_t type, uint64_t gpa, const void *page)
{
	uint8_t info[SNP_PAGE_INFO_SIZE] = { 0 };

	/* DIGEST_CUR | CONTENTS | LENGTH | PAGE_TYPE | IMI_PAGE | VMPL3..1 perms | reserved | GPA */
	memcpy(info, ld, SNP_DIGEST_SIZE);
	if (page_contents(info + 0x30, type, page))
		return -ENOMEM;
	info[0x60] = SNP_PAGE_INFO_SIZE & 0xff;
	info[0x61] = SNP_PAGE_INFO_SIZE >> 8;
	info[0x62] = type;
	for (int i = 0; i < 8; i++)
		info[0x68 + i] = (uint8_t)(gpa >> (8 * i));
	return EVP_Digest(info, sizeof(info), ld, NULL, EVP_sha384(), NULL) ? 0 : -ENOMEM;
}

GM_EXPORT int gm_snp_launch_digest_page(uint8_t digest[48], uint8_t page_type, uint64_t gpa,
					const void *page)
{
	return launch_digest_page(digest, page_type, gpa, page);
}
