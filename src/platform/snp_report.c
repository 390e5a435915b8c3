/* SEV-SNP ATTESTATION_REPORT: laid out as the SNP ABI says, signed with the platform key (ECDSA P-384). */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>

#include "platform/platform_key.h"
#include "platform/snp_report.h"

/*
 * Where each field lives in the report and in struct snp_report_fields: numbers (size 1, 4
 * or 8, host-endian in the struct, little-endian in the report) and byte strings.
 * SIGNATURE_ALGO and the flags word are not here: the builder decides them.
 */
struct report_field {
	uint16_t report_off;
	uint16_t fields_off;
	uint16_t size;
	bool number;
};

#define NUMBER(off, name) { off, offsetof(struct snp_report_fields, name), \
			    sizeof(((struct snp_report_fields *)0)->name), true }
#define BYTES(off, name)  { off, offsetof(struct snp_report_fields, name), \
			    sizeof(((struct snp_report_fields *)0)->name), false }

static const struct report_field report_fields[] = {
	NUMBER(SNP_REPORT_OFF_VERSION, version),
	NUMBER(SNP_REPORT_OFF_GUEST_SVN, guest_svn),
	NUMBER(SNP_REPORT_OFF_POLICY, policy),
	BYTES(SNP_REPORT_OFF_FAMILY_ID, family_id),
	BYTES(SNP_REPORT_OFF_IMAGE_ID, image_id),
	NUMBER(SNP_REPORT_OFF_VMPL, vmpl),
	NUMBER(SNP_REPORT_OFF_CURRENT_TCB, current_tcb),
	NUMBER(SNP_REPORT_OFF_PLATFORM_INFO, platform_info),
	BYTES(SNP_REPORT_OFF_REPORT_DATA, report_data),
	BYTES(SNP_REPORT_OFF_MEASUREMENT, measurement),
	BYTES(SNP_REPORT_OFF_HOST_DATA, host_data),
	BYTES(SNP_REPORT_OFF_ID_KEY_DIGEST, id_key_digest),
	BYTES(SNP_REPORT_OFF_AUTHOR_KEY_DIGEST, author_key_digest),
	BYTES(SNP_REPORT_OFF_REPORT_ID, report_id),
	BYTES(SNP_REPORT_OFF_REPORT_ID_MA, report_id_ma),
	NUMBER(SNP_REPORT_OFF_REPORTED_TCB, reported_tcb),
	BYTES(SNP_REPORT_OFF_CHIP_ID, chip_id),
	NUMBER(SNP_REPORT_OFF_COMMITTED_TCB, committed_tcb),
	NUMBER(SNP_REPORT_OFF_CURRENT_VERSION + 0, current_build),
	NUMBER(SNP_REPORT_OFF_CURRENT_VERSION + 1, current_minor),
	NUMBER(SNP_REPORT_OFF_CURRENT_VERSION + 2, current_major),
	NUMBER(SNP_REPORT_OFF_COMMITTED_VERSION + 0, committed_build),
	NUMBER(SNP_REPORT_OFF_COMMITTED_VERSION + 1, committed_minor),
	NUMBER(SNP_REPORT_OFF_COMMITTED_VERSION + 2, committed_major),
	NUMBER(SNP_REPORT_OFF_LAUNCH_TCB, launch_tcb),
};

