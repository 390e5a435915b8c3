#!/bin/sh
# The end of make test: every failure and every skipped group, one line each, then the counts.
# "N passed, N failed, N skipped" counts steps (programs) passed and failed and the skipped
# groups listed above it; exit status 1 when a step failed or nothing was recorded.
results=${1:?usage: test-summary.sh RESULTS-FILE}
if [ ! -s "$results" ]; then
	echo "test summary: nothing was recorded in $results"
	exit 1
fi
echo "== summary ($results)"
grep '^FAIL ' "$results"
# A program that ran nothing at all is a skipped group of its own, whatever it printed.
sed -n 's/^SKIPPED \(.*\)/SKIP \1: ran no test at all (every test skipped, reasons above)/p' \
	"$results" > "$results.steps"
# The same skip from several runs is one line, with how many times it was reported.
{ grep '^SKIP ' "$results"; cat "$results.steps"; } | sort | uniq -c |
	awk '{ n = $1; sub(/^ *[0-9]+ /, ""); print (n > 1 ? $0 " [x" n "]" : $0) }' > "$results.skips"
cat "$results.skips"
passed=$(grep -c '^PASS ' "$results")
failed=$(grep -c '^FAIL ' "$results")
skipped=$(grep -c . "$results.skips")
rm -f "$results.steps" "$results.skips"
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
