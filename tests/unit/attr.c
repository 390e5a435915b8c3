/* The per-file attribute range map (src/attr.c): edits, merging, queries, and a randomized model check. */
#include <stdlib.h>

#include <criterion/criterion.h>

#include "attr.h"

#define P KVM_MEMORY_ATTRIBUTE_PRIVATE

static void set(struct attr_map *m, pgoff_t start, pgoff_t end, uint64_t attrs)
{
	cr_assert_eq(attr_reserve(m), 0);
	attr_set(m, start, end, attrs);
}

/* Sorted, starting at 0, inside the file, no two neighbours equal. */
static void check_invariants(const struct attr_map *m)
{
	cr_assert_geq(m->nr, 1);
	cr_assert_leq(m->nr, m->cap);
	cr_assert_eq(m->ranges[0].start, 0);
	for (size_t i = 1; i < m->nr; i++) {
		cr_assert_gt(m->ranges[i].start, m->ranges[i - 1].start, "range %zu out of order", i);
		cr_assert_lt(m->ranges[i].start, m->npages, "range %zu past the end", i);
		cr_assert_neq(m->ranges[i].attrs, m->ranges[i - 1].attrs,
			      "ranges %zu and %zu not merged", i - 1, i);
	}
}

Test(attr, init)
{
	struct attr_map m;
	pgoff_t run_end = 0;
	uint64_t a = 0;

	cr_assert_eq(attr_map_init(&m, 1000, P), 0);
	check_invariants(&m);
	cr_expect_eq(m.nr, 1);
	cr_expect_eq(attr_get(&m, 0, &run_end), P);
	cr_expect_eq(run_end, 1000);
	cr_expect_eq(attr_get(&m, 999, NULL), P);
	cr_expect(attr_uniform(&m, 0, 1000, &a));
	cr_expect_eq(a, P);
	cr_expect_eq(attr_count(&m, P), 1000);
	cr_expect_eq(attr_count(&m, 0), 0);
	cr_expect_gt(attr_map_bytes(&m), 0);
	attr_map_destroy(&m);
}

Test(attr, set_middle_edges_whole)
{
	struct attr_map m;
	pgoff_t run_end;
	uint64_t a;

	cr_assert_eq(attr_map_init(&m, 100, 0), 0);
	set(&m, 40, 60, P);
	check_invariants(&m);
	cr_expect_eq(m.nr, 3);
	cr_expect_eq(attr_get(&m, 39, &run_end), 0);
	cr_expect_eq(run_end, 40);
	cr_expect_eq(attr_get(&m, 40, &run_end), P);
	cr_expect_eq(run_end, 60);
	cr_expect_eq(attr_get(&m, 59, NULL), P);
	cr_expect_eq(attr_get(&m, 60, &run_end), 0);
	cr_expect_eq(run_end, 100);
	cr_expect_eq(attr_count(&m, P), 20);
	cr_expect_eq(attr_count(&m, 0), 80);

	cr_expect(attr_uniform(&m, 40, 60, &a));
	cr_expect_eq(a, P);
	cr_expect(attr_uniform(&m, 45, 50, &a));
	cr_expect(attr_uniform(&m, 0, 40, &a));
	cr_expect_eq(a, 0);
	cr_expect_not(attr_uniform(&m, 39, 41, NULL));
	cr_expect_not(attr_uniform(&m, 59, 61, NULL));
	cr_expect_not(attr_uniform(&m, 0, 100, NULL));

	/* The first page and the last page. */
	set(&m, 0, 1, P);
	check_invariants(&m);
	cr_expect_eq(m.nr, 4);
	set(&m, 99, 100, P);
	check_invariants(&m);
	cr_expect_eq(m.nr, 5);
	cr_expect_eq(attr_get(&m, 99, &run_end), P);
	cr_expect_eq(run_end, 100);
	cr_expect_eq(attr_count(&m, P), 22);

	/* A range that covers several ranges at once. */
	set(&m, 0, 70, 0);
	check_invariants(&m);
	cr_expect_eq(m.nr, 2);
	cr_expect_eq(attr_count(&m, P), 1);

	set(&m, 0, 100, P);
	check_invariants(&m);
	cr_expect_eq(m.nr, 1);
	cr_expect_eq(attr_count(&m, P), 100);
	attr_map_destroy(&m);
}

Test(attr, merge_equal_neighbours)
{
	struct attr_map m;

	cr_assert_eq(attr_map_init(&m, 100, 0), 0);
	set(&m, 10, 20, P);
	set(&m, 20, 30, P);
	check_invariants(&m);
	cr_expect_eq(m.nr, 3, "adjacent equal ranges merge");
	set(&m, 0, 10, P);
	check_invariants(&m);
	cr_expect_eq(m.nr, 2, "merges with the range after");
	set(&m, 30, 100, P);
	check_invariants(&m);
	cr_expect_eq(m.nr, 1, "merges with the range before");

	/* Setting what is already there changes nothing. */
	set(&m, 5, 50, P);
	cr_expect_eq(m.nr, 1);

	/* A hole and its filling: back to one range. */
	set(&m, 50, 51, 0);
	cr_expect_eq(m.nr, 3);
	set(&m, 50, 51, P);
	check_invariants(&m);
	cr_expect_eq(m.nr, 1);

	/* Filling a gap between two equal ranges merges all three. */
	set(&m, 20, 40, 0);
	set(&m, 60, 80, 0);
	cr_expect_eq(m.nr, 5);
	set(&m, 40, 60, 0);
	check_invariants(&m);
	cr_expect_eq(m.nr, 3);
	cr_expect_eq(attr_count(&m, 0), 60);
	attr_map_destroy(&m);
}

