/* The SNP attestation report (layout, signature) and the platform key that signs it. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include <gmem/gmem.h>

#include "platform/platform_key.h"
#include "platform/snp_report.h"

/* Every test works in its own directory: the real user's key is never touched. */
static char scratch[32];     /* /tmp/gmem-snp-report-XXXXXX */
static char key_path[PATH_MAX];

static void scratch_init(void)
{
	strcpy(scratch, "/tmp/gmem-snp-report-XXXXXX");
	cr_assert(mkdtemp(scratch));
	snprintf(key_path, sizeof(key_path), "%s/keys/platform.pem", scratch);
	cr_assert_eq(setenv(PLATFORM_KEY_ENV, key_path, 1), 0);
}

static void scratch_fini(void)
{
	char cmd[2 * sizeof(scratch) + 32];

	snprintf(cmd, sizeof(cmd), "chmod -R u+rwx %s; rm -rf %s", scratch, scratch);
	if (system(cmd) != 0)
		fprintf(stderr, "snp_report: could not remove %s\n", scratch);
}

TestSuite(snp_report, .init = scratch_init, .fini = scratch_fini);

/* Every field set to its own pattern, so a byte at the wrong offset shows. */
static void sample_fields(struct snp_report_fields *f)
{
	memset(f, 0, sizeof(*f));
	f->version = SNP_REPORT_VERSION;
	f->guest_svn = 0x11223344;
	f->policy = 0x0102030405060708ULL;
	f->vmpl = 0x55667788;
	f->current_tcb = 0x1112131415161718ULL;
	f->platform_info = 0x2122232425262728ULL;
	f->author_key_en = true;
	f->mask_chip_key = true;
	f->reported_tcb = 0x3132333435363738ULL;
	f->committed_tcb = 0x4142434445464748ULL;
	f->launch_tcb = 0x5152535455565758ULL;
	f->current_build = 0x61;
	f->current_minor = 0x62;
	f->current_major = 0x63;
	f->committed_build = 0x64;
	f->committed_minor = 0x65;
	f->committed_major = 0x66;
	memset(f->family_id, 0xa1, sizeof(f->family_id));
	memset(f->image_id, 0xa2, sizeof(f->image_id));
	for (int i = 0; i < 64; i++)
		f->report_data[i] = (uint8_t)(0x80 + i);
	for (int i = 0; i < 48; i++)
		f->measurement[i] = (uint8_t)i;
	memset(f->host_data, 0xa5, sizeof(f->host_data));
	memset(f->id_key_digest, 0xa6, sizeof(f->id_key_digest));
	memset(f->author_key_digest, 0xa7, sizeof(f->author_key_digest));
	memset(f->report_id, 0xa8, sizeof(f->report_id));
	memset(f->report_id_ma, 0xa9, sizeof(f->report_id_ma));
	memset(f->chip_id, 0xaa, sizeof(f->chip_id));
}

static uint64_t le(const uint8_t *p, int size)
{
	uint64_t v = 0;

	for (int i = 0; i < size; i++)
		v |= (uint64_t)p[i] << (8 * i);
	return v;
}

static void expect_bytes(const uint8_t *report, int off, uint8_t byte, int n, const char *what)
{
	for (int i = 0; i < n; i++)
		cr_expect_eq(report[off + i], byte, "%s: byte %#x is %#x, not %#x", what, off + i,
			     report[off + i], byte);
}

static void sign_sample(uint8_t report[SNP_REPORT_SIZE])
{
	struct snp_report_fields f;

	sample_fields(&f);
	cr_assert_eq(snp_report_sign(&f, report), 0);
}

