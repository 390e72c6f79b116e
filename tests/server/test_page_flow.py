"""The explorer's "where information flows" view in a real browser (Chromium through Playwright) against a
real uvicorn: one POST /attend for every layer's weights, norms, rollout and value zeroing; each heatmap's
cells coloured from the API's numbers (its darkest cell at the API's largest value, white where the API has
0), the rollout's links, the layer and head pickers, the papers linked, and the API's 422 for the toy model
shown in the view's status. A screenshot goes to test-output/explorer-flow.png."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from devtools.paths import ROOT
from tests.support.browser import needs_chromium

pytestmark = [pytest.mark.slow, needs_chromium]
SENTENCE = "The cat ate the fish because it was hungry"
INCLUDE = ["weights", "norms", "rollout", "value_zeroing"]
DARKEST = [31, 95, 191]  # the colour ramp at the scale's maximum (drawing.js colourOf(1))


@pytest.fixture
def page(browser, server):
    context = browser.new_context(viewport={"width": 1280, "height": 1600})
    page = context.new_page()
    page.sent = []  # the bodies of POST /attend
    page.on(
        "request",
        lambda r: page.sent.append(json.loads(r.post_data)) if r.url.endswith("/attend") else None,
    )
    page.goto(server.url + "/")
    page.wait_for_function("() => document.querySelectorAll('#model option').length > 1")
    yield page
    context.close()


def compute_flow(page, text: str = SENTENCE) -> str:
    page.fill("#text", text)
    page.click("#flow-run")
    page.wait_for_function(
        "() => !document.getElementById('flow-status').textContent.startsWith('computing')"
    )
    return str(page.locator("#flow-status").text_content())


def pixel(page, canvas: str, i: int, j: int) -> list[int]:
    """The colour at the centre of cell (query i, key j) of a heatmap."""
    return list(
        page.evaluate(
            """([id, i, j]) => {
                const canvas = document.getElementById(id);
                const labels = Number(canvas.dataset.labels), cell = Number(canvas.dataset.cell);
                const x = Math.floor(labels + (j + 0.5) * cell), y = Math.floor(labels + (i + 0.5) * cell);
                return Array.from(canvas.getContext("2d").getImageData(x, y, 1, 1).data.slice(0, 3));
            }""",
            [canvas, i, j],
        )
    )


def check_map(page, canvas: str, matrix: np.ndarray) -> None:
    seq = matrix.shape[0]
    located = page.locator(f"#{canvas}")
    assert (located.get_attribute("data-rows"), located.get_attribute("data-cols")) == (str(seq), str(seq))
    assert float(located.get_attribute("data-scale-max")) == pytest.approx(matrix.max(), rel=1e-6)
    i, j = np.unravel_index(int(matrix.argmax()), matrix.shape)
    assert pixel(page, canvas, int(i), int(j)) == DARKEST, canvas
    zeros = np.argwhere(matrix == 0)
    if len(zeros):
        assert pixel(page, canvas, int(zeros[0][0]), int(zeros[0][1])) == [255, 255, 255], canvas


def api(server: Any) -> list[dict[str, Any]]:
    response = server.post({"text": SENTENCE, "layer": "all", "include": INCLUDE})
    assert response.status_code == 200, response.text
    layers: list[dict[str, Any]] = response.json()["layers"]
    return layers


def test_the_view_draws_the_apis_rollout_weights_norms_and_value_zeroing(page, server):
    status = compute_flow(page)
    assert status.startswith("done: 6 layers"), status
    assert page.sent[-1] == {
        "text": SENTENCE,
        "model": page.input_value("#model"),
        "include": INCLUDE,
    }
    layers = api(server)
    last = layers[-1]
    assert page.input_value("#flow-layer") == "0" and page.input_value("#flow-head") == "0"
    first = layers[0]
    check_map(page, "flow-rollout", np.asarray(first["rollout"])[0])
    check_map(page, "flow-weights", np.asarray(first["weights"])[0, 0])
    check_map(page, "flow-norms", np.asarray(first["norms"])[0, 0])
    check_map(page, "flow-zeroing", np.asarray(first["value_zeroing"])[0])
    page.select_option("#flow-layer", "5")
    page.select_option("#flow-head", "7")
    assert page.locator("#flow").get_attribute("data-shown") == "5,7"
    check_map(page, "flow-rollout", np.asarray(last["rollout"])[0])
    check_map(page, "flow-weights", np.asarray(last["weights"])[0, 7])
    check_map(page, "flow-norms", np.asarray(last["norms"])[0, 7])
    check_map(page, "flow-zeroing", np.asarray(last["value_zeroing"])[0])
    assert page.locator("#flow-links").bounding_box()["height"] > 100
    papers = {page.get_attribute(f"#paper-{n}", "href") for n in ("rollout", "norms", "zeroing")}
    assert papers == {f"https://arxiv.org/abs/{n}" for n in ("2005.00928", "2004.10102", "2301.12971")}
    (ROOT / "test-output").mkdir(exist_ok=True)
    page.locator("#flow").screenshot(path=str(ROOT / "test-output" / "explorer-flow.png"))


def test_the_toy_model_gets_the_apis_422_in_the_views_status(page):
    page.select_option("#model", "toy")
    status = compute_flow(page, "a b c")
    assert status.startswith("HTTP 422") and "need a model's layers" in status
    assert page.locator("#flow-views").is_hidden()
