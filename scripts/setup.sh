#!/bin/sh
# Installs the Debian packages one use of libgmem needs: building and running (make run),
# or everything make test runs. Run as root it installs what is missing; otherwise it names
# what to install.
#
#   scripts/setup.sh [build|test]   install the set (default: build)
#   scripts/setup.sh --list SET     print the set's packages, one a line
set -eu

# Building the library and the tools, and running gmem-vm; libssl-dev for libcrypto (the
# software SNP platform's key and report signatures).
BUILD_PACKAGES="gcc libc6-dev make pkg-config liburcu-dev libssl-dev binutils"
# make test on top of that: Criterion for the unit and conformance tests, clang and
# libFuzzer (libclang-rt-14-dev) for the fuzz targets, valgrind (which also ships
# <valgrind/memcheck.h>, used by src/uaccess.c) for the valgrind run, groff for the man
# page check, python3 for the docs check and make selftests, and linux-source-6.12 for the
# kernel's KVM selftests that make selftests builds (GPL-2.0 sources, never copied here).
TEST_PACKAGES="$BUILD_PACKAGES libcriterion-dev clang libclang-rt-14-dev valgrind groff-base python3 linux-source-6.12"

packages_of() {
	case "$1" in
	build) echo "$BUILD_PACKAGES" ;;
	test) echo "$TEST_PACKAGES" ;;
	*) echo "setup: unknown set '$1': give build or test" >&2; exit 2 ;;
	esac
}

if [ "${1:-}" = "--list" ]; then
	for p in $(packages_of "${2:-build}"); do echo "$p"; done
	exit 0
fi
PACKAGES=$(packages_of "${1:-build}")

missing=""
for p in $PACKAGES; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
		missing="$missing $p"
done
[ -z "$missing" ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
	echo "setup: missing packages:$missing" >&2
	echo "setup: run as root: apt-get install -y$missing" >&2
	exit 1
fi
echo "setup: installing$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends $missing >/dev/null
