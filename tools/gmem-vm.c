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

#include "../guest/guest_image.h"
#include "../guest/layout.h"
#include "x86_boot.h"

#define KIB ((uint64_t)1 << 10)
#define MIB ((uint64_t)1 << 20)
#define GIB ((uint64_t)1 << 30)
#define SZ_2M (2 * MIB)
#define PAGE 4096ULL
#define MIN_MEMORY (8 * MIB)
#define MAX_MEMORY (4 * GIB)
#define DATA_PER_VCPU (1 * MIB)
#define PUNCH_PER_VCPU (64 * KIB)
#define IMAGE_MAGIC "GMEMIMG1"
#define EXIT_BAD_USAGE 2
#define DEFAULT_IMAGE_TIMEOUT 10  /* seconds without data from a pipe or FIFO image */
#define MAX_IMAGE_TIMEOUT 3600

enum backend { BACKEND_AUTO, BACKEND_KVM, BACKEND_SOFT };
enum verbosity { QUIET, NORMAL, VERBOSE };

struct options {
	uint64_t memory;
	unsigned vcpus;
	enum backend backend;
	bool huge;
	const char *image_path;
	const char *write_image;
	unsigned image_timeout; /* seconds */
	enum verbosity verbosity;
};

/* An image file: this header, then the flat code loaded at GUEST_IMAGE_GPA. */
struct image_header {
	char magic[8];
	uint64_t size;          /* bytes of code after the header */
	uint64_t entry;         /* entry point, as an offset into the code */
	uint64_t reserved;
};

struct image {
	const uint8_t *code;
	uint64_t size, entry;
	void *owned;
};

struct layout {
	uint64_t page_tables, page_tables_size;
	uint64_t image, image_size;
	uint64_t data, shared, punch, punch_size, end;
};

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
	char *host;             /* the VMM's mapping of guest memory */
	struct vcpu_state vcpus[GUEST_MAX_VCPUS];
	struct stats stats;
	uint64_t launch_bytes;
	pthread_mutex_t print_lock;
};

static const char *prog = "gmem-vm";

static void usage_error(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "%s: ", prog);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(EXIT_BAD_USAGE);
}

static void fatal(const char *what, int err)
{
	fprintf(stderr, "%s: %s: %s\n", prog, what, strerror(err));
	exit(1);
}

static void help(void)
{
	printf("usage: %s [options]\n"
	       "Boots a guest on libgmem's guest_memfd: loads it while memory is shared, makes it\n"
	       "private, runs it, converts pages in place when the guest asks, and reports.\n\n"
	       "  -m, --memory SIZE     guest memory, with K, M or G (default 64M; 8M to 4G)\n"
	       "  -c, --vcpus N         vCPUs, each running the scenario on its own data (default 1, at most %d)\n"
	       "  -b, --backend NAME    kvm (/dev/kvm), soft (software vCPUs) or auto (default: kvm\n"
	       "                        where /dev/kvm works, soft otherwise)\n"
	       "      --huge            2 MiB folios (hugetlbfs where huge pages are reserved)\n"
	       "  -i, --image FILE      run FILE instead of the built-in guest (kvm backend only)\n"
	       "      --image-timeout S  give up on an image (pipe, FIFO) that sends nothing for S\n"
	       "                        seconds (default %d, 1 to %d)\n"
	       "      --write-image FILE  write the built-in guest as an image file and exit\n"
	       "  -v, --verbose         also print every exit and conversion\n"
	       "  -q, --quiet           print nothing but errors\n"
	       "  -h, --help            this text\n\n"
	       "Exit status: 0 when every vCPU halted normally with its checks passed, 1 when the\n"
	       "guest failed or the VM could not run, 2 for a bad argument or an unusable image.\n",
	       prog, GUEST_MAX_VCPUS, DEFAULT_IMAGE_TIMEOUT, MAX_IMAGE_TIMEOUT);
}

/*
 * The one number parser: a plain unsigned number, decimal (a leading 0 is not octal) or,
 * for sizes, 0x hex; no sign, no blanks, no wrap. False for anything else, including a
 * value past UINT64_MAX.
 */
static bool parse_u64(const char *s, int base, uint64_t *v, const char **end)
{
	char *stop;
	unsigned long long n;

	if (!isdigit((unsigned char)*s))
		return false;
	errno = 0;
	n = strtoull(s, &stop, base);
	if (errno || stop == s)
		return false;
	*v = n;
	*end = stop;
	return true;
}

