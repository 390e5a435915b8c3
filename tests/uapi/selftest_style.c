/* A VMM written as the kernel's KVM selftests are, built on <gmem/gmem.h> alone. */
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

#include <criterion/criterion.h>

#include <gmem/gmem.h>

struct selftest_vcpu {
	int fd;
	struct kvm_run *run;
	size_t run_size;
};

/*
 * The selftests' vcpu_run_complete_io() brackets a KVM_RUN with these stores so that
 * the run completes pending I/O without entering the guest.
 */
static void set_immediate_exit(struct selftest_vcpu *vcpu, bool on)
{
	vcpu->run->immediate_exit = on;
}

/* How the selftests print an exit they did not expect: %llx, as __u64 is unsigned long long. */
static int describe_system_event(char *buf, size_t len, const struct kvm_run *run)
{
	return snprintf(buf, len, "type %u ndata %u flags 0x%llx data[1] 0x%llx",
			run->system_event.type, run->system_event.ndata,
			run->system_event.flags, run->system_event.data[1]);
}

static struct selftest_vcpu vcpu_create(int vm)
{
	struct selftest_vcpu vcpu = { .fd = gm_ioctl(vm, KVM_CREATE_VCPU, 0) };
	int kvm = gm_open_kvm();
	long size = gm_ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);

	cr_assert_geq(vcpu.fd, 0);
	cr_assert_geq(size, (long)sizeof(struct kvm_run));
	vcpu.run_size = size;
	vcpu.run = gm_mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu.fd, 0);
	cr_assert_neq(vcpu.run, MAP_FAILED);
	gm_close(kvm);
	return vcpu;
}

Test(uapi, selftest_style_run_fields)
{
	int kvm = gm_open_kvm();
	int vm = gm_ioctl(kvm, KVM_CREATE_VM, KVM_X86_DEFAULT_VM);
	struct selftest_vcpu vcpu;
	const volatile __u8 *bytes;
	char text[128];

	cr_assert_geq(vm, 0);
	vcpu = vcpu_create(vm);
	bytes = (const volatile __u8 *)vcpu.run;

	/* The kernel reads immediate_exit from byte 1 of the run area. */
	set_immediate_exit(&vcpu, true);
	cr_expect_eq(bytes[1], 1);
	set_immediate_exit(&vcpu, false);
	cr_expect_eq(bytes[1], 0);

	/* flags is the old name of data[0]: the same eight bytes. */
	vcpu.run->system_event.type = KVM_SYSTEM_EVENT_RESET;
	vcpu.run->system_event.ndata = 2;
	vcpu.run->system_event.data[0] = 0x5a;
	vcpu.run->system_event.data[1] = 0xa5;
	cr_expect_eq(vcpu.run->system_event.flags, 0x5a);
	describe_system_event(text, sizeof(text), vcpu.run);
	cr_expect_str_eq(text, "type 2 ndata 2 flags 0x5a data[1] 0xa5");

	gm_munmap(vcpu.run, vcpu.run_size);
	gm_close(vcpu.fd);
	gm_close(vm);
	gm_close(kvm);
}
