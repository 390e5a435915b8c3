/*
 * A /dev/kvm program that knows nothing of libgmem: plain open, ioctl, mmap
 * and pwrite on a guest_memfd. README runs it on the host and under gmem-run.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <gmem/kvm.h> /* the UAPI: the same names and numbers as <linux/kvm.h> */

static sigjmp_buf bus;

static void on_sigbus(int sig)
{
	siglongjmp(bus, sig);
}

static int fail(const char *what)
{
	printf("%s: %s\n", what, strerror(errno));
	return 1;
}

int main(void)
{
	struct kvm_create_guest_memfd args = {
		.size = 2 << 20, .flags = GUEST_MEMFD_FLAG_MMAP | GUEST_MEMFD_FLAG_INIT_SHARED,
	};
	struct kvm_memory_attributes2 to_private = {
		.offset = 0, .size = 4096, .attributes = KVM_MEMORY_ATTRIBUTE_PRIVATE,
	};
	int kvm, vm, gmem;
	char *mem;

	kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (kvm < 0)
		return fail("open /dev/kvm");
	vm = ioctl(kvm, KVM_CREATE_VM, KVM_X86_SW_PROTECTED_VM);
	if (vm < 0)
		return fail("KVM_CREATE_VM(KVM_X86_SW_PROTECTED_VM)");
	gmem = ioctl(vm, KVM_CREATE_GUEST_MEMFD, &args);
	if (gmem < 0)
		return fail("KVM_CREATE_GUEST_MEMFD");
	printf("guest_memfd %d: 2 MiB, mmap-able, shared\n", gmem);
	if (pwrite(gmem, "x", 1, 0) < 0)
		printf("pwrite on it: %s (guest_memfd has no write method)\n", strerror(errno));
	mem = mmap(NULL, args.size, PROT_READ | PROT_WRITE, MAP_SHARED, gmem, 0);
	if (mem == MAP_FAILED)
		return fail("mmap");
	strcpy(mem, "hello");
	printf("wrote \"%s\" through the mapping\n", mem);
	if (ioctl(gmem, KVM_SET_MEMORY_ATTRIBUTES2, &to_private) < 0)
		return fail("KVM_SET_MEMORY_ATTRIBUTES2");
	signal(SIGBUS, on_sigbus);
	if (!sigsetjmp(bus, 1))
		printf("read it back after converting to private: '%c'\n", mem[0]);
	else
		printf("read it back after converting to private: SIGBUS\n");
	munmap(mem, args.size);
	close(gmem);
	close(vm);
	close(kvm);
	return 0;
}
