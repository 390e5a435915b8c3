/* gmem-vm: a microVM runner that boots a guest on libgmem's guest_memfd and converts its memory in place. */
#define _GNU_SOURCE
#include <errno.h>
#include <ctype.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <linux/falloc.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <gmem/gmem.h>

#include <sys/random.h>

#include "vm_config.h"
#include "x86_boot.h"
/* What the run did, for the report. Updated by the vCPU threads. */
struct stats {
	atomic_ullong to_private[3], to_private_bytes; /* by size: 4 KiB, up to 2 MiB, more */
	atomic_ullong to_shared[3], to_shared_bytes;
	atomic_ullong punches, punched_bytes, memory_faults;
};

struct vcpu_state {
	unsigned id;
	int fd;
	struct kvm_run *run;
	uint64_t checksum, expected;
	bool checksum_seen, result_seen, result_ok, halted;
	uint64_t failed_check;
	char error[200];
};

struct vm {
	struct options opt;
	struct layout lay;
	struct image img;
	bool kvm;               /* the kvm backend */
	int kvm_fd, vm_fd, gmem;
	int sev;                /* --vm snp: the platform device */
	/* --vm snp: the nonce given to the guest and the report it handed back. */
	uint8_t nonce[64];
	uint8_t report[GM_SNP_REPORT_SIZE];
	bool report_seen, report_ok;
	char report_why[160];
	char *host;             /* the VMM's mapping of guest memory */
	struct vcpu_state vcpus[GUEST_MAX_VCPUS];
	struct stats stats;
	uint64_t launch_bytes;
	pthread_mutex_t print_lock;
};


static double now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void say(struct vm *vm, enum verbosity level, const char *fmt, ...)
{
	va_list ap;

	if (vm->opt.verbosity < level)
		return;
	pthread_mutex_lock(&vm->print_lock);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	fflush(stdout);
	pthread_mutex_unlock(&vm->print_lock);
}

static int convert(struct vm *vm, uint64_t gpa, uint64_t size, bool private)
{
	struct kvm_memory_attributes2 a = {
		.offset = gpa, .size = size, .attributes = private ? KVM_MEMORY_ATTRIBUTE_PRIVATE : 0,
	};

	return gm_ioctl(vm->gmem, KVM_SET_MEMORY_ATTRIBUTES2, &a) ? -errno : 0;
}

static void count_conversion(struct vm *vm, uint64_t size, bool private)
{
	unsigned bucket = size <= PAGE ? 0 : size <= SZ_2M ? 1 : 2;

	if (private) {
		atomic_fetch_add(&vm->stats.to_private[bucket], 1);
		atomic_fetch_add(&vm->stats.to_private_bytes, size);
	} else {
		atomic_fetch_add(&vm->stats.to_shared[bucket], 1);
		atomic_fetch_add(&vm->stats.to_shared_bytes, size);
	}
}

/* Free 2 MiB huge pages in the pool now, or -1 when the pool cannot be read. */
static long free_huge_pages(void)
{
	FILE *f = fopen("/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages", "r");
	long n = -1;

	if (f) {
		if (fscanf(f, "%ld", &n) != 1)
			n = -1;
		fclose(f);
	}
	return n;
}

/* Why --huge did not get hugetlbfs: the backend, or a pool smaller than the file. */
static void explain_no_hugetlb(struct vm *vm, const struct gm_gmem_info *info)
{
	long free_pages = free_huge_pages();
	uint64_t needed = vm->opt.memory / SZ_2M;

	if (vm->kvm)
		say(vm, VERBOSE, "note: 2 MiB folios on %s: the kvm backend does not use hugetlbfs\n",
		    info->backing == GM_BACKING_HOST_GMEM ? "the host's guest_memfd" : "a plain memfd");
	else if (free_pages < 0)
		say(vm, VERBOSE, "note: no 2 MiB huge page pool on this host: 2 MiB folios on a plain "
			"memfd\n");
	else
		say(vm, VERBOSE, "note: %ld free 2 MiB huge pages, %" PRIu64 " needed: 2 MiB folios on a "
			"plain memfd\n", free_pages, needed);
}

/* A KVM_MEMORY_ENCRYPT_OP command on the platform device; 0 or -errno, firmware status in *error. */
static int sev_cmd(struct vm *vm, uint32_t id, void *data, uint32_t *error)
{
	struct kvm_sev_cmd c = { .id = id, .data = (uint64_t)(uintptr_t)data,
				 .sev_fd = (uint32_t)vm->sev };
	int ret = gm_ioctl(vm->vm_fd, KVM_MEMORY_ENCRYPT_OP, &c) ? -errno : 0;

	if (error)
		*error = c.error;
	return ret;
}

