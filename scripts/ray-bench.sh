#!/usr/bin/env bash
# Requests/s of the benchmark's scenarios a) and c) through Ray Serve on a local two-node cluster
# (scripts/ray-cluster.sh, a head and a worker node of 1 CPU each), with 1 replica and then 2 (one per node, 1
# CPU and 1 torch thread each), and of the plain service with its defaults, beside each other
# (bench/ray_serve.py; wrk when installed). SECONDS_PER_RUN (default 5) per scenario and setup. The cluster is
# stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/ray-cluster.sh
seconds=${SECONDS_PER_RUN:-5}
trap ray_cluster_stop EXIT
ray_cluster_start 1 1
out="$RAY_TMP/bench.jsonl"
for replicas in 1 2; do
  config="$RAY_TMP/serve-$replicas.yaml"
  .venv/bin/python scripts/ray_smoke_check.py config deploy/ray/serve.yaml "$SERVE_PORT" --replicas "$replicas" \
    --cpus 1 >"$config"
  timeout 300 .venv/bin/serve deploy "$config" --address "$RAY_DASHBOARD" >/dev/null
  timeout 320 .venv/bin/python scripts/ray_smoke_check.py wait "$RAY_DASHBOARD" "$replicas"
  .venv/bin/python -m bench.ray_serve --port "$SERVE_PORT" --label "ray serve, $replicas replica(s)" \
    --seconds "$seconds" --out "$out"
done
ray_cluster_stop
.venv/bin/python -m bench.ray_serve --plain --label "plain service" --seconds "$seconds"
