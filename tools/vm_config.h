/* What gmem-vm and gmem-measure share: their options, the guest image, the guest-physical layout, the launch contents. */
#ifndef TOOLS_VM_CONFIG_H
#define TOOLS_VM_CONFIG_H

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <poll.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

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
	bool snp;               /* --vm snp */
	const char *report_path;
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


/* --vm snp's launch policy: SMT allowed, and bit 17, which must be set. */
#define SNP_POLICY ((1ULL << 17) | (1ULL << 16))

/* The program's name in messages; each tool sets it first thing. */
static const char *prog;
/* The tool's own lines at the top of --help. */
static const char *help_intro;

static inline void usage_error(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "%s: ", prog);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(EXIT_BAD_USAGE);
}

static inline void fatal(const char *what, int err)
{
	fprintf(stderr, "%s: %s: %s\n", prog, what, strerror(err));
	exit(1);
}

static inline void help(void)
{
	printf("usage: %s [options]\n%s\n\n"
	       "  -m, --memory SIZE     guest memory, with K, M or G (default 64M; 8M to 4G)\n"
	       "  -c, --vcpus N         vCPUs, each running the scenario on its own data (default 1, at most %d)\n"
	       "  -b, --backend NAME    kvm (/dev/kvm), soft (software vCPUs) or auto (default: kvm\n"
	       "                        where /dev/kvm works, soft otherwise)\n"
	       "      --huge            2 MiB folios (hugetlbfs where huge pages are reserved)\n"
	       "  -i, --image FILE      run FILE instead of the built-in guest (kvm backend only)\n"
	       "      --image-timeout S  give up on an image (pipe, FIFO) that sends nothing for S\n"
	       "                        seconds (default %d, 1 to %d)\n"
	       "      --write-image FILE  write the built-in guest as an image file and exit\n"
	       "      --vm TYPE         sw (SW_PROTECTED, the default) or snp (SEV-SNP on libgmem's\n"
	       "                        software platform: measured launch, attestation; soft backend)\n"
	       "      --report FILE     --vm snp: write the guest's attestation report to FILE\n"
	       "  -v, --verbose         also print every exit and conversion\n"
	       "  -q, --quiet           print nothing but errors\n"
	       "  -h, --help            this text\n\n"
	       "Exit status: 0 when every vCPU halted normally with its checks passed, 1 when the\n"
	       "guest failed or the VM could not run, 2 for a bad argument or an unusable image.\n",
	       prog, help_intro, GUEST_MAX_VCPUS, DEFAULT_IMAGE_TIMEOUT, MAX_IMAGE_TIMEOUT);
}

/*
 * The one number parser: a plain unsigned number, decimal (a leading 0 is not octal) or,
 * for sizes, 0x hex; no sign, no blanks, no wrap. False for anything else, including a
 * value past UINT64_MAX.
 */
static inline bool parse_u64(const char *s, int base, uint64_t *v, const char **end)
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
static inline uint64_t parse_number(const char *opt, const char *s, uint64_t min, uint64_t max)
{
	const char *end;
	uint64_t v;

	if (!parse_u64(s, 10, &v, &end) || *end || v < min || v > max)
		usage_error("bad %s '%s': give a number from %" PRIu64 " to %" PRIu64, opt, s, min, max);
	return v;
}

static inline uint64_t parse_size(const char *s)
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

