#!/bin/sh
# The Makefile's VERSION is the version: gmem.h's macros and gm_version() must say the same.
#   scripts/check-version.sh BUILD_DIR   (the tree holding libgmem.a)
set -eu
cd "$(dirname "$0")/.."
build=${1:-build}
CC=${CC:-cc}

version=$(sed -n 's/^VERSION *:= *//p' Makefile)
macro() { sed -n "s/^#define $1 *//p" include/gmem/gmem.h; }
header="$(macro GM_VERSION_MAJOR).$(macro GM_VERSION_MINOR).$(macro GM_VERSION_PATCH)"
string=$(macro GM_VERSION_STRING | tr -d '"')
fail=0
[ "$header" = "$version" ] || { echo "check-version: gmem.h's GM_VERSION_MAJOR/MINOR/PATCH say $header, the Makefile $version"; fail=1; }
[ "$string" = "$version" ] || { echo "check-version: gmem.h's GM_VERSION_STRING says $string, the Makefile $version"; fail=1; }

# The man pages' headers name the version too.
for page in man/man3/*.3; do
	th=$(grep '^\.TH' "$page" || true)
	[ -z "$th" ] || echo "$th" | grep -q "\"libgmem $version\"" ||
		{ echo "check-version: $page says: $th, not libgmem $version"; fail=1; }
done

prog=$(mktemp)
trap 'rm -f "$prog"' EXIT
printf '#include <stdio.h>\n#include <gmem/gmem.h>\nint main(void) { puts(gm_version()); return 0; }\n' |
	$CC -Iinclude -x c - -x none -o "$prog" "$build/libgmem.a" -lurcu-bp -lpthread -lcrypto
running=$("$prog")
[ "$running" = "$version" ] || { echo "check-version: gm_version() says $running, the Makefile $version"; fail=1; }
[ $fail -eq 0 ] && echo "version: $version in the Makefile, gmem.h and gm_version()"
exit $fail
