#!/usr/bin/env bash
# Runs docker-compose.yml for real: the service with a .env that sets ATTENTION_API_KEYS (the key must be
# enforced: 401 without it, 200 with it), then with no .env at all the service and the replicas profile
# (2 replicas behind nginx), checking the golden example through each, that both replicas served, and a
# graceful `down`. A .env already there is kept aside meanwhile and put back on exit. Uses the image that
# scripts/container-smoke.sh built (IMAGE). With Docker: `docker compose`; else podman with podman-compose
# (from PyPI, installed into .venv when missing). Where the nginx image cannot be pulled, a Debian nginx is
# built from deploy/nginx.Dockerfile.
set -euo pipefail
cd "$(dirname "$0")/.."
export IMAGE=${IMAGE:-localhost/attention-service:smoke} PORT=${PORT:-8741} BALANCER_PORT=${BALANCER_PORT:-8742}
export REPLICAS=2 COMPOSE_PROJECT_NAME=attention-smoke
log() { echo "compose-smoke: $*"; }
source scripts/container-engine.sh
if [ "$engine" = docker ]; then
  compose=(docker compose)
else
  [ -x .venv/bin/podman-compose ] || .venv/bin/python -m pip install -q podman-compose
  run_args=$(echo "${PODMAN_RUN_FLAGS:-}" | sed 's/--network host//')  # compose makes a network of its own
  compose=(.venv/bin/podman-compose "--podman-run-args=$run_args")
fi
cleanup() {
  "${compose[@]}" --profile replicas down -t 30 >/dev/null 2>&1 || true
  "$engine" ps -aq --filter "label=com.docker.compose.project=$COMPOSE_PROJECT_NAME" | xargs -r "$engine" rm -f >/dev/null
  "$engine" ps -aq --filter "label=io.podman.compose.project=$COMPOSE_PROJECT_NAME" 2>/dev/null | xargs -r "$engine" rm -f >/dev/null
}
env_kept=""
if [ -e .env ]; then
  env_kept=$(mktemp -d)/.env
  mv .env "$env_kept"
  log "your .env is kept in $env_kept meanwhile"
fi
restore_env() { rm -f .env; [ -z "$env_kept" ] || { mv "$env_kept" .env && rmdir "$(dirname "$env_kept")"; }; }
trap 'cleanup; restore_env' EXIT
cleanup

if ! "$engine" image inspect "${NGINX_IMAGE:-nginx:1.28-alpine}" >/dev/null 2>&1 && ! "$engine" pull -q "${NGINX_IMAGE:-nginx:1.28-alpine}" >/dev/null 2>&1; then
  export NGINX_IMAGE=localhost/attention-nginx:debian
  "$engine" build ${PODMAN_BUILD_FLAGS:-} --build-arg "BASE_IMAGE=${BASE_IMAGE:-debian:bookworm-slim}" \
    -t "$NGINX_IMAGE" -f deploy/nginx.Dockerfile deploy >/dev/null 2>&1
  log "no nginx image could be pulled: built $NGINX_IMAGE from deploy/nginx.Dockerfile"
fi

wait_healthy() {  # container names
  local started=$SECONDS
  for container in "$@"; do
    until healthy "$container"; do
      ((SECONDS - started < 240)) || { "$engine" logs "$container" | tail -20; log "$container not healthy"; exit 1; }
      sleep 1
    done
  done
  log "healthy: $* ($((SECONDS - started)) s)"
}
containers() { "$engine" ps --format '{{.Names}}' | grep -E "^${COMPOSE_PROJECT_NAME}[_-]$1[_-][0-9]+$" | sort; }

# A setting that only .env holds (not listed under `environment`) must reach the container: an API key
key=smoke-key
echo "ATTENTION_API_KEYS='[\"$key\"]'" >.env
up=$SECONDS
"${compose[@]}" up -d attention >/dev/null 2>&1
wait_healthy $(containers attention)
log "compose up to healthy: $((SECONDS - up)) s"
python3 scripts/smoke_check.py "http://127.0.0.1:$PORT" service/golden/seed_cat_eats_fish.json --api-key "$key"
"${compose[@]}" down -t 30 >/dev/null 2>&1

# No .env at all (env_file is optional): keys off, the compose defaults apply
rm .env
"${compose[@]}" --profile replicas up -d --scale "attention-replica=$REPLICAS" >/dev/null 2>&1
replicas=($(containers attention-replica))
[ "${#replicas[@]}" = "$REPLICAS" ] || { log "found ${#replicas[@]} replicas, expected $REPLICAS"; exit 1; }
wait_healthy $(containers attention) "${replicas[@]}"
python3 scripts/smoke_check.py "http://127.0.0.1:$PORT" service/golden/seed_cat_eats_fish.json >/dev/null
log "without a .env: up, and no key needed"
"$engine" restart "$(containers balancer)" >/dev/null 2>&1  # nginx resolves the replicas when it starts
for _ in 1 2 3 4; do
  python3 scripts/smoke_check.py "http://127.0.0.1:$BALANCER_PORT" service/golden/seed_cat_eats_fish.json >/dev/null
done
for replica in "${replicas[@]}"; do
  served=$("$engine" logs "$replica" 2>&1 | grep -c '"route":"/attend"' || true)  # its JSON request log
  ((served > 0)) || { log "$replica served no request through the balancer"; exit 1; }
  log "$replica served $served requests through nginx"
done
"${compose[@]}" --profile replicas down -t 30 >/dev/null 2>&1
log "passed"
