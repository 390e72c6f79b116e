"""Optional API keys (ATTENTION_API_KEYS; off when empty), checked in constant time, never logged; the
Content-Security-Policy of the pages the service serves."""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request, Security
from fastapi.security import APIKeyHeader

from service.server.compute_interface import Compute
from service.server.state import compute_of, service_state
from service.settings import Settings

api_key_header = APIKeyHeader(
    name="X-API-Key", auto_error=False, description="Needed only when the operator sets ATTENTION_API_KEYS."
)
ApiKey = Annotated[str | None, Security(api_key_header)]


def check_api_key(settings: Settings, key: str | None) -> None:
    """A 401 unless `key` is one of the operator's keys (or none is set)."""
    keys = settings.api_keys
    if not keys:
        return
    if key is None:
        raise HTTPException(
            401, "missing API key: send it in the X-API-Key header", {"WWW-Authenticate": "ApiKey"}
        )
    if not any(hmac.compare_digest(key.encode(), allowed.get_secret_value().encode()) for allowed in keys):
        raise HTTPException(401, "the X-API-Key header holds no valid key", {"WWW-Authenticate": "ApiKey"})


# The settings are read from the request here, not through the AppSettings dependency: FastAPI solves each
# dependency of a request anew, about 15 µs apiece in the server process, whose event loop bounds how many
# small requests the service answers (issue 26, docs/benchmarks.md).


async def require_api_key(request: Request, key: ApiKey) -> None:
    check_api_key(service_state(request.app).settings, key)


@dataclass(frozen=True)
class Keyed:
    """A request whose API key was checked, with what a computing route needs: the settings and the
    computation."""

    settings: Settings
    compute: Compute


def keyed(request: Request, key: str | None) -> Keyed:
    """The API key `key` checked, then the computation looked for, in that order (a 401 before the 503 of a
    service still starting): require_api_key, AppSettings and ComputeDependency in one step."""
    state = service_state(request.app)
    check_api_key(state.settings, key)
    return Keyed(state.settings, compute_of(state))


def sent_api_key(request: Request) -> str | None:
    """The API key as api_key_header reads it (an empty header is none), without FastAPI's dependency
    solving: for POST /attend's route (service/server/routes/attend.py)."""
    return request.headers.get(api_key_header.model.name) or None


async def _keyed_compute(request: Request, key: ApiKey) -> Keyed:
    return keyed(request, key)


KeyedCompute = Annotated[Keyed, Depends(_keyed_compute)]


# The Content-Security-Policy of the explorer page and its files: scripts, styles, images and fetches from
# this origin only (the page has no inline script or style), no plugins, no <base>, forms only to itself, and
# no framing by another site. Swagger UI and ReDoc (routes/docs.py) relax a few directives, each said there.
OWN_ORIGIN_ONLY: dict[str, str] = {
    "default-src": "'none'",
    "script-src": "'self'",
    "style-src": "'self'",
    "img-src": "'self'",
    "connect-src": "'self'",
    "base-uri": "'none'",
    "form-action": "'self'",
    "frame-ancestors": "'none'",
}


def browser_headers(relaxed: dict[str, str] | None = None) -> dict[str, str]:
    """The headers of a page and of the files it loads: OWN_ORIGIN_ONLY with the `relaxed` directives
    replacing its own, and no Referer sent anywhere."""
    policy = {**OWN_ORIGIN_ONLY, **(relaxed or {})}
    return {
        "Content-Security-Policy": "; ".join(f"{name} {value}" for name, value in policy.items()),
        "Referrer-Policy": "no-referrer",
    }