/* The offsets are the SNP ABI's (56860, ATTESTATION_REPORT), written out here, not the header's. */
Test(snp_report, every_field_at_its_abi_offset)
{
	uint8_t r[SNP_REPORT_SIZE];

	sign_sample(r);
	cr_expect_eq(le(r + 0x000, 4), SNP_REPORT_VERSION);
	cr_expect_eq(le(r + 0x004, 4), 0x11223344);
	cr_expect_eq(le(r + 0x008, 8), 0x0102030405060708ULL);
	expect_bytes(r, 0x010, 0xa1, 16, "FAMILY_ID");
	expect_bytes(r, 0x020, 0xa2, 16, "IMAGE_ID");
	cr_expect_eq(le(r + 0x030, 4), 0x55667788);
	cr_expect_eq(le(r + 0x034, 4), 1, "SIGNATURE_ALGO: ECDSA P-384 with SHA-384");
	cr_expect_eq(le(r + 0x038, 8), 0x1112131415161718ULL);
	cr_expect_eq(le(r + 0x040, 8), 0x2122232425262728ULL);
	/* AUTHOR_KEY_EN (bit 0), MASK_CHIP_KEY (bit 1), SIGNING_KEY 7 = none (bits 4:2). */
	cr_expect_eq(le(r + 0x048, 4), 0x1 | 0x2 | (7 << 2));
	expect_bytes(r, 0x04c, 0, 4, "reserved after the flags");
	for (int i = 0; i < 64; i++)
		cr_expect_eq(r[0x050 + i], 0x80 + i, "REPORT_DATA byte %d", i);
	for (int i = 0; i < 48; i++)
		cr_expect_eq(r[0x090 + i], i, "MEASUREMENT byte %d", i);
	expect_bytes(r, 0x0c0, 0xa5, 32, "HOST_DATA");
	expect_bytes(r, 0x0e0, 0xa6, 48, "ID_KEY_DIGEST");
	expect_bytes(r, 0x110, 0xa7, 48, "AUTHOR_KEY_DIGEST");
	expect_bytes(r, 0x140, 0xa8, 32, "REPORT_ID");
	expect_bytes(r, 0x160, 0xa9, 32, "REPORT_ID_MA");
	cr_expect_eq(le(r + 0x180, 8), 0x3132333435363738ULL);
	expect_bytes(r, 0x188, 0, 0x18, "reserved before CHIP_ID");
	expect_bytes(r, 0x1a0, 0xaa, 64, "CHIP_ID");
	cr_expect_eq(le(r + 0x1e0, 8), 0x4142434445464748ULL);
	cr_expect_eq(le(r + 0x1e8, 4), 0x00636261, "CURRENT build, minor, major, reserved");
	cr_expect_eq(le(r + 0x1ec, 4), 0x00666564, "COMMITTED build, minor, major, reserved");
	cr_expect_eq(le(r + 0x1f0, 8), 0x5152535455565758ULL);
	expect_bytes(r, 0x1f8, 0, 0x2a0 - 0x1f8, "reserved before the signature");
	/* R and S: 72 bytes each, a P-384 number (48 bytes) zero-padded; the rest reserved. */
	expect_bytes(r, 0x2a0 + 48, 0, 72 - 48, "R's padding");
	expect_bytes(r, 0x2a0 + 0x48 + 48, 0, 72 - 48, "S's padding");
	expect_bytes(r, 0x2a0 + 0x90, 0, 0x4a0 - 0x2a0 - 0x90, "reserved after S");
	cr_expect_neq(le(r + 0x2a0, 8), 0, "R is not zero");
	cr_expect_neq(le(r + 0x2a0 + 0x48, 8), 0, "S is not zero");
}

Test(snp_report, parse_gives_back_what_was_signed)
{
	struct snp_report_fields in, out;
	uint8_t r[SNP_REPORT_SIZE];

	sample_fields(&in);
	/* Set by the builder, whatever the caller says. */
	in.signature_algo = 99;
	in.signing_key = SNP_SIGNING_KEY_VCEK;
	cr_assert_eq(snp_report_sign(&in, r), 0);
	cr_assert_eq(snp_report_parse(r, &out), 0);
	in.signature_algo = SNP_SIGNATURE_ALGO_ECDSA_P384_SHA384;
	in.signing_key = SNP_SIGNING_KEY_NONE;
	cr_expect_eq(memcmp(&in, &out, sizeof(in)), 0);
	cr_expect_eq(snp_report_parse(NULL, &out), -EINVAL);
}

