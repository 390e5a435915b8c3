/*
 * Figure 4: what the library adds, in its own heap, for 4 GiB of fully allocated
 * guest_memfd memory. Both sides pay the host's struct page (64 B per 4 KiB page, 1.5625%):
 * the kernel's guest_memfd for its folios, libgmem for the memfd pages behind the file.
 * The library saves none of that; the figure is its heap on top of it.
 */
#include "bench.h"

/* struct page, paid by the kernel's guest_memfd and by libgmem's memfd alike. */
#define STRUCT_PAGE_BYTES 64.0

static uint64_t metadata_bytes(void)
{
	struct gm_stats st;
	int ret = gm_stats(&st);

	if (ret < 0)
		die("gm_stats: %s", strerror(-ret));
	return st.metadata_bytes;
}

int main(void)
{
	const uint64_t size = 4 * GiB;
	struct gm_gmem_info info;
	uint64_t before, after;
	double held, page_cost, lib_total, pct;
	struct peer lib;
	int fd, ret;

	emit_figure("4", "metadata for 4 GiB 4K gmem, fallocated: struct page (both) + library heap");
	/* Before anything: the VM's own objects count against the file too. */
	before = metadata_bytes();
	peer_libgmem(&lib, GM_GUEST_MEMFD_FOLIO_4K);
	fd = lib.create(&lib, size);
	if (fd < 0)
		die("libgmem: create 4 GiB: %s", strerror(errno));
	note("metadata: fallocate 4 GiB\n");
	if (gm_fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, (off_t)size) < 0)
		die("libgmem: fallocate 4 GiB: %s", strerror(errno));
	ret = gm_gmem_info(fd, &info);
	if (ret < 0)
		die("gm_gmem_info: %s", strerror(-ret));
	if (info.allocated_bytes < size)
		die("libgmem: only %llu of %llu bytes allocated",
		    (unsigned long long)info.allocated_bytes, (unsigned long long)size);
	after = metadata_bytes();
	gm_close(fd);
	gm_close(lib.vm_fd);

	held = (double)(after - before);
	page_cost = (double)(size / PAGE_4K) * STRUCT_PAGE_BYTES;
	pct = 100.0 * held / (double)size;
	lib_total = page_cost + held;
	emit_result("4", "libgmem", "bytes", &lib_total, 1);
	emit_result("4", "kernel", "bytes", &page_cost, 1);
	/* The target is on the library's own share only: the rest is the same on both sides. */
	emit_target("4", "percent of 4 GiB", pct, "<", 0.05,
		    "libgmem = host struct page (64 B / 4 KiB, computed, paid by its memfd as by "
		    "the kernel's guest_memfd) + the library's heap; the target is the heap alone");
	return 0;
}
