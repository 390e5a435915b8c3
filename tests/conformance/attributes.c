/* KVM_SET_MEMORY_ATTRIBUTES2 on a guest_memfd: validation, and in-place conversion seen by the host. */
#include "harness/surface.h"

#include <linux/falloc.h>
#include <string.h>
#include <signal.h>
#include <sys/wait.h>

#define PAGES 16

/* A SW_PROTECTED VM and a guest_memfd that can be converted; skips where the kernel cannot. */
static void attr_env(struct gm_env *e, uint64_t flags)
{
	struct gm_case c = { KVM_X86_SW_PROTECTED_VM, flags, 0 };

	e->kvm = t_open_kvm();
	e->vm = t_create_vm(c.vm_type);
	t_require(sys_ioctl(e->vm, KVM_CHECK_EXTENSION, KVM_CAP_GUEST_MEMFD_MEMORY_ATTRIBUTES) > 0,
		  "%s: no per-file attributes (KVM_CAP_GUEST_MEMFD_MEMORY_ATTRIBUTES is 0; "
		  "in-place conversion is not merged)", TARGET_NAME);
	e->folio_size = PAGE_SIZE;
	e->size = PAGES * PAGE_SIZE;
	e->flags = flags;
	e->gmem = t_create_gmem(e->vm, e->size, flags);
}

static int set_attrs(int gmem, uint64_t offset, uint64_t size, uint64_t attrs, uint64_t *error_offset)
{
	struct kvm_memory_attributes2 a = { .offset = offset, .size = size, .attributes = attrs };
	int err = ioctl_errno(gmem, KVM_SET_MEMORY_ATTRIBUTES2, &a);

	if (error_offset)
		*error_offset = a.error_offset;
	return err;
}

#define PRIVATE KVM_MEMORY_ATTRIBUTE_PRIVATE

Test(attributes, validation)
{
	struct gm_env e;
	struct kvm_memory_attributes2 a = { .size = PAGE_SIZE, .attributes = PRIVATE };

	attr_env(&e, GUEST_MEMFD_FLAG_MMAP | GUEST_MEMFD_FLAG_INIT_SHARED);
	cr_expect_eq(ioctl_errno(e.gmem, KVM_SET_MEMORY_ATTRIBUTES2, (void *)8), EFAULT);
	a.flags = 1;
	cr_expect_eq(ioctl_errno(e.gmem, KVM_SET_MEMORY_ATTRIBUTES2, &a), EINVAL, "flags");
	a.flags = 0;
	a.reserved[10] = 1;
	cr_expect_eq(ioctl_errno(e.gmem, KVM_SET_MEMORY_ATTRIBUTES2, &a), EINVAL, "reserved");
	a.reserved[10] = 0;
	cr_expect_eq(set_attrs(e.gmem, 0, PAGE_SIZE, 1 << 2, NULL), EINVAL, "unknown attribute");
	cr_expect_eq(set_attrs(e.gmem, 0, 0, PRIVATE, NULL), EINVAL, "size 0");
	cr_expect_eq(set_attrs(e.gmem, PAGE_SIZE, -PAGE_SIZE, PRIVATE, NULL), EINVAL, "overflow");
	cr_expect_eq(set_attrs(e.gmem, 1, PAGE_SIZE, PRIVATE, NULL), EINVAL, "offset alignment");
	cr_expect_eq(set_attrs(e.gmem, 0, 100, PRIVATE, NULL), EINVAL, "size alignment");
	cr_expect_eq(set_attrs(e.gmem, e.size, PAGE_SIZE, PRIVATE, NULL), EINVAL, "at the end");
	cr_expect_eq(set_attrs(e.gmem, 0, e.size + PAGE_SIZE, PRIVATE, NULL), EINVAL, "past the end");
	/* None of it changed anything: the file is still all shared. */
	char *p = sys_mmap(NULL, e.size, PROT_READ | PROT_WRITE, MAP_SHARED, e.gmem, 0);
	cr_assert_neq(p, MAP_FAILED);
	for (int i = 0; i < PAGES; i++)
		cr_expect_not(t_access_sigbus(p + i * PAGE_SIZE, true), "page %d", i);
	/* The VM ioctl does not take attributes when they live in the file. */
	struct kvm_memory_attributes v1 = { .size = PAGE_SIZE, .attributes = PRIVATE };
	cr_expect_neq(ioctl_errno(e.vm, KVM_SET_MEMORY_ATTRIBUTES, &v1), 0);
	sys_munmap(p, e.size);
	t_env_teardown(&e);
}