/* --vm snp: an SNP VM on the software platform, initialised and with its launch started. */
static void create_snp_vm(struct vm *vm)
{
	struct kvm_sev_init init = { 0 };
	struct kvm_sev_snp_launch_start start = { .policy = SNP_POLICY };

	snp_check_options(&vm->opt);
	vm->vm_fd = gm_ioctl(vm->kvm_fd, KVM_CREATE_VM, KVM_X86_SNP_VM | GM_VM_BACKEND_SOFT);
	if (vm->vm_fd < 0)
		fatal("KVM_CREATE_VM(KVM_X86_SNP_VM)", errno);
	vm->sev = gm_open_sev();
	if (vm->sev < 0)
		fatal("opening the SEV platform device", errno);
	if (sev_cmd(vm, KVM_SEV_INIT2, &init, NULL))
		fatal("KVM_SEV_INIT2", errno);
	if (sev_cmd(vm, KVM_SEV_SNP_LAUNCH_START, &start, NULL))
		fatal("KVM_SEV_SNP_LAUNCH_START", errno);
}

static void create_vm(struct vm *vm)
{
	unsigned long backend = vm->opt.backend == BACKEND_KVM ? GM_VM_BACKEND_KVM
				: vm->opt.backend == BACKEND_SOFT ? GM_VM_BACKEND_SOFT : 0;
	struct gm_gmem_info info;

	vm->kvm_fd = gm_open_kvm();
	if (vm->kvm_fd < 0)
		fatal("gm_open_kvm", errno);
	vm->sev = -1;
	if (vm->opt.snp) {
		create_snp_vm(vm);
		backend = GM_VM_BACKEND_SOFT;
	} else if (!backend) {
		/* auto: the host's KVM where it works, else software vCPUs. */
		vm->vm_fd = gm_ioctl(vm->kvm_fd, KVM_CREATE_VM,
				     KVM_X86_SW_PROTECTED_VM | GM_VM_BACKEND_KVM);
		if (vm->vm_fd < 0)
			backend = GM_VM_BACKEND_SOFT;
		else
			backend = GM_VM_BACKEND_KVM;
	}
	if (!vm->opt.snp && (backend == GM_VM_BACKEND_SOFT || vm->opt.backend == BACKEND_KVM))
		vm->vm_fd = gm_ioctl(vm->kvm_fd, KVM_CREATE_VM, KVM_X86_SW_PROTECTED_VM | backend);
	if (vm->vm_fd < 0) {
		if (backend == GM_VM_BACKEND_KVM)
			usage_error("the kvm backend needs a usable /dev/kvm (%s): use --backend soft",
				    strerror(errno));
		fatal("KVM_CREATE_VM", errno);
	}
	vm->kvm = backend == GM_VM_BACKEND_KVM;
	if (vm->opt.image_path && !vm->kvm)
		usage_error("--image needs the kvm backend (the soft backend runs the built-in "
			    "scenario as C): use --backend kvm on a machine with /dev/kvm");

	struct kvm_create_guest_memfd c = {
		.size = vm->opt.memory,
		.flags = GUEST_MEMFD_FLAG_MMAP | GUEST_MEMFD_FLAG_INIT_SHARED |
			 (vm->opt.huge ? GM_GUEST_MEMFD_FOLIO_2M : 0),
	};
	vm->gmem = gm_ioctl(vm->vm_fd, KVM_CREATE_GUEST_MEMFD, &c);
	if (vm->gmem < 0)
		fatal("KVM_CREATE_GUEST_MEMFD", errno);
	vm->host = gm_mmap(NULL, vm->opt.memory, PROT_READ | PROT_WRITE, MAP_SHARED, vm->gmem, 0);
	if (vm->host == MAP_FAILED)
		fatal("mapping guest memory", errno);
	gm_gmem_info(vm->gmem, &info);
	if (vm->opt.huge && info.backing != GM_BACKING_HUGETLB)
		explain_no_hugetlb(vm, &info);
}

/*
 * --vm snp: the platform takes over what was loaded, in place (uaddr 0), page
 * by page into the launch digest; a short count resumes where it stopped.
 */
