# libgmem: guest-first memory for virtual machines, in userspace.
#
#   make          shared + static library and the tools
#   make run      set up dependencies, build and run the main program
#   make test     set up dependencies, build and run every test (release, ASan+UBSan, TSan)
#   make bench    build and run the benchmarks (results under build/bench/)
#   make stress   gmem-stress: everything at once on one VM, checked (STRESS_SECONDS, default 180)
#   make fuzz     the libFuzzer targets, FUZZ_SECONDS each (default 60)
#   make test-laid the tests of host mappings again, laid (GMEM_USERFAULTFD=0; part of make test)
#   make mutation one-line breakages of the library, each against make test-run (slow)
#   make selftests the kernel's own KVM selftests (Debian's linux-source-6.12) under gmem-run
#   make install  library, headers, pkg-config file, man pages, gmem-vm, gmem-run and
#                 libgmem-preload.so under $(PREFIX)

VERSION      := 0.1.0
SOVERSION    := 0
PREFIX       ?= /usr/local
LIBDIR       ?= $(PREFIX)/lib
INCLUDEDIR   ?= $(PREFIX)/include
BINDIR       ?= $(PREFIX)/bin
MANDIR       ?= $(PREFIX)/share/man
DESTDIR      ?=

# VARIANT selects a build tree: release (build/), asan (build/asan/), tsan (build/tsan/).
VARIANT      ?= release
CC           ?= cc
ifeq ($(VARIANT),release)
BUILD        := build
VARIANT_CFLAGS := -O2
else ifeq ($(VARIANT),asan)
BUILD        := build/asan
VARIANT_CFLAGS := -O1 -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
else ifeq ($(VARIANT),tsan)
BUILD        := build/tsan
VARIANT_CFLAGS := -O1 -fsanitize=thread -fno-omit-frame-pointer
else
$(error VARIANT must be release, asan or tsan)
endif

WERROR       ?= -Werror
CFLAGS       ?= -g
ALL_CFLAGS   := -std=gnu11 -Wall -Wextra $(WERROR) -Wno-unused-parameter $(VARIANT_CFLAGS) \
                -Iinclude $(CFLAGS)
LIB_CFLAGS   := $(ALL_CFLAGS) -fPIC -fvisibility=hidden
LDLIBS       := -lurcu-bp -lpthread -lcrypto
SAN_LDFLAGS  := $(filter -fsanitize=%,$(VARIANT_CFLAGS))

