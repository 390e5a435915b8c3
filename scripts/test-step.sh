#!/bin/sh
# Runs one step of make test and records its outcome in $GM_TEST_RESULTS; never stops make test.
#   test-step.sh [--own] NAME COMMAND...
# --own: the step records its programs' results itself (make test-run); only a failure it
# did not record (a build error) is added. Exit 77 means the step ran nothing (SKIPPED).
own=
if [ "$1" = --own ]; then own=1; shift; fi
name=$1; shift
results=${GM_TEST_RESULTS:?GM_TEST_RESULTS is not set}
fails_before=$(grep -c '^FAIL ' "$results" 2>/dev/null || true)
"$@"
rc=$?
if [ -n "$own" ]; then
	fails_after=$(grep -c '^FAIL ' "$results" 2>/dev/null || true)
	if [ "$rc" -ne 0 ] && [ "$fails_after" = "$fails_before" ]; then
		echo "FAIL $name (exit $rc before any test ran)" >> "$results"
	fi
	exit 0
fi
case $rc in
0) echo "PASS $name" ;;
77) echo "SKIPPED $name" ;;
*) echo "FAIL $name (exit $rc)" ;;
esac >> "$results"
exit 0
