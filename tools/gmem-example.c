/* gmem-example: walks through a guest_memfd's lifecycle on libgmem and says what happens. */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/falloc.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include <gmem/gmem.h>

#define MIB (1ULL << 20)

static sigjmp_buf probe_jmp;

static void on_sigbus(int sig)
{
	(void)sig;
	siglongjmp(probe_jmp, 1);
}

/* Reads one byte; reports whether the host was refused with SIGBUS. */
static int probe(volatile char *p, char *out)
{
	if (sigsetjmp(probe_jmp, 1))
		return -1;
	*out = *p;
	return 0;
}

static void die(const char *what)
{
	fprintf(stderr, "gmem-example: %s: %s\n", what, strerror(errno));
	exit(1);
}

static void show(int fd, const char *when)
{
	struct gm_gmem_info info;
	struct gm_stats stats;

	gm_gmem_info(fd, &info);
	gm_stats(&stats);
	printf("   %-28s allocated %6llu KiB, library metadata %llu bytes\n", when,
	       (unsigned long long)(info.allocated_bytes >> 10),
	       (unsigned long long)stats.metadata_bytes);
}

int main(void)
{
	struct sigaction sa = { .sa_handler = on_sigbus };
	const uint64_t size = 8 * MIB;
	char c;

	sigaction(SIGBUS, &sa, NULL);
	printf("libgmem guest_memfd walkthrough\n\n");

	int kvm = gm_open_kvm();
	if (kvm < 0)
		die("gm_open_kvm");
	printf("1. opened the system fd %d; KVM_CAP_GUEST_MEMFD_FLAGS = %#x\n", kvm,
	       gm_ioctl(kvm, KVM_CHECK_EXTENSION, KVM_CAP_GUEST_MEMFD_FLAGS));

	int vm = gm_ioctl(kvm, KVM_CREATE_VM, KVM_X86_SW_PROTECTED_VM);
	if (vm < 0)
		die("KVM_CREATE_VM");
	printf("2. created a KVM_X86_SW_PROTECTED_VM: fd %d\n", vm);

	struct kvm_create_guest_memfd shared = {
		.size = size, .flags = GUEST_MEMFD_FLAG_MMAP | GUEST_MEMFD_FLAG_INIT_SHARED,
	};
	int gmem = gm_ioctl(vm, KVM_CREATE_GUEST_MEMFD, &shared);
	if (gmem < 0)
		die("KVM_CREATE_GUEST_MEMFD");
	struct stat st;
	gm_fstat(gmem, &st);
	printf("3. created an %llu MiB guest_memfd (MMAP | INIT_SHARED): fd %d, st_size %lld, inode %lu\n",
	       (unsigned long long)(size / MIB), gmem, (long long)st.st_size,
	       (unsigned long)st.st_ino);
	show(gmem, "right after creation:");

	char *host = gm_mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, gmem, 0);
	if (host == MAP_FAILED)
		die("gm_mmap");
	memset(host, 'g', size);
	printf("4. mapped it and wrote %llu MiB through the host mapping\n",
	       (unsigned long long)(size / MIB));
	show(gmem, "after the writes:");

	if (gm_fallocate(gmem, FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE, 0, 4 * MIB) < 0)
		die("punch hole");
	printf("5. punched a hole over the first 4 MiB: byte 0 now reads %d, byte at 4 MiB reads '%c'\n",
	       host[0], host[4 * MIB]);
	show(gmem, "after the punch:");

	errno = 0;
	if (gm_read(gmem, &c, 1) < 0)
		printf("6. read(2) on the fd is refused as the kernel refuses it: %s\n",
		       strerror(errno));

	struct kvm_create_guest_memfd private = { .size = 2 * MIB, .flags = GUEST_MEMFD_FLAG_MMAP };
	int priv = gm_ioctl(vm, KVM_CREATE_GUEST_MEMFD, &private);
	char *pmap = gm_mmap(NULL, 2 * MIB, PROT_READ, MAP_SHARED, priv, 0);
	if (priv < 0 || pmap == MAP_FAILED)
		die("private guest_memfd");
	printf("7. a guest_memfd without INIT_SHARED is private: a host read %s\n",
	       probe(pmap, &c) ? "raises SIGBUS" : "succeeded (unexpected)");
	gm_munmap(pmap, 2 * MIB);
	gm_close(priv);

	gm_close(vm);
	printf("8. closed the VM fd; the guest_memfd keeps the VM alive: mapping still reads '%c'\n",
	       host[6 * MIB]);
	gm_munmap(host, size);
	gm_close(gmem);
	gm_close(kvm);
	struct gm_stats stats;
	gm_stats(&stats);
	printf("9. closed everything: %llu files, %llu VMs and %llu library fds left\n",
	       (unsigned long long)stats.gmem_files, (unsigned long long)stats.vms,
	       (unsigned long long)stats.open_fds);
	return 0;
}
