"""The checks of scripts/ray-smoke.sh against the service deployed on a local Ray cluster, through Serve's
HTTP proxy. Two commands:

    python scripts/ray_smoke_check.py config deploy/ray/serve.yaml PORT   # the smoke test's Serve config
    python scripts/ray_smoke_check.py check URL DASHBOARD_URL METRICS_PORT...

`config` prints the CPU application of deploy/ray/serve.yaml with what a 2-core machine shared with others
can hold: 2 replicas of half a CPU each (--replicas, --cpus: scripts/ray-bench.sh), one per node, the proxy
on the head node only (both nodes share 127.0.0.1, so two proxies would want the same port), a small body
limit for the 413 case. `wait` waits for the deployment's replicas to run.

`check` waits for both replicas, then checks: the golden example's numbers, a 422 and the explorer page
(scripts/smoke_check.py); that a text request, a 422 and a 413 answer exactly what the pipeline answers in
this process (one code path for the numbers); the two 413s of the byte limit; /openapi.json equal to the
plain service's; each replica answering requests (its own /metrics); Ray's dashboard and metrics; and that
killing one replica's process under load loses only the requests it held, and that Serve replaces it.
Bounded loops only.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import threading
import time
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devtools.compute import InProcess  # noqa: E402
from devtools.openapi import comparable  # noqa: E402

APP = "attention"
REPLICAS = 2
MAX_ONGOING = 2  # per replica (service/ray_serve/options.py): what one replica holds at once
SMOKE_ENV = {"ATTENTION_TORCH_THREADS": "1", "ATTENTION_MAX_REQUEST_BYTES": "65536"}
TEXT = {"text": "The cat ate the fish because it was hungry", "layer": [0, 5], "include": ["weights", "q"]}
BAD = {"embeddings": [[1.0, 2.0], [3.0]]}
TOO_BIG = {"embeddings": [[1.0]], "d_k": 10**9, "d_v": 1}


def log(message: str) -> None:
    print(f"ray-smoke: {message}", flush=True)


def smoke_config(path: Path, port: int, replicas: int = REPLICAS, cpus: float = 0.5) -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load(path.read_text())
    (app,) = [app for app in config["applications"] if app["name"] == APP]
    app["runtime_env"]["env_vars"].update(SMOKE_ENV)
    (deployment,) = app["deployments"]
    deployment.pop("autoscaling_config", None)
    deployment.update(num_replicas=replicas, max_replicas_per_node=1, ray_actor_options={"num_cpus": cpus})
    config["applications"] = [app]
    config["proxy_location"] = "HeadOnly"
    config["http_options"].update(host="127.0.0.1", port=port)
    return config


def replicas(dashboard: str) -> list[dict[str, Any]]:
    """The deployment's replicas as Serve's REST API reports them (state, replica_id, node_id, pid)."""
    answer = httpx.get(f"{dashboard}/api/serve/applications/", timeout=10).json()
    app = answer["applications"].get(APP)
    # while the application deploys, Serve may list it before its deployment
    deployment = {} if app is None else app.get("deployments", {}).get(APP, {})
    return list(deployment.get("replicas", []))


def wait_for(what: str, seconds: float, probe: Any) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            found = probe()
        except httpx.HTTPError:
            found = None
        if found:
            return found
        time.sleep(1)
    raise AssertionError(f"{what}: not within {seconds:g} s")


def running(dashboard: str, count: int = REPLICAS) -> list[dict[str, Any]] | None:
    alive = [r for r in replicas(dashboard) if r["state"] == "RUNNING"]
    return alive if len(alive) == count else None


def same_as_in_process(client: httpx.Client, pipeline: InProcess, body: dict[str, Any]) -> int:
    wire, local = client.post("/attend", json=body), pipeline.post(body)
    assert (wire.status_code, wire.headers["content-type"]) == (local.status_code, "application/json"), (
        wire.status_code,
        wire.text[:300],
    )
    got, expected = wire.json(), local.json()
    if wire.status_code == 200:
        got["meta"].pop("elapsed_ms"), expected["meta"].pop("elapsed_ms")
    assert got == expected, f"{body}: the proxy's answer differs from the pipeline's"
    return wire.status_code


def check_answers(url: str, client: httpx.Client) -> None:
    golden = ROOT / "service" / "golden" / "seed_cat_eats_fish.json"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "smoke_check.py"), url, str(golden)], check=True)
    import torch

    torch.set_num_threads(1)  # as the replicas (ATTENTION_TORCH_THREADS): float32 sums in the same order
    pipeline = InProcess.from_env(SMOKE_ENV)
    statuses = [same_as_in_process(client, pipeline, body) for body in (TEXT, BAD, TOO_BIG)]
    assert statuses == [200, 422, 413], statuses
    log(
        "a text request (MiniLM, layers 0 and 5), a 422 and a 413 answer what the pipeline answers in process"
    )
    limit = int(SMOKE_ENV["ATTENTION_MAX_REQUEST_BYTES"])
    body = b'{"embeddings": [[' + b"1.0," * (limit // 4) + b"1.0]]}"
    headers = {"content-type": "application/json"}
    declared = client.post("/attend", content=body, headers=headers)
    streamed = client.post("/attend", content=iter([body[:1000], body[1000:]]), headers=headers)
    for refused in (declared, streamed):
        assert refused.status_code == 413, (refused.status_code, refused.text[:300])
        assert refused.json()["limit"] == "ATTENTION_MAX_REQUEST_BYTES", refused.text[:300]
    log(f"bodies over ATTENTION_MAX_REQUEST_BYTES={limit}, declared or streamed: 413")
    answer = client.post("/attend", json=BAD, headers={"x-request-id": "smoke-1"})
    assert answer.headers.get_list("x-request-id") == ["smoke-1"], answer.headers.get_list("x-request-id")
    log("one X-Request-ID, the caller's, in an answer through the proxy")


def check_openapi(client: httpx.Client) -> None:
    from service.server.app import create_app

    with warnings.catch_warnings():  # FastAPI's about the GET and HEAD of /healthz and /readyz
        warnings.simplefilter("ignore")
        document = create_app().openapi()
    assert comparable(client.get("/openapi.json").json()) == comparable(document)
    log("/openapi.json through Ray is the plain service's document")


def replica_metrics(client: httpx.Client) -> tuple[str, Counter[str]]:
    """One replica's /metrics (the one Serve routed to): its replica id and its answered requests by route."""
    text = client.get("/metrics").text
    (replica,) = re.findall(r'attention_replica_info\{[^}]*replica="([^"]+)"', text)
    counts: Counter[str] = Counter()
    for route, count in re.findall(r'attention_requests_total\{[^}]*route="([^"]+)"[^}]*\} (\S+)', text):
        counts[route] += int(float(count))
    return replica, counts


