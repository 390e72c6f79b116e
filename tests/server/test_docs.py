"""Swagger UI (/docs) and ReDoc (/redoc) work without a network: their assets, licences and the favicon are
the service's own, their pages keep to the service's origin by CSP, and in a real browser that may reach
nothing but 127.0.0.1, /docs shows every operation and runs each one-click example of POST /attend through
"Try it out" > example > "Execute", showing a 200 whose numbers are the API's and, for the worked examples,
the golden ones."""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import urljoin

import numpy as np
import pytest

from service.server.openapi_examples import load_golden
from tests.support.browser import OfflinePage, needs_chromium, offline_page

TENSORS = ("q", "k", "v", "scores", "scaled_scores", "weights", "context", "output")


def policy(header: str) -> dict[str, list[str]]:
    return {d.split()[0]: d.split()[1:] for d in (part.strip() for part in header.split(";")) if d}


def attend_examples(document: dict[str, Any]) -> dict[str, Any]:
    body = document["paths"]["/attend"]["post"]["requestBody"]["content"]["application/json"]
    examples: dict[str, Any] = body["examples"]
    return examples


def test_docs_and_redoc_load_only_their_own_assets_under_a_strict_csp(server):
    for page in ("/docs", "/redoc"):
        response = server.client.get(page)
        assert response.status_code == 200, page
        assets = re.findall(r"""(?:src|href)=["']([^"']+)""", response.text)
        assert len(assets) >= 2, (page, assets)  # its script and its icon at least
        for asset in assets:
            assert not re.match(r"[a-z]+:|//", asset), (page, asset)  # no other origin: relative addresses
            fetched = server.client.get(urljoin(server.url + page, asset))
            assert fetched.status_code == 200, (page, asset)
        csp = policy(response.headers["content-security-policy"])
        assert csp["default-src"] == ["'none'"] and csp["script-src"] == ["'self'"], (page, csp)
        assert csp["connect-src"] == ["'self'"] and csp["img-src"] == ["'self'", "data:"], (page, csp)
        assert csp["frame-ancestors"] == ["'none'"] and csp["base-uri"] == ["'none'"], (page, csp)
        assert response.headers["referrer-policy"] == "no-referrer", page
    # Swagger UI needs no inline style; ReDoc's styled-components write <style> elements
    assert policy(server.client.get("/docs").headers["content-security-policy"])["style-src"] == ["'self'"]


def test_the_swagger_ui_and_redoc_licences_are_served_beside_them(server):
    swagger = server.client.get("/docs/swagger-ui/LICENSE")
    assert swagger.status_code == 200 and "Apache License" in swagger.text
    redoc = server.client.get("/redoc/redoc.standalone.js.LICENSE.txt")
    assert redoc.status_code == 200 and "ReDoc" in redoc.text


def test_the_favicon_of_the_page_and_docs_is_a_png(server):
    icon = server.client.get("/favicon.ico")  # where a browser asks for the explorer page's icon
    assert icon.status_code == 200 and icon.headers["content-type"] == "image/png"
    assert icon.content.startswith(b"\x89PNG\r\n\x1a\n")
    assert '<link rel="icon" type="image/png" href="favicon.ico">' in server.client.get("/docs").text


def golden_expectations(request: dict[str, Any]) -> dict[str, Any] | None:
    """The golden file's expected tensors when the request is one of the worked examples' inputs."""
    cat, age = load_golden("seed_cat_eats_fish"), load_golden("seed_age_lookup")
    if request.get("embeddings") == cat["embeddings"] and "scale" not in request:
        layout = request.get("weights", {}).get("layout", "in_out")
        if all(request["weights"].get(f"w_{m}") == cat[f"w_{m}_{layout}"] for m in "qkv"):
            expected: dict[str, Any] = cat["expected"]
            return expected
    if all(request.get(name) == age[name] for name in ("query", "key", "value")):
        for expected in (age["expected_scaled"], age["expected_unscaled"]):
            if request.get("scale", age["expected_scaled"]["scale"]) == expected["scale"]:
                return {name: value for name, value in expected.items() if name != "scale"}
    return None


def without_timing(answer: dict[str, Any]) -> dict[str, Any]:
    return {**answer, "meta": {k: v for k, v in answer["meta"].items() if k != "elapsed_ms"}}


