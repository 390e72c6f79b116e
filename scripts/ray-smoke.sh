#!/usr/bin/env bash
# The service on a real local Ray cluster: a head node and one more worker node process, each with its CPU
# count, every address 127.0.0.1 (scripts/ray-cluster.sh). Deploys the CPU application of deploy/ray/serve.yaml
# (2 replicas of half a CPU, one per node: scripts/ray_smoke_check.py config) with `serve deploy`, then checks
# through Serve's HTTP proxy (scripts/ray_smoke_check.py check): the golden numbers, a text request, 422 and 413,
# /openapi.json, each replica answering, Ray's dashboard and metrics, and a replica's process killed under load.
# The cluster is stopped on exit, failed or not. Installs the ray extra into .venv when it is missing, and runs
# tests/ray_serve first.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/ray-cluster.sh
if ! .venv/bin/python -c "import ray.serve" 2>/dev/null; then
  echo "ray-smoke: installing the ray extra (pip install -e '.[ray]')"
  .venv/bin/python -m pip install -q -e ".[ray]"
fi
# the config, the manifest and the options, by Ray Serve's own schemas; the replica's app without Ray
.venv/bin/python -m pytest tests/ray_serve -q -p no:cacheprovider
started=$SECONDS
trap ray_cluster_stop EXIT
ray_cluster_start 1 1
config="$RAY_TMP/serve-smoke.yaml"
.venv/bin/python scripts/ray_smoke_check.py config deploy/ray/serve.yaml "$SERVE_PORT" >"$config"
timeout 300 .venv/bin/serve deploy "$config" --address "$RAY_DASHBOARD"
# shellcheck disable=SC2086  # two port numbers
timeout 480 .venv/bin/python scripts/ray_smoke_check.py check "http://127.0.0.1:$SERVE_PORT" "$RAY_DASHBOARD" \
  $RAY_METRICS_PORTS
echo "ray-smoke: passed in $((SECONDS - started)) s"