static void measure_launch(struct vm *vm)
{
	struct measured_range r[NR_MEASURED_RANGES];

	measured_ranges(&vm->lay, &vm->opt, r);
	for (int i = 0; i < NR_MEASURED_RANGES; i++) {
		struct kvm_sev_snp_launch_update u = {
			.gfn_start = r[i].gpa / PAGE, .len = r[i].size,
			.type = KVM_SEV_SNP_PAGE_TYPE_NORMAL,
		};
		uint32_t error = 0;

		while (u.len)
			if (sev_cmd(vm, KVM_SEV_SNP_LAUNCH_UPDATE, &u, &error)) {
				fprintf(stderr, "%s: KVM_SEV_SNP_LAUNCH_UPDATE at %#llx: %s (firmware "
					"status %u)\n", prog, (unsigned long long)u.gfn_start * PAGE,
					strerror(errno), error);
				exit(1);
			}
	}
}

/* --vm snp: every vCPU's VMSA is measured and the guest may run. */
static void finish_launch(struct vm *vm)
{
	struct kvm_sev_snp_launch_finish f = { 0 };
	uint32_t error = 0;

	if (sev_cmd(vm, KVM_SEV_SNP_LAUNCH_FINISH, &f, &error)) {
		fprintf(stderr, "%s: KVM_SEV_SNP_LAUNCH_FINISH: %s (firmware status %u)\n", prog,
			strerror(errno), error);
		exit(1);
	}
}

/* Loads everything while memory is shared, then makes all of it private: the launch. */
static void load_and_launch(struct vm *vm, double *load_ms, double *launch_ms)
{
	struct layout *l = &vm->lay;
	uint64_t expected[GUEST_MAX_VCPUS];
	double t0 = now_ms();

	if (vm->kvm)
		x86_build_page_tables(vm->host, l->page_tables, vm->opt.memory);
	fill_launch_memory(vm->host, l, &vm->opt, &vm->img, expected);
	for (unsigned v = 0; v < vm->opt.vcpus; v++)
		vm->vcpus[v].expected = expected[v];
	struct kvm_userspace_memory_region2 r = {
		.slot = 0, .flags = KVM_MEM_GUEST_MEMFD, .memory_size = vm->opt.memory,
		.guest_memfd = (uint32_t)vm->gmem,
	};
	if (gm_ioctl(vm->vm_fd, KVM_SET_USER_MEMORY_REGION2, &r))
		fatal("KVM_SET_USER_MEMORY_REGION2", errno);
	*load_ms = now_ms() - t0;

	t0 = now_ms();
	int err = convert(vm, 0, vm->opt.memory, true);
	if (err)
		fatal("converting guest memory to private", -err);
	vm->launch_bytes = vm->opt.memory;
	if (vm->opt.snp)
		measure_launch(vm);
	*launch_ms = now_ms() - t0;
}

static void setup_vcpus(struct vm *vm)
{
	struct kvm_enable_cap cap = { .cap = KVM_CAP_EXIT_HYPERCALL,
				      .args = { 1ULL << KVM_HC_MAP_GPA_RANGE } };
	int err;

	if (gm_ioctl(vm->vm_fd, KVM_ENABLE_CAP, &cap))
		fatal("KVM_ENABLE_CAP(KVM_CAP_EXIT_HYPERCALL)", errno);
	for (unsigned v = 0; v < vm->opt.vcpus; v++) {
		struct vcpu_state *s = &vm->vcpus[v];

		s->id = v;
		s->fd = gm_ioctl(vm->vm_fd, KVM_CREATE_VCPU, v);
		if (s->fd < 0)
			fatal("KVM_CREATE_VCPU", errno);
		s->run = gm_mmap(NULL, 3 * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, s->fd, 0);
		if (s->run == MAP_FAILED)
			fatal("mapping kvm_run", errno);
		if (vm->kvm) {
			err = x86_set_cpuid(s->fd);
			if (!err)
				err = x86_enter_long_mode(s->fd, vm->lay.page_tables,
							  vm->lay.image + vm->img.entry,
							  GUEST_STACKS_GPA + (v + 1) * GUEST_STACK_SIZE, v,
							  GUEST_BOOT_PARAMS_GPA);
			if (err)
				fatal("setting up the vCPU for long mode", -err);
		} else {
			err = gm_vcpu_set_guest(s->fd, vm->opt.snp ? guest_snp_soft_entry
								   : guest_soft_entry,
						(void *)(uintptr_t)v);
			if (err)
				fatal("installing the guest", -err);
		}
	}
}

