/* gmem-vm as a program: boots to halt on both backends, reports what happened, refuses bad input. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "guest/layout.h"
#include "unit/vmm.h"

#define MAX_OUTPUT 65536

struct result {
	int status;             /* exit status, or -1 when killed */
	char out[MAX_OUTPUT];   /* stdout and stderr together */
};

/* Runs a shell command line and collects its output and exit status. */
static void run_shell(struct result *r, const char *cmd)
{
	FILE *p;
	size_t n = 0;

	p = popen(cmd, "r");
	cr_assert_not_null(p);
	while (n < sizeof(r->out) - 1) {
		size_t got = fread(r->out + n, 1, sizeof(r->out) - 1 - n, p);

		if (!got)
			break;
		n += got;
	}
	r->out[n] = 0;
	int st = pclose(p);
	r->status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* Runs gmem-vm with args (a shell-quoted string) and collects its output and exit status. */
static void run_vm(struct result *r, const char *args)
{
	char cmd[1024];

	snprintf(cmd, sizeof(cmd), "%s %s 2>&1", GMEM_VM_BIN, args);
	run_shell(r, cmd);
}

static bool kvm_usable(void)
{
	return access("/dev/kvm", R_OK | W_OK) == 0;
}

/* What a normal run must show: each vCPU's message, matching checksums, the report's figures. */
static void expect_normal_run(const struct result *r, unsigned vcpus)
{
	char want[128];

	cr_expect_eq(r->status, 0, "exit status %d:\n%s", r->status, r->out);
	for (unsigned v = 0; v < vcpus; v++) {
		snprintf(want, sizeof(want), "guest vCPU %u says: hello from vCPU %u: private memory "
			 "checksummed, 131072 words", v, v);
		cr_expect(strstr(r->out, want), "missing '%s' in:\n%s", want, r->out);
		snprintf(want, sizeof(want), "vCPU %u        checksum", v);
		cr_expect(strstr(r->out, want), "no checksum line for vCPU %u", v);
	}
	cr_expect(!strstr(r->out, "WRONG"), "%s", r->out);
	cr_expect(strstr(r->out, "matches the loaded data"), "%s", r->out);
	cr_expect(strstr(r->out, "all checks passed, halted"), "%s", r->out);
	cr_expect(strstr(r->out, "launch: 64 MiB to private"), "%s", r->out);
	snprintf(want, sizeof(want), "to shared:  %u x 4 KiB", vcpus);
	cr_expect(strstr(r->out, want), "%s", r->out);
	snprintf(want, sizeof(want), "to private: %u x 4 KiB", vcpus);
	cr_expect(strstr(r->out, want), "%s", r->out);
	snprintf(want, sizeof(want), "punch-hole    %u requests", vcpus);
	cr_expect(strstr(r->out, want), "%s", r->out);
	cr_expect(strstr(r->out, "private 64 MiB, shared 0 KiB"), "%s", r->out);
	/* While the guest held private memory the VMM's own read of it faulted. */
	cr_expect(strstr(r->out, "the VMM's read of private memory: refused (SIGBUS)"), "%s", r->out);
	cr_expect(strstr(r->out, "gmem-vm: the guest halted normally"), "%s", r->out);
}

Test(gmem_vm, soft_backend, .timeout = 120)
{
	static struct result r;

	run_vm(&r, "--backend soft --vcpus 2");
	expect_normal_run(&r, 2);
	cr_expect(strstr(r.out, "backend       soft"), "%s", r.out);
	cr_expect(strstr(r.out, "stage-2 "), "%s", r.out);
}

Test(gmem_vm, soft_backend_huge_folios, .timeout = 120)
{
	static struct result r;

	run_vm(&r, "--backend soft --huge");
	expect_normal_run(&r, 1);
	cr_expect(strstr(r.out, "2 MiB folios"), "%s", r.out);
	/* The punch area is a whole folio there. */
	cr_expect(strstr(r.out, "2048 KiB returned to the system"), "%s", r.out);
}

Test(gmem_vm, kvm_backend, .timeout = 300)
{
	static struct result r;

	if (!kvm_usable())
		cr_skip_test("/dev/kvm is missing or not usable here");
	run_vm(&r, "--backend kvm");
	expect_normal_run(&r, 1);
	cr_expect(strstr(r.out, "backend       kvm"), "%s", r.out);
	/* Without the host's guest_memfd, files fall back to memfds bound as host memory. */
	cr_expect(strstr(r.out, host_kvm_has_gmem() ? "host guest_memfd backing" : ", memfd backing"),
		  "%s", r.out);
}

Test(gmem_vm, quiet_prints_nothing)
{
	static struct result r;

	run_vm(&r, "--backend soft -q");
	cr_expect_eq(r.status, 0);
	cr_expect_str_empty(r.out);
}

Test(gmem_vm, bad_arguments)
{
	static const char *cases[][2] = {
		{ "--memory 3M", "--memory 3M is out of range" },
		{ "--memory 9M", "not a multiple of 2M" },
		{ "--memory lots", "bad --memory 'lots'" },
		{ "--vcpus 0", "bad --vcpus '0'" },
		{ "--vcpus 9", "bad --vcpus '9'" },
		{ "--backend xen", "bad --backend 'xen'" },
		{ "--frobnicate", "unknown option '--frobnicate'" },
		{ "--memory", "needs a value" },
		{ "extra", "unexpected argument 'extra'" },
		{ "--vcpus 8 --memory 8M", "use --memory 14M or more" },
		{ "--image /nonexistent/guest.img", "cannot open image" },
		/* Numbers that used to wrap into a valid value. */
		{ "-m 17179869185G", "--memory 17179869185G is out of range" },
		{ "-m 18446744073709551617", "is out of range" },
		{ "-m 99999999999999999999999M", "is out of range" },
		{ "-c 4294967297", "bad --vcpus '4294967297'" },
		{ "-c 18446744073709551617", "bad --vcpus" },
		{ "-c -1", "bad --vcpus '-1'" },
		{ "-c ' 2'", "bad --vcpus ' 2'" },
		{ "-c 2x", "bad --vcpus '2x'" },
		{ "-m -64M", "bad --memory '-64M'" },
		{ "-m ' 64M'", "bad --memory ' 64M'" },
		/* Decimal, not octal: 010000M is 10000M (too much), not 4096M. */
		{ "-m 010000M", "--memory 010000M is out of range" },
		{ "--image-timeout 0", "bad --image-timeout '0'" },
		{ "--image-timeout 4294967297", "bad --image-timeout" },
	};
	static struct result r;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		run_vm(&r, cases[i][0]);
		cr_expect_eq(r.status, 2, "'%s' gave status %d", cases[i][0], r.status);
		cr_expect(strstr(r.out, cases[i][1]), "'%s' said: %s", cases[i][0], r.out);
		/* One line, naming the fix. */
		cr_expect_eq(strchr(r.out, '\n'), r.out + strlen(r.out) - 1, "'%s': %s", cases[i][0],
			     r.out);
	}
}