/* A whole-string number in [min, max], or exit status 2 naming the option and the range. */
static uint64_t parse_number(const char *opt, const char *s, uint64_t min, uint64_t max)
{
	const char *end;
	uint64_t v;

	if (!parse_u64(s, 10, &v, &end) || *end || v < min || v > max)
		usage_error("bad %s '%s': give a number from %" PRIu64 " to %" PRIu64, opt, s, min, max);
	return v;
}

static uint64_t parse_size(const char *s)
{
	const char *end;
	unsigned shift = 0;
	uint64_t v;

	bool hex = s[0] == '0' && (s[1] == 'x' || s[1] == 'X');

	if (!parse_u64(s, hex ? 16 : 10, &v, &end)) {
		/* parse_u64 refuses a number that starts with a digit only when it overflows. */
		if (isdigit((unsigned char)*s))
			usage_error("--memory %s is out of range: give 8M to 4G", s);
		usage_error("bad --memory '%s': give a size such as 64M or 1G", s);
	}
	switch (*end) {
	case 'k': case 'K': shift = 10; end++; break;
	case 'm': case 'M': shift = 20; end++; break;
	case 'g': case 'G': shift = 30; end++; break;
	}
	if (*end == 'i' || *end == 'B')
		end += (*end == 'i' && end[1] == 'B') ? 2 : 1;
	if (*end)
		usage_error("bad --memory '%s': give a size such as 64M or 1G", s);
	if (v > MAX_MEMORY >> shift || v << shift < MIN_MEMORY)
		usage_error("--memory %s is out of range: give 8M to 4G", s);
	v <<= shift;
	if (v % SZ_2M)
		usage_error("--memory %s is not a multiple of 2M: round it, e.g. to %lluM", s,
			    (unsigned long long)((v + SZ_2M - 1) / SZ_2M * 2));
	return v;
}

static void parse_options(int argc, char **argv, struct options *o)
{
	static const struct option longopts[] = {
		{ "memory", required_argument, NULL, 'm' },
		{ "vcpus", required_argument, NULL, 'c' },
		{ "backend", required_argument, NULL, 'b' },
		{ "huge", no_argument, NULL, 'H' },
		{ "image", required_argument, NULL, 'i' },
		{ "write-image", required_argument, NULL, 'W' },
		{ "image-timeout", required_argument, NULL, 'T' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	int c;

	*o = (struct options){ .memory = 64 * MIB, .vcpus = 1, .verbosity = NORMAL,
			       .image_timeout = DEFAULT_IMAGE_TIMEOUT };
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":m:c:b:i:vqh", longopts, NULL)) != -1) {
		switch (c) {
		case 'm':
			o->memory = parse_size(optarg);
			break;
		case 'c':
			o->vcpus = (unsigned)parse_number("--vcpus", optarg, 1, GUEST_MAX_VCPUS);
			break;
		case 'b':
			if (!strcmp(optarg, "kvm"))
				o->backend = BACKEND_KVM;
			else if (!strcmp(optarg, "soft"))
				o->backend = BACKEND_SOFT;
			else if (!strcmp(optarg, "auto"))
				o->backend = BACKEND_AUTO;
			else
				usage_error("bad --backend '%s': give kvm, soft or auto", optarg);
			break;
		case 'H':
			o->huge = true;
			break;
		case 'i':
			o->image_path = optarg;
			break;
		case 'W':
			o->write_image = optarg;
			break;
		case 'T':
			o->image_timeout = (unsigned)parse_number("--image-timeout", optarg, 1,
								  MAX_IMAGE_TIMEOUT);
			break;
		case 'v':
			o->verbosity = VERBOSE;
			break;
		case 'q':
			o->verbosity = QUIET;
			break;
		case 'h':
			help();
			exit(0);
		case ':':
			usage_error("option '%s' needs a value: see --help", argv[optind - 1]);
			break;
		default:
			usage_error("unknown option '%s': see --help", argv[optind - 1]);
		}
	}
	if (optind < argc)
		usage_error("unexpected argument '%s': see --help", argv[optind]);
}

/* ---- images ---- */

static void write_image(const char *path)
{
	struct image_header h = { .size = (uint64_t)(guest_image_end - guest_image_start) };
	FILE *f = fopen(path, "wb");

	memcpy(h.magic, IMAGE_MAGIC, sizeof(h.magic));
	if (!f)
		usage_error("cannot create '%s': %s: choose a writable path", path, strerror(errno));
	if (fwrite(&h, sizeof(h), 1, f) != 1 || fwrite(guest_image_start, h.size, 1, f) != 1 ||
	    fclose(f))
		usage_error("cannot write '%s': %s: choose a writable path", path, strerror(errno));
}

