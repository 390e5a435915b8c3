/* Concurrency: vCPUs access tagged pages while the host swaps slots and punches holes. */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/falloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <gmem/gmem.h>

#include "harness/process.h"
#include "stress/check.h"

#define PAGES 64
#define REGION (PAGES * 4096ULL)
#define SLOT_GPA 0x40000000ULL
#define NR_VCPUS 2
#define SWAPS 3000
/* Per vCPU, accesses that ran entirely inside one binding: fewer means the test proved little. */
#define MIN_CHECKED 100

/* Which file region the slot maps: 'A' = [0, REGION), 'B' = [REGION, 2 * REGION), 0 = none. */
static _Atomic int bound;
/* Bumped before and after every change of the binding (and the punch that goes with it). */
static _Atomic uint64_t epoch;
static atomic_bool stop;

static uint64_t tag(int region, uint64_t page)
{
	return ((uint64_t)region << 56) | page;
}

struct guest_arg {
	int id;
	uint64_t checked;
};

static void guest_stress(struct gm_guest *g, void *varg)
{
	struct guest_arg *a = varg;
	uint64_t counter = 0;

	while (!atomic_load(&stop)) {
		for (uint64_t p = a->id; p < PAGES; p += NR_VCPUS) {
			uint64_t gpa = SLOT_GPA + p * 4096;
			uint64_t epoch_before = atomic_load(&epoch);
			int region = atomic_load(&bound);
			uint64_t v = gm_guest_read64(g, gpa);
			uint64_t mine = ((uint64_t)a->id << 48) | ++counter;

			gm_guest_write64(g, gpa + 8 + 8 * a->id, mine);
			uint64_t back = gm_guest_read64(g, gpa + 8 + 8 * a->id);

			/* An odd epoch: the host was changing the binding when the accesses began. */
			if ((epoch_before & 1) || atomic_load(&epoch) != epoch_before || !region)
				continue;
			/*
			 * Nothing changed while the accesses ran: the page is the bound region's,
			 * tagged before it was bound, so its tag and this vCPU's write show exactly.
			 */
			a->checked++;
			if (v != tag(region, p)) {
				char what[96];

				snprintf(what, sizeof(what), "page %llu: read %#llx while %c bound",
					 (unsigned long long)p, (unsigned long long)v, region);
				gm_guest_abort(g, __FILE__, __LINE__, what);
			}
			GM_GUEST_ASSERT(g, back == mine);
		}
	}
	gm_guest_ucall(g, GM_UCALL_DONE, 0);
}

struct runner {
	int vcpu;
	struct kvm_run *run;
	char failure[160];
};

/* The VMM's thread for one vCPU: runs it, answers MMIO while the slot is away. */
static void *vcpu_thread(void *arg)
{
	struct runner *r = arg;
	struct gm_ucall uc;

	for (;;) {
		if (gm_ioctl(r->vcpu, KVM_RUN, 0)) {
			snprintf(r->failure, sizeof(r->failure), "KVM_RUN: errno %d exit %u gpa %#llx",
				 errno, r->run->exit_reason,
				 (unsigned long long)r->run->memory_fault.gpa);
			return NULL;
		}
		if (r->run->exit_reason == KVM_EXIT_MMIO) {
			memset(r->run->mmio.data, 0, sizeof(r->run->mmio.data));
			continue;
		}
		gm_vcpu_get_ucall(r->vcpu, &uc);
		if (r->run->exit_reason != KVM_EXIT_IO || uc.cmd == GM_UCALL_ABORT) {
			snprintf(r->failure, sizeof(r->failure), "exit %u: %s", r->run->exit_reason, uc.msg);
			return NULL;
		}
		if (uc.cmd == GM_UCALL_DONE)
			return NULL;
	}
}

static int set_slot(int vm, int gmem, uint64_t size, uint64_t offset)
{
	struct kvm_userspace_memory_region2 r = {
		.slot = 0, .flags = KVM_MEM_GUEST_MEMFD, .guest_phys_addr = SLOT_GPA,
		.memory_size = size, .guest_memfd = (uint32_t)gmem, .guest_memfd_offset = offset,
	};

	return gm_ioctl(vm, KVM_SET_USER_MEMORY_REGION2, &r) ? errno : 0;
}

