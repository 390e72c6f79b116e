"""Benchmark: the service against the naive baseline (bench/baseline.py), in one run, on this machine.

Each server runs in its own uvicorn process (same flags), driven over loopback for a bounded time with
keep-alive connections by wrk (C, `apt-get install wrk`) when it is installed, else by a light asyncio
client in this process (which takes CPU from the servers and so understates both). Each scenario is measured
in rounds that alternate between the servers, and the median round is reported: requests/s, latency p50/p99,
response bytes, and the service/baseline ratio of requests/s.

    python -m bench.bench                          # all scenarios, 3 rounds of 5 s: about 3 minutes
    python -m bench.bench --seconds 1 --rounds 1   # the smoke run of .ci/run

The small requests of ECHOED are also sent to two bare FastAPI endpoints that echo the body (bench/echo.py,
the framework's floors: `echo` the bytes as they came, `typed-echo` a declared JSON body parameter returned
as JSON, the way a FastAPI user writes one), in the same rounds: service/echo and service/typed-echo are how
close the service comes to each floor. Beside requests/s each server's line gives the CPU time per request of
its server process and (for the service) of its compute processes, from /proc: a figure a machine loaded by
other work changes much less.

Some scenarios ask the service for another format (SERVICE_ACCEPT: the baseline answers JSON whatever the
Accept); the streamed ones (ONE_AT_A_TIME) are measured one request at a time on each server, with the peak
resident memory of its process tree above its size at rest.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import statistics
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.numpy

from bench.decoder import FOLDER_VARIABLE, MODEL_NAME, SENTENCE, TEXT_64, save_bench_llama
from bench.flow_baseline import FLOW
from devtools.memory import PeakResident
from devtools.paths import ROOT
from devtools.processes import TreeCpu, tree_cpu_seconds
from devtools.servers import SERVICE_APP, Server
from service.server.openapi_examples import load_golden


@dataclass
class Result:
    scenario: str
    server: str
    requests: int
    seconds: float
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    response_bytes: int
    errors: int
    peak_rss_mb_above_rest: float | None = None
    server_cpu_us: float | None = None  # CPU time of the server process per request, in microseconds
    children_cpu_us: float | None = None  # of its descendants (the service's compute processes)


A_GOLDEN = "a) golden 3 tokens, d_model 4"
B_EVERY_INTERNAL = "b) 128 tokens, d_model 384, 6 heads of d_k 64"
B_SAFETENSORS = "b-st) the same, every internal in safetensors"
STREAM_512 = "e) MiniLM, 512-token text, all layers, weights, streamed (NDJSON)"
SAFETENSORS, NDJSON, JSON = "application/x-safetensors", "application/x-ndjson", "application/json"
FLOW_128 = "h) MiniLM, 128-token text, all layers: rollout, norms, norms_summed, value_zeroing"
SERVICE_ACCEPT = {B_SAFETENSORS: SAFETENSORS, STREAM_512: NDJSON}  # the rest: JSON
ONE_AT_A_TIME = {STREAM_512, FLOW_128}
ECHOED = {A_GOLDEN}  # also measured against the echo endpoints (bench/echo.py)
ECHOES = {"echo": "bench.echo:app", "typed-echo": "bench.echo:typed_app"}
# 126 words of one WordPiece token each: 128 tokens with [CLS] and [SEP]
_SENTENCE = "the cat ate the fish because it was hungry and then the dog barked at the mail carrier "
FLOW_TEXT = " ".join((_SENTENCE * 8).split()[:126])


def scenarios() -> dict[str, dict[str, Any]]:
    cat = load_golden("seed_cat_eats_fish")
    rng = np.random.default_rng(0)
    return {
        A_GOLDEN: {
            "embeddings": cat["embeddings"],
            "weights": {f"w_{m}": cat[f"w_{m}_in_out"] for m in "qkv"},
        },
        B_EVERY_INTERNAL: (
            b := {
                "embeddings": rng.uniform(-1, 1, (128, 384)).round(6).tolist(),
                "weights": {"seed": 0},
                "num_heads": 6,
            }
        ),
        B_SAFETENSORS: b,
        "c) MiniLM, 12-token sentence, all layers, weights only": {
            "text": "The cat ate the fish because it was hungry, said the dog",
            "layer": "all",
            "include": ["weights"],
        },
        "d) MiniLM, 12-token sentence, all layers, every internal": {
            "text": "The cat ate the fish because it was hungry, said the dog",
            "layer": "all",
        },
        STREAM_512: {"text": " ".join(["word"] * 510), "layer": "all", "include": ["weights"]},
        "f) Llama-family decoder (6 layers, d_model 384, 12 heads, 4 kv heads), 12 tokens, all layers, "
        "weights only": {"text": SENTENCE, "model": MODEL_NAME, "layer": "all", "include": ["weights"]},
        "g) the same decoder, 64 tokens, one head ablated, predictions only (clean and ablated)": {
            "text": TEXT_64,
            "model": MODEL_NAME,
            "layer": 5,
            "include": [],
            "interventions": [{"ablate": {"layer": 2, "heads": [3]}}],
            "predict": {"top_k": 5},
        },
        FLOW_128: {"text": FLOW_TEXT, "layer": "all", "include": list(FLOW)},
    }


def decoded(payload: bytes, media: str) -> dict[str, Any]:
    """A service answer in `media` as the JSON answer's weights and output (or layers' weights)."""
    if media == SAFETENSORS:
        tensors = safetensors.numpy.load(payload)
        return {"weights": tensors["weights"], "output": tensors["output"], "meta": {}}
    if media == NDJSON:
        lines = [json.loads(line) for line in payload.splitlines() if line]
        return {"layers": lines[1:]}
    return json.loads(payload)  # type: ignore[no-any-return]


def comparable(response: dict[str, Any]) -> list[np.ndarray]:
    """The attention weights (and output, where both have it) of either server's response; with
    predictions, the top probabilities of both passes and the KL."""
    if "predictions" in response:
        return [
            np.asarray(response["predictions"]["top_probs"]),
            np.asarray(response["predictions_clean"]["top_probs"]),
            np.asarray(response["predictions"]["kl"]),
        ]
    if "flow_layers" in response:  # the naive flow route: one text, no batch axis
        return [np.asarray(layer[name]) for layer in response["flow_layers"] for name in FLOW]
    if "layers" in response and "rollout" in response["layers"][0]:
        return [np.asarray(layer[name])[0] for layer in response["layers"] for name in FLOW]
    if "attentions" in response:  # the baseline's transformers answer: one [batch, head, n, n] per layer
        return [np.asarray(layer) for layer in response["attentions"]]
    if "layers" in response:
        return [np.asarray(layer["weights"]) for layer in response["layers"]]
    # the service's batch axis
    unbatch = (lambda array: array[0]) if "meta" in response else (lambda array: array)
    return [unbatch(np.asarray(response["weights"])), unbatch(np.asarray(response["output"]))]


def start(app: str, env: dict[str, str] | None = None) -> Server:
    """The app in its own uvicorn process on a free port (devtools/servers.py), once /readyz answers; its
    log is dropped."""
    return Server(env, app=app, quiet=True, uvicorn_args=("--no-access-log",))


async def one_request(reader, writer, request: bytes) -> tuple[int, bytes]:
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
        if line.lower().replace(b" ", b"") == b"transfer-encoding:chunked":
            return status, await read_chunked(reader)
    return status, await reader.readexactly(length)


async def read_chunked(reader) -> bytes:
    chunks = []
    while size := int((await reader.readuntil(b"\r\n")).strip(), 16):
        chunks.append(await reader.readexactly(size))
        await reader.readexactly(2)
    await reader.readexactly(2)
    return b"".join(chunks)


def http_request(body: bytes, accept: str = "application/json") -> bytes:
    return (
        f"POST /attend HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\nAccept: {accept}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


async def drive(port: int, body: bytes, seconds: float, concurrency: int, max_requests: int, accept: str):
    request = http_request(body, accept)
    latencies: list[float] = []
    errors, sizes = 0, []
    stop_at = time.perf_counter() + seconds

    async def worker():
        nonlocal errors
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=2**26)
        while time.perf_counter() < stop_at and len(latencies) < max_requests:
            started = time.perf_counter()
            status, payload = await one_request(reader, writer, request)
            latencies.append(time.perf_counter() - started)
            sizes.append(len(payload))
            errors += status != 200
        writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, time.perf_counter() - started, errors, sizes


WRK_SCRIPT = """
local f = io.open(os.getenv("BENCH_BODY"), "rb"); wrk.body = f:read("*a"); f:close()
wrk.method = "POST"; wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = os.getenv("BENCH_ACCEPT")
function done(summary, latency, requests)
  io.write(string.format("RESULT %d %f %f %f %d\\n", summary.requests, summary.duration / 1e6,
    latency:percentile(50) / 1e3, latency:percentile(99) / 1e3,
    summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write
      + summary.errors.timeout))