/*
 * Reads up to n bytes, fewer only at end of file. The image may be a pipe or a FIFO: it was
 * opened O_NONBLOCK, so an absent writer cannot block the open, and every wait for data is
 * a poll bounded by the timeout.
 */
static size_t read_image_bytes(int fd, void *buf, size_t n, const char *path, unsigned timeout)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	size_t done = 0;

	while (done < n) {
		ssize_t got = read(fd, (char *)buf + done, n - done);

		if (got > 0) {
			done += (size_t)got;
			continue;
		}
		if (got == 0)
			break;
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN)
			usage_error("cannot read image '%s': %s: check the file", path, strerror(errno));
		int ready = poll(&p, 1, (int)timeout * 1000);

		if (ready == 0)
			usage_error("image '%s' sent nothing for %u s: start its writer first, or raise "
				    "--image-timeout", path, timeout);
		if (ready < 0 && errno != EINTR)
			usage_error("cannot wait for image '%s': %s", path, strerror(errno));
	}
	return done;
}

/* A FIFO without a writer reads as end of file at once: wait (bounded) for a writer first. */
static void wait_for_writer(int fd, const char *path, unsigned timeout)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	struct stat st;

	if (fstat(fd, &st) || !S_ISFIFO(st.st_mode))
		return;
	while (true) {
		int ready = poll(&p, 1, (int)timeout * 1000);

		if (ready > 0)
			return;
		if (ready == 0)
			usage_error("image '%s' sent nothing for %u s: start its writer first, or raise "
				    "--image-timeout", path, timeout);
		if (errno != EINTR)
			usage_error("cannot wait for image '%s': %s", path, strerror(errno));
	}
}

static void load_image(const char *path, unsigned timeout, struct image *img)
{
	int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
	struct image_header h;
	size_t got;

	if (fd < 0)
		usage_error("cannot open image '%s': %s: check the path", path, strerror(errno));
	wait_for_writer(fd, path, timeout);
	got = read_image_bytes(fd, &h, sizeof(h), path, timeout);
	if (got == 0)
		usage_error("image '%s' is empty: write one with --write-image FILE", path);
	if (got < sizeof(h) || memcmp(h.magic, IMAGE_MAGIC, sizeof(h.magic)))
		usage_error("'%s' is not a gmem-vm image (no " IMAGE_MAGIC " header): write one with "
			    "--write-image FILE", path);
	if (h.size == 0 || h.size > MAX_MEMORY)
		usage_error("image '%s' declares %" PRIu64 " bytes of code: write it again with "
			    "--write-image FILE", path, h.size);
	if (h.entry >= h.size)
		usage_error("image '%s' has its entry point (%#" PRIx64 ") outside its %" PRIu64
			    " bytes: fix the image", path, h.entry, h.size);
	img->owned = malloc(h.size);
	if (!img->owned)
		usage_error("cannot hold image '%s' (%" PRIu64 " bytes) in memory", path, h.size);
	got = read_image_bytes(fd, img->owned, h.size, path, timeout);
	if (got < h.size)
		usage_error("image '%s' is truncated: its header says %" PRIu64 " bytes of code, the "
			    "file has %zu: write it again with --write-image FILE", path, h.size, got);
	close(fd);
	img->code = img->owned;
	img->size = h.size;
	img->entry = h.entry;
}

/* ---- layout ---- */

static uint64_t align_up(uint64_t v, uint64_t a)
{
	return (v + a - 1) & ~(a - 1);
}

/* Huge folios are punched whole: each vCPU's punch area is then one 2 MiB folio. */
static bool plan_layout(struct layout *l, uint64_t memory, unsigned vcpus, uint64_t image_size,
			bool huge)
{
	l->page_tables = GUEST_PAGE_TABLES_GPA;
	l->page_tables_size = x86_page_tables_size(memory);
	l->image = GUEST_IMAGE_GPA;
	l->image_size = image_size;
	l->data = align_up(l->image + image_size, SZ_2M);
	l->shared = align_up(l->data + vcpus * DATA_PER_VCPU, SZ_2M);
	l->punch = l->shared + SZ_2M;
	l->punch_size = huge ? SZ_2M : PUNCH_PER_VCPU;
	l->end = align_up(l->punch + vcpus * l->punch_size, SZ_2M);
	return l->end <= memory;
}

/* ---- the VMM ---- */

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