Test(attributes, default_vm_has_no_private_memory)
{
	int vm = t_create_vm(KVM_X86_DEFAULT_VM);
	int gmem = t_create_gmem(vm, PAGES * PAGE_SIZE, GUEST_MEMFD_FLAG_MMAP);

	int kvm = t_open_kvm();
	bool file_attrs = sys_ioctl(kvm, KVM_CHECK_EXTENSION, KVM_CAP_GUEST_MEMFD_MEMORY_ATTRIBUTES) > 0;

	cr_expect_eq(sys_ioctl(vm, KVM_CHECK_EXTENSION, KVM_CAP_GUEST_MEMFD_MEMORY_ATTRIBUTES), 0);
	int err = set_attrs(gmem, 0, PAGE_SIZE, PRIVATE, NULL);
	/* Without per-file attributes (6.18, per-VM mode) the file has no ioctl (ENOTTY); with the series, EINVAL. */
	cr_expect_eq(err, file_attrs ? EINVAL : ENOTTY, "%s", strerror(err));
	sys_close(kvm);
	sys_close(gmem);
	sys_close(vm);
}

/* Pages convert independently, allocated or not, and keep their contents both ways. */
Test(attributes, in_place_conversion)
{
	struct gm_env e;
	char *p;

	attr_env(&e, GUEST_MEMFD_FLAG_MMAP | GUEST_MEMFD_FLAG_INIT_SHARED);
	p = sys_mmap(NULL, e.size, PROT_READ | PROT_WRITE, MAP_SHARED, e.gmem, 0);
	cr_assert_neq(p, MAP_FAILED);
	/* Pages 0..7 allocated with a pattern, 8..15 never touched. */
	for (int i = 0; i < PAGES / 2; i++)
		memset(p + i * PAGE_SIZE, 'a' + i, PAGE_SIZE);

	cr_assert_eq(set_attrs(e.gmem, 3 * PAGE_SIZE, PAGE_SIZE, PRIVATE, NULL), 0);
	for (int i = 0; i < PAGES; i++)
		cr_expect_eq(t_access_sigbus(p + i * PAGE_SIZE, false), i == 3, "page %d", i);

	/* A mixed range: page 3 is private already. */
	cr_assert_eq(set_attrs(e.gmem, 2 * PAGE_SIZE, 4 * PAGE_SIZE, PRIVATE, NULL), 0);
	for (int i = 0; i < PAGES; i++)
		cr_expect_eq(t_access_sigbus(p + i * PAGE_SIZE, false), i >= 2 && i < 6, "page %d", i);

	/* Back to shared one page in the middle: its contents are still there. */
	cr_assert_eq(set_attrs(e.gmem, 4 * PAGE_SIZE, PAGE_SIZE, 0, NULL), 0);
	cr_expect_eq(p[4 * PAGE_SIZE + 17], 'a' + 4);
	cr_expect(t_access_sigbus(p + 3 * PAGE_SIZE, false));
	cr_expect(t_access_sigbus(p + 5 * PAGE_SIZE, false));

	/* Unallocated pages convert as metadata and read zero once shared again. */
	cr_assert_eq(set_attrs(e.gmem, 8 * PAGE_SIZE, 8 * PAGE_SIZE, PRIVATE, NULL), 0);
	cr_expect(t_access_sigbus(p + 12 * PAGE_SIZE, true));
	cr_assert_eq(set_attrs(e.gmem, 8 * PAGE_SIZE, 8 * PAGE_SIZE, 0, NULL), 0);
	cr_expect_eq(p[12 * PAGE_SIZE], 0);

	/* The whole file back to shared: every page as it was. */
	cr_assert_eq(set_attrs(e.gmem, 0, e.size, 0, NULL), 0);
	for (int i = 0; i < PAGES / 2; i++)
		cr_expect_eq(p[i * PAGE_SIZE + PAGE_SIZE - 1], 'a' + i, "page %d", i);
	/* Converting what already has the attribute is a no-op that succeeds. */
	cr_expect_eq(set_attrs(e.gmem, 0, e.size, 0, NULL), 0);
	sys_munmap(p, e.size);
	t_env_teardown(&e);
}