/* A ucall's command and values: registers on KVM (guest memory stays private), kvm_run on soft. */
static int read_ucall(struct vm *vm, struct vcpu_state *s, uint64_t *cmd, uint64_t a[3])
{
	if (vm->kvm) {
		struct kvm_regs regs;

		if (gm_ioctl(s->fd, KVM_GET_REGS, &regs))
			return -errno;
		*cmd = regs.rdi;
		a[0] = regs.rsi;
		a[1] = regs.r8;
		a[2] = regs.r9;
	} else {
		struct gm_ucall uc;
		int err = gm_vcpu_get_ucall(s->fd, &uc);

		if (err)
			return err;
		*cmd = uc.cmd;
		memcpy(a, uc.args, 3 * sizeof(a[0]));
	}
	return 0;
}

static bool in_memory(struct vm *vm, uint64_t gpa, uint64_t size)
{
	return gpa < vm->opt.memory && size <= vm->opt.memory - gpa;
}

static void handle_ucall(struct vm *vm, struct vcpu_state *s)
{
	uint64_t cmd = 0, a[3] = { 0 };
	char msg[256];

	if (read_ucall(vm, s, &cmd, a)) {
		snprintf(s->error, sizeof(s->error), "cannot read the ucall");
		return;
	}
	switch (cmd) {
	case GUEST_UCALL_CHECKSUM:
		s->checksum = a[1];
		s->checksum_seen = true;
		say(vm, VERBOSE, "vCPU %u: checksum %#018" PRIx64 " (%s)\n", s->id, a[1],
		    a[1] == s->expected ? "as loaded" : "WRONG");
		break;
	case GUEST_UCALL_PRINT: {
		uint64_t len = a[2] < sizeof(msg) - 1 ? a[2] : sizeof(msg) - 1;

		/* The guest made the page shared: the VMM can read it now, in place. */
		if (!in_memory(vm, a[1], len)) {
			snprintf(s->error, sizeof(s->error), "message outside guest memory");
			return;
		}
		memcpy(msg, vm->host + a[1], len);
		msg[len] = 0;
		say(vm, NORMAL, "guest vCPU %u says: %s\n", s->id, msg);
		break;
	}
	case GUEST_UCALL_PUNCH:
		if (!in_memory(vm, a[1], a[2]) ||
		    gm_fallocate(vm->gmem, FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE, (off_t)a[1],
				 (off_t)a[2])) {
			snprintf(s->error, sizeof(s->error), "punch-hole of %#" PRIx64 "+%#" PRIx64
				 " failed", a[1], a[2]);
			return;
		}
		atomic_fetch_add(&vm->stats.punches, 1);
		atomic_fetch_add(&vm->stats.punched_bytes, a[2]);
		say(vm, VERBOSE, "vCPU %u: punched %" PRIu64 " KiB at %#" PRIx64 "\n", s->id,
		    a[2] >> 10, a[1]);
		break;
	case GUEST_UCALL_RESULT:
		s->result_seen = true;
		s->result_ok = a[1] == 1;
		s->failed_check = a[2];
		break;
	case GUEST_UCALL_FAIL:
		snprintf(s->error, sizeof(s->error), "the guest failed check %" PRIu64, a[1]);
		break;
	case GUEST_UCALL_NONCE:
		/* A fresh nonce in the page the guest made shared: the report must carry it. */
		if (!vm->opt.snp || a[2] != sizeof(vm->nonce) || !in_memory(vm, a[1], a[2]) ||
		    getrandom(vm->nonce, sizeof(vm->nonce), 0) != (ssize_t)sizeof(vm->nonce)) {
			snprintf(s->error, sizeof(s->error), "cannot give the guest a nonce");
			return;
		}
		memcpy(vm->host + a[1], vm->nonce, sizeof(vm->nonce));
		break;
	case GUEST_UCALL_REPORT:
		if ((int64_t)a[2] < 0) {
			snprintf(s->error, sizeof(s->error), "the guest's report request failed: %s",
				 strerror((int)-(int64_t)a[2]));
			return;
		}
		if (!vm->opt.snp || a[2] != GM_SNP_REPORT_SIZE || !in_memory(vm, a[1], a[2])) {
			snprintf(s->error, sizeof(s->error), "the guest handed back no report");
			return;
		}
		memcpy(vm->report, vm->host + a[1], GM_SNP_REPORT_SIZE);
		vm->report_seen = true;
		say(vm, VERBOSE, "vCPU %u: attestation report, %u bytes\n", s->id, GM_SNP_REPORT_SIZE);
		break;
	default:
		snprintf(s->error, sizeof(s->error), "unknown ucall %#" PRIx64, cmd);
	}
}

