"""GET /: the attention explorer page, with its script and style under /static (no CDN: it works offline).

The page and its files are sent with a strict Content-Security-Policy (security.py): scripts, styles and
fetches from this origin only (the page has no inline script or style), no plugins, no <base>, and no framing
by another site."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from starlette.responses import Response
from starlette.types import Scope

from service.server.security import browser_headers

STATIC = Path(__file__).resolve().parents[1] / "static"
PAGE_HEADERS = browser_headers()

router = APIRouter(tags=["explorer"])


class _PageStaticFiles(StaticFiles):
    """StaticFiles whose answers carry the page's headers."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers.update(PAGE_HEADERS)
        return response


static_files = _PageStaticFiles(directory=STATIC)


@router.get("/", include_in_schema=False)
async def explorer() -> FileResponse:
    return FileResponse(STATIC / "index.html", media_type="text/html", headers=PAGE_HEADERS)
