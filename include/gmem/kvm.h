/* Linux KVM UAPI (names, structs, numbers) for everything libgmem covers, as in <linux/kvm.h>. */
#ifndef GMEM_KVM_H
#define GMEM_KVM_H

/*
 * Every name here has the layout, type and value of the newest mainline
 * kernel's <linux/kvm.h>, <asm/kvm.h> (x86) and <linux/kvm_para.h>, except the
 * in-place conversion series (marked), which mainline has not merged.
 *
 * Included alone, this header defines all of it. Included after the system's
 * <linux/kvm.h>, it defines only what that header lacks: each group below is
 * skipped when the system header defines the macro that came with the group
 * in the kernel. Including <linux/kvm.h> after this header is not supported.
 */
#include <linux/const.h>
#include <linux/ioctl.h>
#include <linux/types.h>
#include <sys/ioctl.h>

/* The groups below assume a system header at least as new as Linux 6.1's. */
#if defined(KVM_GET_API_VERSION) && !defined(KVM_CAP_DIRTY_LOG_RING_ACQ_REL)
#error "<gmem/kvm.h> after <linux/kvm.h> needs the kernel headers of Linux 6.1 or newer"
#endif

/* ---- The ABI of Linux 6.1 and older ---------------------------------------------------- */
#ifndef KVM_GET_API_VERSION

#define KVM_API_VERSION 12
#define KVMIO 0xAE

/* System ioctls */
#define KVM_GET_API_VERSION     _IO(KVMIO, 0x00)
#define KVM_CREATE_VM           _IO(KVMIO, 0x01)
#define KVM_CHECK_EXTENSION     _IO(KVMIO, 0x03)
#define KVM_GET_VCPU_MMAP_SIZE  _IO(KVMIO, 0x04)

/* Capabilities */
#define KVM_CAP_IRQCHIP               0
#define KVM_CAP_USER_MEMORY           3
#define KVM_CAP_SET_TSS_ADDR          4
#define KVM_CAP_EXT_CPUID             7
#define KVM_CAP_NR_VCPUS              9
#define KVM_CAP_NR_MEMSLOTS           10
#define KVM_CAP_MP_STATE              14
#define KVM_CAP_SET_IDENTITY_MAP_ADDR 37
#define KVM_CAP_GET_TSC_KHZ           61
#define KVM_CAP_MAX_VCPUS             66
#define KVM_CAP_MAX_VCPU_ID           128
#define KVM_CAP_ENABLE_CAP_VM         98
#define KVM_CAP_IMMEDIATE_EXIT        136
#define KVM_CAP_EXIT_HYPERCALL        201

/* VM ioctls */
#define KVM_CREATE_VCPU         _IO(KVMIO, 0x41)

struct kvm_userspace_memory_region {
	__u32 slot;
	__u32 flags;
	__u64 guest_phys_addr;
	__u64 memory_size;
	__u64 userspace_addr;
};

#define KVM_MEM_LOG_DIRTY_PAGES (1UL << 0)
#define KVM_MEM_READONLY        (1UL << 1)

#define KVM_SET_USER_MEMORY_REGION _IOW(KVMIO, 0x46, struct kvm_userspace_memory_region)
#define KVM_SET_TSS_ADDR           _IO(KVMIO, 0x47)
#define KVM_SET_IDENTITY_MAP_ADDR  _IOW(KVMIO, 0x48, __u64)
#define KVM_SET_NR_MMU_PAGES       _IO(KVMIO, 0x44)
#define KVM_CREATE_IRQCHIP         _IO(KVMIO, 0x60)

struct kvm_enable_cap {
	__u32 cap;
	__u32 flags;
	__u64 args[4];
	__u8 pad[64];
};
#define KVM_ENABLE_CAP _IOW(KVMIO, 0xa3, struct kvm_enable_cap)

/* x86 register state (<asm/kvm.h>) */
#define KVM_NR_INTERRUPTS 256

