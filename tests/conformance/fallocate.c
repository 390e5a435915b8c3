/* fallocate on a guest_memfd: the kernel's validation order, end-of-file rules, punch-hole semantics. */
#include "harness/cases.h"

#include <linux/falloc.h>
#include <string.h>

#define KEEP FALLOC_FL_KEEP_SIZE
#define PUNCH (FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE)
#define WRITE_ZEROES 0x80 /* FALLOC_FL_WRITE_ZEROES, 6.17 */

#define expect_falloc(fd, mode, off, len, err)                                             \
	do {                                                                               \
		errno = 0;                                                                 \
		int _r = sys_fallocate((fd), (mode), (off_t)(off), (off_t)(len));          \
		cr_expect_eq(_r ? errno : 0, (err),                                        \
			     "fallocate(mode %#x, off %#llx, len %#llx): %s, want %s",     \
			     (unsigned)(mode), (unsigned long long)(off),                  \
			     (unsigned long long)(len), _r ? strerror(errno) : "success",  \
			     (err) ? strerror(err) : "success");                           \
	} while (0)

/* Modes the VFS refuses whatever the file: unknown bits, or a bad KEEP_SIZE pairing. */
static const int vfs_bad_modes[] = {
	FALLOC_FL_PUNCH_HOLE, 0x04, 0x100, 0xff00, FALLOC_FL_COLLAPSE_RANGE | KEEP,
	FALLOC_FL_INSERT_RANGE | KEEP, WRITE_ZEROES | KEEP, FALLOC_FL_ZERO_RANGE | PUNCH,
	FALLOC_FL_PUNCH_HOLE | FALLOC_FL_COLLAPSE_RANGE | KEEP,
};

/* Modes the VFS passes on to the file but guest_memfd does not implement. */
static const int gmem_bad_modes[] = {
	0, FALLOC_FL_ZERO_RANGE, FALLOC_FL_ZERO_RANGE | KEEP, FALLOC_FL_COLLAPSE_RANGE,
	FALLOC_FL_INSERT_RANGE, FALLOC_FL_UNSHARE_RANGE, FALLOC_FL_UNSHARE_RANGE | KEEP,
	WRITE_ZEROES,
};

#define N(a) (sizeof(a) / sizeof((a)[0]))

ParameterizedTestParameters(fallocate, validation_order)
{
	return cr_make_param_array(struct gm_case, gm_all_cases, gm_all_cases_nr);
}

/*
 * The order, as probed on 6.18: a negative offset or empty range (EINVAL),
 * then the VFS's mode table (EOPNOTSUPP), then a range that wraps (EFBIG),
 * then guest_memfd: KEEP_SIZE alone or with PUNCH_HOLE (EOPNOTSUPP), then
 * alignment (EINVAL), then end of file for allocation (EINVAL).
 */
ParameterizedTest(struct gm_case *c, fallocate, validation_order)
{
	struct gm_env e;
	uint64_t f;

	t_env_setup(&e, c, 0);
	f = e.folio_size;

	expect_falloc(e.gmem, 0xff00, -1, f, EINVAL);
	expect_falloc(e.gmem, 0xff00, 0, 0, EINVAL);
	expect_falloc(e.gmem, PUNCH, f, 0, EINVAL);
	expect_falloc(e.gmem, KEEP, f, -1, EINVAL);
	expect_falloc(e.gmem, FALLOC_FL_PUNCH_HOLE, -f, 1, EINVAL);

	for (size_t i = 0; i < N(vfs_bad_modes); i++) {
		expect_falloc(e.gmem, vfs_bad_modes[i], 1, INT64_MAX, EOPNOTSUPP);
		expect_falloc(e.gmem, vfs_bad_modes[i], 0, f, EOPNOTSUPP);
	}
	for (size_t i = 0; i < N(gmem_bad_modes); i++) {
		/* Wrapping is checked by the VFS, before guest_memfd looks at the mode. */
		expect_falloc(e.gmem, gmem_bad_modes[i], 1, INT64_MAX, EFBIG);
		/* The mode is checked before alignment. */
		expect_falloc(e.gmem, gmem_bad_modes[i], 1, 1, EOPNOTSUPP);
		expect_falloc(e.gmem, gmem_bad_modes[i], 0, f, EOPNOTSUPP);
	}

	expect_falloc(e.gmem, KEEP, 1, INT64_MAX, EFBIG);
	expect_falloc(e.gmem, PUNCH, 1, INT64_MAX, EFBIG);
	expect_falloc(e.gmem, KEEP, 1ULL << 62, 1ULL << 62, EFBIG);
	expect_falloc(e.gmem, PUNCH, 1ULL << 62, 1ULL << 62, EFBIG);
	expect_falloc(e.gmem, KEEP, INT64_MAX & ~(f - 1), f, EFBIG);

	/* Page alignment, and for libgmem's huge folios, folio alignment. */
	for (int mode = KEEP; mode <= PUNCH; mode += PUNCH - KEEP) {
		expect_falloc(e.gmem, mode, 1, f, EINVAL);
		expect_falloc(e.gmem, mode, 0, 1, EINVAL);
		expect_falloc(e.gmem, mode, f, PAGE_SIZE - 1, EINVAL);
		/* Alignment comes before the end-of-file rules. */
		expect_falloc(e.gmem, mode, 100 * f + 1, f, EINVAL);
		if (f > PAGE_SIZE) {
			expect_falloc(e.gmem, mode, PAGE_SIZE, f, EINVAL);
			expect_falloc(e.gmem, mode, 0, PAGE_SIZE, EINVAL);
			expect_falloc(e.gmem, mode, 0, f + PAGE_SIZE, EINVAL);
		}
	}
	t_env_teardown(&e);
}

