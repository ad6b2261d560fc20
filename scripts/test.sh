#!/usr/bin/env bash
# Runs every test of every module with the race detector, each module on its own
# (GOWORK=off), so that each go.mod is proven complete. Tests that need Docker,
# Mosquitto or git fail with what to install; scripts/setup.sh (run by `make
# test`) installs all of it.
# Extra arguments go to `go test` (e.g. scripts/test.sh -run TestX).
set -euo pipefail
cd "$(dirname "$0")/.."
export GOWORK=off
status=0
for m in $(scripts/modules.sh); do
  echo "== go test $m" >&2
  if ! (cd "$m" && go test -race -count=1 -timeout 30m "$@" ./...); then
    echo "FAILED: tests of module $m" >&2
    status=1
  fi
done
exit $status