struct kvm_regs {
	__u64 rax, rbx, rcx, rdx;
	__u64 rsi, rdi, rsp, rbp;
	__u64 r8, r9, r10, r11;
	__u64 r12, r13, r14, r15;
	__u64 rip, rflags;
};

struct kvm_segment {
	__u64 base;
	__u32 limit;
	__u16 selector;
	__u8 type;
	__u8 present, dpl, db, s, l, g, avl;
	__u8 unusable;
	__u8 padding;
};

struct kvm_dtable {
	__u64 base;
	__u16 limit;
	__u16 padding[3];
};

struct kvm_sregs {
	struct kvm_segment cs, ds, es, fs, gs, ss;
	struct kvm_segment tr, ldt;
	struct kvm_dtable gdt, idt;
	__u64 cr0, cr2, cr3, cr4, cr8;
	__u64 efer;
	__u64 apic_base;
	__u64 interrupt_bitmap[(KVM_NR_INTERRUPTS + 63) / 64];
};

struct kvm_vcpu_events {
	struct {
		__u8 injected;
		__u8 nr;
		__u8 has_error_code;
		__u8 pending;
		__u32 error_code;
	} exception;
	struct {
		__u8 injected;
		__u8 nr;
		__u8 soft;
		__u8 shadow;
	} interrupt;
	struct {
		__u8 injected;
		__u8 pending;
		__u8 masked;
		__u8 pad;
	} nmi;
	__u32 sipi_vector;
	__u32 flags;
	struct {
		__u8 smm;
		__u8 pending;
		__u8 smm_inside_nmi;
		__u8 latched_init;
	} smi;
	struct {
		__u8 pending;
	} triple_fault;
	__u8 reserved[26];
	__u8 exception_has_payload;
	__u64 exception_payload;
};

/* What kvm_run.s.regs holds on x86. */
struct kvm_sync_regs {
	struct kvm_regs regs;
	struct kvm_sregs sregs;
	struct kvm_vcpu_events events;
};

struct kvm_debug_exit_arch {
	__u32 exception;
	__u32 pad;
	__u64 pc;
	__u64 dr6;
	__u64 dr7;
};

struct kvm_cpuid_entry2 {
	__u32 function;
	__u32 index;
	__u32 flags;
	__u32 eax;
	__u32 ebx;
	__u32 ecx;
	__u32 edx;
	__u32 padding[3];
};

struct kvm_cpuid2 {
	__u32 nent;
	__u32 padding;
	struct kvm_cpuid_entry2 entries[];
};

#define KVM_GET_SUPPORTED_CPUID _IOWR(KVMIO, 0x05, struct kvm_cpuid2)

struct kvm_msr_entry {
	__u32 index;
	__u32 reserved;
	__u64 data;
};

struct kvm_msrs {
	__u32 nmsrs;
	__u32 pad;
	struct kvm_msr_entry entries[];
};

struct kvm_msr_list {
	__u32 nmsrs;
	__u32 indices[];
};

#define KVM_GET_MSR_INDEX_LIST         _IOWR(KVMIO, 0x02, struct kvm_msr_list)
#define KVM_GET_MSR_FEATURE_INDEX_LIST _IOWR(KVMIO, 0x0a, struct kvm_msr_list)
/* On a vCPU; KVM_GET_MSRS also on the system fd, for feature MSRs. */
#define KVM_GET_MSRS _IOWR(KVMIO, 0x88, struct kvm_msrs)
#define KVM_SET_MSRS _IOW(KVMIO, 0x89, struct kvm_msrs)

/* Binary statistics (KVM_GET_STATS_FD on a VM or vCPU fd). */
struct kvm_stats_header {
	__u32 flags;
	__u32 name_size;
	__u32 num_desc;
	__u32 id_offset;
	__u32 desc_offset;
	__u32 data_offset;
};

