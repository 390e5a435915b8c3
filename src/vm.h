/* The VM object. */
#ifndef GMEM_VM_H
#define GMEM_VM_H

#include "internal.h"

struct vm {
	struct gm_object obj;
	unsigned long type;
	/* Serialises memslot updates, as kvm->slots_lock. Taken before any file's invalidate_lock. */
	pthread_mutex_t slots_lock;
};

#endif
