"""Hostile load: well-behaved clients beside attackers, against the service with compose's defaults.

Well-behaved clients send the golden request and a short MiniLM sentence from WELL keep-alive connections of
127.0.0.1, first alone (the quiet run), then beside a hostile mix (the hostile run). Each kind of attacker is
one machine: its connections come from a loopback address of its own (127.0.0.2, 127.0.0.3, ...), so that
the service's shares per client address (ATTENTION_CLIENT_SHARE) apply to it as to a real one:

- slow_readers: ask for a ~6 MB answer and never read it;
- slow_uploaders: declare a body just under ATTENTION_MAX_REQUEST_BYTES and send it a trickle at a time;
- huge_headers: one header that never ends;
- bombs: a toy request of 64 texts x 4096 tokens at d_model 1024, and a million one-character texts;
- leavers: a heavy MiniLM request (512 tokens, every layer) whose client hangs up at once;
- stalled_streams: a heavy MiniLM request (512 tokens, every layer) as an NDJSON stream, read slowly for a
  second, then not read at all, its socket left open;
- trickle_uploaders: hundreds of connections, each declaring a body just under ATTENTION_MAX_REQUEST_BYTES
  and sending a byte every few seconds;
- large_slow_readers: ask for a ~75 MB toy answer and read it at 64 KB/s;
- pipelining_flood: one connection writing tiny pipelined GET /healthz, never reading the answers;
- number_bombs: a `{"embeddings": [[0, 0, ...]]}` body of 32 MB (16 million numbers).

The well-behaved clients run in a process of their own (their own event loop), the attackers in the bench's:
in one event loop, the well-behaved clients' latencies held the delays of the attackers' work in the bench
(1.2 CPU-seconds of a 10 s run on 2 cores), which is the bench measuring itself, not the service.

Every attacker is bounded: it stops at the end of the run (its sockets aborted) and each of its steps has a
timeout. Reports for each run the well-behaved clients' statuses (a connection that broke counts as status
0) and p50/p99, the peak RSS of the server's process tree (devtools/memory.py, sampled every 0.1 s), and for
the hostile run the time the service took to recover once the attackers left: /readyz 200, every compute
process up (/metrics attention_compute_processes_up) and a golden request answered 200. Exits non-zero when
a check fails: a well-behaved request not answered 200, a p99 over 3x the quiet run's, the tree's peak over
compose's memory limit, or no recovery within 10 s.

    python -m bench.hostile                 # 20 s per run
    python -m bench.hostile --seconds 10    # a quick look
    python -m bench.hostile --attacks stalled_streams,pipelining_flood
    python -m bench.hostile --light-processes 0   # without compose's light lane
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import socket
import statistics
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from devtools.memory import tree_resident_mb
from devtools.paths import ROOT
from devtools.processes import cpu_seconds, descendants
from devtools.servers import Server
from service.server.openapi_examples import load_golden

CAT = load_golden("seed_cat_eats_fish")
GOLDEN = {"embeddings": CAT["embeddings"], "weights": {f"w_{m}": CAT[f"w_{m}_in_out"] for m in "qkv"}}
SENTENCE = {"text": "The cat ate the fish because it was hungry", "layer": 0, "include": ["weights"]}
BIG_ANSWER = {"text": " ".join(f"w{i}" for i in range(128)), "model": "toy", "d_model": 384, "num_heads": 6}
# 6 heads x 1000 x 1000 weights: 6 million numbers, about 75 MB of JSON
LARGE_ANSWER = {
    "text": " ".join(f"w{i}" for i in range(1000)),
    "model": "toy",
    "d_model": 96,
    "num_heads": 6,
    "include": ["weights"],
}
TOY_BOMB = {"text": [" ".join(["w"] * 4096)] * 64, "model": "toy", "d_model": 1024}
TEXT_BOMB = {"text": ["a"] * 1_000_000}
HEAVY = {"text": " ".join(["word"] * 510), "layer": "all", "include": ["weights"]}
NUMBERS = 16 * 2**20  # a 32 MB body of zeros: 4x ATTENTION_MAX_REQUEST_NUMBERS
NUMBER_BOMB = b'{"embeddings": [[' + b"0," * (NUMBERS - 1) + b"0]]}"
NDJSON = b"Accept: application/x-ndjson\r\n"
HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: bench\r\n\r\n"

MEMORY_LIMIT_MB = 2048  # docker-compose.yml: MEMORY_LIMIT, 2g by default
COMPUTE_PROCESSES = 1  # docker-compose.yml: ATTENTION_MAX_CONCURRENT, 1 by default
LIGHT_PROCESSES = 1  # docker-compose.yml: ATTENTION_LIGHT_PROCESSES, 1 by default
P99_RATIO = 3.0
RECOVERY_S = 10.0
STEP_TIMEOUT_S = 60.0  # no step of a client waits longer

WELL_BEHAVED_ADDRESS = "127.0.0.1"
Attack = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def request(body: dict[str, Any] | bytes, extra: bytes = b"") -> bytes:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return (
        b"POST /attend HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(content)}\r\n".encode()
        + extra
        + b"\r\n"
        + content
    )


async def connect(port: int, address: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection to the server from `address`, a loopback address standing for one client machine."""
    return await asyncio.wait_for(
        asyncio.open_connection("127.0.0.1", port, local_addr=(address, 0)), STEP_TIMEOUT_S
    )