struct kvm_stats_desc {
	__u32 flags;
	__s16 exponent;
	__u16 size;
	__u32 offset;
	__u32 bucket_size;
	char name[];
};
#define KVM_GET_STATS_FD _IO(KVMIO, 0xce)

/* vCPU ioctls */
#define KVM_RUN        _IO(KVMIO, 0x80)
#define KVM_GET_REGS   _IOR(KVMIO, 0x81, struct kvm_regs)
#define KVM_SET_REGS   _IOW(KVMIO, 0x82, struct kvm_regs)
#define KVM_GET_SREGS  _IOR(KVMIO, 0x83, struct kvm_sregs)
#define KVM_SET_SREGS  _IOW(KVMIO, 0x84, struct kvm_sregs)
#define KVM_SET_CPUID2 _IOW(KVMIO, 0x90, struct kvm_cpuid2)
#define KVM_GET_CPUID2 _IOWR(KVMIO, 0x91, struct kvm_cpuid2)
/* On a vCPU, and on a VM since KVM_CAP_VM_TSC_CONTROL. */
#define KVM_GET_TSC_KHZ _IO(KVMIO, 0xa3)

struct kvm_mp_state {
	__u32 mp_state;
};
#define KVM_MP_STATE_RUNNABLE       0
#define KVM_MP_STATE_UNINITIALIZED  1
#define KVM_MP_STATE_INIT_RECEIVED  2
#define KVM_MP_STATE_HALTED         3
#define KVM_MP_STATE_SIPI_RECEIVED  4
#define KVM_MP_STATE_STOPPED        5
#define KVM_MP_STATE_CHECK_STOP     6
#define KVM_MP_STATE_OPERATING      7
#define KVM_MP_STATE_LOAD           8
#define KVM_MP_STATE_AP_RESET_HOLD  9
#define KVM_MP_STATE_SUSPENDED      10
#define KVM_GET_MP_STATE _IOR(KVMIO, 0x98, struct kvm_mp_state)
#define KVM_SET_MP_STATE _IOW(KVMIO, 0x99, struct kvm_mp_state)

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

/* kvm_run.internal.suberror */
#define KVM_INTERNAL_ERROR_EMULATION 1

#define KVM_EXIT_IO_IN  0
#define KVM_EXIT_IO_OUT 1

#define KVM_SYSTEM_EVENT_SHUTDOWN 1
#define KVM_SYSTEM_EVENT_RESET    2
#define KVM_SYSTEM_EVENT_CRASH    3
#define KVM_SYSTEM_EVENT_WAKEUP   4
#define KVM_SYSTEM_EVENT_SUSPEND  5
#define KVM_SYSTEM_EVENT_SEV_TERM 6

/* The exit payloads kvm_run embeds by name. */
struct kvm_hyperv_exit {
	__u32 type;
	__u32 pad1;
	union {
		struct {
			__u32 msr;
			__u32 pad2;
			__u64 control;
			__u64 evt_page;
			__u64 msg_page;
		} synic;
		struct {
			__u64 input;
			__u64 result;
			__u64 params[2];
		} hcall;
		struct {
			__u32 msr;
			__u32 pad2;
			__u64 control;
			__u64 status;
			__u64 send_page;
			__u64 recv_page;
			__u64 pending_page;
		} syndbg;
	} u;
};

struct kvm_xen_exit {
	__u32 type;
	union {
		struct {
			__u32 longmode;
			__u32 cpl;
			__u64 input;
			__u64 result;
			__u64 params[6];
		} hcall;
	} u;
};

struct kvm_exit_snp_req_certs {
	__u64 gpa;
	__u64 npages;
	__u64 ret;
};

#define SYNC_REGS_SIZE_BYTES 2048