def load(url: str, body: dict[str, Any], seconds: float, workers: int) -> Counter[int | str]:
    """Statuses of `workers` clients each sending `body` back to back for `seconds`."""
    outcomes: Counter[int | str] = Counter()
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def client() -> None:
        with httpx.Client(base_url=url, timeout=60) as http:
            while time.monotonic() < stop_at:
                try:
                    outcome: int | str = http.post("/attend", json=body).status_code
                except httpx.HTTPError as error:
                    outcome = type(error).__name__
                with lock:
                    outcomes[outcome] += 1

    threads = [threading.Thread(target=client) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + 120)
    return outcomes


def check_each_replica_answers(url: str, client: httpx.Client, alive: list[dict[str, Any]]) -> None:
    outcomes = load(url, TEXT, seconds=4, workers=4)
    assert set(outcomes) == {200}, outcomes
    served: dict[str, float] = {}
    for _ in range(60):  # /metrics reaches one replica per request: ask until both answered
        replica, counts = replica_metrics(client)
        served[replica] = counts["/attend"]
        if len(served) == REPLICAS:
            break
    ids = {r["replica_id"] for r in alive}
    assert set(served) == ids, (served, ids)
    assert all(count > 0 for count in served.values()), served
    nodes = {r["node_id"] for r in alive}
    assert len(nodes) == REPLICAS, f"replicas share a node: {alive}"
    log(
        f"{sum(outcomes.values())} requests under load, all 200; each replica answered: {served} (its own "
        f"/metrics), on {len(nodes)} nodes"
    )


