#!/usr/bin/env bash
# Installs the service and its test tools into .venv (created if missing); quick when nothing changed.
# TORCH_SPEC overrides the torch requirement (default torch==2.13.0, a CPU build on this project's machines;
# elsewhere e.g. TORCH_SPEC="torch>=2.3" with PIP_INDEX_URL=https://download.pytorch.org/whl/cpu).
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
torch_spec=${TORCH_SPEC:-torch==2.13.0}
[ -x .venv/bin/python ] || "$python" -m venv .venv
stamp=.venv/.installed
want="$(cat pyproject.toml | sha256sum | cut -c1-16) $torch_spec"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  .venv/bin/python -m pip install -q --disable-pip-version-check "$torch_spec"
  .venv/bin/python -m pip install -q --disable-pip-version-check -e ".[test]"
  echo "$want" >"$stamp"
fi
