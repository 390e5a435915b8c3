/* The conformance harness: setup that skips with a reason where a target lacks a feature. */
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness/surface.h"

#define CASES_FOR(type, folio)                                                   \
	{ type, 0, folio }, { type, GUEST_MEMFD_FLAG_MMAP, folio },                  \
	{ type, GUEST_MEMFD_FLAG_INIT_SHARED, folio },                               \
	{ type, GUEST_MEMFD_FLAG_MMAP | GUEST_MEMFD_FLAG_INIT_SHARED, folio }

struct gm_case gm_all_cases[] = {
	CASES_FOR(KVM_X86_DEFAULT_VM, GM_GUEST_MEMFD_FOLIO_4K),
	CASES_FOR(KVM_X86_SW_PROTECTED_VM, GM_GUEST_MEMFD_FOLIO_4K),
	CASES_FOR(KVM_X86_DEFAULT_VM, GM_GUEST_MEMFD_FOLIO_2M),
	CASES_FOR(KVM_X86_SW_PROTECTED_VM, GM_GUEST_MEMFD_FOLIO_2M),
	CASES_FOR(KVM_X86_DEFAULT_VM, GM_GUEST_MEMFD_FOLIO_1G),
	CASES_FOR(KVM_X86_SW_PROTECTED_VM, GM_GUEST_MEMFD_FOLIO_1G),
};
size_t gm_all_cases_nr = sizeof(gm_all_cases) / sizeof(gm_all_cases[0]);

#if defined(GM_VM_ATTRS) && !TARGET_IS_KERNEL
/* The per-VM attribute build: kvm.vm_memory_attributes=1 before any test makes a VM. */
__attribute__((constructor)) static void per_vm_attributes(void)
{
	if (gm_set_vm_memory_attributes(true))
		abort();
}
#endif

uint64_t gm_case_folio_size(const struct gm_case *c)
{
	unsigned shift = (unsigned)(c->folio >> GM_GUEST_MEMFD_FOLIO_SHIFT);

	return shift ? 1ULL << shift : PAGE_SIZE;
}

const char *gm_case_name(const struct gm_case *c)
{
	static char buf[96];

	snprintf(buf, sizeof(buf), "vm type %lu, flags %#llx, folio %lluK", c->vm_type,
		 (unsigned long long)c->flags, (unsigned long long)(gm_case_folio_size(c) >> 10));
	return buf;
}

int t_open_kvm(void)
{
	int kvm = sys_open_kvm();

	if (kvm < 0 && TARGET_IS_KERNEL)
		cr_skip_test("%s: /dev/kvm cannot be opened (%s)", TARGET_NAME, strerror(errno));
	cr_assert_geq(kvm, 0, "open kvm: %s", strerror(errno));
	return kvm;
}

int t_create_vm(unsigned long type)
{
	int kvm = t_open_kvm();
	int types = sys_ioctl(kvm, KVM_CHECK_EXTENSION, KVM_CAP_VM_TYPES);
	int vm;

	/* A kernel without KVM_CAP_VM_TYPES has DEFAULT only; libgmem must list its types. */
	if (types <= 0 && TARGET_IS_KERNEL)
		types = 1 << KVM_X86_DEFAULT_VM;
	t_require(types > 0, "%s: no KVM_CAP_VM_TYPES", TARGET_NAME);
	t_require(types & (1 << type), "%s: VM type %lu is not in KVM_CAP_VM_TYPES (%#x) on this host",
		  TARGET_NAME, type, types);
	vm = sys_ioctl(kvm, KVM_CREATE_VM, type);
	cr_assert_geq(vm, 0, "KVM_CREATE_VM(%lu): %s", type, strerror(errno));
	sys_close(kvm);
	return vm;
}

void t_require_gmem_flags(int vm, uint64_t flags)
{
	int supported = sys_ioctl(vm, KVM_CHECK_EXTENSION, KVM_CAP_GUEST_MEMFD_FLAGS);
	uint64_t plain = flags & ~GM_GUEST_MEMFD_FOLIO_MASK;

	t_require(sys_ioctl(vm, KVM_CHECK_EXTENSION, KVM_CAP_GUEST_MEMFD) > 0,
		  "%s: no KVM_CAP_GUEST_MEMFD", TARGET_NAME);
	t_require(!(plain & ~(uint64_t)(supported < 0 ? 0 : supported)),
		  "%s: guest_memfd flags %#llx not in KVM_CAP_GUEST_MEMFD_FLAGS (%#x) for this VM type",
		  TARGET_NAME, (unsigned long long)plain, supported);
	if ((flags & GM_GUEST_MEMFD_FOLIO_MASK) && TARGET_IS_KERNEL)
		cr_skip_test("%s: no folio-size flag (huge guest_memfd folios are not upstream)",
			     TARGET_NAME);
}

int t_create_gmem(int vm, uint64_t size, uint64_t flags)
{
	struct kvm_create_guest_memfd args = { .size = size, .flags = flags };
	int fd;

	t_require_gmem_flags(vm, flags);
	fd = sys_ioctl(vm, KVM_CREATE_GUEST_MEMFD, &args);
	cr_assert_geq(fd, 0, "KVM_CREATE_GUEST_MEMFD(size %#llx, flags %#llx): %s",
		      (unsigned long long)size, (unsigned long long)flags, strerror(errno));
	return fd;
}

void t_env_setup(struct gm_env *e, const struct gm_case *c, uint64_t size)
{
	e->kvm = t_open_kvm();
	e->vm = t_create_vm(c->vm_type);
	e->folio_size = gm_case_folio_size(c);
	e->size = size ? size : 2 * e->folio_size;
	e->flags = c->flags | c->folio;
	e->gmem = t_create_gmem(e->vm, e->size, e->flags);
}

void t_env_teardown(struct gm_env *e)
{
	sys_close(e->gmem);
	sys_close(e->vm);
	sys_close(e->kvm);
}

static sigjmp_buf sigbus_jmp;

static void on_sigbus(int sig)
{
	(void)sig;
	siglongjmp(sigbus_jmp, 1);
}

/* Whether the access raises SIGBUS, or with segv also SIGSEGV. */
static bool access_faults(volatile void *addr, bool write, bool segv)
{
	struct sigaction sa = { .sa_handler = on_sigbus }, old_bus, old_segv;
	bool faulted = false;

	sigemptyset(&sa.sa_mask);
	sigaction(SIGBUS, &sa, &old_bus);
	if (segv)
		sigaction(SIGSEGV, &sa, &old_segv);
	if (sigsetjmp(sigbus_jmp, 1) == 0) {
		if (write)
			*(volatile char *)addr = 0x5a;
		else
			(void)*(volatile char *)addr;
	} else {
		faulted = true;
	}
	sigaction(SIGBUS, &old_bus, NULL);
	if (segv)
		sigaction(SIGSEGV, &old_segv, NULL);
	return faulted;
}

bool t_access_sigbus(volatile void *addr, bool write)
{
	return access_faults(addr, write, false);
}

bool t_read_faults(volatile const void *addr)
{
	return access_faults((volatile void *)addr, false, true);
}
