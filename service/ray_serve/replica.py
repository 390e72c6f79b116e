"""The service as one Ray Serve replica, without Ray itself (so that it also runs, and is tested, under
uvicorn).

The app is service/server/app.py's, with the same routes, handlers, middleware, lifespan and OpenAPI document;
only its computation differs (ReplicaCompute, the same Compute interface as the compute pool): instead of a
pool of compute processes, the replica computes in its own process, on one compute thread, with what a
compute process runs (service/compute/entry.py at start-up: models and warm-up; the doors of
service/compute/doors.py for each request: /attend's and the Open Inference Protocol's infer). Ray
Serve is the pool: it sends a replica at most max_ongoing_requests at once, queues the others in its proxies
(503 with Retry-After beyond max_queued_requests), and replaces a replica whose process dies or whose health
check fails.

A computation past ATTENTION_REQUEST_TIMEOUT_S is answered 504 as in the plain service, but a thread cannot be
stopped: the replica then reports itself unhealthy (`runaway`), so Serve stops sending it requests and
replaces its process, which gives the core and memory back.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from prometheus_client import Gauge
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from schemas.service_info import ModelInfo
from service.compute.doors import DOORS
from service.compute.entry import start_in_this_process
from service.compute.memory import MemoryKeeper
from service.compute.models.registry import ModelRegistry
from service.errors import ClientGone, NoComputeProcess, TimedOut
from service.protocol import ATTEND, EXPIRED, ResponseFormat, Started, expired
from service.server.app import create_app
from service.server.compute_interface import ClientWatch, Held, described_models
from service.server.compute_pool import Answer
from service.server.observability import Metrics
from service.server.state import service_state
from service.settings import Settings

log = logging.getLogger("attention_service.ray_serve")


@dataclass(frozen=True)
class ReplicaIdentity:
    """Who answers: the Serve replica's id, its Ray node and its process (attention_replica_info's labels)."""

    replica: str
    node: str
    pid: int


class ReplicaCompute:
    """The replica's computation (service/server/compute_interface.py Compute): one request at a time on one
    compute thread; Ray Serve bounds how many wait here."""

    def __init__(
        self, settings: Settings, executor: ThreadPoolExecutor, models: ModelRegistry, started: Started
    ):
        self.settings, self.executor, self.registry, self.started = settings, executor, models, started
        self.described = described_models(started)
        self.timeout = settings.request_timeout_s
        self.memory = MemoryKeeper()  # after start-up and warm-up: that is the size at rest
        self.computing: object | None = None  # the job on the compute thread now
        self.runaway: str | None = None  # why this replica must be replaced, while a runaway computation runs
        self.runaway_job: object | None = None

    @classmethod
    async def start(cls, settings: Settings) -> ReplicaCompute:
        """Loads the models (unless lazy) and warms up on the compute thread itself; raises ModelError for a
        model that cannot be served, which fails the replica's start."""
        executor = ThreadPoolExecutor(1, thread_name_prefix="attention-compute")
        loop = asyncio.get_running_loop()
        models, started = await loop.run_in_executor(executor, start_in_this_process, settings)
        return cls(settings, executor, models, started)

    @property
    def models(self) -> list[ModelInfo]:
        return self.described

    @property
    def up(self) -> int:
        """1 while this replica can compute, 0 while a runaway computation holds its compute thread."""
        return 0 if self.runaway else 1

    def _compute(self, body: bytes, kind: int, media: ResponseFormat, deadline: float, job: object) -> Answer:
        """On the compute thread: a job whose deadline passed while it waited is skipped (it was answered
        504), as in a compute process. A stream's frames are joined into one answer (Serve's proxy delivers
        it as a whole: a replica holds an NDJSON answer entire, so the limits count all of it)."""
        if expired(deadline):
            return 504, EXPIRED
        self.computing = job
        try:
            answered = list(DOORS[kind](body, self.settings, self.registry, media, True))
            return answered[0][0], b"".join(content for _, content, _ in answered)
        finally:
            self.computing = None
            if self.runaway and job is self.runaway_job:
                log.warning("the runaway computation ended after all; this replica computes again")
                self.runaway = None
            self.memory.after_request()

    async def run(
        self,
        body: bytes,
        disconnected: ClientWatch | None = None,
        media: ResponseFormat = ResponseFormat.JSON,
        kind: int = ATTEND,
        client: str = "",  # the compute pool's share per client; behind Serve's proxy every client is one
    ) -> Held:
        if self.runaway:
            raise NoComputeProcess(f"{self.runaway}; retry shortly")
        job = object()
        deadline = time.monotonic() + self.timeout
        computing = asyncio.get_running_loop().run_in_executor(
            self.executor, self._compute, body, kind, media, deadline, job
        )
        watcher = asyncio.ensure_future(disconnected()) if disconnected is not None else None
        awaited: set[asyncio.Future[Any]] = {computing} if watcher is None else {computing, watcher}
        try:
            done, _ = await asyncio.wait(awaited, timeout=self.timeout, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            # Serve cancels a request whose client left or that ran past the proxy's request_timeout_s: a
            # computation not started yet is dropped (a started one cannot be stopped and ends on its own)
            computing.cancel()
            raise
        finally:
            if watcher is not None:
                watcher.cancel()
        if computing in done:
            status, content = computing.result()
            return Held(status, content, lambda: None)
        computing.cancel()  # dropped if it has not started
        if watcher is not None and watcher in done:
            raise ClientGone()
        if self.computing is job:
            self.runaway, self.runaway_job = (
                f"a computation ran past ATTENTION_REQUEST_TIMEOUT_S={self.timeout:g} s on this replica's "
                "compute thread, which cannot stop it: the replica is being replaced",
                job,
            )
            log.error("%s", self.runaway)
        raise TimedOut.after(self.timeout)

    async def shutdown(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)


async def start_replica(settings: Settings, metrics: Metrics) -> ReplicaCompute:
    """The replica's start, in the app's lifespan: models loaded and warmed up before Serve counts it as
    running."""
    return await ReplicaCompute.start(settings)


class WithoutRequestIdHeader:
    """Drops the app's X-Request-ID from its answers: Serve's proxy stamps every answer with the request's id
    itself (the one it passed to the replica, the caller's or its own), which would make two."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_without(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [(k, v) for k, v in message["headers"] if k.lower() != b"x-request-id"]
            await send(message)

        await self.app(scope, receive, send_without if scope["type"] == "http" else send)


def replica_app(settings: Settings, identity: ReplicaIdentity, behind_serve: bool = True) -> FastAPI:
    """service/server/app.py's app computing in this process; its /metrics adds attention_replica_info, so
    that each answer of /metrics says which replica's metrics it holds."""
    app = create_app(settings, start_compute=start_replica)
    if behind_serve:
        app.add_middleware(WithoutRequestIdHeader)
    Gauge(
        "attention_replica_info",
        "The Ray Serve replica whose metrics these are (value 1): replica id, Ray node id, process id.",
        ["replica", "node", "pid"],
        registry=service_state(app).metrics.registry,
    ).labels(identity.replica, identity.node, str(identity.pid)).set(1)
    return app


def local_app() -> FastAPI:
    """The replica's app outside Ray, settings from the environment: `uvicorn --factory
    service.ray_serve.replica:local_app` (the tests run it so)."""
    settings = Settings()
    if settings.torch_threads is None:
        settings = settings.model_copy(update={"torch_threads": 1})
    return replica_app(settings, ReplicaIdentity("local", "local", os.getpid()), behind_serve=False)
