"""A start-up that fails for a reason the operator can act on (a model that cannot be fetched or served) is
told in one log line that names the model, not as a traceback: Starlette hands uvicorn the formatted
traceback of a failed lifespan start-up, and uvicorn logs it whole."""

from __future__ import annotations

import contextlib
import sys

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import ModelError


class ClearStartupErrors:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return

        async def send_clearly(message: Message) -> None:
            # Starlette sends startup.failed from within its `except`: the exception is the one being handled
            error = sys.exc_info()[1]
            if message["type"] == "lifespan.startup.failed" and isinstance(error, ModelError):
                message = {**message, "message": f"start-up failed: {error}"}
            await send(message)

        # told above; uvicorn then logs "Application startup failed. Exiting." and exits with 3
        with contextlib.suppress(ModelError):
            await self.app(scope, receive, send_clearly)