static void put_le(uint8_t *p, uint64_t v, unsigned size)
{
	for (unsigned i = 0; i < size; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get_le(const uint8_t *p, unsigned size)
{
	uint64_t v = 0;

	for (unsigned i = 0; i < size; i++)
		v |= (uint64_t)p[i] << (8 * i);
	return v;
}

/* A number of 1, 4 or 8 bytes in the struct, host-endian. */
static uint64_t load_number(const void *p, unsigned size)
{
	uint32_t v32;
	uint64_t v64;

	switch (size) {
	case 1:
		return *(const uint8_t *)p;
	case 4:
		memcpy(&v32, p, 4);
		return v32;
	default:
		memcpy(&v64, p, 8);
		return v64;
	}
}

static void store_number(void *p, unsigned size, uint64_t v)
{
	uint32_t v32 = (uint32_t)v;
	uint8_t v8 = (uint8_t)v;

	switch (size) {
	case 1:
		memcpy(p, &v8, 1);
		break;
	case 4:
		memcpy(p, &v32, 4);
		break;
	default:
		memcpy(p, &v, 8);
	}
}

static void lay_out(const struct snp_report_fields *f, uint8_t *report)
{
	const uint8_t *src = (const uint8_t *)f;
	uint32_t flags = (f->author_key_en ? SNP_REPORT_FLAG_AUTHOR_KEY_EN : 0) |
			 (f->mask_chip_key ? SNP_REPORT_FLAG_MASK_CHIP_KEY : 0) |
			 SNP_SIGNING_KEY_NONE << SNP_REPORT_SIGNING_KEY_SHIFT;

	memset(report, 0, SNP_REPORT_SIZE);
	for (size_t i = 0; i < sizeof(report_fields) / sizeof(report_fields[0]); i++) {
		const struct report_field *rf = &report_fields[i];

		if (rf->number)
			put_le(report + rf->report_off, load_number(src + rf->fields_off, rf->size),
			       rf->size);
		else
			memcpy(report + rf->report_off, src + rf->fields_off, rf->size);
	}
	put_le(report + SNP_REPORT_OFF_SIGNATURE_ALGO, SNP_SIGNATURE_ALGO_ECDSA_P384_SHA384, 4);
	put_le(report + SNP_REPORT_OFF_FLAGS, flags, 4);
}

int snp_report_parse(const uint8_t report[SNP_REPORT_SIZE], struct snp_report_fields *f)
{
	uint8_t *dst = (uint8_t *)f;
	uint32_t flags;

	if (!report || !f)
		return -EINVAL;
	memset(f, 0, sizeof(*f));
	for (size_t i = 0; i < sizeof(report_fields) / sizeof(report_fields[0]); i++) {
		const struct report_field *rf = &report_fields[i];

		if (rf->number)
			store_number(dst + rf->fields_off, rf->size,
				     get_le(report + rf->report_off, rf->size));
		else
			memcpy(dst + rf->fields_off, report + rf->report_off, rf->size);
	}
	flags = (uint32_t)get_le(report + SNP_REPORT_OFF_FLAGS, 4);
	f->author_key_en = flags & SNP_REPORT_FLAG_AUTHOR_KEY_EN;
	f->mask_chip_key = flags & SNP_REPORT_FLAG_MASK_CHIP_KEY;
	f->signing_key = (flags & SNP_REPORT_SIGNING_KEY_MASK) >> SNP_REPORT_SIGNING_KEY_SHIFT;
	f->signature_algo = (uint32_t)get_le(report + SNP_REPORT_OFF_SIGNATURE_ALGO, 4);
	return 0;
}

/* ECDSA over SHA-384 of msg, as R and S little-endian, zero-padded (the SNP signature format). */
static int sign_bytes(EVP_PKEY *key, const uint8_t *msg, size_t len, uint8_t *sig_out)
{
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	unsigned char der[160];
	const unsigned char *p = der;
	size_t der_len = sizeof(der);
	const BIGNUM *r, *s;
	ECDSA_SIG *sig = NULL;
	int ret = -ENOMEM;

	if (!ctx)
		return -ENOMEM;
	if (EVP_DigestSignInit(ctx, NULL, EVP_sha384(), NULL, key) != 1 ||
	    EVP_DigestSign(ctx, der, &der_len, msg, len) != 1)
		goto out;
	sig = d2i_ECDSA_SIG(NULL, &p, (long)der_len);
	if (!sig)
		goto out;
	ECDSA_SIG_get0(sig, &r, &s);
	if (BN_bn2lebinpad(r, sig_out + SNP_REPORT_SIG_R, SNP_REPORT_SIG_COMPONENT_SIZE) < 0 ||
	    BN_bn2lebinpad(s, sig_out + SNP_REPORT_SIG_S, SNP_REPORT_SIG_COMPONENT_SIZE) < 0)
		goto out;
	ret = 0;
out:
	ECDSA_SIG_free(sig);
	EVP_MD_CTX_free(ctx);
	ERR_clear_error();
	return ret;
}

int snp_report_sign(const struct snp_report_fields *f, uint8_t report[SNP_REPORT_SIZE])
{
	uint8_t buf[SNP_REPORT_SIZE];
	EVP_PKEY *key;
	int ret;

	if (!f || !report)
		return -EINVAL;
	ret = platform_key_get(&key);
	if (ret)
		return ret;
	lay_out(f, buf);
	ret = sign_bytes(key, buf, SNP_REPORT_SIGNED_SIZE, buf + SNP_REPORT_OFF_SIGNATURE);
	EVP_PKEY_free(key);
	if (!ret)
		memcpy(report, buf, SNP_REPORT_SIZE);
	return ret;
}

__attribute__((format(printf, 4, 5)))
static int refuse(char *why, size_t n, int err, const char *fmt, ...)
{
	va_list ap;

	if (why && n) {
		va_start(ap, fmt);
		vsnprintf(why, n, fmt, ap);
		va_end(ap);
	}
	return err;
}

/* The report's R and S as the DER ECDSA-Sig-Value libcrypto verifies; its length, or -ENOMEM. */
static int signature_der(const uint8_t *sig_in, unsigned char **der)
{
	BIGNUM *r = BN_lebin2bn(sig_in + SNP_REPORT_SIG_R, SNP_REPORT_SIG_COMPONENT_SIZE, NULL);
	BIGNUM *s = BN_lebin2bn(sig_in + SNP_REPORT_SIG_S, SNP_REPORT_SIG_COMPONENT_SIZE, NULL);
	ECDSA_SIG *sig = ECDSA_SIG_new();
	int len;

	if (!r || !s || !sig || !ECDSA_SIG_set0(sig, r, s)) {
		BN_free(r);
		BN_free(s);
		ECDSA_SIG_free(sig);
		return -ENOMEM;
	}
	*der = NULL;
	len = i2d_ECDSA_SIG(sig, der);
	ECDSA_SIG_free(sig);
	return len > 0 ? len : -ENOMEM;
}

static int verify_with(EVP_PKEY *key, const uint8_t *report, char *why, size_t n)
{
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	unsigned char *der = NULL;
	int der_len, rc = 0;

	if (!ctx)
		return refuse(why, n, -ENOMEM, "out of memory");
	der_len = signature_der(report + SNP_REPORT_OFF_SIGNATURE, &der);
	if (der_len > 0 && EVP_DigestVerifyInit(ctx, NULL, EVP_sha384(), NULL, key) == 1)
		rc = EVP_DigestVerify(ctx, der, (size_t)der_len, report, SNP_REPORT_SIGNED_SIZE);
	OPENSSL_free(der);
	EVP_MD_CTX_free(ctx);
	ERR_clear_error();
	if (der_len < 0)
		return refuse(why, n, -ENOMEM, "out of memory");
	/* 0 is a wrong signature, < 0 one that is not even an ECDSA signature (R or S >= n). */
	return rc == 1 ? 0 : refuse(why, n, -EBADMSG, "signature does not verify");
}

int snp_report_verify(const uint8_t *report, size_t len, const char *key_pem, char *why,
		      size_t n)
{
	EVP_PKEY *key;
	uint32_t algo;
	int ret;

	if (!report)
		return refuse(why, n, -EINVAL, "no report");
	if (len != SNP_REPORT_SIZE)
		return refuse(why, n, -EINVAL, "report is %zu bytes; an ATTESTATION_REPORT is %d",
			      len, SNP_REPORT_SIZE);
	algo = (uint32_t)get_le(report + SNP_REPORT_OFF_SIGNATURE_ALGO, 4);
	if (algo != SNP_SIGNATURE_ALGO_ECDSA_P384_SHA384)
		return refuse(why, n, -EBADMSG,
			      "signature algorithm %u is not ECDSA P-384 with SHA-384 (1)", algo);
	if (key_pem) {
		ret = platform_key_from_public_pem(key_pem, &key);
		if (ret)
			return refuse(why, n, ret, "the key is not a PEM ECDSA P-384 public key");
	} else {
		ret = platform_key_get(&key);
		if (ret)
			return refuse(why, n, ret, "platform key: %s", platform_key_strerror(ret));
	}
	ret = verify_with(key, report, why, n);
	EVP_PKEY_free(key);
	return ret;
}
