#!/usr/bin/env bash
# Benchmarks the streaming secret masker (services/logship/internal/mask)
# and prints a Markdown table. Extra arguments go to `go test`, e.g.
#   bench/mask.sh -count 5 -benchtime 2s
# With -count > 1 each row shows the median run.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root/services/logship"

out="$(mktemp)"
trap 'rm -f "$out"' EXIT
go test -run '^$' -bench . -benchmem "$@" ./internal/mask/ | tee "$out" >&2

awk '
/^Benchmark/ {
	name = $1; sub(/-[0-9]+$/, "", name)
	mbs = "-"; ns = "-"; allocs = "-"
	for (i = 3; i < NF; i++) {
		if ($(i+1) == "ns/op") ns = $i
		if ($(i+1) == "MB/s") mbs = $i
		if ($(i+1) == "allocs/op") allocs = $i
	}
	if (!(name in count)) order[++n] = name
	k = ++count[name]
	runs[name, k] = ns " " mbs " " allocs
}
END {
	print "| benchmark | MB/s | ns/op | allocs/op |"
	print "|---|--:|--:|--:|"
	for (i = 1; i <= n; i++) {
		name = order[i]; c = count[name]
		# median by ns/op (insertion sort; c is small)
		for (a = 1; a <= c; a++) { split(runs[name, a], f, " "); key[a] = f[1] + 0; idx[a] = a }
		for (a = 2; a <= c; a++) for (b = a; b > 1 && key[idx[b-1]] > key[idx[b]]; b--) { t = idx[b]; idx[b] = idx[b-1]; idx[b-1] = t }
		split(runs[name, idx[int((c + 1) / 2)]], f, " ")
		printf "| %s | %s | %s | %s |\n", name, f[2], f[1], f[3]
	}
}' "$out"