ParameterizedTestParameters(fallocate, end_of_file)
{
	return cr_make_param_array(struct gm_case, gm_all_cases, gm_all_cases_nr);
}

/* The size never grows: allocating past the end is EINVAL; punching past it is fine. */
ParameterizedTest(struct gm_case *c, fallocate, end_of_file)
{
	struct gm_env e;
	uint64_t f, s;
	struct stat st;

	t_env_setup(&e, c, 0);
	f = e.folio_size;
	s = e.size;

	expect_falloc(e.gmem, KEEP, 0, s + f, EINVAL);
	expect_falloc(e.gmem, KEEP, s, f, EINVAL);
	expect_falloc(e.gmem, KEEP, s - f, 2 * f, EINVAL);
	expect_falloc(e.gmem, KEEP, 1ULL << 40, f, EINVAL);
	expect_falloc(e.gmem, KEEP, (INT64_MAX & ~(f - 1)) - f, f, EINVAL);
	expect_falloc(e.gmem, KEEP, 0, s, 0);
	expect_falloc(e.gmem, KEEP, f, f, 0);
	expect_falloc(e.gmem, KEEP, 0, f, 0);

	expect_falloc(e.gmem, PUNCH, 0, s + 100 * f, 0);
	expect_falloc(e.gmem, PUNCH, s, f, 0);
	expect_falloc(e.gmem, PUNCH, s - f, 2 * f, 0);
	expect_falloc(e.gmem, PUNCH, 1ULL << 40, f, 0);
	expect_falloc(e.gmem, PUNCH, (INT64_MAX & ~(f - 1)) - f, f, 0);

	cr_assert_eq(sys_fstat(e.gmem, &st), 0);
	cr_expect_eq(st.st_size, (off_t)s, "fallocate changed the size");
	t_env_teardown(&e);
}

/* A few bytes of each folio, so huge folios are checked without touching all of them. */
static const uint64_t samples[] = { 0, PAGE_SIZE - 1, PAGE_SIZE, 0 /* mid */, ~0ULL /* last */ };

static uint64_t sample_off(uint64_t folio, size_t i)
{
	if (samples[i] == ~0ULL)
		return folio - 1;
	if (i == 3)
		return folio / 2 + 17;
	return samples[i] < folio ? samples[i] : folio - 1;
}

static void fill_folio(char *p, uint64_t folio, char val)
{
	for (size_t i = 0; i < N(samples); i++)
		p[sample_off(folio, i)] = val;
}

static void expect_folio(const char *p, uint64_t folio, char val, const char *what)
{
	for (size_t i = 0; i < N(samples); i++) {
		uint64_t o = sample_off(folio, i);

		cr_expect_eq(p[o], val, "%s: byte %#llx is %#x, want %#x", what,
			     (unsigned long long)o, (unsigned char)p[o], (unsigned char)val);
	}
}