static void public_pem(char *pem)
{
	cr_assert_gt(gm_snp_platform_key_pem(pem, GM_SNP_PLATFORM_KEY_PEM_MAX), 0);
}

Test(snp_report, signed_report_verifies_with_the_platform_key)
{
	char pem[GM_SNP_PLATFORM_KEY_PEM_MAX], why[128] = "";
	uint8_t r[SNP_REPORT_SIZE];

	sign_sample(r);
	cr_expect_eq(snp_report_verify(r, sizeof(r), NULL, why, sizeof(why)), 0, "%s", why);
	public_pem(pem);
	cr_expect_eq(snp_report_verify(r, sizeof(r), pem, why, sizeof(why)), 0, "%s", why);
	/* ECDSA draws a new nonce: two reports over the same fields differ only in R and S. */
	uint8_t again[SNP_REPORT_SIZE];

	sign_sample(again);
	cr_expect_eq(memcmp(r, again, SNP_REPORT_SIGNED_SIZE), 0);
	cr_expect_eq(snp_report_verify(again, sizeof(again), pem, why, sizeof(why)), 0);
}

Test(snp_report, any_changed_byte_of_the_signed_part_fails)
{
	char pem[GM_SNP_PLATFORM_KEY_PEM_MAX], why[128];
	uint8_t r[SNP_REPORT_SIZE];

	sign_sample(r);
	public_pem(pem);
	for (int off = 0; off < SNP_REPORT_SIGNED_SIZE; off++) {
		r[off] ^= 0x01;
		why[0] = '\0';
		cr_expect_eq(snp_report_verify(r, sizeof(r), pem, why, sizeof(why)), -EBADMSG,
			     "byte %#x changed, yet the report verifies", off);
		cr_expect_neq(why[0], '\0', "no reason for byte %#x", off);
		r[off] ^= 0x01;
	}
	cr_expect_eq(snp_report_verify(r, sizeof(r), pem, why, sizeof(why)), 0, "%s", why);
}

Test(snp_report, any_changed_byte_of_r_or_s_fails)
{
	char pem[GM_SNP_PLATFORM_KEY_PEM_MAX], why[128];
	uint8_t r[SNP_REPORT_SIZE];

	sign_sample(r);
	public_pem(pem);
	/* R, S and their zero padding: a padding byte makes the number larger than the curve's. */
	for (int off = 0x2a0; off < 0x2a0 + 2 * 72; off++) {
		for (int bit = 0; bit < 8; bit += 7) {
			r[off] ^= (uint8_t)(1 << bit);
			cr_expect_eq(snp_report_verify(r, sizeof(r), pem, why, sizeof(why)), -EBADMSG,
				     "signature byte %#x bit %d changed, yet it verifies", off, bit);
			cr_expect_str_eq(why, "signature does not verify");
			r[off] ^= (uint8_t)(1 << bit);
		}
	}
	cr_expect_eq(snp_report_verify(r, sizeof(r), pem, why, sizeof(why)), 0, "%s", why);
}

/* Points the library at another key file: a second platform. */
static void use_key(const char *name)
{
	snprintf(key_path, sizeof(key_path), "%s/%s", scratch, name);
	cr_assert_eq(setenv(PLATFORM_KEY_ENV, key_path, 1), 0);
}

Test(snp_report, another_key_does_not_verify)
{
	char pem_a[GM_SNP_PLATFORM_KEY_PEM_MAX], pem_b[GM_SNP_PLATFORM_KEY_PEM_MAX], why[128];
	uint8_t r[SNP_REPORT_SIZE];

	use_key("a.pem");
	sign_sample(r);
	public_pem(pem_a);
	use_key("b.pem");
	public_pem(pem_b);
	cr_assert_str_neq(pem_a, pem_b);
	cr_expect_eq(snp_report_verify(r, sizeof(r), pem_b, why, sizeof(why)), -EBADMSG);
	cr_expect_str_eq(why, "signature does not verify");
	/* The platform key is b's now: the report of platform a does not verify against it. */
	cr_expect_eq(snp_report_verify(r, sizeof(r), NULL, why, sizeof(why)), -EBADMSG);
	cr_expect_eq(snp_report_verify(r, sizeof(r), pem_a, why, sizeof(why)), 0, "%s", why);
}

