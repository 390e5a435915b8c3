#!/bin/sh
# Prints the dependency graph of src/'s objects and fails on a cycle.
#
# A module is a header and the files that implement it: x.c belongs to x.h,
# and the files listed in MEMBERS below to the header they implement. A module
# depends on another when one of its files includes the other's header, or
# when its object files use a symbol the other's define (nm; run after the
# library is built). Data flows down: vcpu -> guest access -> mmu fault ->
# memslot / gmem -> backing, and back up only through the invalidation calls
# into the stage-2, which sits below them all.
#
# usage: scripts/layering.sh [BUILD_DIR]   (default build; its obj/src/ is read if present)
set -eu

BUILD=${1:-build}
cd "$(dirname "$0")/.."

# Files that implement a header of another name.
MEMBERS="convert:gmem hostmap:gmem memslot_host:memslot heap:internal uaccess:internal file:internal"

module_of() {
	m=${1#src/}
	m=${m%.[ch]}
	for pair in $MEMBERS; do
		[ "$m" = "${pair%%:*}" ] && { echo "${pair#*:}"; return; }
	done
	echo "$m"
}

edges=$(mktemp)
trap 'rm -f "$edges"' EXIT

# Include edges.
for f in $(find src -name '*.[ch]' | sort); do
	from=$(module_of "$f")
	sed -n 's/^#include "\([^"]*\)".*/\1/p' "$f" | while read -r inc; do
		[ -e "src/$inc" ] || continue
		to=$(module_of "src/$inc")
		if [ "$from" != "$to" ]; then echo "$from $to include"; fi
	done
done >>"$edges"

# Call edges: an undefined symbol of one object that another object defines.
if [ -d "$BUILD/obj/src" ]; then
	defs=$(mktemp)
	for o in $(find "$BUILD/obj/src" -name '*.o' | sort); do
		src=src/${o#"$BUILD"/obj/src/}
		[ -e "${src%.o}.c" ] || continue # left over from a removed source
		# The interposer defines the C library's names (read, mmap...): not the library's.
		case $src in src/preload/*) continue ;; esac
		m=$(module_of "${src%.o}.c")
		nm --defined-only -g "$o" | awk -v m="$m" 'NF == 3 { print $3, m }'
	done | sort -u >"$defs"
	for o in $(find "$BUILD/obj/src" -name '*.o' | sort); do
		src=src/${o#"$BUILD"/obj/src/}
		[ -e "${src%.o}.c" ] || continue
		m=$(module_of "${src%.o}.c")
		nm -u "$o" | awk '{ print $2 }' | sort -u | join - "$defs" |
			awk -v m="$m" '$2 != m { print m, $2, "call" }'
	done | sort -u >>"$edges"
	rm -f "$defs"
else
	echo "layering: $BUILD/obj/src not built: include edges only" >&2
fi

# The graph, one line per module: what it depends on, (c) where only by calls.
sort -u "$edges" | awk '
	{ kind[$1 " " $2] = kind[$1 " " $2] ? kind[$1 " " $2] : $3
	  if ($3 == "include") kind[$1 " " $2] = "include"
	  mods[$1]; mods[$2] }
	END {
		for (k in kind) { split(k, p, " "); deps[p[1]] = deps[p[1]] " " p[2] (kind[k] == "call" ? "(c)" : "") }
		for (m in mods) printf "%-14s ->%s\n", m, deps[m]
	}' | sort

# tsort names the modules of a cycle on stderr.
if ! awk '{ print $1, $2 }' "$edges" | sort -u | tsort >/dev/null 2>"$edges.err"; then
	echo "layering: src/ has a dependency cycle:" >&2
	cat "$edges.err" >&2
	rm -f "$edges.err"
	exit 1
fi
rm -f "$edges.err"
echo "layering: no cycle among $(awk '{ print $1; print $2 }' "$edges" | sort -u | wc -l) modules"