LIB_SRCS     := $(wildcard src/*.c src/kvm/*.c src/mmu/*.c src/platform/*.c)
LIB_OBJS     := $(LIB_SRCS:%.c=$(BUILD)/obj/%.o)
SHARED       := $(BUILD)/libgmem.so.$(VERSION)
STATIC       := $(BUILD)/libgmem.a
PRELOAD      := $(BUILD)/libgmem-preload.so
# The same sources with the test hooks (GM_TEST_HOOKS: injected allocation and mmap
# failures, the backing store's fd) and every internal symbol global, for the tests that
# use them; the installed libraries have neither.
TEST_OBJS    := $(LIB_SRCS:%.c=$(BUILD)/test-obj/%.o)
TEST_STATIC  := $(BUILD)/libgmem-test.a

TOOL_SRCS    := $(wildcard tools/*.c)
TOOLS        := $(TOOL_SRCS:tools/%.c=$(BUILD)/bin/%)

# Conformance tests are written once and built twice: on libgmem and on /dev/kvm.
CONF_SRCS    := $(wildcard tests/conformance/*.c)
HARNESS_SRCS := $(wildcard tests/harness/*.c)
UNIT_SRCS    := $(wildcard tests/unit/*.c)
TEST_BINS    := $(BUILD)/tests/conformance-libgmem $(BUILD)/tests/conformance-kernel
# The same conformance tests on libgmem with kvm.vm_memory_attributes=1 (GM_VM_ATTRS).
VM_ATTRS_SRCS := $(CONF_SRCS)
TEST_BINS    += $(BUILD)/tests/conformance-libgmem-vmattrs
ifneq ($(UNIT_SRCS),)
TEST_BINS    += $(BUILD)/tests/unit
endif
# <gmem/kvm.h> against the system's <linux/kvm.h>, and alone as the kernel's selftests use it.
TEST_BINS    += $(BUILD)/tests/uapi

# Stress programs check themselves: they also run under TSan, where Criterion cannot.
STRESS_SRCS  := $(wildcard tests/stress/*.c)
STRESS_BINS  := $(STRESS_SRCS:tests/stress/%.c=$(BUILD)/tests/stress-%)
ifeq ($(VARIANT),tsan)
TEST_BINS    :=
endif
TEST_BINS    += $(STRESS_BINS)
# A program with functions named as libgmem's internals, linked with libgmem.a.
TEST_BINS    += $(BUILD)/tests/link-own-symbols
# An unmodified /dev/kvm program that runs itself under gmem-run. Release build only: a
# sanitizer's runtime must come first among the loaded libraries, before any LD_PRELOAD.
ifeq ($(VARIANT),release)
TEST_BINS    += $(BUILD)/tests/preload-unmodified
endif

BENCH_SRCS   := $(wildcard bench/*.c)
BENCHES      := $(BENCH_SRCS:bench/%.c=$(BUILD)/bench/%)

.PHONY: all lib tools run test test-run test-laid test-build bench install uninstall clean deps check-exports \
	check-install check-layering stress deps-test check-deps check-valgrind check-version check-docs \
	check-man check-examples check-attest check-snp-launch mutation selftests
all: lib tools

lib: $(SHARED) $(STATIC) $(PRELOAD)
tools: $(TOOLS)

# ---- guest/: the microVM's default guest ---------------------------------------------------
# One scenario built twice. For KVM: freestanding, linked at GUEST_IMAGE_GPA into a flat
# image, with fixed flags whatever the VARIANT (no sanitizer runtime exists inside a guest),
# so it lives in build/guest/ for every variant. For the soft backend: built for the host
# with the VARIANT's flags. $(GUEST_LIB) holds both for tools and unit tests: the image as
# guest_image_start..guest_image_end and guest_soft_entry (see guest/guest_image.h).
OBJCOPY         ?= objcopy
GUEST_HDRS      := $(wildcard guest/*.h)
GUEST_KVM_OBJS  := build/guest/kvm/entry.o build/guest/kvm/scenario.o build/guest/kvm/gapi_kvm.o
GUEST_KVM_CFLAGS := -std=gnu11 -Wall -Wextra $(WERROR) -Wno-unused-parameter -O2 -g \
                -ffreestanding -fno-pic -fno-pie -mcmodel=small -mno-red-zone \
                -mgeneral-regs-only -fno-stack-protector -fno-asynchronous-unwind-tables \
                -fno-unwind-tables -fcf-protection=none -fno-tree-loop-distribute-patterns
GUEST_KVM_LDFLAGS := -nostdlib -static -no-pie -Wl,-T,guest/guest.lds -Wl,--build-id=none \
                -Wl,-z,noexecstack -Wl,-z,max-page-size=4096
STRESS_KVM_OBJS := build/guest/kvm/stress_entry.o build/guest/kvm/stress.o build/guest/kvm/gapi_kvm.o
GUEST_SOFT_OBJS := $(BUILD)/guest/soft/scenario.o $(BUILD)/guest/soft/stress.o \
                   $(BUILD)/guest/soft/gapi_soft.o
GUEST_LIB       := $(BUILD)/guest/libguest.a

build/guest/kvm/%.o: guest/%.c $(GUEST_HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(GUEST_KVM_CFLAGS) -c $< -o $@

build/guest/kvm/%.o: guest/%.S
	@mkdir -p $(dir $@)
	$(CC) $(GUEST_KVM_CFLAGS) -c $< -o $@

# The stress guest's image: the same entry, calling stress_guest_scenario.
build/guest/kvm/stress_entry.o: guest/entry.S
	@mkdir -p $(dir $@)
	$(CC) $(GUEST_KVM_CFLAGS) -DGUEST_MAIN=stress_guest_scenario -c $< -o $@

build/guest/guest.elf: $(GUEST_KVM_OBJS) guest/guest.lds
	$(CC) $(GUEST_KVM_CFLAGS) $(GUEST_KVM_LDFLAGS) -o $@ $(GUEST_KVM_OBJS)

build/guest/stress.elf: $(STRESS_KVM_OBJS) guest/guest.lds
	$(CC) $(GUEST_KVM_CFLAGS) $(GUEST_KVM_LDFLAGS) -o $@ $(STRESS_KVM_OBJS)

build/guest/%.bin: build/guest/%.elf
	$(OBJCOPY) -O binary $< $@

build/guest/guest_image.o: guest/guest_image.S build/guest/guest.bin
	$(CC) -DGUEST_BIN='"build/guest/guest.bin"' -c $< -o $@

build/guest/stress_image.o: guest/guest_image.S build/guest/stress.bin
	$(CC) -DGUEST_BIN='"build/guest/stress.bin"' -DIMAGE_NAME=stress_image -c $< -o $@

$(BUILD)/guest/soft/%.o: guest/%.c $(GUEST_HDRS) $(wildcard include/gmem/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -c $< -o $@

$(GUEST_LIB): $(GUEST_SOFT_OBJS) build/guest/guest_image.o build/guest/stress_image.o
	rm -f $@
	ar rcs $@ $^
# ---- end of guest/ ---------------------------------------------------------------------------

$(BUILD)/obj/%.o: %.c $(wildcard include/gmem/*.h src/*.h src/*/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(LIB_CFLAGS) -Isrc -c $< -o $@

$(SHARED): $(LIB_OBJS) src/libgmem.map
	$(CC) -shared $(SAN_LDFLAGS) -Wl,-soname,libgmem.so.$(SOVERSION) \
	      -Wl,--version-script=src/libgmem.map -Wl,--no-undefined -o $@ $(LIB_OBJS) $(LDLIBS)
	ln -sf libgmem.so.$(VERSION) $(BUILD)/libgmem.so.$(SOVERSION)
	ln -sf libgmem.so.$(VERSION) $(BUILD)/libgmem.so

# The static library is one relocatable object in which only the exported gm_* calls stay
# global (the rest is hidden, and made local): a VMM with its own kvm_check_extension or
# vm_create links with it.
# libgmem-preload.so (gmem-run): the library's objects, whose calls to the C functions the
# interposer takes over are renamed to gm_next_* (straight to the C library: the library never
# calls its own interposer), and src/preload/. Only the interposed names are exported.
PRELOAD_NEXT  := open openat ioctl mmap munmap mremap mprotect madvise fallocate close dup dup2 \
                 dup3 fcntl fstat statx read write pread pwrite readv writev preadv pwritev lseek \
                 ftruncate syscall
$(BUILD)/obj/libgmem-preload-lib.o: $(LIB_OBJS) Makefile
	$(LD) -r -o $@.all $(LIB_OBJS)
	$(OBJCOPY) $(foreach s,$(PRELOAD_NEXT),--redefine-sym $(s)=gm_next_$(s)) $@.all $@
	rm -f $@.all
	@left=$$(nm -u $@ | awk '{print $$2}' | grep -Fx $(PRELOAD_NEXT:%=-e %) $(PRELOAD_NEXT:%=-e %64) \
	    -e open64 -e mmap64 -e fstat64 -e __open_2 -e __read_chk -e fstatat -e posix_fallocate \
	    -e close_range -e preadv2 -e pwritev2 || true); \
	if [ -n "$$left" ]; then echo "the library calls interposed names directly: $$left"; rm -f $@; exit 1; fi

$(PRELOAD): $(BUILD)/obj/libgmem-preload-lib.o $(BUILD)/obj/src/preload/preload.o src/preload/preload.map
	$(CC) -shared $(SAN_LDFLAGS) -Wl,--version-script=src/preload/preload.map -Wl,--no-undefined \
	      -o $@ $(BUILD)/obj/libgmem-preload-lib.o $(BUILD)/obj/src/preload/preload.o $(LDLIBS) -ldl

$(BUILD)/obj/libgmem-static.o: $(LIB_OBJS)
	$(LD) -r -o $@.all $(LIB_OBJS)
	$(OBJCOPY) --localize-hidden $@.all $@
	rm -f $@.all

$(STATIC): $(BUILD)/obj/libgmem-static.o
	@mkdir -p $(dir $@)
	rm -f $@
	ar rcs $@ $<

$(BUILD)/test-obj/%.o: %.c $(wildcard include/gmem/*.h src/*.h src/*/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(LIB_CFLAGS) -DGM_TEST_HOOKS -Isrc -c $< -o $@

$(TEST_STATIC): $(TEST_OBJS)
	rm -f $@
	ar rcs $@ $(TEST_OBJS)

# gmem-run links nothing of the library: it finds libgmem-preload.so and execs the program.
$(BUILD)/bin/gmem-run: tools/gmem-run.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -DGM_LIBDIR='"$(LIBDIR)"' $< -o $@ $(SAN_LDFLAGS)

$(BUILD)/bin/%: tools/%.c $(GUEST_LIB) $(STATIC)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -I. $< -o $@ $(GUEST_LIB) $(STATIC) $(LDLIBS) $(SAN_LDFLAGS)

# gmem-attest and the attestation benchmark use only the attestation module (no VM code):
# they link its objects, whose internal calls libgmem.a keeps hidden.
ATTEST_OBJS  := $(BUILD)/obj/src/platform/snp_report.o $(BUILD)/obj/src/platform/platform_key.o
$(BUILD)/bin/gmem-attest: tools/gmem-attest.c $(ATTEST_OBJS)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -Isrc $< -o $@ $(ATTEST_OBJS) -lcrypto $(SAN_LDFLAGS)

# tests/attest/check.sh: gmem-attest's verdicts on a report this helper signs with known fields.
$(BUILD)/tests/attest-make-report: tests/attest/make_report.c $(TEST_STATIC)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -Isrc $< -o $@ $(TEST_STATIC) $(LDLIBS) $(SAN_LDFLAGS)

$(BUILD)/tests/conformance-libgmem: $(CONF_SRCS) $(HARNESS_SRCS) $(wildcard tests/harness/*.h) $(STATIC)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -DGM_TARGET_LIBGMEM -Itests $(CONF_SRCS) $(HARNESS_SRCS) -o $@ \
	      $(STATIC) -lcriterion $(LDLIBS) $(SAN_LDFLAGS)

$(BUILD)/tests/conformance-libgmem-vmattrs: $(VM_ATTRS_SRCS) $(HARNESS_SRCS) $(wildcard tests/harness/*.h) $(STATIC)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -DGM_TARGET_LIBGMEM -DGM_VM_ATTRS -Itests $(VM_ATTRS_SRCS) $(HARNESS_SRCS) \
	      -o $@ $(STATIC) -lcriterion $(LDLIBS) $(SAN_LDFLAGS)

# make selftests asks it whether the host completes a guest's VMCALL.
$(BUILD)/tests/vmcall-probe: tests/selftests/vmcall_probe.c tools/x86_boot.h $(STATIC)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -Isrc $< -o $@ $(STATIC) $(LDLIBS) $(SAN_LDFLAGS)

$(BUILD)/tests/conformance-kernel: $(CONF_SRCS) $(HARNESS_SRCS) $(wildcard tests/harness/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -DGM_TARGET_KERNEL -Itests $(CONF_SRCS) $(HARNESS_SRCS) -o $@ \
	      -lcriterion -lpthread $(SAN_LDFLAGS)

# The unit tests also run gmem-vm as a program.
$(BUILD)/tests/unit: $(UNIT_SRCS) $(HARNESS_SRCS) $(wildcard tests/harness/*.h) $(GUEST_LIB) \
		     $(TEST_STATIC) $(BUILD)/bin/gmem-vm $(BUILD)/bin/gmem-measure
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -DGM_TARGET_LIBGMEM -DGM_TEST_HOOKS -DGMEM_VM_BIN='"$(BUILD)/bin/gmem-vm"' \
	      -DGMEM_MEASURE_BIN='"$(BUILD)/bin/gmem-measure"' \
	      -Isrc -Itests -I. $(UNIT_SRCS) $(HARNESS_SRCS) -o $@ \
	      $(GUEST_LIB) $(TEST_STATIC) -lcriterion $(LDLIBS) $(SAN_LDFLAGS)

# tests/uapi: layout_gen prints what <gmem/kvm.h> alone says of each name in shared.def;
# system_header.c compares that, with _Static_assert, to what <linux/kvm.h> says.
UAPI_LAYOUT  := $(BUILD)/gen/uapi/own_layout.h
$(BUILD)/gen/uapi/layout_gen: tests/uapi/layout_gen.c tests/uapi/shared.def include/gmem/kvm.h
	@mkdir -p $(dir $@)
	$(CC) -std=gnu11 -Wall -Wextra $(WERROR) -Iinclude $< -o $@

$(UAPI_LAYOUT): $(BUILD)/gen/uapi/layout_gen
	$< > $@.tmp && mv $@.tmp $@

$(BUILD)/tests/uapi: $(wildcard tests/uapi/*.c) tests/uapi/shared.def $(UAPI_LAYOUT) $(STATIC)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -Itests/uapi -I$(dir $(UAPI_LAYOUT)) $(filter-out %/layout_gen.c,$(wildcard tests/uapi/*.c)) \
	      -o $@ $(STATIC) -lcriterion $(LDLIBS) $(SAN_LDFLAGS)

$(BUILD)/tests/link-own-symbols: tests/link/own_symbols.c $(STATIC)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $< -o $@ $(STATIC) $(LDLIBS) $(SAN_LDFLAGS)

# Linked with nothing of libgmem: gmem-run and the preload library give it the library.
$(BUILD)/tests/preload-unmodified: tests/preload/unmodified.c $(BUILD)/tests/static-hello \
				   $(BUILD)/bin/gmem-run $(PRELOAD)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -Itests -DGMEM_RUN_BIN='"$(CURDIR)/$(BUILD)/bin/gmem-run"' \
	      -DGMEM_STATIC_BIN='"$(CURDIR)/$(BUILD)/tests/static-hello"' $< -o $@ -lpthread

# A statically linked program, which gmem-run must refuse.
$(BUILD)/tests/static-hello: tests/preload/static_hello.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -static $< -o $@

$(BUILD)/tests/stress-%: tests/stress/%.c $(wildcard tests/stress/*.h) $(STATIC)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -Itests $< -o $@ $(STATIC) $(LDLIBS) $(SAN_LDFLAGS)

# gmem-stress (make stress): every backend at once under load, checked as it runs.
GMEM_STRESS     := $(BUILD)/tests/gmem-stress
GMEM_STRESS_SRCS := $(wildcard tests/stress/vm/*.c)
$(GMEM_STRESS): $(GMEM_STRESS_SRCS) $(wildcard tests/stress/vm/*.h) $(GUEST_LIB) $(TEST_STATIC)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -DGM_TEST_HOOKS -Isrc -Itests -I. $(GMEM_STRESS_SRCS) -o $@ $(GUEST_LIB) \
	      $(TEST_STATIC) $(LDLIBS) $(SAN_LDFLAGS)

$(BUILD)/bench/snp_report: bench/snp_report.c $(wildcard bench/*.h) $(ATTEST_OBJS)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -Ibench -Isrc $< -o $@ $(ATTEST_OBJS) $(LDLIBS) -lm $(SAN_LDFLAGS)
# The interposer's overhead: the same program with and without the preload library.
$(BUILD)/bench/interposer: bench/interposer.c $(wildcard bench/*.h) $(STATIC) $(PRELOAD)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -Ibench -DGMEM_PRELOAD_LIB='"$(CURDIR)/$(PRELOAD)"' $< -o $@ $(STATIC) \
	      $(LDLIBS) -lm $(SAN_LDFLAGS)

$(BUILD)/bench/%: bench/%.c $(wildcard bench/*.h) $(STATIC)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -Ibench $< -o $@ $(STATIC) $(LDLIBS) -lm $(SAN_LDFLAGS)

# ---- fuzz/: libFuzzer targets (make fuzz) --------------------------------------------------
# Each target is built twice. With clang and libFuzzer (Debian's libclang-rt-14-dev) for
# make fuzz, the library's sources compiled into the target with the same sanitizers and
# coverage. And with $(CC) and the VARIANT's flags, linked to fuzz/replay.c instead of
# libFuzzer: make test replays every seed and regression of the target, even without clang.
FUZZ_TARGETS  := model ioctl_args vm_attrs
FUZZ_CC       ?= clang
FUZZ_SECONDS  ?= 60
FUZZ_CFLAGS   := -std=gnu11 -g -O1 -fno-omit-frame-pointer -fsanitize=fuzzer,address,undefined \
                 -fno-sanitize-recover=all -Wall -Wextra $(WERROR) -Wno-unused-parameter \
                 -Iinclude -Isrc
FUZZ_LIB_SRCS := $(wildcard src/*.c src/kvm/*.c src/mmu/*.c src/platform/*.c)
FUZZ_BINS     := $(FUZZ_TARGETS:%=build/fuzz/%)
FUZZ_REPLAYS  := $(FUZZ_TARGETS:%=$(BUILD)/tests/fuzz-replay-%)
TEST_BINS     += $(FUZZ_REPLAYS)

build/fuzz/%: fuzz/%.c fuzz/fuzz.h $(FUZZ_LIB_SRCS) $(wildcard include/gmem/*.h src/*.h src/*/*.h)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) $< $(FUZZ_LIB_SRCS) -o $@ $(LDLIBS)

$(BUILD)/tests/fuzz-replay-%: fuzz/%.c fuzz/replay.c fuzz/fuzz.h $(STATIC)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -DTARGET_NAME='"fuzz-replay-$*"' \
	      -DREPLAY_DIRS='"fuzz/seeds/$*:fuzz/regressions/$*"' $< fuzz/replay.c -o $@ \
	      $(STATIC) $(LDLIBS) $(SAN_LDFLAGS)

# Each target in turn for FUZZ_SECONDS; corpora in build/fuzz/corpus/, crashes in build/fuzz/crash/.
.PHONY: fuzz
fuzz: deps-test
	@$(MAKE) --no-print-directory $(FUZZ_BINS)
	@scripts/fuzz.sh $(FUZZ_SECONDS) $(FUZZ_TARGETS)
# ---- end of fuzz/ ----------------------------------------------------------------------------

# make run needs only the build set; make test and make fuzz the test set (scripts/setup.sh).
deps:
	@scripts/setup.sh build

deps-test:
	@scripts/setup.sh test

# Which set each target installs, and what each set holds.
check-deps:
	@scripts/check-deps.sh

run: deps
	@$(MAKE) --no-print-directory all
	$(BUILD)/bin/gmem-vm

# Only libgmem's own symbols may leave the shared or the static library, and the test hooks
# (GM_TEST_HOOKS) are in neither, not even as local symbols.
TEST_HOOKS   := gm_heap_fail_after gm_hostmap_fail gm_hostmap_call_locked gmem_backing_fd
check-exports: $(SHARED) $(STATIC)
	@bad=$$(nm -D --defined-only $(SHARED) | awk '$$2 ~ /[TDB]/ && $$3 !~ /^gm_/ {print $$3}'); \
	if [ -n "$$bad" ]; then echo "unexpected exported symbols in $(SHARED): $$bad"; exit 1; fi; \
	bad=$$(nm -g --defined-only $(STATIC) | awk 'NF == 3 && $$3 !~ /^gm_/ {print $$3}'); \
	if [ -n "$$bad" ]; then echo "unexpected global symbols in $(STATIC): $$bad"; exit 1; fi; \
	bad=$$(nm $(SHARED) $(STATIC) | awk 'NF == 3 {print $$3}' | grep -Fx $(TEST_HOOKS:%=-e %) | sort -u | tr "\n" " "); \
	if [ -n "$$bad" ]; then echo "test hooks in the installed libraries: $$bad"; exit 1; fi; \
	echo "exports: only gm_* symbols, in $(SHARED) and $(STATIC); no test hooks"

# src/'s objects depend on each other one way only (scripts/layering.sh prints the graph).
check-layering: lib
	@scripts/layering.sh $(BUILD) >$(BUILD)/layering.txt || { cat $(BUILD)/layering.txt; exit 1; }
	@tail -1 $(BUILD)/layering.txt

# src/uaccess.c uses <valgrind/memcheck.h> when it exists. make test installs valgrind after
# make run may have built the library without it: the stamp's name changes with the header's
# presence, so uaccess.o is rebuilt then (for every VARIANT).
MEMCHECK_STAMP := $(BUILD)/have-memcheck-h.$(if $(wildcard /usr/include/valgrind/memcheck.h),yes,no)
$(BUILD)/obj/src/uaccess.o: $(MEMCHECK_STAMP)
$(MEMCHECK_STAMP):
	@mkdir -p $(dir $@)
	@rm -f $(BUILD)/have-memcheck-h.*
	@touch $@

# valgrind follows none of the library's copies through process_vm_readv/writev: src/uaccess.c
# tells it what they copied. Both backends (the default one is kvm where /dev/kvm works).
check-valgrind: tools
	valgrind --error-exitcode=1 $(BUILD)/bin/gmem-vm
	valgrind -q --error-exitcode=1 $(BUILD)/bin/gmem-vm -q --backend soft --vcpus 2
	@echo "valgrind: gmem-vm runs clean"

# Every relative link and repository path named in README.md and docs/*.md exists.
check-docs:
	@scripts/check-docs.py

# Every gm_* call has a man page (man/man3/), and each formats without a groff warning.
check-man:
	@scripts/check-man.sh

# examples/vmm_loop.c is docs/api.md's example: the same text, built and run, the same output.
check-examples: $(STATIC)
	@scripts/check-examples.py $(BUILD)

# An SNP launch end to end: gmem-vm's report verifies against gmem-measure's digest.
check-snp-launch: $(BUILD)/bin/gmem-vm $(BUILD)/bin/gmem-measure $(BUILD)/bin/gmem-attest
	@tests/snp/launch_attest.sh $(BUILD)

# gmem-attest key and verify: verdicts, reasons and exit statuses (platform keys in a scratch dir).
check-attest: $(BUILD)/bin/gmem-attest $(BUILD)/tests/attest-make-report
	@tests/attest/check.sh $(BUILD)

# The Makefile's VERSION, gmem.h's GM_VERSION_* and gm_version() agree.
check-version: $(STATIC)
	@scripts/check-version.sh $(BUILD)

# make install from a copy of the sources with no build tree, into scratch prefixes: what it
# installs, all or nothing, uninstall, and programs built against it, shared and static.
check-install:
	@tests/install/check.sh

test-build: lib $(TEST_BINS) tools

# Every test step appends "PASS|FAIL|SKIPPED <step>" to this file and every skipped group
# "SKIP <group>: <reason>" (tests/harness/skip_report.h); scripts/test-summary.sh prints them.
# make test collects one file for all its steps; a lone make test-run starts a new one.
GM_TEST_RESULTS ?= $(CURDIR)/build/test-results.txt
export GM_TEST_RESULTS

# Runs one variant's tests; every binary runs even when an earlier one fails, unless
# TEST_STOP_ON_FAILURE is set (scripts/mutate.sh). Exit status 77 is a program that ran
# nothing because the host lacks a feature: not a failure, not a pass. Criterion's test
# workers exit without LeakSanitizer's check, so in its binaries LSan only ever sees the
# runner, whose own 48-byte leak (libcriterion) sometimes failed the ASan run: it is off
# there, and stays on for the stress programs and fuzz replays.
test-run: test-build
	@mkdir -p $(dir $(GM_TEST_RESULTS)); [ -n "$(TEST_RESULTS_KEEP)" ] || : > $(GM_TEST_RESULTS)
	@status=0; for t in $(TEST_BINS); do \
		echo "== $$t"; \
		case $$t in */stress-*|*/fuzz-replay-*|*/link-*|*/preload-*) GM_TEST_VARIANT=$(VARIANT) $$t ;; \
		*) GM_TEST_VARIANT=$(VARIANT) ASAN_OPTIONS="detect_leaks=0:$$ASAN_OPTIONS" \
		   $$t --jobs 2 $(if $(TEST_STOP_ON_FAILURE),--fail-fast) ;; esac; \
		rc=$$?; case $$rc in \
		0) echo "PASS $$t" ;; \
		77) echo "SKIPPED $$t" ;; \
		*) echo "FAIL $$t (exit $$rc)"; status=1 ;; esac >> $(GM_TEST_RESULTS); \
		if [ $$status != 0 ] && [ -n "$(TEST_STOP_ON_FAILURE)" ]; then echo "FAILED: $$t"; break; fi; \
	done; \
	[ -n "$(TEST_RESULTS_KEEP)" ] || scripts/test-summary.sh $(GM_TEST_RESULTS) || status=1; \
	exit $$status

