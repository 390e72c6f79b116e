"""Load and leak test: more concurrent clients than the service admits, for a fixed number of requests.

Starts the service in its own uvicorn process with a small admission limit (1 computing + QUEUE waiting),
sends a mix of requests (the golden example, a bad request, a toy text, a MiniLM sentence) from CONCURRENCY
keep-alive connections, and checks: no 5xx other than the intended 503s, every 503 carries Retry-After, and
the RSS of the server and its compute processes after the run is within --max-rss-growth-mb of its RSS after
the warm-up (no leak). Prints requests/s, p50/p99 latency of the answered requests, the status counts and RSS,
writes them as JSON, and exits non-zero on any violation.

    python -m bench.load                    # 10,000 requests, 16 connections
    python -m bench.load --requests 2000    # the short form .ci/run uses
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

import httpx

from devtools.memory import tree_resident_mb
from devtools.paths import ROOT
from devtools.servers import SERVICE_APP, Server
from service.server.openapi_examples import load_golden

CAT = load_golden("seed_cat_eats_fish")
BODIES = [
    json.dumps({"embeddings": CAT["embeddings"], "weights": {f"w_{m}": CAT[f"w_{m}_in_out"] for m in "qkv"}}),
    json.dumps({"embeddings": [[1.0, 2.0], [3.0]]}),  # ragged: 422
    json.dumps({"text": "猫 吃 鱼", "model": "toy", "d_model": 8, "weights": {"seed": 1}}),
    json.dumps(
        {"text": "The cat ate the fish because it was hungry", "layer": "all", "include": ["weights"]}
    ),
]
MIX = [0] * 7 + [1, 2, 3]  # mostly small requests, so that many pass through in a short run


async def run(port: int, requests: int, concurrency: int) -> tuple[Counter[int], list[float], int, float]:
    statuses: Counter[int] = Counter()
    latencies: list[float] = []
    missing_retry_after = 0
    next_index = 0

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal next_index, missing_retry_after
        while next_index < requests:
            body = BODIES[MIX[next_index % len(MIX)]]
            next_index += 1
            started = time.perf_counter()
            response = await client.post(
                "/attend", content=body, headers={"content-type": "application/json"}
            )
            statuses[response.status_code] += 1
            if response.status_code == 503:
                missing_retry_after += "retry-after" not in response.headers
            else:
                latencies.append(time.perf_counter() - started)

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", limits=limits, timeout=60) as client:
        started = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        return statuses, latencies, missing_retry_after, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--queue", type=int, default=4, help="ATTENTION_MAX_QUEUE of the server (1 computes)")
    parser.add_argument("--max-rss-growth-mb", type=float, default=40.0)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "load.json")
    args = parser.parse_args()

    server = Server(
        {"ATTENTION_MAX_CONCURRENT": "1", "ATTENTION_MAX_QUEUE": str(args.queue)},
        app=SERVICE_APP,
        quiet=True,
        uvicorn_args=("--no-access-log",),
    )
    port = server.port
    try:
        warm_up = max(200, args.requests // 10)
        asyncio.run(run(port, warm_up, args.concurrency))  # allocator pools, caches and threads settle first
        rss_before = tree_resident_mb(server.process.pid)
        statuses, latencies, missing_retry_after, seconds = asyncio.run(
            run(port, args.requests, args.concurrency)
        )
        rss_after = tree_resident_mb(server.process.pid)
    finally:
        server.stop(timeout=30)
    quantiles = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [float("nan")] * 99
    report = {
        "requests": args.requests,
        "concurrency": args.concurrency,
        "admitted_at_once": 1 + args.queue,
        "seconds": round(seconds, 2),
        "requests_per_s": round(args.requests / seconds, 1),
        "statuses": {str(code): count for code, count in sorted(statuses.items())},
        "p50_ms": round(quantiles[49] * 1000, 2),
        "p99_ms": round(quantiles[98] * 1000, 2),
        "rss_mb_after_warm_up": round(rss_before, 1),
        "rss_mb_after_run": round(rss_after, 1),
    }
    print(json.dumps(report, indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    problems = [
        f"{count} answers with status {code}"
        for code, count in statuses.items()
        if code >= 500 and code != 503
    ]
    if missing_retry_after:
        problems.append(f"{missing_retry_after} 503 answers without Retry-After")
    if rss_after - rss_before > args.max_rss_growth_mb:
        problems.append(
            f"RSS grew {rss_after - rss_before:.1f} MB (limit {args.max_rss_growth_mb} MB): a leak?"
        )
    if sum(statuses.values()) != args.requests:
        problems.append(f"{args.requests - sum(statuses.values())} requests got no answer")
    if problems:
        sys.exit("load test failed: " + "; ".join(problems))
    print("load test passed: no unintended 5xx, every 503 with Retry-After, RSS flat")


if __name__ == "__main__":
    main()