/* The run area a vCPU fd maps at offset 0; every member of mainline's, x86 flavour. */
struct kvm_run {
	__u8 request_interrupt_window;
	__u8 immediate_exit;
	__u8 padding1[6];
	__u32 exit_reason;
	__u8 ready_for_interrupt_injection;
	__u8 if_flag;
	__u16 flags;
	__u64 cr8;
	__u64 apic_base;
	union {
		struct {
			__u64 hardware_exit_reason;
		} hw;
		struct {
			__u64 hardware_entry_failure_reason;
			__u32 cpu;
		} fail_entry;
		struct {
			__u32 exception;
			__u32 error_code;
		} ex;
		struct {
			__u8 direction;
			__u8 size;
			__u16 port;
			__u32 count;
			__u64 data_offset;
		} io;
		struct {
			struct kvm_debug_exit_arch arch;
		} debug;
		struct {
			__u64 phys_addr;
			__u8 data[8];
			__u32 len;
			__u8 is_write;
		} mmio;
		struct {
			__u64 phys_addr;
			__u8 data[8];
			__u32 len;
			__u8 is_write;
		} iocsr_io;
		struct {
			__u64 nr;
			__u64 args[6];
			__u64 ret;
			union {
				__u32 longmode;
				__u64 flags;
			};
		} hypercall;
		struct {
			__u64 rip;
			__u32 is_write;
			__u32 pad;
		} tpr_access;
		struct {
			__u8 icptcode;
			__u16 ipa;
			__u32 ipb;
		} s390_sieic;
		__u64 s390_reset_flags;
		struct {
			__u64 trans_exc_code;
			__u32 pgm_code;
		} s390_ucontrol;
		struct {
			__u32 dcrn;
			__u32 data;
			__u8 is_write;
		} dcr;
		struct {
			__u32 suberror;
			__u32 ndata;
			__u64 data[16];
		} internal;
		struct {
			__u32 suberror;
			__u32 ndata;
			__u64 flags;
			union {
				struct {
					__u8 insn_size;
					__u8 insn_bytes[15];
				};
			};
		} emulation_failure;
		struct {
			__u64 gprs[32];
		} osi;
		struct {
			__u64 nr;
			__u64 ret;
			__u64 args[9];
		} papr_hcall;
		struct {
			__u16 subchannel_id;
			__u16 subchannel_nr;
			__u32 io_int_parm;
			__u32 io_int_word;
			__u32 ipb;
			__u8 dequeued;
		} s390_tsch;
		struct {
			__u32 epr;
		} epr;
		struct {
			__u32 type;
			__u32 ndata;
			union {
				__u64 flags;
				__u64 data[16];
			};
		} system_event;
		struct {
			__u64 addr;
			__u8 ar;
			__u8 reserved;
			__u8 fc;
			__u8 sel1;
			__u16 sel2;
		} s390_stsi;
		struct {
			__u8 vector;
		} eoi;
		struct kvm_hyperv_exit hyperv;
		struct {
			__u64 esr_iss;
			__u64 fault_ipa;
		} arm_nisv;
		struct {
			__u8 error;
			__u8 pad[7];
			__u32 reason;
			__u32 index;
			__u64 data;
		} msr;
		struct kvm_xen_exit xen;
		struct {
			unsigned long extension_id;
			unsigned long function_id;
			unsigned long args[6];
			unsigned long ret[2];
		} riscv_sbi;
		struct {
			unsigned long csr_num;
			unsigned long new_value;
			unsigned long write_mask;
			unsigned long ret_value;
		} riscv_csr;
		struct {
			__u32 flags;
		} notify;
		struct {
			__u64 flags;
			__u64 gpa;
			__u64 size;
		} memory_fault;
		struct {
			__u64 flags;
			__u64 nr;
			union {
				struct {
					__u64 ret;
					__u64 data[5];
				} unknown;
				struct {
					__u64 ret;
					__u64 gpa;
					__u64 size;
				} get_quote;
				struct {
					__u64 ret;
					__u64 leaf;
					__u64 r11, r12, r13, r14;
				} get_tdvmcall_info;
				struct {
					__u64 ret;
					__u64 vector;
				} setup_event_notify;
			};
		} tdx;
		struct {
			__u64 flags;
			__u64 esr;
			__u64 gva;
			__u64 gpa;
		} arm_sea;
		struct kvm_exit_snp_req_certs snp_req_certs;
		char padding[256];
	};
	__u64 kvm_valid_regs;
	__u64 kvm_dirty_regs;
	union {
		struct kvm_sync_regs regs;
		char padding[SYNC_REGS_SIZE_BYTES];
	} s;
};

