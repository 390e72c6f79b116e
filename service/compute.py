"""The compute threads and the admission gate: all torch work runs in this pool, never on the event loop.

torch keeps one intra-op thread team per calling thread, so a fixed, small pool of compute threads keeps
their number bounded and warm; each gets cores / max_concurrent intra-op threads so that concurrent
requests do not oversubscribe the cores. At most max_concurrent requests compute and max_queue wait; beyond
that a request is refused at once (503), and none waits or computes past request_timeout_s (504).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import torch

from service.settings import Settings

T = TypeVar("T")


class Overloaded(Exception):
    """Every compute thread is busy and the queue is full (503 with Retry-After)."""


class TimedOut(Exception):
    """The request waited and computed longer than request_timeout_s (504)."""


class ClientGone(Exception):
    """The client disconnected before its answer was ready."""


class ComputePool:
    def __init__(self, settings: Settings):
        self.threads = settings.torch_threads or max(1, (os.cpu_count() or 1) // settings.max_concurrent)
        self.executor = ThreadPoolExecutor(settings.max_concurrent, "attention-compute",
                                           initializer=torch.set_num_threads, initargs=(self.threads,))
        self.capacity = settings.max_concurrent + settings.max_queue
        self.timeout = settings.request_timeout_s
        self.admitted = 0  # computing or waiting; changed on the event loop only

    def _release(self) -> None:
        self.admitted -= 1

    async def run(self, function: Callable[..., T], *args: Any, disconnected: Awaitable[None] | None = None) -> T:
        """function(*args) in a compute thread. A request that times out or whose client leaves gives its place
        back at once if it had not started, else when its computation ends (a running torch call cannot stop)."""
        if self.admitted >= self.capacity:
            raise Overloaded(f"all {self.capacity} places (ATTENTION_MAX_CONCURRENT computing + ATTENTION_MAX_QUEUE "
                             "waiting) are taken; retry shortly")
        loop = asyncio.get_running_loop()
        self.admitted += 1
        future = self.executor.submit(function, *args)
        future.add_done_callback(lambda _: loop.call_soon_threadsafe(self._release))
        result = asyncio.wrap_future(future)
        watcher = asyncio.ensure_future(disconnected) if disconnected is not None else None
        try:
            done, _ = await asyncio.wait({result, watcher} - {None}, timeout=self.timeout,
                                         return_when=asyncio.FIRST_COMPLETED)
            if result in done:
                return result.result()
            future.cancel()
            if watcher in done:
                raise ClientGone()
            raise TimedOut(f"the request took longer than ATTENTION_REQUEST_TIMEOUT_S={self.timeout:g} s (waiting "
                           "and computing); ask for less (fewer layers, tensors or tokens) or retry later")
        finally:
            if watcher is not None:
                watcher.cancel()

    def shutdown(self) -> None:
        self.executor.shutdown(wait=True)
