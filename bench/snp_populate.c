/* SNP launch: populate and measure 64 MiB in place, against libcrypto's SHA-384 plus the conversion. */
/* bench.h first: it sets _GNU_SOURCE for every libc header. */
#include "bench.h"

#include <openssl/evp.h>

#define PRIVATE KVM_MEMORY_ATTRIBUTE_PRIVATE
#define SIZE (64 * MiB)
#define POLICY ((1ULL << 17) | (1ULL << 16))

struct launch {
	int vm, sev, gmem;
	char *host;
};

static int sev_cmd(struct launch *l, uint32_t id, void *data)
{
	struct kvm_sev_cmd c = { .id = id, .data = (uint64_t)(uintptr_t)data, .sev_fd = (uint32_t)l->sev };

	return gm_ioctl(l->vm, KVM_MEMORY_ENCRYPT_OP, &c);
}

/* A VM of type with SIZE of guest_memfd at GPA 0, loaded with a pattern while shared. */
static void launch_setup(struct launch *l, unsigned long type)
{
	struct kvm_create_guest_memfd c = {
		.size = SIZE, .flags = GUEST_MEMFD_FLAG_MMAP | GUEST_MEMFD_FLAG_INIT_SHARED,
	};
	struct kvm_userspace_memory_region2 r = { .flags = KVM_MEM_GUEST_MEMFD, .memory_size = SIZE };
	struct kvm_sev_init init = { 0 };
	struct kvm_sev_snp_launch_start start = { .policy = POLICY };
	int kvm = gm_open_kvm();

	l->vm = gm_ioctl(kvm, KVM_CREATE_VM, type);
	gm_close(kvm);
	if (l->vm < 0)
		die("KVM_CREATE_VM(%lu): %s", type, strerror(errno));
	l->gmem = gm_ioctl(l->vm, KVM_CREATE_GUEST_MEMFD, &c);
	if (l->gmem < 0)
		die("KVM_CREATE_GUEST_MEMFD: %s", strerror(errno));
	r.guest_memfd = (uint32_t)l->gmem;
	if (gm_ioctl(l->vm, KVM_SET_USER_MEMORY_REGION2, &r))
		die("KVM_SET_USER_MEMORY_REGION2: %s", strerror(errno));
	l->host = gm_mmap(NULL, SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, l->gmem, 0);
	if (l->host == MAP_FAILED)
		die("gm_mmap: %s", strerror(errno));
	for (uint64_t off = 0; off < SIZE; off += 8)
		*(uint64_t *)(l->host + off) = off * 0x9e3779b97f4a7c15ULL;
	l->sev = -1;
	if (type == KVM_X86_SNP_VM) {
		l->sev = gm_open_sev();
		if (l->sev < 0 || sev_cmd(l, KVM_SEV_INIT2, &init) ||
		    sev_cmd(l, KVM_SEV_SNP_LAUNCH_START, &start))
			die("SNP init and launch start: %s", strerror(errno));
	}
}

static void launch_teardown(struct launch *l)
{
	gm_munmap(l->host, SIZE);
	gm_close(l->gmem);
	if (l->sev >= 0)
		gm_close(l->sev);
	gm_close(l->vm);
}

static void to_private(struct launch *l)
{
	struct kvm_memory_attributes2 a = { .size = SIZE, .attributes = PRIVATE };

	if (gm_ioctl(l->gmem, KVM_SET_MEMORY_ATTRIBUTES2, &a))
		die("KVM_SET_MEMORY_ATTRIBUTES2: %s", strerror(errno));
}

/* libgmem: the conversion, then LAUNCH_UPDATE of every page in place. */
static struct timing run_populate(void)
{
	struct launch l;
	struct kvm_sev_snp_launch_update u = { .len = SIZE, .type = KVM_SEV_SNP_PAGE_TYPE_NORMAL };
	struct stopwatch sw;
	struct timing t;

	launch_setup(&l, KVM_X86_SNP_VM);
	stopwatch_start(&sw);
	to_private(&l);
	while (u.len)
		if (sev_cmd(&l, KVM_SEV_SNP_LAUNCH_UPDATE, &u))
			die("KVM_SEV_SNP_LAUNCH_UPDATE: %s", strerror(errno));
	t = stopwatch_stop(&sw);
	launch_teardown(&l);
	return t;
}

/* The floor: the same conversion, and SHA-384 of each 4 KiB page of the same bytes. */
static struct timing run_floor(void)
{
	struct launch l;
	struct stopwatch sw;
	struct timing t;
	uint8_t md[48];
	char *bytes = malloc(SIZE);

	if (!bytes)
		die("no memory");
	launch_setup(&l, KVM_X86_SW_PROTECTED_VM);
	memcpy(bytes, l.host, SIZE);
	stopwatch_start(&sw);
	to_private(&l);
	for (uint64_t off = 0; off < SIZE; off += PAGE_4K)
		if (!EVP_Digest(bytes + off, PAGE_4K, md, NULL, EVP_sha384(), NULL))
			die("EVP_Digest");
	t = stopwatch_stop(&sw);
	launch_teardown(&l);
	free(bytes);
	return t;
}

int main(void)
{
	int reps = bench_reps(5);
	double *cpu = calloc(4 * (size_t)reps, sizeof(double));

	if (!cpu)
		die("no memory");
	emit_figure("l1", "SNP: populate and measure 64 MiB in place (convert + LAUNCH_UPDATE)");
	for (int i = 0; i < reps; i++) {
		/* Interleaved, so that drift in the machine's speed hits both alike. */
		struct timing a = run_populate(), b = run_floor();

		cpu[i] = a.cpu_ms;
		cpu[reps + i] = a.wall_ms;
		cpu[2 * reps + i] = b.cpu_ms;
		cpu[3 * reps + i] = b.wall_ms;
		fprintf(stderr, "snp_populate: %d/%d: %.1f ms, floor %.1f ms (CPU)\n", i + 1, reps,
			a.cpu_ms, b.cpu_ms);
	}
	emit_timed_result("l1", "libgmem", cpu, cpu + reps, reps);
	emit_timed_result("l1", "floor: SHA-384 + conversion", cpu + 2 * reps, cpu + 3 * reps, reps);
	emit_timed_target("l1", "libgmem/floor", cpu, cpu + reps, cpu + 2 * reps, cpu + 3 * reps, reps,
			  "<=", 1.3);
	free(cpu);
	return 0;
}
