/* Linux KVM UAPI values (names, structs, numbers) for everything libgmem covers. */
#ifndef GMEM_KVM_H
#define GMEM_KVM_H

/*
 * Same names and values as Linux's <linux/kvm.h> (6.18, plus the in-place
 * conversion series where noted). Not meant to be included together with it.
 */
#include <stdint.h>
#include <sys/ioctl.h>

typedef uint8_t __gm_u8;
typedef uint16_t __gm_u16;
typedef uint32_t __gm_u32;
typedef uint64_t __gm_u64;

#define KVM_API_VERSION 12
#define KVMIO 0xAE

/* System ioctls */
#define KVM_GET_API_VERSION     _IO(KVMIO, 0x00)
#define KVM_CREATE_VM           _IO(KVMIO, 0x01)
#define KVM_CHECK_EXTENSION     _IO(KVMIO, 0x03)
#define KVM_GET_VCPU_MMAP_SIZE  _IO(KVMIO, 0x04)

/* VM types (x86) */
#define KVM_X86_DEFAULT_VM      0
#define KVM_X86_SW_PROTECTED_VM 1
#define KVM_X86_SEV_VM          2
#define KVM_X86_SEV_ES_VM       3
#define KVM_X86_SNP_VM          4
#define KVM_X86_TDX_VM          5

/* Capabilities */
#define KVM_CAP_IRQCHIP               0
#define KVM_CAP_USER_MEMORY           3
#define KVM_CAP_NR_MEMSLOTS           10
#define KVM_CAP_ENABLE_CAP_VM         98
#define KVM_CAP_EXIT_HYPERCALL        201
#define KVM_CAP_USER_MEMORY2          231
#define KVM_CAP_MEMORY_FAULT_INFO     232
#define KVM_CAP_MEMORY_ATTRIBUTES     233
#define KVM_CAP_GUEST_MEMFD           234
#define KVM_CAP_VM_TYPES              235
#define KVM_CAP_PRE_FAULT_MEMORY      236
#define KVM_CAP_GUEST_MEMFD_FLAGS     244
/* In-place conversion series v8: per-file attributes through the guest_memfd. */
#define KVM_CAP_GUEST_MEMFD_MEMORY_ATTRIBUTES 250

/* VM ioctls */
#define KVM_CREATE_VCPU         _IO(KVMIO, 0x41)

struct kvm_userspace_memory_region {
	__gm_u32 slot;
	__gm_u32 flags;
	__gm_u64 guest_phys_addr;
	__gm_u64 memory_size;
	__gm_u64 userspace_addr;
};

struct kvm_userspace_memory_region2 {
	__gm_u32 slot;
	__gm_u32 flags;
	__gm_u64 guest_phys_addr;
	__gm_u64 memory_size;
	__gm_u64 userspace_addr;
	__gm_u64 guest_memfd_offset;
	__gm_u32 guest_memfd;
	__gm_u32 pad1;
	__gm_u64 pad2[14];
};

#define KVM_MEM_LOG_DIRTY_PAGES (1UL << 0)
#define KVM_MEM_READONLY        (1UL << 1)
#define KVM_MEM_GUEST_MEMFD     (1UL << 2)

#define KVM_SET_USER_MEMORY_REGION  _IOW(KVMIO, 0x46, struct kvm_userspace_memory_region)
#define KVM_SET_USER_MEMORY_REGION2 _IOW(KVMIO, 0x49, struct kvm_userspace_memory_region2)

struct kvm_enable_cap {
	__gm_u32 cap;
	__gm_u32 flags;
	__gm_u64 args[4];
	__gm_u8 pad[64];
};
#define KVM_ENABLE_CAP _IOW(KVMIO, 0xa3, struct kvm_enable_cap)

struct kvm_memory_attributes {
	__gm_u64 address;
	__gm_u64 size;
	__gm_u64 attributes;
	__gm_u64 flags;
};
#define KVM_SET_MEMORY_ATTRIBUTES _IOW(KVMIO, 0xd2, struct kvm_memory_attributes)
#define KVM_MEMORY_ATTRIBUTE_PRIVATE (1ULL << 3)