end
"""


def cpu_per_request(before: TreeCpu | None, pid: int | None, requests: int) -> dict[str, float]:
    """The server_cpu_us and children_cpu_us of a Result: the CPU time the server process (and its
    descendants) spent since `before`, per request."""
    if before is None or pid is None or requests == 0:
        return {}
    after = tree_cpu_seconds(pid)
    return {
        "server_cpu_us": round((after.own - before.own) * 1e6 / requests),
        "children_cpu_us": round((after.descendants - before.descendants) * 1e6 / requests),
    }


def measure_with_wrk(
    scenario: str,
    server: str,
    port: int,
    body: bytes,
    seconds: float,
    concurrency: int,
    accept: str,
    pid: int | None = None,
) -> Result:
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "body.json").write_bytes(body)
        (Path(folder) / "post.lua").write_text(WRK_SCRIPT)
        env = {**os.environ, "BENCH_BODY": str(Path(folder) / "body.json"), "BENCH_ACCEPT": accept}

        def wrk(duration: float) -> str:
            command = [
                "wrk",
                "-t1",
                f"-c{concurrency}",
                f"-d{max(1, round(duration))}s",
                "--timeout",
                "30s",
                "-s",
                str(Path(folder) / "post.lua"),
                f"http://127.0.0.1:{port}/attend",
            ]
            return subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout

        wrk(1)  # warm-up
        before = None if pid is None else tree_cpu_seconds(pid)
        output = wrk(seconds)
    requests, elapsed, p50, p99, errors = output.split("RESULT ")[1].split()
    cpu = cpu_per_request(before, pid, int(requests))
    _, payload = asyncio.run(fetch(port, body, accept))
    return Result(
        scenario,
        server,
        int(requests),
        round(float(elapsed), 2),
        round(int(requests) / float(elapsed), 1),
        round(float(p50), 2),
        round(float(p99), 2),
        len(payload),
        int(errors),
        **cpu,
    )


def cpu_line(result: Result) -> str:
    """The CPU times per request of a server's line, where they were measured."""
    if result.server_cpu_us is None:
        return ""
    children = f" + {result.children_cpu_us:.0f} µs its children" if result.children_cpu_us else ""
    return f"; CPU per request: {result.server_cpu_us:.0f} µs server{children}"


