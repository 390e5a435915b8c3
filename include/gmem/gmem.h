/* libgmem public API: the kernel-compatible surface and the library's own calls. */
#ifndef GMEM_GMEM_H
#define GMEM_GMEM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>

#include <gmem/kvm.h>

#ifdef __cplusplus
extern "C" {
#endif

/*
 * The version of this header (the Makefile's VERSION: make check-version keeps them equal).
 * gm_version() gives the version of the library the program runs with.
 */
#define GM_VERSION_MAJOR 0
#define GM_VERSION_MINOR 1
#define GM_VERSION_PATCH 0
#define GM_VERSION_STRING "0.1.0"

/* "MAJOR.MINOR.PATCH" of the running library; a static string. */
const char *gm_version(void);

/*
 * The kernel-compatible surface. Each call acts on a libgmem fd exactly as the
 * Linux syscall acts on the kernel's fd (same arguments, return value, errno).
 * On any other fd it is the plain syscall.
 */
int gm_open_kvm(void);
int gm_ioctl(int fd, unsigned long request, ...);
void *gm_mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off);
int gm_munmap(void *addr, size_t len);
int gm_fallocate(int fd, int mode, off_t off, off_t len);
int gm_fstat(int fd, struct stat *st);
ssize_t gm_read(int fd, void *buf, size_t n);
ssize_t gm_write(int fd, const void *buf, size_t n);
ssize_t gm_pread(int fd, void *buf, size_t n, off_t off);
off_t gm_lseek(int fd, off_t off, int whence);
int gm_ftruncate(int fd, off_t len);
int gm_close(int fd);
ssize_t gm_pwrite(int fd, const void *buf, size_t n, off_t off);
ssize_t gm_readv(int fd, const struct iovec *iov, int iovcnt);
ssize_t gm_writev(int fd, const struct iovec *iov, int iovcnt);
ssize_t gm_preadv(int fd, const struct iovec *iov, int iovcnt, off_t off);
ssize_t gm_pwritev(int fd, const struct iovec *iov, int iovcnt, off_t off);
/* MADV_REMOVE punches the file; MADV_COLLAPSE is EINVAL; see docs/compat.md for the rest. */
int gm_madvise(void *addr, size_t len, int advice);
/* PROT_EXEC on a guest_memfd mapping is EACCES (noexec mount). */
int gm_mprotect(void *addr, size_t len, int prot);
/* Moves, shrinks and grows a whole guest_memfd mapping; growing a part is EINVAL (docs/compat.md). */
void *gm_mremap(void *old_addr, size_t old_size, size_t new_size, int flags, ...);
/* A duplicate of a library fd is the same file: every call works on it. */
int gm_dup(int fd);
int gm_dup2(int oldfd, int newfd);
int gm_dup3(int oldfd, int newfd, int flags);
int gm_fcntl(int fd, int cmd, ...);
int gm_close_range(unsigned int first, unsigned int last, int flags);
struct statx;
int gm_statx(int dirfd, const char *path, int flags, unsigned int mask, struct statx *stx);

/*
 * Folio size of a guest_memfd, a libgmem extension carried in the flags of
 * KVM_CREATE_GUEST_MEMFD: log2 of the size in bits 58..63, zero meaning 4 KiB
 * (the encoding of the HugeTLB guest_memfd RFC; 12 also means 4 KiB). Size and fallocate ranges
 * must then be multiples of the folio size.
 */
#define GM_GUEST_MEMFD_FOLIO_SHIFT 58
#define GM_GUEST_MEMFD_FOLIO_MASK  (0x3fULL << GM_GUEST_MEMFD_FOLIO_SHIFT)
#define GM_GUEST_MEMFD_FOLIO_4K    0ULL
#define GM_GUEST_MEMFD_FOLIO_2M    (21ULL << GM_GUEST_MEMFD_FOLIO_SHIFT)
#define GM_GUEST_MEMFD_FOLIO_1G    (30ULL << GM_GUEST_MEMFD_FOLIO_SHIFT)

