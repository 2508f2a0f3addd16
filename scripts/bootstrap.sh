# shellcheck shell=bash
# Sourced by scripts/test and scripts/demo: makes the repository's tool environment, idempotently.
#
# Needs only bash, git and Python 3.11+. Installs a pinned uv into .tools/, then lets uv build
# .venv from pyproject.toml's dev group. Re-running costs about a second when nothing changed.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
uv_version="0.13.8"

# pyenv only resolves the versions named in PYENV_VERSION: name them all, so that the tests
# find every installed Python 3.11+ (the current one stays first).
if command -v pyenv >/dev/null 2>&1; then
  PYENV_VERSION="$(pyenv version-name 2>/dev/null | tr -d '\n'):$(pyenv versions --bare | tr '\n' ':')"
  export PYENV_VERSION
fi

python_bin="${PYTHON:-python3}"
if ! "$python_bin" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "error: $python_bin is missing or older than 3.11; set PYTHON=/path/to/python3.11+." >&2
  exit 2
fi

if [ "$("$repo_root/.tools/bin/uv" --version 2>/dev/null)" != "uv $uv_version" ]; then
  "$python_bin" -m venv "$repo_root/.tools"
  "$repo_root/.tools/bin/python" -m pip install --quiet "uv==$uv_version"
fi
export PATH="$repo_root/.tools/bin:$PATH"
export UV_PYTHON_DOWNLOADS=never

(cd "$repo_root" && uv sync --quiet --python "$python_bin")
export PATH="$repo_root/.venv/bin:$PATH"
