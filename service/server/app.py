"""The FastAPI application of the server process: routers, error handlers, start-up (the compute pool,
readiness) and the OpenAPI document. Nothing here or below service/server/ imports torch."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.compute.models.hub import fetched
from service.logs import log_json_to_stderr
from service.server.compute_pool import ComputePool
from service.server.handlers import HANDLERS
from service.server.observability import Metrics, RequestObserver
from service.server.openapi_document import build_document
from service.server.routes import attend as attend_route
from service.server.routes import health, page
from service.server.routes import metrics as metrics_route
from service.server.routes import models as models_route
from service.server.routes import oip as oip_route
from service.server.routes.docs import add_docs
from service.server.startup_errors import ClearStartupErrors
from service.settings import Settings, get_settings

log = logging.getLogger("attention_service")


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    # Hub models are fetched (first start) or found pinned in the cache, once, before any compute process
    app.state.settings = settings = await asyncio.to_thread(fetched, app.state.settings)
    metrics: Metrics = app.state.metrics
    app.state.compute = pool = ComputePool(
        settings,
        on_replace=lambda reason: metrics.replaced.labels(reason).inc(),
        on_skip=metrics.skipped.inc,
    )
    started = (
        await pool.start()
    )  # a model that cannot be served (tampered, unsupported) stops the start-up here
    for model in started["models"]:
        if model["loaded"]:
            metrics.model_load.labels(model["name"]).set(model["load_seconds"])
    app.state.device, app.state.torch_version = started["device"], started["torch_version"]
    app.state.ready = True
    metrics.device.labels(started["device"], started["torch_version"]).set(1)
    log.info(
        "ready: device=%s torch=%s, %d compute processes x %d torch threads, queue %d, timeout %g s, "
        "API keys %s",
        started["device"],
        started["torch_version"],
        settings.max_concurrent,
        started["torch_threads"],
        settings.max_queue,
        settings.request_timeout_s,
        "on" if settings.api_keys else "off",
    )
    yield
    app.state.ready = False
    await pool.shutdown()


def _openapi(app: FastAPI) -> dict[str, Any]:
    if app.openapi_schema is None:
        app.openapi_schema = build_document(app)
    return app.openapi_schema


class HardeningHeaders:
    """Appends X-Content-Type-Options: nosniff and X-Frame-Options: DENY to every answer: two tuples onto the
    header list of http.response.start, no other work. The page's own Content-Security-Policy is in
    routes/page.py."""

    HEADERS = ((b"x-content-type-options", b"nosniff"), (b"x-frame-options", b"DENY"))

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_hardened(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *self.HEADERS]
            await send(message)

        await self.app(scope, receive, send_hardened)


def create_app(settings: Settings | None = None) -> FastAPI:
    log_json_to_stderr()
    app = FastAPI(
        title="Attention internals service",
        version="0.1.0",
        description="Scaled dot-product attention, computed in PyTorch, with every internal returned as "
        "JSON: Q, K, V, scores, scaled scores, softmax weights, per-head context and output.",
        lifespan=lifespan,
        exception_handlers=HANDLERS,
        # Swagger UI and ReDoc come from routes/docs.py, served by the service itself (FastAPI's load a CDN)
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings = settings or get_settings()
    app.state.metrics = Metrics()
    app.state.ready, app.state.device, app.state.torch_version = False, None, None
    app.include_router(health.router)
    app.include_router(attend_route.router)
    app.include_router(models_route.router)
    app.include_router(oip_route.router)
    app.include_router(metrics_route.router)
    app.include_router(page.router)
    app.mount("/static", page.static_files, name="static")
    add_docs(app)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["content-type", "x-api-key", "x-request-id"],
            expose_headers=["x-request-id", "retry-after"],
        )
    app.add_middleware(RequestObserver, metrics=app.state.metrics)
    app.add_middleware(HardeningHeaders)
    app.add_middleware(ClearStartupErrors)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


app = create_app()
