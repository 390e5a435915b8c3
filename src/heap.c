/* Heap accounting: the bytes the library holds for its own metadata. */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* A header in front of each block remembers its size for the accounting. */
struct heap_header {
	size_t size;
	size_t pad; /* keeps the payload 16-byte aligned */
};

static atomic_ullong heap_bytes;

#ifdef GM_TEST_HOOKS
/* Test hook: the allocation this many calls from now fails (0 = never). */
static atomic_long fail_countdown;

void gm_heap_fail_after(long n)
{
	atomic_store(&fail_countdown, n);
}

static bool heap_should_fail(void)
{
	long n = atomic_load(&fail_countdown);

	while (n > 0)
		if (atomic_compare_exchange_weak(&fail_countdown, &n, n - 1))
			return n == 1;
	return false;
}
#else
/* The installed library has no hook, and nothing on the allocation path for one. */
static inline bool heap_should_fail(void)
{
	return false;
}
#endif

void *gm_zalloc(size_t size)
{
	struct heap_header *h = heap_should_fail() ? NULL : calloc(1, sizeof(*h) + size);

	if (!h)
		return NULL;
	h->size = size;
	atomic_fetch_add_explicit(&heap_bytes, sizeof(*h) + size, memory_order_relaxed);
	return h + 1;
}

void *gm_realloc(void *ptr, size_t size)
{
	struct heap_header *old = ptr ? (struct heap_header *)ptr - 1 : NULL;
	size_t old_size = old ? old->size : 0;
	struct heap_header *h = heap_should_fail() ? NULL : realloc(old, sizeof(*h) + size);

	if (!h)
		return NULL;
	if (size > old_size)
		memset((char *)(h + 1) + old_size, 0, size - old_size);
	h->size = size;
	atomic_fetch_add_explicit(&heap_bytes, size - old_size, memory_order_relaxed);
	if (!old)
		atomic_fetch_add_explicit(&heap_bytes, sizeof(*h), memory_order_relaxed);
	return h + 1;
}

void gm_free(void *ptr)
{
	struct heap_header *h;

	if (!ptr)
		return;
	h = (struct heap_header *)ptr - 1;
	atomic_fetch_sub_explicit(&heap_bytes, sizeof(*h) + h->size, memory_order_relaxed);
	free(h);
}

uint64_t gm_heap_bytes(void)
{
	return atomic_load_explicit(&heap_bytes, memory_order_relaxed);
}