/* A P-256 public key in PEM: a well-formed key of the wrong curve. */
static void p256_public_pem(char *buf, size_t len)
{
	EVP_PKEY *k = EVP_EC_gen("P-256");
	BIO *bio = BIO_new(BIO_s_mem());
	char *data;
	long n;

	cr_assert(k && bio && PEM_write_bio_PUBKEY(bio, k));
	n = BIO_get_mem_data(bio, &data);
	cr_assert(n > 0 && (size_t)n < len);
	memcpy(buf, data, (size_t)n);
	buf[n] = '\0';
	BIO_free(bio);
	EVP_PKEY_free(k);
}

Test(snp_report, bad_input_is_refused_with_a_reason)
{
	char why[128], p256[512];
	uint8_t r[SNP_REPORT_SIZE];
	struct snp_report_fields f;

	sign_sample(r);
	cr_expect_eq(snp_report_verify(r, sizeof(r) - 1, NULL, why, sizeof(why)), -EINVAL);
	cr_expect_str_eq(why, "report is 1183 bytes; an ATTESTATION_REPORT is 1184");
	cr_expect_eq(snp_report_verify(NULL, sizeof(r), NULL, why, sizeof(why)), -EINVAL);
	cr_expect_eq(snp_report_verify(r, sizeof(r), "not a key", why, sizeof(why)), -EBADMSG);
	cr_expect_str_eq(why, "the key is not a PEM ECDSA P-384 public key");
	p256_public_pem(p256, sizeof(p256));
	cr_expect_eq(snp_report_verify(r, sizeof(r), p256, why, sizeof(why)), -EBADMSG);
	cr_expect_str_eq(why, "the key is not a PEM ECDSA P-384 public key");
	/* A report that claims another algorithm is not checked as if it were ECDSA P-384. */
	r[0x034] = 2;
	cr_expect_eq(snp_report_verify(r, sizeof(r), NULL, why, sizeof(why)), -EBADMSG);
	cr_expect_str_eq(why, "signature algorithm 2 is not ECDSA P-384 with SHA-384 (1)");
	/* No room for the reason is not an error of its own. */
	cr_expect_eq(snp_report_verify(r, sizeof(r), NULL, NULL, 0), -EBADMSG);
	cr_expect_eq(snp_report_sign(NULL, r), -EINVAL);
	sample_fields(&f);
	cr_expect_eq(snp_report_sign(&f, NULL), -EINVAL);
	cr_expect_eq(gm_snp_platform_key_pem(NULL, 100), -EINVAL);
	cr_expect_eq(gm_snp_platform_key_pem((char *)r, 16), -ERANGE);
}

static void expect_mode(const char *path, mode_t mode)
{
	struct stat st;

	cr_assert_eq(stat(path, &st), 0, "%s: %s", path, strerror(errno));
	cr_expect_eq(st.st_mode & 07777, mode, "%s has mode %o, not %o", path, st.st_mode & 07777,
		     mode);
}

static size_t read_all(const char *path, char *buf, size_t len)
{
	int fd = open(path, O_RDONLY);
	ssize_t n;

	cr_assert_geq(fd, 0, "%s: %s", path, strerror(errno));
	n = read(fd, buf, len - 1);
	close(fd);
	cr_assert_geq(n, 0);
	buf[n] = '\0';
	return (size_t)n;
}

/* A fresh process: the key it sees comes from the file, not from this one's memory. */
static void pem_in_child(char *pem)
{
	int fds[2];
	pid_t pid;
	int status;
	size_t got = 0;
	ssize_t n;

	cr_assert_eq(pipe(fds), 0);
	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		char buf[GM_SNP_PLATFORM_KEY_PEM_MAX];
		int len = gm_snp_platform_key_pem(buf, sizeof(buf));

		if (len < 0 || write(fds[1], buf, (size_t)len) != len)
			_exit(1);
		_exit(0);
	}
	close(fds[1]);
	while ((n = read(fds[0], pem + got, GM_SNP_PLATFORM_KEY_PEM_MAX - 1 - got)) > 0)
		got += (size_t)n;
	pem[got] = '\0';
	close(fds[0]);
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the child found no key");
}

