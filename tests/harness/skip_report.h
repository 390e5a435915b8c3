/* Skips that make test lists at its end: one "SKIP <group>: <reason>" line each in $GM_TEST_RESULTS. */
#ifndef TESTS_HARNESS_SKIP_REPORT_H
#define TESTS_HARNESS_SKIP_REPORT_H

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

/* Exit status of a program that ran nothing because the host lacks a feature (automake's). */
#define GM_EXIT_SKIPPED 77

/*
 * Appends one line to the results file make test collects (and prints it on stdout, so a
 * run outside make test says it too). Without GM_TEST_RESULTS only stdout gets it.
 */
static inline __attribute__((format(printf, 2, 3))) void
gm_report_skip(const char *group, const char *fmt, ...)
{
	const char *path = getenv("GM_TEST_RESULTS");
	const char *variant = getenv("GM_TEST_VARIANT");
	char reason[512], where[320];
	va_list ap;
	FILE *f;

	va_start(ap, fmt);
	vsnprintf(reason, sizeof(reason), fmt, ap);
	va_end(ap);
	/* make test runs each program in three builds: say which one skipped. */
	snprintf(where, sizeof(where), "%s%s%s", variant && *variant ? variant : "",
		 variant && *variant ? "/" : "", group);
	group = where;
	printf("SKIP %s: %s\n", group, reason);
	fflush(stdout);
	f = path && *path ? fopen(path, "a") : NULL;
	if (f) {
		/* One write per line: parallel writers (Criterion runs tests in workers) do not mix. */
		setvbuf(f, NULL, _IOFBF, 4096);
		fprintf(f, "SKIP %s: %s\n", group, reason);
		fclose(f);
	}
}

#endif
