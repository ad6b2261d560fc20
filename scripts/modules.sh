#!/usr/bin/env bash
# Lists the Go modules of the repository (directories with a go.mod), one per
# line, in a stable order. `go test ./...` at the root does not reach them: every
# script that runs Go commands loops over this list.
set -euo pipefail
cd "$(dirname "$0")/.."
find . -name go.mod -not -path './bin/*' -not -path './.cache/*' -printf '%h\n' | sed 's|^\./||' | sort
