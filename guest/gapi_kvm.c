/* gapi on KVM: guest-physical memory through the identity map, vmcall, and OUT for ucalls. */
#include "gapi.h"
#include "layout.h"

/*
 * The VMM identity-maps all guest memory, so a gpa is also a virtual address.
 * volatile keeps every access as written: the VMM and the other vCPUs see
 * memory between exits, and a conversion or punch may change it under us.
 */
uint8_t gapi_read8(struct gapi *g, uint64_t gpa)
{
	return *(volatile uint8_t *)(uintptr_t)gpa;
}

uint64_t gapi_read64(struct gapi *g, uint64_t gpa)
{
	return *(volatile uint64_t *)(uintptr_t)gpa;
}

void gapi_write8(struct gapi *g, uint64_t gpa, uint8_t val)
{
	*(volatile uint8_t *)(uintptr_t)gpa = val;
}

void gapi_write64(struct gapi *g, uint64_t gpa, uint64_t val)
{
	*(volatile uint64_t *)(uintptr_t)gpa = val;
}

void gapi_set_access(struct gapi *g, unsigned access)
{
}

/*
 * KVM's hypercall registers (RAX = nr, RBX, RCX, RDX; result in RAX), trapped
 * with a one-byte OUT to libgmem's hypercall gate rather than VMCALL: hosts
 * such as kvm-pvm never complete a VMCALL, and libgmem turns the gate into
 * the same KVM_EXIT_HYPERCALL. The memory clobber orders the guest's stores
 * before the VMM handles the call.
 */
uint64_t gapi_hypercall(struct gapi *g, uint64_t nr, uint64_t a0, uint64_t a1, uint64_t a2)
{
	uint64_t ret;

	__asm__ volatile("outb %%al, %[port]"
			 : "=a"(ret)
			 : "a"(nr), "b"(a0), "c"(a1), "d"(a2), [port] "i"(GUEST_HYPERCALL_PORT)
			 : "memory");
	return ret;
}

/* The register contract of layout.h: DX = port, RDI = cmd, RSI = a0, R8 = a1, R9 = a2. */
void gapi_ucall(struct gapi *g, uint64_t cmd, uint64_t a0, uint64_t a1, uint64_t a2)
{
	register uint64_t r8 __asm__("r8") = a1;
	register uint64_t r9 __asm__("r9") = a2;

	__asm__ volatile("outb %%al, %%dx"
			 :
			 : "a"(0), "d"((uint16_t)GUEST_UCALL_PORT), "D"(cmd), "S"(a0), "r"(r8),
			   "r"(r9)
			 : "memory");
}