def measure(
    scenario: str, server: Server, name: str, body: bytes, seconds: float, concurrency: int
) -> Result:
    accept = SERVICE_ACCEPT.get(scenario, "application/json") if name == "service" else "application/json"
    if scenario in ONE_AT_A_TIME:
        return measure_one_at_a_time(scenario, server, name, body, seconds, accept)
    return measure_at(scenario, name, server.port, body, seconds, concurrency, accept, server.process.pid)


def measure_at(
    scenario: str,
    name: str,
    port: int,
    body: bytes,
    seconds: float,
    concurrency: int,
    accept: str = "application/json",
    pid: int | None = None,
) -> Result:
    """`concurrency` clients for `seconds` against the server at `port` (wrk when installed); with the server
    process's `pid`, its CPU time per request too."""
    if shutil.which("wrk"):
        return measure_with_wrk(scenario, name, port, body, seconds, concurrency, accept, pid)
    asyncio.run(drive(port, body, min(1.0, seconds / 5), concurrency, 50, accept))  # warm-up
    before = None if pid is None else tree_cpu_seconds(pid)
    latencies, elapsed, errors, sizes = asyncio.run(drive(port, body, seconds, concurrency, 10**9, accept))
    quantiles = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else (latencies or [0.0]) * 99
    return Result(
        scenario,
        name,
        len(latencies),
        round(elapsed, 2),
        round(len(latencies) / elapsed, 1),
        round(quantiles[49] * 1000, 2),
        round(quantiles[98] * 1000, 2),
        int(np.median(sizes)),
        errors,
        **cpu_per_request(before, pid, len(latencies)),
    )


