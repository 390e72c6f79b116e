"""Optional API keys (ATTENTION_API_KEYS; off when empty), checked in constant time, never logged; the
Content-Security-Policy of the pages the service serves."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import HTTPException, Security
from fastapi.security import APIKeyHeader

from service.server.state import AppSettings

api_key_header = APIKeyHeader(
    name="X-API-Key", auto_error=False, description="Needed only when the operator sets ATTENTION_API_KEYS."
)


async def require_api_key(
    settings: AppSettings, key: Annotated[str | None, Security(api_key_header)]
) -> None:
    keys = settings.api_keys
    if not keys:
        return
    if key is None:
        raise HTTPException(
            401, "missing API key: send it in the X-API-Key header", {"WWW-Authenticate": "ApiKey"}
        )
    if not any(hmac.compare_digest(key.encode(), allowed.get_secret_value().encode()) for allowed in keys):
        raise HTTPException(401, "the X-API-Key header holds no valid key", {"WWW-Authenticate": "ApiKey"})


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
