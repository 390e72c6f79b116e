"""The compute process's own CPU time per request of a batched pass, without HTTP, sockets or other
processes: service/compute/batching.py `answers` over `--size` copies of a scenario's request (sent as the
server sends them, tickets and all), in a loop in this process with one torch thread; `--size 1` is the
request computed alone, as with batching off. On a machine others load, CPU time per request moves much less
than requests/s through HTTP (bench/ab.py), so a cut to a pass's own work shows here first.

    python -m bench.pass_cost --only "c)" --size 8 --seconds 10
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from bench.bench import scenarios
from service.compute.batching import Turn, answers, shareable
from service.compute.gathering import Sent
from service.compute.models.registry import ModelRegistry
from service.protocol import ATTEND, ResponseFormat, Tickets
from service.settings import Settings


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", default="c)", help="the scenario whose name contains this")
    parser.add_argument("--size", type=int, default=8, help="requests per pass (1: each alone)")
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    torch.set_num_threads(1)  # as a compute process on two cores
    settings = Settings()
    models = ModelRegistry.from_settings(settings.models)
    name, request = next((name, body) for name, body in scenarios().items() if args.only in name)
    body = json.dumps(request).encode()
    tickets = Tickets(2 * args.size)
    numbered = 0

    def one_pass() -> None:
        nonlocal numbered
        turns = []
        for _ in range(args.size):
            tickets.issue(numbered)
            deadline = time.monotonic() + 60
            sent = Sent(numbered, deadline, ATTEND, ResponseFormat.JSON, True, body, time.perf_counter())
            turns.append(Turn(sent, shareable(sent, settings) if args.size > 1 else None))
            numbered += 1
        for status, _, _ in answers(turns, tickets, settings, models):
            assert status in (0, 200), status  # 0: the pass's size (protocol.BATCH_NOTE)

    one_pass()  # warm-up: the model loads, the kernels' first calls
    computed, started, until = 0, time.process_time(), time.monotonic() + args.seconds
    while time.monotonic() < until:
        one_pass()
        computed += args.size
    per_request = (time.process_time() - started) * 1000 / computed
    print(f"{name}: passes of {args.size}, {per_request:.2f} ms CPU per request ({computed} requests)")


if __name__ == "__main__":
    main()