/*
 * Backends, a libgmem extension carried in the KVM_CREATE_VM type: software
 * vCPUs (guest C functions, full enforcement, any machine) or the host's
 * /dev/kvm (real guests; the VM's guest_memfd files are the host kernel's).
 * Without either bit the environment variable GMEM_BACKEND (soft, kvm, auto)
 * decides, and soft is the default; auto is kvm where /dev/kvm works.
 */
#define GM_VM_BACKEND_SOFT (1UL << 30)
#define GM_VM_BACKEND_KVM  (1UL << 31)

/*
 * On the kvm backend a guest requests KVM_HC_MAP_GPA_RANGE (RAX = 12,
 * RBX = gpa, RCX = pages, RDX = attributes) with a one-byte OUT to this port
 * where the host's KVM does not pass VMCALL through; libgmem turns it into
 * KVM_EXIT_HYPERCALL and writes hypercall.ret back to RAX, as KVM does for
 * TDX's and SNP's own conversion requests.
 */
#define GM_HYPERCALL_PORT 0xe0

/* The library's own calls return 0 or a negative errno; they never set errno. */

enum gm_backing_kind {
	GM_BACKING_MEMFD = 1,   /* plain memfd (shmem), 4 KiB host pages */
	GM_BACKING_HUGETLB = 2, /* memfd on hugetlbfs, pages of the folio size */
	GM_BACKING_HOST_GMEM = 3, /* the host kernel's guest_memfd (kvm backend) */
};

struct gm_gmem_info {
	uint64_t size;            /* file size in bytes */
	uint64_t flags;           /* creation flags, folio bits included */
	uint64_t folio_size;      /* 4 KiB, 2 MiB or 1 GiB */
	uint64_t allocated_bytes; /* backing memory the file holds now */
	uint64_t shared_bytes;    /* bytes whose attribute is shared */
	uint32_t backing;         /* enum gm_backing_kind */
	uint32_t host_mappings;   /* live gm_mmap mappings of the file */
	uint64_t split_folios;    /* hugetlbfs: huge folios split to 4 KiB pages (mixed kinds) */
};

/* Facts about one guest_memfd fd. */
int gm_gmem_info(int fd, struct gm_gmem_info *info);

struct gm_stats {
	uint64_t metadata_bytes; /* heap bytes the library holds for its objects */
	uint64_t gmem_files;     /* live guest_memfd files */
	uint64_t vms;            /* live VMs */
	uint64_t open_fds;       /* library fds open now */
};

/*
 * Pins [offset, offset + len) of a guest_memfd for device DMA, as
 * get_user_pages would: the pages are allocated and must be shared (-EFAULT
 * otherwise). While pinned they cannot be converted to private (EAGAIN).
 * *dma, when given, gets the address a device would use: a mapping of the
 * pinned pages only, with guard pages around it, valid until the unpin.
 */
int gm_gmem_pin(int fd, uint64_t offset, uint64_t len, void **dma);
/* Drops a pin made with the same range; -ENOENT when there is none. */
int gm_gmem_unpin(int fd, uint64_t offset, uint64_t len);

/* Process-wide statistics of the library. */
int gm_stats(struct gm_stats *stats);

/*
 * Software vCPUs. A guest is a C function that KVM_RUN runs on the vCPU
 * until it exits; the guest touches guest-physical memory only through the
 * gm_guest_* accessors, which walk the VM's stage-2 and exit to userspace as
 * the kernel would (memory fault, MMIO, hypercall, ucall). After userspace
 * handles an exit, the next KVM_RUN resumes the guest at the same access.
 */
struct gm_guest;
typedef void (*gm_guest_fn)(struct gm_guest *guest, void *arg);

/* Installs fn on a vCPU fd; it starts at the next KVM_RUN. */
int gm_vcpu_set_guest(int vcpu_fd, gm_guest_fn fn, void *arg);

