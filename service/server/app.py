"""The FastAPI application of the server process: routers, error handlers, start-up (the compute pool,
readiness) and the OpenAPI document. Nothing here or below service/server/ imports torch."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from schemas.oip import HEADER_LENGTH
from service.compute.models.hub import fetched
from service.logs import log_json_to_stderr
from service.server.compute_interface import Compute
from service.server.compute_pool import ComputePool
from service.server.handlers import HANDLERS
from service.server.http_protocol import HTTP_SETTINGS
from service.server.observability import Metrics, RequestObserver
from service.server.openapi_document import build_document
from service.server.routes import attend as attend_route
from service.server.routes import guides, health, page
from service.server.routes import metrics as metrics_route
from service.server.routes import models as models_route
from service.server.routes import oip as oip_route
from service.server.routes.docs import add_docs
from service.server.startup_errors import start_clearly
from service.server.state import ServiceState, StartCompute, attach_service_state, service_state
from service.settings import Settings, get_settings

log = logging.getLogger("attention_service")


async def start_pool(settings: Settings, metrics: Metrics) -> Compute:
    """The compute processes (service/server/compute_pool.py); a model that cannot be served (tampered,
    unsupported) stops the start-up here."""
    pool = ComputePool(
        settings,
        on_replace=lambda reason: metrics.replaced.labels(reason).inc(),
        on_skip=metrics.skipped.inc,
        on_batch=metrics.batch_sizes.observe,
    )
    await pool.start()
    return pool


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
    """Starts the computation, reports it (metrics, log), serves, stops it. The settings are also handed to
    uvicorn's protocols through the lifespan state (service/server/http_protocol.py reads its limits
    there)."""
    state = service_state(app)
    began = time.perf_counter()
    # Hub models are fetched (first start) or found pinned in the cache, once, before any compute process
    state.settings = settings = await asyncio.to_thread(fetched, state.settings)
    metrics = state.metrics
    state.compute = compute = await state.start_compute(settings, metrics)
    started = compute.started
    assert started is not None  # started computes
    for model in compute.models:
        if model.loaded and model.load_seconds is not None:
            metrics.model_load.labels(model.name).set(model.load_seconds)
    metrics.device.labels(started["device"], started["torch_version"]).set(1)
    metrics.compute_up.set_function(lambda: compute.up)
    state.ready = True
    log.info(
        "ready in %.2f s: device=%s torch=%s, %d compute processes x %d torch threads, queue %d, "
        "timeout %g s, API keys %s",
        time.perf_counter() - began,
        started["device"],
        started["torch_version"],
        compute.up,
        started["threads_in_use"],
        settings.max_queue,
        settings.request_timeout_s,
        "on" if settings.api_keys else "off",
    )
    yield {HTTP_SETTINGS: settings}
    state.ready = False
    await compute.shutdown()


def _openapi(app: FastAPI) -> dict[str, Any]:
    if app.openapi_schema is None:
        app.openapi_schema = build_document(app)
    return app.openapi_schema


# every answer's: no content sniffing, no framing (the page's own Content-Security-Policy: routes/page.py)
HARDENING = ((b"x-content-type-options", b"nosniff"), (b"x-frame-options", b"DENY"))


class ServiceLayer:
    """The service's one ASGI layer around FastAPI's routing: an HTTP request is observed (request id,
    metrics, log line: observability.py RequestObserver) and its answer gets the HARDENING headers after
    its X-Request-ID; the lifespan's start-up failures are told clearly (startup_errors.py). One layer, not
    one per concern: each layer cost every request a coroutine, and each send wrapper a call per message
    (issue 26)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app, self.observe = app, RequestObserver(metrics, stamped=HARDENING)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self.observe(self.app, scope, receive, send)
        elif kind == "lifespan":
            await start_clearly(self.app, scope, receive, send)
        else:
            await self.app(scope, receive, send)


def create_app(settings: Settings | None = None, start_compute: StartCompute = start_pool) -> FastAPI:
    """The app; `start_compute` starts its computation in the lifespan (a Ray replica passes its own)."""
    log_json_to_stderr()
    app = FastAPI(
        title="Attention internals service",
        version="0.1.0",
        description="Scaled dot-product attention, computed in PyTorch, with every internal returned as "
        "JSON: Q, K, V, scores, scaled scores, softmax weights, per-head context and output.\n\n"
        "Guides, served by this service: [the list](guides); [the API](guides/api.md) (fields, answers, "
        "errors, formats), [models](guides/models.md), [the Open Inference Protocol](guides/oip.md), "
        "[the explorer page](guides/explorer.md), [operations and settings](guides/operations.md), "
        "[deployment](guides/deployment.md).",
        lifespan=lifespan,
        exception_handlers=HANDLERS,
        # Swagger UI and ReDoc come from routes/docs.py, served by the service itself (FastAPI's load a CDN)
        docs_url=None,
        redoc_url=None,
    )
    settings = settings or get_settings()
    state = ServiceState(settings, Metrics(), start_compute)
    attach_service_state(app, state)
    app.include_router(health.router)
    app.include_router(attend_route.router)
    app.include_router(models_route.router)
    app.include_router(oip_route.router)
    app.include_router(metrics_route.router)
    app.include_router(page.router)
    app.include_router(guides.router)
    app.router.routes.insert(0, attend_route.SERVED)  # before every other route: see its comment
    app.mount("/static", page.static_files, name="static")
    add_docs(app)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            # the binary extension of OIP infer sends and answers the JSON header's length in a header
            allow_headers=["content-type", "x-api-key", "x-request-id", HEADER_LENGTH.lower()],
            expose_headers=["x-request-id", "retry-after", HEADER_LENGTH.lower()],
        )
    app.add_middleware(ServiceLayer, metrics=state.metrics)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


app = create_app()
