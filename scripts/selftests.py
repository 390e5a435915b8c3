#!/usr/bin/env python3
"""make selftests: the kernel's own KVM selftests, run on libgmem under gmem-run.

The sources are GPL-2.0: they come from Debian's linux-source-6.12 package at test time
and are never copied into this repository. The package is installed if missing, the part
of its tarball the selftests build with is extracted once into a cache (with the uapi
headers from the tree's `make headers`), and the four tests are built there with the
selftests' own Makefile and library, unchanged.

    selftests.py BUILD-DIR

Prints one line per test or case (PASS, FAIL, or SKIP with the reason) and
"N passed, N failed, N skipped"; exits 1 when anything failed. Under make test
(GM_TEST_RESULTS set) the same lines go to the results file for the summary.
"""
import collections
import fcntl
import os
import re
import shutil
import subprocess
import sys
import tempfile

PKG = "linux-source-6.12"
TARBALL = "/usr/src/linux-source-6.12.tar.xz"
TOP = "linux-source-6.12"
CACHE = os.environ.get("GM_SELFTESTS_CACHE", "/var/cache/libgmem-selftests")
# What the kvm selftests build with: the top Makefile and scripts for `make headers`,
# the uapi headers' sources, and the tools/ parts the selftests' Makefile includes.
MEMBERS = ["Makefile", "Kbuild", "Kconfig", "scripts", "include", "arch/x86", "usr",
           "tools/build", "tools/include", "tools/arch/x86", "tools/lib", "tools/scripts",
           "tools/testing/selftests/kvm", "tools/testing/selftests/lib.mk",
           "tools/testing/selftests/kselftest.h", "tools/testing/selftests/kselftest_harness.h",
           "tools/testing/selftests/rseq"]
GUEST_MEMFD = "guest_memfd_test"
MEMORY_REGION = "set_memory_region_test"
CONVERSIONS = "x86_64/private_mem_conversions_test"
KVM_EXITS = "x86_64/private_mem_kvm_exits_test"
TESTS = [GUEST_MEMFD, MEMORY_REGION, CONVERSIONS, KVM_EXITS]
# The per-VM attribute ABI (kvm.vm_memory_attributes=1) is what these tests are written for.
PER_VM = {CONVERSIONS, KVM_EXITS}
# The 6.12 guest_memfd_test predates guest_memfd flags (MMAP came in 6.17): it expects
# every flag to be EINVAL. The library offers the flags of such a kernel when told to.
TEST_ENV = {GUEST_MEMFD: {"GMEM_GUEST_MEMFD_FLAGS": "0"}}
# Why libgmem makes a selftest skip itself, where the selftest's own words do not say it.
SKIP_CAUSES = {}
# Tests whose guest makes hypercalls with VMCALL (VMMCALL on AMD): on the kvm backend they run
# only where the probe (tests/selftests/vmcall_probe.c) sees the host complete one.
VMCALL_TESTS = {CONVERSIONS}
VMCALL_PROBE_TIMEOUT = 30
TIMEOUT = 300
KSFT_SKIP = 4

# set_memory_region_test runs its cases one after another in one process. Each case and
# the line it prints when it starts (None: it prints nothing, so it starts unseen when
# the case before it ends).
MEMORY_REGION_CASES = [
    ("zero_memory_regions", "Testing KVM_RUN with zero added memory regions"),
    ("invalid_memory_region_flags", None),
    ("add_max_memory_regions", "Allowed number of memory slots"),
    ("add_private_memory_region", "Testing ADD of KVM_MEM_GUEST_MEMFD memory regions"),
    ("add_overlapping_private_memory_regions",
     "Testing ADD of overlapping KVM_MEM_GUEST_MEMFD memory regions"),
    ("move_memory_region", "Testing MOVE of in-use region"),
    ("delete_memory_region", "Testing DELETE of in-use region"),
]
PRIVATE_CASES_SKIPPED = "Skipping tests for KVM_MEM_GUEST_MEMFD memory regions"

# Skips of the conformance tests' kernel build that come from the build itself, not from
# what it runs on: it never asks for libgmem's folio-size flag.
KERNEL_BUILD_ONLY_SKIPS = ["no folio-size flag"]


