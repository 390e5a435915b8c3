/* Host mappings of a guest_memfd: memory owned by the file, partial munmap, exec and failed calls. */
#include "harness/cases.h"

#include <linux/falloc.h>
#include <string.h>

#ifndef GM_TARGET_KERNEL
/* libgmem's count of live mappings of the file; the kernel has no such counter. */
static uint32_t host_mappings(int fd)
{
	struct gm_gmem_info info;

	cr_assert_eq(gm_gmem_info(fd, &info), 0);
	return info.host_mappings;
}
#define expect_host_mappings(fd, n) \
	cr_expect_eq(host_mappings(fd), (n), "libgmem counts %u mappings", host_mappings(fd))
#else
#define expect_host_mappings(fd, n) ((void)(fd))
#endif

/* A sized guest_memfd for a case, in place of the harness's two folios. */
static void env_setup_sized(struct gm_env *e, const struct gm_case *c, uint64_t folios)
{
	t_env_setup(e, c, 0);
	sys_close(e->gmem);
	e->size = folios * e->folio_size;
	e->gmem = t_create_gmem(e->vm, e->size, e->flags);
}

static char *map_shared(int fd, uint64_t len, uint64_t off)
{
	char *p = sys_mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, (off_t)off);

	cr_assert_neq(p, MAP_FAILED, "mmap(len %#llx, off %#llx): %s", (unsigned long long)len,
		      (unsigned long long)off, strerror(errno));
	return p;
}

ParameterizedTestParameters(hostmap, owned_by_file)
{
	T_CASES_WITH(GUEST_MEMFD_FLAG_MMAP | GUEST_MEMFD_FLAG_INIT_SHARED, 0);
}

/*
 * Memory belongs to the file, not to a mapping or the fd: a mapping at an
 * offset sees what another wrote, and the data outlives the first mapping
 * and the fd itself while any mapping remains.
 */
ParameterizedTest(struct gm_case *c, hostmap, owned_by_file)
{
	struct gm_env e;
	uint64_t f;
	char *a, *b;

	env_setup_sized(&e, c, 3);
	f = e.folio_size;
	a = map_shared(e.gmem, e.size, 0);
	a[0] = 1;
	a[f] = 2;
	a[f + f / 2] = 3;
	a[2 * f + 5] = 4;

	b = map_shared(e.gmem, 2 * f, f);
	cr_expect_eq(b[0], 2, "mapping at an offset");
	cr_expect_eq(b[f / 2], 3);
	cr_expect_eq(b[f + 5], 4);
	b[1] = 5;
	cr_expect_eq(a[f + 1], 5, "write through one mapping, read through another");
	expect_host_mappings(e.gmem, 2);

	cr_expect_eq(sys_munmap(a, e.size), 0);
	cr_expect_eq(b[0], 2, "data survives munmap of another mapping");
	expect_host_mappings(e.gmem, 1);

	cr_expect_eq(sys_close(e.gmem), 0);
	e.gmem = -1;
	cr_expect_eq(b[f / 2], 3, "data survives close of the fd");
	b[f + 6] = 6;
	cr_expect_eq(b[f + 6], 6, "the mapping stays writable after close");
	cr_expect_not(t_access_sigbus(b + 2 * f - 1, true));
	cr_expect_eq(sys_munmap(b, 2 * f), 0);
	t_env_teardown(&e);
}

ParameterizedTestParameters(hostmap, partial_munmap)
{
	T_CASES_WITH(GUEST_MEMFD_FLAG_MMAP, 0);
}

