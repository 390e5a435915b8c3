/* Writes an attestation report with known fields, signed by the platform key, for tests/attest/check.sh. */
#include <stdio.h>
#include <string.h>

#include "platform/snp_report.h"

int main(int argc, char **argv)
{
	struct snp_report_fields f = { .version = SNP_REPORT_VERSION, .policy = 0x30000 };
	uint8_t report[SNP_REPORT_SIZE];
	FILE *out;
	int ret;

	if (argc != 2) {
		fprintf(stderr, "usage: attest-make-report OUT\n");
		return 2;
	}
	/* check.sh expects these: measurement 00 01 .. 2f, report data 80 81 .. bf, host data a5... */
	for (int i = 0; i < 48; i++)
		f.measurement[i] = (uint8_t)i;
	for (int i = 0; i < 64; i++)
		f.report_data[i] = (uint8_t)(0x80 + i);
	memset(f.host_data, 0xa5, sizeof(f.host_data));
	ret = snp_report_sign(&f, report);
	if (ret) {
		fprintf(stderr, "attest-make-report: sign: %s\n", strerror(-ret));
		return 1;
	}
	out = fopen(argv[1], "wb");
	if (!out || fwrite(report, 1, sizeof(report), out) != sizeof(report) || fclose(out)) {
		perror(argv[1]);
		return 1;
	}
	return 0;
}
