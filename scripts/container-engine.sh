# Sourced by the container smoke scripts: picks the engine and says whether a container is healthy.
# Sets `engine` to docker where a Docker engine runs, else podman (set up here by
# ../shared/tools/container-base.sh, which also exports PODMAN_BUILD_FLAGS, PODMAN_RUN_FLAGS and BASE_IMAGE).
if command -v docker >/dev/null && docker info >/dev/null 2>&1; then
  engine=docker
else
  base=../shared/tools/container-base.sh
  [ -x "$base" ] && eval "$("$base")"
  command -v podman >/dev/null || { echo "neither a Docker engine nor podman is available" >&2; exit 2; }
  engine=podman
fi

healthy() {  # container name; podman runs the HEALTHCHECK by hand (no systemd timers here)
  if [ "$engine" = podman ]; then podman healthcheck run "$1" >/dev/null 2>&1
  else [ "$(docker inspect --format '{{.State.Health.Status}}' "$1")" = healthy ]; fi
}
