#!/bin/sh
# Installs the Debian packages libgmem needs to build, test and benchmark.
# Run as root it installs what is missing; otherwise it names what to install.
set -eu

# clang and libclang-rt-14-dev (libFuzzer) serve make fuzz only.
PACKAGES="gcc make pkg-config liburcu-dev libcriterion-dev binutils clang libclang-rt-14-dev"

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
