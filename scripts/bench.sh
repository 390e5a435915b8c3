#!/bin/sh
# Runs the benchmark binaries given as arguments; prints the table, writes results.{tsv,json,svg}.
#
# Each binary prints tab-separated records on stdout (see bench/bench.h) and
# its progress on stderr. A target that is not met is reported, not failed:
# the exit status only says whether every benchmark ran to the end.
set -u

OUT=${BENCH_OUT:-build/bench}
TSV=$OUT/results.tsv
JSON=$OUT/results.json
SVG=$OUT/results.svg

if [ $# -eq 0 ]; then
	echo "usage: $0 <benchmark binary>...  |  $0 --report  (redraw from $TSV)" >&2
	exit 2
fi
mkdir -p "$OUT"
status=0
if [ "$1" = "--report" ]; then
	# Table, JSON and plot again from the records of the last run.
	[ -r "$TSV" ] || { echo "bench: no $TSV" >&2; exit 2; }
	grep -q '^failed' "$TSV" && status=1
else
	: >"$TSV"
	for b in "$@"; do
		name=$(basename "$b")
		echo "bench: running $name" >&2
		# Progress (stderr) goes straight to the terminal; records are kept.
		if ! "$b" >"$OUT/$name.tsv"; then
			echo "bench: $name failed" >&2
			printf 'failed\t%s\n' "$name" >>"$OUT/$name.tsv"
			status=1
		fi
		cat "$OUT/$name.tsv" >>"$TSV"
	done
fi

# A target whose operator is not <=, < or >= (or - for an informational row) cannot be
# judged: an error, never read as >=. Same for a verdict the table does not know.
bad=$(awk -F '\t' '$1 == "target" && ($5 !~ /^(<=|<|>=)$/ && !($5 == "-" && $7 == "info") ||
	$7 !~ /^(met|not-met|skipped|info)$/) { print "  figure " $2 ": operator \"" $5 "\", verdict \"" $7 "\"" }' "$TSV")
if [ -n "$bad" ]; then
	echo "bench: targets that cannot be judged:" >&2
	echo "$bad" >&2
	status=1
fi

kernel=$(uname -r)
cpus=$(nproc 2>/dev/null || echo 0)
date=$(date -u +%Y-%m-%dT%H:%M:%SZ)

# The table, on stdout.
awk -F '\t' -v kernel="$kernel" -v cpus="$cpus" '
function fmt(v, unit) {
	if (unit == "bytes")
		return sprintf("%d B", v)
	if (v > 0 && v < 0.01)
		return sprintf("%.3g", v)
	return sprintf(v < 10 ? "%.2f" : "%.1f", v)
}
function cell(f, impl) {
	if (!((f, impl) in best))
		return "-"
	if (unit[f] == "bytes")
		return fmt(best[f, impl], "bytes")
	return fmt(best[f, impl], unit[f]) " / " fmt(med[f, impl], unit[f])
}
$1 == "figure" { if (!($2 in title)) ids[n++] = $2; title[$2] = $3 }
$1 == "result" { unit[$2] = $4; med[$2, $3] = $5; best[$2, $3] = $6 }
$1 == "target" {
	metric[$2] = $3; value[$2] = $4; op[$2] = $5; limit[$2] = $6
	status[$2] = $7; tnote[$2] = $8
}
$1 == "failed" { failed[nf++] = $2 }
END {
	# Figures in their own order (1, 2, 2b, 3, 4), whatever order the binaries ran in.
	for (i = 0; i < n; i++)
		for (j = i + 1; j < n; j++)
			if (ids[j] < ids[i]) { t = ids[i]; ids[i] = ids[j]; ids[j] = t }
	printf "\nlibgmem benchmarks  (Linux %s, %d CPUs)\n", kernel, cpus
	print "times: CPU time of the measuring thread in ms, best / median of the repetitions (elapsed time is in"
	print "results.json); targets are judged on the best: noise here only ever adds time (neighbours"
	print "on the 2 CPUs, host faults on pages the balloon gave back). ratio = libgmem / peer.\n"
	# plain: the same access through a plain pointer, the peer of the stage-2 figures (s1*).
	fmtrow = "%-4s %-68s %-18s %-18s %-18s %-18s %-26s %-10s %s\n"
	printf fmtrow, "fig", "figure", "libgmem", "kernel", "memfd", "plain", "ratio", "target", "result"
	for (i = 0; i < n; i++) {
		f = ids[i]
		if (!(f in status))
			r = "-"
		else if (status[f] == "skipped")
			r = "-"
		else if (metric[f] ~ /percent/)
			r = sprintf("%.5f%% of memory", value[f])
		else
			r = sprintf("%s %.3fx", metric[f], value[f])
		tg = (!(f in op) || op[f] == "-") ? "-" : op[f] " " limit[f] (metric[f] ~ /percent/ ? "%" : "x")
		res = status[f] == "met" ? "met" : status[f] == "not-met" ? "NOT MET" : status[f]
		if (!(f in status))
			res = "no result: its benchmark failed"
		if (status[f] == "skipped" || status[f] == "not-met" || status[f] == "info")
			res = res " (" tnote[f] ")"
		printf fmtrow, f, title[f], cell(f, "libgmem"), cell(f, "kernel"), cell(f, "memfd"),
			cell(f, "plain"), r, tg, res
	}
	for (i = 0; i < nf; i++)
		printf "FAILED: %s did not run to the end (see above)\n", failed[i]
	print ""
}' "$TSV"

# JSON: every sample, so that later runs can be compared with this one.
awk -F '\t' -v kernel="$kernel" -v cpus="$cpus" -v date="$date" '
function q(s) { gsub(/\\/, "\\\\", s); gsub(/"/, "\\\"", s); return "\"" s "\"" }
function num(s) { return s == "-" || s == "" ? "null" : s + 0 }
$1 == "figure" { if (!($2 in title)) ids[n++] = $2; title[$2] = $3 }
$1 == "result" {
	key = $2
	wall = NF >= 10 ? sprintf(", \"clock\": \"thread-cpu\", \"wall\": {\"median\": %s, \"best\": %s, \"samples\": [%s]}",
		num($8), num($9), $10) : ""
	res[key] = res[key] (res[key] == "" ? "" : ",\n") sprintf("        %s: {\"unit\": %s, \"median\": %s, \"best\": %s, \"samples\": [%s]%s}",
		q($3), q($4), num($5), num($6), $7, wall)
}
$1 == "target" {
	tgt[$2] = sprintf("{\"metric\": %s, \"value\": %s, \"op\": %s, \"limit\": %s, \"status\": %s, \"note\": %s}",
		q($3), num($4), q($5), num($6), q($7), q($8))
}
$1 == "failed" { failed[nf++] = $2 }
END {
	for (i = 0; i < n; i++)
		for (j = i + 1; j < n; j++)
			if (ids[j] < ids[i]) { t = ids[i]; ids[i] = ids[j]; ids[j] = t }
	printf "{\n  \"date\": %s,\n  \"kernel\": %s,\n  \"cpus\": %d,\n  \"figures\": [\n", q(date), q(kernel), cpus
	for (i = 0; i < n; i++) {
		f = ids[i]
		printf "    {\n      \"id\": %s,\n      \"title\": %s,\n      \"results\": {\n%s\n      },\n      \"target\": %s\n    }%s\n",
			q(f), q(title[f]), res[f], (f in tgt) ? tgt[f] : "null", i + 1 < n ? "," : ""
	}
	printf "  ],\n  \"failed\": ["
	for (i = 0; i < nf; i++)
		printf "%s%s", i ? ", " : "", q(failed[i])
	printf "]\n}\n"
}' "$TSV" >"$JSON"

# SVG: per figure, each peer relative to the kernel (log scale) with the target as a line.
awk -F '\t' -v kernel="$kernel" -v date="$date" '
function x(v) {
	if (v < lo) v = lo
	if (v > hi) v = hi
	return left + (log(v) - log(lo)) / (log(hi) - log(lo)) * plotw
}
function esc(s) { gsub(/&/, "\\&amp;", s); gsub(/</, "\\&lt;", s); gsub(/>/, "\\&gt;", s); return s }
$1 == "figure" { if (!($2 in title)) ids[n++] = $2; title[$2] = $3 }
$1 == "result" { unit[$2] = $4; best[$2, $3] = $6 }
$1 == "target" { metric[$2] = $3; value[$2] = $4; op[$2] = $5; limit[$2] = $6; status[$2] = $7; tnote[$2] = $8 }
END {
	for (i = 0; i < n; i++)
		for (j = i + 1; j < n; j++)
			if (ids[j] < ids[i]) { t = ids[i]; ids[i] = ids[j]; ids[j] = t }
	lo = 1e-4; hi = 1000; left = 130; plotw = 600; barh = 14; gap = 34; top = 60
	split("libgmem kernel memfd plain", impls, " ")
	color["libgmem"] = "#1f77b4"; color["kernel"] = "#7f7f7f"; color["memfd"] = "#bcbd22"; color["plain"] = "#9467bd"
	# Each figure takes a title line, one bar per peer that ran (at least one line), and a gap.
	yend = top
	for (i = 0; i < n; i++) {
		nb[ids[i]] = 0
		for (m = 1; m <= 4; m++)
			if ((ids[i], impls[m]) in best)
				nb[ids[i]]++
		yend += (nb[ids[i]] ? nb[ids[i]] : 1) * barh + gap
	}
	height = yend + 60
	printf "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"1060\" height=\"%d\" font-family=\"sans-serif\" font-size=\"11\">\n", height
	printf "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n"
	printf "<text x=\"10\" y=\"20\" font-size=\"14\">libgmem benchmarks: best run relative to the kernel guest_memfd, or to plain access (log scale, lower is better)</text>\n"
	printf "<text x=\"10\" y=\"38\" fill=\"#555\">Linux %s, %s. Red line: target. Figure 4 compares heap metadata with struct page.</text>\n", esc(kernel), date
	# Grid and axis first, so that bars and labels draw over them.
	printf "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"black\"/>\n", left, yend, left + plotw, yend
	for (d = lo; d <= hi * 1.0001; d *= 10) {
		printf "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\" stroke=\"#ccc\"/>\n", x(d), top, x(d), yend
		printf "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">%g</text>\n", x(d), yend + 14, d
	}
	printf "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">relative to the kernel, or to plain access (1 = the same)</text>\n", left + plotw / 2, yend + 30
	y = top
	for (i = 0; i < n; i++) {
		f = ids[i]
		printf "<text x=\"10\" y=\"%d\" font-weight=\"bold\">%s: %s</text>\n", y + 4, f, esc(title[f])
		y += 10
		# The reference: the kernel where it ran, else the plain peer of the stage-2 figures.
		ref = ((f, "kernel") in best) ? "kernel" : ((f, "plain") in best) ? "plain" : "memfd"
		if (!((f, ref) in best) || best[f, ref] <= 0) {
			printf "<text x=\"%d\" y=\"%d\" fill=\"#a00\">%s: %s</text>\n", left, y + barh, ((f, "libgmem") in best) ? "no peer to draw against" : "no result", esc(tnote[f])
			y += (nb[f] ? nb[f] : 1) * barh + gap - 10
			continue
		}
		k = best[f, ref]
		ytop = y
		for (m = 1; m <= 4; m++) {
			impl = impls[m]
			if (!((f, impl) in best))
				continue
			rel = best[f, impl] / k
			printf "<text x=\"%d\" y=\"%d\" text-anchor=\"end\">%s</text>\n", left - 6, y + barh - 3, impl
			printf "<rect x=\"%d\" y=\"%d\" width=\"%.1f\" height=\"%d\" fill=\"%s\"/>\n", left, y, x(rel) - left, barh - 2, color[impl]
			printf "<text x=\"%.1f\" y=\"%d\">%.3gx (%.4g %s)</text>\n", x(rel) + 4, y + barh - 3, rel, best[f, impl], unit[f]
			y += barh
		}
		# The target as a position on the same scale: value is proportional to libgmem/kernel.
		if (status[f] == "met" || status[f] == "not-met") {
			lrel = best[f, "libgmem"] / k
			if (metric[f] ~ /^kernel\//)
				line = 1 / limit[f]
			else
				line = limit[f] * lrel / value[f]
			printf "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\" stroke=\"red\" stroke-dasharray=\"4,2\"/>\n", x(line), ytop - 2, x(line), y + 2
			printf "<text x=\"%d\" y=\"%d\" fill=\"%s\">target %s %s%s: %s</text>\n", left + plotw + 140, y - barh, status[f] == "met" ? "#070" : "#a00", esc(op[f]), limit[f], metric[f] ~ /percent/ ? "%" : "x", status[f]
		} else if (status[f] == "skipped") {
			printf "<text x=\"%d\" y=\"%d\" fill=\"#a00\">skipped</text>\n", left + plotw + 140, y - barh
		}
		y += gap - 10
	}
	printf "</svg>\n"
}' "$TSV" >"$SVG"

echo "bench: results in $TSV, $JSON and $SVG" >&2
exit $status
