/* The flat KVM guest image, embedded in a host program under stable symbol names. */

/* GUEST_BIN names build/guest/guest.bin; the Makefile passes it. */
	.section .rodata.guest_image, "a", @progbits
	.balign 16
	.globl guest_image_start
	.type guest_image_start, @object
guest_image_start:
	.incbin GUEST_BIN
	.globl guest_image_end
	.type guest_image_end, @object
guest_image_end:
	.size guest_image_start, guest_image_end - guest_image_start

	.section .note.GNU-stack, "", @progbits
