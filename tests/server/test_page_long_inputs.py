"""The explorer's view for long inputs (service/server/static/long-inputs.js), driven in Chromium with the
network cut to 127.0.0.1, against a real uvicorn serving a random Llama with room for long inputs (2 layers,
4 heads, 2 kv heads): a text of 2,048 tokens asks only for summaries (every request body checked: no n x n
tensor), its pooled map, its layers x heads tables of scores and a window's top keys hold what the service's
own JSON answer to the same request says, a click in the table opens that head, and the first draw comes
within 2 s of the answer's arrival. Screenshot: test-output/explorer-long.png."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from devtools.long_models import save_long_llama, text_of_tokens
from devtools.servers import Server
from tests.server.test_page import OUTPUT
from tests.support.browser import needs_chromium, offline_page

pytestmark = [pytest.mark.slow, needs_chromium]
TOKENS = 2048
HEADS = 4
N_BY_N = {"scores", "scaled_scores", "weights"}
SCORE_NAMES = ("previous_token_score", "duplicate_token_score", "induction_score", "sink_score")
FIRST_DRAW_LIMIT_MS = 2000


@pytest.fixture(scope="module")
def long_llama(tmp_path_factory: pytest.TempPathFactory) -> Any:
    root: Path = tmp_path_factory.mktemp("long-page")
    folder = save_long_llama(root / "long-llama", heads=HEADS, positions=4096)
    env = {"ATTENTION_MODELS": json.dumps({"long-llama": str(folder)}), "ATTENTION_REQUEST_TIMEOUT_S": "300"}
    with Server(env, log=root / "service.log") as server:
        yield server, text_of_tokens(folder, TOKENS)


@pytest.fixture
def page(browser, long_llama):
    server, _ = long_llama
    watched = offline_page(browser, {"width": 1400, "height": 1100})
    page = watched.page
    page.sent = []  # the bodies of POST /attend
    page.on(
        "request",
        lambda r: page.sent.append(json.loads(r.post_data)) if r.url.endswith("/attend") else None,
    )
    page.goto(server.url + "/")
    page.wait_for_function("() => document.querySelectorAll('#model option').length > 1")
    yield page
    assert watched.left == [], watched.left
    assert watched.violations() == []
    assert watched.errors == [], watched.errors
    page.context.close()


def settled(page) -> None:
    page.wait_for_function("() => !document.getElementById('results').dataset.busy", timeout=300_000)


def json_answer(server: Server, body: dict[str, Any]) -> dict[str, Any]:
    response = server.post(body, timeout=300)
    assert response.status_code == 200, response.text[:500]
    answer: dict[str, Any] = response.json()
    return answer


def drawn_scores(page) -> dict[str, np.ndarray]:
    """Each score table's [layer, head] values as the page holds them."""
    cells = page.eval_on_selector_all(
        "table.long-scores td",
        "cells => cells.map(c => [c.closest('table').dataset.score, +c.dataset.layer, +c.dataset.head,"
        " +c.dataset.value])",
    )
    tables: dict[str, np.ndarray] = {}
    for name, layer, head, value in cells:
        tables.setdefault(name, np.full((2, HEADS), np.nan))[layer, head] = value
    return tables


def drawn_top_keys(page) -> list[tuple[int, list[tuple[int, float, str]]]]:
    """Per row of the window: its query and its (key, weight, label) list."""
    rows: list[tuple[int, list[tuple[int, float, str]]]] = page.eval_on_selector_all(
        "#long-top-keys-table tr[data-query]",
        "rows => rows.map(r => [+r.dataset.query, [...r.querySelectorAll('.top-key')].map("
        "k => [+k.dataset.key, +k.dataset.weight, k.firstChild.textContent.trim()])])",
    )
    return rows