static void handle_hypercall(struct vm *vm, struct vcpu_state *s)
{
	struct kvm_run *run = s->run;
	uint64_t gpa = run->hypercall.args[0], size = run->hypercall.args[1] * PAGE;
	bool private = run->hypercall.args[2] & KVM_MAP_GPA_RANGE_ENCRYPTED;
	int err;

	if (run->hypercall.nr != KVM_HC_MAP_GPA_RANGE || !in_memory(vm, gpa, size)) {
		run->hypercall.ret = (uint64_t)-KVM_EINVAL;
		return;
	}
	err = convert(vm, gpa, size, private);
	run->hypercall.ret = err ? (uint64_t)-KVM_EINVAL : 0;
	if (!err)
		count_conversion(vm, size, private);
	say(vm, VERBOSE, "vCPU %u: MAP_GPA_RANGE %#" PRIx64 " +%" PRIu64 " KiB -> %s%s\n", s->id, gpa,
	    size >> 10, private ? "private" : "shared", err ? " (failed)" : "");
}

static void *vcpu_thread(void *arg)
{
	struct vcpu_state *s = arg;
	struct vm *vm = (struct vm *)((char *)(s - s->id) - offsetof(struct vm, vcpus));

	while (!s->error[0]) {
		if (gm_ioctl(s->fd, KVM_RUN, 0) && errno != EFAULT) {
			snprintf(s->error, sizeof(s->error), "KVM_RUN: %s", strerror(errno));
			break;
		}
		switch (s->run->exit_reason) {
		case KVM_EXIT_HYPERCALL:
			handle_hypercall(vm, s);
			break;
		case KVM_EXIT_IO:
			if (s->run->io.port != GUEST_UCALL_PORT) {
				snprintf(s->error, sizeof(s->error), "I/O to port %#x",
					 s->run->io.port);
				break;
			}
			handle_ucall(vm, s);
			break;
		case KVM_EXIT_MEMORY_FAULT: {
			/* An implicit conversion request: give the guest the kind it asked for. */
			bool private = s->run->memory_fault.flags & KVM_MEMORY_EXIT_FLAG_PRIVATE;

			atomic_fetch_add(&vm->stats.memory_faults, 1);
			if (convert(vm, s->run->memory_fault.gpa, s->run->memory_fault.size, private))
				snprintf(s->error, sizeof(s->error), "memory fault at %#llx",
					 (unsigned long long)s->run->memory_fault.gpa);
			else
				count_conversion(vm, s->run->memory_fault.size, private);
			break;
		}
		case KVM_EXIT_HLT:
			s->halted = true;
			return NULL;
		default:
			snprintf(s->error, sizeof(s->error), "unexpected exit %u", s->run->exit_reason);
		}
	}
	return NULL;
}

/* ---- the report ---- */

static sigjmp_buf probe_jmp;

static void on_sigbus(int sig)
{
	(void)sig;
	siglongjmp(probe_jmp, 1);
}

/* Whether the VMM's own mapping refuses a read of gpa. */
static bool vmm_refused(struct vm *vm, uint64_t gpa)
{
	struct sigaction sa = { .sa_handler = on_sigbus }, old;
	bool refused = false;

	sigaction(SIGBUS, &sa, &old);
	if (sigsetjmp(probe_jmp, 1) == 0)
		(void)*(volatile char *)(vm->host + gpa);
	else
		refused = true;
	sigaction(SIGBUS, &old, NULL);
	return refused;
}

/* The host KVM's counters for the VM, by name, from its binary stats; false where it has none. */
static bool host_kvm_stats(struct vm *vm, const char *const *names, uint64_t *values, size_t n)
{
	struct kvm_stats_header h;
	int fd = gm_ioctl(vm->vm_fd, KVM_GET_STATS_FD, 0);
	bool found = false;
	char *descs = NULL;

	if (fd < 0)
		return false;
	if (pread(fd, &h, sizeof(h), 0) != sizeof(h))
		goto out;
	size_t each = sizeof(struct kvm_stats_desc) + h.name_size;

	descs = malloc(each * h.num_desc);
	if (!descs || pread(fd, descs, each * h.num_desc, h.desc_offset) != (ssize_t)(each * h.num_desc))
		goto out;
	for (uint32_t i = 0; i < h.num_desc; i++) {
		struct kvm_stats_desc *d = (struct kvm_stats_desc *)(descs + i * each);

		for (size_t k = 0; k < n; k++)
			if (!strncmp(d->name, names[k], h.name_size) &&
			    pread(fd, &values[k], 8, h.data_offset + d->offset) == 8)
				found = true;
	}
out:
	free(descs);
	close(fd);
	return found;
}