Test(snp_report, key_created_on_first_use_private_and_reused)
{
	char pem[GM_SNP_PLATFORM_KEY_PEM_MAX], again[GM_SNP_PLATFORM_KEY_PEM_MAX];
	char file[4096], file_after[4096], dir[PATH_MAX];
	struct stat st;
	int len;

	cr_assert_eq(stat(key_path, &st), -1, "the key exists before first use");
	len = gm_snp_platform_key_pem(pem, sizeof(pem));
	cr_assert_gt(len, 0);
	cr_expect_eq((size_t)len, strlen(pem));
	cr_expect_eq(strncmp(pem, "-----BEGIN PUBLIC KEY-----\n", 27), 0, "%s", pem);
	expect_mode(key_path, 0600);
	snprintf(dir, sizeof(dir), "%s/keys", scratch);
	expect_mode(dir, 0700);
	read_all(key_path, file, sizeof(file));
	/* The file holds the private key; the PEM handed out holds no private part. */
	cr_expect(strstr(file, "PRIVATE KEY"));
	cr_expect(!strstr(pem, "PRIVATE"));

	cr_assert_gt(gm_snp_platform_key_pem(again, sizeof(again)), 0);
	cr_expect_str_eq(pem, again);
	pem_in_child(again);
	cr_expect_str_eq(pem, again, "another process made a new key");
	read_all(key_path, file_after, sizeof(file_after));
	cr_expect_str_eq(file, file_after, "the key file was rewritten");
	/* Exactly the buffer's size is one byte short (the NUL). */
	cr_expect_eq(gm_snp_platform_key_pem(again, (size_t)len), -ERANGE);
	cr_expect_eq(gm_snp_platform_key_pem(again, (size_t)len + 1), len);
}

/* The key file holds text that is no usable key: an error, and the file stays as it was. */
static void expect_refused_and_kept(const char *text, const char *what)
{
	char file[4096], pem[GM_SNP_PLATFORM_KEY_PEM_MAX], why[128];
	uint8_t r[SNP_REPORT_SIZE], before[SNP_REPORT_SIZE];
	struct snp_report_fields f;
	FILE *out;

	out = fopen(key_path, "w");
	cr_assert(out);
	fputs(text, out);
	fclose(out);
	cr_expect_eq(gm_snp_platform_key_pem(pem, sizeof(pem)), -EBADMSG, "%s", what);
	sample_fields(&f);
	memset(r, 0x5a, sizeof(r));
	memcpy(before, r, sizeof(r));
	cr_expect_eq(snp_report_sign(&f, r), -EBADMSG, "%s", what);
	cr_expect_eq(memcmp(r, before, sizeof(r)), 0, "a failed sign wrote the report (%s)", what);
	memset(r + 0x034, 0, 4);
	r[0x034] = SNP_SIGNATURE_ALGO_ECDSA_P384_SHA384;
	cr_expect_eq(snp_report_verify(r, sizeof(r), NULL, why, sizeof(why)), -EBADMSG);
	cr_expect_str_eq(why, "platform key: not a PEM ECDSA P-384 private key", "%s", what);
	read_all(key_path, file, sizeof(file));
	cr_expect_str_eq(file, text, "%s: the key file was replaced", what);
}

static char *private_pem_of(EVP_PKEY *k, char *buf, size_t len, const EVP_CIPHER *cipher)
{
	BIO *bio = BIO_new(BIO_s_mem());
	char *data;
	long n;

	cr_assert(bio && PEM_write_bio_PrivateKey(bio, k, cipher, (unsigned char *)"pw", 2,
						  NULL, NULL));
	n = BIO_get_mem_data(bio, &data);
	cr_assert(n > 0 && (size_t)n < len);
	memcpy(buf, data, (size_t)n);
	buf[n] = '\0';
	BIO_free(bio);
	return buf;
}