/* How the guest accesses memory: as the attributes say, or asking for one kind. */
enum gm_access {
	GM_ACCESS_AUTO = 0,    /* private where the memory is private (SW_PROTECTED semantics) */
	GM_ACCESS_SHARED = 1,  /* a shared access, as with the C-bit clear on SNP */
	GM_ACCESS_PRIVATE = 2, /* a private access; DEFAULT VMs have none and treat it as shared */
};
void gm_guest_set_access(struct gm_guest *guest, enum gm_access access);

uint8_t gm_guest_read8(struct gm_guest *guest, uint64_t gpa);
uint16_t gm_guest_read16(struct gm_guest *guest, uint64_t gpa);
uint32_t gm_guest_read32(struct gm_guest *guest, uint64_t gpa);
uint64_t gm_guest_read64(struct gm_guest *guest, uint64_t gpa);
void gm_guest_write8(struct gm_guest *guest, uint64_t gpa, uint8_t val);
void gm_guest_write16(struct gm_guest *guest, uint64_t gpa, uint16_t val);
void gm_guest_write32(struct gm_guest *guest, uint64_t gpa, uint32_t val);
void gm_guest_write64(struct gm_guest *guest, uint64_t gpa, uint64_t val);
/* Bulk copies between guest-physical memory and the guest's own buffers. */
void gm_guest_read(struct gm_guest *guest, void *dst, uint64_t gpa, size_t len);
void gm_guest_write(struct gm_guest *guest, uint64_t gpa, const void *src, size_t len);
/* Fetches instruction bytes; the soft stage-2 has no execute permission, so it is a read. */
void gm_guest_fetch(struct gm_guest *guest, void *dst, uint64_t gpa, size_t len);

/*
 * SEV-SNP guests (KVM_X86_SNP_VM). A private page the guest touches for the
 * first time after launch is assigned to it but not validated; the guest
 * must PVALIDATE it before use. An access to a page it has not validated
 * raises a #VC: the guest's handler runs with error code GM_VC_NOT_VALIDATED
 * (SVM_EXIT_NOT_VALIDATED) and the faulting GPA, and the access is retried
 * when it returns. Without a handler, or with a #VC inside the handler, the
 * guest aborts (GM_UCALL_ABORT), as a guest without one would crash.
 */
#define GM_VC_NOT_VALIDATED 0x404
typedef void (*gm_guest_vc_fn)(struct gm_guest *guest, uint64_t error_code, uint64_t gpa,
			       void *arg);
void gm_guest_set_vc_handler(struct gm_guest *guest, gm_guest_vc_fn fn, void *arg);

/* PVALIDATE's results (what the instruction leaves in EAX, and CF as NOUPDATE). */
#define GM_PVALIDATE_SUCCESS           0
#define GM_PVALIDATE_FAIL_INPUT        1
#define GM_PVALIDATE_FAIL_SIZEMISMATCH 6
#define GM_PVALIDATE_FAIL_NOUPDATE     255
/*
 * Validates (or rescinds) the guest's private 4 KiB page at gpa. A page that
 * is not private exits to userspace as a private access would
 * (KVM_EXIT_MEMORY_FAULT); a page-misaligned gpa, an MMIO gpa or a VM that is
 * not SNP gives GM_PVALIDATE_FAIL_INPUT.
 */
int gm_guest_pvalidate(struct gm_guest *guest, uint64_t gpa, bool validate);

/*
 * SEV-SNP: the guest asks the platform for an attestation report (SNP's
 * MSG_REPORT_REQ at VMPL 0) carrying data, 64 bytes of its own (a verifier's
 * nonce). The request goes to the platform directly, never through the VMM.
 * report gets GM_SNP_REPORT_SIZE bytes: the SNP ABI's ATTESTATION_REPORT,
 * signed by the platform key (gm_snp_platform_key_pem). 0, or -EINVAL (len too
 * small, not an SNP guest, or before LAUNCH_FINISH), -EFAULT, or the platform
 * key's -errno.
 */
