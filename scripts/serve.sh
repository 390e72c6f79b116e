#!/usr/bin/env bash
# Installs what is needed, then serves on http://127.0.0.1:8000 (HOST and PORT override; settings: README).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install.sh
# --http: uvicorn's httptools with the service's connection limits (service/server/http_protocol.py)
exec .venv/bin/python -m uvicorn service.server.app:app --host "${HOST:-127.0.0.1}" --port "${PORT:-8000}" \
  --http service.server.http_protocol:HttpProtocol \
  --no-access-log --timeout-graceful-shutdown "${GRACE_SECONDS:-30}"
