/*
 * Figure a3: a soft guest's attestation report request (gm_guest_snp_report, from a guest
 * function that KVM_RUN runs on a launched SNP VM), per report, against the floor: a bare
 * libcrypto ECDSA P-384 / SHA-384 sign of the same 0x2A0 bytes with the same key, loaded
 * straight from the key file. What the library adds is the guest-to-platform path (copy in
 * and out of the guest, the VM's launch state under its lock), the layout and the R/S
 * conversion. The verification of such a report is figure a2.
 */
#include "bench.h"

#include <openssl/evp.h>
#include <openssl/pem.h>

#define OPS 50 /* reports per sample: one P-384 signature is of the order of a millisecond */
#define PAGE 4096ULL
#define GPA 0x100000ULL
#define SIGNED_BYTES 0x2A0 /* ATTESTATION_REPORT up to the signature */

static uint8_t report[GM_SNP_REPORT_SIZE];
static unsigned char der[160];

/* Per sample: OPS requests over distinct nonces, then a SYNC back to the VMM. */
static void guest_reports(struct gm_guest *g, void *arg)
{
	uint8_t data[64] = { 0 };

	(void)arg;
	for (uint64_t n = 0;; n++) {
		for (int i = 0; i < OPS; i++) {
			memcpy(data, &n, sizeof(n));
			data[8] = (uint8_t)i;
			GM_GUEST_ASSERT(g, gm_guest_snp_report(g, data, report, sizeof(report)) == 0);
		}
		gm_guest_ucall(g, GM_UCALL_SYNC, 0);
	}
}

static int sev_cmd(int vm, int sev, uint32_t id, void *data)
{
	struct kvm_sev_cmd c = { .id = id, .data = (uint64_t)(uintptr_t)data, .sev_fd = (uint32_t)sev };

	return gm_ioctl(vm, KVM_MEMORY_ENCRYPT_OP, &c);
}

struct guest_vm {
	int vm, sev, gmem, vcpu;
	struct kvm_run *run;
};

/* One page launched in place, a vCPU running guest_reports, LAUNCH_FINISH done. */
static void guest_vm_launch(struct guest_vm *g)
{
	struct kvm_create_guest_memfd c = { .size = PAGE, .flags = GUEST_MEMFD_FLAG_INIT_SHARED };
	struct kvm_userspace_memory_region2 r = { .flags = KVM_MEM_GUEST_MEMFD,
						  .guest_phys_addr = GPA, .memory_size = PAGE };
	struct kvm_memory_attributes2 a = { .size = PAGE, .attributes = KVM_MEMORY_ATTRIBUTE_PRIVATE };
	struct kvm_sev_init init = { 0 };
	struct kvm_sev_snp_launch_start start = { .policy = (1ULL << 17) | (1ULL << 16) };
	struct kvm_sev_snp_launch_update u = { .gfn_start = GPA >> 12, .len = PAGE,
					       .type = KVM_SEV_SNP_PAGE_TYPE_NORMAL };
	struct kvm_sev_snp_launch_finish f = { 0 };
	int kvm = gm_open_kvm();

	g->vm = gm_ioctl(kvm, KVM_CREATE_VM, KVM_X86_SNP_VM);
	gm_close(kvm);
	g->sev = gm_open_sev();
	if (g->vm < 0 || g->sev < 0)
		die("SNP VM: %s", strerror(errno));
	g->gmem = gm_ioctl(g->vm, KVM_CREATE_GUEST_MEMFD, &c);
	r.guest_memfd = (uint32_t)g->gmem;
	if (g->gmem < 0 || gm_ioctl(g->vm, KVM_SET_USER_MEMORY_REGION2, &r) ||
	    sev_cmd(g->vm, g->sev, KVM_SEV_INIT2, &init) ||
	    sev_cmd(g->vm, g->sev, KVM_SEV_SNP_LAUNCH_START, &start) ||
	    gm_ioctl(g->gmem, KVM_SET_MEMORY_ATTRIBUTES2, &a) ||
	    sev_cmd(g->vm, g->sev, KVM_SEV_SNP_LAUNCH_UPDATE, &u))
		die("SNP launch: %s", strerror(errno));
	g->vcpu = gm_ioctl(g->vm, KVM_CREATE_VCPU, 0UL);
	if (g->vcpu < 0 || gm_vcpu_set_guest(g->vcpu, guest_reports, NULL))
		die("vCPU: %s", strerror(errno));
	g->run = gm_mmap(NULL, 3 * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, g->vcpu, 0);
	if (g->run == MAP_FAILED || sev_cmd(g->vm, g->sev, KVM_SEV_SNP_LAUNCH_FINISH, &f))
		die("SNP launch finish: %s", strerror(errno));
}

