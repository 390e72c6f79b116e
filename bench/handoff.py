"""What handing a small request to a compute process and back costs the server process (issue 26), in process
and without HTTP: the compute pool (service/server/compute_pool.py) with processes of the real protocol that
answer at once (bench/instant.py answer_at_once), `--concurrency` requests in flight. It prints the server
process's CPU per request (its own, not its children's) and the event loop's turns per request (select calls),
which a busy machine's noise moves less than a rate. Alternate it with another checkout for an A/B:

    python -m bench.handoff --concurrency 16
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from typing import Any

from bench.instant import answer_at_once
from service.server.compute_pool import ComputePool
from service.settings import Settings

BODY = json.dumps({"embeddings": [[1.0, 0.0], [0.0, 1.0]]}).encode()
WARM_UP = 20  # requests per client before measuring


async def measure(requests: int, concurrency: int, processes: int) -> tuple[float, float, float]:
    """Server CPU seconds per request, loop turns per request, requests per second."""
    settings = Settings(
        max_concurrent=processes, light_processes=0, batch_window_ms=0, max_queue=max(64, concurrency)
    )
    pool = ComputePool(settings, target=answer_at_once)
    await pool.start()
    selector: Any = asyncio.get_running_loop()._selector  # type: ignore[attr-defined]
    select, turns = selector.select, [0]

    def counted(timeout: float | None = None) -> Any:
        turns[0] += 1
        return select(timeout)

    async def client(count: int) -> None:
        for _ in range(count):
            (await pool.run(BODY)).release()

    try:
        await asyncio.gather(*(client(WARM_UP) for _ in range(concurrency)))
        each = requests // concurrency
        selector.select = counted
        cpu, wall = time.process_time(), time.perf_counter()
        await asyncio.gather(*(client(each) for _ in range(concurrency)))
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    finally:
        selector.select = select
        await pool.shutdown()
    done = each * concurrency
    return cpu / done, turns[0] / done, done / wall


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--processes", type=int, default=1)
    args = parser.parse_args()
    cpu, turns, rate = asyncio.run(measure(args.requests, args.concurrency, args.processes))
    print(
        f"{args.concurrency} in flight, {args.processes} process(es): {cpu * 1e6:.1f} µs server CPU and "
        f"{turns:.2f} loop turns per request, {rate:,.0f} req/s (load average {os.getloadavg()[0]:.1f})"
    )


if __name__ == "__main__":
    main()
