# A local two-node Ray cluster on 127.0.0.1, for scripts/ray-smoke.sh and scripts/ray-bench.sh (sourced, from
# the repository root). `ray_cluster_start HEAD_CPUS WORKER_CPUS` starts a head node and one more worker node
# process, each with its CPU count and every port its own (free ones, so that two clusters on one machine do
# not meet), all on the loopback interface, the dashboard included; `ray_cluster_stop` stops both, killing
# only their own processes: each node is started in a session of its own (setsid), whose process group holds
# every process it starts (GCS, raylet, dashboard, agents, workers, replicas). `ray stop` is not used: it
# stops every Ray process of the machine's user.
RAY=.venv/bin/ray
# RAY_agent_register_timeout_ms: how long a raylet waits for its agents to start (15 s by default: too short
# on a loaded 2-core machine, where the Python agents take longer to import); no preference for the replicas
# of the proxy's own node: both nodes are this machine, none is nearer
export RAY_USAGE_STATS_ENABLED=0 RAY_agent_register_timeout_ms=${RAY_agent_register_timeout_ms:-120000}
export RAY_SERVE_PROXY_PREFER_LOCAL_NODE_ROUTING=0 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
ray_groups=()

ray_log() { echo "ray-cluster: $*" >&2; }

free_ports() {  # N: N distinct free loopback ports, on one line
  .venv/bin/python - "$1" <<'EOF'
import socket, sys
sockets = [socket.socket() for _ in range(int(sys.argv[1]))]
for sock in sockets:
    sock.bind(("127.0.0.1", 0))
print(" ".join(str(sock.getsockname()[1]) for sock in sockets))
EOF
}

ray_node_start() {  # log-name, then the arguments of `ray start`; 3 tries: on a loaded machine a node can miss
  # Ray's own 30 s for its raylet to register, and that try's processes are killed before the next
  local name=$1 log try pid
  shift
  log="$RAY_TMP/$name.log"
  for try in 1 2 3; do
    setsid "$RAY" start --node-ip-address 127.0.0.1 --disable-usage-stats "$@" >"$log" 2>&1 &
    pid=$!
    ray_groups+=("$pid")  # setsid makes ray start the leader of a new session: its process group id is $pid
    wait "$pid" && return 0
    tail -3 "$log" >&2
    ray_log "ray start ($name) failed (try $try of 3)"
    kill -KILL -- "-$pid" 2>/dev/null || true
  done
  return 1
}

ray_cluster_start() {  # HEAD_CPUS WORKER_CPUS; sets RAY_ADDRESS, RAY_DASHBOARD, SERVE_PORT, RAY_METRICS_PORTS
  RAY_TMP=$(mktemp -d /tmp/rs.XXXXXX)  # short: Ray's socket paths live under it (Unix sockets: 107 bytes)
  local ports
  read -r -a ports <<<"$(free_ports 15)"
  export RAY_ADDRESS="127.0.0.1:${ports[0]}"
  RAY_DASHBOARD="http://127.0.0.1:${ports[1]}"
  SERVE_PORT=${ports[2]}
  RAY_METRICS_PORTS="${ports[6]} ${ports[12]}"
  local started=$SECONDS
  ray_node_start head --head --port "${ports[0]}" --num-cpus "$1" --num-gpus 0 --temp-dir "$RAY_TMP" \
    --include-dashboard true --dashboard-host 127.0.0.1 --dashboard-port "${ports[1]}" \
    --ray-client-server-port "${ports[3]}" --node-manager-port "${ports[4]}" \
    --object-manager-port "${ports[5]}" --metrics-export-port "${ports[6]}" \
    --dashboard-agent-listen-port "${ports[7]}" --dashboard-agent-grpc-port "${ports[8]}" \
    --runtime-env-agent-port "${ports[9]}" --min-worker-port 21000 --max-worker-port 21999 || return 1
  ray_node_start worker --address "$RAY_ADDRESS" --num-cpus "$2" --num-gpus 0 \
    --node-manager-port "${ports[10]}" --object-manager-port "${ports[11]}" \
    --metrics-export-port "${ports[12]}" --dashboard-agent-listen-port "${ports[13]}" \
    --runtime-env-agent-port "${ports[14]}" --dashboard-agent-grpc-port "$(free_ports 1)" \
    --min-worker-port 22000 --max-worker-port 22999 || return 1
  ray_log "head ($1 CPUs) and worker ($2 CPUs) nodes up in $((SECONDS - started)) s; GCS $RAY_ADDRESS," \
    "dashboard $RAY_DASHBOARD, metrics on ports ${ports[6]} (head) and ${ports[12]} (worker)"
}

ray_cluster_stop() {
  local group tries
  ((${#ray_groups[@]})) || return 0
  for group in "${ray_groups[@]}"; do kill -TERM -- "-$group" 2>/dev/null || true; done
  for tries in $(seq 20); do  # 10 s for a graceful stop, then killed
    alive=0
    for group in "${ray_groups[@]}"; do kill -0 -- "-$group" 2>/dev/null && alive=1; done
    ((alive)) || break
    sleep 0.5
  done
  for group in "${ray_groups[@]}"; do kill -KILL -- "-$group" 2>/dev/null || true; done
  ray_groups=()
  rm -rf "$RAY_TMP"
  ray_log "stopped"
}