async def read_head(reader: asyncio.StreamReader) -> tuple[int, int]:
    """The status and Content-Length of an answer whose head is next on the connection."""
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
    return status, length


async def read_answer(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    status, length = await read_head(reader)
    return status, await reader.readexactly(length)


async def get(port: int, path: str) -> tuple[int, bytes]:
    """One GET on a connection of its own, from the well-behaved clients' address."""
    reader, writer = await connect(port, WELL_BEHAVED_ADDRESS)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
        return await asyncio.wait_for(read_answer(reader), STEP_TIMEOUT_S)
    finally:
        writer.close()


async def well_behaved(port: int, until: float, statuses: Counter[int], latencies: list[float]) -> None:
    bodies = [request(GOLDEN), request(SENTENCE)]
    reader, writer = await connect(port, WELL_BEHAVED_ADDRESS)
    sent = 0
    try:
        while time.monotonic() < until:
            started = time.perf_counter()
            writer.write(bodies[sent % 2])
            sent += 1
            try:
                status, _ = await asyncio.wait_for(read_answer(reader), STEP_TIMEOUT_S)
            except (asyncio.IncompleteReadError, ConnectionError, TimeoutError):
                statuses[0] += 1  # no answer: the connection broke
                writer.close()
                reader, writer = await connect(port, WELL_BEHAVED_ADDRESS)
                continue
            statuses[status] += 1
            if status == 200:
                latencies.append(time.perf_counter() - started)
            else:
                await asyncio.sleep(0.05)  # a 503 says retry shortly
    finally:
        writer.close()


async def well_behaved_clients(port: int, until: float, well: int) -> tuple[Counter[int], list[float]]:
    statuses: Counter[int] = Counter()
    latencies: list[float] = []
    await asyncio.gather(*(well_behaved(port, until, statuses, latencies) for _ in range(well)))
    return statuses, latencies


def well_behaved_apart(port: int, well: int, channel: Connection) -> None:
    """The well-behaved clients in a process of their own: says it is ready, is told when the run ends (on
    time.monotonic()'s clock, which processes share), and sends back their statuses and latencies."""
    channel.send("ready")
    until = channel.recv()
    channel.send(asyncio.run(well_behaved_clients(port, until, well)))


async def hostile(port: int, address: str, until: float, attack: Attack) -> None:
    """One attacker's connection: connects from `address` and attacks until the attack ends (a write or read
    failed: the server refused or closed the connection; an attack that neither writes nor reads, a reader
    that never reads, stays until the end) or the run is over, then again; at the end its socket is aborted
    (the attacker leaves)."""
    while time.monotonic() < until:
        try:
            reader, writer = await connect(port, address)
        except (OSError, TimeoutError):
            await asyncio.sleep(0.1)
            continue
        attacking = asyncio.ensure_future(attack(reader, writer))
        try:
            await asyncio.wait({attacking}, timeout=max(0.0, until - time.monotonic()))
        finally:
            attacking.cancel()
            await asyncio.gather(attacking, return_exceptions=True)
            writer.transport.abort()
        if not attacking.cancelled():
            await asyncio.sleep(0.1)  # the server closed it (or refused): come back shortly


def small_receive_buffer(writer: asyncio.StreamWriter) -> None:
    writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)