/* SEV's VM ioctl and its command header (<linux/kvm.h> until 6.10, then <asm/kvm.h>). */
#define KVM_MEMORY_ENCRYPT_OP _IOWR(KVMIO, 0xba, unsigned long)

enum sev_cmd_id {
	KVM_SEV_INIT = 0,
	KVM_SEV_ES_INIT,
	KVM_SEV_LAUNCH_START,
	KVM_SEV_LAUNCH_UPDATE_DATA,
	KVM_SEV_LAUNCH_UPDATE_VMSA,
	KVM_SEV_LAUNCH_SECRET,
	KVM_SEV_LAUNCH_MEASURE,
	KVM_SEV_LAUNCH_FINISH,
	KVM_SEV_SEND_START,
	KVM_SEV_SEND_UPDATE_DATA,
	KVM_SEV_SEND_UPDATE_VMSA,
	KVM_SEV_SEND_FINISH,
	KVM_SEV_RECEIVE_START,
	KVM_SEV_RECEIVE_UPDATE_DATA,
	KVM_SEV_RECEIVE_UPDATE_VMSA,
	KVM_SEV_RECEIVE_FINISH,
	KVM_SEV_GUEST_STATUS,
	KVM_SEV_DBG_DECRYPT,
	KVM_SEV_DBG_ENCRYPT,
	KVM_SEV_CERT_EXPORT,
	KVM_SEV_GET_ATTESTATION_REPORT,
	KVM_SEV_SEND_CANCEL,
};

struct kvm_sev_cmd {
	__u32 id;
	__u32 pad0;
	__u64 data;
	__u32 error;
	__u32 sev_fd;
};

#endif /* the ABI of Linux 6.1 and older */

/* ---- x86 hypercall exit flags (<asm/kvm.h>) --------------------------------------------- */
#ifndef KVM_EXIT_HYPERCALL_LONG_MODE
#define KVM_EXIT_HYPERCALL_LONG_MODE _BITULL(0)
#endif

#ifndef KVM_SYSTEM_EVENT_TDX_FATAL
#define KVM_SYSTEM_EVENT_TDX_FATAL 7
#endif

/* ---- guest_memfd, memslots v2, memory attributes, memory-fault exits ------------------- */
#ifndef KVM_CREATE_GUEST_MEMFD
#define KVM_CAP_USER_MEMORY2      231
#define KVM_CAP_MEMORY_FAULT_INFO 232
#define KVM_CAP_MEMORY_ATTRIBUTES 233
#define KVM_CAP_GUEST_MEMFD       234
#define KVM_CAP_VM_TYPES          235

struct kvm_userspace_memory_region2 {
	__u32 slot;
	__u32 flags;
	__u64 guest_phys_addr;
	__u64 memory_size;
	__u64 userspace_addr;
	__u64 guest_memfd_offset;
	__u32 guest_memfd;
	__u32 pad1;
	__u64 pad2[14];
};

#define KVM_MEM_GUEST_MEMFD (1UL << 2)
#define KVM_SET_USER_MEMORY_REGION2 _IOW(KVMIO, 0x49, struct kvm_userspace_memory_region2)

struct kvm_memory_attributes {
	__u64 address;
	__u64 size;
	__u64 attributes;
	__u64 flags;
};
#define KVM_SET_MEMORY_ATTRIBUTES _IOW(KVMIO, 0xd2, struct kvm_memory_attributes)
#define KVM_MEMORY_ATTRIBUTE_PRIVATE (1ULL << 3)