static inline void parse_options(int argc, char **argv, struct options *o)
{
	static const struct option longopts[] = {
		{ "memory", required_argument, NULL, 'm' },
		{ "vcpus", required_argument, NULL, 'c' },
		{ "backend", required_argument, NULL, 'b' },
		{ "huge", no_argument, NULL, 'H' },
		{ "image", required_argument, NULL, 'i' },
		{ "write-image", required_argument, NULL, 'W' },
		{ "image-timeout", required_argument, NULL, 'T' },
		{ "vm", required_argument, NULL, 'V' },
		{ "report", required_argument, NULL, 'R' },
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
		case 'V':
			if (!strcmp(optarg, "snp"))
				o->snp = true;
			else if (strcmp(optarg, "sw"))
				usage_error("bad --vm '%s': give sw or snp", optarg);
			break;
		case 'R':
			o->report_path = optarg;
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
	if (o->report_path && !o->snp)
		usage_error("--report needs --vm snp: only an SNP guest has a report");
}

/* ---- images ---- */

static inline void write_image(const char *path)
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
static inline size_t read_image_bytes(int fd, void *buf, size_t n, const char *path, unsigned timeout)
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
static inline void wait_for_writer(int fd, const char *path, unsigned timeout)
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

static inline void load_image(const char *path, unsigned timeout, struct image *img)
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

static inline uint64_t align_up(uint64_t v, uint64_t a)
{
	return (v + a - 1) & ~(a - 1);
}

/* Huge folios are punched whole: each vCPU's punch area is then one 2 MiB folio. */
static inline bool plan_layout(struct layout *l, uint64_t memory, unsigned vcpus, uint64_t image_size,
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

/* The image the options name: the file, or the built-in guest. */
static inline void select_image(const struct options *o, struct image *img)
{
	if (o->image_path) {
		load_image(o->image_path, o->image_timeout, img);
	} else {
		img->code = guest_image_start;
		img->size = (uint64_t)(guest_image_end - guest_image_start);
	}
}

/* The layout for the options and image, or exit status 2 saying how much memory it needs. */
static inline void plan_layout_or_exit(struct layout *l, const struct options *o, const struct image *img)
{
	if (!plan_layout(l, o->memory, o->vcpus, img->size, o->huge)) {
		uint64_t need = (l->end + MIB - 1) / MIB;

		usage_error("the image (%" PRIu64 " bytes) and %u vCPU%s' data need %" PRIu64 " MiB of "
			    "guest memory, %" PRIu64 " MiB given: use --memory %" PRIu64 "M or more",
			    img->size, o->vcpus, o->vcpus > 1 ? "s" : "", need, o->memory / MIB, need);
	}
}

/*
 * What the VMM loads before launch, written at mem (guest memory from GPA 0):
 * the boot parameters, the image, each vCPU's data. expected[v] gets vCPU v's
 * checksum when given. (Page tables, for the kvm backend, are gmem-vm's own.)
 */
/*
 * What --vm snp refuses, for gmem-vm and gmem-measure alike: a digest of a
 * launch gmem-vm would not run is no prediction of anything.
 */
static inline void snp_check_options(const struct options *o)
{
	if (o->backend == BACKEND_KVM)
		usage_error("--vm snp runs on libgmem's software platform: use --backend soft or auto");
	if (o->image_path)
		usage_error("--vm snp runs the built-in scenario on soft vCPUs: --image cannot be "
			    "launched or measured with it");
}

static inline void fill_launch_memory(char *mem, const struct layout *l, const struct options *o,
			       const struct image *img, uint64_t *expected)
{
	struct gm_boot_params bp = {
		.magic = GUEST_BOOT_MAGIC, .nr_vcpus = o->vcpus, .mem_size = o->memory,
		.data_gpa = l->data, .data_size = DATA_PER_VCPU, .shared_gpa = l->shared,
		.punch_gpa = l->punch, .punch_size = l->punch_size,
	};

	memcpy(mem + GUEST_BOOT_PARAMS_GPA, &bp, sizeof(bp));
	memcpy(mem + l->image, img->code, img->size);
	for (unsigned v = 0; v < o->vcpus; v++) {
		uint64_t *words = (uint64_t *)(mem + l->data + v * DATA_PER_VCPU);
		uint64_t sum = GUEST_CHECKSUM_INIT;

		for (uint64_t i = 0; i < DATA_PER_VCPU / 8; i++) {
			words[i] = guest_data_word(v, i);
			sum = guest_checksum_step(sum, words[i]);
		}
		if (expected)
			expected[v] = sum;
	}
}

/*
 * --vm snp: the ranges LAUNCH_UPDATE measures as NORMAL pages, in the order it
 * adds them: boot parameters, image, data. The rest of memory is private but
 * unmeasured; the guest validates what it uses of it.
 */
struct measured_range {
	uint64_t gpa, size;
};
#define NR_MEASURED_RANGES 3
static inline void measured_ranges(const struct layout *l, const struct options *o,
			    struct measured_range r[NR_MEASURED_RANGES])
{
	r[0] = (struct measured_range){ GUEST_BOOT_PARAMS_GPA, PAGE };
	r[1] = (struct measured_range){ l->image, align_up(l->image_size, PAGE) };
	r[2] = (struct measured_range){ l->data, o->vcpus * DATA_PER_VCPU };
}

#endif
