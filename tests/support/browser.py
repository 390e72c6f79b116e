"""A real browser for the page tests: Debian's Chromium through Playwright (which cannot download browsers
here), and a page that can reach only the server under test, recording whatever tried to go elsewhere, every
answer of 400 or more, and every Content-Security-Policy violation."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="no Chromium here (apt-get install -y chromium; .ci/run does)"
)
WATCH_VIOLATIONS = (
    "window.__violations = [];"
    "document.addEventListener('securitypolicyviolation', e => "
    "window.__violations.push(e.violatedDirective + ' ' + e.blockedURI));"
)


@contextmanager
def chromium() -> Iterator[Any]:
    """Debian's Chromium, launched through Playwright with the flags this machine needs."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield browser
        browser.close()


@dataclass
class OfflinePage:
    """page: a Playwright page whose requests to any host but 127.0.0.1 are aborted (and listed in `left`);
    `failed` lists the answers of status >= 400 it received, `errors` the console's errors."""

    page: Any
    left: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def violations(self) -> list[str]:
        found: list[str] = self.page.evaluate("window.__violations")
        return found


def offline_page(browser: Any, viewport: dict[str, int] | None = None) -> OfflinePage:
    context = browser.new_context(viewport=viewport or {"width": 1280, "height": 1000})
    watched = OfflinePage(context.new_page())

    def only_loopback(route: Any) -> None:
        if urlsplit(route.request.url).hostname == "127.0.0.1":
            route.continue_()
        else:
            watched.left.append(route.request.url)
            route.abort()

    context.route("**/*", only_loopback)
    watched.page.on(
        "response", lambda r: watched.failed.append(f"{r.status} {r.url}") if r.status >= 400 else None
    )
    watched.page.on("console", lambda m: watched.errors.append(m.text) if m.type == "error" else None)
    watched.page.add_init_script(WATCH_VIOLATIONS)
    return watched
