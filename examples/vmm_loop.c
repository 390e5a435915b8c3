/* A VMM loop on a software vCPU: ucalls, a private memory fault, MMIO and an in-place conversion. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include <gmem/gmem.h>

#define SZ_2M     (2ULL << 20)
#define MMIO_GPA  0xfee00000ULL

static void die(const char *what)
{
	fprintf(stderr, "vmm: %s: %s\n", what, strerror(errno));
	exit(1);
}

/* The guest: runs inside KVM_RUN, touches memory only through gm_guest_*. */
static void guest(struct gm_guest *g, void *arg)
{
	(void)arg;
	/* SW_PROTECTED VM, file created without INIT_SHARED: these accesses are private. */
	gm_guest_write64(g, 0x1000, 42);
	GM_GUEST_ASSERT(g, gm_guest_read64(g, 0x1000) == 42);
	gm_guest_ucall(g, GM_UCALL_SYNC, 1, (uint64_t)1);

	/*
	 * No slot at 2 MiB yet. With AUTO access a GPA without a slot is shared (MMIO);
	 * a guest that asks for a private access, as a CoCo guest does, gets a memory fault.
	 */
	gm_guest_set_access(g, GM_ACCESS_PRIVATE);
	gm_guest_write64(g, SZ_2M, 7);

	/* A shared access where there is no slot is MMIO; a read gets what userspace puts in run->mmio. */
	gm_guest_set_access(g, GM_ACCESS_SHARED);
	uint32_t dev = gm_guest_read32(g, MMIO_GPA);
	gm_guest_set_access(g, GM_ACCESS_AUTO);

	/* Ask the host to make the page at 2 MiB shared (KVM_HC_MAP_GPA_RANGE). */
	uint64_t ret = gm_guest_hypercall(g, KVM_HC_MAP_GPA_RANGE, SZ_2M, 1,
					  KVM_MAP_GPA_RANGE_DECRYPTED | KVM_MAP_GPA_RANGE_PAGE_SZ_4K);

	/* Converted in place: the 7 written while it was private is still there. */
	GM_GUEST_ASSERT(g, gm_guest_read64(g, SZ_2M) == 7);
	gm_guest_ucall(g, GM_UCALL_DONE, 2, (uint64_t)dev, ret);
}

static void set_slot(int vm, uint32_t slot, uint64_t gpa, uint64_t size, int gmem, uint64_t off)
{
	struct kvm_userspace_memory_region2 r = {
		.slot = slot,
		.flags = KVM_MEM_GUEST_MEMFD,
		.guest_phys_addr = gpa,
		.memory_size = size,
		.userspace_addr = 0, /* unused: every access to this file is served from it */
		.guest_memfd = (uint32_t)gmem,
		.guest_memfd_offset = off,
	};

	if (gm_ioctl(vm, KVM_SET_USER_MEMORY_REGION2, &r) < 0)
		die("KVM_SET_USER_MEMORY_REGION2");
}

