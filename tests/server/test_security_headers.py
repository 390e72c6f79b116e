"""Hardening headers over HTTP: every answer says nosniff and DENY to framing; the explorer page and /static
add a strict Content-Security-Policy (own origin only, no inline code, no framing; /docs and /redoc get theirs
in test_docs.py). With API keys on, the routes the Security bullet of docs/operations.md names as open stay
open. And the
page works under its CSP in a real browser, with no violation reported."""

from __future__ import annotations

import re

import httpx
import pytest

from devtools.paths import ROOT
from tests.support.browser import WATCH_VIOLATIONS, needs_chromium
from tests.support.http import API_KEY

CAT = {"embeddings": [[1.0, 0.0], [0.0, 1.0]], "weights": {"seed": 0}}
PAGE = ("/", "/static/explorer.js", "/static/explorer.css", "/static/index.html")
NEEDS_KEY = (("POST", "/attend"), ("GET", "/models"))
OPEN = (
    "/healthz",
    "/readyz",
    "/metrics",
    "/",
    "/static/explorer.js",
    "/favicon.ico",
    "/docs",
    "/redoc",
    "/openapi.json",
    "/guides",
)


def policy(response: httpx.Response) -> dict[str, list[str]]:
    header = response.headers["content-security-policy"]
    return {d.split()[0]: d.split()[1:] for d in (part.strip() for part in header.split(";")) if d}


def test_the_page_and_its_files_send_a_strict_csp(server):
    for path in PAGE:
        response = server.client.get(path)
        assert response.status_code == 200, path
        csp = policy(response)
        assert csp["default-src"] == ["'none'"], path
        for directive in ("script-src", "style-src", "connect-src", "img-src", "form-action"):
            assert csp[directive] == ["'self'"], (path, directive, csp)  # no 'unsafe-inline', no CDN
        assert csp["frame-ancestors"] == ["'none'"] and csp["base-uri"] == ["'none'"], path
        assert response.headers["x-frame-options"] == "DENY", path
        assert response.headers["x-content-type-options"] == "nosniff", path
        assert response.headers["referrer-policy"] == "no-referrer", path


def test_every_answer_says_nosniff_and_no_framing(server):
    answers = {
        "GET /healthz": server.client.get("/healthz"),
        "HEAD /readyz": server.client.head("/readyz"),
        "GET /metrics": server.client.get("/metrics"),
        "GET /openapi.json": server.client.get("/openapi.json"),
        "GET /docs": server.client.get("/docs"),
        "GET /redoc": server.client.get("/redoc"),
        "GET /models": server.client.get("/models"),
        "POST /attend 200": server.post(CAT),
        "POST /attend 422": server.post({"embeddings": [[1.0], []]}),
        "GET /missing 404": server.client.get("/missing"),
        "GET /static/missing 404": server.client.get("/static/missing.js"),
    }
    for name, response in answers.items():
        assert response.headers["x-content-type-options"] == "nosniff", name
        assert response.headers["x-frame-options"] == "DENY", name
    assert answers["POST /attend 200"].status_code == 200


def test_with_api_keys_on_only_attend_and_models_need_one(guarded):
    for method, path in NEEDS_KEY:
        body = CAT if method == "POST" else None
        assert guarded.client.request(method, path, json=body).status_code == 401, path
        with_key = guarded.client.request(method, path, json=body, headers={"x-api-key": API_KEY})
        assert with_key.status_code == 200, (path, with_key.text[:200])
    for path in OPEN:
        assert guarded.client.get(path).status_code == 200, path
    operations = (ROOT / "docs" / "operations.md").read_text()
    security = re.search(r"^- \*\*Security\.\*\*(.*?)^- ", operations, re.M | re.S)
    assert security, "docs/operations.md: no Security bullet"
    named = [path for _, path in NEEDS_KEY] + [p for p in OPEN if not p.startswith("/static/")]
    for path in [*named, "/static"]:
        assert f"`{path}`" in security.group(1), f"docs/operations.md's Security bullet does not name {path}"


@pytest.mark.slow
@needs_chromium
def test_the_page_works_under_its_csp_without_a_violation(server, browser):
    page = browser.new_page()
    try:
        messages: list[str] = []
        page.on("console", lambda message: messages.append(f"{message.type}: {message.text}"))
        page.add_init_script(WATCH_VIOLATIONS)
        response = page.goto(server.url + "/")
        assert response is not None
        assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
        # a function, not an expression: Playwright evals an expression, which the CSP forbids
        page.wait_for_function("() => document.querySelectorAll('#model option').length > 1")
        page.click("#run")
        page.wait_for_function("() => !document.getElementById('run').disabled")
        assert page.locator("#heatmap").get_attribute("data-rows"), "no heatmap drawn"
        # the step-through and the tables are written with innerHTML: no inline style or handler in them
        assert page.evaluate("window.__violations") == []
        refused = [m for m in messages if "Content Security Policy" in m or "Refused to" in m]
        assert not refused, messages
    finally:
        page.close()
