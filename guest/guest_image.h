/* The default guest as a host program links it: the KVM image's bytes and the soft-backend entry. */
#ifndef GUEST_GUEST_IMAGE_H
#define GUEST_GUEST_IMAGE_H

#include <stdint.h>

/*
 * The flat image (build/guest/guest.bin) to load at GUEST_IMAGE_GPA; its
 * first byte is the entry point. Size: guest_image_end - guest_image_start.
 */
extern const uint8_t guest_image_start[];
extern const uint8_t guest_image_end[];

/*
 * The same scenario as a soft guest, for gm_vcpu_set_guest(vcpu_fd,
 * guest_soft_entry, (void *)(uintptr_t)vcpu_id). The boot parameters are
 * read at GUEST_BOOT_PARAMS_GPA, as on KVM.
 */
struct gm_guest;
void guest_soft_entry(struct gm_guest *g, void *arg);
/*
 * The scenario as an SEV-SNP guest (gmem-vm --vm snp): it validates each page
 * of unmeasured private memory the first time it touches it, from its #VC
 * handler, as a guest accepts memory lazily.
 */
void guest_snp_soft_entry(struct gm_guest *g, void *arg);

/*
 * The stress guest (guest/stress.c) for gmem-stress, both ways: the image
 * build/guest/stress.bin, entered as the default one is, and the soft entry,
 * for gm_vcpu_set_guest(vcpu_fd, stress_guest_soft_entry, (void *)(uintptr_t)vcpu_id).
 */
extern const uint8_t stress_image_start[];
extern const uint8_t stress_image_end[];
void stress_guest_soft_entry(struct gm_guest *g, void *arg);

#endif
