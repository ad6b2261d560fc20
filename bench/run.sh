#!/usr/bin/env bash
# Runs Hangar's benchmarks and prints them as Markdown tables (stdout); the raw
# `go test` output goes to stderr. `make bench` runs this script.
#
#   bench/run.sh                 # micro-benchmarks + end to end, ~6-9 minutes on 2 cores
#   BENCH_FULL=1 bench/run.sh    # the log benchmark prints 1 GiB instead of 256 MiB
#   BENCH_SKIP_E2E=1 bench/run.sh
#
# Environment:
#   BENCH_COUNT            runs of each micro-benchmark (median shown), default 3
#   BENCH_TIME             -benchtime of the micro-benchmarks, default 1s
#   BENCH_FIRST_N          A/B pairs of BenchmarkFirstOutput, default 20 (40 with BENCH_FULL)
#   HANGAR_BENCH_LOG_BYTES bytes printed by BenchmarkLogThroughput, default 268435456
#                          (256 MiB; 1073741824 with BENCH_FULL=1)
#   HANGAR_BENCH_COST_SLEEP seconds each of BenchmarkCost's 50 runs sleeps after its
#                          first line (default 20: long enough for all 50 to be in flight)
#   BENCH_SKIP_E2E         skip the end-to-end benchmarks (they need Docker)
#   BENCH_KUBE_N           A/B pairs of BenchmarkKubeFirstOutput, default 10
#   BENCH_SKIP_KUBE        skip the Kubernetes benchmarks (they boot a single-node
#                          cluster from scripts/kube/build.sh's binaries, as root;
#                          without them they skip, saying why)
#   HANGAR_KUBE_CACHE      where those binaries are (default .cache/kube/v1.34.4, else
#                          CI's /var/cache/hangar/kube/v1.34.4 when that one is built)
#
# Timings are reported, never judged: nothing here fails on a slow number.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
count="${BENCH_COUNT:-3}"
benchtime="${BENCH_TIME:-1s}"
if [[ -n "${BENCH_FULL:-}" ]]; then
	first_n="${BENCH_FIRST_N:-40}"
	log_bytes="${HANGAR_BENCH_LOG_BYTES:-1073741824}"
else
	first_n="${BENCH_FIRST_N:-20}"
	log_bytes="${HANGAR_BENCH_LOG_BYTES:-268435456}"
fi

load_start="$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo '?')"
raw="$(mktemp -d)"
trap 'rm -rf "$raw"' EXIT

# bench NAME MODULE_DIR PACKAGE [go test args...]: runs the benchmarks of a
# package; the output is kept in $raw/NAME.txt.
bench() {
	local name="$1" dir="$2" pkg="$3"
	shift 3
	echo "### $name: go test -bench in $dir $pkg $*" >&2
	(cd "$root/$dir" && go test -run '^$' -benchmem "$@" "$pkg") | tee "$raw/$name.txt" >&2
}

