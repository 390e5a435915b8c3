/* gmem-vm as a program: boots to halt on both backends, reports what happened, refuses bad input. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

/* Runs gmem-vm with args (a shell-quoted string) and collects its output and exit status. */
static void run_vm(struct result *r, const char *args)
{
	char cmd[1024];
	FILE *p;
	size_t n = 0;

	snprintf(cmd, sizeof(cmd), "%s %s 2>&1", GMEM_VM_BIN, args);
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
