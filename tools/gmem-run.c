/* gmem-run: runs an unmodified /dev/kvm program on libgmem, through libgmem-preload.so. */
#define _GNU_SOURCE
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define EXIT_BAD_USAGE 2
#define PRELOAD_NAME "libgmem-preload.so"
#ifndef GM_LIBDIR
#define GM_LIBDIR "/usr/local/lib"
#endif

static void usage(FILE *out)
{
	fprintf(out,
		"usage: gmem-run [--backend soft|kvm|auto] [--vm-memory-attributes 0|1] -- PROGRAM [ARGS...]\n"
		"Runs PROGRAM with libgmem standing in for /dev/kvm (LD_PRELOAD=" PRELOAD_NAME ").\n"
		"  --backend               soft vCPUs, the host's /dev/kvm, or kvm where it works (GMEM_BACKEND)\n"
		"  --vm-memory-attributes  1: private/shared per VM (KVM_SET_MEMORY_ATTRIBUTES), as Linux 6.8-7.3;\n"
		"                          0: per guest_memfd, in place (GMEM_VM_MEMORY_ATTRIBUTES)\n"
		"GMEM_PRELOAD names the preload library to use instead of the installed one.\n");
}

static bool readable(const char *path)
{
	return access(path, R_OK) == 0;
}

/* The preload library: $GMEM_PRELOAD, next to this program (build tree or PREFIX/lib), or LIBDIR. */
static const char *find_preload(char *buf, size_t size)
{
	const char *env = getenv("GMEM_PRELOAD");
	static const char *const rel[] = { "/../" PRELOAD_NAME, "/../lib/" PRELOAD_NAME };
	char self[PATH_MAX];
	ssize_t n;

	/* A wrong path would run the program without the library, on the host's /dev/kvm. */
	if (env && *env)
		return readable(env) ? env : NULL;
	n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (n > 0) {
		self[n] = '\0';
		*strrchr(self, '/') = '\0';
		for (size_t i = 0; i < sizeof(rel) / sizeof(rel[0]); i++) {
			if (snprintf(buf, size, "%s%s", self, rel[i]) >= (int)size)
				continue;
			if (readable(buf))
				return realpath(buf, NULL) ?: buf;
		}
	}
	if (snprintf(buf, size, "%s/%s", GM_LIBDIR, PRELOAD_NAME) >= (int)size)
		return NULL;
	return readable(buf) ? buf : NULL;
}

/* The file execvp would run for name: a path as given, else the first match in PATH. */
static char *find_program(const char *name)
{
	const char *path = getenv("PATH");
	char buf[PATH_MAX];

	if (strchr(name, '/'))
		return strdup(name);
	if (!path)
		path = "/usr/local/bin:/usr/bin:/bin";
	while (*path) {
		size_t len = strcspn(path, ":");

		if (snprintf(buf, sizeof(buf), "%.*s/%s", (int)len, len ? path : ".", name) <
			    (int)sizeof(buf) &&
		    access(buf, X_OK) == 0)
			return strdup(buf);
		path += len + (path[len] == ':');
	}
	return NULL;
}

#define ELF_OTHER_CLASS (-2)

/*
 * Whether the ELF file asks for a dynamic loader (PT_INTERP): only then does
 * LD_PRELOAD reach it. -1 when the file is not an ELF file (a script runs its
 * interpreter, which the preload reaches); ELF_OTHER_CLASS for a 32-bit one,
 * whose loader cannot load the 64-bit preload (it says so and runs without it).
 */
static int has_interp(const char *file)
{
	Elf64_Ehdr eh;
	Elf64_Phdr ph;
	int fd = open(file, O_RDONLY | O_CLOEXEC), ret = -1;

	if (fd < 0)
		return -1;
	if (pread(fd, &eh, sizeof(eh), 0) < EI_NIDENT || memcmp(eh.e_ident, ELFMAG, SELFMAG))
		goto out;
	if (eh.e_ident[EI_CLASS] != ELFCLASS64) {
		ret = ELF_OTHER_CLASS;
		goto out;
	}
	if (eh.e_phentsize != sizeof(ph))
		goto out;
	ret = 0;
	for (unsigned i = 0; i < eh.e_phnum; i++) {
		if (pread(fd, &ph, sizeof(ph), (off_t)(eh.e_phoff + i * sizeof(ph))) != sizeof(ph)) {
			ret = -1;
			break;
		}
		if (ph.p_type == PT_INTERP) {
			ret = 1;
			break;
		}
	}
out:
	close(fd);
	return ret;
}