def ray_metrics(port: int) -> str | None:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    return text if "ray_node_cpu_count" in text else None


def check_ray_observability(dashboard: str, metrics_ports: list[int]) -> None:
    assert httpx.get(f"{dashboard}/api/version", timeout=10).status_code == 200
    for port in metrics_ports:
        wait_for(f"Ray's metrics on port {port}", 60, lambda port=port: ray_metrics(port))
    log(f"Ray's dashboard ({dashboard}) and its Prometheus metrics (ports {metrics_ports}) answer")


def check_replica_kill(url: str, dashboard: str, alive: list[dict[str, Any]]) -> None:
    victim = alive[0]
    outcomes: Counter[int | str] = Counter()
    loader = threading.Thread(target=lambda: outcomes.update(load(url, TEXT, seconds=8, workers=4)))
    loader.start()
    time.sleep(2)
    os.kill(victim["pid"], signal.SIGKILL)
    killed_at = time.monotonic()
    loader.join(200)
    lost = sum(count for outcome, count in outcomes.items() if outcome != 200)
    log(f"killed replica {victim['replica_id']} (pid {victim['pid']}) under load: {dict(outcomes)}")
    assert outcomes[200] > 0 and lost <= MAX_ONGOING, (
        f"lost {lost} requests; a replica holds at most {MAX_ONGOING}",
        outcomes,
    )
    fresh = wait_for(
        "Serve replacing the killed replica",
        180,
        lambda: (r := running(dashboard)) and victim["replica_id"] not in {x["replica_id"] for x in r} and r,
    )
    after = load(url, TEXT, seconds=2, workers=2)
    assert set(after) == {200}, after
    log(
        f"lost {lost} request(s), at most the {MAX_ONGOING} it held; Serve replaced it in "
        f"{time.monotonic() - killed_at:.0f} s with {[r['replica_id'] for r in fresh]}, all answering 200"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    config = commands.add_parser("config")
    config.add_argument("serve_yaml", type=Path)
    config.add_argument("port", type=int)
    config.add_argument("--replicas", type=int, default=REPLICAS)
    config.add_argument("--cpus", type=float, default=0.5, help="per replica")
    wait = commands.add_parser("wait", help="until the deployment has this many replicas running")
    wait.add_argument("dashboard")
    wait.add_argument("replicas", type=int)
    check = commands.add_parser("check")
    check.add_argument("url")
    check.add_argument("dashboard")
    check.add_argument("metrics_ports", type=int, nargs="+")
    args = parser.parse_args()
    if args.command == "config":
        print(
            yaml.safe_dump(
                smoke_config(args.serve_yaml, args.port, args.replicas, args.cpus), sort_keys=False
            )
        )
        return
    if args.command == "wait":
        wait_for(f"{args.replicas} replicas running", 300, lambda: running(args.dashboard, args.replicas))
        return
    alive = wait_for(f"{REPLICAS} replicas running", 300, lambda: running(args.dashboard))
    with httpx.Client(base_url=args.url, timeout=60) as client:
        wait_for("/readyz through the proxy", 60, lambda: client.get("/readyz").status_code == 200)
        log(f"{REPLICAS} replicas running: {[(r['replica_id'], r['node_id'][:8], r['pid']) for r in alive]}")
        check_answers(args.url, client)
        check_openapi(client)
        check_each_replica_answers(args.url, client, alive)
        check_ray_observability(args.dashboard, args.metrics_ports)
        check_replica_kill(args.url, args.dashboard, alive)


if __name__ == "__main__":
    main()
