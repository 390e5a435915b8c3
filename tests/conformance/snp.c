/* SEV-SNP's launch uAPI (KVM_MEMORY_ENCRYPT_OP on a KVM_X86_SNP_VM): validation, populate, errno. */
#include "harness/surface.h"

#include <string.h>

#define PRIVATE KVM_MEMORY_ATTRIBUTE_PRIVATE
/* A policy with only the bit that must be set (bit 17) and SMT allowed. */
#define POLICY ((1ULL << 17) | (1ULL << 16))

struct snp_env {
	int vm, sev, gmem;
	uint64_t size;
	bool attrs_in_file; /* per-file attributes (in place); else per VM, sources from hva */
	char *hva;          /* per-VM mode: the slot's shared memory */
	char *map;          /* where the VMM writes a page while it is shared */
};

static int sev_cmd(struct snp_env *e, uint32_t id, void *data, int sev_fd, uint32_t *error)
{
	struct kvm_sev_cmd c = { .id = id, .data = (uint64_t)(uintptr_t)data, .sev_fd = (uint32_t)sev_fd };
	int r = ioctl_errno(e->vm, KVM_MEMORY_ENCRYPT_OP, &c);

	if (error)
		*error = c.error;
	return r;
}

static int init2(struct snp_env *e)
{
	struct kvm_sev_init data = { 0 };

	return sev_cmd(e, KVM_SEV_INIT2, &data, e->sev, NULL);
}

static int launch_start(struct snp_env *e, uint64_t policy, uint16_t flags, int sev_fd)
{
	struct kvm_sev_snp_launch_start s = { .policy = policy, .flags = flags };

	return sev_cmd(e, KVM_SEV_SNP_LAUNCH_START, &s, sev_fd, NULL);
}

static int launch_update(struct snp_env *e, struct kvm_sev_snp_launch_update *u, int sev_fd,
			 uint32_t *error)
{
	return sev_cmd(e, KVM_SEV_SNP_LAUNCH_UPDATE, u, sev_fd, error);
}

static int launch_finish(struct snp_env *e, int sev_fd, uint32_t *error)
{
	struct kvm_sev_snp_launch_finish f = { 0 };

	return sev_cmd(e, KVM_SEV_SNP_LAUNCH_FINISH, &f, sev_fd, error);
}

/* Private or shared, in the file or in the VM (the slot maps the file from GPA 0). */
static int set_private(struct snp_env *e, uint64_t off, uint64_t len, bool private)
{
	if (e->attrs_in_file) {
		struct kvm_memory_attributes2 a = { .offset = off, .size = len,
						    .attributes = private ? PRIVATE : 0 };

		return ioctl_errno(e->gmem, KVM_SET_MEMORY_ATTRIBUTES2, &a);
	}
	struct kvm_memory_attributes a = { .address = off, .size = len,
					   .attributes = private ? PRIVATE : 0 };

	return ioctl_errno(e->vm, KVM_SET_MEMORY_ATTRIBUTES, &a);
}