class Report:
    def __init__(self):
        self.passed = self.failed = self.skipped = 0
        self.results = os.environ.get("GM_TEST_RESULTS")

    def _line(self, line):
        print(line, flush=True)
        if self.results:
            with open(self.results, "a") as f:
                f.write(line.replace(" ", " selftests/", 1) + "\n")

    def ok(self, name):
        self.passed += 1
        self._line(f"PASS {name}")

    def fail(self, name, why):
        self.failed += 1
        self._line(f"FAIL {name} ({why})")

    def skip(self, name, why):
        self.skipped += 1
        self._line(f"SKIP {name}: {why}")


def run(cmd, **kw):
    return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          errors="replace", **kw)


def source_version():
    r = run(["dpkg-query", "-W", "-f", "${Status} ${Version}", PKG])
    words = r.stdout.split()
    return words[-1] if r.returncode == 0 and "installed" in words[:3] else None


def install_source():
    """The package's version, installing it if missing; (None, why) when that fails."""
    version = source_version()
    if version:
        return version, None
    print(f"selftests: installing {PKG} (about 150 MB)", flush=True)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    r = run(["apt-get", "install", "-y", "--no-install-recommends", PKG], env=env)
    version = source_version()
    if not version:
        tail = r.stdout.strip().splitlines()[-1:] or ["no output"]
        return None, f"apt-get install {PKG} failed: {tail[0]}"
    return version, None


