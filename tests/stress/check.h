/* Checks for the standalone stress programs, which run where Criterion cannot (ThreadSanitizer). */
#ifndef TESTS_STRESS_CHECK_H
#define TESTS_STRESS_CHECK_H

#include <stdio.h>
#include <stdlib.h>

static int check_passed, check_failed;

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

/* A failed precondition ends the program; the summary still says so. */
#define REQUIRE(cond, ...)                                                        \
	do {                                                                      \
		int _failed = check_failed;                                       \
		CHECK(cond, __VA_ARGS__);                                         \
		if (check_failed != _failed)                                      \
			exit(check_summary(__FILE__));                            \
	} while (0)

static inline int check_summary(const char *name)
{
	printf("%s: %d passed, %d failed\n", name, check_passed, check_failed);
	return check_failed ? 1 : 0;
}

#endif
