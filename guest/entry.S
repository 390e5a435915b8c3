/* The microVM guest's entry point: the first byte of the image, run by every vCPU. */

/*
 * The VMM enters in 64-bit mode with RDI = vCPU id, RSI = boot parameters'
 * gpa and RSP at the top of this vCPU's stack; it has no loader, so nothing
 * here may need relocating.
 */
/* GUEST_MAIN: guest_scenario, or stress_guest_scenario for the stress image. */
#ifndef GUEST_MAIN
#define GUEST_MAIN guest_scenario
#endif

	.section .text.entry, "ax", @progbits
	.code64
	.globl guest_entry
	.type guest_entry, @function
guest_entry:
	cld				/* the C ABI assumes DF clear; RFLAGS is the VMM's */
	and	$-16, %rsp		/* the C ABI wants RSP 16-aligned at the call */
	mov	%rsi, %rdx		/* GUEST_MAIN(NULL, vcpu, boot_params_gpa) */
	mov	%edi, %esi
	xor	%edi, %edi
	call	GUEST_MAIN
1:	hlt				/* done: the VMM sees KVM_EXIT_HLT */
	jmp	1b
	.size guest_entry, . - guest_entry

	.section .note.GNU-stack, "", @progbits
