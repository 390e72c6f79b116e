"""Hostile load: well-behaved clients beside attackers, against the service with its default settings.

Well-behaved clients send the golden request and a short MiniLM sentence from WELL keep-alive connections,
first alone (the quiet run), then beside a hostile mix (the hostile run) of:

- slow readers: ask for a ~6 MB answer and never read it;
- slow uploaders: declare a body just under ATTENTION_MAX_REQUEST_BYTES and send it a trickle at a time;
- huge headers: one header that never ends;
- bombs: a toy request of 64 texts x 4096 tokens at d_model 1024, and a million one-character texts;
- leavers: a heavy MiniLM request (512 tokens, every layer) whose client hangs up at once.

Reports the well-behaved clients' success rate, statuses and p50/p99 in each run, the peak and final RSS of
the server's process tree (sampled every 0.1 s), and fails on a 5xx other than 503 for a well-behaved client.

    python -m bench.hostile                 # 20 s per run
    python -m bench.hostile --seconds 5     # a quick look
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from devtools.memory import tree_resident_mb
from devtools.paths import ROOT
from devtools.servers import Server
from service.server.openapi_examples import load_golden

CAT = load_golden("seed_cat_eats_fish")
GOLDEN = {"embeddings": CAT["embeddings"], "weights": {f"w_{m}": CAT[f"w_{m}_in_out"] for m in "qkv"}}
SENTENCE = {"text": "The cat ate the fish because it was hungry", "layer": 0, "include": ["weights"]}
BIG_ANSWER = {"text": " ".join(f"w{i}" for i in range(128)), "model": "toy", "d_model": 384, "num_heads": 6}
TOY_BOMB = {"text": [" ".join(["w"] * 4096)] * 64, "model": "toy", "d_model": 1024}
TEXT_BOMB = {"text": ["a"] * 1_000_000}
HEAVY = {"text": " ".join(["word"] * 510), "layer": "all", "include": ["weights"]}


def request(body: dict[str, Any] | bytes, extra: bytes = b"") -> bytes:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return (
        b"POST /attend HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(content)}\r\n".encode()
        + extra
        + b"\r\n"
        + content
    )


async def read_answer(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = next(
        (
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        ),
        0,
    )
    return status, await reader.readexactly(length)


async def well_behaved(port: int, until: float, statuses: Counter[int], latencies: list[float]) -> None:
    bodies = [request(GOLDEN), request(SENTENCE)]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    sent = 0
    try:
        while time.monotonic() < until:
            started = time.perf_counter()
            writer.write(bodies[sent % 2])
            sent += 1
            try:
                status, _ = await asyncio.wait_for(read_answer(reader), 60)
            except (asyncio.IncompleteReadError, ConnectionError, TimeoutError):
                statuses[0] += 1  # no answer: the connection broke
                writer.close()
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                continue
            statuses[status] += 1
            if status == 200:
                latencies.append(time.perf_counter() - started)
            else:
                await asyncio.sleep(0.05)  # a 503 says retry shortly
    finally:
        writer.close()


async def hostile(port: int, until: float, attack: Callable[[asyncio.StreamWriter], Awaitable[None]]) -> None:
    """One attacker: connects, attacks until the server closes the connection or its own time is up, again."""
    while time.monotonic() < until:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            attacking = asyncio.ensure_future(attack(writer))
            # returns when the server closes (never read otherwise)
            closed = asyncio.ensure_future(reader.read())
            await asyncio.wait({attacking, closed}, timeout=max(0.0, until - time.monotonic()))
            attacking.cancel()
            closed.cancel()
            writer.transport.abort()
        except (ConnectionError, OSError):
            await asyncio.sleep(0.1)


async def slow_reader(writer: asyncio.StreamWriter) -> None:
    writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    writer.write(request(BIG_ANSWER))
    await asyncio.sleep(3600)  # never reads


def slow_uploader(limit: int) -> Callable[[asyncio.StreamWriter], Awaitable[None]]:
    async def attack(writer: asyncio.StreamWriter) -> None:
        head = request(b"").replace(b"Content-Length: 0", f"Content-Length: {limit - 1}".encode())
        writer.write(head + b"[" + b" " * 2**20)
        while True:
            writer.write(b" " * 2**16)
            await writer.drain()
            await asyncio.sleep(0.05)

    return attack


async def huge_header(writer: asyncio.StreamWriter) -> None:
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: bench\r\nX-Huge: ")
    while True:
        writer.write(b"a" * 2**20)
        await writer.drain()


def bomb(body: bytes) -> Callable[[asyncio.StreamWriter], Awaitable[None]]:
    async def attack(writer: asyncio.StreamWriter) -> None:
        while True:
            writer.write(body)
            await writer.drain()
            await asyncio.sleep(0.5)

    return attack


async def leaver(writer: asyncio.StreamWriter) -> None:
    writer.write(request(HEAVY))
    await writer.drain()
    await asyncio.sleep(0.05)
    writer.transport.abort()
    await asyncio.sleep(3600)


async def sample_rss(pid: int, until: float, samples: list[float]) -> None:
    while time.monotonic() < until:
        samples.append(tree_resident_mb(pid))
        await asyncio.sleep(0.1)


async def run(
    port: int, pid: int, seconds: float, well: int, with_attacks: list[str], limit: int
) -> dict[str, Any]:
    until = time.monotonic() + seconds
    statuses: Counter[int] = Counter()
    latencies: list[float] = []
    samples: list[float] = []
    tasks = [well_behaved(port, until, statuses, latencies) for _ in range(well)]
    tasks.append(sample_rss(pid, until, samples))
    if with_attacks:
        mix: dict[str, list[Callable[[asyncio.StreamWriter], Awaitable[None]]]] = {
            "slow_readers": [slow_reader] * 4,
            "slow_uploaders": [slow_uploader(limit)] * 4,
            "huge_headers": [huge_header] * 2,
            "bombs": [bomb(request(TOY_BOMB)), bomb(request(TEXT_BOMB))],
            "leavers": [leaver] * 2,
        }
        tasks += [hostile(port, until, attack) for name in with_attacks for attack in mix[name]]
    await asyncio.gather(*tasks)
    answered = sum(statuses.values())
    quantiles = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [float("nan")] * 99
    return {
        "well_behaved_requests": answered,
        "success_rate": round(statuses[200] / answered, 4) if answered else 0.0,
        "statuses": {str(code): count for code, count in sorted(statuses.items())},
        "p50_ms": round(quantiles[49] * 1000, 2),
        "p99_ms": round(quantiles[98] * 1000, 2),
        "rss_mb_peak": round(max(samples), 1),
        "rss_mb_final": round(tree_resident_mb(pid), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--well", type=int, default=4, help="well-behaved connections")
    parser.add_argument(
        "--attacks",
        default="slow_readers,slow_uploaders,huge_headers,bombs,leavers",
        help="comma-separated kinds of attacker in the hostile run",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "hostile.json")
    args = parser.parse_args()
    server = Server({"ATTENTION_MAX_CONCURRENT": "1"}, quiet=True)
    try:
        limit = 32 * 2**20
        rest = tree_resident_mb(server.process.pid)
        attacks = args.attacks.split(",")
        quiet = asyncio.run(run(server.port, server.process.pid, args.seconds, args.well, [], limit))
        attacked = asyncio.run(run(server.port, server.process.pid, args.seconds, args.well, attacks, limit))
        time.sleep(2)
        settled = tree_resident_mb(server.process.pid)
    finally:
        server.stop(timeout=30)
    report = {
        "rss_mb_at_rest": round(rest, 1),
        "quiet": quiet,
        "hostile": attacked,
        "rss_mb_after": round(settled, 1),
    }
    print(json.dumps(report, indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    errors = {
        code: n
        for run_ in (quiet, attacked)
        for code, n in run_["statuses"].items()
        if code.startswith("5") and code != "503"
    }
    if errors:
        sys.exit(f"hostile load: well-behaved clients got {errors}")


if __name__ == "__main__":
    main()