Test(gmem_vm, bad_images)
{
	static struct result r;
	char dir[] = "/tmp/gmem-vm-test-XXXXXX";
	char path[256], args[512];

	cr_assert_not_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/good.img", dir);
	snprintf(args, sizeof(args), "--write-image %s", path);
	run_vm(&r, args);
	cr_assert_eq(r.status, 0, "%s", r.out);

	/* Empty. */
	snprintf(args, sizeof(args), "%s/empty.img", dir);
	fclose(fopen(args, "w"));
	snprintf(args, sizeof(args), "--image %s/empty.img", dir);
	run_vm(&r, args);
	cr_expect_eq(r.status, 2);
	cr_expect(strstr(r.out, "is empty"), "%s", r.out);

	/* Truncated: the good image cut short. */
	snprintf(args, sizeof(args), "head -c 100 %s > %s/cut.img", path, dir);
	cr_assert_eq(system(args), 0);
	snprintf(args, sizeof(args), "--image %s/cut.img", dir);
	run_vm(&r, args);
	cr_expect_eq(r.status, 2);
	cr_expect(strstr(r.out, "is truncated"), "%s", r.out);

	/* Not an image at all. */
	run_vm(&r, "--image /bin/sh");
	cr_expect_eq(r.status, 2);
	cr_expect(strstr(r.out, "is not a gmem-vm image"), "%s", r.out);

	/* Too large for the memory: a header that declares 12 MiB of code, and the code. */
	snprintf(args, sizeof(args),
		 "(printf 'GMEMIMG1'; printf '\\000\\000\\300\\000\\000\\000\\000\\000'; "
		 "head -c 16 /dev/zero; head -c 12582912 /dev/zero) > %s/big.img", dir);
	cr_assert_eq(system(args), 0);
	snprintf(args, sizeof(args), "--image %s/big.img --memory 8M --backend kvm", dir);
	run_vm(&r, args);
	cr_expect_eq(r.status, 2);
	cr_expect(strstr(r.out, "use --memory"), "%s", r.out);

	/* The good image runs where the kvm backend does. */
	if (kvm_usable()) {
		snprintf(args, sizeof(args), "--image %s --backend kvm", path);
		run_vm(&r, args);
		expect_normal_run(&r, 1);
	}
	snprintf(args, sizeof(args), "rm -rf %s", dir);
	cr_assert_eq(system(args), 0);
}

