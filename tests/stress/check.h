/* Checks for the standalone stress programs, which run where Criterion cannot (ThreadSanitizer). */
#ifndef TESTS_STRESS_CHECK_H
#define TESTS_STRESS_CHECK_H

#include <stdio.h>
#include <stdlib.h>

static long check_passed, check_failed;

#define CHECK(cond, ...)                                                          \
	do {                                                                      \
		if (cond) {                                                       \
			check_passed++;                                           \
		} else {                                                          \
			check_failed++;                                           \
			fprintf(stderr, "%s:%d: check failed: %s: ", __FILE__,    \
				__LINE__, #cond);                                 \
			fprintf(stderr, __VA_ARGS__);                             \
			fputc('\n', stderr);                                      \
		}                                                                 \
	} while (0)

/* Checks made elsewhere (inside a guest, which aborts on the first failure) that all held. */
static inline void check_add_passed(unsigned long n)
{
	check_passed += (long)n;
}

/*
 * A setup step: not a check of the library, so a success is not counted; a failure ends
 * the program, counted as a failure.
 */
#define SETUP(cond, ...)                                                          \
	do {                                                                      \
		if (!(cond)) {                                                    \
			CHECK(cond, __VA_ARGS__);                                 \
			exit(check_summary(__FILE__));                            \
		}                                                                 \
	} while (0)

/* A failed precondition ends the program; the summary still says so. */
#define REQUIRE(cond, ...)                                                        \
	do {                                                                      \
		int _failed = check_failed;                                       \
		CHECK(cond, __VA_ARGS__);                                         \
		if (check_failed != _failed)                                      \
			exit(check_summary(__FILE__));                            \
	} while (0)

/* A run that checked nothing proves nothing: it fails, saying so. */
static inline int check_summary(const char *name)
{
	printf("%s: %ld passed, %ld failed\n", name, check_passed, check_failed);
	if (!check_passed && !check_failed)
		printf("%s: nothing was checked: failing\n", name);
	return check_failed || !check_passed ? 1 : 0;
}

#endif
