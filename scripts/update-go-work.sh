#!/usr/bin/env bash
# Regenerates go.work from the modules of the repository. CI checks it is current.
set -euo pipefail
cd "$(dirname "$0")/.."
{
  echo "go 1.26.0"
  echo
  echo "use ("
  for m in $(scripts/modules.sh); do echo "	./$m"; done
  echo ")"
  echo
  echo "// pebble (via cockroachdb/errors) requires the 2023 monolithic genproto, whose"
  echo "// googleapis packages now live in their own modules: in the workspace's"
  echo "// unpruned graph both would provide them. Each module alone is unaffected."
  echo "replace google.golang.org/genproto => google.golang.org/genproto v0.0.0-20261026165753-2ffab32bce7e"
} > go.work