int main(void)
{
	int kvm = gm_open_kvm();
	if (kvm < 0)
		die("gm_open_kvm");
	/* Soft backend: guest C functions, whatever GMEM_BACKEND says. */
	int vm = gm_ioctl(kvm, KVM_CREATE_VM, KVM_X86_SW_PROTECTED_VM | GM_VM_BACKEND_SOFT);
	if (vm < 0)
		die("KVM_CREATE_VM");

	/* 4 MiB of private memory in 2 MiB folios (hugetlbfs if huge pages are reserved). */
	struct kvm_create_guest_memfd cg = {
		.size = 2 * SZ_2M,
		.flags = GUEST_MEMFD_FLAG_MMAP | GM_GUEST_MEMFD_FOLIO_2M,
	};
	int gmem = gm_ioctl(vm, KVM_CREATE_GUEST_MEMFD, &cg);
	if (gmem < 0)
		die("KVM_CREATE_GUEST_MEMFD");
	set_slot(vm, 0, 0, SZ_2M, gmem, 0); /* GPA [0, 2M) = file [0, 2M) */

	struct kvm_enable_cap cap = {
		.cap = KVM_CAP_EXIT_HYPERCALL,
		.args = { 1ULL << KVM_HC_MAP_GPA_RANGE },
	};
	if (gm_ioctl(vm, KVM_ENABLE_CAP, &cap) < 0)
		die("KVM_ENABLE_CAP");

	int vcpu = gm_ioctl(vm, KVM_CREATE_VCPU, 0);
	if (vcpu < 0)
		die("KVM_CREATE_VCPU");
	int run_size = gm_ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
	struct kvm_run *run = gm_mmap(NULL, (size_t)run_size, PROT_READ | PROT_WRITE, MAP_SHARED,
				      vcpu, 0);
	if (run == MAP_FAILED)
		die("mmap vcpu");
	int err = gm_vcpu_set_guest(vcpu, guest, NULL);
	if (err) {
		errno = -err; /* the library's own calls return -errno */
		die("gm_vcpu_set_guest");
	}

	for (;;) {
		if (gm_ioctl(vcpu, KVM_RUN, 0) < 0) {
			if (errno != EFAULT || run->exit_reason != KVM_EXIT_MEMORY_FAULT)
				die("KVM_RUN");
			/* The guest wants memory userspace must provide: here, the second slot. */
			printf("memory fault: gpa %#llx size %llu %s\n",
			       (unsigned long long)run->memory_fault.gpa,
			       (unsigned long long)run->memory_fault.size,
			       run->memory_fault.flags & KVM_MEMORY_EXIT_FLAG_PRIVATE ? "private"
										 : "shared");
			set_slot(vm, 1, SZ_2M, SZ_2M, gmem, SZ_2M);
			continue; /* the guest retries the same access */
		}
		switch (run->exit_reason) {
		case KVM_EXIT_IO: {
			struct gm_ucall uc;

			if (run->io.port != GM_UCALL_PORT || gm_vcpu_get_ucall(vcpu, &uc))
				die("unexpected port I/O");
			if (uc.cmd == GM_UCALL_ABORT) {
				fprintf(stderr, "guest assertion failed: %s\n", uc.msg);
				return 1;
			}
			if (uc.cmd == GM_UCALL_DONE) {
				printf("done: mmio read %#llx, hypercall ret %lld\n",
				       (unsigned long long)uc.args[0], (long long)uc.args[1]);
				/* The page is shared now: the VMM reads it in place. */
				uint64_t *host = gm_mmap(NULL, 2 * SZ_2M, PROT_READ, MAP_SHARED, gmem, 0);

				if (host == MAP_FAILED)
					die("mmap gmem");
				printf("host reads %llu at file offset 2 MiB\n",
				       (unsigned long long)host[SZ_2M / 8]);
				gm_munmap(host, 2 * SZ_2M);
				goto out;
			}
			printf("sync %llu\n", (unsigned long long)uc.args[0]);
			break;
		}
		case KVM_EXIT_MMIO:
			printf("mmio %s gpa %#llx len %u\n", run->mmio.is_write ? "write" : "read",
			       (unsigned long long)run->mmio.phys_addr, run->mmio.len);
			if (!run->mmio.is_write) {
				uint32_t v = 0xcafe;

				memcpy(run->mmio.data, &v, sizeof(v));
			}
			break;
		case KVM_EXIT_HYPERCALL: {
			/* GPA == file offset here: both slots map the file one to one. */
			struct kvm_memory_attributes2 attr = {
				.offset = run->hypercall.args[0],
				.size = run->hypercall.args[1] * 4096,
				.attributes = run->hypercall.args[2] & KVM_MAP_GPA_RANGE_ENCRYPTED
						      ? KVM_MEMORY_ATTRIBUTE_PRIVATE : 0,
			};

			printf("hypercall %llu: gpa %#llx, %llu pages, attrs %#llx\n",
			       (unsigned long long)run->hypercall.nr,
			       (unsigned long long)run->hypercall.args[0],
			       (unsigned long long)run->hypercall.args[1],
			       (unsigned long long)run->hypercall.args[2]);
			/* In-place conversion; the guest gets 0 or an error in RAX. */
			run->hypercall.ret = gm_ioctl(gmem, KVM_SET_MEMORY_ATTRIBUTES2, &attr) < 0
						     ? (uint64_t)-KVM_EINVAL : 0;
			break;
		}
		case KVM_EXIT_HLT:
			printf("guest returned\n");
			goto out;
		default:
			fprintf(stderr, "unexpected exit %u\n", run->exit_reason);
			return 1;
		}
	}
out:
	gm_munmap(run, (size_t)run_size);
	gm_close(vcpu);
	gm_close(gmem);
	gm_close(vm);
	gm_close(kvm);
	return 0;
}
