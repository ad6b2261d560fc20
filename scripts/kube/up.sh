#!/usr/bin/env bash
# Boots a real single-node Kubernetes in DIR (a fresh or absent directory):
#   etcd (Debian's etcd-server), kube-apiserver, kube-controller-manager,
#   kube-scheduler and a kubelet (built by build.sh), a second containerd
#   private to the cluster (its own root, state, sockets and runc root, so the
#   Docker engine's containerd is never touched), a CNI bridge (hkube0,
#   10.251.0.0/24, no masquerade) and the images the tests run, imported into
#   that containerd: hangar.local/pause:3 (the pod sandbox) and
#   hangar.local/busybox:1 (a run image), both made from the static busybox,
#   plus every Docker image named in $HANGAR_KUBE_IMAGES (space-separated,
#   saved with `docker save`).
#
#   scripts/kube/up.sh DIR      # then: export KUBECONFIG=DIR/kubeconfig
#   scripts/kube/down.sh DIR    # ALWAYS, also after a failed up.sh
#
# The kubelet rewrites six kernel settings and writes a few fixed host paths:
# up.sh records the host's state first (DIR/host/) and down.sh puts it back.
# Only one cluster runs on a host at a time (/run/lock/hangar-kube, holding
# DIR); up.sh refuses to start while another one is up.
set -euo pipefail

dir=${1:?usage: up.sh DIR}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
KUBE_VERSION=${HANGAR_KUBE_VERSION:-v1.34.4}
cache=${HANGAR_KUBE_CACHE:-$root/.cache/kube/$KUBE_VERSION}
kbin=$cache/bin
etcd=$cache/etcd/usr/bin/etcd
log() { echo "up.sh: $*" >&2; }
die() { log "$*"; exit 1; }

for b in kube-apiserver kubelet kube-controller-manager kube-scheduler; do
  [ -x "$kbin/$b" ] || die "$kbin/$b is not built: run scripts/kube/build.sh"
done
[ -x "$etcd" ] || die "$etcd missing: run scripts/kube/deps.sh"
for c in containerd containerd-shim-runc-v2 runc ctr openssl kubectl; do
  command -v "$c" >/dev/null || die "$c not found: run scripts/kube/deps.sh"
done
[ -x /usr/lib/cni/bridge ] || die "CNI plugins missing: run scripts/kube/deps.sh"
busybox=$(command -v busybox || true)
[ -n "$busybox" ] && file -L "$busybox" 2>/dev/null | grep -q static || busybox=/bin/busybox
[ -x "$busybox" ] || die "no static busybox (apt-get install busybox-static)"

lock=/run/lock/hangar-kube
mkdir -p /run/lock
if ! mkdir "$lock" 2>/dev/null; then
  other=$(cat "$lock/dir" 2>/dev/null || true)
  if [ -n "$other" ] && [ -f "$other/pids" ] && while read -r _ pid; do kill -0 "$pid" 2>/dev/null && exit 0; done < "$other/pids"; then
    die "another cluster is up in $other (scripts/kube/down.sh $other)"
  fi
  log "taking over a stale lock of $other"
  [ -n "$other" ] && [ -d "$other" ] && "$here/down.sh" "$other" || true
  mkdir "$lock" 2>/dev/null || true
fi
echo "$dir" > "$lock/dir"

mkdir -p "$dir"/{pki,logs,host,etcd,containerd,cni,kubelet,pod-logs,volume-plugins,images}
: > "$dir/pids"

# --- the host as it was ----------------------------------------------------
sysctls=(vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops kernel.keys.root_maxkeys kernel.keys.root_maxbytes)
: > "$dir/host/sysctl"
for k in "${sysctls[@]}"; do echo "$k=$(sysctl -n "$k")" >> "$dir/host/sysctl"; done
for p in /var/log/containers /var/log/pods /var/lib/kubelet /var/lib/kubelet/device-plugins /var/lib/cni /run/containerd /run/containerd/s /run/containerd/fifo /run/netns /etc/cni; do
  [ -e "$p" ] && echo "$p" >> "$dir/host/existed"
done
touch "$dir/host/existed"
for p in /run/containerd/s /run/containerd/fifo /run/netns /var/lib/cni/results; do
  ls -1 "$p" 2>/dev/null | sed "s#^#$p/#" >> "$dir/host/entries" || true