/* attr_reserve makes room for the worst case of the next set, however many ranges exist. */
Test(attr, reserve_then_set)
{
	struct attr_map m;
	size_t bytes;

	cr_assert_eq(attr_map_init(&m, 4096, 0), 0);
	bytes = attr_map_bytes(&m);
	for (pgoff_t i = 1; i < 4096; i += 2) {
		cr_assert_eq(attr_reserve(&m), 0);
		cr_assert_geq(m.cap, m.nr + 2, "reserve left no room at %llu", (unsigned long long)i);
		attr_set(&m, i, i + 1, P);
	}
	check_invariants(&m);
	cr_expect_eq(m.nr, 4096);
	cr_expect_eq(attr_count(&m, P), 2048);
	cr_expect_gt(attr_map_bytes(&m), bytes, "the map grew");
	/* A reserve when there is room already does not grow the map. */
	bytes = attr_map_bytes(&m);
	set(&m, 0, 4096, P);
	cr_expect_eq(m.nr, 1);
	cr_expect_eq(attr_reserve(&m), 0);
	cr_expect_eq(attr_map_bytes(&m), bytes);
	attr_map_destroy(&m);
}

/* The map against a plain array of per-page attributes. */
static void check_model(const struct attr_map *m, const uint64_t *model, pgoff_t n,
			const uint64_t *values, size_t nvalues)
{
	for (pgoff_t i = 0; i < n;) {
		pgoff_t run_end;
		uint64_t a = attr_get(m, i, &run_end);

		cr_assert_eq(a, model[i], "page %llu", (unsigned long long)i);
		cr_assert_gt(run_end, i);
		cr_assert_leq(run_end, n);
		for (pgoff_t j = i; j < run_end; j++)
			cr_assert_eq(model[j], a, "run of %llu holds page %llu of another value",
				     (unsigned long long)i, (unsigned long long)j);
		/* A run ends where the value changes, since neighbours are merged. */
		if (run_end < n)
			cr_assert_neq(model[run_end], a);
		i = run_end;
	}
	for (size_t v = 0; v < nvalues; v++) {
		pgoff_t count = 0;

		for (pgoff_t i = 0; i < n; i++)
			count += model[i] == values[v];
		cr_assert_eq(attr_count(m, values[v]), count, "count of %#llx",
			     (unsigned long long)values[v]);
	}
}

static bool model_uniform(const uint64_t *model, pgoff_t start, pgoff_t end)
{
	for (pgoff_t i = start + 1; i < end; i++)
		if (model[i] != model[start])
			return false;
	return true;
}

Test(attr, random_against_model)
{
	const uint64_t values[] = { 0, P, 1, P | 1 };
	const pgoff_t n = 257;
	unsigned seed = 12345;
	uint64_t model[257] = { 0 };
	struct attr_map m;

	cr_log_info("seed %u", seed);
	srand(seed);
	cr_assert_eq(attr_map_init(&m, n, 0), 0);
	for (int op = 0; op < 20000; op++) {
		pgoff_t a = (pgoff_t)rand() % n, b = (pgoff_t)rand() % n;
		pgoff_t start = a < b ? a : b, end = (a < b ? b : a) + 1;
		uint64_t v;

		/* Short ranges most of the time, so the map gets fragmented. */
		if (rand() % 4) {
			end = start + 1 + (pgoff_t)rand() % 8;
			if (end > n)
				end = n;
		}
		v = values[(unsigned)rand() % 4];
		set(&m, start, end, v);
		for (pgoff_t i = start; i < end; i++)
			model[i] = v;
		check_invariants(&m);
		if (op % 16 == 0)
			check_model(&m, model, n, values, 4);

		uint64_t u;
		bool uni = attr_uniform(&m, start, end, &u);

		cr_assert_eq(uni, model_uniform(model, start, end), "uniform [%llu, %llu)",
			     (unsigned long long)start, (unsigned long long)end);
		cr_assert_eq(u, model[start]);
		a = (pgoff_t)rand() % n;
		b = a + 1 + (pgoff_t)rand() % (n - a);
		cr_assert_eq(attr_uniform(&m, a, b, NULL), model_uniform(model, a, b),
			     "uniform [%llu, %llu)", (unsigned long long)a, (unsigned long long)b);
	}
	check_model(&m, model, n, values, 4);
	attr_map_destroy(&m);
}
