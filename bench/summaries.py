"""Benchmark: summaries of every layer for long inputs (docs/summaries.md), against the floor and the naive
route, on a random Llama the size of MiniLM (6 layers, 12 heads, d_model 384) with 32,768 positions.

Three routes, each in a process of its own per length, timed inside it (after the model is loaded and a
short warm-up) while this process samples its resident memory (devtools/memory.py):

- floor: the model's plain forward pass with SDPA and no outputs (transformers, attn_implementation "sdpa");
- service: the service's compute pipeline for {"text", "layer": "all", "include": <every summary>},
  tokenizing, computing and encoding the JSON answer, as a compute process does: its memory keeper made
  once warm (service/compute/memory.py), the answer's frames made one at a time and dropped as if sent;
- naive: what a user does today: output_attentions=True in eager mode, then the same summaries with numpy;
  stopped when its memory passes --limit-mb (the compose file's 2 GB), as the container would be.

    python -m bench.summaries                          # 4k, 8k and 16k tokens
    python -m bench.summaries --tokens 4096 --threads 2
    python -m bench.summaries --compile-kernels        # the service with compile_kernels (its compile timed)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
ROUTES = ("floor", "service", "naive")
MODEL = "bench-long-llama"


def save_model(folder: Path) -> Path:
    from devtools.long_models import save_long_llama

    return save_long_llama(folder, d_model=384, layers=6, heads=12, kv_heads=12, intermediate=1536)


def _floor(folder: Path, text: str) -> float:
    import torch
    from transformers import AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(folder, attn_implementation="sdpa").eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    with torch.inference_mode():
        model(**tokenizer("the cat", return_tensors="pt"))  # warm-up
        _ready()
        started = time.perf_counter()
        model(**tokenizer(text, return_tensors="pt"), use_cache=False)
    return time.perf_counter() - started


def _service(folder: Path, text: str) -> float:
    from devtools.compute import settings_from_env
    from schemas.axes import SUMMARY_NAMES
    from service.compute.memory import MemoryKeeper
    from service.compute.pipeline import frames
    from service.protocol import ResponseFormat

    env = {
        "ATTENTION_MODELS": json.dumps({MODEL: str(folder)}),
        # the defaults bound a MiniLM-sized model's summaries of all layers near 8k tokens
        "ATTENTION_MAX_COMPUTE_ELEMENTS": str(10**9),
        "ATTENTION_MAX_RESPONSE_ELEMENTS": str(10**9),
        "ATTENTION_COMPILE_KERNELS": os.environ.get("ATTENTION_COMPILE_KERNELS", "false"),
    }
    settings = settings_from_env(env)
    if settings.compile_kernels:  # as a compute process does at its start (service/compute/process.py)
        import torch

        from service.compute import fused

        compiled_in = fused.prepare(torch.device("cpu"))
        print(json.dumps({"compiled_in_s": compiled_in}), file=sys.stderr)
    from service.compute.models.registry import ModelRegistry

    models = ModelRegistry.from_settings(settings.models)
    base = {"model": MODEL, "layer": "all", "include": list(SUMMARY_NAMES)}

    def answered(text: str) -> int:
        """The JSON answer's bytes, its frames made and dropped one at a time (process.py sends each)."""
        size = 0
        body = json.dumps({**base, "text": text}).encode()
        for status, content, _ in frames(body, settings, models, ResponseFormat.JSON):
            assert status == 200, content[:500]
            size += len(content)
        return size

    answered("the cat")  # warm-up
    MemoryKeeper()  # as a compute process, once warm (service/compute/process.py)
    _ready()
    started = time.perf_counter()
    size = answered(text)
    seconds = time.perf_counter() - started
    print(json.dumps({"bytes": size}), file=sys.stderr)
    return seconds


