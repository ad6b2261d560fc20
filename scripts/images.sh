#!/usr/bin/env bash
# Builds Hangar's container images without pulling anything: each binary is
# built on the host (static: CGO_ENABLED=0, -trimpath), put into a small build
# context with a root file system tarball, and `docker build` copies both into
# a FROM scratch image (deploy/images/<name>.Dockerfile).
#
#   scripts/images.sh                 # every image: gateway policy executor logship hangarctl
#   scripts/images.sh gateway policy  # some of them
#
# Images are tagged ${HANGAR_IMAGE_PREFIX:-hangar}/<name>:${HANGAR_IMAGE_TAG:-dev}.
# GOARCH picks the architecture (default: the Go toolchain's). With a registry
# at hand, deploy/images/Dockerfile.source builds the same images from source
# inside a golang:1.26 builder instead (see deploy/compose/README.md).
#
# The root file system of every image holds:
#   /tmp                                  mode 1777 (a scratch image has none)
#   /etc/ssl/certs/ca-certificates.crt    the host's CA bundle (S3, registries, OTLP)
#   /etc/passwd, /etc/group               root and the non-root user nonroot (65532)
#   /home/nonroot                         owned by 65532
#   the image's state directories         owned by 65532, so that a fresh named
#                                         volume mounted there is writable by it
set -euo pipefail
cd "$(dirname "$0")/.."

prefix=${HANGAR_IMAGE_PREFIX:-hangar}
tag=${HANGAR_IMAGE_TAG:-dev}
arch=${GOARCH:-$(go env GOARCH)}
cacerts=${HANGAR_CA_CERTIFICATES:-/etc/ssl/certs/ca-certificates.crt}
all=(gateway policy executor logship hangarctl)
if [ $# -gt 0 ]; then names=("$@"); else names=("${all[@]}"); fi

command -v docker >/dev/null || { echo "images.sh: docker is not installed" >&2; exit 1; }
[ -r "$cacerts" ] || { echo "images.sh: no CA bundle at $cacerts (apt-get install ca-certificates, or set HANGAR_CA_CERTIFICATES)" >&2; exit 1; }

# state directories (owned by 65532) of each image
state_dirs() {
  case "$1" in
    gateway) echo var/lib/hangar/gateway ;;
    logship) echo var/lib/hangar/logship ;;
    executor) echo var/lib/hangar/executor ;;
    policy) ;;
    # hangarctl: the embedded broker's sessions, the S3 server's objects
    hangarctl) echo var/lib/hangar/broker data ;;
    *) echo "images.sh: unknown image $1 (one of: ${all[*]})" >&2; return 1 ;;
  esac
}

ctx=$(mktemp -d "${TMPDIR:-/tmp}/hangar-images.XXXXXX")
trap 'rm -rf "$ctx"' EXIT

revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)

# add_git copies git, /usr/lib/git-core and the shared libraries (with the
# dynamic loader) they need into the root file system $1.
add_git() {
  local root=$1 gitbin
  gitbin=$(command -v git) || { echo "images.sh: the executor image needs git on the build host (apt-get install git)" >&2; exit 1; }
  mkdir -p "$root/usr/bin" "$root/usr/lib"
  cp -L "$gitbin" "$root/usr/bin/git"
  cp -a /usr/lib/git-core "$root/usr/lib/"
  [ -d /usr/share/git-core ] && mkdir -p "$root/usr/share" && cp -a /usr/share/git-core "$root/usr/share/"
  local f lib
  for f in "$root/usr/bin/git" $(find "$root/usr/lib/git-core" -type f -perm -u+x); do
    { ldd "$f" 2>/dev/null || true; } | awk '/=> \// {print $3} /^\t\/[^ ]+ \(/ {print $1}'
  done | sort -u | while read -r lib; do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
  done
}

for name in "${names[@]}"; do
  dirs=$(state_dirs "$name")
  dir="$ctx/$name"
  mkdir -p "$dir"

  # 1. the static binary
  if [ "$name" = hangarctl ]; then src=cmd/hangarctl pkg=.; else src=services/$name pkg=./cmd/$name; fi
  echo "images.sh: building $name ($arch)" >&2
  (cd "$src" && CGO_ENABLED=0 GOOS=linux GOARCH=$arch GOWORK=off \
    go build -trimpath -ldflags='-s -w' -o "$dir/$name" "$pkg")
  # The executor's output relay, bind-mounted into run containers (ADR 0016).
  if [ "$name" = executor ]; then
    (cd "$src" && CGO_ENABLED=0 GOOS=linux GOARCH=$arch GOWORK=off \
      go build -trimpath -ldflags='-s -w' -o "$dir/hangar-relay" ./cmd/hangar-relay)
  fi

  # 2. the root file system: root-owned part, then the 65532-owned part
  rootfs="$ctx/rootfs-$name"
  mkdir -p "$rootfs/tmp" "$rootfs/etc/ssl/certs" "$rootfs/var/lib/hangar" "$rootfs/home"
  chmod 0755 "$rootfs" "$rootfs/etc" "$rootfs/etc/ssl" "$rootfs/etc/ssl/certs" "$rootfs/var" "$rootfs/var/lib" "$rootfs/var/lib/hangar" "$rootfs/home"
  chmod 1777 "$rootfs/tmp"
  install -m 0644 "$cacerts" "$rootfs/etc/ssl/certs/ca-certificates.crt"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$rootfs/etc/passwd"
  printf 'root:x:0:\nnonroot:x:65532:\n' >"$rootfs/etc/group"
  chmod 0644 "$rootfs/etc/passwd" "$rootfs/etc/group"
  # The executor fetches run sources with git: the host's git, its helpers
  # (git-remote-https...) and every shared library they load go in with it.
  if [ "$name" = executor ]; then
    add_git "$rootfs"
  fi
  tar --numeric-owner --owner=0 --group=0 --mtime=@0 --sort=name -C "$rootfs" -cf "$dir/rootfs.tar" .

  owned="$ctx/owned-$name"
  mkdir -p "$owned/home/nonroot"
  chmod 0700 "$owned/home/nonroot"
  entries=(./home/nonroot)
  for d in $dirs; do
    mkdir -p "$owned/$d"
    chmod 0700 "$owned/$d"
    # parents not yet in the tarball (e.g. /data is at the top) are root's, 0755
    entries+=("./$d")
  done
  tar --numeric-owner --owner=65532 --group=65532 --mtime=@0 --no-recursion -C "$owned" -rf "$dir/rootfs.tar" "${entries[@]}"

  # 3. the image
  echo "images.sh: docker build $prefix/$name:$tag" >&2
  docker build -q -f "deploy/images/$name.Dockerfile" -t "$prefix/$name:$tag" \
    --label org.opencontainers.image.title="hangar-$name" \
    --label org.opencontainers.image.revision="$revision" \
    --label org.opencontainers.image.source=https://github.com/hangar-dev/hangar \
    "$dir" >/dev/null
  echo "$prefix/$name:$tag"
done
