#!/bin/sh
# make install as a newcomer runs it: from the sources alone (no build tree), into scratch
# prefixes. Checks what is installed against the list the README gives, that a failed
# install leaves nothing, that uninstall removes everything, and that programs built with
# pkg-config run: shared (rpath, or LD_LIBRARY_PATH) and static (no libgmem.so needed).
set -eu
cd "$(dirname "$0")/../.."
CC=${CC:-cc}
MAKE=${MAKE:-make}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail() { echo "check-install: $*" >&2; exit 1; }

# A fresh clone: the tracked and new (not ignored) files, no build/.
mkdir "$work/src"
git ls-files -z --cached --others --exclude-standard | xargs -0 cp --parents -t "$work/src" 2>/dev/null ||
	tar --exclude=./build --exclude=./.git -cf - . | tar -xf - -C "$work/src"
[ ! -e "$work/src/build" ] || fail "the copy has a build tree"

prefix="$work/prefix"
$MAKE -C "$work/src" --no-print-directory -j2 install PREFIX="$prefix" >"$work/install.log" 2>&1 ||
	{ tail -20 "$work/install.log"; fail "make install failed in a clean tree"; }

# What the README says make install installs, and nothing else.
version=$(sed -n 's/^VERSION *:= *//p' Makefile)
man_pages=$(ls man/man3/*.3 2>/dev/null | sed "s|^man/|share/man/|" || true)
expected=$(printf '%s\n' bin/gmem-vm bin/gmem-run include/gmem/gmem.h include/gmem/kvm.h \
	lib/libgmem.a lib/libgmem.so lib/libgmem.so.0 "lib/libgmem.so.$version" \
	lib/libgmem-preload.so lib/pkgconfig/libgmem.pc $man_pages | sort)
got=$(cd "$prefix" && find . \( -type f -o -type l \) | sed 's|^\./||' | sort)
[ "$got" = "$expected" ] || { echo "installed:"; echo "$got"; echo "expected:"; echo "$expected";
	fail "make install installed something else than the README's list"; }
"$prefix/bin/gmem-vm" --help >/dev/null || fail "the installed gmem-vm does not run"
# The installed gmem-run finds the installed preload library and runs README's program on it.
$CC -I"$prefix/include" examples/plain_kvm.c -o "$work/plain_kvm"
env -u GMEM_PRELOAD "$prefix/bin/gmem-run" -- "$work/plain_kvm" >/dev/null ||
	fail "the installed gmem-run did not run examples/plain_kvm.c on libgmem"

pc="env PKG_CONFIG_PATH=$prefix/lib/pkgconfig pkg-config"
# Shared: with an rpath, and with LD_LIBRARY_PATH as the README says.
$CC tests/install/consumer.c -o "$work/shared-rpath" $($pc --cflags --libs libgmem) \
	-Wl,-rpath,"$prefix/lib"
"$work/shared-rpath" || fail "the shared consumer (rpath) failed"
$CC tests/install/consumer.c -o "$work/shared" $($pc --cflags --libs libgmem)
LD_LIBRARY_PATH="$prefix/lib" "$work/shared" || fail "the shared consumer (LD_LIBRARY_PATH) failed"
# Static: the pkg-config --static recipe alone, run with no library path at all.
$CC tests/install/consumer.c -o "$work/static" $($pc --static --cflags --libs libgmem)
env -u LD_LIBRARY_PATH "$work/static" || fail "the static consumer failed (exit $?)"
if readelf -d "$work/static" 2>/dev/null | grep -q 'libgmem\.so'; then
	fail "the static consumer needs libgmem.so"
fi

# The api.md example, built against the installed library as api.md says.
$CC examples/vmm_loop.c -o "$work/vmm_loop" $($pc --static --cflags --libs libgmem)
"$work/vmm_loop" >/dev/null || fail "examples/vmm_loop.c built against the installed library failed"

# Uninstall leaves no file behind.
$MAKE -C "$work/src" --no-print-directory uninstall PREFIX="$prefix" >/dev/null
left=$(find "$prefix" \( -type f -o -type l \))
[ -z "$left" ] || fail "uninstall left: $left"

# All or nothing: a prefix where include/gmem cannot be a directory gets nothing at all.
bad="$work/bad-prefix"
mkdir -p "$bad/include"
echo "in the way" > "$bad/include/gmem"
if $MAKE -C "$work/src" --no-print-directory install PREFIX="$bad" >"$work/bad.log" 2>&1; then
	fail "make install succeeded although $bad/include/gmem is a file"
fi
left=$(cd "$bad" && find . -mindepth 1 | sort | tr '\n' ' ')
[ "$left" = "./include ./include/gmem " ] || fail "a failed install left: $left"
echo "install: clean-tree make install, uninstall, all-or-nothing, shared and static consumers, the example: ok"