# Host mappings laid without userfaultfd (docs/compat.md; the host's guest_memfd on the kvm
# backend lays them too), forced with GMEM_USERFAULTFD=0: the unit suites that map files,
# conformance-libgmem and the stress programs that convert mapped files. One result per
# program, as test-run; skips say "laid/".
LAID_UNIT_FILTER := @(convert|guest_soft|hostmap|hugetlb|kvm_backend|memory|pin|plain_syscalls|release|stage2_pages|vcpu_exits|vcpu_run)/*
LAID_TESTS := unit conformance-libgmem stress-hugetlb_split stress-conversions stress-vcpu_stress
test-laid: $(LAID_TESTS:%=$(BUILD)/tests/%)
	@mkdir -p $(dir $(GM_TEST_RESULTS)); [ -n "$(TEST_RESULTS_KEEP)" ] || : > $(GM_TEST_RESULTS)
	@status=0; for t in $(LAID_TESTS); do \
		echo "== laid: $(BUILD)/tests/$$t"; \
		case $$t in \
		unit) set -- --jobs 2 --filter '$(LAID_UNIT_FILTER)' ;; \
		conformance-*) set -- --jobs 2 ;; \
		*) set -- ;; esac; \
		GMEM_USERFAULTFD=0 GM_TEST_VARIANT=laid $(BUILD)/tests/$$t "$$@"; \
		rc=$$?; case $$rc in \
		0) echo "PASS laid $$t" ;; \
		77) echo "SKIPPED laid $$t" ;; \
		*) echo "FAIL laid $$t (exit $$rc)"; status=1 ;; esac >> $(GM_TEST_RESULTS); \
	done; \
	[ -n "$(TEST_RESULTS_KEEP)" ] || scripts/test-summary.sh $(GM_TEST_RESULTS) || status=1; \
	exit $$status

# Every step runs even after a failure; the last one lists the skips and the counts, and
# fails when any step failed.
test: deps-test
	@mkdir -p $(dir $(GM_TEST_RESULTS)) && : > $(GM_TEST_RESULTS)
	@scripts/test-step.sh check-deps $(MAKE) --no-print-directory check-deps
	@scripts/test-step.sh check-docs $(MAKE) --no-print-directory check-docs
	@scripts/test-step.sh check-man $(MAKE) --no-print-directory check-man
	@scripts/test-step.sh check-valgrind $(MAKE) --no-print-directory check-valgrind
	@scripts/test-step.sh check-exports $(MAKE) --no-print-directory check-exports
	@scripts/test-step.sh check-layering $(MAKE) --no-print-directory check-layering
	@scripts/test-step.sh check-version $(MAKE) --no-print-directory check-version
	@scripts/test-step.sh check-examples $(MAKE) --no-print-directory check-examples
	@scripts/test-step.sh check-attest $(MAKE) --no-print-directory check-attest
	@scripts/test-step.sh check-snp-launch $(MAKE) --no-print-directory check-snp-launch
	@scripts/test-step.sh check-install $(MAKE) --no-print-directory check-install
	@scripts/test-step.sh --own test-run $(MAKE) --no-print-directory test-run TEST_RESULTS_KEEP=1
	@scripts/test-step.sh --own laid-test-run $(MAKE) --no-print-directory test-laid TEST_RESULTS_KEEP=1
	@scripts/test-step.sh --own asan-test-run $(MAKE) --no-print-directory VARIANT=asan test-run \
	    TEST_RESULTS_KEEP=1
	@scripts/test-step.sh --own tsan-test-run $(MAKE) --no-print-directory VARIANT=tsan test-run \
	    TEST_RESULTS_KEEP=1
	@scripts/test-step.sh asan-stress $(MAKE) --no-print-directory VARIANT=asan stress STRESS_SECONDS=60
	@scripts/test-step.sh tsan-stress $(MAKE) --no-print-directory VARIANT=tsan stress STRESS_SECONDS=20
	@scripts/test-step.sh fuzz $(MAKE) --no-print-directory fuzz FUZZ_SECONDS=60
	@scripts/test-step.sh --own selftests $(MAKE) --no-print-directory selftests
	@scripts/test-summary.sh $(GM_TEST_RESULTS)

# The kernel's KVM selftests, built from Debian's linux-source-6.12 at test time (GPL-2.0:
# never copied here) with their own library, and run under gmem-run on both backends; then
# the kernel build of the conformance tests under gmem-run, against conformance-libgmem.
# The extracted tree is cached in /var/cache/libgmem-selftests (GM_SELFTESTS_CACHE).
selftests: deps-test
	@$(MAKE) --no-print-directory lib tools $(BUILD)/tests/conformance-kernel \
	    $(BUILD)/tests/conformance-libgmem $(BUILD)/tests/vmcall-probe
	@scripts/selftests.py $(BUILD)

# Each one-line breakage of scripts/mutations.txt against make test-run, on a scratch copy
# of the tree; lists the breakages the tests miss. Slow (a minute per breakage): not in make test.
mutation:
	scripts/mutate.sh

# gmem-stress on both backends for STRESS_SECONDS. make test runs it 60 s with ASan+UBSan and
# 20 s with TSan, whose suppressions cover only guest memory (racy by design).
STRESS_SECONDS ?= 180
stress: deps
	@$(MAKE) --no-print-directory $(GMEM_STRESS)
	TSAN_OPTIONS="suppressions=$(CURDIR)/tests/stress/vm/tsan.supp halt_on_error=1 $$TSAN_OPTIONS" \
	    GM_TEST_VARIANT=$(VARIANT) $(GMEM_STRESS) -t $(STRESS_SECONDS)

bench: deps
	@$(MAKE) --no-print-directory $(BENCHES)
	@mkdir -p build/bench
	@scripts/bench.sh $(BENCHES)

# Everything is staged under $(INSTALL_STAGE) first; scripts/install.sh then moves it under
# $(DESTDIR), all or nothing. gmem-vm (it links libgmem statically), gmem-attest and gmem-run
# (which finds libgmem-preload.so in ../lib next to it) are installed; the other tools are not.
INSTALL_STAGE := $(BUILD)/install-stage
MAN_PAGES    := $(wildcard man/man3/*.3)
install: lib tools
	@rm -rf $(INSTALL_STAGE)
	@install -d $(INSTALL_STAGE)$(LIBDIR)/pkgconfig $(INSTALL_STAGE)$(INCLUDEDIR)/gmem \
	    $(INSTALL_STAGE)$(BINDIR) $(INSTALL_STAGE)$(MANDIR)/man3
	@install -m 644 include/gmem/gmem.h include/gmem/kvm.h $(INSTALL_STAGE)$(INCLUDEDIR)/gmem/
	@install -m 755 $(SHARED) $(INSTALL_STAGE)$(LIBDIR)/
	@ln -sf libgmem.so.$(VERSION) $(INSTALL_STAGE)$(LIBDIR)/libgmem.so.$(SOVERSION)
	@ln -sf libgmem.so.$(VERSION) $(INSTALL_STAGE)$(LIBDIR)/libgmem.so
	@install -m 644 $(STATIC) $(INSTALL_STAGE)$(LIBDIR)/
	@install -m 755 $(BUILD)/bin/gmem-vm $(BUILD)/bin/gmem-attest $(BUILD)/bin/gmem-run $(INSTALL_STAGE)$(BINDIR)/
	@install -m 755 $(PRELOAD) $(INSTALL_STAGE)$(LIBDIR)/
	@$(if $(MAN_PAGES),install -m 644 $(MAN_PAGES) $(INSTALL_STAGE)$(MANDIR)/man3/)
	@sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@LIBDIR@|$(LIBDIR)|' -e 's|@INCLUDEDIR@|$(INCLUDEDIR)|' \
	    -e 's|@VERSION@|$(VERSION)|' src/libgmem.pc.in > $(INSTALL_STAGE)$(LIBDIR)/pkgconfig/libgmem.pc
	@scripts/install.sh $(INSTALL_STAGE) $(DESTDIR)

uninstall:
	rm -f $(DESTDIR)$(LIBDIR)/libgmem.so* $(DESTDIR)$(LIBDIR)/libgmem.a \
	      $(DESTDIR)$(LIBDIR)/libgmem-preload.so \
	      $(DESTDIR)$(LIBDIR)/pkgconfig/libgmem.pc
	rm -rf $(DESTDIR)$(INCLUDEDIR)/gmem
	rm -f $(DESTDIR)$(BINDIR)/gmem-vm $(DESTDIR)$(BINDIR)/gmem-attest $(DESTDIR)$(BINDIR)/gmem-run
	rm -f $(MAN_PAGES:man/man3/%=$(DESTDIR)$(MANDIR)/man3/%)

clean:
	rm -rf build