/* In-place conversion series v8: issued on the guest_memfd fd. */
struct kvm_memory_attributes2 {
	union {
		__gm_u64 address;
		__gm_u64 offset;
	};
	__gm_u64 size;
	__gm_u64 attributes;
	__gm_u64 flags;
	__gm_u64 error_offset;
	__gm_u64 reserved[11];
};
#define KVM_SET_MEMORY_ATTRIBUTES2 _IOWR(KVMIO, 0xd2, struct kvm_memory_attributes2)

struct kvm_create_guest_memfd {
	__gm_u64 size;
	__gm_u64 flags;
	__gm_u64 reserved[6];
};
#define KVM_CREATE_GUEST_MEMFD _IOWR(KVMIO, 0xd4, struct kvm_create_guest_memfd)
#define GUEST_MEMFD_FLAG_MMAP        (1ULL << 0)
#define GUEST_MEMFD_FLAG_INIT_SHARED (1ULL << 1)

struct kvm_pre_fault_memory {
	__gm_u64 gpa;
	__gm_u64 size;
	__gm_u64 flags;
	__gm_u64 padding[5];
};
#define KVM_PRE_FAULT_MEMORY _IOWR(KVMIO, 0xd5, struct kvm_pre_fault_memory)

#define KVM_SET_TSS_ADDR          _IO(KVMIO, 0x47)
#define KVM_SET_IDENTITY_MAP_ADDR _IOW(KVMIO, 0x48, __gm_u64)

/* x86 register state (arch/x86/include/uapi/asm/kvm.h) */
struct kvm_regs {
	__gm_u64 rax, rbx, rcx, rdx;
	__gm_u64 rsi, rdi, rsp, rbp;
	__gm_u64 r8, r9, r10, r11;
	__gm_u64 r12, r13, r14, r15;
	__gm_u64 rip, rflags;
};

struct kvm_segment {
	__gm_u64 base;
	__gm_u32 limit;
	__gm_u16 selector;
	__gm_u8 type;
	__gm_u8 present, dpl, db, s, l, g, avl;
	__gm_u8 unusable;
	__gm_u8 padding;
};

struct kvm_dtable {
	__gm_u64 base;
	__gm_u16 limit;
	__gm_u16 padding[3];
};

#define KVM_NR_INTERRUPTS 256
struct kvm_sregs {
	struct kvm_segment cs, ds, es, fs, gs, ss;
	struct kvm_segment tr, ldt;
	struct kvm_dtable gdt, idt;
	__gm_u64 cr0, cr2, cr3, cr4, cr8;
	__gm_u64 efer;
	__gm_u64 apic_base;
	__gm_u64 interrupt_bitmap[(KVM_NR_INTERRUPTS + 63) / 64];
};

struct kvm_cpuid_entry2 {
	__gm_u32 function;
	__gm_u32 index;
	__gm_u32 flags;
	__gm_u32 eax, ebx, ecx, edx;
	__gm_u32 padding[3];
};

struct kvm_cpuid2 {
	__gm_u32 nent;
	__gm_u32 padding;
	struct kvm_cpuid_entry2 entries[];
};

#define KVM_GET_SUPPORTED_CPUID _IOWR(KVMIO, 0x05, struct kvm_cpuid2)

/* Binary statistics (KVM_GET_STATS_FD on a VM or vCPU fd). */
struct kvm_stats_header {
	__gm_u32 flags;
	__gm_u32 name_size;
	__gm_u32 num_desc;
	__gm_u32 id_offset;
	__gm_u32 desc_offset;
	__gm_u32 data_offset;
};

struct kvm_stats_desc {
	__gm_u32 flags;
	int16_t exponent;
	__gm_u16 size;
	__gm_u32 offset;
	__gm_u32 bucket_size;
	char name[];
};
#define KVM_GET_STATS_FD _IO(KVMIO, 0xce)

