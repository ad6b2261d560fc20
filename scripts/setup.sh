#!/usr/bin/env bash
# Installs, when missing, what Hangar's tests need on a Debian machine, and
# checks what it cannot install. Idempotent: silent when everything is there
# (`make test` and .ci/run call it first). It starts nothing: a package whose
# maintainer scripts would start a daemon (mosquitto, docker-registry,
# prometheus) is installed with service starts refused, because the tests
# start their own brokers and registries on free ports.
#
#   scripts/setup.sh          # install what is missing (root, Debian)
#   scripts/setup.sh --check  # only say what is missing; exit 1 if anything is
#
# What the tests use, and why:
#   mosquitto mosquitto-clients  a second, real MQTT broker (e2e, hangarctl broker)
#   busybox-static               the runner image of the Docker tests (imported, never pulled)
#   docker-registry apache2-utils  a private registry with basic auth (htpasswd)
#   git                          run sources over smart HTTP (git http-backend)
#   openssl ca-certificates      CSRs made the way operators make them
#   prometheus                   promtool, for deploy/check's alert rules
#   docker-compose               the compose stack (deploy/compose)
#   jq                           scripts and CI reading JSON
#   gcc libc6-dev                cgo, which `go test -race` needs
#   iptables                     the documented host firewall rule for run networks (dockerrt test)
#   docker.io                    only when the docker command is missing (its CLI)
# and, not installable here: Go (go.mod's version), a running Docker engine.
set -euo pipefail
cd "$(dirname "$0")/.."

check_only=false
case "${1:-}" in
  --check) check_only=true ;;
  "") ;;
  *) echo "usage: scripts/setup.sh [--check]" >&2; exit 2 ;;
esac

say() { printf 'setup: %s\n' "$*" >&2; }
fail() { printf 'setup: %s\n' "$*" >&2; exit 1; }

packages=(mosquitto mosquitto-clients busybox-static docker-registry apache2-utils git openssl
  ca-certificates jq prometheus docker-compose gcc libc6-dev iptables)
if ! command -v docker >/dev/null 2>&1; then
  packages+=(docker.io)
fi

# Go: the toolchain go.mod asks for (GOTOOLCHAIN may fetch a newer one
# through the module proxy; an older go than 1.21 cannot).
if ! command -v go >/dev/null 2>&1; then
  fail "Go is not installed (or not on PATH): install Go $(sed -n 's/^go //p' cmd/hangarctl/go.mod) or newer from go.dev/dl, then run this again"
fi

installed() {
  [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]
}

missing=()
if command -v dpkg-query >/dev/null 2>&1; then
  for p in "${packages[@]}"; do
    installed "$p" || missing+=("$p")
  done
else
  # Not Debian: judge by the commands the tests run.
  for c in mosquitto mosquitto_pub busybox docker-registry htpasswd git openssl jq promtool docker-compose gcc docker; do
    command -v "$c" >/dev/null 2>&1 || [ -x "/usr/sbin/$c" ] || missing+=("$c")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    fail "this is not a Debian system (no dpkg): install by hand what provides: ${missing[*]} (busybox must be statically linked)"
  fi
fi

if [ ${#missing[@]} -gt 0 ]; then
  if $check_only; then
    fail "missing Debian packages: ${missing[*]} (scripts/setup.sh installs them, as root)"
  fi
  if [ "$(id -u)" -ne 0 ]; then
    fail "missing Debian packages: ${missing[*]}; run scripts/setup.sh as root (or: sudo apt-get install -y ${missing[*]})"
  fi
  command -v apt-get >/dev/null 2>&1 || fail "missing Debian packages: ${missing[*]}, and apt-get is not there to install them"
  say "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Refuse service starts while installing (exit 101 is "action forbidden"
  # for invoke-rc.d), unless the machine already has its own policy.
  policy=/usr/sbin/policy-rc.d
  own_policy=false
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    own_policy=true
    trap '$own_policy && rm -f "$policy"' EXIT
  fi
  log=$(mktemp)
  if ! apt-get update -qq >"$log" 2>&1; then
    cat "$log" >&2
    fail "apt-get update failed (above): check the network and /etc/apt/sources.list, then run this again"
  fi
  if ! apt-get install -y -qq --no-install-recommends "${missing[@]}" >"$log" 2>&1; then
    tail -20 "$log" >&2
    fail "apt-get install ${missing[*]} failed (above)"
  fi
  rm -f "$log"
  for p in "${missing[@]}"; do
    installed "$p" || fail "$p is still not installed after apt-get install"
  done
  say "installed ${missing[*]}"
fi

# The Docker engine: the executor's and the end-to-end tests use it; this
# script does not start it.
if ! docker info >/dev/null 2>&1; then
  fail "the Docker engine is not reachable (docker info failed): start dockerd (or set DOCKER_HOST); the executor and e2e tests need it"
fi
