#!/usr/bin/env bash
# Makes podman able to build and run a generated service's Dockerfile on a machine with no
# Docker engine and no container registry (like the template's own test machines), then prints
# the environment variables that point podman at this setup:
#
#   eval "$(scripts/container-runtime.sh)"
#
# Idempotent (a second run takes a second); the first run needs root and apt and takes about
# two minutes. It installs podman from Debian's packages, writes its configuration under
# build/podman/, and makes a stand-in base image python:<VERSION>-slim with debootstrap from the
# Debian mirror apt already uses, so that `FROM python:<VERSION>-slim` resolves with
# --pull=never. The stand-in holds Debian's own Python (3.11 on Debian 12), not the official
# image's build: it proves that the Dockerfile builds, starts and stops, not more.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
state="$repo_root/build/podman"
packages=(podman buildah runc debootstrap uidmap slirp4netns fuse-overlayfs)
ca_bundle=/etc/ssl/certs/ca-certificates.crt

log() { echo "container-runtime: $*" >&2; }

# Parallel test workers call this at the same time: one sets up, the others wait for it.
mkdir -p "$state"
exec 9>"$state/.lock"
flock 9

if ! command -v podman >/dev/null || ! command -v debootstrap >/dev/null; then
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    log "podman is missing, and installing it needs root and apt-get: install ${packages[*]}"
    exit 1
  fi
  log "installing ${packages[*]} ..."
  # Other processes on the machine may hold apt's lock for a while: wait for it.
  apt-get -o DPkg::Lock::Timeout=600 update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq "${packages[@]}" >&2
fi

mkdir -p "$state"
# runc, because crun fails on this kind of machine (cgroups in hybrid mode); file events, as
# there is no journald; rlimits runc can set without privileges it does not have.
cat >"$state/containers.conf" <<CONF
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"

[containers]
default_ulimits = ["nofile=20000:20000", "nproc=4096:4096"]
CONF
cat >"$state/storage.conf" <<CONF
[storage]
driver = "overlay"
graphroot = "$state/storage"
runroot = "$state/run"
CONF
export CONTAINERS_CONF="$state/containers.conf" CONTAINERS_STORAGE_CONF="$state/storage.conf"

# The stand-in base image, named like the official one for the Python this Debian has.
. /etc/os-release
base_python="$(apt-cache show --no-all-versions python3 | sed -n 's/^Version: \([0-9]*\.[0-9]*\).*/\1/p')"
image="docker.io/library/python:$base_python-slim"
if ! podman image exists "$image"; then
  mirror="$(
    { cat /etc/apt/sources.list.d/*.sources 2>/dev/null | sed -n 's/^URIs: *\([^ ]*\).*/\1/p'
      sed -n 's/^deb  *\(\[[^]]*\] *\)\{0,1\}\([^ ]*\) .*/\2/p' /etc/apt/sources.list 2>/dev/null
    } | grep -v -e security -e '^$' | head -n 1 || true
  )"
  if [ -z "$mirror" ]; then
    log "found no Debian mirror in apt's sources"
    exit 1
  fi
  rootfs="$state/rootfs"
  rm -rf "$rootfs"
  log "making $image with debootstrap ($VERSION_CODENAME) ..."
  debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
    "$VERSION_CODENAME" "$rootfs" "$mirror" >&2
  ln -sf python3 "$rootfs/usr/bin/python"
  rm -f "$rootfs"/usr/lib/python3.*/EXTERNALLY-MANAGED
  # This machine reaches the package index through a TLS-inspecting proxy: trust its CA.
  cp "$ca_bundle" "$rootfs$ca_bundle"
  tar -C "$rootfs" -c . | podman import --change "ENV SSL_CERT_FILE=$ca_bundle" \
    --change 'CMD ["python3"]' - "$image" >&2
  rm -rf "$rootfs"
fi

echo "export CONTAINERS_CONF='$CONTAINERS_CONF' CONTAINERS_STORAGE_CONF='$CONTAINERS_STORAGE_CONF'"
echo "export CONTAINER_BASE_PYTHON='$base_python'"
