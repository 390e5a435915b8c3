/* Host side of an x86-64 boot on the kvm backend: identity page tables and long-mode registers. */
#ifndef TOOLS_X86_BOOT_H
#define TOOLS_X86_BOOT_H

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <gmem/gmem.h>

#define X86_CR0_PE (1ULL << 0)
#define X86_CR0_ET (1ULL << 4)
#define X86_CR0_NE (1ULL << 5)
#define X86_CR0_PG (1ULL << 31)
#define X86_CR4_PAE (1ULL << 5)
#define X86_EFER_LME (1ULL << 8)
#define X86_EFER_LMA (1ULL << 10)
#define X86_PTE_P (1ULL << 0)
#define X86_PTE_RW (1ULL << 1)
#define X86_PTE_PS (1ULL << 7)

/* Bytes of page tables that identity-map mem_size with 2 MiB pages (PML4, PDPT, PDs). */
static inline uint64_t x86_page_tables_size(uint64_t mem_size)
{
	uint64_t gib = (mem_size + (1ULL << 30) - 1) >> 30;

	return (2 + gib) * 4096;
}

/* Writes the page tables at gpa into host memory that mirrors guest memory from gpa 0. */
static inline void x86_build_page_tables(void *mem, uint64_t gpa, uint64_t mem_size)
{
	uint64_t *pml4 = (uint64_t *)((char *)mem + gpa);
	uint64_t *pdpt = pml4 + 512;
	uint64_t gib = (mem_size + (1ULL << 30) - 1) >> 30;

	memset(pml4, 0, x86_page_tables_size(mem_size));
	pml4[0] = (gpa + 4096) | X86_PTE_P | X86_PTE_RW;
	for (uint64_t g = 0; g < gib && g < 512; g++) {
		uint64_t *pd = pml4 + 512 * (2 + g);

		pdpt[g] = (gpa + 4096 * (2 + g)) | X86_PTE_P | X86_PTE_RW;
		for (uint64_t i = 0; i < 512; i++)
			pd[i] = ((g << 30) + (i << 21)) | X86_PTE_P | X86_PTE_RW | X86_PTE_PS;
	}
}

/*
 * The host's supported CPUID for a kvm-backend vCPU: long mode needs LM in the
 * guest's CPUID. Asked of the host's /dev/kvm itself: libgmem's system fd
 * answers for soft vCPUs unless GMEM_BACKEND makes kvm the default.
 */
static inline int x86_set_cpuid(int vcpu_fd)
{
	size_t n = 256;
	struct kvm_cpuid2 *cpuid = calloc(1, sizeof(*cpuid) + n * sizeof(cpuid->entries[0]));
	int host = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	int ret;

	if (!cpuid || host < 0) {
		ret = host < 0 ? -errno : -ENOMEM;
		free(cpuid);
		if (host >= 0)
			close(host);
		return ret;
	}
	cpuid->nent = (uint32_t)n;
	ret = ioctl(host, KVM_GET_SUPPORTED_CPUID, cpuid);
	if (!ret)
		ret = gm_ioctl(vcpu_fd, KVM_SET_CPUID2, cpuid);
	ret = ret ? -errno : 0;
	close(host);
	free(cpuid);
	return ret;
}

/* 64-bit mode with paging on at entry, stack and first two arguments as the SysV ABI passes them. */
static inline int x86_enter_long_mode(int vcpu_fd, uint64_t page_tables_gpa, uint64_t rip,
				      uint64_t rsp, uint64_t rdi, uint64_t rsi)
{
	struct kvm_segment code = {
		.limit = 0xffffffff, .selector = 8, .type = 11, .present = 1, .s = 1, .l = 1, .g = 1,
	};
	struct kvm_segment data = {
		.limit = 0xffffffff, .selector = 16, .type = 3, .present = 1, .db = 1, .s = 1, .g = 1,
	};
	struct kvm_sregs sregs;
	struct kvm_regs regs = { .rip = rip, .rsp = rsp, .rdi = rdi, .rsi = rsi, .rflags = 2 };

	if (gm_ioctl(vcpu_fd, KVM_GET_SREGS, &sregs))
		return -errno;
	sregs.cs = code;
	sregs.ds = sregs.es = sregs.fs = sregs.gs = sregs.ss = data;
	sregs.cr3 = page_tables_gpa;
	sregs.cr4 = X86_CR4_PAE;
	sregs.cr0 = X86_CR0_PE | X86_CR0_ET | X86_CR0_NE | X86_CR0_PG;
	sregs.efer = X86_EFER_LME | X86_EFER_LMA;
	if (gm_ioctl(vcpu_fd, KVM_SET_SREGS, &sregs) || gm_ioctl(vcpu_fd, KVM_SET_REGS, &regs))
		return -errno;
	return 0;
}

#endif
