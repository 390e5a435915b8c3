/* A small VMM for guest-function tests: a VM, guest_memfd slots and vCPUs on libgmem. */
#ifndef TESTS_UNIT_VMM_H
#define TESTS_UNIT_VMM_H

#define _GNU_SOURCE
#include <errno.h>
#include <string.h>
#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <gmem/gmem.h>

#include "harness/surface.h"

struct vmm {
	int kvm, vm;
	int vcpu;
	struct kvm_run *run;
};

static inline void vmm_init(struct vmm *m, unsigned long type)
{
	m->kvm = gm_open_kvm();
	cr_assert_geq(m->kvm, 0);
	m->vm = gm_ioctl(m->kvm, KVM_CREATE_VM, type);
	cr_assert_geq(m->vm, 0);
	m->vcpu = -1;
}

static inline int vmm_gmem(struct vmm *m, uint64_t size, uint64_t flags)
{
	struct kvm_create_guest_memfd c = { .size = size, .flags = flags };
	int fd = gm_ioctl(m->vm, KVM_CREATE_GUEST_MEMFD, &c);

	cr_assert_geq(fd, 0, "create gmem: %s", strerror(errno));
	return fd;
}

static inline int vmm_set_slot(struct vmm *m, uint32_t slot, uint64_t gpa, uint64_t size, int gmem,
			       uint64_t offset)
{
	struct kvm_userspace_memory_region2 r = {
		.slot = slot, .flags = gmem >= 0 ? KVM_MEM_GUEST_MEMFD : 0, .guest_phys_addr = gpa,
		.memory_size = size, .guest_memfd = (uint32_t)gmem, .guest_memfd_offset = offset,
	};

	return gm_ioctl(m->vm, KVM_SET_USER_MEMORY_REGION2, &r) ? errno : 0;
}

static inline int vmm_hva_slot(struct vmm *m, uint32_t slot, uint64_t gpa, uint64_t size, void *hva)
{
	struct kvm_userspace_memory_region2 r = {
		.slot = slot, .guest_phys_addr = gpa, .memory_size = size,
		.userspace_addr = (uint64_t)(uintptr_t)hva,
	};

	return gm_ioctl(m->vm, KVM_SET_USER_MEMORY_REGION2, &r) ? errno : 0;
}

static inline int vmm_vcpu(struct vmm *m, unsigned long id, gm_guest_fn fn, void *arg)
{
	int fd = gm_ioctl(m->vm, KVM_CREATE_VCPU, id);

	cr_assert_geq(fd, 0, "create vcpu: %s", strerror(errno));
	if (fn)
		cr_assert_eq(gm_vcpu_set_guest(fd, fn, arg), 0);
	if (m->vcpu < 0) {
		m->vcpu = fd;
		m->run = gm_mmap(NULL, 3 * 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
		cr_assert_neq(m->run, MAP_FAILED);
	}
	return fd;
}

/* KVM_RUN once; returns 0 or the errno KVM_RUN failed with. */
static inline int vmm_run(struct vmm *m)
{
	return gm_ioctl(m->vcpu, KVM_RUN, 0) ? errno : 0;
}

/* Runs to the next ucall and checks its command; returns the first argument. */
static inline uint64_t vmm_expect_ucall(struct vmm *m, uint64_t cmd)
{
	struct gm_ucall uc;

	cr_assert_eq(vmm_run(m), 0, "KVM_RUN failed, exit %u", m->run->exit_reason);
	cr_assert_eq(m->run->exit_reason, KVM_EXIT_IO, "exit %u", m->run->exit_reason);
	cr_assert_eq(gm_vcpu_get_ucall(m->vcpu, &uc), 0);
	cr_assert_neq(uc.cmd, GM_UCALL_ABORT, "guest: %s", uc.msg);
	cr_assert_eq(uc.cmd, cmd);
	return uc.args[0];
}

/* Whether the host's /dev/kvm has guest_memfd (6.18 can be built or booted without it). */
static inline bool host_kvm_has_gmem(void)
{
	int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	bool has = kvm >= 0 && ioctl(kvm, KVM_CHECK_EXTENSION, KVM_CAP_GUEST_MEMFD) > 0;

	if (kvm >= 0)
		close(kvm);
	return has;
}

/* Whether the VMM's read of p faults (SIGBUS), as it must for private memory. */
static inline bool vmm_host_faults(volatile void *p)
{
	return t_access_sigbus(p, false);
}

static inline void vmm_destroy(struct vmm *m)
{
	if (m->vcpu >= 0) {
		gm_munmap(m->run, 3 * 4096);
		gm_close(m->vcpu);
	}
	gm_close(m->vm);
	gm_close(m->kvm);
}

#endif
