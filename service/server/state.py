"""The server's state, typed: what the app holds (settings, metrics, the computation once started) and the
routes' dependencies on it (Annotated[..., Depends(...)]), instead of untyped app.state attributes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from starlette.applications import Starlette

from service.errors import NoComputeProcess
from service.server.compute_interface import Compute
from service.server.observability import Metrics
from service.settings import Settings

# how an app starts its computation (the compute pool, or a Ray replica's compute thread)
StartCompute = Callable[[Settings, Metrics], Awaitable[Compute]]


@dataclass
class ServiceState:
    settings: Settings
    metrics: Metrics
    start_compute: StartCompute
    compute: Compute | None = None  # from the lifespan's start to its end
    ready: bool = False  # started, and not stopping

    def computing(self) -> bool:
        """Ready, and at least one compute process (or thread) computes."""
        return self.ready and self.compute is not None and self.compute.up > 0


def attach_service_state(app: Starlette, state: ServiceState) -> None:
    """The one place app.state is written: service_state reads it back."""
    app.state.service = state


def service_state(app: Starlette) -> ServiceState:
    state: ServiceState = app.state.service
    return state


# The dependencies are `async def`: FastAPI awaits those in the event loop, while it runs a plain `def` in its
# thread pool, two thread switches per request for an attribute read (about a third of a small request's CPU
# in the server process under load: docs/benchmarks.md).


async def _state(request: Request) -> ServiceState:
    return service_state(request.app)


async def _settings(request: Request) -> Settings:
    return service_state(request.app).settings


def compute_of(state: ServiceState) -> Compute:
    """The computation, once started (else a 503)."""
    if state.compute is None:
        raise NoComputeProcess("the service is still starting; retry shortly")
    return state.compute


async def _compute(request: Request) -> Compute:
    return compute_of(service_state(request.app))


State = Annotated[ServiceState, Depends(_state)]
AppSettings = Annotated[Settings, Depends(_settings)]
ComputeDependency = Annotated[Compute, Depends(_compute)]