def prepare_tree(version):
    """The extracted tree with its uapi headers, made once per package version."""
    tree = os.path.join(CACHE, f"{PKG}_{version}", TOP)
    stamp = os.path.join(tree, ".libgmem-ready")
    os.makedirs(CACHE, exist_ok=True)
    with open(os.path.join(CACHE, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if os.path.exists(stamp):
            return tree, None
        parent = os.path.dirname(tree)
        shutil.rmtree(parent, ignore_errors=True)
        os.makedirs(parent)
        print(f"selftests: extracting the kvm selftests from {TARBALL}", flush=True)
        r = run(["tar", "-xJf", TARBALL, "-C", parent] + [f"{TOP}/{m}" for m in MEMBERS])
        if r.returncode:
            return None, f"extracting {TARBALL} failed: {r.stdout.strip()[-200:]}"
        # The selftests include the uapi headers that `make headers` installs in usr/include.
        r = run(["make", "-s", "-C", tree, "headers", f"-j{os.cpu_count() or 1}"])
        if r.returncode:
            return None, f"make headers failed: {r.stdout.strip()[-300:]}"
        open(stamp, "w").close()
    return tree, None


def build_tests(tree, out):
    targets = [os.path.join(out, t) for t in TESTS]
    r = run(["make", "-s", "-C", os.path.join(tree, "tools/testing/selftests/kvm"),
             f"-j{os.cpu_count() or 1}", f"OUTPUT={out}"] + targets)
    if r.returncode:
        return f"building the selftests failed: {r.stdout.strip()[-400:]}"
    return None


def skip_reason(output):
    """Why a program exited with KSFT_SKIP: gmem-run's message or the selftest's own."""
    for line in reversed(output.splitlines()):
        if line.startswith("gmem-run:"):
            return line[len("gmem-run:"):].strip()
        m = re.search(r"# SKIP\s*-?\s*(.*)", line)
        if m:
            return m.group(1).strip()
    return "exit status 4 (KSFT_SKIP), no reason printed"


def run_under(gmem_run, backend, test, out):
    cmd = [gmem_run, "--backend", backend]
    if test in PER_VM:
        cmd += ["--vm-memory-attributes", "1"]
    cmd += ["--", os.path.join(".", test)]
    try:
        r = run(cmd, cwd=out, timeout=TIMEOUT, env=dict(os.environ, **TEST_ENV.get(test, {})))
        return r.returncode, r.stdout
    except subprocess.TimeoutExpired as e:
        return None, (e.stdout or "") if isinstance(e.stdout, str) else ""


def last_lines(output, n=4):
    return " | ".join(line.strip() for line in output.strip().splitlines()[-n:])


def explained(backend, why):
    for (where, words), cause in SKIP_CAUSES.items():
        if where == backend and words in why:
            return f"{why}; {cause}"
    return why


def report_whole(rep, name, rc, output):
    if rc == 0:
        rep.ok(name)
    elif rc == KSFT_SKIP:
        rep.skip(name, explained(name.split("/")[0], skip_reason(output)))
    elif rc is None:
        rep.fail(name, f"timed out after {TIMEOUT} s: {last_lines(output)}")
    else:
        rep.fail(name, f"exit {rc}: {last_lines(output)}")


def report_memory_region(rep, prefix, rc, output):
    """One line per case of set_memory_region_test, from what it printed before it ended."""
    cases = MEMORY_REGION_CASES
    private_skipped = PRIVATE_CASES_SKIPPED in output
    # The cases run in order: those before the last one that started have passed.
    current = len(cases) if rc == 0 else max(
        [i for i, (_, marker) in enumerate(cases) if marker and marker in output], default=0)
    # A case that prints nothing cannot be told apart from the one before it.
    ending = [current]
    if current + 1 < len(cases) and cases[current + 1][1] is None:
        ending.append(current + 1)
    what = " or ".join(cases[i][0] for i in ending) if current < len(cases) else ""
    for i, (case, _) in enumerate(cases):
        name = f"{prefix}/{case}"
        if "private" in case and private_skipped:
            rep.skip(name, "the selftest skips it: no KVM_CAP_GUEST_MEMFD, or no "
                     "KVM_X86_SW_PROTECTED_VM in KVM_CAP_VM_TYPES")
        elif i < current:
            rep.ok(name)
        elif i in ending and rc == KSFT_SKIP:
            rep.skip(name, skip_reason(output))
        elif i in ending and rc is None:
            rep.fail(name, f"timed out in {what} after {TIMEOUT} s: {last_lines(output)}")
        elif i in ending:
            rep.fail(name, f"the test ended in {what}, exit {rc}: {last_lines(output)}")
        else:
            rep.skip(name, f"not reached: the test runs its cases in one process, and "
                     f"{cases[current][0]} ended it")


KVM_GET_API_VERSION = 0xAE00


def kvm_unusable():
    """Why the host's /dev/kvm cannot run the kvm backend, or None."""
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except OSError as e:
        return f"/dev/kvm cannot be opened ({e.strerror})"
    try:
        version = fcntl.ioctl(fd, KVM_GET_API_VERSION)
    except OSError as e:
        return f"/dev/kvm is not KVM (KVM_GET_API_VERSION: {e.strerror})"
    finally:
        os.close(fd)
    return None if version == 12 else f"/dev/kvm has API version {version}, not 12"


def tap_results(cmd):
    """{test: Counter of statuses} and the build-only skips, from a Criterion TAP report.

    A parameterized test appears once per parameter, under one name."""
    with tempfile.NamedTemporaryFile("r", suffix=".tap") as tap:
        env = dict(os.environ)
        env.pop("GM_TEST_RESULTS", None)  # its skips are reported once, by make test-run
        r = run(cmd + [f"--tap={tap.name}", "--jobs", "2"], env=env, timeout=TIMEOUT)
        results, build_only = {}, collections.Counter()
        for line in tap.read().splitlines():
            m = re.match(r"(ok|not ok)(?: \d+)? - (\S+)(.*)", line)
            if not m:
                continue
            skip = re.search(r"# SKIP\s*(.*)", m.group(3))
            status = "fail" if m.group(1) == "not ok" else "skip" if skip else "pass"
            if skip and any(s in skip.group(1) for s in KERNEL_BUILD_ONLY_SKIPS):
                build_only[m.group(2)] += 1
            results.setdefault(m.group(2), collections.Counter())[status] += 1
        return r.returncode, results, build_only, r.stdout


def compare_conformance(rep, build, gmem_run):
    name = "conformance-kernel under gmem-run"
    kernel = os.path.join(build, "tests/conformance-kernel")
    libgmem = os.path.join(build, "tests/conformance-libgmem")
    for binary in (kernel, libgmem):
        if not os.access(binary, os.X_OK):
            rep.fail(name, f"{binary} is not built")
            return
    _, want, _, _ = tap_results([libgmem])
    rc, got, build_only, output = tap_results([gmem_run, "--backend", "soft", "--", kernel])
    if not got:
        rep.fail(name, f"no TAP report (exit {rc}): {last_lines(output)}")
        return
    differ = []
    for test in sorted(set(want) & set(got)):  # a test built for one target only is not compared
        g = got[test].copy()
        # Cases the kernel build skips for its own reason count as what libgmem's build made of them.
        g["skip"] -= build_only[test]
        g["pass"] += build_only[test]
        if +g != +want[test]:
            differ.append(f"{test}: {dict(got[test])} (libgmem build: {dict(want[test])})")
    if differ:
        rep.fail(name, f"{len(differ)} of {len(want)} tests differ from conformance-libgmem: "
                 + "; ".join(differ[:8]))
        return
    rep.ok(name)
    if build_only:
        rep.skip(f"{name} (folio-size cases)",
                 f"{sum(build_only.values())} cases: the kernel build never asks for libgmem's "
                 "folio-size flag")


def vmcall_unusable(probe):
    """Why a kvm-backend guest's VMCALL never reaches the VMM, or None."""
    try:
        r = run([probe], timeout=VMCALL_PROBE_TIMEOUT)
    except subprocess.TimeoutExpired:
        return (f"the guest's VMCALL never reaches the VMM ({os.path.basename(probe)} "
                f"got no answer from KVM_RUN in {VMCALL_PROBE_TIMEOUT} s)")
    if r.returncode == 0:
        return None
    if r.returncode == 1:
        return f"the guest's VMCALL never reaches the VMM ({os.path.basename(probe)}: {last_lines(r.stdout, 1)})"
    return f"{os.path.basename(probe)} could not run a guest to try VMCALL: {last_lines(r.stdout, 1)}"


def run_all(rep, gmem_run, out, probe):
    kvm_why = kvm_unusable()
    vmcall_why = None if kvm_why else vmcall_unusable(probe)
    for backend in ("soft", "kvm"):
        for t in TESTS:
            name = f"{backend}/{t}"
            if backend == "kvm" and kvm_why:
                rep.skip(name, kvm_why)
                continue
            if backend == "kvm" and t in VMCALL_TESTS and vmcall_why:
                rep.skip(name, f"{vmcall_why}; the test converts memory with "
                         "VMCALL(KVM_HC_MAP_GPA_RANGE). libgmem's side of per-VM conversions on "
                         "this backend is tested by unit kvm_backend::per_vm_attributes_split_host_slots, "
                         "whose guest uses libgmem's hypercall gate")
                continue
            rc, output = run_under(gmem_run, backend, t, out)
            if t == MEMORY_REGION:
                report_memory_region(rep, name, rc, output)
            else:
                report_whole(rep, name, rc, output)


def main():
    build = sys.argv[1] if len(sys.argv) > 1 else "build"
    gmem_run = os.path.abspath(os.path.join(build, "bin/gmem-run"))
    out = os.path.abspath(os.path.join(build, "selftests"))
    rep = Report()

    def skip_all(why):
        for backend in ("soft", "kvm"):
            for t in TESTS:
                rep.skip(f"{backend}/{t}", why)
        rep.skip("conformance-kernel under gmem-run", why)

    version, why = install_source()
    tree = None
    if version:
        tree, why = prepare_tree(version)
    if not tree:
        skip_all(why)
    elif (why := build_tests(tree, out)):
        for t in TESTS:
            rep.fail(f"build {t}", why)
    elif not os.access(gmem_run, os.X_OK):
        skip_all(f"{gmem_run} is not built")
    else:
        run_all(rep, gmem_run, out, os.path.abspath(os.path.join(build, "tests/vmcall-probe")))
        compare_conformance(rep, build, gmem_run)
    print(f"{rep.passed} passed, {rep.failed} failed, {rep.skipped} skipped")
    return 1 if rep.failed else 0


if __name__ == "__main__":
    sys.exit(main())
