/* The host's /dev/kvm: VMs, guest_memfd files, slots and vCPU runs for the kvm backend. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "kvm/host.h"

static pthread_once_t host_once = PTHREAD_ONCE_INIT;
static int host_fd = -ENODEV;
static bool needs_view;

static bool sysfs_says_yes(const char *path)
{
	char buf[8] = { 0 };
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	bool yes;

	if (fd < 0)
		return false;
	yes = read(fd, buf, sizeof(buf) - 1) > 0 && (buf[0] == 'Y' || buf[0] == '1');
	close(fd);
	return yes;
}

static void host_init(void)
{
	const char *env = getenv("GMEM_KVM_HVA_VIEW");
	int fd = gm_fd_hide(open("/dev/kvm", O_RDWR | O_CLOEXEC));

	host_fd = fd < 0 ? -errno : fd;
	/* With two-dimensional paging KVM maps guest memory through the fd alone. */
	needs_view = !(sysfs_says_yes("/sys/module/kvm_intel/parameters/ept") ||
		       sysfs_says_yes("/sys/module/kvm_amd/parameters/npt"));
	if (access("/sys/module/kvm_pvm", F_OK) == 0)
		needs_view = true;
	if (env && (env[0] == '0' || env[0] == '1'))
		needs_view = env[0] == '1';
}

int host_kvm_fd(void)
{
	pthread_once(&host_once, host_init);
	return host_fd;
}

bool host_kvm_needs_hva_view(void)
{
	pthread_once(&host_once, host_init);
	return needs_view;
}

int host_vm_create(void)
{
	int kvm = host_kvm_fd(), vm;

	if (kvm < 0)
		return kvm;
	vm = gm_fd_hide(ioctl(kvm, KVM_CREATE_VM, KVM_X86_DEFAULT_VM));
	if (vm < 0)
		return -errno;
	/* Intel needs the TSS pages out of the guest's way; elsewhere it is a no-op. */
	ioctl(vm, KVM_SET_TSS_ADDR, 0xfffbd000UL);
	return vm;
}

int host_gmem_create(int host_vm_fd, uint64_t size)
{
	struct kvm_create_guest_memfd args = {
		.size = size,
		.flags = GUEST_MEMFD_FLAG_MMAP | GUEST_MEMFD_FLAG_INIT_SHARED,
	};
	const char *env = getenv("GMEM_KVM_HOST_GMEM");
	int fd;

	/* GMEM_KVM_HOST_GMEM=0 behaves as a host without guest_memfd (for tests). */
	if (env && env[0] == '0')
		return -ENOTTY;
	fd = gm_fd_hide(ioctl(host_vm_fd, KVM_CREATE_GUEST_MEMFD, &args));

	if (fd < 0)
		return -errno;
	/* The kernel's guest_memfd fd is not close-on-exec; ours is internal. */
	fcntl(fd, F_SETFD, FD_CLOEXEC);
	return fd;
}

bool host_has_gmem(int host_vm_fd)
{
	static _Atomic int known; /* 0 unknown, 1 yes, 2 no */
	int k = atomic_load(&known);

	if (!k) {
		int fd = host_gmem_create(host_vm_fd, GM_PAGE_SIZE);

		k = fd >= 0 ? 1 : 2;
		if (fd >= 0)
			close(fd);
		atomic_store(&known, k);
	}
	return k == 1;
}

long host_ioctl(int fd, unsigned long request, unsigned long arg)
{
	long ret = ioctl(fd, request, arg);

	return ret < 0 ? -errno : ret;
}

#ifdef GM_TEST_HOOKS
/* Test hooks: the n-th host slot creation or change (not delete) from now fails; and the slots the host took, as a digest. */
static atomic_long region_fail_countdown;

void gm_host_region_fail_after(long n)
{
	atomic_store(&region_fail_countdown, n);
}

static struct host_slot_seen {
	int vm_fd;
	struct kvm_userspace_memory_region2 r;
} slots_seen[4096];
static pthread_mutex_t slots_seen_lock = PTHREAD_MUTEX_INITIALIZER;

static void slot_seen(int vm_fd, const struct kvm_userspace_memory_region2 *r)
{
	struct host_slot_seen *free_entry = NULL;

	pthread_mutex_lock(&slots_seen_lock);
	for (size_t i = 0; i < sizeof(slots_seen) / sizeof(slots_seen[0]); i++) {
		struct host_slot_seen *e = &slots_seen[i];

		if (e->r.memory_size && e->vm_fd == vm_fd && e->r.slot == r->slot) {
			free_entry = e;
			break;
		}
		if (!e->r.memory_size && !free_entry)
			free_entry = e;
	}
	if (free_entry)
		*free_entry = (struct host_slot_seen){ .vm_fd = vm_fd, .r = *r };
	pthread_mutex_unlock(&slots_seen_lock);
}

