#!/bin/sh
# gmem-attest's verdicts and exit statuses (0 verified, 1 refused, 2 bad usage or input) on
# a report of known fields (attest-make-report), with platform keys in a scratch directory.
#   tests/attest/check.sh [BUILD_DIR]
set -u
cd "$(dirname "$0")/../.."
BUILD=${1:-build}
ATTEST=$BUILD/bin/gmem-attest
MAKE_REPORT=$BUILD/tests/attest-make-report

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# Never the user's own key.
GMEM_PLATFORM_KEY=$work/platform.pem
export GMEM_PLATFORM_KEY

failures=0
checks=0
# expect STATUS TEXT CMD...: CMD exits with STATUS and its stdout or stderr holds TEXT.
expect() {
	want=$1 text=$2
	shift 2
	checks=$((checks + 1))
	"$@" >"$work/out" 2>&1
	got=$?
	if [ "$got" -ne "$want" ]; then
		echo "check-attest: '$*' exited $got, not $want:"; sed 's/^/  /' "$work/out"
		failures=$((failures + 1))
	elif ! grep -qF -- "$text" "$work/out"; then
		echo "check-attest: '$*' did not say '$text':"; sed 's/^/  /' "$work/out"
		failures=$((failures + 1))
	fi
}

# A copy of the report with one bit of one byte flipped: flip_byte SRC DST OFFSET.
flip_byte() {
	cp "$1" "$2"
	b=$(od -An -tu1 -j "$3" -N1 "$1" | tr -d ' ')
	printf "\\$(printf '%03o' $((b ^ 1)))" | dd of="$2" bs=1 seek="$3" conv=notrunc status=none
}

measurement=$(i=0; while [ $i -lt 48 ]; do printf '%02x' $i; i=$((i + 1)); done)
report_data=$(i=128; while [ $i -lt 192 ]; do printf '%02x' $i; i=$((i + 1)); done)
host_data=$(i=0; while [ $i -lt 32 ]; do printf 'a5'; i=$((i + 1)); done)
other=$(printf '%096d' 0)

"$MAKE_REPORT" "$work/r.bin" || { echo "check-attest: attest-make-report failed"; exit 1; }

expect 0 "BEGIN PUBLIC KEY" "$ATTEST" key
"$ATTEST" key >"$work/platform.pub"
expect 0 "measurement:       $measurement" "$ATTEST" verify "$work/r.bin"
expect 0 "signing key:       7 (none" "$ATTEST" verify "$work/r.bin"
expect 0 "verified:" "$ATTEST" verify "$work/r.bin" --measurement "$measurement" \
	--report-data "$report_data" --host-data "$host_data"
# Report data shorter than 64 bytes stands for itself followed by zeros.
expect 1 "report data differs" "$ATTEST" verify "$work/r.bin" --report-data 8081
expect 0 "verified:" "$ATTEST" verify "$work/r.bin" --key "$work/platform.pub"
# Hex in either case, with or without 0x.
expect 0 "verified:" "$ATTEST" verify "$work/r.bin" --measurement "0x$(echo "$measurement" | tr a-f A-F)"
expect 1 "measurement differs: report has $measurement, expected $other" \
	"$ATTEST" verify "$work/r.bin" --measurement "$other"
expect 1 "host data differs" "$ATTEST" verify "$work/r.bin" --host-data "$(printf '%064d' 0)"

# A changed byte of the measurement (0x90), of the policy (0x08), of R (0x2a0).
flip_byte "$work/r.bin" "$work/m.bin" $((0x90))
expect 1 "signature does not verify" "$ATTEST" verify "$work/m.bin"
flip_byte "$work/r.bin" "$work/p.bin" $((0x08))
expect 1 "signature does not verify" "$ATTEST" verify "$work/p.bin" --key "$work/platform.pub"
flip_byte "$work/r.bin" "$work/s.bin" $((0x2a0))
expect 1 "signature does not verify" "$ATTEST" verify "$work/s.bin"

# Another platform's key.
GMEM_PLATFORM_KEY=$work/other.pem "$ATTEST" key >"$work/other.pub"
expect 1 "signature does not verify" "$ATTEST" verify "$work/r.bin" --key "$work/other.pub"
expect 1 "signature does not verify" env GMEM_PLATFORM_KEY="$work/other.pem" \
	"$ATTEST" verify "$work/r.bin"

# A platform key that is not a key: refused, and left as it was.
echo "not a key" >"$work/corrupt.pem"
expect 1 "not a PEM ECDSA P-384 private key" env GMEM_PLATFORM_KEY="$work/corrupt.pem" \
	"$ATTEST" key
expect 1 "not a PEM ECDSA P-384 private key" env GMEM_PLATFORM_KEY="$work/corrupt.pem" \
	"$ATTEST" verify "$work/r.bin"
checks=$((checks + 1))
[ "$(cat "$work/corrupt.pem")" = "not a key" ] ||
	{ echo "check-attest: the corrupt key file was replaced"; failures=$((failures + 1)); }

# Bad usage, unreadable or wrong-sized files: 2.
head -c 100 "$work/r.bin" >"$work/short.bin"
cat "$work/r.bin" "$work/r.bin" >"$work/long.bin"
expect 2 "100 bytes; an ATTESTATION_REPORT is 1184" "$ATTEST" verify "$work/short.bin"
expect 2 "more than 1184 bytes" "$ATTEST" verify "$work/long.bin"
expect 2 "No such file" "$ATTEST" verify "$work/missing.bin"
expect 2 "no report file" "$ATTEST" verify
expect 2 "usage:" "$ATTEST"
expect 2 "usage:" "$ATTEST" sign "$work/r.bin"
expect 2 "unknown option --policy" "$ATTEST" verify "$work/r.bin" --policy 1
expect 2 "--measurement needs a value" "$ATTEST" verify "$work/r.bin" --measurement
expect 2 "want 48 bytes as hex" "$ATTEST" verify "$work/r.bin" --measurement 0011
expect 2 "is not hex" "$ATTEST" verify "$work/r.bin" --measurement "$(printf '%096s' x)"
expect 2 "want up to 64 bytes" "$ATTEST" verify "$work/r.bin" --report-data "${report_data}00"
expect 2 "not a PEM ECDSA P-384 public key" "$ATTEST" verify "$work/r.bin" --key "$work/r.bin"
expect 2 "No such file" "$ATTEST" verify "$work/r.bin" --key "$work/missing.pub"
expect 0 "usage:" "$ATTEST" --help

if [ "$failures" -ne 0 ]; then
	echo "check-attest: $failures of $checks checks failed"
	exit 1
fi
echo "attest: gmem-attest key and verify, $checks checks: verdicts, reasons and exit statuses as documented"