#define GM_SNP_REPORT_SIZE 0x4A0
/* Where REPORT_DATA (64 bytes) and MEASUREMENT (48) sit in the report. */
#define GM_SNP_REPORT_DATA_OFFSET        0x050
#define GM_SNP_REPORT_MEASUREMENT_OFFSET 0x090
int gm_guest_snp_report(struct gm_guest *guest, const uint8_t data[64], void *report, size_t len);

/* A KVM hypercall (nr in RAX, args in RBX, RCX, RDX); returns what RAX gets back. */
uint64_t gm_guest_hypercall(struct gm_guest *guest, uint64_t nr, uint64_t a0, uint64_t a1,
			    uint64_t a2);

/*
 * KVM_RUN of a soft vCPU with no guest function, in a VM with memslots: the
 * vCPU would have to run x86 code from guest memory, which only the kvm
 * backend can. KVM_EXIT_FAIL_ENTRY with this hardware_entry_failure_reason
 * (no VMX or SVM reason has bit 63 set). With no memslot at all, the exit is
 * KVM_EXIT_INTERNAL_ERROR (KVM_INTERNAL_ERROR_EMULATION), as the kernel's.
 */
#define GM_FAIL_ENTRY_NO_GUEST ((1ULL << 63) | 0x676d656dULL)

/*
 * ucall: an exit that carries values to the host, as the kernel's x86
 * selftests make it (KVM_EXIT_IO, a one-byte IN from GM_UCALL_PORT).
 */
