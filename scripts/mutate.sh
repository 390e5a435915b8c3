#!/bin/bash
# Applies each one-line breakage of scripts/mutations.txt, alone, to a scratch copy of the tree
# and runs make test-run there: a breakage the tests still pass is a SURVIVOR, a missing test.
#   scripts/mutate.sh [LIST]      (make mutation)
# Writes the report to stdout and to scripts/mutations.last (MUTATE_OUT). Exit status 0 only
# when every breakage applied and none survived. MUTATE_TIMEOUT bounds one test run (s);
# MUTATE_CHECK=1 only checks that every pattern applies, without building or testing.
set -u
# Called from make, the outer tree's results file would be inherited: use the scratch's own.
unset GM_TEST_RESULTS MAKEFLAGS MAKELEVEL
root=$(cd "$(dirname "$0")/.." && pwd)
list=${1:-$root/scripts/mutations.txt}
out=${MUTATE_OUT:-$root/scripts/mutations.last}
limit=${MUTATE_TIMEOUT:-1200}
scratch=$(mktemp -d "${TMPDIR:-/tmp}/gmem-mutate.XXXXXX") || exit 2
trap 'rm -rf "$scratch"' EXIT

report() { echo "$*" | tee -a "$out.new"; }

# The files of PATH (a file, or a directory's sources) that the pattern is searched in.
files_of() {
	if [ -d "$scratch/$1" ]; then
		(cd "$scratch" && find "$1" -name '*.[ch]' | sort)
	elif [ -f "$scratch/$1" ]; then
		echo "$1"
	fi
}

# How many times the fixed string $PAT occurs in the files.
occurrences() {
	(cd "$scratch" && PAT=$pat awk '
		{ s = $0; while ((i = index(s, ENVIRON["PAT"])) > 0) { n++; s = substr(s, i + 1) } }
		END { print n + 0 }' "$@")
}

# Replaces the one occurrence of $PAT in the file by $REPL.
apply() {
	PAT=$pat REPL=$repl awk '
		(i = index($0, ENVIRON["PAT"])) > 0 {
			$0 = substr($0, 1, i - 1) ENVIRON["REPL"] substr($0, i + length(ENVIRON["PAT"]))
		}
		{ print }' "$scratch/$1" > "$scratch/$1.mutant" && mv "$scratch/$1.mutant" "$scratch/$1"
}

run_tests() {
	timeout -k 10 "$limit" make -C "$scratch" --no-print-directory -j2 test-run \
		TEST_STOP_ON_FAILURE=1 > "$scratch/log" 2>&1
}

# The tree as it is, uncommitted changes included, without build products.
(cd "$root" && git ls-files -z -co --exclude-standard | tar --null -T - -cf -) | tar -xf - -C "$scratch"
: > "$out.new"
report "mutation run of $(cd "$root" && git rev-parse --short HEAD)$(cd "$root" && git diff --quiet HEAD || echo ' + local changes'), $(date -u '+%Y-%m-%d %H:%M UTC')"
if [ -z "${MUTATE_CHECK:-}" ] && ! run_tests; then
	tail -20 "$scratch/log"
	echo "mutate: make test-run fails on the unbroken tree; fix that first" >&2
	exit 2
fi

n=0 killed=0 survived=0 skipped=0
while IFS= read -r line; do
	case $line in '#'* | '') continue ;; esac
	path=${line%% @@ *}; rest=${line#* @@ }
	pat=${rest%% @@ *}; rest=${rest#* @@ }
	repl=${rest%% @@ *}; what=${rest#* @@ }
	n=$((n + 1))
	mapfile -t files < <(files_of "$path")
	count=0
	[ ${#files[@]} -gt 0 ] && count=$(occurrences "${files[@]}")
	if [ "$count" != 1 ]; then
		report "NOT APPLIED  $n $path: $what (pattern found $count times, wants 1)"
		skipped=$((skipped + 1))
		continue
	fi
	file=$(cd "$scratch" && grep -lF -- "$pat" "${files[@]}")
	if [ -n "${MUTATE_CHECK:-}" ]; then
		report "APPLIES      $n $file: $what"
		continue
	fi
	cp -p "$scratch/$file" "$scratch/$file.orig"
	apply "$file"
	start=$(date +%s)
	run_tests
	rc=$?
	secs=$(( $(date +%s) - start ))
	# Back to the original, newer than the mutant's object so that make rebuilds it.
	mv "$scratch/$file.orig" "$scratch/$file" && touch "$scratch/$file"
	if ! grep -q '^== ' "$scratch/log" && [ $rc -ne 124 ]; then
		report "NOT APPLIED  $n $file: $what (does not build)"
		skipped=$((skipped + 1))
	elif [ $rc -eq 0 ]; then
		report "SURVIVED     $n $file: $what"
		survived=$((survived + 1))
	else
		by=$(sed -n 's/^FAILED: //p' "$scratch/log" | tail -1)
		[ $rc -eq 124 ] && by="timed out after ${limit}s"
		report "KILLED       $n $file: $what (by ${by:-exit $rc}, ${secs}s)"
		killed=$((killed + 1))
	fi
done < "$list"
if [ -n "${MUTATE_CHECK:-}" ]; then
	echo "$n mutations: $((n - skipped)) apply, $skipped not applied"
	rm -f "$out.new"
	[ $skipped -eq 0 ]
	exit
fi
report "$n mutations: $killed killed, $survived survived, $skipped not applied"
mv "$out.new" "$out"
[ $survived -eq 0 ] && [ $skipped -eq 0 ]
