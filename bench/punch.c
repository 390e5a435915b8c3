/* Figure 2: punch-hole of 1 GiB of a fully allocated 4 KiB guest_memfd. */
#include "bench.h"

/*
 * A punch of memory that was never there would measure nothing. The kernel's
 * guest_memfd reports no st_blocks (its peer has no fstat): its fallocate is
 * the reference, taken at its word.
 */
static void check_allocated(struct peer *p, int fd, uint64_t size)
{
	struct stat st;

	if (!p->fstat)
		return;
	if (p->fstat(fd, &st) < 0)
		die("%s: fstat: %s", p->name, strerror(errno));
	if ((uint64_t)st.st_blocks * 512 < size)
		die("%s: only %llu of %llu bytes allocated", p->name,
		    (unsigned long long)st.st_blocks * 512, (unsigned long long)size);
}

static struct timing time_punch(struct peer *p, int fd, uint64_t size)
{
	struct stopwatch sw;

	stopwatch_start(&sw);
	if (p->falloc(fd, FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE, 0, (off_t)size) < 0)
		die("%s: punch-hole: %s", p->name, strerror(errno));
	return stopwatch_stop(&sw);
}

/* Allocated by fallocate: no page is mapped anywhere. */
static struct timing punch_allocated(struct peer *p, uint64_t size)
{
	int fd = p->create(p, size);
	struct timing t;

	if (fd < 0)
		die("%s: create: %s", p->name, strerror(errno));
	if (p->falloc(fd, FALLOC_FL_KEEP_SIZE, 0, (off_t)size) < 0)
		die("%s: fallocate: %s", p->name, strerror(errno));
	check_allocated(p, fd, size);
	t = time_punch(p, fd, size);
	p->close(fd);
	return t;
}

/* Allocated by touching it through a host mapping: the punch must also zap the mapping. */
static struct timing punch_mapped(struct peer *p, uint64_t size)
{
	int fd = p->create(p, size);
	void *m;
	struct timing t;

	if (fd < 0)
		die("%s: create: %s", p->name, strerror(errno));
	m = p->map(fd, size);
	if (m == MAP_FAILED)
		die("%s: mmap: %s", p->name, strerror(errno));
	touch_pages(m, size);
	check_allocated(p, fd, size);
	t = time_punch(p, fd, size);
	p->unmap(m, size);
	p->close(fd);
	return t;
}

int main(void)
{
	struct peer lib, kern, mfd, *peers[3];
	const uint64_t size = 1 * GiB;
	int reps = bench_reps(7), npeers = peers_4k(peers, &lib, &kern, &mfd, "punch");
	double *cpu = alloc_samples(reps), *wall = alloc_samples(reps);

	emit_figure("2", "punch-hole 1 GiB, 4K, fully allocated by fallocate");
	note("punch: %d reps of 1 GiB on %d peers, fallocated\n", reps, npeers);
	run_rotated(peers, npeers, reps, size, punch_allocated, cpu, wall);
	for (int i = 0; i < npeers; i++)
		emit_timed_result("2", peers[i]->name, cpu + i * reps, wall + i * reps, reps);
	emit_kernel_target("2", cpu, wall, reps, npeers, 1.2);

	emit_figure("2b", "punch-hole 1 GiB, 4K, allocated by touch via host mapping");
	note("punch: %d reps of 1 GiB on %d peers, touched through a mapping\n", reps, npeers);
	run_rotated(peers, npeers, reps, size, punch_mapped, cpu, wall);
	for (int i = 0; i < npeers; i++)
		emit_timed_result("2b", peers[i]->name, cpu + i * reps, wall + i * reps, reps);
	if (npeers == 3) {
		char text[64];

		snprintf(text, sizeof(text), "no target; CPU time, best of %d", reps);
		emit_info("2b", "libgmem/kernel", best(cpu, reps) / best(cpu + reps, reps), text);
	}
	return 0;
}
