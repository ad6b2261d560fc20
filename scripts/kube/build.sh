#!/usr/bin/env bash
# Builds the single-node Kubernetes binaries the cluster tests run:
# kube-apiserver, kubelet, kube-controller-manager and kube-scheduler, from
# the Go module k8s.io/kubernetes (docs: ../../docs/KUBERNETES.md of the repo,
# section "Cluster tests").
#
# `go install` refuses that module (it has replace directives pointing into its
# own staging tree), so: copy it from the module cache, drop go.work/vendor,
# point every ./staging/src/k8s.io/<name> replace at the published
# k8s.io/<name> v0.<minor>.<patch>, and build with -mod=mod.
#
# Idempotent: the binaries are cached in $HANGAR_KUBE_CACHE (default
# .cache/kube/<version> in the repository, git-ignored); a cache hit returns at
# once. Prints the binary directory on its last line.
set -euo pipefail

KUBE_VERSION=${HANGAR_KUBE_VERSION:-v1.34.4}
root=$(cd "$(dirname "$0")/../.." && pwd)
cache=${HANGAR_KUBE_CACHE:-$root/.cache/kube/$KUBE_VERSION}
bin=$cache/bin
targets=(kube-apiserver kubelet kube-controller-manager kube-scheduler)

have_all() {
  for t in "${targets[@]}"; do [ -x "$bin/$t" ] || return 1; done
  [ "$(cat "$bin/.version" 2>/dev/null)" = "$KUBE_VERSION" ]
}
if have_all; then
  echo "kube binaries $KUBE_VERSION cached" >&2
  echo "$bin"
  exit 0
fi

mkdir -p "$cache"
exec 9>"$cache/.build.lock"
flock 9
if have_all; then echo "$bin"; exit 0; fi

start=$(date +%s)
ver=${KUBE_VERSION#v}
major=${ver%%.*}; rest=${ver#*.}; minor=${rest%%.*}
staging_version="v0.${ver#*.}"

export GOWORK=off GOTOOLCHAIN=local GOFLAGS="-mod=mod -buildvcs=false"
echo "downloading k8s.io/kubernetes@$KUBE_VERSION" >&2
moddir=$(go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
[ -d "$moddir" ] || { echo "build.sh: module directory of k8s.io/kubernetes@$KUBE_VERSION not found" >&2; exit 1; }

src=$cache/src
if [ ! -f "$src/.copied" ]; then
  rm -rf "$src"
  cp -r "$moddir" "$src"
  chmod -R u+w "$src"
  rm -rf "$src/go.work" "$src/go.work.sum" "$src/vendor"
  # ./staging/src/k8s.io/NAME  ->  k8s.io/NAME v0.MINOR.PATCH
  sed -i -E "s#=> \./staging/src/(k8s\.io/[A-Za-z0-9._-]+)#=> \1 ${staging_version}#" "$src/go.mod"
  touch "$src/.copied"
fi
if grep -q 'staging/src' "$src/go.mod"; then
  echo "build.sh: go.mod still points into staging/ after the rewrite" >&2; exit 1
fi

pkg=k8s.io/component-base/version
ldflags="-s -w \
 -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor \
 -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z \
 -X k8s.io/client-go/pkg/version.gitVersion=$KUBE_VERSION \
 -X k8s.io/client-go/pkg/version.gitMajor=$major -X k8s.io/client-go/pkg/version.gitMinor=$minor"

mkdir -p "$bin.tmp"
echo "building ${targets[*]} $KUBE_VERSION (about 15 minutes on 2 idle cores)" >&2
(cd "$src" && nice -n 19 go build -trimpath -ldflags "$ldflags" -o "$bin.tmp/" \
  ./cmd/kube-apiserver ./cmd/kubelet ./cmd/kube-controller-manager ./cmd/kube-scheduler)
echo "$KUBE_VERSION" > "$bin.tmp/.version"
rm -rf "$bin"
mv "$bin.tmp" "$bin"
rm -rf "$src"
echo "built in $(( $(date +%s) - start ))s" >&2
echo "$bin"