static void print_size(char *buf, size_t n, uint64_t bytes)
{
	if (bytes >= GIB && !(bytes % GIB))
		snprintf(buf, n, "%" PRIu64 " GiB", bytes / GIB);
	else if (bytes >= MIB && !(bytes % MIB))
		snprintf(buf, n, "%" PRIu64 " MiB", bytes / MIB);
	else
		snprintf(buf, n, "%" PRIu64 " KiB", bytes / KIB);
}

/*
 * --vm snp: whether the guest's report is signed by the platform's key (its
 * public half only) and carries the nonce and the launch digest; the reason
 * in why when not.
 */
static bool report_verified(struct vm *vm, char *why, size_t n)
{
	struct gm_snp_launch_info info;
	char pem[GM_SNP_PLATFORM_KEY_PEM_MAX];
	int ret;

	if (!vm->report_seen) {
		snprintf(why, n, "the guest handed back no report");
		return false;
	}
	ret = gm_snp_platform_key_pem(pem, sizeof(pem));
	if (ret < 0) {
		snprintf(why, n, "no platform key: %s", strerror(-ret));
		return false;
	}
	if (gm_snp_report_verify(vm->report, GM_SNP_REPORT_SIZE, pem, why, n))
		return false;
	if (gm_snp_launch_info(vm->vm_fd, &info)) {
		snprintf(why, n, "the launch cannot be read");
		return false;
	}
	if (memcmp(vm->report + GM_SNP_REPORT_DATA_OFFSET, vm->nonce, sizeof(vm->nonce))) {
		snprintf(why, n, "REPORT_DATA is not the nonce");
		return false;
	}
	if (memcmp(vm->report + GM_SNP_REPORT_MEASUREMENT_OFFSET, info.measurement,
		   sizeof(info.measurement))) {
		snprintf(why, n, "MEASUREMENT is not the launch digest");
		return false;
	}
	snprintf(why, n, "signature valid (platform key), REPORT_DATA = the nonce, MEASUREMENT = "
		 "the launch digest");
	return true;
}

/* --report FILE: the guest's report as it handed it back. */
static bool write_report(struct vm *vm)
{
	FILE *f = fopen(vm->opt.report_path, "wb");
	bool ok = f && fwrite(vm->report, GM_SNP_REPORT_SIZE, 1, f) == 1;

	if (f && fclose(f))
		ok = false;
	if (!ok)
		fprintf(stderr, "%s: cannot write the report to '%s': %s\n", prog, vm->opt.report_path,
			strerror(errno));
	return ok;
}

/* --vm snp: what the platform measured, and the report. */
static void report_snp(struct vm *vm)
{
	static const char *const types[8] = { NULL, "normal", "VMSA", "zero", "unmeasured",
					       "secrets", "CPUID", NULL };
	struct gm_snp_launch_info info;
	char digest[2 * sizeof(info.measurement) + 1];
	bool first = true;

	if (gm_snp_launch_info(vm->vm_fd, &info)) {
		printf("  SNP launch    the platform cannot say\n");
		return;
	}
	for (size_t i = 0; i < sizeof(info.measurement); i++)
		sprintf(digest + 2 * i, "%02x", info.measurement[i]);
	printf("  SNP launch    digest %s\n", digest);
	printf("                pages measured:");
	for (int t = 1; t < 7; t++) {
		if (!info.pages_measured[t])
			continue;
		printf("%s %" PRIu64 " %s", first ? "" : ",", info.pages_measured[t], types[t]);
		first = false;
	}
	printf("%s; guest %s\n", first ? " none" : "",
	       info.state == GM_SNP_STATE_RUNNING ? "running (LAUNCH_FINISH done)" : "not launched");
	printf("  attestation   report %s: %s%s%s\n",
	       !vm->report_seen ? "missing" : vm->report_ok ? "verified" : "NOT VERIFIED",
	       vm->report_why, vm->opt.report_path && vm->report_seen ? "; written to " : "",
	       vm->opt.report_path && vm->report_seen ? vm->opt.report_path : "");
}

