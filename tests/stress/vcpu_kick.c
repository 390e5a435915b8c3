/*
 * Soft vCPUs on the caller's thread, kicked as VMMs kick them: several VMM
 * threads run their vCPUs while a kicker signals them at random; each kick
 * must end KVM_RUN with EINTR/KVM_EXIT_INTR, and the guest must resume where
 * it left. Runs under every build, ThreadSanitizer's included.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <gmem/gmem.h>

#include "stress/check.h"

#define NR_VCPUS 3
#define MEM_GPA 0x100000000ULL
#define MEM_SIZE (2ULL << 20)
#define KICKS 20    /* each guest runs until its VMM thread has seen this many kicks */
#define STOP_WORD 8 /* byte offset in each vCPU's page: the VMM sets it to stop the guest */

static __thread struct kvm_run *my_run;

static void kick_handler(int sig)
{
	if (my_run)
		__atomic_store_n(&my_run->immediate_exit, 1, __ATOMIC_RELAXED);
}

/* Writes and reads its own word, and reports each step: kicks must lose no step and repeat none. */
static void guest_count(struct gm_guest *g, void *arg)
{
	uint64_t gpa = MEM_GPA + (uintptr_t)arg * 4096;

	for (uint64_t i = 1; !gm_guest_read64(g, gpa + STOP_WORD); i++) {
		gm_guest_write64(g, gpa, i);
		gm_guest_ucall(g, GM_UCALL_SYNC, 1, gm_guest_read64(g, gpa));
	}
}

struct runner {
	int vm, vcpu, id;
	volatile uint64_t *stop;    /* the guest's stop word, through the VMM's mapping */
	pthread_t thread;
	atomic_bool running, done;
	uint64_t kicks, steps;
	char failure[128];
};

static void *run_vcpu(void *arg)
{
	struct runner *r = arg;
	struct kvm_run *run = gm_mmap(NULL, 3 * 4096, PROT_READ | PROT_WRITE, MAP_SHARED, r->vcpu, 0);
	uint64_t expect = 1;

	if (run == MAP_FAILED) {
		snprintf(r->failure, sizeof(r->failure), "mmap run: %s", strerror(errno));
		return NULL;
	}
	my_run = run;
	atomic_store(&r->running, true);
	for (;;) {
		struct gm_ucall uc;

		if (gm_ioctl(r->vcpu, KVM_RUN, 0)) {
			if (errno != EINTR) {
				snprintf(r->failure, sizeof(r->failure), "KVM_RUN: %s", strerror(errno));
				break;
			}
			/* A kick: clear it, as VMMs do, and run again. */
			r->kicks++;
			__atomic_store_n(&run->immediate_exit, 0, __ATOMIC_RELAXED);
			continue;
		}
		if (run->exit_reason == KVM_EXIT_HLT)
			break;
		if (run->exit_reason != KVM_EXIT_IO || gm_vcpu_get_ucall(r->vcpu, &uc) ||
		    uc.args[0] != expect) {
			snprintf(r->failure, sizeof(r->failure), "exit %u: step %llu expected",
				 run->exit_reason, (unsigned long long)expect);
			break;
		}
		expect++;
		r->steps++;
		if (r->kicks >= KICKS)
			*r->stop = 1;
	}
	my_run = NULL;
	atomic_store(&r->running, false);
	atomic_store(&r->done, true);
	gm_munmap(run, 3 * 4096);
	return NULL;
}

int main(void)
{
	struct sigaction sa = { .sa_handler = kick_handler };
	struct runner runners[NR_VCPUS] = { 0 };
	struct kvm_create_guest_memfd c = {
		.size = MEM_SIZE, .flags = GUEST_MEMFD_FLAG_MMAP | GUEST_MEMFD_FLAG_INIT_SHARED,
	};
	int kvm = gm_open_kvm(), vm, gmem;
	uint64_t kicks = 0, sent = 0;
	char *mem;

	REQUIRE(kvm >= 0, "open: %s", strerror(errno));
	vm = gm_ioctl(kvm, KVM_CREATE_VM, KVM_X86_SW_PROTECTED_VM | GM_VM_BACKEND_SOFT);
	REQUIRE(vm >= 0, "KVM_CREATE_VM: %s", strerror(errno));
	gmem = gm_ioctl(vm, KVM_CREATE_GUEST_MEMFD, &c);
	REQUIRE(gmem >= 0, "guest_memfd: %s", strerror(errno));
	struct kvm_userspace_memory_region2 r = {
		.flags = KVM_MEM_GUEST_MEMFD, .guest_phys_addr = MEM_GPA, .memory_size = MEM_SIZE,
		.guest_memfd = (uint32_t)gmem,
	};
	REQUIRE(gm_ioctl(vm, KVM_SET_USER_MEMORY_REGION2, &r) == 0, "slot: %s", strerror(errno));
	mem = gm_mmap(NULL, MEM_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, gmem, 0);
	REQUIRE(mem != MAP_FAILED, "mmap: %s", strerror(errno));
	REQUIRE(sigaction(SIGUSR1, &sa, NULL) == 0, "sigaction");
	for (int i = 0; i < NR_VCPUS; i++) {
		runners[i].id = i;
		runners[i].stop = (volatile uint64_t *)(mem + i * 4096 + STOP_WORD);
		runners[i].vcpu = gm_ioctl(vm, KVM_CREATE_VCPU, i);
		REQUIRE(runners[i].vcpu >= 0, "vCPU: %s", strerror(errno));
		REQUIRE(gm_vcpu_set_guest(runners[i].vcpu, guest_count, (void *)(uintptr_t)i) == 0,
			"set guest");
		REQUIRE(pthread_create(&runners[i].thread, NULL, run_vcpu, &runners[i]) == 0, "thread");
	}
	/* Kick the threads until every guest is done; 60 s at most. */
	for (int round = 0; round < 300000; round++) {
		bool all_done = true;

		for (int i = 0; i < NR_VCPUS; i++) {
			if (atomic_load(&runners[i].done))
				continue;
			all_done = false;
			if (atomic_load(&runners[i].running)) {
				pthread_kill(runners[i].thread, SIGUSR1);
				sent++;
			}
		}
		if (all_done)
			break;
		usleep(200);
	}
	for (int i = 0; i < NR_VCPUS; i++) {
		pthread_join(runners[i].thread, NULL);
		CHECK(!runners[i].failure[0], "vCPU %d: %s", i, runners[i].failure);
		CHECK(atomic_load(&runners[i].done), "vCPU %d: still running after 60 s", i);
		CHECK(runners[i].kicks >= KICKS, "vCPU %d: %llu kicks ended KVM_RUN", i,
		      (unsigned long long)runners[i].kicks);
		kicks += runners[i].kicks;
		gm_close(runners[i].vcpu);
	}
	printf("vcpu_kick: %d vCPUs, %llu kicks sent, %llu ended KVM_RUN with EINTR\n", NR_VCPUS,
	       (unsigned long long)sent, (unsigned long long)kicks);
	gm_munmap(mem, MEM_SIZE);
	gm_close(gmem);
	gm_close(vm);
	gm_close(kvm);
	return check_summary("vcpu_kick");
}
