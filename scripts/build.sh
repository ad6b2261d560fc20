#!/usr/bin/env bash
# Builds every binary into bin/ (static, no cgo).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p bin
export CGO_ENABLED=0
for svc in gateway policy executor logship; do
  (cd "services/$svc" && go build -trimpath -o "../../bin/$svc" "./cmd/$svc")
done
(cd cmd/hangarctl && go build -trimpath -o ../../bin/hangarctl .)
