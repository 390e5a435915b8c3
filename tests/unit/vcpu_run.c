/* KVM_RUN on the caller's thread: where the guest runs, signals and immediate_exit, teardown. */
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <sys/syscall.h>

#include "unit/vmm.h"

#define MEM_GPA 0x100000000ULL
#define MEM_SIZE (2ULL << 20)
#define STOP_GPA (MEM_GPA + 8)
#define STARTED_GPA (MEM_GPA + 16)

/* Reports the thread it runs on. */
static void guest_report_tid(struct gm_guest *g, void *arg)
{
	gm_guest_ucall(g, GM_UCALL_DONE, 1, (uint64_t)syscall(SYS_gettid));
	gm_guest_ucall(g, GM_UCALL_DONE, 1, (uint64_t)syscall(SYS_gettid));
}

struct tid_run {
	struct vmm *m;
	pid_t tid, guest_tid;
};

static void *run_on_other_thread(void *arg)
{
	struct tid_run *r = arg;
	struct gm_ucall uc;

	r->tid = (pid_t)syscall(SYS_gettid);
	if (gm_ioctl(r->m->vcpu, KVM_RUN, 0) == 0 && gm_vcpu_get_ucall(r->m->vcpu, &uc) == 0)
		r->guest_tid = (pid_t)uc.args[0];
	return NULL;
}

/* The guest runs on whichever thread calls KVM_RUN, and resumes there where it left. */
Test(vcpu_run, guest_runs_on_the_calling_thread)
{
	struct vmm m;
	struct tid_run r = { .m = &m };
	pthread_t t;

	vmm_init(&m, KVM_X86_SW_PROTECTED_VM);
	vmm_vcpu(&m, 0, guest_report_tid, NULL);
	cr_expect_eq((pid_t)vmm_expect_ucall(&m, GM_UCALL_DONE), (pid_t)syscall(SYS_gettid));
	cr_assert_eq(pthread_create(&t, NULL, run_on_other_thread, &r), 0);
	pthread_join(t, NULL);
	cr_expect_neq(r.tid, (pid_t)syscall(SYS_gettid));
	cr_expect_eq(r.guest_tid, r.tid);
	vmm_destroy(&m);
}

static _Atomic(struct kvm_run *) kicked_run;

/* How VMMs kick a vCPU: the handler only sets immediate_exit. */
static void kick_handler(int sig)
{
	struct kvm_run *run = atomic_load(&kicked_run);

	if (run)
		__atomic_store_n(&run->immediate_exit, 1, __ATOMIC_RELAXED);
}

/* Reads guest memory until the VMM writes a stop word, counting its reads. */
static void guest_spin(struct gm_guest *g, void *arg)
{
	uint64_t reads = 0;

	gm_guest_write64(g, STARTED_GPA, 1);
	while (!gm_guest_read64(g, STOP_GPA))
		reads++;
	gm_guest_ucall(g, GM_UCALL_DONE, 1, reads);
}

struct kicker {
	pthread_t target;
	volatile uint64_t *started; /* the guest's word: it runs once this is set */
	atomic_bool stop;
};

static void *kick_until_stopped(void *arg)
{
	struct kicker *k = arg;

	/* Kicks while the guest runs, not before KVM_RUN (that is immediate_exit_before_run). */
	while (!*k->started)
		usleep(100);
	while (!atomic_load(&k->stop)) {
		pthread_kill(k->target, SIGUSR1);
		usleep(1000);
	}
	return NULL;
}

/* A signal whose handler sets immediate_exit ends KVM_RUN with EINTR; clearing it resumes the guest. */
Test(vcpu_run, signal_kicks_a_looping_guest, .timeout = 20)
{
	struct sigaction sa = { .sa_handler = kick_handler };
	struct kicker k = { .target = pthread_self() };
	struct vmm m;
	pthread_t t;

	vmm_init(&m, KVM_X86_SW_PROTECTED_VM);
	int gmem = vmm_gmem(&m, MEM_SIZE, GUEST_MEMFD_FLAG_MMAP | GUEST_MEMFD_FLAG_INIT_SHARED);
	uint64_t *host = gm_mmap(NULL, MEM_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, gmem, 0);

	cr_assert_neq(host, MAP_FAILED);
	cr_assert_eq(vmm_set_slot(&m, 0, MEM_GPA, MEM_SIZE, gmem, 0), 0);
	vmm_vcpu(&m, 0, guest_spin, NULL);
	atomic_store(&kicked_run, m.run);
	cr_assert_eq(sigaction(SIGUSR1, &sa, NULL), 0);
	k.started = &host[2]; /* STARTED_GPA */
	cr_assert_eq(pthread_create(&t, NULL, kick_until_stopped, &k), 0);

	/* The guest never exits on its own: only the kick ends this KVM_RUN. */
	cr_expect_eq(vmm_run(&m), EINTR);
	cr_expect_eq(m.run->exit_reason, KVM_EXIT_INTR);
	atomic_store(&k.stop, true);
	pthread_join(t, NULL);

	/* Still set: the next KVM_RUN returns at once. */
	cr_expect_eq(vmm_run(&m), EINTR);
	m.run->immediate_exit = 0;
	host[1] = 1; /* STOP_GPA */
	/* The kick may land before the first read is done: the count can be 0. */
	vmm_expect_ucall(&m, GM_UCALL_DONE);
	signal(SIGUSR1, SIG_DFL);
	gm_munmap(host, MEM_SIZE);
	gm_close(gmem);
	vmm_destroy(&m);
}