struct kvm_create_guest_memfd {
	__u64 size;
	__u64 flags;
	__u64 reserved[6];
};
#define KVM_CREATE_GUEST_MEMFD _IOWR(KVMIO, 0xd4, struct kvm_create_guest_memfd)

#define KVM_EXIT_MEMORY_FAULT 39
#define KVM_MEMORY_EXIT_FLAG_PRIVATE (1ULL << 3)
#endif

/* ---- x86 VM types (<asm/kvm.h>), each set with the kernel that added it ---------------- */
#ifndef KVM_X86_DEFAULT_VM
#define KVM_X86_DEFAULT_VM      0
#define KVM_X86_SW_PROTECTED_VM 1
#endif
#ifndef KVM_X86_SEV_VM
#define KVM_X86_SEV_VM          2
#define KVM_X86_SEV_ES_VM       3

/* KVM_SEV_INIT2 (6.10): initialises an SEV, SEV-ES or SNP VM of the matching type. */
enum { KVM_SEV_INIT2 = 22 };

struct kvm_sev_init {
	__u64 vmsa_features;
	__u32 flags;
	__u16 ghcb_version;
	__u16 pad1;
	__u32 pad2[8];
};
#endif
#ifndef KVM_X86_SNP_VM
#define KVM_X86_SNP_VM          4

/* SEV-SNP's launch (6.11). */
enum {
	KVM_SEV_SNP_LAUNCH_START = 100,
	KVM_SEV_SNP_LAUNCH_UPDATE,
	KVM_SEV_SNP_LAUNCH_FINISH,
};

struct kvm_sev_snp_launch_start {
	__u64 policy;
	__u8 gosvw[16];
	__u16 flags;
	__u8 pad0[6];
	__u64 pad1[4];
};

/* Page types of KVM_SEV_SNP_LAUNCH_UPDATE, the SNP firmware ABI's numbers. */
#define KVM_SEV_SNP_PAGE_TYPE_NORMAL     0x1
#define KVM_SEV_SNP_PAGE_TYPE_ZERO       0x3
#define KVM_SEV_SNP_PAGE_TYPE_UNMEASURED 0x4
#define KVM_SEV_SNP_PAGE_TYPE_SECRETS    0x5
#define KVM_SEV_SNP_PAGE_TYPE_CPUID      0x6

struct kvm_sev_snp_launch_update {
	__u64 gfn_start;
	__u64 uaddr;
	__u64 len;
	__u8 type;
	__u8 pad0;
	__u16 flags;
	__u32 pad1;
	__u64 pad2[4];
};

#define KVM_SEV_SNP_ID_BLOCK_SIZE    96
#define KVM_SEV_SNP_ID_AUTH_SIZE     4096
#define KVM_SEV_SNP_FINISH_DATA_SIZE 32

struct kvm_sev_snp_launch_finish {
	__u64 id_block_uaddr;
	__u64 id_auth_uaddr;
	__u8 id_block_en;
	__u8 auth_key_en;
	__u8 vcek_disabled;
	__u8 host_data[KVM_SEV_SNP_FINISH_DATA_SIZE];
	__u8 pad0[3];
	__u16 flags;
	__u64 pad1[4];
};
#endif
#ifndef KVM_X86_TDX_VM
#define KVM_X86_TDX_VM          5
#endif

/* ---- KVM_PRE_FAULT_MEMORY ------------------------------------------------------------- */
#ifndef KVM_PRE_FAULT_MEMORY
#define KVM_CAP_PRE_FAULT_MEMORY 236

struct kvm_pre_fault_memory {
	__u64 gpa;
	__u64 size;
	__u64 flags;
	__u64 padding[5];
};
#define KVM_PRE_FAULT_MEMORY _IOWR(KVMIO, 0xd5, struct kvm_pre_fault_memory)
#endif