# rows: one tab-separated line per benchmark (median of its runs by ns/op):
# name, ns/op, MB/s, runs/s, allocs/op, other metrics ("value unit; ...").
rows() {
	awk -v label="${ROWS_LABEL:-}" '
	/^Benchmark/ {
		name = $1; sub(/-[0-9]+$/, "", name); sub(/^Benchmark/, "", name)
		if (label) { f = FILENAME; sub(/.*\//, "", f); sub(/\.txt$/, "", f); name = f "/" name }
		ns = "-"; mbs = "-"; rps = "-"; allocs = "-"; other = ""
		for (i = 3; i < NF; i += 2) {
			u = $(i+1)
			if (u == "ns/op") ns = $i
			else if (u == "MB/s") mbs = $i
			else if (u == "runs/s") rps = $i
			else if (u == "allocs/op") allocs = $i
			else if (u != "B/op") other = other (other == "" ? "" : "; ") $i " " u
		}
		if (!(name in cnt)) order[++n] = name
		k = ++cnt[name]
		run[name, k] = ns "\t" mbs "\t" rps "\t" allocs "\t" other
		key[name, k] = ns + 0
	}
	END {
		for (i = 1; i <= n; i++) {
			name = order[i]; c = cnt[name]
			for (a = 1; a <= c; a++) idx[a] = a
			for (a = 2; a <= c; a++) for (b = a; b > 1 && key[name, idx[b-1]] > key[name, idx[b]]; b--) { t = idx[b]; idx[b] = idx[b-1]; idx[b-1] = t }
			print name "\t" run[name, idx[int((c + 1) / 2)]]
		}
	}' "$@"
}

# fmt_ns formats nanoseconds for people.
fmt_ns='function fmt_ns(ns) {
	if (ns == "-") return "-"
	if (ns >= 1e9) return sprintf("%.2f s", ns / 1e9)
	if (ns >= 1e6) return sprintf("%.2f ms", ns / 1e6)
	if (ns >= 1e3) return sprintf("%.1f µs", ns / 1e3)
	return sprintf("%.0f ns", ns)
}'

bench sealedbox platform ./sealedbox/ -bench . -count "$count" -benchtime "$benchtime"
bench runenvelope platform ./runenvelope/ -bench . -count "$count" -benchtime "$benchtime"
bench intake services/gateway ./internal/intake/ -bench . -count "$count" -benchtime "$benchtime"
bench policy services/policy ./internal/engine/ -bench Evaluate -count "$count" -benchtime "$benchtime"
bench relay services/executor ./internal/relayrecv/ -bench Relay -count "$count" -benchtime 2x
bench logship services/logship ./internal/ship/ -bench Ship -count "$count" -benchtime 3x

mask_table=""
if [[ -x "$root/bench/mask.sh" ]]; then
	echo "### mask: bench/mask.sh" >&2
	mask_table="$("$root/bench/mask.sh" -count "$count" -benchtime "$benchtime" || echo "(bench/mask.sh failed: see stderr)")"
fi

if [[ -z "${BENCH_SKIP_E2E:-}" ]]; then
	bench first-output bench/e2e . -bench '^BenchmarkFirstOutput$' -benchtime "${first_n}x" -timeout 30m
	HANGAR_BENCH_LOG_BYTES="$log_bytes" bench log-throughput bench/e2e . -bench LogThroughput -benchtime 1x -timeout 60m
	bench cost bench/e2e . -bench Cost -benchtime 1x -timeout 20m
fi

# Kubernetes: needs the cluster binaries of scripts/kube/build.sh and root;
# skipped, saying why (-v prints a benchmark's skip message), without them.
# It boots its own cluster (~10-25 s).
if [[ -z "${HANGAR_KUBE_CACHE:-}" && ! -x "$root/.cache/kube/v1.34.4/bin/kube-apiserver" &&
	-x /var/cache/hangar/kube/v1.34.4/bin/kube-apiserver ]]; then
	export HANGAR_KUBE_CACHE=/var/cache/hangar/kube/v1.34.4
fi
if [[ -z "${BENCH_SKIP_E2E:-}" && -z "${BENCH_SKIP_KUBE:-}" ]]; then
	bench kube-first-output bench/e2e . -v -bench KubeFirstOutput -benchtime "${BENCH_KUBE_N:-10}x" -timeout 30m || true
fi

cpu="$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo 2>/dev/null || true)"
echo "# Hangar benchmarks"
echo
echo "$(date -u +%Y-%m-%d), $(nproc) cores ($cpu), $(go version | awk '{print $3}'), -count $count -benchtime $benchtime;"
echo "load average $load_start at the start, $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo '?') at the end (other work on the host skews every number)"
echo

echo "## Envelope intake (one run, RSA-4096 pool key)"
echo
echo "Compared with the physical limit of the step: one RSA-4096 private-key operation (intake/RSA4096PrivateKeyOp). runs/s is 10^9 / ns/op where a benchmark does not report it."
echo
ROWS_LABEL=1 rows "$raw"/sealedbox.txt "$raw"/runenvelope.txt "$raw"/intake.txt "$raw"/policy.txt | awk -F'\t' "$fmt_ns"'
	{ name[NR] = $1; ns[NR] = $2; mbs[NR] = $3; rps[NR] = $4; allocs[NR] = $5; if ($1 == "intake/RSA4096PrivateKeyOp") floor = $2 + 0 }
	END {
		print "| benchmark | ns/op | runs/s | MB/s | allocs/op | × RSA op |"
		print "|---|--:|--:|--:|--:|--:|"
		for (i = 1; i <= NR; i++) {
			r = rps[i]; if (r == "-" && ns[i] != "-" && ns[i] > 0) r = sprintf("%.0f", 1e9 / ns[i])
			else if (r != "-") r = sprintf("%.0f", r)
			x = "-"
			if (floor > 0 && name[i] ~ /\/(Intake|RSA4096PrivateKeyOp|Open4096|DecryptOAEP4096|VerifyDecrypt)$/) x = sprintf("%.2f×", ns[i] / floor)
			printf "| %s | %s | %s | %s | %s | %s |\n", name[i], fmt_ns(ns[i]), r, mbs[i], allocs[i], x
		}
	}'
echo

echo "## Output relay (executor side of a run's output, ADR 0016)"
echo
rows "$raw"/relay.txt | awk -F'\t' '
	{ name[NR] = $1; mbs[NR] = $3; if ($1 == "Relay/direct") floor = $3 + 0 }
	END {
		print "| benchmark (256 MiB printed) | MB/s | × direct pipe |"
		print "|---|--:|--:|"
		for (i = 1; i <= NR; i++) printf "| %s | %s | %s |\n", name[i], mbs[i], (floor > 0 ? sprintf("%.2f×", mbs[i] / floor) : "-")
		print ""
		print "Relay/relay: the command'"'"'s output through hangar-relay'"'"'s pipes, buffer and unix socket into the executor'"'"'s receiver (acknowledged at once). Relay/direct: the same command into a plain pipe, the limit."
	}'
echo

echo "## Logship alone (one run's 64 MiB through Ship: masking, spool, fsynced commits, S3 uploads)"
echo
rows "$raw"/logship.txt | awk -F'\t' "$fmt_ns"'
	{ name[NR] = $1; ns[NR] = $2; mbs[NR] = $3; other[NR] = $6 }
	END {
		print "| benchmark | time per run | MB/s | limit | notes |"
		print "|---|--:|--:|--:|---|"
		for (i = 1; i <= NR; i++) printf "| %s | %s | %s | %s | %s |\n", name[i], fmt_ns(ns[i]), mbs[i], (name[i] == "Ship/s3-sink" ? "≥ 300" : "-"), other[i]
		print ""
		print "Ship/s3-sink: the S3 endpoint discards what it is sent (logship alone). The other rows store into the in-process S3 server (gofakes3), whose MD5 of every object is counted too."
	}'
echo

if [[ -n "$mask_table" ]]; then
	echo "## Log masking (bench/mask.sh)"
	echo
	echo "$mask_table"
	echo
fi

if [[ -z "${BENCH_SKIP_E2E:-}" ]]; then
	echo "## End to end (hangarctl dev stack, Docker runtime, loopback)"
	echo
	echo "Compared with \`docker run --rm\` of the same image and command: the physical limit. allocs/op are the benchmark client's only and are not shown."
	echo
	awk '/^BenchmarkFirstOutput/ {
			for (i = 3; i < NF; i += 2) v[$(i+1)] = $i
			printf "| side | to first output line (median) | to exit (median) |\n|---|--:|--:|\n"
			printf "| hangar (`hangarctl run submit --follow`) | %.0f ms | %.0f ms |\n", v["hangar-first-ms"], v["hangar-exit-ms"]
			printf "| docker run | %.0f ms | %.0f ms |\n", v["docker-first-ms"], v["docker-exit-ms"]
			printf "| docker run with the executor'"'"'s container settings (reference) | %.0f ms | %.0f ms |\n", v["hardened-first-ms"], v["hardened-exit-ms"]
			if ("baseline-first-ms" in v) printf "| baseline hangarctl (HANGAR_BENCH_BASELINE) | %.0f ms | %.0f ms |\n", v["baseline-first-ms"], v["baseline-exit-ms"]
			printf "\n"
			printf "| ratio hangar / docker run, per pair (%d pairs, A/B interleaved) | median | min | max | limit |\n|---|--:|--:|--:|--:|\n", v["pairs"]
			printf "| to first output line | %.2f× | %.2f× | %.2f× | ≤ 1.20× |\n", v["ratio-first-p50"], v["ratio-first-min"], v["ratio-first-max"]
			printf "| to exit | %.2f× | %.2f× | %.2f× | ≤ 1.20× |\n", v["ratio-exit-p50"], v["ratio-exit-min"], v["ratio-exit-max"]
			printf "\nhangar / docker run with the executor'"'"'s container settings, median per pair: %.2f× to first output line, %.2f× to exit (what Hangar adds to its hardened container'"'"'s own start).\n", v["ratio-hardened-first-p50"], v["ratio-hardened-exit-p50"]
		}' "$raw"/first-output.txt
	echo
	echo "Both sides from starting a process: hangarctl (sealing, publishing, intake, policy, dispatch, workspace, container, log through logship's Tail) and the docker CLI."
	echo
	rows "$raw"/log-throughput.txt | awk -F'\t' -v bytes="$log_bytes" "$fmt_ns"'
		{ name[NR] = $1; ns[NR] = $2; mbs[NR] = $3; other[NR] = $6; if ($1 == "LogThroughput/docker-run") floor = $3 + 0 }
		END {
			printf "| benchmark (%d MiB printed) | time | MB/s | × docker run (MB/s) | notes |\n", bytes / 1048576
			print "|---|--:|--:|--:|---|"
			for (i = 1; i <= NR; i++) {
				x = (floor > 0 && mbs[i] != "-") ? sprintf("%.2f×", mbs[i] / floor) : "-"
				printf "| %s | %s | %s | %s | %s |\n", name[i], fmt_ns(ns[i]), mbs[i], x, other[i]
				if (name[i] == "LogThroughput/hangar") h = mbs[i] + 0
				if (name[i] == "LogThroughput/docker-run-attached") att = mbs[i] + 0
			}
			print ""
			if (floor > 0 && h > 0) printf "Limits: hangar ≥ 0.50× docker run (here %.2f×) and ≥ 2× Docker'"'"'s attached path (here %.2f×).\n\n", h / floor, (att > 0 ? h / att : 0)
			print "MB/s is 10^6 bytes printed per second, from publishing the envelope (Hangar) or starting the CLI (Docker) until the final S3 object is uploaded (Hangar) or the container has exited (Docker)."
		}'
fi

if [[ -z "${BENCH_SKIP_E2E:-}" ]]; then
	echo
	echo "## Cost as work grows (real binaries, Docker runtime, loopback)"
	echo
	awk '/^BenchmarkCost/ {
			for (i = 3; i < NF; i += 2) v[$(i+1)] = $i
			print "| measure | value | goal |"
			print "|---|--:|--:|"
			printf "| runs in flight at once on one executor with 50 slots (from the events); each finished exactly once | %d of 50 | 50 |\n", v["max-in-flight"]
			printf "| time from publish to first output line (logship Tail), p50 | %.0f ms | - |\n", v["first-ms-p50"]
			printf "| time from publish to first output line, p99 | %.0f ms | - |\n", v["first-ms-p99"]
			printf "| executor RSS per concurrent run: (peak - idle) / 50 | %.2f MiB | ≤ 2 MiB |\n", v["executor-MiB/run"]
			printf "| logship RSS per concurrent run: (peak - idle) / 50 | %.2f MiB | ≤ 2 MiB |\n", v["logship-MiB/run"]
			printf "| gateway RSS per queued run: (RSS with 1,000 queued - idle) / 1000 | %.1f KiB | ≤ 20 KiB |\n", v["gateway-KiB/queued-run"]
			printf "\nVmRSS from /proc/PID/status: executor %.0f MiB idle, %.0f MiB peak (VmHWM %.0f); logship %.0f idle, %.0f peak (VmHWM %.0f); gateway %.0f idle, %.0f with 1,000 runs queued.\n", v["executor-idle-MiB"], v["executor-peak-MiB"], v["executor-hwm-MiB"], v["logship-idle-MiB"], v["logship-peak-MiB"], v["logship-hwm-MiB"], v["gateway-idle-MiB"], v["gateway-queued-MiB"]
		}' "$raw"/cost.txt
