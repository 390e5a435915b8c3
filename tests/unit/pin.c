/* DMA pins and the library's own mappings of guest memory: what they let the VMM reach. */
#include <signal.h>
#include <stdio.h>
#include <sys/wait.h>

#include "unit/vmm.h"

#define PAGE 4096ULL
#define PRIVATE KVM_MEMORY_ATTRIBUTE_PRIVATE

static int convert(int gmem, uint64_t offset, uint64_t size, uint64_t attrs)
{
	struct kvm_memory_attributes2 a = { .offset = offset, .size = size, .attributes = attrs };

	return gm_ioctl(gmem, KVM_SET_MEMORY_ATTRIBUTES2, &a) ? errno : 0;
}

static uint64_t allocated_bytes(int gmem)
{
	struct gm_gmem_info info;

	cr_assert_eq(gm_gmem_info(gmem, &info), 0);
	return info.allocated_bytes;
}

/* A SW_PROTECTED VM with one all-shared, mappable guest_memfd of npages. */
static int shared_gmem(struct vmm *m, uint64_t npages)
{
	vmm_init(m, KVM_X86_SW_PROTECTED_VM);
	return vmm_gmem(m, npages * PAGE, GUEST_MEMFD_FLAG_MMAP | GUEST_MEMFD_FLAG_INIT_SHARED);
}

Test(pin, bad_dma_pointer_is_efault_and_leaves_no_pin)
{
	struct vmm m;
	int gmem = shared_gmem(&m, 16);
	char *ro = mmap(NULL, PAGE, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	char *gone = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	void **bad[] = { (void **)1, (void **)gone, (void **)ro };
	uint64_t before = allocated_bytes(gmem);

	cr_assert_neq(ro, MAP_FAILED);
	cr_assert_neq(gone, MAP_FAILED);
	munmap(gone, PAGE);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		cr_expect_eq(gm_gmem_pin(gmem, 4 * PAGE, 2 * PAGE, bad[i]), -EFAULT, "pointer %zu", i);
		/* No pin: nothing to drop, and the pages convert. */
		cr_expect_eq(gm_gmem_unpin(gmem, 4 * PAGE, 2 * PAGE), -ENOENT, "pointer %zu", i);
	}
	cr_expect_eq(allocated_bytes(gmem), before, "a refused pin allocated memory");
	cr_expect_eq(convert(gmem, 4 * PAGE, 2 * PAGE, PRIVATE), 0);
	munmap(ro, PAGE);
	gm_close(gmem);
	vmm_destroy(&m);
}

Test(pin, dma_reaches_the_pinned_pages_only_while_pinned)
{
	struct vmm m;
	int gmem = shared_gmem(&m, 16);
	char *host = gm_mmap(NULL, 16 * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, gmem, 0);
	char *dma = NULL;

	cr_assert_neq(host, MAP_FAILED);
	for (int i = 0; i < 16; i++)
		host[i * PAGE] = (char)('a' + i);
	cr_assert_eq(gm_gmem_pin(gmem, 5 * PAGE, 2 * PAGE, (void **)&dma), 0);
	cr_expect_eq(dma[0], 'f');
	cr_expect_eq(dma[PAGE], 'g');
	dma[PAGE + 1] = 'D';
	cr_expect_eq(host[6 * PAGE + 1], 'D', "the device and the host see different pages");

	/* The neighbours, private or not, are out of the device's reach. */
	cr_assert_eq(convert(gmem, 0, 5 * PAGE, PRIVATE), 0);
	cr_assert_eq(convert(gmem, 7 * PAGE, 9 * PAGE, PRIVATE), 0);
	cr_expect(t_read_faults(dma - 1), "the page before the pin is reachable");
	cr_expect(t_read_faults(dma - PAGE), "the page before the pin is reachable");
	cr_expect(t_read_faults(dma + 2 * PAGE), "the page after the pin is reachable");
	cr_expect(t_read_faults(dma + 2 * PAGE + PAGE - 1), "the page after the pin is reachable");

	/* Unpinned, the pages may become private: the device has lost them first. */
	cr_assert_eq(gm_gmem_unpin(gmem, 5 * PAGE, 2 * PAGE), 0);
	cr_expect(t_read_faults(dma), "the pin's address still works after unpin");
	cr_expect(t_read_faults(dma + PAGE), "the pin's address still works after unpin");
	cr_assert_eq(convert(gmem, 5 * PAGE, 2 * PAGE, PRIVATE), 0);
	cr_expect(t_read_faults(dma + PAGE));
	gm_munmap(host, 16 * PAGE);
	gm_close(gmem);
	vmm_destroy(&m);
}

