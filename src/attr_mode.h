/* Where private/shared lives, library-wide: in each guest_memfd or per VM (kvm.vm_memory_attributes). */
#ifndef GMEM_ATTR_MODE_H
#define GMEM_ATTR_MODE_H

#include "internal.h"

/* The setting as it stands; GMEM_VM_MEMORY_ATTRIBUTES decides it if nothing set it yet. */
bool attr_mode_per_vm(void);
/* Fixes the setting for the library's lifetime; vm_create calls it, as loading kvm.ko would. */
bool attr_mode_latch(void);

#endif