fi

# kube_skip FILE: the reason a Kubernetes benchmark skipped, from its -v output.
kube_skip() {
	grep -m1 -o 'Kubernetes[^:]*: .*\|the Kubernetes binaries are not built.*\|the Kubernetes cluster tests boot a kubelet and need root\|HANGAR_KUBE_TESTS=.*' "$1" 2>/dev/null || echo 'failed or not run: see stderr'
}
if [[ -z "${BENCH_SKIP_E2E:-}" && -z "${BENCH_SKIP_KUBE:-}" ]]; then
	echo
	echo "## Kubernetes: start to first output line (real single-node cluster, A/B interleaved)"
	echo
	if grep -q '^BenchmarkKubeFirstOutput.*pairs' "$raw/kube-first-output.txt" 2>/dev/null; then
		awk '/^BenchmarkKubeFirstOutput.*pairs/ {
			for (i = 3; i < NF; i += 2) v[$(i+1)] = $i
			printf "| side | to first output line (median) | to exit (median) |\n|---|--:|--:|\n"
			printf "| hangar (`hangarctl run submit --follow`, executor with the kubernetes runtime) | %.0f ms | %.0f ms |\n", v["hangar-first-ms"], v["hangar-exit-ms"]
			printf "| `kubectl run --rm -i --restart=Never` | %.0f ms | %.0f ms |\n\n", v["kubectl-first-ms"], v["kubectl-exit-ms"]
			printf "| ratio hangar / kubectl run, per pair (%d pairs, A/B interleaved) | median | min | max |\n|---|--:|--:|--:|\n", v["pairs"]
			printf "| to first output line | %.2f× | %.2f× | %.2f× |\n", v["ratio-first-p50"], v["ratio-first-min"], v["ratio-first-max"]
			printf "| to exit | %.2f× | %.2f× | %.2f× |\n", v["ratio-exit-p50"], v["ratio-exit-min"], v["ratio-exit-max"]
		}' "$raw/kube-first-output.txt"
		echo
		echo "Both sides from starting a process, the same image (static busybox, never pulled) and command (/bin/sh -c 'echo hello'). kubectl tries that printed nothing (attached after the echo) are retried, not counted: $(awk '/^BenchmarkKubeFirstOutput.*pairs/ { for (i = 3; i < NF; i += 2) if ($(i+1) == "kubectl-missed") print $i }' "$raw/kube-first-output.txt") here."
	else
		echo "(BenchmarkKubeFirstOutput skipped: $(kube_skip "$raw/kube-first-output.txt"))"
	fi
fi