/* An image need not be a regular file: a pipe on /dev/stdin loads like the file itself. */
Test(gmem_vm, image_through_pipe, .timeout = 300)
{
	static struct result r;
	char dir[] = "/tmp/gmem-vm-test-XXXXXX";
	char cmd[1024];

	cr_assert_not_null(mkdtemp(dir));
	snprintf(cmd, sizeof(cmd), "%s --write-image %s/good.img 2>&1", GMEM_VM_BIN, dir);
	run_shell(&r, cmd);
	cr_assert_eq(r.status, 0, "%s", r.out);
	snprintf(cmd, sizeof(cmd), "cat %s/good.img | %s --image /dev/stdin --backend kvm 2>&1; "
		 "rm -rf %s", dir, GMEM_VM_BIN, dir);
	run_shell(&r, cmd);
	cr_expect(!strstr(r.out, "not a gmem-vm image"), "%s", r.out);
	if (kvm_usable()) {
		expect_normal_run(&r, 1);
	} else {
		/* Loaded, then refused for the backend only. */
		cr_expect_eq(r.status, 2);
		cr_expect(strstr(r.out, "needs a usable /dev/kvm"), "%s", r.out);
	}
}

/* A FIFO that no one writes to: a bounded wait and a one-line error, not a hang. */
Test(gmem_vm, fifo_without_writer, .timeout = 30)
{
	static struct result r;
	char dir[] = "/tmp/gmem-vm-test-XXXXXX";
	char path[256], args[512];

	cr_assert_not_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/fifo", dir);
	cr_assert_eq(mkfifo(path, 0600), 0);
	snprintf(args, sizeof(args), "--image %s --image-timeout 1 --backend kvm", path);
	run_vm(&r, args);
	unlink(path);
	rmdir(dir);
	cr_expect_eq(r.status, 2, "status %d: %s", r.status, r.out);
	cr_expect(strstr(r.out, "sent nothing for 1 s"), "%s", r.out);
}

/* --huge on the kvm backend never uses hugetlbfs: -v says so, whatever the pool holds. */
Test(gmem_vm, huge_verbose_names_the_reason, .timeout = 300)
{
	static struct result r;

	if (!kvm_usable())
		cr_skip_test("/dev/kvm is missing or not usable here");
	run_vm(&r, "--backend kvm --huge -v");
	cr_expect_eq(r.status, 0, "%s", r.out);
	cr_expect(!strstr(r.out, "no huge pages reserved"), "%s", r.out);
	cr_expect(strstr(r.out, "the kvm backend does not use hugetlbfs"), "%s", r.out);
}

/* The launch digest gmem-vm --vm snp reports, for a run's options. */
static bool snp_digest_of(const struct result *r, char digest[97])
{
	const char *at = strstr(r->out, "SNP launch    digest ");

	if (!at || sscanf(at, "SNP launch    digest %96[0-9a-f]", digest) != 1)
		return false;
	return strlen(digest) == 96;
}

