"""Swagger UI at /docs and ReDoc at /redoc, served by the service itself with no CDN (so they work offline and
in the air-gapped container), and the favicon of these pages and of the explorer page.

Their assets come from the PyPI package fastapi-standalone-docs (pinned in pyproject.toml), a copy of the
released swagger-ui-dist (Swagger UI 5: FastAPI writes OpenAPI 3.1, which Swagger UI 4 cannot render) and
ReDoc 2, each beside its licence, which is served too (/docs/swagger-ui/LICENSE,
/redoc/redoc.standalone.js.LICENSE.txt). The HTML is the service's own, with no inline script (Swagger UI
starts from static/docs.js), so the pages' Content-Security-Policy keeps to the service's own origin, relaxed
only where each UI needs it (below)."""

from __future__ import annotations

import html
import importlib.util
from pathlib import Path

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles
from starlette.responses import Response
from starlette.types import Scope

from service.server.routes.page import STATIC
from service.server.security import browser_headers

SWAGGER_UI_ASSETS = "/docs/swagger-ui"
# ReDoc's bundle loads its logo from the page's own path + "/logo-mini.svg" (the package's patch of its CDN
# address), so its files sit right under /redoc
REDOC_ASSETS = "/redoc"

# Swagger UI's stylesheet draws its icons from data: images; otherwise the page's own policy
SWAGGER_UI_HEADERS = browser_headers({"img-src": "'self' data:"})
# ReDoc (styled-components) writes its styles into <style> elements at run time, and runs its search index
# in a worker made from a blob: URL
REDOC_HEADERS = browser_headers(
    {"style-src": "'self' 'unsafe-inline'", "img-src": "'self' data:", "worker-src": "blob:"}
)


def _assets() -> Path:
    spec = importlib.util.find_spec("fastapi_standalone_docs")
    if spec is None or spec.origin is None:
        raise RuntimeError("fastapi-standalone-docs is missing: reinstall the service (./scripts/install.sh)")
    return Path(spec.origin).parent / "static"


class _StaticFilesWithHeaders(StaticFiles):
    def __init__(self, *, directory: Path, headers: dict[str, str]) -> None:
        super().__init__(directory=directory)
        self.extra_headers = headers

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers.update(self.extra_headers)
        return response


router = APIRouter(include_in_schema=False)


def _page(title: str, head: str, body: str) -> str:
    """Addresses are relative to the page (/docs, /redoc), so the pages also work behind a path prefix."""
    return (
        '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f'<title>{html.escape(title)}</title>\n<link rel="icon" type="image/png" href="favicon.ico">\n'
        f"{head}</head>\n<body>\n{body}</body>\n</html>\n"
    )


def _openapi_url(request: Request) -> str:
    return html.escape((request.app.openapi_url or "/openapi.json").lstrip("/"))


@router.get("/docs")
async def swagger_ui(request: Request) -> HTMLResponse:
    page = _page(
        f"{request.app.title} - Swagger UI",
        f'<link rel="stylesheet" href="{SWAGGER_UI_ASSETS[1:]}/swagger-ui.css">\n',
        f'<div id="swagger-ui" data-openapi-url="{_openapi_url(request)}"></div>\n'
        f'<script src="{SWAGGER_UI_ASSETS[1:]}/swagger-ui-bundle.js"></script>\n'
        '<script src="static/docs.js"></script>\n',
    )
    return HTMLResponse(page, headers=SWAGGER_UI_HEADERS)


@router.get("/redoc")
async def redoc(request: Request) -> HTMLResponse:
    page = _page(
        f"{request.app.title} - ReDoc",
        "",
        f'<redoc spec-url="{_openapi_url(request)}"></redoc>\n'
        f'<script src="{REDOC_ASSETS[1:]}/redoc.standalone.js"></script>\n',
    )
    return HTMLResponse(page, headers=REDOC_HEADERS)


@router.get("/favicon.ico")
async def favicon() -> FileResponse:
    """A PNG (every browser takes one at this address): a small attention heatmap."""
    return FileResponse(
        STATIC / "favicon.png", media_type="image/png", headers={"Cache-Control": "max-age=86400"}
    )


def add_docs(app: FastAPI) -> None:
    """Replaces FastAPI's own /docs and /redoc (create the app with docs_url=None and redoc_url=None)."""
    assets = _assets()
    app.include_router(router)
    app.mount(
        SWAGGER_UI_ASSETS, _StaticFilesWithHeaders(directory=assets / "swagger", headers=SWAGGER_UI_HEADERS)
    )
    app.mount(REDOC_ASSETS, _StaticFilesWithHeaders(directory=assets / "redoc", headers=REDOC_HEADERS))