/* An SNP VM with a guest_memfd of npages at GPA 0; INIT2 and LAUNCH_START as asked. */
static void snp_setup(struct snp_env *e, uint64_t npages, bool do_init, bool do_start)
{
	struct kvm_userspace_memory_region2 r = { 0 };
	uint64_t flags;

	memset(e, 0, sizeof(*e));
	e->vm = t_create_vm(KVM_X86_SNP_VM);
	e->sev = sys_open_sev();
	t_require(e->sev >= 0, "%s: no SEV platform device (/dev/sev): %s", TARGET_NAME,
		  strerror(errno));
	e->size = npages * PAGE_SIZE;
	e->attrs_in_file = sys_ioctl(e->vm, KVM_CHECK_EXTENSION,
				     KVM_CAP_GUEST_MEMFD_MEMORY_ATTRIBUTES) == (int)PRIVATE;
	flags = e->attrs_in_file ? GUEST_MEMFD_FLAG_MMAP | GUEST_MEMFD_FLAG_INIT_SHARED : 0;
	e->gmem = t_create_gmem(e->vm, e->size, flags);
	if (!e->attrs_in_file) {
		e->hva = mmap(NULL, e->size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
		cr_assert_neq(e->hva, MAP_FAILED);
		e->map = e->hva;
	} else {
		e->map = sys_mmap(NULL, e->size, PROT_READ | PROT_WRITE, MAP_SHARED, e->gmem, 0);
		cr_assert_neq(e->map, MAP_FAILED);
	}
	r.slot = 0;
	r.flags = KVM_MEM_GUEST_MEMFD;
	r.memory_size = e->size;
	r.userspace_addr = (uint64_t)(uintptr_t)e->hva;
	r.guest_memfd = (uint32_t)e->gmem;
	cr_assert_eq(ioctl_errno(e->vm, KVM_SET_USER_MEMORY_REGION2, &r), 0);
	if (do_init)
		cr_assert_eq(init2(e), 0);
	if (do_start)
		cr_assert_eq(launch_start(e, POLICY, 0, e->sev), 0);
}

static void snp_teardown(struct snp_env *e)
{
	if (e->attrs_in_file)
		sys_munmap(e->map, e->size);
	else
		munmap(e->hva, e->size);
	sys_close(e->gmem);
	sys_close(e->sev);
	sys_close(e->vm);
}

/* The source of a page written at map[page]: in place in the file, else the shared hva. */
static uint64_t page_source(struct snp_env *e, uint64_t page)
{
	return e->attrs_in_file ? 0 : (uint64_t)(uintptr_t)(e->hva + page * PAGE_SIZE);
}

/* SNP is a VM type; for it the file's attributes say PRIVATE, as its launch takes a NULL source. */
Test(snp, capabilities)
{
	struct snp_env e;

	snp_setup(&e, 1, false, false);
	if (e.attrs_in_file)
		cr_expect_eq(sys_ioctl(e.vm, KVM_CHECK_EXTENSION, KVM_CAP_GUEST_MEMFD_MEMORY_ATTRIBUTES),
			     (int)PRIVATE);
	else
		cr_expect_eq(sys_ioctl(e.vm, KVM_CHECK_EXTENSION, KVM_CAP_MEMORY_ATTRIBUTES), (int)PRIVATE);
	/* A NULL argument is no command at all. */
	cr_expect_eq(ioctl_errno(e.vm, KVM_MEMORY_ENCRYPT_OP, NULL), 0);
	cr_expect_eq(ioctl_errno(e.vm, KVM_MEMORY_ENCRYPT_OP, (void *)8), EFAULT);
	snp_teardown(&e);
}

/* sev_guest_init2's checks; once initialised, only SNP's commands (EPERM). */
Test(snp, init2)
{
	struct snp_env e;
	struct kvm_sev_init data = { 0 };

	snp_setup(&e, 1, false, false);
	cr_expect_eq(sev_cmd(&e, KVM_SEV_INIT2, (void *)8, e.sev, NULL), EFAULT);
	data.flags = 1;
	cr_expect_eq(sev_cmd(&e, KVM_SEV_INIT2, &data, e.sev, NULL), EINVAL, "flags");
	data.flags = 0;
	data.vmsa_features = 1ULL << 63;
	cr_expect_eq(sev_cmd(&e, KVM_SEV_INIT2, &data, e.sev, NULL), EINVAL, "vmsa_features");
	data.vmsa_features = 0;
	data.ghcb_version = 1;
	cr_expect_eq(sev_cmd(&e, KVM_SEV_INIT2, &data, e.sev, NULL), EINVAL, "GHCB v1 for SNP");
	data.ghcb_version = 3;
	cr_expect_eq(sev_cmd(&e, KVM_SEV_INIT2, &data, e.sev, NULL), EINVAL, "GHCB v3");
	data.ghcb_version = 2;
	cr_expect_eq(sev_cmd(&e, KVM_SEV_INIT2, &data, e.sev, NULL), 0);
	cr_expect_eq(sev_cmd(&e, KVM_SEV_INIT2, &data, e.sev, NULL), EPERM, "a second INIT2");
	cr_expect_eq(sev_cmd(&e, KVM_SEV_LAUNCH_START, &data, e.sev, NULL), EPERM, "SEV's command");
	cr_expect_eq(sev_cmd(&e, 1000, &data, e.sev, NULL), EINVAL, "no such command");
	snp_teardown(&e);
}

/* INIT2 comes before any vCPU, one whose fd was closed too (created_vcpus: it lives with the VM). */
Test(snp, init2_after_vcpu)
{
	struct snp_env e;
	int vcpu;

	snp_setup(&e, 1, false, false);
	vcpu = sys_ioctl(e.vm, KVM_CREATE_VCPU, 0);
	cr_assert_geq(vcpu, 0);
	cr_expect_eq(init2(&e), EINVAL);
	sys_close(vcpu);
	cr_expect_eq(init2(&e), EINVAL, "a vCPU whose fd is closed");
	snp_teardown(&e);
}

/* INIT2 makes only an SNP-typed VM an SNP guest; the others have no SNP context. */
Test(snp, other_vm_types)
{
	int vm = t_create_vm(KVM_X86_DEFAULT_VM);
	struct kvm_sev_init data = { 0 };
	struct kvm_sev_snp_launch_start s = { .policy = POLICY };
	struct kvm_sev_cmd c = { .id = KVM_SEV_INIT2, .data = (uint64_t)(uintptr_t)&data };
	int err;

	errno = 0;
	err = sys_ioctl(vm, KVM_MEMORY_ENCRYPT_OP, &c) < 0 ? errno : 0;
	if (TARGET_IS_KERNEL && err == ENOTTY)
		cr_skip_test("kernel: no SEV on this host (KVM_MEMORY_ENCRYPT_OP is ENOTTY)");
	cr_expect_eq(err, EINVAL, "INIT2 on a DEFAULT VM");
	c.id = KVM_SEV_SNP_LAUNCH_START;
	c.data = (uint64_t)(uintptr_t)&s;
	cr_expect_eq(ioctl_errno(vm, KVM_MEMORY_ENCRYPT_OP, &c), ENOTTY, "LAUNCH_START");
	sys_close(vm);
}

/* snp_launch_start's checks in order, then one context per VM. */
Test(snp, launch_start)
{
	struct snp_env e;
	int not_sev = sys_open_kvm();

	snp_setup(&e, 1, false, false);
	cr_expect_eq(launch_start(&e, POLICY, 0, e.sev), ENOTTY, "before INIT2");
	cr_assert_eq(init2(&e), 0);
	cr_expect_eq(sev_cmd(&e, KVM_SEV_SNP_LAUNCH_START, (void *)8, e.sev, NULL), EFAULT);
	cr_expect_eq(launch_start(&e, POLICY, 1, e.sev), EINVAL, "flags");
	cr_expect_eq(launch_start(&e, POLICY | (1ULL << 40), 0, e.sev), EINVAL, "unknown policy bit");
	cr_expect_eq(launch_start(&e, 1ULL << 16, 0, e.sev), EINVAL, "reserved bit 17 clear");
	/* SNP_GCTX_CREATE fails on a fd that is not the device: KVM says ENOTTY. */
	cr_expect_eq(launch_start(&e, POLICY, 0, not_sev), ENOTTY, "sev_fd is /dev/kvm");
	cr_expect_eq(launch_start(&e, POLICY, 0, -1), ENOTTY, "sev_fd -1");
	cr_expect_eq(launch_start(&e, POLICY, 0, e.sev), 0);
	cr_expect_eq(launch_start(&e, POLICY, 0, e.sev), EINVAL, "a second context");
	sys_close(not_sev);
	snp_teardown(&e);
}

/* snp_launch_update's checks, each alone. */
Test(snp, launch_update_validation)
{
	struct snp_env e;
	struct kvm_sev_snp_launch_update u;

	snp_setup(&e, 2, true, false);
	cr_assert_eq(set_private(&e, 0, e.size, true), 0);
	u = (struct kvm_sev_snp_launch_update){ .len = PAGE_SIZE, .type = KVM_SEV_SNP_PAGE_TYPE_ZERO };
	cr_expect_eq(launch_update(&e, &u, e.sev, NULL), EINVAL, "before LAUNCH_START");
	cr_assert_eq(launch_start(&e, POLICY, 0, e.sev), 0);
	cr_expect_eq(sev_cmd(&e, KVM_SEV_SNP_LAUNCH_UPDATE, (void *)8, e.sev, NULL), EFAULT);
	u.len = 0;
	cr_expect_eq(launch_update(&e, &u, e.sev, NULL), EINVAL, "len 0");
	u.len = 100;
	cr_expect_eq(launch_update(&e, &u, e.sev, NULL), EINVAL, "len unaligned");
	u.len = PAGE_SIZE;
	u.flags = 1;
	cr_expect_eq(launch_update(&e, &u, e.sev, NULL), EINVAL, "flags");
	u.flags = 0;
	u.type = 2;
	cr_expect_eq(launch_update(&e, &u, e.sev, NULL), EINVAL, "type VMSA");
	u.type = 7;
	cr_expect_eq(launch_update(&e, &u, e.sev, NULL), EINVAL, "type 7");
	u.type = KVM_SEV_SNP_PAGE_TYPE_NORMAL;
	u.uaddr = (uint64_t)(uintptr_t)e.map + 8;
	cr_expect_eq(launch_update(&e, &u, e.sev, NULL), EINVAL, "uaddr unaligned");
	u = (struct kvm_sev_snp_launch_update){ .gfn_start = 1000, .len = PAGE_SIZE,
						.type = KVM_SEV_SNP_PAGE_TYPE_ZERO };
	cr_expect_eq(launch_update(&e, &u, e.sev, NULL), EINVAL, "no slot");
	snp_teardown(&e);
}

/* A destination that is shared fails populate (EINVAL), which LAUNCH_UPDATE reports as EIO. */
Test(snp, shared_destination)
{
	struct snp_env e;
	struct kvm_sev_snp_launch_update u = { .len = PAGE_SIZE, .type = KVM_SEV_SNP_PAGE_TYPE_ZERO };
	uint32_t error = 77;

	snp_setup(&e, 1, true, true);
	cr_assert_eq(set_private(&e, 0, e.size, false), 0);
	cr_expect_eq(launch_update(&e, &u, e.sev, &error), EIO);
	cr_expect_eq(error, 0, "no firmware status: populate refused the page");
	cr_expect_eq(u.gfn_start, 0);
	cr_expect_eq(u.len, PAGE_SIZE, "nothing done");
	snp_teardown(&e);
}

/* A failure after the first page: success, with the struct saying what is left. */
Test(snp, partial_progress)
{
	struct snp_env e;
	struct kvm_sev_snp_launch_update u;

	snp_setup(&e, 4, true, true);
	cr_assert_eq(set_private(&e, 0, 2 * PAGE_SIZE, true), 0);
	memset(e.map + 3 * PAGE_SIZE, 0x5a, PAGE_SIZE); /* page 2 stays shared */
	u = (struct kvm_sev_snp_launch_update){ .gfn_start = 0, .uaddr = page_source(&e, 0),
						.len = 4 * PAGE_SIZE,
						.type = KVM_SEV_SNP_PAGE_TYPE_NORMAL };
	cr_assert_eq(launch_update(&e, &u, e.sev, NULL), 0);
	cr_expect_eq(u.gfn_start, 2);
	cr_expect_eq(u.len, 2 * PAGE_SIZE);
	cr_expect_eq(u.uaddr, u.uaddr ? page_source(&e, 2) : 0, "uaddr follows, or stays 0 in place");
	/* Resuming where it stopped: the first page is shared, so nothing more is done. */
	cr_expect_eq(launch_update(&e, &u, e.sev, NULL), EIO);
	cr_expect_eq(u.gfn_start, 2);
	snp_teardown(&e);
}

/* A page already assigned to the guest cannot be populated again (EEXIST, so EIO). */
Test(snp, already_assigned)
{
	struct snp_env e;
	struct kvm_sev_snp_launch_update u = { .len = PAGE_SIZE, .type = KVM_SEV_SNP_PAGE_TYPE_ZERO };

	snp_setup(&e, 1, true, true);
	cr_assert_eq(set_private(&e, 0, e.size, true), 0);
	cr_assert_eq(launch_update(&e, &u, e.sev, NULL), 0);
	cr_expect_eq(u.len, 0);
	u = (struct kvm_sev_snp_launch_update){ .len = PAGE_SIZE, .type = KVM_SEV_SNP_PAGE_TYPE_ZERO };
	cr_expect_eq(launch_update(&e, &u, e.sev, NULL), EIO);
	snp_teardown(&e);
}

/* A command whose sev_fd is not the device fails, and the page goes back to the hypervisor. */
Test(snp, bad_sev_fd)
{
	struct snp_env e;
	struct kvm_sev_snp_launch_update u = { .len = PAGE_SIZE, .type = KVM_SEV_SNP_PAGE_TYPE_ZERO };
	int not_sev = sys_open_kvm();

	snp_setup(&e, 1, true, true);
	cr_assert_eq(set_private(&e, 0, e.size, true), 0);
	cr_expect_eq(launch_update(&e, &u, not_sev, NULL), EIO, "/dev/kvm as sev_fd");
	cr_expect_eq(launch_update(&e, &u, 12345, NULL), EIO, "a closed fd");
	/* Reclaimed: the same page can still be populated. */
	cr_expect_eq(launch_update(&e, &u, e.sev, NULL), 0);
	sys_close(not_sev);
	snp_teardown(&e);
}

/* snp_launch_finish's checks; each vCPU's VMSA goes through sev_fd. */
Test(snp, launch_finish_validation)
{
	struct snp_env e;
	struct kvm_sev_snp_launch_finish f = { .flags = 1 };
	int vcpu;

	snp_setup(&e, 1, false, false);
	cr_expect_eq(launch_finish(&e, e.sev, NULL), ENOTTY, "before INIT2");
	cr_assert_eq(init2(&e), 0);
	cr_expect_eq(launch_finish(&e, e.sev, NULL), EINVAL, "before LAUNCH_START");
	cr_assert_eq(launch_start(&e, POLICY, 0, e.sev), 0);
	cr_expect_eq(sev_cmd(&e, KVM_SEV_SNP_LAUNCH_FINISH, (void *)8, e.sev, NULL), EFAULT);
	cr_expect_eq(sev_cmd(&e, KVM_SEV_SNP_LAUNCH_FINISH, &f, e.sev, NULL), EINVAL, "flags");
	vcpu = sys_ioctl(e.vm, KVM_CREATE_VCPU, 0);
	cr_assert_geq(vcpu, 0);
	cr_expect_eq(launch_finish(&e, -1, NULL), EBADF, "VMSA update with sev_fd -1");
	sys_close(vcpu);
	snp_teardown(&e);
}

/*
 * LAUNCH_FINISH goes to the device fd LAUNCH_START named (sev->fd), not to the
 * command's: with that fd closed it is EBADF, whatever sev_fd the command gives.
 */
Test(snp, launch_finish_after_start_fd_closed)
{
	struct snp_env e;
	int start_fd;

	snp_setup(&e, 1, true, false);
	start_fd = sys_open_sev();
	cr_assert_geq(start_fd, 0);
	cr_assert_eq(launch_start(&e, POLICY, 0, start_fd), 0);
	cr_assert_eq(sys_close(start_fd), 0);
	cr_expect_eq(launch_finish(&e, e.sev, NULL), EBADF, "LAUNCH_START's device fd is closed");
	snp_teardown(&e);
}

/* After LAUNCH_FINISH the firmware takes no more pages (INVALID_GUEST_STATE). */
Test(snp, no_populate_after_finish)
{
	struct snp_env e;
	struct kvm_sev_snp_launch_update u = { .len = PAGE_SIZE, .type = KVM_SEV_SNP_PAGE_TYPE_ZERO };
	uint32_t error = 0;

	snp_setup(&e, 2, true, true);
	cr_assert_eq(set_private(&e, 0, e.size, true), 0);
	cr_assert_eq(launch_update(&e, &u, e.sev, NULL), 0);
	cr_assert_eq(launch_finish(&e, e.sev, NULL), 0);
	u = (struct kvm_sev_snp_launch_update){ .gfn_start = 1, .len = PAGE_SIZE,
						.type = KVM_SEV_SNP_PAGE_TYPE_ZERO };
	cr_expect_eq(launch_update(&e, &u, e.sev, &error), EIO);
	cr_expect_eq(error, SEV_RET_INVALID_GUEST_STATE);
	cr_expect_eq(launch_finish(&e, e.sev, &error), EIO, "a second LAUNCH_FINISH");
	snp_teardown(&e);
}

/* The legacy flow's source must be readable: a private guest_memfd page is not (EFAULT, so EIO). */
Test(snp, private_source_refused)
{
	struct snp_env e, src;
	struct kvm_sev_snp_launch_update u;

	snp_setup(&e, 1, true, true);
	t_require(e.attrs_in_file, "%s: per-VM attributes: no guest_memfd mapping to use as a source",
		  TARGET_NAME);
	snp_setup(&src, 1, true, false);
	cr_assert_eq(set_private(&e, 0, e.size, true), 0);
	memset(src.map, 0x33, PAGE_SIZE);
	cr_assert_eq(set_private(&src, 0, src.size, true), 0);
	u = (struct kvm_sev_snp_launch_update){ .uaddr = (uint64_t)(uintptr_t)src.map,
						.len = PAGE_SIZE,
						.type = KVM_SEV_SNP_PAGE_TYPE_NORMAL };
	cr_expect_eq(launch_update(&e, &u, e.sev, NULL), EIO, "private source");
	/* The same source once shared again is copied in. */
	cr_assert_eq(set_private(&src, 0, src.size, false), 0);
	memset(src.map, 0x44, PAGE_SIZE);
	cr_expect_eq(launch_update(&e, &u, e.sev, NULL), 0, "shared source");
	cr_expect_eq(u.len, 0);
	snp_teardown(&src);
	snp_teardown(&e);
}

/* Populated memory is private: the VMM's mapping cannot read it. */
Test(snp, vmm_read_refused)
{
	struct snp_env e;
	struct kvm_sev_snp_launch_update u;

	snp_setup(&e, 1, true, true);
	t_require(e.attrs_in_file, "%s: per-VM attributes: the file has no host mapping",
		  TARGET_NAME);
	memset(e.map, 0x77, PAGE_SIZE);
	cr_assert_eq(set_private(&e, 0, e.size, true), 0);
	u = (struct kvm_sev_snp_launch_update){ .len = PAGE_SIZE, .uaddr = 0,
						.type = KVM_SEV_SNP_PAGE_TYPE_NORMAL };
	cr_assert_eq(launch_update(&e, &u, e.sev, NULL), 0);
	cr_expect(t_access_sigbus(e.map, false), "read of a populated page");
	cr_expect(t_access_sigbus(e.map, true), "write of a populated page");
	snp_teardown(&e);
}