def test_a_long_text_shows_summaries_never_an_n_by_n_tensor_and_draws_within_2_s(page, long_llama) -> None:
    server, text = long_llama
    page.select_option("#model", "long-llama")
    page.fill("#text", text)
    page.click("#run")
    drawn_or_done = (
        "() => document.getElementById('long-view').dataset.firstDrawMs"
        " || !document.getElementById('run').disabled"
    )
    page.wait_for_function(drawn_or_done, timeout=300_000)
    settled(page)
    assert page.get_attribute("#long-view", "data-first-draw-ms"), page.text_content("#attend-form")
    first_draw_ms = float(page.get_attribute("#long-view", "data-first-draw-ms"))
    assert first_draw_ms < FIRST_DRAW_LIMIT_MS
    assert page.is_hidden("#results")
    overview = page.sent[0]
    assert all(not N_BY_N & set(body["include"]) for body in page.sent), [b["include"] for b in page.sent]

    # the service's own JSON answer to the page's request: scores, mean entropy, the pooled map
    answer = json_answer(server, overview)
    layers = answer["layers"]
    assert len(layers) == 2
    drawn = drawn_scores(page)
    for name in SCORE_NAMES:
        expected = np.array([np.asarray(layer[name])[0] for layer in layers])
        np.testing.assert_allclose(drawn[name], expected, rtol=1e-6, atol=1e-7, err_msg=name)
    entropy = np.array([np.asarray(layer["entropy"])[0].mean(axis=-1) for layer in layers])
    np.testing.assert_allclose(drawn["mean_entropy"], entropy, rtol=1e-5)
    induction = drawn["induction_score"]
    assert induction.max() > 0  # the repeated words give the induction pattern something to find

    # [query_block, key_block]: the mean of the heads
    pooled = np.asarray(layers[0]["pooled_weights"])[0].mean(axis=0)
    pool = answer["meta"]["pool"]
    canvas = page.locator("#long-map")
    margin, cell = (float(canvas.get_attribute(f"data-{name}")) for name in ("labels", "cell"))
    assert (int(canvas.get_attribute("data-rows")), int(canvas.get_attribute("data-cols"))) == pooled.shape
    for i, j in [(0, 0), (5, 2), (pooled.shape[0] - 1, pooled.shape[1] - 1), (20, 20)]:
        canvas.hover(position={"x": margin + (j + 0.5) * cell, "y": margin + (i + 0.5) * cell})
        shown = page.text_content("#long-hover")
        assert shown.startswith(f"queries {i * pool}–"), shown
        assert float(shown.rsplit(" ", 1)[1]) == pytest.approx(pooled[i, j], rel=1e-4, abs=1e-6)
    labelled = [int(r) for r in canvas.get_attribute("data-labelled-rows").split(",")]
    assert len(labelled) >= 20  # a readable token axis: a label every few blocks, never none

    # a click in the induction table opens that head of that layer; a click on the map opens its rows
    layer_index, head = np.unravel_index(np.argmax(induction), induction.shape)
    page.click(f"table[data-score=induction_score] td[data-layer='{layer_index}'][data-head='{head}']")
    assert page.input_value("#long-head") == str(head)
    assert page.input_value("#long-layer") == str(layer_index)
    block = 10
    canvas.click(position={"x": margin + 3 * cell, "y": margin + (block + 0.5) * cell})
    settled(page)
    assert page.locator("#long-top-keys-table tr[data-query]").count(), page.text_content("#long-window-note")
    window = page.sent[-1]
    start = block * pool
    assert window["queries"] == list(range(start, start + 32))
    assert window["heads"] == [int(head)]
    assert not N_BY_N & set(window["include"])
    rows = json_answer(server, window)["layers"][0]
    tokens = answer["tokens"][0]
    top_keys, top_weights = np.asarray(rows["top_keys"])[0, 0], np.asarray(rows["top_weights"])[0, 0]
    drawn_rows = drawn_top_keys(page)
    assert [query for query, _ in drawn_rows] == window["queries"]
    for index, (query, keys) in enumerate(drawn_rows):
        shown = [key for key, _, _ in keys]
        expected_keys = [int(k) for k, w in zip(top_keys[index], top_weights[index], strict=True) if w > 0]
        assert shown == expected_keys, query
        weights = [weight for _, weight, _ in keys]
        np.testing.assert_allclose(weights, top_weights[index][: len(weights)], rtol=1e-6)
        for key, _, label in keys:
            assert label.split(" ", 1)[0] == str(key)
            raw = tokens[key]
            assert label.split(" ", 1)[1] == raw.replace("Ġ", "␣"), (label, raw)
    # a drag over the rows of blocks 12 to 15 opens their 64 queries
    box = canvas.bounding_box()
    x = box["x"] + margin + 5 * cell
    page.mouse.move(x, box["y"] + margin + 12.5 * cell)
    page.mouse.down()
    page.mouse.move(x, box["y"] + margin + 15.5 * cell)
    page.mouse.up()
    settled(page)
    assert page.sent[-1]["queries"] == list(range(12 * pool, 16 * pool))
    assert [query for query, _ in drawn_top_keys(page)] == page.sent[-1]["queries"]
    OUTPUT.mkdir(exist_ok=True)
    page.screenshot(path=str(OUTPUT / "explorer-long.png"), full_page=True)
    print(f"\nlong view: {TOKENS} tokens, first draw {first_draw_ms:.0f} ms after the answer arrived")


def test_a_text_of_many_words_but_under_384_tokens_is_shown_as_any_other(page) -> None:
    """The toy model's tokens are the words: 300 words ask for summaries first, then draw the weights."""
    page.select_option("#model", "toy")
    page.fill("#text", " ".join(["the cat sat on the mat"] * 50))
    page.click("#run")
    page.wait_for_function("() => !document.getElementById('run').disabled", timeout=120_000)
    settled(page)
    assert page.is_hidden("#long-view")
    assert page.is_visible("#heatmap")
    assert not N_BY_N & set(page.sent[0]["include"])
    assert {"weights", "scaled_scores"} <= set(page.sent[1]["include"])
    assert int(page.get_attribute("#heatmap", "data-rows")) == 300
