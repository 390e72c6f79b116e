"""The compute threads: all torch work runs here, never on the event loop.

torch keeps one intra-op thread team per calling thread, so a fixed, small pool of compute threads keeps
their number bounded and warm; each gets cores / max_concurrent intra-op threads so that concurrent
requests do not oversubscribe the cores. Requests beyond max_concurrent wait for a free thread.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import torch
from fastapi import FastAPI

from service.settings import Settings

T = TypeVar("T")


def start_compute_threads(settings: Settings) -> tuple[ThreadPoolExecutor, int]:
    threads = settings.torch_threads or max(1, (os.cpu_count() or 1) // settings.max_concurrent)
    pool = ThreadPoolExecutor(settings.max_concurrent, "attention-compute",
                              initializer=torch.set_num_threads, initargs=(threads,))
    return pool, threads


async def compute(app: FastAPI, function: Callable[..., T], *args: Any) -> T:
    return await asyncio.get_running_loop().run_in_executor(app.state.compute, function, *args)