static void create_vm(struct vm *vm)
{
	unsigned long backend = vm->opt.backend == BACKEND_KVM ? GM_VM_BACKEND_KVM
				: vm->opt.backend == BACKEND_SOFT ? GM_VM_BACKEND_SOFT : 0;
	struct gm_gmem_info info;

	vm->kvm_fd = gm_open_kvm();
	if (vm->kvm_fd < 0)
		fatal("gm_open_kvm", errno);
	if (!backend) {
		/* auto: the host's KVM where it works, else software vCPUs. */
		vm->vm_fd = gm_ioctl(vm->kvm_fd, KVM_CREATE_VM,
				     KVM_X86_SW_PROTECTED_VM | GM_VM_BACKEND_KVM);
		if (vm->vm_fd < 0)
			backend = GM_VM_BACKEND_SOFT;
		else
			backend = GM_VM_BACKEND_KVM;
	}
	if (backend == GM_VM_BACKEND_SOFT || vm->opt.backend == BACKEND_KVM)
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

/* Loads everything while memory is shared, then makes all of it private: the launch. */
static void load_and_launch(struct vm *vm, double *load_ms, double *launch_ms)
{
	struct layout *l = &vm->lay;
	struct gm_boot_params bp = {
		.magic = GUEST_BOOT_MAGIC, .nr_vcpus = vm->opt.vcpus, .mem_size = vm->opt.memory,
		.data_gpa = l->data, .data_size = DATA_PER_VCPU, .shared_gpa = l->shared,
		.punch_gpa = l->punch, .punch_size = l->punch_size,
	};
	double t0 = now_ms();

	if (vm->kvm)
		x86_build_page_tables(vm->host, l->page_tables, vm->opt.memory);
	memcpy(vm->host + GUEST_BOOT_PARAMS_GPA, &bp, sizeof(bp));
	memcpy(vm->host + l->image, vm->img.code, vm->img.size);
	for (unsigned v = 0; v < vm->opt.vcpus; v++) {
		uint64_t *words = (uint64_t *)(vm->host + l->data + v * DATA_PER_VCPU);
		uint64_t sum = GUEST_CHECKSUM_INIT;

		for (uint64_t i = 0; i < DATA_PER_VCPU / 8; i++) {
			words[i] = guest_data_word(v, i);
			sum = guest_checksum_step(sum, words[i]);
		}
		vm->vcpus[v].expected = sum;
	}
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
			err = gm_vcpu_set_guest(s->fd, guest_soft_entry, (void *)(uintptr_t)v);
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

	parse_options(argc, argv, &vm.opt);
	if (vm.opt.write_image) {
		write_image(vm.opt.write_image);
		return 0;
	}
	if (vm.opt.image_path) {
		load_image(vm.opt.image_path, vm.opt.image_timeout, &vm.img);
	} else {
		vm.img.code = guest_image_start;
		vm.img.size = (uint64_t)(guest_image_end - guest_image_start);
	}
	if (!plan_layout(&vm.lay, vm.opt.memory, vm.opt.vcpus, vm.img.size, vm.opt.huge)) {
		uint64_t need = (vm.lay.end + MIB - 1) / MIB;

		usage_error("the image (%" PRIu64 " bytes) and %u vCPU%s' data need %" PRIu64 " MiB of "
			    "guest memory, %" PRIu64 " MiB given: use --memory %" PRIu64 "M or more",
			    vm.img.size, vm.opt.vcpus, vm.opt.vcpus > 1 ? "s" : "", need,
			    vm.opt.memory / MIB, need);
	}

	t = now_ms();
	create_vm(&vm);
	phase[0] = now_ms() - t;
	load_and_launch(&vm, &phase[1], &phase[2]);
	private_refused = vmm_refused(&vm, vm.lay.data);
	say(&vm, VERBOSE, "launched: %s backend, guest memory private, the VMM's read of it %s\n",
	    vm.kvm ? "kvm" : "soft", private_refused ? "raises SIGBUS" : "works (!)");

	t = now_ms();
	setup_vcpus(&vm);
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

	/* The report reads the live VM; teardown is timed after it and ends the phases line. */
	report(&vm, phase, private_refused);
	t = now_ms();
	for (unsigned v = 0; v < vm.opt.vcpus; v++) {
		gm_munmap(vm.vcpus[v].run, 3 * PAGE);
		gm_close(vm.vcpus[v].fd);
	}
	gm_munmap(vm.host, vm.opt.memory);
	gm_close(vm.gmem);
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
