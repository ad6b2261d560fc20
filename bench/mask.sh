#!/usr/bin/env bash
# Benchmarks the streaming secret masker (services/logship/internal/mask)
# and prints a Markdown table. Extra arguments go to `go test`, e.g.
#   bench/mask.sh -count 5 -benchtime 2s
# With -count > 1 each row shows the median run.
#
# Rows: BenchmarkMask (the masker) and BenchmarkReplacer (strings.Replacer over
# the same patterns, each write on its own: the naive reference) on the same
# inputs and write sizes, in the same run; "× Replacer" is the masker's MB/s
# over the Replacer's for the same input and write size. BenchmarkNewSet
# builds the compiled set once per run and reports the memory it holds
# (MiB-held) and allocates while building (MiB-built).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root/services/logship"

out="$(mktemp)"
trap 'rm -f "$out"' EXIT
go test -run '^$' -bench . -benchmem "$@" ./internal/mask/ | tee "$out" >&2

awk '
/^Benchmark/ {
	name = $1; sub(/-[0-9]+$/, "", name); sub(/^Benchmark/, "", name)
	mbs = "-"; ns = "-"; allocs = "-"; other = ""
	for (i = 3; i < NF; i += 2) {
		u = $(i+1)
		if (u == "ns/op") ns = $i
		else if (u == "MB/s") mbs = $i
		else if (u == "allocs/op") allocs = $i
		else if (u != "B/op") other = other (other == "" ? "" : "; ") $i " " u
	}
	if (!(name in count)) order[++n] = name
	k = ++count[name]
	runs[name, k] = ns "\t" mbs "\t" allocs "\t" other
}
END {
	for (i = 1; i <= n; i++) {
		name = order[i]; c = count[name]
		# median by ns/op (insertion sort; c is small)
		for (a = 1; a <= c; a++) { split(runs[name, a], f, "\t"); key[a] = f[1] + 0; idx[a] = a }
		for (a = 2; a <= c; a++) for (b = a; b > 1 && key[idx[b-1]] > key[idx[b]]; b--) { t = idx[b]; idx[b] = idx[b-1]; idx[b-1] = t }
		med[name] = runs[name, idx[int((c + 1) / 2)]]
	}
	print "| benchmark | MB/s | × Replacer | ns/op | allocs/op | notes |"
	print "|---|--:|--:|--:|--:|---|"
	for (i = 1; i <= n; i++) {
		name = order[i]
		split(med[name], f, "\t")
		x = "-"
		if (name ~ /^Mask\/terraform/) {
			r = name; sub(/^Mask/, "Replacer", r)
			if (r in med) { split(med[r], g, "\t"); if (g[2] + 0 > 0) x = sprintf("%.1f×", f[2] / g[2]) }
		}
		printf "| %s | %s | %s | %s | %s | %s |\n", name, f[2], x, f[1], f[3], f[4]
	}
}' "$out"
