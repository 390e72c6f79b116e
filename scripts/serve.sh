#!/usr/bin/env bash
# Installs the service into .venv if needed (not its test tools: ./scripts/test.sh adds those), then serves it.
#   HOST, PORT      the address (default 127.0.0.1 and 8000; HOST=0.0.0.0 for other machines)
#   GRACE_SECONDS   how long a shutdown waits for the requests in flight (default 30)
#   MODELS          Hugging Face Hub models to serve beside the default, fetched at the first start (the only
#                   network access; docs/hub-models.md): MODELS=gpt2,Qwen/Qwen2.5-0.5B (each served under its
#                   id; name=id for another name, id@revision to pin a branch, tag or commit)
# and the settings of docs/operations.md (ATTENTION_*). Every log line is JSON, on stderr.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install.sh
if [ -n "${MODELS:-}" ]; then
  ATTENTION_MODELS=$(.venv/bin/python -m service.compute.models.hub "$MODELS")
  export ATTENTION_MODELS
fi
host=${HOST:-127.0.0.1} port=${PORT:-8000}
# a person at a terminal is told where to go; a log collector gets the JSON lines alone
if [ -t 2 ]; then
  echo "serve: http://$host:$port (explorer at /, Swagger UI at /docs) once the log says \"ready\", in 5-10 s;" \
    "Ctrl-C stops" >&2
fi
# --http: uvicorn's httptools with the service's connection limits (service/server/http_protocol.py)
exec .venv/bin/python -m uvicorn service.server.app:app --host "$host" --port "$port" \
  --http service.server.http_protocol:HttpProtocol \
  --no-access-log --timeout-graceful-shutdown "${GRACE_SECONDS:-30}"
