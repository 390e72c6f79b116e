"""The service's server process without the computation, to see where a small request's time goes (issue 26):
the app of service/server/app.py, every layer of it (middleware, metrics, the log line, the API key, the
limits), with a computation that answers every request at once with a body of ANSWER_BYTES (the size of the
golden request's JSON answer).

- `in_process:app` answers in the event loop: no hand-off, no computation; what the web layers cost.
- `processes:app` has ATTENTION_MAX_CONCURRENT compute processes of the real protocol (service/protocol.py:
  frames, tickets) that answer at once: the hand-off too, no computation.

    python -m bench.instant   # alternated rounds against the echo endpoint and the service itself
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics

from bench.bench import A_GOLDEN, Result, cpu_line, measure_at, scenarios, start
from devtools.servers import SERVICE_APP
from schemas.service_info import ModelInfo
from service.protocol import ANSWER, ATTEND, REQUEST, ResponseFormat, Started, Tickets, skipped
from service.server.app import create_app
from service.server.compute_interface import ClientWatch, Held
from service.server.compute_pool import ComputePool
from service.server.observability import Metrics
from service.settings import Settings

ANSWER_BYTES = 1_926  # about the golden request's JSON answer
CANNED = b"[" + b"0," * ((ANSWER_BYTES - 3) // 2) + b"0]"
NO_DEVICE = Started(pid=0, device="none", torch_version="none", threads_in_use=0, models=[])


class InstantCompute:
    """The Compute interface (service/server/compute_interface.py), answering in the event loop at once."""

    started: Started | None = NO_DEVICE
    up = 1
    models: list[ModelInfo] = []

    async def run(
        self,
        body: bytes,
        disconnected: ClientWatch | None = None,
        media: ResponseFormat = ResponseFormat.JSON,
        kind: int = ATTEND,
        client: str = "",
    ) -> Held:
        return Held(200, CANNED, lambda: None)

    async def shutdown(self) -> None:
        pass


async def _in_process(settings: Settings, metrics: Metrics) -> InstantCompute:
    return InstantCompute()


def answer_at_once(channel: socket.socket, tickets: Tickets, settings: Settings) -> None:
    """A compute process's main function (compute_pool.ComputeTarget) that answers each request it takes the
    ticket of with CANNED, in one send as service/compute/process.py sends a small answer."""
    report = json.dumps({**NO_DEVICE, "pid": os.getpid()}).encode()
    channel.sendall(ANSWER.pack(200, True, len(report)) + report)
    buffer, number = b"", 0
    while True:
        while len(buffer) < REQUEST.size or len(buffer) < REQUEST.size + REQUEST.unpack_from(buffer)[-1]:
            if not (chunk := channel.recv(2**20)):
                return
            buffer += chunk
        deadline, *_, length = REQUEST.unpack_from(buffer)
        buffer = buffer[REQUEST.size + length :]
        skip = skipped(tickets, number, deadline)
        number += 1
        status, body = (200, CANNED) if skip is None else skip[:2]
        channel.sendall(ANSWER.pack(status, True, len(body)) + body)


async def _processes(settings: Settings, metrics: Metrics) -> ComputePool:
    pool = ComputePool(settings, target=answer_at_once)
    await pool.start()
    return pool


in_process = create_app(start_compute=_in_process)
processes = create_app(start_compute=_processes)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    apps = {
        "echo": "bench.echo:app",
        "typed-echo": "bench.echo:typed_app",
        "in-process": "bench.instant:in_process",
        "processes": "bench.instant:processes",
        "service": SERVICE_APP,
    }
    body = json.dumps(scenarios()[A_GOLDEN]).encode()
    servers = {name: start(app) for name, app in apps.items()}
    rounds: dict[str, list[Result]] = {name: [] for name in servers}
    try:
        for _ in range(args.rounds):
            for name, server in servers.items():
                port, pid = server.port, server.process.pid
                rounds[name].append(
                    measure_at(A_GOLDEN, name, port, body, args.seconds, args.concurrency, pid=pid)
                )
    finally:
        for server in servers.values():
            server.stop()
    echo = statistics.median(result.requests_per_s for result in rounds["echo"])
    typed = statistics.median(result.requests_per_s for result in rounds["typed-echo"])
    print(f"{A_GOLDEN}, {args.concurrency} connections, median of {args.rounds} rounds of {args.seconds:g} s")
    for name, measured in rounds.items():
        median = sorted(measured, key=lambda result: result.requests_per_s)[len(measured) // 2]
        print(
            f"  {name:10s} {median.requests_per_s:8.1f} req/s  {median.requests_per_s / echo:5.2f}x echo"
            f" {median.requests_per_s / typed:5.2f}x typed-echo"
            f"{cpu_line(median)}  (rounds {'/'.join(f'{m.requests_per_s:.0f}' for m in measured)}; "
            f"load average {os.getloadavg()[0]:.1f})"
        )


if __name__ == "__main__":
    main()