def _naive(folder: Path, text: str) -> float:
    import numpy as np
    import torch
    from transformers import AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(folder, attn_implementation="eager").eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    with torch.inference_mode():
        model(**tokenizer("the cat", return_tensors="pt"), output_attentions=True)
        _ready()
        started = time.perf_counter()
        attentions = model(**tokenizer(text, return_tensors="pt"), output_attentions=True).attentions
    for layer in attentions:
        w = layer.numpy().astype(np.float64)  # [1, head, n, n]
        with np.errstate(divide="ignore", invalid="ignore"):
            _ = -np.where(w > 0, w * np.log(w), 0.0).sum(-1)  # entropy
        _ = np.argsort(-w, axis=-1, kind="stable")[..., :5]  # top keys
        _ = w.sum(2)  # received
        n = w.shape[-1]
        pool = -(-n // 128)
        padded = np.pad(w, ((0, 0), (0, 0), (0, -n % pool), (0, -n % pool)))
        _ = padded.reshape(1, w.shape[1], -1, pool, padded.shape[-1] // pool, pool).mean((3, 5))  # pooled
        _ = w[..., 0].mean(-1)  # sink
    return time.perf_counter() - started


_READY_CPU = [0.0]


def _ready() -> None:
    """Tells the measuring process that the model is loaded and warm: memory from here is the route's."""
    _READY_CPU[0] = time.process_time()
    print("ready", file=sys.stderr, flush=True)


def run_route(route: str, folder: Path, tokens: int) -> None:
    """One route's wall seconds, and the CPU seconds of its process over the same span (from the warm-up's
    end: what a loaded machine does not stretch)."""
    from devtools.long_models import text_of_tokens

    text = text_of_tokens(folder, tokens)
    seconds = {"floor": _floor, "service": _service, "naive": _naive}[route](folder, text)
    cpu = time.process_time() - _READY_CPU[0]
    print(json.dumps({"seconds": seconds, "cpu_seconds": cpu}), flush=True)


def measure(
    route: str, folder: Path, tokens: int, threads: int, limit_mb: float, compile_kernels: bool
) -> dict[str, Any]:
    """One route at one length in a child process: its time, its tree's resident memory at rest (model
    loaded and warm) and at peak; stopped above limit_mb."""
    from devtools.memory import tree_resident_mb

    command = [sys.executable, "-m", "bench.summaries", "--route", route, "--folder", str(folder)]
    command += ["--tokens", str(tokens)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    env["ATTENTION_COMPILE_KERNELS"] = str(compile_kernels).lower()
    with tempfile.TemporaryFile() as errors:
        child = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=errors)
        rest = peak = None
        stopped = False
        started = time.perf_counter()
        while child.poll() is None:
            resident = tree_resident_mb(child.pid)
            if rest is None:
                errors.seek(0)
                if b"ready" in errors.read():
                    rest = peak = resident
            elif peak is not None:
                peak = max(peak, resident)
                if resident > limit_mb:
                    child.kill()
                    stopped = True
                    break
            time.sleep(0.02)
        out = child.communicate()[0].decode()
        errors.seek(0)
        log = errors.read().decode(errors="replace")
    result: dict[str, Any] = {"route": route, "tokens": tokens, "rest_mb": rest, "peak_mb": peak}
    if stopped:
        result |= {"stopped_above_mb": limit_mb, "after_s": round(time.perf_counter() - started, 1)}
    elif child.returncode != 0:
        result["error"] = log[-600:]
    else:
        result |= json.loads(out.strip().splitlines()[-1])
    for line in log.splitlines():  # the service route's compile time, when it compiled
        if line.startswith('{"compiled_in_s"'):
            result |= json.loads(line)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tokens", type=int, nargs="+", default=[4096, 8192, 16384])
    parser.add_argument("--routes", nargs="+", default=list(ROUTES), choices=ROUTES)
    parser.add_argument("--threads", type=int, default=2, help="torch threads of each route")
    parser.add_argument("--limit-mb", type=float, default=2048, help="the naive route's memory limit")
    parser.add_argument(
        "--compile-kernels", action="store_true", help="the service route with compile_kernels on"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "summaries.json")
    parser.add_argument("--route", choices=ROUTES, help=argparse.SUPPRESS)  # a child process's one route
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.route is not None:
        import torch

        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
        run_route(arguments.route, arguments.folder, arguments.tokens[0])
        return
    results = []
    with tempfile.TemporaryDirectory() as temporary:
        folder = save_model(Path(temporary) / MODEL)
        for tokens in arguments.tokens:
            for route in arguments.routes:
                result = measure(
                    route, folder, tokens, arguments.threads, arguments.limit_mb, arguments.compile_kernels
                )
                results.append(result)
                print(json.dumps(result), flush=True)
    arguments.out.parent.mkdir(parents=True, exist_ok=True)
    arguments.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
