/* The flat KVM guest image, embedded in a host program under stable symbol names. */

/*
 * The Makefile passes GUEST_BIN, the image's path, and IMAGE_NAME, the
 * symbols' prefix: guest_image (build/guest/guest.bin) or stress_image.
 */
#ifndef IMAGE_NAME
#define IMAGE_NAME guest_image
#endif
#define PASTE2(a, b) a##b
#define PASTE(a, b) PASTE2(a, b)
#define IMAGE_START PASTE(IMAGE_NAME, _start)
#define IMAGE_END PASTE(IMAGE_NAME, _end)

	.section .rodata.guest_image, "a", @progbits
	.balign 16
	.globl IMAGE_START
	.type IMAGE_START, @object
IMAGE_START:
	.incbin GUEST_BIN
	.globl IMAGE_END
	.type IMAGE_END, @object
IMAGE_END:
	.size IMAGE_START, IMAGE_END - IMAGE_START

	.section .note.GNU-stack, "", @progbits
