"""Optional API keys (ATTENTION_API_KEYS; off when empty), checked in constant time, never logged."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import HTTPException, Request, Security
from fastapi.security import APIKeyHeader

api_key_header = APIKeyHeader(
    name="X-API-Key", auto_error=False, description="Needed only when the operator sets ATTENTION_API_KEYS."
)


async def require_api_key(request: Request, key: Annotated[str | None, Security(api_key_header)]) -> None:
    keys = request.app.state.settings.api_keys
    if not keys:
        return
    if key is None:
        raise HTTPException(
            401, "missing API key: send it in the X-API-Key header", {"WWW-Authenticate": "ApiKey"}
        )
    if not any(hmac.compare_digest(key.encode(), allowed.get_secret_value().encode()) for allowed in keys):
        raise HTTPException(401, "the X-API-Key header holds no valid key", {"WWW-Authenticate": "ApiKey"})