/* ---- guest_memfd creation flags (6.18) -------------------------------------------------- */
#ifndef GUEST_MEMFD_FLAG_MMAP
#define KVM_CAP_GUEST_MEMFD_FLAGS    244
#define GUEST_MEMFD_FLAG_MMAP        (1ULL << 0)
#define GUEST_MEMFD_FLAG_INIT_SHARED (1ULL << 1)
#endif

/* ---- In-place conversion series v8: per-file attributes, issued on the guest_memfd ---- */
#ifndef KVM_SET_MEMORY_ATTRIBUTES2
#define KVM_CAP_GUEST_MEMFD_MEMORY_ATTRIBUTES 250

struct kvm_memory_attributes2 {
	union {
		__u64 address;
		__u64 offset;
	};
	__u64 size;
	__u64 attributes;
	__u64 flags;
	__u64 error_offset;
	__u64 reserved[11];
};
#define KVM_SET_MEMORY_ATTRIBUTES2 _IOWR(KVMIO, 0xd2, struct kvm_memory_attributes2)
#endif

/* ---- Hypercalls (<linux/kvm_para.h>, <asm/kvm_para.h>) ---------------------------------- */
#ifndef KVM_HC_MAP_GPA_RANGE
#define KVM_HC_MAP_GPA_RANGE 12
#endif
#ifndef KVM_MAP_GPA_RANGE_PAGE_SZ_4K
#define KVM_MAP_GPA_RANGE_PAGE_SZ_4K 0
#define KVM_MAP_GPA_RANGE_PAGE_SZ_2M (1 << 0)
#define KVM_MAP_GPA_RANGE_PAGE_SZ_1G (1 << 1)
#define KVM_MAP_GPA_RANGE_ENC_STAT(n) ((n) << 4)
#define KVM_MAP_GPA_RANGE_ENCRYPTED KVM_MAP_GPA_RANGE_ENC_STAT(1)
#define KVM_MAP_GPA_RANGE_DECRYPTED KVM_MAP_GPA_RANGE_ENC_STAT(0)
#endif
/* Error values a guest sees in RAX. */
#ifndef KVM_ENOSYS
#define KVM_ENOSYS 1000
#define KVM_EFAULT 14
#define KVM_EINVAL 22
#endif

/* ---- SEV firmware status codes (<linux/psp-sev.h>): kvm_sev_cmd.error ----------------- */
#ifndef __PSP_SEV_USER_H__
typedef enum {
	SEV_RET_NO_FW_CALL = -1,
	SEV_RET_SUCCESS = 0,
	SEV_RET_INVALID_PLATFORM_STATE,
	SEV_RET_INVALID_GUEST_STATE,
	SEV_RET_INAVLID_CONFIG,
	SEV_RET_INVALID_LEN,
	SEV_RET_ALREADY_OWNED,
	SEV_RET_INVALID_CERTIFICATE,
	SEV_RET_POLICY_FAILURE,
	SEV_RET_INACTIVE,
	SEV_RET_INVALID_ADDRESS,
	SEV_RET_BAD_SIGNATURE,
	SEV_RET_BAD_MEASUREMENT,
	SEV_RET_ASID_OWNED,
	SEV_RET_INVALID_ASID,
	SEV_RET_WBINVD_REQUIRED,
	SEV_RET_DFFLUSH_REQUIRED,
	SEV_RET_INVALID_GUEST,
	SEV_RET_INVALID_COMMAND,
	SEV_RET_ACTIVE,
	SEV_RET_HWSEV_RET_PLATFORM,
	SEV_RET_HWSEV_RET_UNSAFE,
	SEV_RET_UNSUPPORTED,
	SEV_RET_INVALID_PARAM,
	SEV_RET_RESOURCE_LIMIT,
	SEV_RET_SECURE_DATA_INVALID,
	SEV_RET_MAX,
} sev_ret_code;
#endif

#endif
