/*
 * Figures a1, a2: signing an SNP attestation report with the platform key, and verifying
 * one, against the floor: a bare libcrypto ECDSA P-384 / SHA-384 sign (verify) of the same
 * 0x2A0 bytes with the same key. What the library adds is the layout, the key cache and the
 * conversion between DER and the report's little-endian R and S.
 */
#include "bench.h"

#include <openssl/evp.h>

#include "platform/platform_key.h"
#include "platform/snp_report.h"

#define OPS 50   /* operations per sample: one P-384 signature is of the order of a millisecond */

static struct snp_report_fields fields;
static uint8_t report[SNP_REPORT_SIZE];
static unsigned char der[160];
static size_t der_len;

static double per_op_cpu_ms(struct timing t)
{
	return t.cpu_ms / OPS;
}

static struct timing time_library_sign(void)
{
	struct stopwatch sw;

	stopwatch_start(&sw);
	for (int i = 0; i < OPS; i++)
		if (snp_report_sign(&fields, report))
			die("snp_report_sign failed");
	return stopwatch_stop(&sw);
}

static struct timing time_bare_sign(EVP_PKEY *key)
{
	struct stopwatch sw;

	stopwatch_start(&sw);
	for (int i = 0; i < OPS; i++) {
		EVP_MD_CTX *ctx = EVP_MD_CTX_new();

		der_len = sizeof(der);
		if (!ctx || EVP_DigestSignInit(ctx, NULL, EVP_sha384(), NULL, key) != 1 ||
		    EVP_DigestSign(ctx, der, &der_len, report, SNP_REPORT_SIGNED_SIZE) != 1)
			die("EVP_DigestSign failed");
		EVP_MD_CTX_free(ctx);
	}
	return stopwatch_stop(&sw);
}

static struct timing time_library_verify(const char *pem)
{
	struct stopwatch sw;
	char why[128];

	stopwatch_start(&sw);
	for (int i = 0; i < OPS; i++)
		if (snp_report_verify(report, SNP_REPORT_SIZE, pem, why, sizeof(why)))
			die("snp_report_verify: %s", why);
	return stopwatch_stop(&sw);
}

/* The floor of a verification from PEM: the key parsed, then the bare verify. */
static struct timing time_bare_verify(const char *pem)
{
	struct stopwatch sw;

	stopwatch_start(&sw);
	for (int i = 0; i < OPS; i++) {
		EVP_MD_CTX *ctx = EVP_MD_CTX_new();
		EVP_PKEY *key;

		if (platform_key_from_public_pem(pem, &key))
			die("public key");
		if (!ctx || EVP_DigestVerifyInit(ctx, NULL, EVP_sha384(), NULL, key) != 1 ||
		    EVP_DigestVerify(ctx, der, der_len, report, SNP_REPORT_SIGNED_SIZE) != 1)
			die("EVP_DigestVerify failed");
		EVP_MD_CTX_free(ctx);
		EVP_PKEY_free(key);
	}
	return stopwatch_stop(&sw);
}

int main(void)
{
	int reps = bench_reps(7);
	double *lib_sign = alloc_samples(reps), *bare_sign = lib_sign + reps;
	double *lib_verify = alloc_samples(reps), *bare_verify = lib_verify + reps;
	char dir[] = "/tmp/gmem-bench-key-XXXXXX", path[64], pem[GM_SNP_PLATFORM_KEY_PEM_MAX];
	EVP_PKEY *key;

	/* A scratch platform key: the bench never touches the user's. */
	if (!mkdtemp(dir))
		die("mkdtemp: %s", strerror(errno));
	snprintf(path, sizeof(path), "%s/key.pem", dir);
	setenv(PLATFORM_KEY_ENV, path, 1);
	if (platform_key_get(&key) || gm_snp_platform_key_pem(pem, sizeof(pem)) < 0)
		die("platform key");
	for (int i = 0; i < 48; i++)
		fields.measurement[i] = (uint8_t)i;
	fields.version = SNP_REPORT_VERSION;
	/* Warm-up: the first signature loads the key and libcrypto's tables. */
	time_library_sign();
	time_bare_sign(key);

	note("snp_report: %d signatures and verifications x %d reps\n", OPS, reps);
	for (int r = 0; r < reps; r++) {
		/* Alternate which side goes first, so that drift spreads evenly. */
		if (r % 2) {
			lib_sign[r] = per_op_cpu_ms(time_library_sign());
			bare_sign[r] = per_op_cpu_ms(time_bare_sign(key));
		} else {
			bare_sign[r] = per_op_cpu_ms(time_bare_sign(key));
			lib_sign[r] = per_op_cpu_ms(time_library_sign());
		}
		/* report and der now hold the same bytes signed by each side: both verify. */
		if (r % 2) {
			lib_verify[r] = per_op_cpu_ms(time_library_verify(pem));
			bare_verify[r] = per_op_cpu_ms(time_bare_verify(pem));
		} else {
			bare_verify[r] = per_op_cpu_ms(time_bare_verify(pem));
			lib_verify[r] = per_op_cpu_ms(time_library_verify(pem));
		}
	}
	EVP_PKEY_free(key);
	unlink(path);
	rmdir(dir);

	emit_figure("a1", "SNP report: lay out + sign (ECDSA P-384), ms; plain = bare libcrypto sign of the same bytes");
	emit_result("a1", "libgmem", "ms", lib_sign, reps);
	emit_result("a1", "plain", "ms", bare_sign, reps);
	emit_ratio_target("a1", "libgmem/plain", lib_sign, bare_sign, reps, "<=", 1.2);
	emit_figure("a2", "SNP report: verify with a PEM key, ms; plain = bare libcrypto PEM parse + verify");
	emit_result("a2", "libgmem", "ms", lib_verify, reps);
	emit_result("a2", "plain", "ms", bare_verify, reps);
	emit_ratio_target("a2", "libgmem/plain", lib_verify, bare_verify, reps, "<=", 1.2);
	return 0;
}
