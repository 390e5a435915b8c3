#!/bin/sh
# Every gm_* function in gmem.h has a man page, and every page formats without a warning.
set -eu
cd "$(dirname "$0")/.."

fail=0
for fn in $(grep -o '\bgm_[a-z0-9_]*(' include/gmem/gmem.h | tr -d '(' | sort -u); do
	[ -f "man/man3/$fn.3" ] || { echo "check-man: $fn has no man page (man/man3/$fn.3)"; fail=1; }
done
cd man
for page in man3/*.3; do
	link=$(sed -n 's/^\.so //p' "$page")
	if [ -n "$link" ] && [ ! -f "$link" ]; then
		echo "check-man: $page points to $link, which does not exist"; fail=1; continue
	fi
	# groff has no -Werror: any diagnostic at all fails the page.
	out=$(groff -man -Tutf8 -ww -z "$page" 2>&1) || true
	[ -z "$out" ] || { echo "check-man: $page: $out"; fail=1; }
done
[ $fail -eq 0 ] && echo "man: $(ls man3/*.3 | wc -l) pages, every gm_* call has one, no groff warnings"
exit $fail