done
touch "$dir/host/entries"
for c in /sys/fs/cgroup/*/; do [ -d "$c/kubepods" ] && echo "$c/kubepods" >> "$dir/host/cgroups"; done
touch "$dir/host/cgroups"
ip link show hkube0 >/dev/null 2>&1 && echo hkube0 >> "$dir/host/existed"

freeport() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
P_ETCD=$(freeport); P_PEER=$(freeport); P_API=$(freeport); P_KUBELET=$(freeport); P_KHEALTH=$(freeport)
P_CM=$(freeport); P_SCHED=$(freeport)
cat > "$dir/ports" <<P
etcd=$P_ETCD
apiserver=$P_API
kubelet=$P_KUBELET
P

start() { # name command...: starts a daemon in its own session, logs to logs/NAME.log
  local name=$1; shift
  setsid "$@" > "$dir/logs/$name.log" 2>&1 < /dev/null &
  echo "$name $!" >> "$dir/pids"
}
waitfor() { # what seconds command...
  local what=$1 secs=$2; shift 2
  local deadline=$(( $(date +%s) + secs ))
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$deadline" ] || { tail -n 30 "$dir"/logs/*.log >&2 || true; die "$what not ready after ${secs}s"; }
    sleep 0.3
  done
}

# --- PKI ---------------------------------------------------------------------
pki=$dir/pki
(
  cd "$pki"
  openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 2 -subj /CN=hangar-kube-ca 2>/dev/null
  cert() { # name subject [ext]
    openssl req -new -newkey rsa:2048 -nodes -keyout "$1.key" -out "$1.csr" -subj "$2" 2>/dev/null
    if [ -n "${3:-}" ]; then printf '%s\n' "$3" > "$1.ext"; else printf 'extendedKeyUsage=clientAuth\n' > "$1.ext"; fi
    openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -out "$1.crt" -days 2 -extfile "$1.ext" 2>/dev/null
  }
  cert apiserver /CN=kube-apiserver "subjectAltName=IP:127.0.0.1,IP:10.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local
extendedKeyUsage=serverAuth"
  cert admin "/O=system:masters/CN=hangar-admin"
  cert node "/O=system:nodes/CN=system:node:localhost"
  cert apiserver-kubelet "/O=system:masters/CN=kube-apiserver-kubelet-client"
  # system:masters: with one client identity (no per-controller service
  # account credentials) the controllers need more than their bootstrap role.
  cert controller-manager "/O=system:masters/CN=system:kube-controller-manager"
  cert scheduler /CN=system:kube-scheduler
  openssl genrsa -out sa.key 2048 2>/dev/null
  openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
)
kubeconfig() { # file user
  cat > "$1" <<K
apiVersion: v1
kind: Config
clusters:
- name: hangar-kube
  cluster: {server: "https://127.0.0.1:$P_API", certificate-authority: "$pki/ca.crt"}
users:
- name: $2
  user: {client-certificate: "$pki/$2.crt", client-key: "$pki/$2.key"}
contexts:
- name: hangar-kube
  context: {cluster: hangar-kube, user: $2}
current-context: hangar-kube
K
}
kubeconfig "$dir/kubeconfig" admin
kubeconfig "$dir/node.kubeconfig" node
kubeconfig "$dir/controller-manager.kubeconfig" controller-manager
kubeconfig "$dir/scheduler.kubeconfig" scheduler
export KUBECONFIG=$dir/kubeconfig

# --- etcd and the API server ---------------------------------------------------
start etcd "$etcd" --name default --data-dir "$dir/etcd" \
  --listen-client-urls "http://127.0.0.1:$P_ETCD" --advertise-client-urls "http://127.0.0.1:$P_ETCD" \
  --listen-peer-urls "http://127.0.0.1:$P_PEER" --initial-advertise-peer-urls "http://127.0.0.1:$P_PEER" \
  --initial-cluster "default=http://127.0.0.1:$P_PEER" --quota-backend-bytes 1073741824
start kube-apiserver "$kbin/kube-apiserver" \
  --etcd-servers "http://127.0.0.1:$P_ETCD" \
  --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$P_API" \
  --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" --client-ca-file "$pki/ca.crt" \
  --service-account-issuer https://kubernetes.default.svc --service-account-key-file "$pki/sa.pub" \
  --service-account-signing-key-file "$pki/sa.key" --service-cluster-ip-range 10.0.0.0/24 \
  --authorization-mode Node,RBAC --kubelet-client-certificate "$pki/apiserver-kubelet.crt" \
  --kubelet-client-key "$pki/apiserver-kubelet.key" --kubelet-preferred-address-types Hostname \
  --endpoint-reconciler-type none --profiling=false --allow-privileged=false
waitfor "kube-apiserver" 90 kubectl get --raw /readyz

# --- the cluster's own containerd ---------------------------------------------
ctrd=$dir/containerd
sock=$ctrd/containerd.sock
cat > "$ctrd/config.toml" <<C
version = 2
root = "$ctrd/root"
state = "$ctrd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "$sock"
[ttrpc]
  address = "$sock.ttrpc"
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "$ctrd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "hangar.local/pause:3"
  restrict_oom_score_adj = true
  disable_apparmor = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        Root = "$ctrd/runc"
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$dir/cni"
  # Registry host configuration (containerd's hosts.toml), one directory per
  # registry (HOST:PORT/hosts.toml), read at each pull: a test adds its
  # private registry there (plain HTTP on loopback).
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "$ctrd/certs.d"
C
mkdir -p "$ctrd/certs.d"
cat > "$dir/cni/10-hangar-kube.conflist" <<N
{"cniVersion": "1.0.0", "name": "hangar-kube", "plugins": [
  {"type": "bridge", "bridge": "hkube0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
   "ipam": {"type": "host-local", "dataDir": "$dir/cni-ipam", "ranges": [[{"subnet": "10.251.0.0/24"}]], "routes": [{"dst": "0.0.0.0/0"}]}}
]}
N
start containerd containerd --config "$ctrd/config.toml"
waitfor containerd 30 ctr -a "$sock" version

# --- images --------------------------------------------------------------------
# image TAG 'ENTRYPOINT-OR-CMD-JSON': a docker-archive of the static busybox with its
# applets, /tmp, root and nobody.
image() {
  local tag=$1 entry=$2 work
  work=$(mktemp -d "$dir/images/img.XXXXXX")
  mkdir -p "$work/rootfs/bin" "$work/rootfs/tmp" "$work/rootfs/etc" "$work/rootfs/workspace"
  chmod 1777 "$work/rootfs/tmp"
  cp "$busybox" "$work/rootfs/bin/busybox"
  for a in $("$busybox" --list); do [ "$a" = busybox ] || ln -sf busybox "$work/rootfs/bin/$a"; done
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' > "$work/rootfs/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' > "$work/rootfs/etc/group"
  tar -C "$work/rootfs" --numeric-owner --owner 0 --group 0 -cf "$work/layer.tar" .
  local diff
  diff=$(sha256sum "$work/layer.tar" | cut -d' ' -f1)
  cat > "$work/config.json" <<J
{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],$entry,"WorkingDir":"/"},"rootfs":{"type":"layers","diff_ids":["sha256:$diff"]}}
J
  printf '[{"Config":"config.json","RepoTags":["%s"],"Layers":["layer.tar"]}]\n' "$tag" > "$work/manifest.json"
  tar -C "$work" -cf "$work.tar" manifest.json config.json layer.tar
  ctr -a "$sock" -n k8s.io images import --no-unpack=false "$work.tar" >/dev/null
  rm -rf "$work" "$work.tar"
}
image hangar.local/pause:3 '"Entrypoint":["/bin/sleep","2147483647"]'
image hangar.local/busybox:1 '"Cmd":["/bin/sh"]'
for img in ${HANGAR_KUBE_IMAGES:-}; do
  log "importing $img"
  docker save "$img" | ctr -a "$sock" -n k8s.io images import - >/dev/null
done

# --- the node --------------------------------------------------------------------
cat > "$dir/kubelet.yaml" <<Y
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: 127.0.0.1
port: $P_KUBELET
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $P_KHEALTH
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: "$pki/ca.crt"}
authorization: {mode: Webhook}
cgroupDriver: cgroupfs
failSwapOn: false
failCgroupV1: false
containerRuntimeEndpoint: "unix://$sock"
podLogsDir: "$dir/pod-logs"
volumePluginDir: "$dir/volume-plugins"
resolvConf: /etc/resolv.conf
evictionHard: {memory.available: "50Mi", nodefs.available: "1%", nodefs.inodesFree: "1%", imagefs.available: "1%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
maxPods: 60
podPidsLimit: 4096
containerLogMaxSize: 50Mi
Y
start kubelet "$kbin/kubelet" --config "$dir/kubelet.yaml" --kubeconfig "$dir/node.kubeconfig" \
  --hostname-override localhost --root-dir "$dir/kubelet" --cert-dir "$dir/kubelet/pki" --v 1

start kube-controller-manager "$kbin/kube-controller-manager" --kubeconfig "$dir/controller-manager.kubeconfig" \
  --bind-address 127.0.0.1 --secure-port "$P_CM" --leader-elect=false \
  --service-account-private-key-file "$pki/sa.key" --root-ca-file "$pki/ca.crt" \
  --use-service-account-credentials=false --controllers '*,-nodeipam,-service-lb-controller,-route,-cloud-node-lifecycle' \
  --concurrent-gc-syncs 5 --profiling=false
start kube-scheduler "$kbin/kube-scheduler" --kubeconfig "$dir/scheduler.kubeconfig" \
  --bind-address 127.0.0.1 --secure-port "$P_SCHED" --leader-elect=false --profiling=false

waitfor "node localhost Ready" 120 kubectl wait --for=condition=Ready node/localhost --timeout=2s
waitfor "ServiceAccount default/default" 60 kubectl -n default get serviceaccount default
cat > "$dir/env" <<E
export KUBECONFIG=$dir/kubeconfig
export HANGAR_KUBE_DIR=$dir
export HANGAR_KUBE_CONTAINERD=$sock
export HANGAR_KUBE_REGISTRY_HOSTS=$ctrd/certs.d
E
log "cluster up in $dir ($(( SECONDS ))s): export KUBECONFIG=$dir/kubeconfig"