def shown_operations(page: Any) -> set[tuple[str, str]]:
    summaries = page.locator(".opblock-summary").evaluate_all(
        "blocks => blocks.map(b => [b.querySelector('.opblock-summary-method').textContent,"
        " b.querySelector('.opblock-summary-path').textContent])"
    )
    return {(method.lower(), path.replace("\u200b", "")) for method, path in summaries}


@pytest.mark.slow
@needs_chromium
def test_swagger_ui_runs_every_example_offline(browser, server):
    document = server.client.get("/openapi.json").json()
    examples = attend_examples(document)
    watched: OfflinePage = offline_page(browser)
    page = watched.page
    try:
        page.goto(server.url + "/docs")
        page.wait_for_selector(".opblock-summary", timeout=30_000)
        version = page.evaluate("() => window.versions.swaggerUI.version")
        assert version.startswith("5."), version  # Swagger UI 4 cannot render OpenAPI 3.1
        documented = {(method, path) for path, item in document["paths"].items() for method in item}
        assert shown_operations(page) == documented

        operation = page.locator(".opblock-post:has(.opblock-summary-path[data-path='/attend'])")
        operation.locator(".opblock-summary").click()
        operation.get_by_role("button", name="Try it out").click()
        offered = operation.locator(".examples-select option").evaluate_all("os => os.map(o => o.value)")
        assert offered == list(examples)
        golden_checked = 0
        for name, example in examples.items():
            operation.locator(".examples-select select").select_option(name)
            editor = operation.locator("textarea.body-param__text")
            assert json.loads(editor.input_value()) == example["value"], name
            with page.expect_response(lambda r: r.url == server.url + "/attend") as sent:
                operation.get_by_role("button", name="Execute").click()
            assert sent.value.request.post_data_json == example["value"], name
            table = operation.locator(".live-responses-table tbody")
            table.locator(".response-col_status").wait_for()
            assert table.locator(".response-col_status").inner_text().strip() == "200", name
            shown = json.loads(table.locator(".response-col_description pre").first.inner_text())
            direct = server.post(example["value"])
            assert direct.status_code == 200, name
            assert without_timing(shown) == without_timing(direct.json()), name  # the API's numbers
            expected = golden_expectations(example["value"])
            if expected is not None:
                decimals = example["value"].get("decimals")
                tolerance = 1e-5 if decimals is None else 0.5 * 10.0**-decimals + 1e-6
                for tensor in set(expected) & set(TENSORS) & set(shown):
                    want = np.asarray(expected[tensor], dtype=float)
                    got = np.asarray(shown[tensor], dtype=float).reshape(want.shape)  # batch, head of 1
                    np.testing.assert_allclose(got, want, atol=tolerance, err_msg=f"{name}: {tensor}")
                golden_checked += 1
            operation.get_by_role("button", name="Clear").click()
            table.wait_for(state="detached")
        assert golden_checked >= 2, "no example is one of the golden worked examples any more"
        assert watched.left == [], "requests that left 127.0.0.1"
        assert watched.failed == [] and watched.errors == [], (watched.failed, watched.errors)
        assert watched.violations() == []
        # (Chromium fetches no favicon in a context whose requests are routed: asked for here instead)
        icon = server.client.get(page.evaluate("document.querySelector('link[rel=icon]').href"))
        assert icon.status_code == 200 and icon.headers["content-type"] == "image/png"
    finally:
        page.context.close()


@pytest.mark.slow
@needs_chromium
def test_redoc_renders_every_operation_offline(browser, server):
    document = server.client.get("/openapi.json").json()
    watched = offline_page(browser)
    page = watched.page
    try:
        page.goto(server.url + "/redoc")
        page.wait_for_selector("[data-section-id^='operation/']", timeout=60_000)
        shown = page.locator("[data-section-id^='operation/']").count()
        assert shown == sum(len(item) for item in document["paths"].values())
        page.fill("input[placeholder='Search...']", "attention")  # its search index runs in a worker
        page.locator("[data-role='search:results'] li[data-item-id*='operation/']").first.wait_for()
        assert watched.left == [], "requests that left 127.0.0.1"
        assert watched.failed == [] and watched.errors == [], (watched.failed, watched.errors)
        assert watched.violations() == []
    finally:
        page.context.close()