/* Unmapping part of a mapping leaves the rest as it was, shared or private. */
ParameterizedTest(struct gm_case *c, hostmap, partial_munmap)
{
	bool shared = c->flags & GUEST_MEMFD_FLAG_INIT_SHARED;
	struct gm_env e;
	uint64_t f;
	char *p;

	env_setup_sized(&e, c, 4);
	f = e.folio_size;
	p = map_shared(e.gmem, e.size, 0);
	if (shared)
		for (int i = 0; i < 4; i++)
			p[i * f + 7] = (char)(0x40 + i);

	cr_assert_eq(sys_munmap(p + f, f), 0, "%s", strerror(errno));
	expect_host_mappings(e.gmem, 2);
	cr_assert_eq(sys_munmap(p + 3 * f, f), 0, "%s", strerror(errno));
	expect_host_mappings(e.gmem, 2);
	for (int i = 0; i < 3; i += 2) {
		char *q = p + i * f;

		cr_expect_eq(t_access_sigbus(q + f - 1, true), !shared, "folio %d", i);
		if (shared) {
			cr_expect_eq(q[7], (char)(0x40 + i), "folio %d after partial munmap", i);
			q[8] = 9;
		}
	}
	/* What was unmapped from one mapping is still in the file. */
	if (shared) {
		char *q = map_shared(e.gmem, f, f);

		cr_expect_eq(q[7], 0x41, "unmapped folio keeps its data in the file");
		cr_expect_eq(sys_munmap(q, f), 0);
	}
	cr_assert_eq(sys_munmap(p, f), 0);
	expect_host_mappings(e.gmem, 1);
	cr_expect_eq(t_access_sigbus(p + 2 * f, false), !shared);
	cr_assert_eq(sys_munmap(p + 2 * f, f), 0);
	expect_host_mappings(e.gmem, 0);
	t_env_teardown(&e);
}

ParameterizedTestParameters(hostmap, past_eof)
{
	T_CASES_WITH(GUEST_MEMFD_FLAG_MMAP, 0);
}

/* A mapping may start or run past the end; touching that part raises SIGBUS. */
ParameterizedTest(struct gm_case *c, hostmap, past_eof)
{
	struct gm_env e;
	char *p;

	t_env_setup(&e, c, 0);
	p = map_shared(e.gmem, e.folio_size, e.size);
	cr_expect(t_access_sigbus(p, false), "read of a mapping that starts at EOF");
	cr_expect(t_access_sigbus(p + e.folio_size - 1, true), "write of a mapping past EOF");
	cr_expect_eq(sys_munmap(p, e.folio_size), 0);
	p = map_shared(e.gmem, e.folio_size, 1ULL << 40);
	cr_expect(t_access_sigbus(p, true), "write far past EOF");
	cr_expect_eq(sys_munmap(p, e.folio_size), 0);
	t_env_teardown(&e);
}

ParameterizedTestParameters(hostmap, refused)
{
	return cr_make_param_array(struct gm_case, gm_all_cases, gm_all_cases_nr);
}

