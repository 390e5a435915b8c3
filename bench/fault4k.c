/* Figure 1: first-touch fault-in of 1 GiB through a host mapping of a 4 KiB guest_memfd. */
#include "bench.h"

int main(void)
{
	struct peer lib, kern, mfd;
	struct peer *peers[3] = { &lib, &kern, &mfd };
	const uint64_t size = 1 * GiB;
	int reps = bench_reps(7), npeers = 3;
	double *cpu, *wall;

	emit_figure("1", "fault-in 1 GiB, 4K (one write per page)");
	peer_libgmem(&lib, GM_GUEST_MEMFD_FOLIO_4K);
	peer_memfd(&mfd, 0);
	if (peer_kernel(&kern) < 0) {
		/* Without the peer there is no ratio; the floor is still worth a row. */
		note("fault4k: no kernel guest_memfd: %s\n", strerror(errno));
		peers[1] = &mfd;
		npeers = 2;
	}
	cpu = calloc((size_t)(3 * reps), sizeof(*cpu));
	wall = calloc((size_t)(3 * reps), sizeof(*wall));
	if (!cpu || !wall)
		die("out of memory");
	note("fault4k: %d reps of 1 GiB on %d peers\n", reps, npeers);
	run_rotated(peers, npeers, reps, size, measure_first_touch, cpu, wall);
	for (int i = 0; i < npeers; i++)
		emit_timed_result("1", peers[i]->name, cpu + i * reps, wall + i * reps, reps);
	if (npeers == 2) {
		emit_skip("1", "libgmem/kernel", "<=", 1.2, "no kernel guest_memfd on this host");
		return 0;
	}
	emit_timed_target("1", "libgmem/kernel", cpu, wall, cpu + reps, wall + reps, reps, "<=",
			  1.2);
	return 0;
}