#define GM_UCALL_PORT 0x1000
#define GM_UCALL_MAX_ARGS 6
enum gm_ucall_cmd { GM_UCALL_NONE = 0, GM_UCALL_SYNC, GM_UCALL_DONE, GM_UCALL_ABORT };
struct gm_ucall {
	uint64_t cmd;
	uint64_t args[GM_UCALL_MAX_ARGS];
	char msg[128]; /* GM_UCALL_ABORT: what failed, where */
};
void gm_guest_ucall(struct gm_guest *guest, uint64_t cmd, int nargs, ...);
void gm_guest_abort(struct gm_guest *guest, const char *file, int line, const char *what);
#define GM_GUEST_ASSERT(guest, cond)                                              \
	do {                                                                      \
		if (!(cond))                                                      \
			gm_guest_abort((guest), __FILE__, __LINE__, #cond);       \
	} while (0)

/*
 * Soft vCPUs: after KVM_RUN exits with KVM_EXIT_IO on GM_UCALL_PORT, the
 * ucall; cmd 0 otherwise (and always on the kvm backend, whose guests pass
 * values in registers).
 */
int gm_vcpu_get_ucall(int vcpu_fd, struct gm_ucall *uc);

/* The stage-2 of a VM: faults, retries, zaps and what is mapped at each level. */
struct gm_mmu_stats {
	uint64_t faults;
	uint64_t retries;
	uint64_t zaps;
	uint64_t mapped_4k_bytes;
	uint64_t mapped_2m_bytes;
	uint64_t mapped_1g_bytes;
};
int gm_vm_mmu_stats(int vm_fd, struct gm_mmu_stats *stats);

struct gm_vm_info {
	uint64_t type;          /* KVM_X86_*_VM */
	uint64_t backend;       /* GM_VM_BACKEND_SOFT or GM_VM_BACKEND_KVM */
	/*
	 * kvm backend: the host's KVM reads guest memory through the slot's
	 * userspace address (shadow paging), so libgmem keeps a mapping of all of
	 * the guest's memory for it, private pages included (see docs/compat.md).
	 */
	uint32_t host_hva_view;
	uint32_t nr_vcpus;
	/*
	 * kvm backend: the host has guest_memfd and the VM's files are the
	 * host's; 0 means they are memfds bound as host-address memory, which the
	 * host's KVM (and a VMM bug) can read whatever the attributes say.
	 */
	uint32_t host_gmem;
	uint32_t reserved;
};
int gm_vm_info(int vm_fd, struct gm_vm_info *info);

/*
 * Where private/shared lives, as the kernel's kvm.vm_memory_attributes: false
 * (the default, or GMEM_VM_MEMORY_ATTRIBUTES=0) keeps it in each guest_memfd
 * (KVM_SET_MEMORY_ATTRIBUTES2, in-place conversion); true (or
 * GMEM_VM_MEMORY_ATTRIBUTES=1) keeps it per VM (KVM_SET_MEMORY_ATTRIBUTES on
 * the VM fd, shared pages from the slot's userspace_addr). Fixed once the
 * first VM is created: -EBUSY after that.
 */
int gm_set_vm_memory_attributes(bool on);

/*
 * The software SEV-SNP platform (docs/platform.md). A VM of type
 * KVM_X86_SNP_VM is launched with KVM_MEMORY_ENCRYPT_OP as on the kernel; the
 * commands' sev_fd must be a platform device fd, which gm_open_sev gives (what
 * open("/dev/sev", O_RDWR) gives under the interposer): -1 and errno on failure.
 */
int gm_open_sev(void);

enum gm_snp_state {
	GM_SNP_STATE_NONE = 0,    /* no LAUNCH_START yet */
	GM_SNP_STATE_LAUNCH = 1,  /* pages can be added */
	GM_SNP_STATE_RUNNING = 2, /* after LAUNCH_FINISH */
};

struct gm_snp_launch_info {
	uint32_t state;               /* enum gm_snp_state */
	uint32_t reserved;
	uint64_t policy;
	uint8_t measurement[48];      /* the launch digest so far */
	uint8_t host_data[32];        /* from LAUNCH_FINISH */
	uint64_t pages_measured[8];   /* pages added, by SNP page type (1 NORMAL, 2 VMSA, ...) */
};
/* The trusted entity's view of an SNP VM's launch; -EINVAL before KVM_SEV_INIT2. */
int gm_snp_launch_info(int vm_fd, struct gm_snp_launch_info *info);

/*
 * Folds one page into a launch digest as the SNP firmware ABI defines it
 * (digest = SHA-384 of PAGE_INFO): an offline calculator's step. page (4 KiB)
 * is read for NORMAL (1) and VMSA (2) pages only. 0 or -ENOMEM.
 */
int gm_snp_launch_digest_page(uint8_t digest[48], uint8_t page_type, uint64_t gpa,
			      const void *page);
/* The GPA and contents (a zero page) of a soft vCPU's VMSA in the digest. */
#define GM_SNP_VMSA_GPA 0xFFFFFFFFF000ULL

/*
 * The public key of the software SEV-SNP platform, which signs its attestation
 * reports (ECDSA P-384), as PEM (SubjectPublicKeyInfo), NUL-terminated in buf:
 * returns its length, -ERANGE when len is too small (GM_SNP_PLATFORM_KEY_PEM_MAX
 * always suffices). The key is created on first use, in $GMEM_PLATFORM_KEY, else
 * $XDG_STATE_HOME/libgmem/snp-platform-key.pem, else
 * $HOME/.local/state/libgmem/snp-platform-key.pem; a key file that cannot be read
 * (-errno) or is not a P-384 private key (-EBADMSG) is an error, never replaced.
 */
#define GM_SNP_PLATFORM_KEY_PEM_MAX 512
int gm_snp_platform_key_pem(char *buf, size_t len);

/*
 * Checks an attestation report's ECDSA P-384 signature against key_pem (a PEM
 * public key; NULL: the platform's own). 0 when it verifies; otherwise a
 * sentence in why (n bytes) and -EINVAL (len is not GM_SNP_REPORT_SIZE),
 * -EBADMSG (another signature algorithm, a bad signature, or key_pem is not a
 * P-384 public key) or the platform key's -errno.
 */
int gm_snp_report_verify(const void *report, size_t len, const char *key_pem, char *why, size_t n);

#ifdef __cplusplus
}
#endif

#endif
