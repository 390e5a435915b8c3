#!/bin/sh
# Runs each fuzz target (build/fuzz/TARGET) for SECONDS, one after the other, and prints one
# line per target from libFuzzer's final statistics. Exits non-zero if any target crashed,
# naming the input that did it.
#   scripts/fuzz.sh SECONDS TARGET...
set -u

seconds=$1
shift
status=0
summary=""
for t in "$@"; do
	corpus=build/fuzz/corpus/$t
	crashes=build/fuzz/crash/$t
	log=build/fuzz/$t.log
	mkdir -p "$corpus" "$crashes"
	dirs="$corpus"
	for d in fuzz/seeds/$t fuzz/regressions/$t; do
		[ -d "$d" ] && dirs="$dirs $d"
	done
	echo "fuzz $t: ${seconds} s, corpus $corpus, log $log"
	# One process, no fork: the machine has 2 cores and the targets run in turn.
	# shellcheck disable=SC2086
	build/fuzz/$t -max_total_time="$seconds" -print_final_stats=1 -rss_limit_mb=4096 \
		-artifact_prefix="$crashes/" $dirs >"$log" 2>&1
	rc=$?
	execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
	rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
	# The last status line: "#N DONE cov: E ft: F corp: C/..." (or pulse/NEW before a crash).
	last=$(grep -E '^#[0-9]+' "$log" | tail -n 1)
	cov=$(echo "$last" | sed -n 's/.* cov: \([0-9]*\).*/\1/p')
	ft=$(echo "$last" | sed -n 's/.* ft: \([0-9]*\).*/\1/p')
	corp=$(echo "$last" | sed -n 's/.* corp: \([0-9]*\).*/\1/p')
	artifact=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n 1)
	crashed=0
	if [ $rc -ne 0 ] || [ -n "$artifact" ]; then
		crashed=1
		status=1
	fi
	line="fuzz $t: ${execs:-0} executions in $seconds s (${rate:-0}/s), coverage ${cov:-0} edges, ${ft:-0} features, corpus ${corp:-0} inputs, crashes $crashed"
	echo "$line"
	summary="$summary$line
"
	if [ $crashed -ne 0 ]; then
		echo "fuzz $t: exit status $rc; crashing input: ${artifact:-none written}; see $log" >&2
		grep -E 'INVARIANT FAILED|ERROR: |SUMMARY: ' "$log" | head -n 5 >&2
	fi
done
printf '%s' "$summary"
exit $status
