#!/usr/bin/env bash
# Runs a command in every Go module: scripts/for-modules.sh go vet ./...
# Stops at the first module whose command fails, naming it.
set -euo pipefail
cd "$(dirname "$0")/.."
for m in $(scripts/modules.sh); do
  echo "== $m: $*" >&2
  (cd "$m" && "$@") || { echo "FAILED in module $m: $*" >&2; exit 1; }
done