static void guest_vm_destroy(struct guest_vm *g)
{
	gm_munmap(g->run, 3 * PAGE);
	gm_close(g->vcpu);
	gm_close(g->gmem);
	gm_close(g->sev);
	gm_close(g->vm);
}

/* One KVM_RUN: the guest makes OPS requests on this thread, then exits with its SYNC. */
static struct timing time_guest_reports(struct guest_vm *g)
{
	struct stopwatch sw;
	struct timing t;
	struct gm_ucall uc;

	stopwatch_start(&sw);
	if (gm_ioctl(g->vcpu, KVM_RUN, 0))
		die("KVM_RUN: %s", strerror(errno));
	t = stopwatch_stop(&sw);
	if (g->run->exit_reason != KVM_EXIT_IO || gm_vcpu_get_ucall(g->vcpu, &uc) ||
	    uc.cmd != GM_UCALL_SYNC)
		die("guest: exit %u, %s", g->run->exit_reason, uc.cmd == GM_UCALL_ABORT ? uc.msg : "");
	return t;
}

/* The floor: the same signed bytes (the guest's last report), signed OPS times. */
static struct timing time_bare_sign(EVP_PKEY *key)
{
	static uint8_t bytes[SIGNED_BYTES];
	struct stopwatch sw;

	memcpy(bytes, report, sizeof(bytes));
	stopwatch_start(&sw);
	for (int i = 0; i < OPS; i++) {
		EVP_MD_CTX *ctx = EVP_MD_CTX_new();
		size_t len = sizeof(der);

		if (!ctx || EVP_DigestSignInit(ctx, NULL, EVP_sha384(), NULL, key) != 1 ||
		    EVP_DigestSign(ctx, der, &len, bytes, sizeof(bytes)) != 1)
			die("EVP_DigestSign failed");
		EVP_MD_CTX_free(ctx);
	}
	return stopwatch_stop(&sw);
}

static EVP_PKEY *read_private_key(const char *path)
{
	FILE *f = fopen(path, "r");
	EVP_PKEY *key = f ? PEM_read_PrivateKey(f, NULL, NULL, NULL) : NULL;

	if (f)
		fclose(f);
	if (!key)
		die("cannot read the platform key %s", path);
	return key;
}

int main(void)
{
	int reps = bench_reps(7);
	double *cpu = calloc(4 * (size_t)reps, sizeof(double));
	double *lib_cpu = cpu, *lib_wall = cpu + reps, *bare_cpu = cpu + 2 * reps,
	       *bare_wall = cpu + 3 * reps;
	char dir[] = "/tmp/gmem-bench-key-XXXXXX", path[64], pem[GM_SNP_PLATFORM_KEY_PEM_MAX];
	struct guest_vm g;
	EVP_PKEY *key;

	if (!cpu)
		die("no memory");
	/* A scratch platform key: the bench never touches the user's. */
	if (!mkdtemp(dir))
		die("mkdtemp: %s", strerror(errno));
	snprintf(path, sizeof(path), "%s/key.pem", dir);
	setenv("GMEM_PLATFORM_KEY", path, 1);
	/* Creates the key file, which the floor then reads as any program would. */
	if (gm_snp_platform_key_pem(pem, sizeof(pem)) < 0)
		die("platform key");
	key = read_private_key(path);
	guest_vm_launch(&g);
	/* Warm-up: the first report loads the key and libcrypto's tables. */
	time_guest_reports(&g);
	time_bare_sign(key);

	note("snp_guest_report: %d guest report requests and bare signatures x %d reps\n", OPS, reps);
	for (int r = 0; r < reps; r++) {
		/* Alternate which side goes first, so that drift spreads evenly. */
		struct timing a, b;

		if (r % 2) {
			a = time_guest_reports(&g);
			b = time_bare_sign(key);
		} else {
			b = time_bare_sign(key);
			a = time_guest_reports(&g);
		}
		lib_cpu[r] = a.cpu_ms / OPS;
		lib_wall[r] = a.wall_ms / OPS;
		bare_cpu[r] = b.cpu_ms / OPS;
		bare_wall[r] = b.wall_ms / OPS;
	}
	/* The guest's reports are real: the last one verifies with the platform's public key. */
	if (gm_snp_report_verify(report, sizeof(report), pem, NULL, 0))
		die("the guest's report does not verify");
	guest_vm_destroy(&g);
	EVP_PKEY_free(key);
	unlink(path);
	rmdir(dir);

	emit_figure("a3", "SNP report request from a soft guest (KVM_RUN, gm_guest_snp_report), ms per report; plain = bare libcrypto sign of the same bytes");
	emit_timed_result("a3", "libgmem", lib_cpu, lib_wall, reps);
	emit_timed_result("a3", "plain", bare_cpu, bare_wall, reps);
	emit_timed_target("a3", "libgmem/plain", lib_cpu, lib_wall, bare_cpu, bare_wall, reps, "<=", 1.2);
	free(cpu);
	return 0;
}
