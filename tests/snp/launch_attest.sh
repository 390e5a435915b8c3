#!/bin/sh
# An SNP launch end to end: gmem-vm --vm snp writes its guest's report, and gmem-attest
# verifies it against the digest gmem-measure computes offline from the same options.
#
#   tests/snp/launch_attest.sh BUILD_DIR
set -eu

BUILD=${1:-build}
work=$(mktemp -d /tmp/gmem-snp-launch-XXXXXX)
trap 'rm -rf "$work"' EXIT
GMEM_PLATFORM_KEY=$work/platform.pem
export GMEM_PLATFORM_KEY

for opts in "" "--vcpus 2 --memory 32M"; do
	# shellcheck disable=SC2086 # the options are words
	"$BUILD/bin/gmem-vm" -q --vm snp --report "$work/r.bin" $opts
	# shellcheck disable=SC2086
	digest=$("$BUILD/bin/gmem-measure" $opts)
	"$BUILD/bin/gmem-attest" verify "$work/r.bin" --measurement "$digest" >"$work/verdict"
	# Another launch's digest must not verify.
	case $digest in
	0*) other=1${digest#?} ;;
	*) other=0${digest#?} ;;
	esac
	if "$BUILD/bin/gmem-attest" verify "$work/r.bin" --measurement "$other" >/dev/null 2>&1; then
		echo "snp-launch: a report verified against another digest ($opts)" >&2
		exit 1
	fi
	rm -f "$work/r.bin"
done
echo "snp-launch: gmem-vm --vm snp reports verify against gmem-measure's digest"
