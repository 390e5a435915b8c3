/* gmem-attest: prints the software SNP platform's public key; verifies an attestation report. */
#define _GNU_SOURCE
#include <ctype.h>
#include <stdarg.h>
#include <stdbool.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <gmem/gmem.h>

#include "platform/platform_key.h"
#include "platform/snp_report.h"

/* Exit statuses: verified; did not verify (or a field differs); could not check at all. */
enum { EXIT_VERIFIED = 0, EXIT_REFUSED = 1, EXIT_USAGE = 2 };

static void usage(FILE *out)
{
	fprintf(out,
		"usage: gmem-attest key\n"
		"       gmem-attest verify FILE [--measurement HEX] [--report-data HEX]\n"
		"                               [--host-data HEX] [--key PEMFILE]\n"
		"\n"
		"key     prints the software SNP platform's public key (PEM), creating the\n"
		"        platform key on first use ($" PLATFORM_KEY_ENV ", else\n"
		"        $XDG_STATE_HOME/libgmem/" PLATFORM_KEY_FILE ", else\n"
		"        ~/.local/state/libgmem/" PLATFORM_KEY_FILE ")\n"
		"verify  checks FILE's ATTESTATION_REPORT signature against the platform key, or\n"
		"        the public key in PEMFILE, then each field given: --measurement (48\n"
		"        bytes), --host-data (32 bytes), --report-data (up to 64 bytes, the rest\n"
		"        zero), as hex (0x first or not)\n"
		"\n"
		"exit status: 0 verified (the fields are printed), 1 the signature or a field\n"
		"does not match (or the platform key cannot be used), 2 bad usage, a file that\n"
		"cannot be read, a report of the wrong size\n");
}

__attribute__((noreturn, format(printf, 2, 3)))
static void fail(int status, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "gmem-attest: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\n");
	exit(status);
}

static int print_key(void)
{
	char pem[GM_SNP_PLATFORM_KEY_PEM_MAX], path[PATH_MAX];
	int ret = gm_snp_platform_key_pem(pem, sizeof(pem));

	if (ret < 0) {
		if (platform_key_path(path, sizeof(path)))
			strcpy(path, "(no path)");
		fail(EXIT_REFUSED, "platform key %s: %s", path, platform_key_strerror(ret));
	}
	fputs(pem, stdout);
	return EXIT_VERIFIED;
}

/*
 * hex (an optional 0x first) into out[size]: exactly size bytes, or at most size when short
 * is allowed (zero-filled).
 */
static void parse_hex(const char *opt, const char *hex, uint8_t *out, size_t size, bool short_ok)
{
	size_t n;

	if (hex[0] == '0' && (hex[1] == 'x' || hex[1] == 'X'))
		hex += 2;
	n = strlen(hex);

	if (n % 2 || n / 2 > size || (!short_ok && n / 2 != size))
		fail(EXIT_USAGE, "%s: want %s%zu bytes as hex, got %zu characters", opt,
		     short_ok ? "up to " : "", size, n);
	memset(out, 0, size);
	for (size_t i = 0; i < n; i += 2) {
		unsigned v;

		if (!isxdigit((unsigned char)hex[i]) || !isxdigit((unsigned char)hex[i + 1]) ||
		    sscanf(hex + i, "%2x", &v) != 1)
			fail(EXIT_USAGE, "%s: '%s' is not hex", opt, hex);
		out[i / 2] = (uint8_t)v;
	}
}

static char *hex_of(const uint8_t *p, size_t n, char *buf)
{
	for (size_t i = 0; i < n; i++)
		sprintf(buf + 2 * i, "%02x", p[i]);
	buf[2 * n] = '\0';
	return buf;
}

/* The whole of a file of at most max bytes (one more is read to see that it is not longer). */
static size_t read_file(const char *path, void *buf, size_t max)
{
	FILE *f = fopen(path, "rb");
	size_t n;

	if (!f)
		fail(EXIT_USAGE, "%s: %s", path, strerror(errno));
	n = fread(buf, 1, max + 1, f);
	if (ferror(f))
		fail(EXIT_USAGE, "%s: %s", path, strerror(errno));
	fclose(f);
	return n;
}

struct expected {
	const char *name;
	const uint8_t *want;    /* NULL: not checked */
	const uint8_t *have;
	size_t size;
};

static void print_fields(const struct snp_report_fields *f, const char *key_source)
{
	char hex[2 * 64 + 1];

	printf("version:           %u\n", f->version);
	printf("guest svn:         %u\n", f->guest_svn);
	printf("policy:            0x%llx\n", (unsigned long long)f->policy);
	printf("vmpl:              %u\n", f->vmpl);
	printf("signature algo:    %u (ECDSA P-384 with SHA-384)\n", f->signature_algo);
	printf("signing key:       %u (%s)\n", f->signing_key,
	       f->signing_key == SNP_SIGNING_KEY_VCEK   ? "VCEK" :
	       f->signing_key == SNP_SIGNING_KEY_VLEK   ? "VLEK" :
	       f->signing_key == SNP_SIGNING_KEY_NONE   ? "none: no AMD key" : "reserved");
	printf("measurement:       %s\n", hex_of(f->measurement, sizeof(f->measurement), hex));
	printf("report data:       %s\n", hex_of(f->report_data, sizeof(f->report_data), hex));
	printf("host data:         %s\n", hex_of(f->host_data, sizeof(f->host_data), hex));
	printf("family id:         %s\n", hex_of(f->family_id, sizeof(f->family_id), hex));
	printf("image id:          %s\n", hex_of(f->image_id, sizeof(f->image_id), hex));
	printf("id key digest:     %s\n", hex_of(f->id_key_digest, sizeof(f->id_key_digest), hex));
	printf("author key digest: %s\n",
	       hex_of(f->author_key_digest, sizeof(f->author_key_digest), hex));
	printf("report id:         %s\n", hex_of(f->report_id, sizeof(f->report_id), hex));
	printf("platform info:     0x%llx\n", (unsigned long long)f->platform_info);
	printf("reported tcb:      0x%016llx\n", (unsigned long long)f->reported_tcb);
	printf("verified:          signature by %s\n", key_source);
}