/* A pin that the file outlives not: closing the file takes the device's mapping too. */
Test(pin, closing_the_file_unmaps_its_pins)
{
	struct vmm m;
	int gmem = shared_gmem(&m, 4);
	char *dma = NULL;

	cr_assert_eq(gm_gmem_pin(gmem, PAGE, PAGE, (void **)&dma), 0);
	dma[0] = 1;
	gm_close(gmem);
	cr_expect(t_read_faults(dma));
	vmm_destroy(&m);
}

/*
 * Every mapping whose path names the store: start and end, and whether its
 * VmFlags have dd (MADV_DONTDUMP) and dc (MADV_DONTFORK). Returns how many.
 */
static int store_mappings(uintptr_t (*out)[2], bool *flags_ok, int max)
{
	FILE *f = fopen("/proc/self/smaps", "r");
	char line[512];
	int n = 0;
	bool in_store = false;

	cr_assert(f);
	while (fgets(line, sizeof(line), f)) {
		unsigned long start, end;
		char perms[8];

		if (sscanf(line, "%lx-%lx %7s", &start, &end, perms) == 3) {
			in_store = (strstr(line, "kvm-gmem-backing") || strstr(line, "kvm-gmem-split")) &&
				   n < max;
			if (in_store) {
				out[n][0] = start;
				out[n][1] = end;
				flags_ok[n++] = false;
			}
		} else if (in_store && !strncmp(line, "VmFlags:", 8)) {
			flags_ok[n - 1] = strstr(line, " dd") && strstr(line, " dc");
		}
	}
	fclose(f);
	return n;
}

static bool within(uintptr_t a, const char *p, size_t len)
{
	return a >= (uintptr_t)p && a < (uintptr_t)p + len;
}

Test(pin, library_mappings_reach_no_child_and_no_core_dump)
{
	struct vmm m;
	int gmem = shared_gmem(&m, 16);
	char *host = gm_mmap(NULL, 16 * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, gmem, 0);
	uintptr_t maps[64][2];
	bool ok[64];
	char *dma = NULL;
	int n, checked = 0;

	cr_assert_neq(host, MAP_FAILED);
	memset(host, 's', 16 * PAGE);
	cr_assert_eq(gm_gmem_pin(gmem, 2 * PAGE, PAGE, (void **)&dma), 0);
	n = store_mappings(maps, ok, 64);
	for (int i = 0; i < n; i++) {
		/* The VMM's own gm_mmap mapping is the VMM's to dump. */
		if (within(maps[i][0], host, 16 * PAGE))
			continue;
		checked++;
		cr_expect(ok[i], "library mapping %#lx-%#lx lacks dd/dc", (unsigned long)maps[i][0],
			  (unsigned long)maps[i][1]);
	}
	cr_expect_geq(checked, 2, "expected the store's mapping and the pin's, saw %d", checked);

	/* Made private after the fork, a page must not be readable in the child. */
	pid_t pid = fork();

	cr_assert_geq(pid, 0);
	if (pid == 0) {
		/* Die of the fault itself, not of a sanitizer's report of it. */
		signal(SIGSEGV, SIG_DFL);
		signal(SIGBUS, SIG_DFL);
		(void)*(volatile char *)dma;
		for (int i = 0; i < n; i++)
			if (!within(maps[i][0], host, 16 * PAGE))
				(void)*(volatile char *)(maps[i][0] + 5 * PAGE);
		_exit(0);
	}
	cr_assert_eq(convert(gmem, 5 * PAGE, PAGE, PRIVATE), 0);
	int status;

	cr_assert_eq(waitpid(pid, &status, 0), pid);
	cr_expect(WIFSIGNALED(status) && WTERMSIG(status) == SIGSEGV,
		  "the child read the library's mappings (status %#x)", status);
	cr_assert_eq(gm_gmem_unpin(gmem, 2 * PAGE, PAGE), 0);
	gm_munmap(host, 16 * PAGE);
	gm_close(gmem);
	vmm_destroy(&m);
}
