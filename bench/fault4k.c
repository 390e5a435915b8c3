/* Figure 1: first-touch fault-in of 1 GiB through a host mapping of a 4 KiB guest_memfd. */
#include "bench.h"

int main(void)
{
	struct peer lib, kern, mfd, *peers[3];
	const uint64_t size = 1 * GiB;
	int reps = bench_reps(7), npeers;
	double *cpu = alloc_samples(reps), *wall = alloc_samples(reps);

	emit_figure("1", "fault-in 1 GiB, 4K (one write per page)");
	npeers = peers_4k(peers, &lib, &kern, &mfd, "fault4k");
	note("fault4k: %d reps of 1 GiB on %d peers\n", reps, npeers);
	run_rotated(peers, npeers, reps, size, measure_first_touch, cpu, wall);
	for (int i = 0; i < npeers; i++)
		emit_timed_result("1", peers[i]->name, cpu + i * reps, wall + i * reps, reps);
	emit_kernel_target("1", cpu, wall, reps, npeers, 1.2);
	return 0;
}
