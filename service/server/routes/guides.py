"""GET /guides: the repository's guides (docs/*.md), served read-only by the service itself, so that a reader
of /docs offline, or of the air-gapped container, has them too. /guides lists them, /guides/{name} sends one
as plain text (Markdown reads as it is; a browser shows text/plain where it would download text/markdown).

service/server/guides is a link to the repository's docs/ folder, whose files the package carries as package
data (pyproject.toml): one copy of each guide, in docs/, where a reader of the repository finds it. Only the
files found there at start are served, by name: no path from the request reaches the file system."""

from __future__ import annotations

import html
import re
from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import HTMLResponse, Response

from service.server.security import browser_headers

GUIDES_FOLDER = Path(__file__).resolve().parents[1] / "guides"
GUIDES: dict[str, Path] = {path.name: path for path in sorted(GUIDES_FOLDER.glob("*.md"))}
GUIDE_HEADERS = browser_headers()

router = APIRouter(include_in_schema=False)


def _title(guide: Path) -> str:
    """The guide's first heading, without Markdown's code marks."""
    heading = re.search(r"^# (.+)$", guide.read_text(encoding="utf-8"), re.M)
    return heading.group(1).replace("`", "") if heading else guide.stem


@router.get("/guides")
async def guides() -> HTMLResponse:
    """The list, each guide by its title; addresses relative to the page, so they work behind a prefix."""
    items = "".join(
        f'<li><a href="guides/{html.escape(name)}">{html.escape(_title(path))}</a></li>\n'
        for name, path in GUIDES.items()
    )
    page = (
        '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<title>Attention internals service - guides</title>\n<link rel="icon" type="image/png" '
        'href="favicon.ico">\n</head>\n<body>\n<h1>Guides</h1>\n'
        "<p>The repository's docs/ folder, as Markdown. The API's reference is at "
        '<a href="docs">/docs</a>; the explorer page at <a href="./">/</a>.</p>\n'
        f"<ul>\n{items}</ul>\n</body>\n</html>\n"
    )
    return HTMLResponse(page, headers=GUIDE_HEADERS)


@router.get("/guides/{name}")
async def guide(name: str) -> Response:
    path = GUIDES.get(name)
    if path is None:
        raise HTTPException(404, f"found guide {name!r}; expected one of {', '.join(GUIDES)}")
    return Response(path.read_bytes(), media_type="text/plain; charset=utf-8", headers=GUIDE_HEADERS)