static void report(struct vm *vm, const double *phase_ms, bool private_refused)
{
	struct layout *l = &vm->lay;
	struct gm_gmem_info gi;
	struct gm_vm_info vi;
	char a[32], b[32];

	if (vm->opt.verbosity == QUIET)
		return;
	gm_gmem_info(vm->gmem, &gi);
	gm_vm_info(vm->vm_fd, &vi);
	printf("\ngmem-vm report\n");
	printf("  backend       %s", !vm->kvm ? "soft (software vCPUs)" :
	       vi.host_gmem ? "kvm (/dev/kvm, the host's guest_memfd)" : "kvm (/dev/kvm)");
	if (vm->kvm && !vi.host_gmem)
		printf("; the host has no guest_memfd: memory is a memfd bound as host-address memory");
	else if (vm->kvm)
		printf("%s", vi.host_hva_view ? "; the host's KVM reads guest memory through a view mapping"
					      : "; no host view of guest memory");
	printf("\n");
	print_size(a, sizeof(a), vm->opt.memory);
	print_size(b, sizeof(b), gi.folio_size);
	printf("  memory        %s guest_memfd, %s folios, %s backing, %u vCPU%s\n", a, b,
	       gi.backing == GM_BACKING_HUGETLB ? "hugetlbfs" :
	       gi.backing == GM_BACKING_HOST_GMEM ? "host guest_memfd" : "memfd",
	       vm->opt.vcpus, vm->opt.vcpus > 1 ? "s" : "");
	printf("  layout        page tables %#" PRIx64 "+%" PRIu64 " KiB, boot params %#llx, stacks %#llx,\n"
	       "                image %#" PRIx64 "+%" PRIu64 " B, data %#" PRIx64 "+%" PRIu64 " KiB/vCPU,\n"
	       "                message pages %#" PRIx64 ", punch areas %#" PRIx64 "+%" PRIu64 " KiB/vCPU\n",
	       l->page_tables, l->page_tables_size >> 10, GUEST_BOOT_PARAMS_GPA, GUEST_STACKS_GPA,
	       l->image, l->image_size, l->data, DATA_PER_VCPU >> 10, l->shared, l->punch,
	       l->punch_size >> 10);
	print_size(a, sizeof(a), vm->launch_bytes);
	printf("  conversions   launch: %s to private\n", a);
	printf("                to shared:  %llu x 4 KiB, %llu x <= 2 MiB, %llu larger (%llu KiB)\n",
	       vm->stats.to_shared[0], vm->stats.to_shared[1], vm->stats.to_shared[2],
	       vm->stats.to_shared_bytes >> 10);
	printf("                to private: %llu x 4 KiB, %llu x <= 2 MiB, %llu larger (%llu KiB)\n",
	       vm->stats.to_private[0], vm->stats.to_private[1], vm->stats.to_private[2],
	       vm->stats.to_private_bytes >> 10);
	printf("                memory faults handled: %llu\n", vm->stats.memory_faults);
	printf("  punch-hole    %llu requests, %llu KiB returned to the system\n", vm->stats.punches,
	       vm->stats.punched_bytes >> 10);
	print_size(a, sizeof(a), gi.size - gi.shared_bytes);
	printf("  memory now    private %s, shared %" PRIu64 " KiB; the VMM's read of private memory: %s\n",
	       a, gi.shared_bytes >> 10, private_refused ? "refused (SIGBUS)" : "ALLOWED");
	if (!vm->kvm) {
		struct gm_mmu_stats st;

		gm_vm_mmu_stats(vm->vm_fd, &st);
		printf("  stage-2       %" PRIu64 " faults, %" PRIu64 " zaps, %" PRIu64 " retries; mapped: "
		       "%" PRIu64 " KiB in 4K leaves, %" PRIu64 " MiB in 2M leaves\n", st.faults, st.zaps,
		       st.retries, st.mapped_4k_bytes >> 10, st.mapped_2m_bytes >> 20);
	} else {
		static const char *const names[] = { "pages_4k", "pages_2m", "pages_1g",
						     "mmu_shadow_zapped", "remote_tlb_flush" };
		uint64_t v[5] = { 0 };

		if (host_kvm_stats(vm, names, v, 5))
			printf("  KVM mappings  %" PRIu64 " x 4K, %" PRIu64 " x 2M, %" PRIu64 " x 1G pages; "
			       "%" PRIu64 " shadow pages zapped, %" PRIu64 " TLB flushes (host KVM stats)\n",
			       v[0], v[1], v[2], v[3], v[4]);
		else
			printf("  KVM mappings  the host's KVM exports no statistics\n");
	}
	for (unsigned v = 0; v < vm->opt.vcpus; v++) {
		struct vcpu_state *s = &vm->vcpus[v];

		printf("  vCPU %u        checksum %#018" PRIx64 " (%s), %s\n", v, s->checksum,
		       !s->checksum_seen ? "not reported" : s->checksum == s->expected ? "matches the loaded data" : "WRONG",
		       s->error[0] ? s->error : !s->result_seen ? "no result" :
		       s->result_ok ? "all checks passed, halted" : "a check failed");
	}
	if (vm->opt.snp)
		report_snp(vm);
	printf("  phases        setup %.2f ms, load %.2f ms, launch %.2f ms, run %.2f ms",
	       phase_ms[0], phase_ms[1], phase_ms[2], phase_ms[3]);
	fflush(stdout);
}

