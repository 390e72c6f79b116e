#!/usr/bin/env bash
# Installs what is needed, then runs every test (arguments go to pytest).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install.sh test
exec .venv/bin/python -m pytest "$@"
