#!/usr/bin/env bash
# Installs Debian packages that tests need and pip cannot provide (promtool from `prometheus`,
# grpcurl, wrk, h2load, ...), idempotently: a package already installed costs nothing.
#
#   scripts/debian-tools.sh prometheus wrk
#
# Needs root and apt-get the first time; without them it says which packages to install and
# exits 1, so the test that asked fails with that message instead of skipping.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
log() { echo "debian-tools: $*" >&2; }

missing=()
for package in "$@"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" \
    || missing+=("$package")
done
[ "${#missing[@]}" -eq 0 ] && exit 0

if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  log "missing ${missing[*]}; installing them needs root and apt-get: apt-get install ${missing[*]}"
  exit 1
fi

# Parallel test workers may ask at the same time: one installs, the others wait for it.
mkdir -p "$repo_root/build"
exec 9>"$repo_root/build/.debian-tools.lock"
flock 9
log "installing ${missing[*]} ..."
apt-get update -qq >&2
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