int main(int argc, char **argv)
{
	struct vm vm = { .print_lock = PTHREAD_MUTEX_INITIALIZER };
	pthread_t threads[GUEST_MAX_VCPUS];
	double phase[5], t;
	bool ok = true, private_refused;

	prog = "gmem-vm";
	help_intro = "Boots a guest on libgmem's guest_memfd: loads it while memory is shared, makes it\n"
		     "private, runs it, converts pages in place when the guest asks, and reports.";
	parse_options(argc, argv, &vm.opt);
	if (vm.opt.write_image) {
		write_image(vm.opt.write_image);
		return 0;
	}
	select_image(&vm.opt, &vm.img);
	plan_layout_or_exit(&vm.lay, &vm.opt, &vm.img);

	t = now_ms();
	create_vm(&vm);
	phase[0] = now_ms() - t;
	load_and_launch(&vm, &phase[1], &phase[2]);
	private_refused = vmm_refused(&vm, vm.lay.data);
	say(&vm, VERBOSE, "launched: %s backend, guest memory private, the VMM's read of it %s\n",
	    vm.kvm ? "kvm" : "soft", private_refused ? "raises SIGBUS" : "works (!)");

	t = now_ms();
	setup_vcpus(&vm);
	if (vm.opt.snp)
		finish_launch(&vm);
	for (unsigned v = 0; v < vm.opt.vcpus; v++)
		if (pthread_create(&threads[v], NULL, vcpu_thread, &vm.vcpus[v]))
			fatal("starting a vCPU thread", EAGAIN);
	for (unsigned v = 0; v < vm.opt.vcpus; v++)
		pthread_join(threads[v], NULL);
	phase[3] = now_ms() - t;

	for (unsigned v = 0; v < vm.opt.vcpus; v++) {
		struct vcpu_state *s = &vm.vcpus[v];

		if (s->error[0] || !s->halted || !s->result_ok || !s->checksum_seen ||
		    s->checksum != s->expected) {
			ok = false;
			fprintf(stderr, "%s: vCPU %u: %s\n", prog, v,
				s->error[0] ? s->error : !s->result_seen ? "ended without a result" :
				!s->result_ok ? "the guest's checks failed" :
				s->checksum != s->expected ? "private data checksum differs" :
				"did not halt");
		}
	}
	ok = ok && private_refused;
	if (vm.opt.snp) {
		vm.report_ok = report_verified(&vm, vm.report_why, sizeof(vm.report_why));
		if (!vm.report_ok)
			fprintf(stderr, "%s: the attestation report: %s\n", prog, vm.report_why);
		if (vm.report_seen && vm.opt.report_path && !write_report(&vm))
			vm.report_ok = false;
		ok = ok && vm.report_ok;
	}

	/* The report reads the live VM; teardown is timed after it and ends the phases line. */
	report(&vm, phase, private_refused);
	t = now_ms();
	for (unsigned v = 0; v < vm.opt.vcpus; v++) {
		gm_munmap(vm.vcpus[v].run, 3 * PAGE);
		gm_close(vm.vcpus[v].fd);
	}
	gm_munmap(vm.host, vm.opt.memory);
	gm_close(vm.gmem);
	if (vm.sev >= 0)
		gm_close(vm.sev);
	gm_close(vm.vm_fd);
	gm_close(vm.kvm_fd);
	free(vm.img.owned);
	phase[4] = now_ms() - t;
	if (vm.opt.verbosity != QUIET)
		printf(", teardown %.2f ms\n", phase[4]);
	if (vm.opt.verbosity != QUIET)
		printf("%s: %s\n", prog, ok ? "the guest halted normally" : "the guest did not finish normally");
	return ok ? 0 : 1;
}
