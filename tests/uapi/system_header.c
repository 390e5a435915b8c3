/* <gmem/gmem.h> after the system's <linux/kvm.h>: it compiles, and every shared name agrees. */
#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <string.h>

#include <linux/kvm.h>
#include <linux/kvm_para.h>

/*
 * SYS_<group>: whether the system headers have a group, by the macro that came with it
 * in the kernel (the one <gmem/kvm.h> tests), noted before libgmem's header fills the gaps.
 */
#ifdef KVM_GET_API_VERSION
#define SYS_BASE 1
#else
#define SYS_BASE 0
#endif
#ifdef KVM_SYSTEM_EVENT_TDX_FATAL
#define SYS_TDX_FATAL 1
#else
#define SYS_TDX_FATAL 0
#endif
#ifdef KVM_EXIT_HYPERCALL_LONG_MODE
#define SYS_HC_FLAGS 1
#else
#define SYS_HC_FLAGS 0
#endif
#ifdef KVM_CREATE_GUEST_MEMFD
#define SYS_GMEM 1
#else
#define SYS_GMEM 0
#endif
#ifdef KVM_X86_DEFAULT_VM
#define SYS_VM_TYPES 1
#else
#define SYS_VM_TYPES 0
#endif
#ifdef KVM_X86_SEV_VM
#define SYS_SEV_VM 1
#else
#define SYS_SEV_VM 0
#endif
#ifdef KVM_X86_SNP_VM
#define SYS_SNP_VM 1
#else
#define SYS_SNP_VM 0
#endif
#ifdef KVM_X86_TDX_VM
#define SYS_TDX_VM 1
#else
#define SYS_TDX_VM 0
#endif
#ifdef KVM_PRE_FAULT_MEMORY
#define SYS_PREFAULT 1
#else
#define SYS_PREFAULT 0
#endif
#ifdef GUEST_MEMFD_FLAG_MMAP
#define SYS_GMEM_FLAGS 1
#else
#define SYS_GMEM_FLAGS 0
#endif
#ifdef KVM_SET_MEMORY_ATTRIBUTES2
#define SYS_ATTR2 1
#else
#define SYS_ATTR2 0
#endif
#ifdef KVM_HC_MAP_GPA_RANGE
#define SYS_HC 1
#else
#define SYS_HC 0
#endif
#ifdef KVM_MAP_GPA_RANGE_PAGE_SZ_4K
#define SYS_MAP_GPA 1
#else
#define SYS_MAP_GPA 0
#endif
#ifdef KVM_ENOSYS
#define SYS_HC_ERRNO 1
#else
#define SYS_HC_ERRNO 0
#endif
/* Members of the system's kvm_run that are newer than the header's base. */
#ifdef KVM_EXIT_LOONGARCH_IOCSR
#define SYS_IOCSR 1
#else
#define SYS_IOCSR 0
#endif
#ifdef KVM_EXIT_TDX
#define SYS_TDX_EXIT 1
#else
#define SYS_TDX_EXIT 0
#endif
#ifdef KVM_EXIT_ARM_SEA
#define SYS_ARM_SEA 1
#else
#define SYS_ARM_SEA 0
#endif
#ifdef KVM_EXIT_SNP_REQ_CERTS
#define SYS_SNP_CERTS 1
#else
#define SYS_SNP_CERTS 0
#endif

#include <gmem/gmem.h>

#include <criterion/criterion.h>

#include "own_layout.h"

#define UAPI_HAVE(group) SYS_##group

#define OWN_(kind, line) OWN_##kind##_##line
#define OWN(kind, line) OWN_(kind, line)

/*
 * Every shared name as this translation unit sees it (the system's where it has one,
 * libgmem's otherwise) against libgmem's header alone (own_layout.h).
 */
#define UAPI_STRUCT(group, tag) \
	_Static_assert(sizeof(struct tag) == OWN(SIZE, __LINE__), "size of struct " #tag);
#define UAPI_FIELD(group, tag, member)                                                   \
	_Static_assert(offsetof(struct tag, member) == OWN(OFF, __LINE__),              \
		       "offset of " #tag "." #member);                                   \
	_Static_assert(sizeof(((struct tag *)0)->member) == OWN(SIZE, __LINE__),        \
		       "size of " #tag "." #member);
#define UAPI_CONST(group, name)                                                          \
	_Static_assert((unsigned long long)(name) == OWN(VALUE, __LINE__),              \
		       "value of " #name);                                               \
	_Static_assert(sizeof(name) == OWN(SIZE, __LINE__), "type width of " #name);
#include "shared.def"
#undef UAPI_STRUCT
#undef UAPI_FIELD
#undef UAPI_CONST

/* The same list at run time, to report what the system header was compared on. */
struct shared_name {
	const char *group;
	const char *name;
	bool from_system;
};

#define UAPI_STRUCT(group, tag) { #group, "struct " #tag, SYS_##group },
#define UAPI_FIELD(group, tag, member) { #group, #tag "." #member, SYS_##group },
#define UAPI_CONST(group, name) { #group, #name, SYS_##group },
static const struct shared_name shared_names[] = {
#include "shared.def"
};

static bool group_listed_before(size_t i)
{
	for (size_t j = 0; j < i; j++)
		if (!strcmp(shared_names[j].group, shared_names[i].group))
			return true;
	return false;
}

/* Names each group the system header lacks once, with its first name. */
static void log_libgmem_only(size_t n)
{
	for (size_t i = 0; i < n; i++) {
		const struct shared_name *s = &shared_names[i];

		if (!s->from_system && !group_listed_before(i))
			cr_log_info("  not in the system header: group %s (%s...)", s->group,
				    s->name);
	}
}

Test(uapi, system_header_agrees)
{
	size_t n = sizeof(shared_names) / sizeof(shared_names[0]), compared = 0;

	for (size_t i = 0; i < n; i++)
		compared += shared_names[i].from_system;
	/* The base ABI must have come from <linux/kvm.h>, or nothing was compared. */
	cr_assert(SYS_BASE, "<linux/kvm.h> did not define KVM_GET_API_VERSION");
	cr_log_info("%zu of %zu shared names compared with the system's <linux/kvm.h>; "
		    "the others are newer than it and come from <gmem/kvm.h>", compared, n);
	log_libgmem_only(n);
}