#define expect_mmap_err(addr, len, prot, flags, fd, off, err)                                  \
	do {                                                                                   \
		errno = 0;                                                                     \
		void *_p = sys_mmap((addr), (len), (prot), (flags), (fd), (off));              \
		cr_expect_eq(_p, MAP_FAILED, "mmap %s succeeded", #prot ", " #flags);          \
		cr_expect_eq(errno, (err), "mmap %s: %s, want %s", #prot ", " #flags,          \
			     strerror(errno), strerror(err));                                  \
	} while (0)

/*
 * The refusals, in the kernel's order: mmap(2)'s generic checks, then
 * PROT_EXEC (guest_memfd lives on a noexec filesystem), then no MMAP flag
 * (ENODEV), then a private mapping (EINVAL). A refusal changes nothing: an
 * existing mapping at a MAP_FIXED address keeps its memory.
 */
ParameterizedTest(struct gm_case *c, hostmap, refused)
{
	bool can_map = c->flags & GUEST_MEMFD_FLAG_MMAP;
	bool shared = can_map && (c->flags & GUEST_MEMFD_FLAG_INIT_SHARED);
	const int rw = PROT_READ | PROT_WRITE;
	struct gm_env e;
	char *p = NULL;

	t_env_setup(&e, c, 0);
	if (can_map) {
		p = map_shared(e.gmem, e.size, 0);
		if (shared)
			p[3] = 0x33;
	}
	expect_mmap_err(NULL, 0, rw, MAP_SHARED, e.gmem, 0, EINVAL);
	expect_mmap_err(NULL, e.size, rw, MAP_SHARED, e.gmem, 1, EINVAL);
	expect_mmap_err(NULL, e.size, rw, 0, e.gmem, 0, EINVAL);
	expect_mmap_err(NULL, e.size, rw, MAP_SHARED, e.gmem, -(off_t)PAGE_SIZE, EOVERFLOW);
	expect_mmap_err(NULL, e.size, rw, MAP_SHARED_VALIDATE | MAP_SYNC, e.gmem, 0, EOPNOTSUPP);
	expect_mmap_err(NULL, e.size, rw | PROT_EXEC, MAP_SHARED, e.gmem, 0, EPERM);
	expect_mmap_err(NULL, e.size, PROT_EXEC, MAP_PRIVATE, e.gmem, 0, EPERM);
	if (!can_map) {
		expect_mmap_err(NULL, e.size, rw, MAP_SHARED, e.gmem, 0, ENODEV);
		expect_mmap_err(NULL, e.size, rw, MAP_PRIVATE, e.gmem, 0, ENODEV);
		expect_mmap_err(NULL, e.size, rw, MAP_SHARED_VALIDATE, e.gmem, 0, ENODEV);
		t_env_teardown(&e);
		return;
	}
	expect_mmap_err(NULL, e.size, rw, MAP_PRIVATE, e.gmem, 0, EINVAL);
	expect_mmap_err(NULL, e.size, PROT_READ, MAP_PRIVATE, e.gmem, 0, EINVAL);
	/* Refused before anything is replaced: the mapping at p stays. */
	expect_mmap_err(p, e.size, rw | PROT_EXEC, MAP_SHARED | MAP_FIXED, e.gmem, 0, EPERM);
	expect_mmap_err(p, e.size, rw, MAP_SHARED | MAP_FIXED_NOREPLACE, e.gmem, 0, EEXIST);
	expect_host_mappings(e.gmem, 1);
	if (shared)
		cr_expect_eq(p[3], 0x33, "a refused mmap changed the existing mapping");
	else
		cr_expect(t_access_sigbus(p, false), "private memory after a refused mmap");

	/* MAP_SHARED_VALIDATE is a shared mapping. */
	char *q = sys_mmap(NULL, e.size, rw, MAP_SHARED_VALIDATE, e.gmem, 0);

	cr_assert_neq(q, MAP_FAILED, "MAP_SHARED_VALIDATE: %s", strerror(errno));
	if (shared)
		cr_expect_eq(q[3], 0x33);
	sys_munmap(q, e.size);
	sys_munmap(p, e.size);
	t_env_teardown(&e);
}

ParameterizedTestParameters(hostmap, fixed_over)
{
	T_CASES_WITH(GUEST_MEMFD_FLAG_MMAP | GUEST_MEMFD_FLAG_INIT_SHARED, 0);
}

/* A MAP_FIXED mapping over part of another replaces that part only. */
ParameterizedTest(struct gm_case *c, hostmap, fixed_over)
{
	struct gm_env e;
	uint64_t f;
	char *p, *q;

	t_env_setup(&e, c, 0);
	f = e.folio_size;
	p = map_shared(e.gmem, e.size, 0);
	p[0] = 0x10;
	p[f] = 0x11;
	q = sys_mmap(p, f, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, e.gmem, (off_t)f);
	cr_assert_eq(q, p, "MAP_FIXED: %s", strerror(errno));
	cr_expect_eq(p[0], 0x11, "the fixed mapping shows folio 1");
	cr_expect_eq(p[f], 0x11, "the rest of the old mapping still shows folio 1");
	p[1] = 0x22;
	cr_expect_eq(p[f + 1], 0x22);
	expect_host_mappings(e.gmem, 2);

	/* An anonymous mapping over all of it leaves no mapping of the file. */
	q = sys_mmap(p, e.size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED,
		     -1, 0);
	cr_assert_eq(q, p, "anonymous MAP_FIXED: %s", strerror(errno));
	cr_expect_eq(p[f + 1], 0);
	expect_host_mappings(e.gmem, 0);
	sys_munmap(p, e.size);
	t_env_teardown(&e);
}