/* vCPU ioctls */
#define KVM_RUN       _IO(KVMIO, 0x80)
#define KVM_GET_REGS  _IOR(KVMIO, 0x81, struct kvm_regs)
#define KVM_SET_REGS  _IOW(KVMIO, 0x82, struct kvm_regs)
#define KVM_GET_SREGS _IOR(KVMIO, 0x83, struct kvm_sregs)
#define KVM_SET_SREGS _IOW(KVMIO, 0x84, struct kvm_sregs)
#define KVM_SET_CPUID2 _IOW(KVMIO, 0x90, struct kvm_cpuid2)

/* Exit reasons */
#define KVM_EXIT_UNKNOWN        0
#define KVM_EXIT_EXCEPTION      1
#define KVM_EXIT_IO             2
#define KVM_EXIT_HYPERCALL      3
#define KVM_EXIT_DEBUG          4
#define KVM_EXIT_HLT            5
#define KVM_EXIT_MMIO           6
#define KVM_EXIT_SHUTDOWN       8
#define KVM_EXIT_FAIL_ENTRY     9
#define KVM_EXIT_INTR           10
#define KVM_EXIT_INTERNAL_ERROR 17
#define KVM_EXIT_SYSTEM_EVENT   24
#define KVM_EXIT_MEMORY_FAULT   39

#define KVM_EXIT_IO_IN  0
#define KVM_EXIT_IO_OUT 1

#define KVM_MEMORY_EXIT_FLAG_PRIVATE (1ULL << 3)
#define KVM_EXIT_HYPERCALL_LONG_MODE (1ULL << 0)

/* Hypercalls */
#define KVM_HC_MAP_GPA_RANGE 12
#define KVM_EXIT_HYPERCALL_VALID_MASK (1 << KVM_HC_MAP_GPA_RANGE)
#define KVM_MAP_GPA_RANGE_PAGE_SZ_4K 0
#define KVM_MAP_GPA_RANGE_PAGE_SZ_2M (1 << 0)
#define KVM_MAP_GPA_RANGE_PAGE_SZ_1G (1 << 1)
#define KVM_MAP_GPA_RANGE_ENC_STAT(n) ((n) << 4)
#define KVM_MAP_GPA_RANGE_ENCRYPTED KVM_MAP_GPA_RANGE_ENC_STAT(1)
#define KVM_MAP_GPA_RANGE_DECRYPTED KVM_MAP_GPA_RANGE_ENC_STAT(0)
/* Error values a guest sees in RAX (include/uapi/linux/kvm_para.h). */
#define KVM_ENOSYS 1000
#define KVM_EFAULT 14
#define KVM_EINVAL 22

/* struct kvm_run: the layout of Linux's, for the members libgmem fills. */
struct kvm_run {
	__gm_u8 request_interrupt_window;
	__gm_u8 immediate_exit__unused;
	__gm_u8 padding1[6];
	__gm_u32 exit_reason;
	__gm_u8 ready_for_interrupt_injection;
	__gm_u8 if_flag;
	__gm_u16 flags;
	__gm_u64 cr8;
	__gm_u64 apic_base;
	union {
		struct {
			__gm_u64 hardware_exit_reason;
		} hw;
		struct {
			__gm_u64 hardware_entry_failure_reason;
			__gm_u32 cpu;
		} fail_entry;
		struct {
			__gm_u8 direction;
			__gm_u8 size;
			__gm_u16 port;
			__gm_u32 count;
			__gm_u64 data_offset;
		} io;
		struct {
			__gm_u64 phys_addr;
			__gm_u8 data[8];
			__gm_u32 len;
			__gm_u8 is_write;
		} mmio;
		struct {
			__gm_u64 nr;
			__gm_u64 args[6];
			__gm_u64 ret;
			union {
				__gm_u32 longmode;
				__gm_u64 flags;
			};
		} hypercall;
		struct {
			__gm_u32 suberror;
			__gm_u32 ndata;
			__gm_u64 data[16];
		} internal;
		struct {
			__gm_u32 type;
			__gm_u32 ndata;
			__gm_u64 data[16];
		} system_event;
		struct {
			__gm_u64 flags;
			__gm_u64 gpa;
			__gm_u64 size;
		} memory_fault;
		char padding[256];
	};
	__gm_u64 kvm_valid_regs;
	__gm_u64 kvm_dirty_regs;
	union {
		char padding[2048];
	} s;
};

#endif