/* An SNP launch on the software platform: measured, run to halt, and predicted offline. */
Test(gmem_vm, snp_launch_matches_gmem_measure)
{
	static const char *const args[] = { "", "-c 3 -m 32M" };
	char dir[] = "/tmp/gmem-vm-snp-XXXXXX", key[64];

	cr_assert(mkdtemp(dir));
	snprintf(key, sizeof(key), "%s/platform.pem", dir);

	for (size_t i = 0; i < sizeof(args) / sizeof(args[0]); i++) {
		struct result r, m;
		char cmd[512], digest[97];

		snprintf(cmd, sizeof(cmd), "GMEM_PLATFORM_KEY=%s %s --vm snp %s 2>&1", key, GMEM_VM_BIN,
			 args[i]);
		run_shell(&r, cmd);
		cr_expect_eq(r.status, 0, "gmem-vm %s: %d\n%s", cmd, r.status, r.out);
		cr_expect(strstr(r.out, "all checks passed, halted"), "%s", r.out);
		cr_expect(strstr(r.out, "1 VMSA") || strstr(r.out, "3 VMSA"), "%s", r.out);
		cr_expect(strstr(r.out, "guest running (LAUNCH_FINISH done)"), "%s", r.out);
		cr_expect(strstr(r.out, "refused (SIGBUS)"), "%s", r.out);
		cr_expect(strstr(r.out, "attestation   report verified"), "%s", r.out);
		cr_assert(snp_digest_of(&r, digest), "no digest line:\n%s", r.out);
		snprintf(cmd, sizeof(cmd), "%s %s 2>&1", GMEM_MEASURE_BIN, args[i]);
		run_shell(&m, cmd);
		cr_expect_eq(m.status, 0, "%s", m.out);
		cr_expect(!strncmp(m.out, digest, 96), "gmem-measure says %s, gmem-vm %s", m.out, digest);
	}
	/* A different image size or vCPU count is a different digest. */
	{
		struct result a, b;

		run_shell(&a, GMEM_MEASURE_BIN " -c 1 2>&1");
		run_shell(&b, GMEM_MEASURE_BIN " -c 2 2>&1");
		cr_expect(strcmp(a.out, b.out), "one and two vCPUs measure the same");
	}
	{
		struct result rm;
		char cmd[160];

		snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
		run_shell(&rm, cmd);
	}
}

/* --vm snp runs on the software platform only; --report needs it. */
Test(gmem_vm, snp_bad_options)
{
	struct result r;

	run_vm(&r, "--vm tdx");
	cr_expect_eq(r.status, 2, "%s", r.out);
	run_vm(&r, "--report /tmp/x.bin");
	cr_expect_eq(r.status, 2, "%s", r.out);
	cr_expect(strstr(r.out, "--vm snp"), "%s", r.out);
	run_vm(&r, "--vm snp --backend kvm");
	cr_expect_eq(r.status, 2, "%s", r.out);
}

/*
 * gmem-measure refuses what gmem-vm --vm snp refuses: a digest of an image, or
 * of a kvm-backend launch, that gmem-vm would never run predicts nothing.
 */
Test(gmem_vm, gmem_measure_refuses_what_snp_launch_refuses)
{
	static const char *const refused[] = { "--image /dev/null", "--backend kvm" };
	struct result r;
	char cmd[256];

	for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
		snprintf(cmd, sizeof(cmd), "%s --vm snp %s 2>&1", GMEM_VM_BIN, refused[i]);
		run_shell(&r, cmd);
		cr_expect_eq(r.status, 2, "gmem-vm %s: %s", refused[i], r.out);
		snprintf(cmd, sizeof(cmd), "%s %s 2>&1", GMEM_MEASURE_BIN, refused[i]);
		run_shell(&r, cmd);
		cr_expect_eq(r.status, 2, "gmem-measure %s: %s", refused[i], r.out);
		cr_expect(strstr(r.out, "--vm snp"), "%s", r.out);
	}
}