static void guest_ucall_twice(struct gm_guest *g, void *arg)
{
	gm_guest_ucall(g, GM_UCALL_DONE, 1, 1);
	gm_guest_ucall(g, GM_UCALL_DONE, 1, 2);
}

/* immediate_exit set before KVM_RUN: EINTR at once, the guest does not run, exit_reason stays. */
Test(vcpu_run, immediate_exit_before_run)
{
	struct vmm m;

	vmm_init(&m, KVM_X86_SW_PROTECTED_VM);
	vmm_vcpu(&m, 0, guest_ucall_twice, NULL);
	m.run->exit_reason = KVM_EXIT_UNKNOWN;
	m.run->immediate_exit = 1;
	cr_expect_eq(vmm_run(&m), EINTR);
	cr_expect_eq(m.run->exit_reason, KVM_EXIT_UNKNOWN);
	m.run->immediate_exit = 0;
	cr_expect_eq(vmm_expect_ucall(&m, GM_UCALL_DONE), 1);
	/* Set between two exits: the guest leaves before its next accessor call. */
	m.run->immediate_exit = 1;
	cr_expect_eq(vmm_run(&m), EINTR);
	m.run->immediate_exit = 0;
	cr_expect_eq(vmm_expect_ucall(&m, GM_UCALL_DONE), 2);
	vmm_destroy(&m);
}

/* Lines of /proc/self/maps: a vCPU's stack is one mapping (with its guard page, two). */
static int count_mappings(void)
{
	FILE *f = fopen("/proc/self/maps", "r");
	int n = 0, c;

	cr_assert_not_null(f);
	while ((c = fgetc(f)) != EOF)
		n += c == '\n';
	fclose(f);
	return n;
}

/* Closing vCPUs whose guests stopped mid-function gives back their stacks and everything else. */
Test(vcpu_run, teardown_of_a_suspended_guest_leaks_nothing)
{
	struct gm_stats before, after;
	struct vmm m;

	vmm_init(&m, KVM_X86_SW_PROTECTED_VM);
	/* Settle one-time allocations (the first vCPU registers membarrier, the first fd...). */
	vmm_vcpu(&m, 0, guest_ucall_twice, NULL);
	cr_expect_eq(vmm_expect_ucall(&m, GM_UCALL_DONE), 1);
	int maps = count_mappings();

	cr_assert_eq(gm_stats(&before), 0);
	for (unsigned long id = 1; id <= 16; id++) {
		int fd = vmm_vcpu(&m, id, guest_ucall_twice, NULL);

		cr_assert_eq(gm_ioctl(fd, KVM_RUN, 0), 0);
		cr_expect_gt(count_mappings(), maps);
		gm_close(fd);
	}
	cr_assert_eq(gm_stats(&after), 0);
	cr_expect_eq(count_mappings(), maps);
	cr_expect_eq(after.metadata_bytes, before.metadata_bytes);
	cr_expect_eq(after.open_fds, before.open_fds);
	vmm_destroy(&m);
}

/* Recurses until depth frames deep: far deeper than the guest's stack. */
static uint64_t recurse(struct gm_guest *g, uint64_t depth)
{
	volatile char frame[4096];

	frame[0] = (char)depth;
	if (!depth)
		return frame[0];
	return recurse(g, depth - 1) + frame[0];
}

static void guest_recurse(struct gm_guest *g, void *arg)
{
	gm_guest_ucall(g, GM_UCALL_DONE, 1, recurse(g, 1ULL << 20));
}

#if defined(__SANITIZE_ADDRESS__)
#define STACK_OVERFLOW_ENDS .exit_code = 1 /* AddressSanitizer reports the overflow and exits */
#else
#define STACK_OVERFLOW_ENDS .signal = SIGSEGV
#endif

/* A guest that overflows its stack hits the guard page, not the memory below. */
Test(vcpu_run, stack_overflow_hits_the_guard_page, STACK_OVERFLOW_ENDS)
{
	struct vmm m;

	vmm_init(&m, KVM_X86_SW_PROTECTED_VM);
	vmm_vcpu(&m, 0, guest_recurse, NULL);
	vmm_run(&m);
}