/*
 * Whether exec of file changes the user or group (set-user-ID, set-group-ID):
 * the loader then runs in secure mode and ignores an LD_PRELOAD path with a
 * slash, so the program would reach the host's /dev/kvm instead.
 */
static bool changes_ids(const char *file)
{
	struct stat st;

	if (stat(file, &st) < 0)
		return false;
	return ((st.st_mode & S_ISUID) && st.st_uid != geteuid()) ||
	       ((st.st_mode & S_ISGID) && st.st_gid != getegid());
}

/* LD_PRELOAD with the preload first and whatever was there kept after it. */
static int set_preload(const char *lib)
{
	const char *old = getenv("LD_PRELOAD");
	char *val;
	int ret;

	if (old && *old)
		ret = asprintf(&val, "%s %s", lib, old);
	else
		ret = asprintf(&val, "%s", lib);
	if (ret < 0)
		return -1;
	ret = setenv("LD_PRELOAD", val, 1);
	free(val);
	return ret;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "backend", required_argument, NULL, 'b' },
		{ "vm-memory-attributes", required_argument, NULL, 'a' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	const char *backend = NULL, *attrs = NULL, *lib;
	char libbuf[PATH_MAX], *program;
	int c;

	while ((c = getopt_long(argc, argv, "+h", opts, NULL)) != -1) {
		switch (c) {
		case 'b':
			backend = optarg;
			if (strcmp(backend, "soft") && strcmp(backend, "kvm") && strcmp(backend, "auto")) {
				fprintf(stderr, "gmem-run: --backend must be soft, kvm or auto, not '%s'\n",
					backend);
				return EXIT_BAD_USAGE;
			}
			break;
		case 'a':
			attrs = optarg;
			if (strcmp(attrs, "0") && strcmp(attrs, "1")) {
				fprintf(stderr, "gmem-run: --vm-memory-attributes must be 0 or 1, not '%s'\n",
					attrs);
				return EXIT_BAD_USAGE;
			}
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return EXIT_BAD_USAGE;
		}
	}
	if (optind >= argc) {
		usage(stderr);
		return EXIT_BAD_USAGE;
	}
	program = find_program(argv[optind]);
	if (!program) {
		fprintf(stderr, "gmem-run: %s: command not found\n", argv[optind]);
		return 127;
	}
	switch (has_interp(program)) {
	case 0:
		fprintf(stderr,
			"gmem-run: %s is statically linked: LD_PRELOAD cannot reach it, so it cannot run "
			"on libgmem (link it dynamically, or call the gm_* API)\n",
			program);
		return EXIT_BAD_USAGE;
	case ELF_OTHER_CLASS:
		fprintf(stderr,
			"gmem-run: %s is not a 64-bit program: the 64-bit %s cannot be loaded into "
			"it, so it cannot run on libgmem\n",
			program, PRELOAD_NAME);
		return EXIT_BAD_USAGE;
	}
	if (changes_ids(program)) {
		fprintf(stderr,
			"gmem-run: %s is set-user-ID or set-group-ID: the loader ignores LD_PRELOAD for "
			"it, so it cannot run on libgmem (run a copy without the bit)\n",
			program);
		return EXIT_BAD_USAGE;
	}
	lib = find_preload(libbuf, sizeof(libbuf));
	if (!lib) {
		if (getenv("GMEM_PRELOAD") && *getenv("GMEM_PRELOAD"))
			fprintf(stderr, "gmem-run: GMEM_PRELOAD=%s: %s\n", getenv("GMEM_PRELOAD"),
				strerror(errno));
		else
			fprintf(stderr, "gmem-run: %s not found (set GMEM_PRELOAD)\n", PRELOAD_NAME);
		return EXIT_BAD_USAGE;
	}
	if (set_preload(lib) || (backend && setenv("GMEM_BACKEND", backend, 1)) ||
	    (attrs && setenv("GMEM_VM_MEMORY_ATTRIBUTES", attrs, 1))) {
		perror("gmem-run: setenv");
		return EXIT_BAD_USAGE;
	}
	execv(program, argv + optind);
	fprintf(stderr, "gmem-run: %s: %s\n", program, strerror(errno));
	return errno == ENOENT ? 127 : 126;
}
