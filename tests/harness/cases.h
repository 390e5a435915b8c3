/* Subsets of gm_all_cases for rules that hold only for some guest_memfd flags. */
#ifndef TESTS_HARNESS_CASES_H
#define TESTS_HARNESS_CASES_H

#include "harness/surface.h"

#define GM_CASES_MAX 64

/*
 * Copies the cases whose flags include all of need and none of without into
 * buf. The filter is deterministic, so a worker that calls the parameter
 * generator again sees the same array.
 */
static inline size_t t_filter_cases(struct gm_case *buf, uint64_t need, uint64_t without)
{
	size_t n = 0;

	for (size_t i = 0; i < gm_all_cases_nr && n < GM_CASES_MAX; i++) {
		const struct gm_case *c = &gm_all_cases[i];

		if ((c->flags & need) == need && !(c->flags & without))
			buf[n++] = *c;
	}
	return n;
}

/* Body of a ParameterizedTestParameters: the cases with need and without without. */
#define T_CASES_WITH(need, without)                                                  \
	do {                                                                         \
		static struct gm_case _buf[GM_CASES_MAX];                            \
		size_t _n = t_filter_cases(_buf, (need), (without));                 \
		return cr_make_param_array(struct gm_case, _buf, _n);                \
	} while (0)

#endif
