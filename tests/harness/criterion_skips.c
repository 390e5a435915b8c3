/* Criterion's skipped tests, grouped by reason, go to make test's skip summary. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <criterion/hooks.h>

#include "harness/skip_report.h"

static const char *reason_of(const struct criterion_test_stats *t)
{
	return t->message && *t->message ? t->message : "no reason given";
}

/* A test that skipped itself; one left out by --filter is marked skipped without a message. */
static bool skipped_itself(const struct criterion_test_stats *t)
{
	return t->test_status == CR_STATUS_SKIPPED && t->message && *t->message;
}

/* Appends suite to the comma-separated list unless it is there already. */
static void add_suite(char *list, size_t size, const char *suite)
{
	size_t n = strlen(suite);

	for (const char *p = list; (p = strstr(p, suite)); p += n)
		if ((p == list || p[-1] == ' ') && (p[n] == ',' || !p[n]))
			return;
	snprintf(list + strlen(list), size - strlen(list), "%s%s", *list ? ", " : "", suite);
}

/* One line per reason: the tests it skipped, counted, and the suites they are in. */
static void report_reason(struct criterion_global_stats *stats, const char *why)
{
	char suites[256] = "", group[400];
	unsigned n = 0;

	for (const struct criterion_suite_stats *s = stats->suites; s; s = s->next)
		for (const struct criterion_test_stats *t = s->tests; t; t = t->next)
			if (skipped_itself(t) && !strcmp(reason_of(t), why)) {
				n++;
				add_suite(suites, sizeof(suites), s->suite->name);
			}
	snprintf(group, sizeof(group), "%s (%u test%s in %s)", program_invocation_short_name, n,
		 n == 1 ? "" : "s", suites);
	gm_report_skip(group, "%s", why);
}

/* Whether an earlier skipped test (in suite order) had the same reason. */
static bool reported_before(struct criterion_global_stats *stats,
			    const struct criterion_test_stats *test)
{
	for (const struct criterion_suite_stats *s = stats->suites; s; s = s->next)
		for (const struct criterion_test_stats *t = s->tests; t; t = t->next) {
			if (t == test)
				return false;
			if (skipped_itself(t) && !strcmp(reason_of(t), reason_of(test)))
				return true;
		}
	return false;
}

/* A run in which every test skipped tested nothing: it exits 77, not 0 (see below). */
static void exit_skipped(void)
{
	fflush(NULL);
	_exit(GM_EXIT_SKIPPED);
}

ReportHook(POST_ALL)(struct criterion_global_stats *stats)
{
	size_t skips = 0;

	for (const struct criterion_suite_stats *s = stats->suites; s; s = s->next)
		for (const struct criterion_test_stats *t = s->tests; t; t = t->next)
			if (skipped_itself(t) && (skips++, !reported_before(stats, t)))
				report_reason(stats, reason_of(t));
	/*
	 * Criterion exits 0 when nothing failed, even when nothing ran. The status is decided
	 * after this hook, so the last exit handler sets it.
	 */
	if (skips && !stats->tests_passed && !stats->tests_failed && !stats->tests_crashed)
		atexit(exit_skipped);
}
