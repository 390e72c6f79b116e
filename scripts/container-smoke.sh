#!/usr/bin/env bash
# Builds the image, starts it (read-only root filesystem, /tmp a tmpfs, as in docker-compose.yml), waits for its
# HEALTHCHECK, checks the golden example's numbers and a 422, stops it with SIGTERM and removes it.
# Uses Docker where a Docker engine runs, else podman (set up here by ../shared/tools/container-base.sh).
#
#   scripts/container-smoke.sh            # IMAGE=localhost/attention-service:smoke PORT=8731 override
set -euo pipefail
cd "$(dirname "$0")/.."
image=${IMAGE:-localhost/attention-service:smoke}
port=${PORT:-8731}
name=attention-smoke-$$
build_flags=() run_flags=()
source scripts/container-engine.sh
if [ "$engine" = docker ]; then
  run_flags=(-p "127.0.0.1:$port:$port")
else
  # --format docker keeps the HEALTHCHECK (the OCI format drops it)
  read -ra build_flags <<<"--format docker ${PODMAN_BUILD_FLAGS:-}"
  # no systemd here to run podman's health timers: the check is run by hand below
  read -ra run_flags <<<"${PODMAN_RUN_FLAGS:-} --health-interval disable"
  [ -n "${BASE_IMAGE:-}" ] && build_flags+=(--build-arg "BASE_IMAGE=$BASE_IMAGE")
  # a local wheel folder holds the CPU torch here: no separate torch index
  [[ " ${build_flags[*]} " == *PIP_FIND_LINKS* ]] && build_flags+=(--build-arg TORCH_INDEX_URL=)
fi
log() { echo "container-smoke: $*"; }
cleanup() { "$engine" rm -f "$name" >/dev/null 2>&1 || true; }
trap cleanup EXIT

started=$(date +%s)
"$engine" build "${build_flags[@]}" -t "$image" . >/tmp/container-smoke-build.log 2>&1 ||
  { tail -30 /tmp/container-smoke-build.log; exit 1; }
size=$("$engine" image inspect --format '{{.Size}}' "$image")
log "built $image with $engine in $(($(date +%s) - started)) s; image size $((size / 1000000)) MB"

up=$(date +%s)
"$engine" run "${run_flags[@]}" -d --name "$name" --read-only --tmpfs /tmp -e "UVICORN_PORT=$port" "$image" >/dev/null
until healthy "$name"; do
  if [ "$("$engine" inspect --format '{{.State.Running}}' "$name")" != true ] || (($(date +%s) - up > 300)); then
    "$engine" logs "$name" | tail -30; log "the container did not become healthy"; exit 1
  fi
  sleep 1
done
log "healthy $(($(date +%s) - up)) s after start"

python3 scripts/smoke_check.py "http://127.0.0.1:$port" service/golden/seed_cat_eats_fish.json

"$engine" stop --time 30 "$name" >/dev/null
code=$("$engine" inspect --format '{{.State.ExitCode}}' "$name")
# the logs read whole first: `logs | grep -q` under pipefail fails when grep leaves early (SIGPIPE)
logs=$("$engine" logs "$name" 2>&1)
grep -q "Application shutdown complete" <<<"$logs" ||
  { tail -20 <<<"$logs"; log "no graceful shutdown in the logs"; exit 1; }
log "stopped with SIGTERM: exit code $code, graceful shutdown logged"
log "passed"