uint64_t gm_host_slots_digest(void)
{
	uint64_t h = 1469598103934665603ULL;

	pthread_mutex_lock(&slots_seen_lock);
	for (size_t i = 0; i < sizeof(slots_seen) / sizeof(slots_seen[0]); i++) {
		const struct host_slot_seen *e = &slots_seen[i];
		const uint64_t words[] = { (uint64_t)e->vm_fd, e->r.slot, e->r.flags, e->r.guest_phys_addr,
					   e->r.memory_size, e->r.userspace_addr, e->r.guest_memfd_offset };

		if (!e->r.memory_size)
			continue;
		/* Order-independent: the table's order is not the host's. */
		uint64_t x = 0;
		for (size_t w = 0; w < sizeof(words) / sizeof(words[0]); w++)
			x = (x ^ words[w]) * 1099511628211ULL;
		h += x;
	}
	pthread_mutex_unlock(&slots_seen_lock);
	return h;
}

static bool region_should_fail(void)
{
	long n = atomic_load(&region_fail_countdown);

	while (n > 0 && !atomic_compare_exchange_weak(&region_fail_countdown, &n, n - 1))
		;
	return n == 1;
}
#else
static inline bool region_should_fail(void)
{
	return false;
}

static inline void slot_seen(int vm_fd, const struct kvm_userspace_memory_region2 *r)
{
}
#endif

int host_set_region(int host_vm_fd, const struct kvm_userspace_memory_region2 *mem, int host_gmem_fd,
		    uint64_t hva)
{
	struct kvm_userspace_memory_region2 r = *mem;

	if (r.flags & KVM_MEM_GUEST_MEMFD) {
		r.guest_memfd = (uint32_t)host_gmem_fd;
		r.userspace_addr = hva;
	}
	/* Deletes are not failed: the library does not expect the host to refuse one. */
	if (r.memory_size && region_should_fail())
		return -EIO;
	if (ioctl(host_vm_fd, KVM_SET_USER_MEMORY_REGION2, &r) < 0)
		return -errno;
	slot_seen(host_vm_fd, &r);
	return 0;
}

/* A MAP_GPA_RANGE request through the gate: an exit for userspace, or an answer in RAX. */
static long host_gate(struct host_vcpu *v, uint64_t mask, bool *exit_to_user)
{
	struct kvm_regs regs;
	uint64_t gfn;

	if (ioctl(v->fd, KVM_GET_REGS, &regs) < 0)
		return -errno;
	*exit_to_user = false;
	if (regs.rax != KVM_HC_MAP_GPA_RANGE || !(mask & (1ULL << KVM_HC_MAP_GPA_RANGE))) {
		regs.rax = (uint64_t)-KVM_ENOSYS;
	} else if (!GM_ALIGNED(regs.rbx, GM_PAGE_SIZE) || !regs.rcx ||
		   __builtin_add_overflow(regs.rbx >> GM_PAGE_SHIFT, regs.rcx, &gfn)) {
		regs.rax = (uint64_t)-KVM_EINVAL;
	} else {
		v->run->exit_reason = KVM_EXIT_HYPERCALL;
		memset(&v->run->hypercall, 0, sizeof(v->run->hypercall));
		v->run->hypercall.nr = regs.rax;
		v->run->hypercall.args[0] = regs.rbx;
		v->run->hypercall.args[1] = regs.rcx;
		v->run->hypercall.args[2] = regs.rdx;
		v->run->hypercall.flags = KVM_EXIT_HYPERCALL_LONG_MODE;
		v->hypercall_pending = true;
		*exit_to_user = true;
		return 0;
	}
	return ioctl(v->fd, KVM_SET_REGS, &regs) < 0 ? -errno : 0;
}

long host_vcpu_run(struct host_vcpu *v, uint64_t exit_hypercall_mask)
{
	if (v->hypercall_pending) {
		struct kvm_regs regs;

		/* The guest gets userspace's answer in RAX, as KVM completes a hypercall exit. */
		if (ioctl(v->fd, KVM_GET_REGS, &regs) < 0)
			return -errno;
		regs.rax = v->run->hypercall.ret;
		if (ioctl(v->fd, KVM_SET_REGS, &regs) < 0)
			return -errno;
		v->hypercall_pending = false;
	}
	for (;;) {
		bool exit_to_user = true;
		long ret;

		if (ioctl(v->fd, KVM_RUN, 0) < 0)
			return -errno;
		if (v->run->exit_reason != KVM_EXIT_IO || v->run->io.port != GM_HYPERCALL_PORT ||
		    v->run->io.direction != KVM_EXIT_IO_OUT || v->run->io.size != 1)
			return 0;
		ret = host_gate(v, exit_hypercall_mask, &exit_to_user);
		if (ret || exit_to_user)
			return ret;
	}
}
