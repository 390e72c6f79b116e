"""Requests/s of the benchmark's scenarios a) and c) (bench/bench.py) through Ray Serve's HTTP proxy, or of
the plain service, with the benchmark's own driver (wrk when installed), for scripts/ray-bench.sh:

    python -m bench.ray_serve --port PORT --label "ray, 1 replica"   # a Serve proxy already running
    python -m bench.ray_serve --plain --label "plain service"        # starts the plain service (its defaults)
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

from bench.bench import measure_at, scenarios, start
from devtools.servers import SERVICE_APP

SCENARIOS = ("a)", "c)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, help="a running Serve proxy on 127.0.0.1")
    parser.add_argument("--plain", action="store_true", help="start and measure the plain service instead")
    parser.add_argument("--label", required=True)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--out", type=Path, help="a JSON lines file the results are appended to")
    args = parser.parse_args()
    server = start(SERVICE_APP) if args.plain else None
    port = server.port if server is not None else args.port
    try:
        for scenario, request in scenarios().items():
            if not scenario.startswith(SCENARIOS):
                continue
            body = json.dumps(request).encode()
            result = measure_at(scenario, args.label, port, body, args.seconds, args.concurrency)
            rate = result.requests_per_s
            print(
                f"{args.label:24s} {scenario[:2]} {rate:8.1f} req/s  p50 {result.p50_ms:7.2f} ms"
                f"  p99 {result.p99_ms:7.2f} ms  ({result.requests} requests, {result.errors} errors)",
                flush=True,
            )
            if args.out is not None:
                with args.out.open("a") as out:
                    out.write(json.dumps(asdict(result)) + "\n")
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()
