#!/bin/sh
# make run must install only what building and running gmem-vm needs; make test the rest.
# Checks which package set each target asks scripts/setup.sh for, and what the sets hold.
set -eu
cd "$(dirname "$0")/.."

fail=0
# The set a make target passes to setup.sh, read from make's dry run of the target.
set_of() {
	make -n --no-print-directory "$1" 2>/dev/null | sed -n 's|.*scripts/setup\.sh \([a-z]*\).*|\1|p' | head -1
}

for target in run bench stress; do
	s=$(set_of "$target")
	[ "$s" = build ] || { echo "check-deps: make $target asks setup.sh for '${s:-nothing}', not build"; fail=1; }
done
for target in test fuzz; do
	s=$(set_of "$target")
	[ "$s" = test ] || { echo "check-deps: make $target asks setup.sh for '${s:-nothing}', not test"; fail=1; }
done

build=$(scripts/setup.sh --list build)
test=$(scripts/setup.sh --list test)
# What only the tests use: the test framework, the fuzzing toolchain, valgrind, groff, the
# kernel's selftests.
for p in libcriterion-dev clang libclang-rt-14-dev valgrind groff-base linux-source-6.12; do
	if echo "$build" | grep -qx "$p"; then
		echo "check-deps: make run would install $p, which only make test uses"; fail=1
	fi
	echo "$test" | grep -qx "$p" || { echo "check-deps: make test would not install $p"; fail=1; }
done
for p in $build; do
	echo "$test" | grep -qx "$p" || { echo "check-deps: the test set lacks the build package $p"; fail=1; }
done
[ $fail -eq 0 ] && echo "deps: make run installs $(echo $build | wc -w) build packages; make test adds the rest"
exit $fail
