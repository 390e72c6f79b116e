"""Before and after: the service of this checkout against the service of another (`--base`, e.g. a worktree
of main: `git worktree add --detach ../base main`), with dynamic batching on and off, in alternated rounds of
one scenario of bench/bench.py, on a machine others may be loading: each line gives requests/s, p50 and the
CPU time per request of the server process and of its compute processes (from /proc), with the load average
at the end of the round, and the medians.

    python -m bench.ab --base ../base --only "c)" --concurrency 16 --rounds 3 --seconds 5

The other checkout's code is served by this interpreter (its uvicorn runs in that folder, which comes first
on its path), so both must work with the same installed packages.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
from pathlib import Path

import devtools.servers
from bench.bench import Result, cpu_line, measure_at, scenarios
from bench.decoder import MODEL_NAME, save_bench_llama
from devtools.paths import ROOT
from devtools.servers import Server


def serve(root: Path, env: dict[str, str]) -> Server:
    """The service of the checkout at `root` (devtools.servers starts uvicorn in ROOT)."""
    setattr(devtools.servers, "ROOT", root)  # noqa: B010 (its cwd: read when the server starts)
    return Server(env, quiet=True, uvicorn_args=("--no-access-log",))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--base", type=Path, required=True, help="the other checkout")
    parser.add_argument("--only", default="c)", help="the scenario whose name contains this")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--windows", default="2,0", help="ATTENTION_BATCH_WINDOW_MS values, comma-separated")
    args = parser.parse_args()
    name, request = next((name, body) for name, body in scenarios().items() if args.only in name)
    body = json.dumps(request).encode()
    here = ROOT
    models = Path(tempfile.mkdtemp(prefix="bench-models-"))
    llama = str(save_bench_llama(models / MODEL_NAME))
    servers: dict[str, Server] = {}
    try:
        for window in args.windows.split(","):
            env = {"ATTENTION_MODELS": json.dumps({MODEL_NAME: llama}), "ATTENTION_BATCH_WINDOW_MS": window}
            for label, root in (("base", args.base.resolve()), ("this", here)):
                servers[f"{label}, window {window} ms"] = serve(root, env)
        setattr(devtools.servers, "ROOT", here)  # noqa: B010
        rounds: dict[str, list[Result]] = {label: [] for label in servers}
        print(
            f"{name}: {args.concurrency} connections, {args.rounds} alternated rounds of {args.seconds:g} s",
            flush=True,
        )
        for _ in range(args.rounds):
            for label, server in servers.items():
                result = measure_at(
                    name, label, server.port, body, args.seconds, args.concurrency, pid=server.process.pid
                )
                rounds[label].append(result)
                print(
                    f"  {label:22s} {result.requests_per_s:8.1f} req/s  p50 {result.p50_ms:8.2f} ms  "
                    f"{result.errors} errors{cpu_line(result)}  (load average {os.getloadavg()[0]:.1f})",
                    flush=True,
                )
        print("medians:")
        for label, measured in rounds.items():
            print(
                f"  {label:22s} {statistics.median(r.requests_per_s for r in measured):8.1f} req/s  "
                f"p50 {statistics.median(r.p50_ms for r in measured):8.2f} ms  CPU per request: "
                f"{statistics.median(r.server_cpu_us or 0 for r in measured):.0f} µs server + "
                f"{statistics.median(r.children_cpu_us or 0 for r in measured):.0f} µs compute"
            )
    finally:
        for server in servers.values():
            server.stop()


if __name__ == "__main__":
    main()