async def slow_reader(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    small_receive_buffer(writer)
    writer.write(request(BIG_ANSWER))
    await asyncio.sleep(3600)  # never reads


def slow_uploader(limit: int) -> Attack:
    async def attack(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = request(b"").replace(b"Content-Length: 0", f"Content-Length: {limit - 1}".encode())
        writer.write(head + b"[" + b" " * 2**20)
        while not reader.at_eof():
            writer.write(b" " * 2**16)
            await writer.drain()
            await asyncio.sleep(0.05)

    return attack


def trickle_uploader(limit: int) -> Attack:
    async def attack(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = request(b"").replace(b"Content-Length: 0", f"Content-Length: {limit - 1}".encode())
        writer.write(head + b"[")
        while not reader.at_eof():
            await asyncio.sleep(2)
            writer.write(b" ")
            await writer.drain()

    return attack


async def huge_header(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: bench\r\nX-Huge: ")
    while True:
        writer.write(b"a" * 2**20)
        await writer.drain()


def bomb(body: bytes) -> Attack:
    """Sends `body` again and again (the server answers 413 and closes: the attacker comes back)."""

    async def attack(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            writer.write(body)
            await writer.drain()
            await asyncio.sleep(0.5)

    return attack


async def leaver(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(request(HEAVY))
    await writer.drain()
    await asyncio.sleep(0.05)
    writer.transport.abort()
    await asyncio.sleep(3600)


async def stalled_stream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    small_receive_buffer(writer)
    writer.write(request(HEAVY, extra=NDJSON))
    await read_slowly(reader, seconds=1.0)
    await asyncio.sleep(3600)  # stops reading, the socket left open


async def large_slow_reader(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    small_receive_buffer(writer)
    while True:
        writer.write(request(LARGE_ANSWER))
        status, length = await asyncio.wait_for(read_head(reader), STEP_TIMEOUT_S)
        await read_slowly(reader, seconds=3600, limit=length)


async def read_slowly(reader: asyncio.StreamReader, seconds: float, limit: int | None = None) -> None:
    """Reads at 64 KB/s for `seconds`, or until `limit` bytes are read."""
    stop, left = time.monotonic() + seconds, limit
    while time.monotonic() < stop and (left is None or left > 0):
        piece = await asyncio.wait_for(reader.read(min(2**12, left or 2**12)), STEP_TIMEOUT_S)
        if not piece:
            raise asyncio.IncompleteReadError(piece, left)
        left = None if left is None else left - len(piece)
        await asyncio.sleep(len(piece) / 2**16)


async def pipelining_flood(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    flood = HEALTHZ * 1024
    while True:
        writer.write(flood)
        await asyncio.wait_for(writer.drain(), STEP_TIMEOUT_S)  # never reads: the server stops reading too


@dataclass(frozen=True)
class Attacker:
    """A kind of attacker: one machine (one address) with `connections` connections, each running `attack`."""

    connections: int
    attack: Attack


def attackers(limit: int) -> dict[str, list[Attacker]]:
    """The hostile mix by name; each name is one attacking machine."""
    return {
        "slow_readers": [Attacker(4, slow_reader)],
        "slow_uploaders": [Attacker(4, slow_uploader(limit))],
        "huge_headers": [Attacker(2, huge_header)],
        "bombs": [Attacker(1, bomb(request(TOY_BOMB))), Attacker(1, bomb(request(TEXT_BOMB)))],
        "leavers": [Attacker(2, leaver)],
        "stalled_streams": [Attacker(2, stalled_stream)],
        "trickle_uploaders": [Attacker(300, trickle_uploader(limit)), Attacker(300, trickle_uploader(limit))],
        "large_slow_readers": [Attacker(2, large_slow_reader)],
        "pipelining_flood": [Attacker(1, pipelining_flood)],
        "number_bombs": [Attacker(2, bomb(request(NUMBER_BOMB)))],
    }


async def sample_rss(pid: int, until: Callable[[], bool], samples: list[float]) -> None:
    while not until():
        samples.append(tree_resident_mb(pid))
        await asyncio.sleep(0.1)


async def recovered(port: int) -> bool:
    """/readyz 200, every compute process up, and a golden request answered 200."""
    try:
        ready, _ = await get(port, "/readyz")
        _, metrics = await get(port, "/metrics")
        up = next(
            (
                float(line.split()[1])
                for line in metrics.decode().splitlines()
                if line.startswith("attention_compute_processes_up ")
            ),
            0.0,
        )
        if ready != 200 or up < COMPUTE_PROCESSES:
            return False
        reader, writer = await connect(port, WELL_BEHAVED_ADDRESS)
        try:
            writer.write(request(GOLDEN))
            status, _ = await asyncio.wait_for(read_answer(reader), STEP_TIMEOUT_S)
        finally:
            writer.close()
        return status == 200
    except (OSError, asyncio.IncompleteReadError, TimeoutError):
        return False


async def recovery_time(port: int, left: float) -> float:
    """Seconds from `left` (the attackers leaving) until the service has recovered, polled every 0.1 s."""
    await asyncio.sleep(max(0.0, left - time.monotonic()))
    while not await recovered(port):
        if time.monotonic() - left > STEP_TIMEOUT_S:
            return float("inf")
        await asyncio.sleep(0.1)
    return time.monotonic() - left


def cpu_by_role(server: int, apart: int) -> dict[str, dict[int, float]]:
    """CPU seconds so far of each process by role: the server, its compute processes, the bench (the
    attackers) and the well-behaved clients."""
    roles = {"server": [server], "compute": descendants(server), "attackers": [os.getpid()], "well": [apart]}
    return {role: {pid: cpu_seconds(pid) for pid in pids} for role, pids in roles.items()}


def cpu_used(before: dict[str, dict[int, float]], after: dict[str, dict[int, float]]) -> dict[str, float]:
    """CPU seconds each role used between two snapshots (a compute process started meanwhile from 0, one
    replaced meanwhile not counted)."""
    return {
        role: round(sum(spent - before[role].get(pid, 0.0) for pid, spent in after[role].items()), 2)
        for role in after
    }


async def run(port: int, pid: int, seconds: float, well: int, mix: list[Attacker]) -> dict[str, Any]:
    channel, theirs = multiprocessing.get_context("spawn").Pipe()
    apart = multiprocessing.get_context("spawn").Process(target=well_behaved_apart, args=(port, well, theirs))
    apart.start()
    try:
        await asyncio.to_thread(channel.recv)  # started: the run begins for both at once
        until = time.monotonic() + seconds
        channel.send(until)
        cpu_before = cpu_by_role(pid, apart.pid or 0)
        samples: list[float] = []
        clients = []
        for number, attacker in enumerate(mix, start=2):
            address = f"127.0.0.{number}"
            clients += [hostile(port, address, until, attacker.attack) for _ in range(attacker.connections)]
        done = False
        sampler = asyncio.ensure_future(sample_rss(pid, lambda: done, samples))
        recovery = asyncio.ensure_future(recovery_time(port, until)) if mix else None
        await asyncio.gather(*clients)
        statuses, latencies = await asyncio.to_thread(channel.recv)
        cpu = cpu_used(cpu_before, cpu_by_role(pid, apart.pid or 0))
        recovery_s = await recovery if recovery is not None else None
        done = True
        await sampler
    finally:
        await asyncio.to_thread(apart.join, STEP_TIMEOUT_S)
        if apart.is_alive():
            apart.kill()
    answered = sum(statuses.values())
    quantiles = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [float("nan")] * 99
    return {
        "well_behaved_requests": answered,
        "statuses": {str(code): count for code, count in sorted(statuses.items())},
        "p50_ms": round(quantiles[49] * 1000, 2),
        "p99_ms": round(quantiles[98] * 1000, 2),
        "rss_mb_peak": round(max(samples), 1),
        "recovery_s": None if recovery_s is None else round(recovery_s, 2),
        "cpu_s": cpu,
    }


def failed_checks(name: str, quiet: dict[str, Any], attacked: dict[str, Any]) -> list[str]:
    """What a hostile run `name` breaks of the service's promises, measured against the quiet run."""
    failures = []
    if set(attacked["statuses"]) != {"200"}:
        failures.append(f"{name}: well-behaved requests answered {attacked['statuses']}")
    if not attacked["p99_ms"] <= P99_RATIO * quiet["p99_ms"]:
        failures.append(f"{name}: p99 {attacked['p99_ms']} ms, over {P99_RATIO:g}x quiet's {quiet['p99_ms']}")
    if attacked["rss_mb_peak"] > MEMORY_LIMIT_MB:
        failures.append(
            f"{name}: the process tree reached {attacked['rss_mb_peak']} MB, over {MEMORY_LIMIT_MB}"
        )
    if attacked["recovery_s"] is not None and not attacked["recovery_s"] <= RECOVERY_S:
        failures.append(f"{name}: recovered {attacked['recovery_s']} s after the attackers left")
    return failures


def table(runs: dict[str, dict[str, Any]]) -> str:
    """The runs as a Markdown table: the quiet run first, each hostile run against it."""
    quiet = runs["quiet"]
    lines = [
        "| run | well-behaved answered | not 200 | p50 ms | p99 ms | p99 / quiet | tree peak MB "
        "| recovery s | CPU s: server, compute, attackers, well-behaved |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, result in runs.items():
        refused = sum(count for code, count in result["statuses"].items() if code != "200")
        ratio = "" if name == "quiet" else f"{result['p99_ms'] / quiet['p99_ms']:.1f}x"
        recovery = "" if result["recovery_s"] is None else f"{result['recovery_s']:g}"
        cpu = ", ".join(f"{result['cpu_s'][role]:g}" for role in ("server", "compute", "attackers", "well"))
        lines.append(
            f"| {name} | {result['well_behaved_requests']} | {refused} | {result['p50_ms']:g} | "
            f"{result['p99_ms']:g} | {ratio} | {result['rss_mb_peak']:g} | {recovery} | {cpu} |"
        )
    return "\n".join(lines)


def main() -> None:
    limit = 32 * 2**20  # ATTENTION_MAX_REQUEST_BYTES's default
    mix = attackers(limit)
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=20.0, help="of each run")
    parser.add_argument("--well", type=int, default=4, help="well-behaved connections")
    parser.add_argument(
        "--attacks", default=",".join(mix), help="comma-separated kinds of attacker in the hostile run"
    )
    parser.add_argument(
        "--each", action="store_true", help="a hostile run for each kind of attacker alone, then all together"
    )
    parser.add_argument(
        "--light-processes", type=int, default=LIGHT_PROCESSES, help="ATTENTION_LIGHT_PROCESSES (compose: 1)"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "hostile.json")
    args = parser.parse_args()
    names = args.attacks.split(",")
    plan = {"quiet": [], **({name: mix[name] for name in names} if args.each else {})}
    plan["all" if args.each else "hostile"] = [attacker for name in names for attacker in mix[name]]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    # the server's JSON log lines beside the report: what it refused, replaced or failed, and why
    log = args.out.with_suffix(".server.log")
    settings = {
        "ATTENTION_MAX_CONCURRENT": str(COMPUTE_PROCESSES),
        "ATTENTION_LIGHT_PROCESSES": str(args.light_processes),
    }
    server = Server(settings, log=log)
    try:
        rest = tree_resident_mb(server.process.pid)
        runs = {
            name: asyncio.run(run(server.port, server.process.pid, args.seconds, args.well, attackers_))
            for name, attackers_ in plan.items()
        }
        settled = tree_resident_mb(server.process.pid)
    finally:
        server.stop(timeout=30)
    with open("/proc/loadavg") as loadavg:
        load = loadavg.read().split()[:3]
    failures = [
        failure for name, result in runs.items() for failure in failed_checks(name, runs["quiet"], result)
    ]
    report = {
        "attacks": names,
        "seconds": args.seconds,
        "settings": settings,
        "load_average": load,
        "rss_mb_at_rest": round(rest, 1),
        "runs": runs,
        "rss_mb_after": round(settled, 1),
        "failed_checks": failures,
    }
    args.out.write_text(json.dumps(report, indent=1))
    print(table(runs))
    print(f"tree at rest {rest:.0f} MB, after {settled:.0f} MB; load average {' '.join(load)}")
    if failures:
        sys.exit("hostile load:\n" + "\n".join(failures))


if __name__ == "__main__":
    main()
