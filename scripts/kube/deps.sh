#!/usr/bin/env bash
# Installs what the single-node cluster of the Kubernetes tests needs from
# Debian's packages (idempotent, a few seconds when everything is there):
#   containerd, runc            a second containerd, private to the cluster
#   containernetworking-plugins bridge + host-local + loopback CNI plugins
#   kubernetes-client           kubectl (for `kubectl apply -k` in the tests),
#                               only when no kubectl is on PATH (this machine
#                               image ships a newer one, which conflicts)
#   busybox-static              the pause image and the runs' test image
#   openssl                     the cluster's CA and certificates
#   etcd-server                 unpacked (apt-get download + dpkg-deb -x), not
#                               installed, so no etcd service starts: into
#                               $HANGAR_KUBE_CACHE/etcd (see build.sh)
# Prints nothing on success but a line per thing it did.
set -euo pipefail

KUBE_VERSION=${HANGAR_KUBE_VERSION:-v1.34.4}
root=$(cd "$(dirname "$0")/../.." && pwd)
cache=${HANGAR_KUBE_CACHE:-$root/.cache/kube/$KUBE_VERSION}

need=()
pkgs=(containerd runc containernetworking-plugins busybox-static openssl)
command -v kubectl >/dev/null || pkgs+=(kubernetes-client)
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "deps.sh: installing ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null || true
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

etcd=$cache/etcd/usr/bin/etcd
if [ ! -x "$etcd" ]; then
  echo "deps.sh: unpacking etcd-server into $cache/etcd" >&2
  mkdir -p "$cache/etcd"
  tmp=$(mktemp -d)
  (cd "$tmp" && apt-get download -qq etcd-server >/dev/null 2>&1 || { apt-get update -qq >/dev/null; apt-get download -qq etcd-server >/dev/null; })
  dpkg-deb -x "$tmp"/etcd-server_*.deb "$cache/etcd"
  rm -rf "$tmp"
  [ -x "$etcd" ] || { echo "deps.sh: etcd-server has no usr/bin/etcd" >&2; exit 1; }
fi
