/* Host mappings of a guest_memfd: ENODEV, EINVAL, SIGBUS, shared memory owned by the file. */
#include <string.h>

#include "harness/surface.h"

ParameterizedTestParameters(mmap, rules)
{
	return cr_make_param_array(struct gm_case, gm_all_cases, gm_all_cases_nr);
}

ParameterizedTest(struct gm_case *c, mmap, rules)
{
	struct gm_env e;
	char *p, *q;

	t_env_setup(&e, c, 0);
	if (!(e.flags & GUEST_MEMFD_FLAG_MMAP)) {
		errno = 0;
		cr_expect_eq(sys_mmap(NULL, e.size, PROT_READ | PROT_WRITE, MAP_SHARED, e.gmem, 0),
			     MAP_FAILED);
		cr_expect_eq(errno, ENODEV);
		t_env_teardown(&e);
		return;
	}
	errno = 0;
	cr_expect_eq(sys_mmap(NULL, e.size, PROT_READ | PROT_WRITE, MAP_PRIVATE, e.gmem, 0),
		     MAP_FAILED);
	cr_expect_eq(errno, EINVAL);

	/* Map one folio past the end: that part raises SIGBUS. */
	p = sys_mmap(NULL, e.size + e.folio_size, PROT_READ | PROT_WRITE, MAP_SHARED, e.gmem, 0);
	cr_assert_neq(p, MAP_FAILED, "%s", strerror(errno));
	cr_expect(t_access_sigbus(p + e.size, false), "read past EOF");
	cr_expect(t_access_sigbus(p + e.size + e.folio_size - 1, true), "write past EOF");

	if (!(e.flags & GUEST_MEMFD_FLAG_INIT_SHARED)) {
		/* Private memory: the host may not touch it. */
		cr_expect(t_access_sigbus(p, false));
		cr_expect(t_access_sigbus(p + e.size - 1, true));
	} else {
		cr_expect_not(t_access_sigbus(p, true));
		memset(p, 0xab, e.size);
		/* A second mapping sees the same memory, and it outlives the first. */
		q = sys_mmap(NULL, e.size, PROT_READ, MAP_SHARED, e.gmem, 0);
		cr_assert_neq(q, MAP_FAILED);
		cr_expect_eq(q[e.size - 1], (char)0xab);
		cr_expect_eq(sys_munmap(p, e.size + e.folio_size), 0);
		cr_expect_eq(q[0], (char)0xab);
		cr_expect_eq(sys_munmap(q, e.size), 0);
		p = sys_mmap(NULL, e.size, PROT_READ, MAP_SHARED, e.gmem, 0);
		cr_expect_eq(p[e.size / 2], (char)0xab, "data survives munmap");
		cr_expect_eq(sys_munmap(p, e.size), 0);
		p = NULL;
	}
	if (p)
		sys_munmap(p, e.size + e.folio_size);
	t_env_teardown(&e);
}
