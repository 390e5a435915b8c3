/* The kvm.vm_memory_attributes setting: read once, fixed once the first VM exists. */
#include <stdlib.h>
#include <string.h>

#include "attr_mode.h"

/* Unread until the environment or gm_set_vm_memory_attributes decides. */
#define MODE_UNSET   0u
#define MODE_FILE    1u
#define MODE_PER_VM  2u
/* Set with the mode once a VM exists: the kernel's parameter is read-only (0444) too. */
#define MODE_LATCHED 4u

static _Atomic unsigned attr_mode = MODE_UNSET;

/* GMEM_VM_MEMORY_ATTRIBUTES=1 selects per-VM attributes; unset or 0 keeps them in the file. */
static unsigned mode_from_env(void)
{
	const char *env = getenv("GMEM_VM_MEMORY_ATTRIBUTES");

	return env && !strcmp(env, "1") ? MODE_PER_VM : MODE_FILE;
}

static unsigned mode_load(void)
{
	unsigned mode = atomic_load(&attr_mode);

	if (mode == MODE_UNSET) {
		unsigned want = mode_from_env();

		/* Another thread may have decided first: its answer stands. */
		if (atomic_compare_exchange_strong(&attr_mode, &mode, want))
			mode = want;
	}
	return mode;
}

bool attr_mode_per_vm(void)
{
	return mode_load() & MODE_PER_VM;
}

bool attr_mode_latch(void)
{
	unsigned mode = mode_load();

	while (!(mode & MODE_LATCHED) &&
	       !atomic_compare_exchange_weak(&attr_mode, &mode, mode | MODE_LATCHED))
		;
	return mode & MODE_PER_VM;
}

GM_EXPORT int gm_set_vm_memory_attributes(bool on)
{
	unsigned mode = atomic_load(&attr_mode);
	unsigned want = on ? MODE_PER_VM : MODE_FILE;

	do {
		if (mode & MODE_LATCHED)
			return -EBUSY;
	} while (!atomic_compare_exchange_weak(&attr_mode, &mode, want));
	return 0;
}
