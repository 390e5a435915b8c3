/* Criterion's skipped tests, grouped by suite and reason, go to make test's skip summary. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <criterion/hooks.h>

#include "harness/skip_report.h"

/* One line per (suite, reason), so 36 cases skipped for one reason are one line. */
static void report_suite(const struct criterion_suite_stats *s)
{
	const struct criterion_test_stats *done[256];
	size_t nr_done = 0;

	for (const struct criterion_test_stats *t = s->tests; t; t = t->next) {
		const char *why = t->message ? t->message : "no reason given";
		char group[256];
		unsigned n = 0;
		bool seen = false;

		if (t->test_status != CR_STATUS_SKIPPED)
			continue;
		for (size_t i = 0; i < nr_done && !seen; i++)
			seen = !strcmp(done[i]->test->category, t->test->category) &&
			       !strcmp(done[i]->message ? done[i]->message : "no reason given", why);
		if (seen)
			continue;
		for (const struct criterion_test_stats *u = t; u; u = u->next)
			n += u->test_status == CR_STATUS_SKIPPED &&
			     !strcmp(u->message ? u->message : "no reason given", why);
		if (nr_done < sizeof(done) / sizeof(done[0]))
			done[nr_done++] = t;
		snprintf(group, sizeof(group), "%s %s (%u test%s)", program_invocation_short_name,
			 s->suite->name, n, n == 1 ? "" : "s");
		gm_report_skip(group, "%s", why);
	}
}

/* A run in which every test skipped tested nothing: it exits 77, not 0 (see below). */
static void exit_skipped(void)
{
	fflush(NULL);
	_exit(GM_EXIT_SKIPPED);
}

ReportHook(POST_ALL)(struct criterion_global_stats *stats)
{
	for (const struct criterion_suite_stats *s = stats->suites; s; s = s->next)
		if (s->tests_skipped)
			report_suite(s);
	/*
	 * Criterion exits 0 when nothing failed, even when nothing ran. The status is decided
	 * after this hook, so the last exit handler sets it.
	 */
	if (stats->nb_tests && stats->tests_skipped == stats->nb_tests)
		atexit(exit_skipped);
}
