"""A start-up that fails for a reason the operator can act on (a model that cannot be fetched or served) is
told in one log line that names the model, not as a traceback: Starlette hands uvicorn the formatted
traceback of a failed lifespan start-up, and uvicorn logs it whole."""

from __future__ import annotations

import contextlib
import sys

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import ModelError


async def start_clearly(app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
    """The lifespan of `app`, whose start-up failure for a ModelError is told in one line (called by the
    service's one ASGI layer, service/server/app.py ServiceLayer)."""

    async def send_clearly(message: Message) -> None:
        # Starlette sends startup.failed from within its `except`: the exception is the one being handled
        error = sys.exc_info()[1]
        if message["type"] == "lifespan.startup.failed" and isinstance(error, ModelError):
            message = {**message, "message": f"start-up failed: {error}"}
        await send(message)

    # told above; uvicorn then logs "Application startup failed. Exiting." and exits with 3
    with contextlib.suppress(ModelError):
        await app(scope, receive, send_clearly)