int main(void)
{
	struct guest_arg args[NR_VCPUS] = { { .id = 0 }, { .id = 1 } };
	struct runner runners[NR_VCPUS];
	pthread_t threads[NR_VCPUS];
	unsigned seed = 7;
	/* The process before the library touched it: what must remain at the end. */
	int fds_before = process_fds(), memfd_maps_before = process_maps("memfd:");
	int kvm = gm_open_kvm();
	int vm = gm_ioctl(kvm, KVM_CREATE_VM, KVM_X86_SW_PROTECTED_VM);
	struct kvm_create_guest_memfd c = {
		.size = 2 * REGION, .flags = GUEST_MEMFD_FLAG_MMAP | GUEST_MEMFD_FLAG_INIT_SHARED,
	};
	int gmem = gm_ioctl(vm, KVM_CREATE_GUEST_MEMFD, &c);
	uint64_t *host = gm_mmap(NULL, 2 * REGION, PROT_READ | PROT_WRITE, MAP_SHARED, gmem, 0);

	SETUP(kvm >= 0 && vm >= 0 && gmem >= 0 && host != MAP_FAILED, "setup: %s", strerror(errno));
	for (uint64_t p = 0; p < PAGES; p++) {
		host[p * 512] = tag('A', p);
		host[(REGION + p * 4096) / 8] = tag('B', p);
	}
	SETUP(set_slot(vm, gmem, REGION, 0) == 0, "bind A");
	atomic_store(&bound, 'A');
	for (int i = 0; i < NR_VCPUS; i++) {
		runners[i] = (struct runner){ .vcpu = gm_ioctl(vm, KVM_CREATE_VCPU, i) };
		SETUP(runners[i].vcpu >= 0, "vcpu %d", i);
		runners[i].run = gm_mmap(NULL, 3 * 4096, PROT_READ | PROT_WRITE, MAP_SHARED,
					 runners[i].vcpu, 0);
		SETUP(gm_vcpu_set_guest(runners[i].vcpu, guest_stress, &args[i]) == 0, "guest");
		SETUP(pthread_create(&threads[i], NULL, vcpu_thread, &runners[i]) == 0, "thread");
	}

	for (int i = 0; i < SWAPS; i++) {
		int next = atomic_load(&bound) == 'A' ? 'B' : 'A';
		uint64_t page = rand_r(&seed) % PAGES;
		uint64_t off = (next == 'A' ? 0 : REGION) + page * 4096;

		/* Unbind, bind the other region, punch a page of it; only then say so. */
		atomic_fetch_add(&epoch, 1);
		atomic_store(&bound, 0);
		SETUP(set_slot(vm, gmem, 0, 0) == 0, "delete slot");
		SETUP(set_slot(vm, gmem, REGION, next == 'A' ? 0 : REGION) == 0, "bind %c", next);
		SETUP(gm_fallocate(gmem, FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE, off, 4096) == 0,
		      "punch");
		host[off / 8] = tag(next, page);
		atomic_store(&bound, next);
		atomic_fetch_add(&epoch, 1);
		/* Let the vCPUs run whole accesses inside this binding. */
		if (i % 16 == 0)
			usleep(100);
	}
	atomic_store(&stop, true);

	uint64_t checked = 0;
	for (int i = 0; i < NR_VCPUS; i++) {
		pthread_join(threads[i], NULL);
		CHECK(!runners[i].failure[0], "vCPU %d: %s", i, runners[i].failure);
		checked += args[i].checked;
		CHECK(args[i].checked >= MIN_CHECKED, "vCPU %d checked only %llu accesses", i,
		      (unsigned long long)args[i].checked);
		gm_munmap(runners[i].run, 3 * 4096);
		gm_close(runners[i].vcpu);
	}
	struct gm_mmu_stats st;
	gm_vm_mmu_stats(vm, &st);
	/* Each access checked in the guest is a check that held (a failed one aborts). */
	check_add_passed(checked);
	CHECK(st.zaps >= SWAPS, "%d slot swaps zapped only %llu leaves", SWAPS,
	      (unsigned long long)st.zaps);
	printf("vcpu_stress: %d swaps; %llu accesses checked; %llu faults, %llu retries, %llu zaps\n",
	       SWAPS, (unsigned long long)checked, (unsigned long long)st.faults,
	       (unsigned long long)st.retries, (unsigned long long)st.zaps);
	gm_munmap(host, 2 * REGION);
	gm_close(gmem);
	gm_close(vm);
	gm_close(kvm);
	struct gm_stats s;
	gm_stats(&s);
	CHECK(s.vms == 0 && s.gmem_files == 0 && s.open_fds == 0, "leaked objects");
	/* Beside the library's counters, the process: the memfd store for empty host mappings
	 * (one fd, one mapping at most) and the process's userfaultfd (one fd) are all the
	 * library keeps for good. */
	CHECK(process_fds() >= 0 && process_fds() <= fds_before + 2, "fds: %d before, %d after",
	      fds_before, process_fds());
	CHECK(process_maps("memfd:") <= memfd_maps_before + 1, "memfd mappings: %d before, %d after",
	      memfd_maps_before, process_maps("memfd:"));
	return check_summary("vcpu_stress");
}