async def fetch(port: int, body: bytes, accept: str = "application/json") -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=2**27)
    answer = await one_request(reader, writer, http_request(body, accept))
    writer.close()
    return answer


def measure_one_at_a_time(
    scenario: str, server: Server, name: str, body: bytes, seconds: float, accept: str
) -> Result:
    """Requests one after the other for about `seconds` (at least one), with the peak resident memory of the
    server's process tree above its size before them (sampled every 10 ms)."""
    latencies: list[float] = []
    errors, size, started = 0, 0, time.perf_counter()
    with PeakResident(server.process.pid) as memory:
        while not latencies or time.perf_counter() - started < seconds:
            begun = time.perf_counter()
            status, payload = asyncio.run(fetch(server.port, body, accept))
            latencies.append(time.perf_counter() - begun)
            errors, size = errors + (status != 200), len(payload)
    elapsed = time.perf_counter() - started
    p50 = statistics.median(latencies) * 1000
    return Result(
        scenario,
        name,
        len(latencies),
        round(elapsed, 2),
        round(len(latencies) / elapsed, 3),
        round(p50, 1),
        round(max(latencies) * 1000, 1),
        size,
        errors,
        round(memory.above_rest, 1),
    )


def same_numbers(scenario: str, port_a: int, port_b: int, body: bytes) -> float:
    """Largest difference between the two servers' weights and outputs: the comparison is like for like."""
    media = SERVICE_ACCEPT.get(scenario, "application/json")
    answers = [asyncio.run(fetch(port, body, accept)) for port, accept in ((port_a, media), (port_b, JSON))]
    for (status, payload), server in zip(answers, ("service", "baseline"), strict=True):
        assert status == 200, f"{scenario}: the {server} answered {status}: {payload[:500]!r}"
    ours = comparable(decoded(answers[0][1], media))
    theirs = comparable(json.loads(answers[1][1]))
    return max(float(np.max(np.abs(a - b))) for a, b in zip(ours, theirs, strict=True))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--seconds", type=float, default=5.0, help="measuring time per round, scenario and server"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="alternated measurements per scenario and server; the median is reported",
    )
    parser.add_argument("--concurrency", type=int, default=4, help="keep-alive connections")
    parser.add_argument(
        "--unbatched",
        action="store_true",
        help="also the service with dynamic batching off (ATTENTION_BATCH_WINDOW_MS=0), in the same rounds",
    )
    parser.add_argument("--only", default="", help="run the scenarios whose name contains this, e.g. 'a)'")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "latest.json")
    args = parser.parse_args()

    print(
        f"driver: {'wrk' if shutil.which('wrk') else 'asyncio client (install wrk for truer figures)'}, "
        f"{args.concurrency} connections, {args.rounds} x {args.seconds:g} s per scenario and server",
        flush=True,
    )
    models = Path(tempfile.mkdtemp(prefix="bench-models-"))
    llama = str(save_bench_llama(models / MODEL_NAME))
    servers = {
        # g) computes for tens of seconds on a small machine: past the default 60 s, a 504 would be measured
        "service": start(
            SERVICE_APP,
            {"ATTENTION_MODELS": json.dumps({MODEL_NAME: llama}), "ATTENTION_REQUEST_TIMEOUT_S": "600"},
        ),
        "baseline": start("bench.baseline:app", {FOLDER_VARIABLE: llama}),
    }
    if args.unbatched:
        unbatched = {"ATTENTION_BATCH_WINDOW_MS": "0"}
        servers["unbatched"] = start(
            SERVICE_APP,
            {
                "ATTENTION_MODELS": json.dumps({MODEL_NAME: llama}),
                "ATTENTION_REQUEST_TIMEOUT_S": "600",
                **unbatched,
            },
        )
    selected = {name: request for name, request in scenarios().items() if args.only in name}
    if ECHOED & selected.keys():
        servers |= {name: start(app) for name, app in ECHOES.items()}
    results: list[Result] = []
    try:
        for scenario, request in selected.items():
            body = json.dumps(request).encode()
            diff = same_numbers(scenario, servers["service"].port, servers["baseline"].port, body)
            print(
                f"{scenario}: request {len(body):,} bytes; service and baseline agree to {diff:.1e}",
                flush=True,
            )
            assert diff < 1e-4, "service and baseline disagree: the comparison would be meaningless"
            measured_here = {
                name: server for name, server in servers.items() if name not in ECHOES or scenario in ECHOED
            }
            for name in ECHOES.keys() & measured_here.keys():
                status, echoed = asyncio.run(fetch(servers[name].port, body))
                assert status == 200 and json.loads(echoed) == json.loads(body), (
                    f"{name} answered {echoed!r:.300}"
                )
            rounds: dict[str, list[Result]] = {name: [] for name in measured_here}
            for _ in range(args.rounds):  # alternated, so that a slow spell of the machine hits every server
                for name, server in measured_here.items():
                    rounds[name].append(measure(scenario, server, name, body, args.seconds, args.concurrency))
            for name, measured in rounds.items():
                r = sorted(measured, key=lambda result: result.requests_per_s)[
                    len(measured) // 2
                ]  # the median
                results.append(r)
                spread = "/".join(f"{m.requests_per_s:.3g}" for m in measured)
                memory = (
                    ""
                    if r.peak_rss_mb_above_rest is None
                    else f", peak RSS +{r.peak_rss_mb_above_rest:.0f} MB"
                )
                print(
                    f"  {name:9s} {r.requests_per_s:9.1f} req/s  p50 {r.p50_ms:8.2f} ms  "
                    f"p99 {r.p99_ms:8.2f} ms  {r.response_bytes:>11,} bytes  "
                    f"({r.requests} requests, {r.errors} errors; rounds {spread} req/s{memory}{cpu_line(r)})",
                    flush=True,
                )
            latest = {result.server: result for result in results[-len(measured_here) :]}
            ours, base = latest["service"], latest["baseline"]
            if "unbatched" in latest:
                alone = latest["unbatched"].requests_per_s
                print(
                    f"  batching: service/unbatched requests/s = {ours.requests_per_s / alone:.2f}x",
                    flush=True,
                )
            if base.requests == 0:
                print(f"  ratio: n/a, the baseline completed no request in {args.seconds:g} s", flush=True)
            else:
                print(
                    "  ratio: service/baseline requests/s = "
                    f"{ours.requests_per_s / base.requests_per_s:.1f}x, "
                    f"bytes {ours.response_bytes / base.response_bytes:.2f}x",
                    flush=True,
                )
            for name in ECHOES.keys() & latest.keys():
                if latest[name].requests:
                    print(
                        f"  ratio: service/{name} requests/s = "
                        f"{ours.requests_per_s / latest[name].requests_per_s:.2f}x (a framework floor)",
                        flush=True,
                    )
    finally:
        for server in servers.values():
            server.stop()
        shutil.rmtree(models, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    machine = {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "concurrency": args.concurrency,
        "driver": "wrk" if shutil.which("wrk") else "asyncio client",
    }
    args.out.write_text(json.dumps({"machine": machine, "results": [asdict(r) for r in results]}, indent=1))
    print(f"results written to {args.out}")


if __name__ == "__main__":
    main()