static int verify(int argc, char **argv)
{
	uint8_t report[SNP_REPORT_SIZE + 1];
	uint8_t measurement[48], report_data[64], host_data[32];
	const char *file = NULL, *key_file = NULL;
	bool want_measurement = false, want_report_data = false, want_host_data = false;
	char key_pem[8192], why[256], path[PATH_MAX], source[PATH_MAX + 32];
	struct snp_report_fields f;
	EVP_PKEY *key;
	size_t n;
	int ret, status = EXIT_VERIFIED;

	for (int i = 0; i < argc; i++) {
		const char *a = argv[i];

		if (a[0] != '-' || !a[1]) {
			if (file)
				fail(EXIT_USAGE, "verify: one report at a time (got %s and %s)", file, a);
			file = a;
			continue;
		}
		if (i + 1 >= argc)
			fail(EXIT_USAGE, "%s needs a value", a);
		if (!strcmp(a, "--measurement")) {
			parse_hex(a, argv[++i], measurement, sizeof(measurement), false);
			want_measurement = true;
		} else if (!strcmp(a, "--report-data")) {
			parse_hex(a, argv[++i], report_data, sizeof(report_data), true);
			want_report_data = true;
		} else if (!strcmp(a, "--host-data")) {
			parse_hex(a, argv[++i], host_data, sizeof(host_data), false);
			want_host_data = true;
		} else if (!strcmp(a, "--key")) {
			key_file = argv[++i];
		} else {
			fail(EXIT_USAGE, "unknown option %s (gmem-attest --help)", a);
		}
	}
	if (!file)
		fail(EXIT_USAGE, "verify: no report file (gmem-attest --help)");

	n = read_file(file, report, SNP_REPORT_SIZE);
	if (n != SNP_REPORT_SIZE)
		fail(EXIT_USAGE, "%s: %s%zu bytes; an ATTESTATION_REPORT is %d", file,
		     n > SNP_REPORT_SIZE ? "more than " : "", n > SNP_REPORT_SIZE ? n - 1 : n,
		     SNP_REPORT_SIZE);
	if (key_file) {
		n = read_file(key_file, key_pem, sizeof(key_pem) - 1);
		if (n >= sizeof(key_pem))
			fail(EXIT_USAGE, "%s: too long for a PEM public key", key_file);
		key_pem[n] = '\0';
		if (platform_key_from_public_pem(key_pem, &key))
			fail(EXIT_USAGE, "%s: not a PEM ECDSA P-384 public key", key_file);
		EVP_PKEY_free(key);
		snprintf(source, sizeof(source), "the key in %s", key_file);
	} else {
		if (platform_key_path(path, sizeof(path)))
			strcpy(path, "(no path)");
		ret = platform_key_get(&key);
		if (ret)
			fail(EXIT_REFUSED, "platform key %s: %s", path, platform_key_strerror(ret));
		EVP_PKEY_free(key);
		snprintf(source, sizeof(source), "the platform key (%s)", path);
	}

	ret = snp_report_verify(report, SNP_REPORT_SIZE, key_file ? key_pem : NULL, why,
				sizeof(why));
	if (ret)
		fail(EXIT_REFUSED, "%s: %s", file, why);
	snp_report_parse(report, &f);

	struct expected checks[] = {
		{ "measurement", want_measurement ? measurement : NULL, f.measurement, 48 },
		{ "report data", want_report_data ? report_data : NULL, f.report_data, 64 },
		{ "host data", want_host_data ? host_data : NULL, f.host_data, 32 },
	};
	for (size_t i = 0; i < sizeof(checks) / sizeof(checks[0]); i++) {
		char have[2 * 64 + 1], want[2 * 64 + 1];

		if (!checks[i].want || !memcmp(checks[i].want, checks[i].have, checks[i].size))
			continue;
		fprintf(stderr, "gmem-attest: %s: %s differs: report has %s, expected %s\n", file,
			checks[i].name, hex_of(checks[i].have, checks[i].size, have),
			hex_of(checks[i].want, checks[i].size, want));
		status = EXIT_REFUSED;
	}
	if (status == EXIT_VERIFIED)
		print_fields(&f, source);
	return status;
}

int main(int argc, char **argv)
{
	if (argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
		usage(stdout);
		return EXIT_VERIFIED;
	}
	if (argc == 2 && !strcmp(argv[1], "key"))
		return print_key();
	if (argc >= 2 && !strcmp(argv[1], "verify"))
		return verify(argc - 2, argv + 2);
	usage(stderr);
	return EXIT_USAGE;
}
