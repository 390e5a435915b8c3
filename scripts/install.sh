#!/bin/sh
# Moves a staged installation (make install's build tree) under DESTDIR, all or nothing.
#
#   scripts/install.sh STAGE [DESTDIR]
#
# Every file is first copied next to its destination under a temporary name; only when all
# the copies exist are they renamed into place, each rename atomic. A failed copy removes
# the copies and the directories this run created, so the destination is as before.
set -eu

stage=$1
dest=${2:-}
suffix=".gmem-install.$$"
made_dirs=""
copies=""

rollback() {
	for f in $copies; do rm -f "$f"; done
	# Created parents come before their children: remove the children first.
	for d in $(echo "$made_dirs" | tr ' ' '\n' | sort -r); do rmdir "$d" 2>/dev/null || true; done
	echo "install: nothing installed under '${dest:-/}': $1" >&2
	exit 1
}

# mkdir -p that remembers which directories it created.
make_dir() {
	[ -d "$1" ] && return 0
	make_dir "$(dirname "$1")"
	mkdir "$1" 2>/dev/null || rollback "cannot create directory $1"
	made_dirs="$made_dirs $1"
}

files=$(cd "$stage" && find . \( -type f -o -type l \) | sed 's|^\./||' | sort)
[ -n "$files" ] || rollback "the stage '$stage' is empty"

for f in $files; do
	target="$dest/$f"
	if [ -d "$target" ] && [ ! -L "$target" ]; then
		rollback "$target is a directory"
	fi
	make_dir "$(dirname "$target")"
	cp -P "$stage/$f" "$target$suffix" 2>/dev/null || rollback "cannot write $target"
	copies="$copies $target$suffix"
done
for f in $files; do
	mv -fT "$dest/$f$suffix" "$dest/$f"
	echo "installed $dest/$f"
done