Test(snp_report, corrupt_key_file_is_an_error_never_replaced)
{
	char pem[4096];
	EVP_PKEY *p256 = EVP_EC_gen("P-256"), *p384 = EVP_EC_gen("P-384");

	cr_assert(p256 && p384);
	use_key("corrupt.pem");
	expect_refused_and_kept("", "an empty file");
	expect_refused_and_kept("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
				"a truncated PEM");
	expect_refused_and_kept(private_pem_of(p256, pem, sizeof(pem), NULL), "a P-256 key");
	/* Never a passphrase prompt: an encrypted key is a key this library cannot use. */
	expect_refused_and_kept(private_pem_of(p384, pem, sizeof(pem), EVP_aes_128_cbc()),
				"an encrypted P-384 key");
	EVP_PKEY_free(p256);
	EVP_PKEY_free(p384);
}

Test(snp_report, key_path_that_cannot_be_read_is_an_error)
{
	char pem[GM_SNP_PLATFORM_KEY_PEM_MAX], blocker[PATH_MAX];
	FILE *f;
	pid_t pid;
	int status;

	/* A path under a regular file: not "missing", so nothing is created. */
	snprintf(blocker, sizeof(blocker), "%s/file", scratch);
	f = fopen(blocker, "w");
	cr_assert(f);
	fclose(f);
	use_key("file/key.pem");
	cr_expect_eq(gm_snp_platform_key_pem(pem, sizeof(pem)), -ENOTDIR);

	/* A key its user may not read: EACCES, and it is left alone. Root reads anything, so
	 * the check runs as nobody when the tests run as root. */
	use_key("locked.pem");
	pem_in_child(pem);   /* created by another process: this one holds no copy */
	cr_assert_eq(chmod(key_path, 0), 0);
	cr_assert_eq(chmod(scratch, 0711), 0);
	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		char buf[GM_SNP_PLATFORM_KEY_PEM_MAX];

		if (geteuid() == 0 && (setgid(65534) || setuid(65534)))
			_exit(3);
		_exit(gm_snp_platform_key_pem(buf, sizeof(buf)) == -EACCES ? 0 : 1);
	}
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	cr_expect(WIFEXITED(status) && WEXITSTATUS(status) == 0,
		  "an unreadable key file was not refused with EACCES (status %#x)", status);
	expect_mode(key_path, 0);
}

/* Processes racing on first use all end with the same key, and no temporary file is left. */
Test(snp_report, concurrent_first_use_ends_with_one_key, .timeout = 60)
{
	enum { ROUNDS = 8, RACERS = 4 };

	for (int round = 0; round < ROUNDS; round++) {
		char name[48], pems[RACERS][GM_SNP_PLATFORM_KEY_PEM_MAX], mine[GM_SNP_PLATFORM_KEY_PEM_MAX];
		int go[2], out[RACERS][2];
		pid_t pids[RACERS];
		char dir[PATH_MAX], cmd[PATH_MAX + 32], listing[256];
		FILE *ls;
		size_t n;

		snprintf(name, sizeof(name), "race%d/key.pem", round);
		use_key(name);
		cr_assert_eq(pipe(go), 0);
		for (int i = 0; i < RACERS; i++) {
			cr_assert_eq(pipe(out[i]), 0);
			pids[i] = fork();
			cr_assert_geq(pids[i], 0);
			if (pids[i] == 0) {
				char buf[GM_SNP_PLATFORM_KEY_PEM_MAX], c;
				int len;

				close(go[1]);
				/* Everyone starts when the parent closes the pipe. */
				if (read(go[0], &c, 1) != 0)
					_exit(2);
				len = gm_snp_platform_key_pem(buf, sizeof(buf));
				if (len < 0 || write(out[i][1], buf, (size_t)len) != len)
					_exit(1);
				_exit(0);
			}
			close(out[i][1]);
		}
		close(go[0]);
		close(go[1]);
		for (int i = 0; i < RACERS; i++) {
			ssize_t got;
			int status;

			n = 0;
			while ((got = read(out[i][0], pems[i] + n, sizeof(pems[i]) - 1 - n)) > 0)
				n += (size_t)got;
			pems[i][n] = '\0';
			close(out[i][0]);
			cr_assert_eq(waitpid(pids[i], &status, 0), pids[i]);
			cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0,
				  "round %d: racer %d failed (status %#x)", round, i, status);
		}
		public_pem(mine);
		for (int i = 0; i < RACERS; i++)
			cr_expect_str_eq(pems[i], mine, "round %d: racer %d has another key", round, i);
		snprintf(dir, sizeof(dir), "%s/race%d", scratch, round);
		snprintf(cmd, sizeof(cmd), "ls -A %s", dir);
		ls = popen(cmd, "r");
		cr_assert(ls);
		n = fread(listing, 1, sizeof(listing) - 1, ls);
		listing[n] = '\0';
		pclose(ls);
		cr_expect_str_eq(listing, "key.pem\n", "round %d: left in the directory: %s", round,
				 listing);
	}
}

