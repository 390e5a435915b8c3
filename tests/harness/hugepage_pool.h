/* The default-size huge page pool (/proc/sys/vm/nr_hugepages), which tests grow and restore. */
#ifndef TESTS_HARNESS_HUGEPAGE_POOL_H
#define TESTS_HARNESS_HUGEPAGE_POOL_H

#include <stdbool.h>
#include <stdio.h>

#define HUGEPAGE_POOL "/proc/sys/vm/nr_hugepages"

/* The pool's size in pages, or -1 when it cannot be read. */
static inline long hugepage_pool_read(void)
{
	FILE *f = fopen(HUGEPAGE_POOL, "r");
	long n = -1;

	if (f) {
		if (fscanf(f, "%ld", &n) != 1)
			n = -1;
		fclose(f);
	}
	return n;
}

/* Asks for n pages (the kernel may give fewer); false when the file cannot be written (not root). */
static inline bool hugepage_pool_write(long n)
{
	FILE *f = fopen(HUGEPAGE_POOL, "w");
	bool ok;

	if (!f)
		return false;
	ok = fprintf(f, "%ld\n", n) > 0;
	return fclose(f) == 0 && ok;
}

#endif
