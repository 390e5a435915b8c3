/* The small guest API the scenario is written against: one source, on KVM or as a soft guest. */
#ifndef GUEST_GAPI_H
#define GUEST_GAPI_H

#include <stddef.h>
#include <stdint.h>

/* Soft backend: wraps the vCPU's struct gm_guest. On KVM: unused (NULL). */
struct gapi;

uint8_t gapi_read8(struct gapi *g, uint64_t gpa);
uint64_t gapi_read64(struct gapi *g, uint64_t gpa);
void gapi_write8(struct gapi *g, uint64_t gpa, uint8_t val);
void gapi_write64(struct gapi *g, uint64_t gpa, uint64_t val);
/* Soft backend: how later accesses reach memory (enum gm_access). On KVM the
 * guest has no such choice (no C-bit on a DEFAULT host VM): nothing happens. */
void gapi_set_access(struct gapi *g, unsigned access);
/* KVM hypercall: nr in RAX, a0..a2 in RBX, RCX, RDX; returns RAX. */
uint64_t gapi_hypercall(struct gapi *g, uint64_t nr, uint64_t a0, uint64_t a1, uint64_t a2);
/* An exit to the VMM carrying a command and three values (see layout.h). */
void gapi_ucall(struct gapi *g, uint64_t cmd, uint64_t a0, uint64_t a1, uint64_t a2);

/* The stress guest (guest/stress.c): gmem-stress's commands until it says quit. */
void stress_guest_scenario(struct gapi *g, unsigned vcpu, uint64_t boot_params_gpa);

/* The scenario: runs on every vCPU with its id and the boot parameters' address. */
void guest_scenario(struct gapi *g, unsigned vcpu, uint64_t boot_params_gpa);

#endif