/* The key is made at scratch/file, and the directory scratch/made_dir with mode 0700. */
static void expect_key_made_at(const char *file, const char *made_dir)
{
	char pem[GM_SNP_PLATFORM_KEY_PEM_MAX], want[PATH_MAX], got[PATH_MAX], dir[PATH_MAX];

	cr_assert_eq(platform_key_path(got, sizeof(got)), 0);
	snprintf(want, sizeof(want), "%s/%s", scratch, file);
	cr_expect_str_eq(got, want);
	cr_assert_gt(gm_snp_platform_key_pem(pem, sizeof(pem)), 0);
	expect_mode(want, 0600);
	snprintf(dir, sizeof(dir), "%s/%s", scratch, made_dir);
	expect_mode(dir, 0700);
}

/* Without the override: $XDG_STATE_HOME/libgmem/, else ~/.local/state/libgmem/. */
Test(snp_report, default_location_follows_xdg_then_home)
{
	char pem[GM_SNP_PLATFORM_KEY_PEM_MAX], want[PATH_MAX], got[PATH_MAX], dir[PATH_MAX];

	cr_assert_eq(unsetenv(PLATFORM_KEY_ENV), 0);
	snprintf(dir, sizeof(dir), "%s/xdg", scratch);
	cr_assert_eq(setenv("XDG_STATE_HOME", dir, 1), 0);
	expect_key_made_at("xdg/libgmem/snp-platform-key.pem", "xdg/libgmem");

	/* A relative XDG_STATE_HOME is ignored, as the XDG rules say. */
	cr_assert_eq(setenv("XDG_STATE_HOME", "relative/state", 1), 0);
	snprintf(dir, sizeof(dir), "%s/home", scratch);
	cr_assert_eq(setenv("HOME", dir, 1), 0);
	expect_key_made_at("home/.local/state/libgmem/snp-platform-key.pem", "home/.local/state");
	snprintf(want, sizeof(want), "%s/home/.local/state/libgmem/snp-platform-key.pem", scratch);

	cr_assert_eq(setenv(PLATFORM_KEY_ENV, "", 1), 0);
	cr_assert_eq(platform_key_path(got, sizeof(got)), 0);
	cr_expect_str_eq(got, want, "an empty GMEM_PLATFORM_KEY is no override");
	cr_expect_eq(platform_key_path(got, 8), -ENAMETOOLONG);

	/* Nowhere to put a key: an error, not a key in the current directory. */
	cr_assert_eq(unsetenv("XDG_STATE_HOME"), 0);
	cr_assert_eq(setenv("HOME", "relative", 1), 0);
	cr_expect_eq(platform_key_path(got, sizeof(got)), -ENOENT);
	cr_assert_eq(unsetenv("HOME"), 0);
	cr_expect_eq(gm_snp_platform_key_pem(pem, sizeof(pem)), -ENOENT);
}