ParameterizedTestParameters(fallocate, punch_zeroes)
{
	T_CASES_WITH(GUEST_MEMFD_FLAG_MMAP | GUEST_MEMFD_FLAG_INIT_SHARED, 0);
}

/*
 * Punch-hole frees the memory behind a shared, mapped file: the next read
 * through any mapping sees zeros, the rest of the file keeps its data, and
 * the punched range can be written again.
 */
ParameterizedTest(struct gm_case *c, fallocate, punch_zeroes)
{
	struct gm_env e;
	uint64_t f;
	char *p, *q;

	t_env_setup(&e, c, 0);
	f = e.folio_size;
	sys_close(e.gmem);
	e.size = 3 * f;
	e.gmem = t_create_gmem(e.vm, e.size, e.flags);
	p = sys_mmap(NULL, e.size, PROT_READ | PROT_WRITE, MAP_SHARED, e.gmem, 0);
	cr_assert_neq(p, MAP_FAILED, "%s", strerror(errno));
	for (int i = 0; i < 3; i++)
		fill_folio(p + i * f, f, (char)(0xa0 + i));

	cr_assert_eq(sys_fallocate(e.gmem, PUNCH, f, f), 0, "%s", strerror(errno));
	expect_folio(p, f, (char)0xa0, "folio 0 after punching folio 1");
	expect_folio(p + f, f, 0, "punched folio 1");
	expect_folio(p + 2 * f, f, (char)0xa2, "folio 2 after punching folio 1");

	q = sys_mmap(NULL, e.size, PROT_READ, MAP_SHARED, e.gmem, 0);
	cr_assert_neq(q, MAP_FAILED, "%s", strerror(errno));
	expect_folio(q + f, f, 0, "punched folio 1, new mapping");
	expect_folio(q + 2 * f, f, (char)0xa2, "folio 2, new mapping");

	/* The hole is memory again at the next touch, still shared. */
	cr_expect_not(t_access_sigbus(p + f, true), "punched folio is not shared any more");
	fill_folio(p + f, f, (char)0xb1);
	expect_folio(q + f, f, (char)0xb1, "rewritten folio 1");

	/* Punching a range that runs past the end frees what is inside. */
	cr_assert_eq(sys_fallocate(e.gmem, PUNCH, 2 * f, 100 * f), 0, "%s", strerror(errno));
	expect_folio(q + 2 * f, f, 0, "folio 2 punched past EOF");
	expect_folio(q, f, (char)0xa0, "folio 0 untouched");

	/* Allocation does not clear memory that is in use. */
	cr_assert_eq(sys_fallocate(e.gmem, KEEP, 0, e.size), 0, "%s", strerror(errno));
	expect_folio(q, f, (char)0xa0, "folio 0 after allocating the file");
	expect_folio(q + f, f, (char)0xb1, "folio 1 after allocating the file");
	expect_folio(q + 2 * f, f, 0, "folio 2 after allocating the file");

	sys_munmap(q, e.size);
	sys_munmap(p, e.size);
	t_env_teardown(&e);
}

ParameterizedTestParameters(fallocate, punch_keeps_private)
{
	T_CASES_WITH(GUEST_MEMFD_FLAG_MMAP, GUEST_MEMFD_FLAG_INIT_SHARED);
}

/* Punching never changes shared/private: private memory stays out of the host's reach. */
ParameterizedTest(struct gm_case *c, fallocate, punch_keeps_private)
{
	struct gm_env e;
	char *p;

	t_env_setup(&e, c, 0);
	p = sys_mmap(NULL, e.size, PROT_READ | PROT_WRITE, MAP_SHARED, e.gmem, 0);
	cr_assert_neq(p, MAP_FAILED, "%s", strerror(errno));
	cr_expect(t_access_sigbus(p, false), "private memory readable before punch");
	cr_assert_eq(sys_fallocate(e.gmem, KEEP, 0, e.size), 0, "%s", strerror(errno));
	cr_expect(t_access_sigbus(p + e.folio_size, true), "private memory writable after allocate");
	cr_assert_eq(sys_fallocate(e.gmem, PUNCH, 0, e.size), 0, "%s", strerror(errno));
	cr_expect(t_access_sigbus(p, false), "private memory readable after punch");
	cr_expect(t_access_sigbus(p + e.size - 1, true), "private memory writable after punch");
	sys_munmap(p, e.size);
	t_env_teardown(&e);
}
