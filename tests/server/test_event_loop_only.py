"""No route of the server runs code in a worker thread per request: FastAPI runs a plain `def` endpoint or
dependency in its thread pool, two thread switches that cost a small request about a third of its CPU in the
server process under load (issue 26), while an `async def` one is awaited in the event loop. The routes' own
code never blocks (the computation is in the compute processes), so each must be a coroutine function."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from service.server.app import create_app


def _awaited(call: Callable[..., Any]) -> bool:
    """What FastAPI awaits rather than hands to its thread pool: a coroutine function, or an object whose
    __call__ is one (a security scheme such as APIKeyHeader)."""
    return inspect.iscoroutinefunction(call) or inspect.iscoroutinefunction(type(call).__call__)


def _calls(dependant: Dependant) -> Iterator[Callable[..., Any]]:
    if dependant.call is not None:
        yield dependant.call
    for dependency in dependant.dependencies:
        yield from _calls(dependency)


def _api_routes(app: FastAPI) -> list[APIRoute]:
    """The app's routes, those of its included routers too (FastAPI from 0.16x keeps an included router whole,
    its routes reached through iter_route_contexts; before, include_router copied them into app.routes)."""
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:
        routes = list(app.routes)
    else:
        routes = [context.route for context in iter_route_contexts(app.routes)]
    return [route for route in routes if isinstance(route, APIRoute)]


def test_every_endpoint_and_dependency_is_awaited_in_the_event_loop():
    routes = _api_routes(create_app())
    assert {"/attend", "/v2/models/{name}/infer", "/models", "/readyz"} <= {route.path for route in routes}
    in_threads = sorted(
        {
            f"{route.path}: {call.__module__}.{getattr(call, '__qualname__', type(call).__name__)}"
            for route in routes
            for call in _calls(route.dependant)
            if not _awaited(call)
        }
    )
    assert in_threads == []