/* A file created private starts private; converting it shared opens it to the host. */
Test(attributes, starts_private)
{
	struct gm_env e;

	attr_env(&e, GUEST_MEMFD_FLAG_MMAP);
	char *p = sys_mmap(NULL, e.size, PROT_READ | PROT_WRITE, MAP_SHARED, e.gmem, 0);

	cr_assert_neq(p, MAP_FAILED);
	cr_expect(t_access_sigbus(p, false));
	cr_assert_eq(set_attrs(e.gmem, 0, PAGE_SIZE, 0, NULL), 0);
	cr_expect_not(t_access_sigbus(p, true));
	cr_expect(t_access_sigbus(p + PAGE_SIZE, false));
	sys_munmap(p, e.size);
	t_env_teardown(&e);
}

/* Punching a hole frees memory and never changes attributes. */
Test(attributes, punch_hole_keeps_attributes)
{
	struct gm_env e;

	attr_env(&e, GUEST_MEMFD_FLAG_MMAP | GUEST_MEMFD_FLAG_INIT_SHARED);
	char *p = sys_mmap(NULL, e.size, PROT_READ | PROT_WRITE, MAP_SHARED, e.gmem, 0);

	cr_assert_neq(p, MAP_FAILED);
	memset(p, 0x77, e.size);
	cr_assert_eq(set_attrs(e.gmem, 0, PAGE_SIZE, PRIVATE, NULL), 0);
	cr_assert_eq(sys_fallocate(e.gmem, FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE, 0,
				   2 * PAGE_SIZE), 0);
	cr_expect(t_access_sigbus(p, false), "punched private page stays private");
	cr_expect_eq(p[PAGE_SIZE], 0, "punched shared page reads zero");
	cr_expect_eq(p[2 * PAGE_SIZE], 0x77);
	sys_munmap(p, e.size);
	t_env_teardown(&e);
}

/* A child forked before a conversion cannot read the page once it is private. */
Test(attributes, forked_child_loses_access)
{
	struct gm_env e;
	int status;

	attr_env(&e, GUEST_MEMFD_FLAG_MMAP | GUEST_MEMFD_FLAG_INIT_SHARED);
	volatile char *p = sys_mmap(NULL, e.size, PROT_READ | PROT_WRITE, MAP_SHARED, e.gmem, 0);

	cr_assert_neq(p, MAP_FAILED);
	p[0] = 1;
	int pipefd[2];
	cr_assert_eq(pipe(pipefd), 0);
	pid_t pid = fork();
	if (pid == 0) {
		char c;

		/* Wait for the parent's conversion, then touch the page: it must fault. */
		if (read(pipefd[0], &c, 1) != 1)
			_exit(2);
		/* Die by the fault itself, also where a sanitizer would catch it. */
		signal(SIGSEGV, SIG_DFL);
		signal(SIGBUS, SIG_DFL);
		(void)p[0];
		_exit(0);
	}
	cr_assert_eq(set_attrs(e.gmem, 0, PAGE_SIZE, PRIVATE, NULL), 0);
	cr_assert_eq(write(pipefd[1], "x", 1), 1);
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	cr_expect(WIFSIGNALED(status), "the child read a private page (status %#x)", status);
	sys_munmap((void *)p, e.size);
	t_env_teardown(&e);
}
