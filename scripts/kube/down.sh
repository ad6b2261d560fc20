#!/usr/bin/env bash
# Tears down the cluster that up.sh booted in DIR and puts the host back as
# up.sh found it. Safe to run more than once and after a failed or partial
# up.sh. Order matters:
#   1. workloads deleted, then pods with a short grace period, so that the
#      kubelet runs CNI DEL for each sandbox;
#   2. scheduler, controller manager and kubelet stopped;
#   3. what still runs in the cluster's containerd killed through its own
#      socket; containerd stopped; only the shims serving THAT socket killed;
#   4. mounts under DIR and the network namespaces the cluster made unmounted;
#   5. API server and etcd stopped;
#   6. the six kernel settings restored, the kubepods cgroups, the bridge and
#      the fixed paths the kubelet, containerd and CNI created removed (only
#      entries that were not there before up.sh);
#   7. DIR removed unless HANGAR_KUBE_KEEP=1.
set -uo pipefail

dir=${1:?usage: down.sh DIR}
[ -d "$dir" ] || { echo "down.sh: $dir does not exist" >&2; exit 0; }
dir=$(cd "$dir" && pwd)
log() { echo "down.sh: $*" >&2; }
sock=$dir/containerd/containerd.sock
export KUBECONFIG=$dir/kubeconfig

pidof_() { awk -v n="$1" '$1==n {print $2}' "$dir/pids" 2>/dev/null; }
stop() { # name [grace seconds]
  local pid grace=${2:-10}
  pid=$(pidof_ "$1")
  [ -n "$pid" ] || return 0
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null
  for _ in $(seq $(( grace * 10 ))); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  log "$1 ($pid) did not stop in ${grace}s: SIGKILL"
  kill -KILL "$pid" 2>/dev/null
  sleep 0.2
}
alive() { local pid; pid=$(pidof_ "$1"); [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; }

# 1. workloads, then pods (the kubelet runs CNI DEL as it tears them down)
if alive kube-apiserver && [ -f "$KUBECONFIG" ]; then
  kubectl delete deployments,replicasets,daemonsets,statefulsets,jobs --all -A --wait=false --request-timeout 20s >/dev/null 2>&1
  kubectl delete pods --all -A --grace-period 1 --wait=false --request-timeout 20s >/dev/null 2>&1
  for _ in $(seq 120); do
    n=$(kubectl get pods -A --no-headers --request-timeout 5s 2>/dev/null | wc -l)
    [ "$n" = 0 ] && break
    sleep 0.5
  done
  [ "${n:-0}" = 0 ] || log "$n pods still there after 60s; removing them below"
fi

# 2. control loops and the node
stop kube-scheduler 5
stop kube-controller-manager 5
stop kubelet 15

# 3. the cluster's containerd and its shims
if alive containerd && [ -S "$sock" ]; then
  for t in $(ctr -a "$sock" -n k8s.io tasks ls -q 2>/dev/null); do
    ctr -a "$sock" -n k8s.io tasks kill -s SIGKILL "$t" >/dev/null 2>&1
  done
  sleep 0.5
  for t in $(ctr -a "$sock" -n k8s.io tasks ls -q 2>/dev/null); do
    ctr -a "$sock" -n k8s.io tasks delete -f "$t" >/dev/null 2>&1
  done
  for c in $(ctr -a "$sock" -n k8s.io containers ls -q 2>/dev/null); do
    ctr -a "$sock" -n k8s.io containers rm "$c" >/dev/null 2>&1
  done
fi
stop containerd 10
# shims serving this containerd (their command line names its socket)
for p in /proc/[0-9]*; do
  cmd=$({ tr '\0' ' ' < "$p/cmdline"; } 2>/dev/null) || continue
  case "$cmd" in
    *containerd-shim*"-address $sock "*) kill -KILL "${p#/proc/}" 2>/dev/null && log "killed shim ${p#/proc/}" ;;
  esac
done
# runc state of this containerd: containers still known to runc are killed
if [ -d "$dir/containerd/runc" ]; then
  for ns in "$dir"/containerd/runc/*/; do
    [ -d "$ns" ] || continue
    for id in $(runc --root "$ns" list -q 2>/dev/null); do
      runc --root "$ns" kill "$id" KILL >/dev/null 2>&1
      runc --root "$ns" delete -f "$id" >/dev/null 2>&1
    done
  done
fi

# 4. mounts under DIR (deepest first) and the network namespaces made since up.sh
for _ in 1 2 3; do
  mnts=$(awk -v d="$dir/" 'index($2, d) == 1 {print $2}' /proc/self/mounts | sort -r)
  [ -n "$mnts" ] || break
  for m in $mnts; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null; done
done
new_entries() { # DIR: entries of DIR that up.sh did not record
  [ -d "$1" ] || return 0
  for e in "$1"/*; do
    [ -e "$e" ] || continue
    grep -qxF "$e" "$dir/host/entries" 2>/dev/null || echo "$e"
  done
}
for ns in $(new_entries /run/netns); do
  umount "$ns" 2>/dev/null || umount -l "$ns" 2>/dev/null
  rm -f "$ns"
done

# 5. API server and etcd
stop kube-apiserver 10
stop etcd 10

# 6. the host as up.sh found it
if [ -f "$dir/host/sysctl" ]; then
  while IFS== read -r k v; do
    [ "$(sysctl -n "$k" 2>/dev/null)" = "$v" ] || sysctl -qw "$k=$v" || log "could not restore $k=$v"
  done < "$dir/host/sysctl"
fi
existed() { grep -qxF "$1" "$dir/host/existed" 2>/dev/null; }
if [ -f "$dir/host/existed" ]; then
  if ! existed hkube0; then ip link del hkube0 2>/dev/null; fi
  # kubepods cgroups (deepest first), in every controller
  for c in /sys/fs/cgroup/*/kubepods; do
    [ -d "$c" ] || continue
    grep -qxF "$(dirname "$c")//kubepods" "$dir/host/cgroups" 2>/dev/null && continue
    find "$c" -depth -type d -exec rmdir {} + 2>/dev/null
    [ -d "$c" ] && log "cgroup $c still has tasks"
  done
  for e in $(new_entries /run/containerd/s) $(new_entries /run/containerd/fifo) $(new_entries /var/lib/cni/results); do
    rm -rf "$e"
  done
  for p in /run/containerd/s /run/containerd/fifo /run/containerd /var/lib/cni/results /var/lib/cni \
           /var/log/containers /var/log/pods /var/lib/kubelet/device-plugins /var/lib/kubelet /run/netns; do
    existed "$p" && continue
    case "$p" in
      /var/log/containers|/var/log/pods|/var/lib/kubelet/device-plugins|/var/lib/kubelet) rm -rf "$p" ;;
      *) rmdir "$p" 2>/dev/null ;;  # only when empty: others may use them
    esac
  done
fi
if [ "$(cat /run/lock/hangar-kube/dir 2>/dev/null)" = "$dir" ]; then rm -rf /run/lock/hangar-kube; fi
if [ "${HANGAR_KUBE_KEEP:-0}" != 1 ]; then
  rm -rf "$dir" 2>/dev/null || log "could not remove all of $dir"
fi
log "cluster in $dir torn down"
