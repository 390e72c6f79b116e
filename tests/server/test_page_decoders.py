"""The explorer page with decoder and newer encoder families: tiny random models of every supported
model_type (tests/support/families.py) loaded through ATTENTION_MODELS by a real uvicorn, driven in Debian's
Chromium. The picker lists each model's family, kind and positions; decoders run end to end; masked cells are
the legend's grey exactly where scaled_scores is -inf, and a caption gives each layer's mask as meta says it
(Mistral's window shorter than the text, Gemma 2's alternating windowed and global layers and its soft-cap,
ModernBERT's centred window); a grouped-query head names its kv head and those sharing it, and its K and V
are that kv head's; a rotary model's q and k before the rotation are fetched when asked and are the API's;
byte-level tokens read as text. Screenshots go to test-output/ (explorer-mistral.png,
explorer-llama-rotary.png)."""

from __future__ import annotations

import codecs
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from devtools.servers import Server
from tests.server.test_page import OUTPUT, canvas_pixels, run, settled
from tests.support.browser import needs_chromium
from tests.support.families import FAMILY_TYPES, WINDOW, save_family_model

pytestmark = [pytest.mark.slow, needs_chromium]
SENTENCE = "The cat ate the fish because it was hungry"  # 18 or 19 tokens here: longer than the window
DECODERS = ("gpt2", "llama", "mistral", "qwen2", "gemma", "gemma2")


@pytest.fixture(scope="module")
def families(tmp_path_factory) -> Any:
    """The service with a tiny model of every family, named tiny-<model_type>, loaded on first use."""
    root: Path = tmp_path_factory.mktemp("families")
    models = {f"tiny-{t}": str(save_family_model(t, root / t)) for t in FAMILY_TYPES}
    env = {"ATTENTION_MODELS": json.dumps(models), "ATTENTION_LOAD_MODELS": "lazy"}
    with Server(env, log=root / "service.log") as server:
        yield server


@pytest.fixture
def page(browser, families):
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    page = context.new_page()
    page.sent = []  # the bodies of POST /attend
    page.on(
        "request",
        lambda r: page.sent.append(json.loads(r.post_data)) if r.url.endswith("/attend") else None,
    )
    page.goto(families.url + "/")
    page.wait_for_function("() => document.querySelectorAll('#model option').length > 1")
    yield page
    context.close()


def api(server: Server, model: str, include: list[str], layer: Any = "all") -> dict[str, Any]:
    response = server.post({"text": SENTENCE, "model": model, "layer": layer, "include": include})
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def run_model(page, model: str, text: str = SENTENCE) -> None:
    page.select_option("#model", model)
    run(page, text)


def masked_of(scaled_scores: list[Any]) -> np.ndarray:
    """[query, key] booleans: where a [query][key] list of scaled scores holds null (-inf)."""
    return np.asarray([[value is None for value in row] for row in scaled_scores])


def readouts(page, rows: int, cols: int) -> dict[tuple[int, int], str]:
    """What the page reads out under the pointer at every cell: the weight, or "" for a masked cell."""
    shown = page.evaluate(
        """([rows, cols]) => {
            const canvas = document.getElementById("heatmap");
            const box = canvas.getBoundingClientRect();
            const labels = Number(canvas.dataset.labels), cell = Number(canvas.dataset.cell);
            const readout = document.getElementById("hover-value");
            const values = [];
            for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) {
                canvas.dispatchEvent(new PointerEvent("pointermove", {
                    clientX: box.left + canvas.clientLeft + labels + (j + 0.5) * cell,
                    clientY: box.top + canvas.clientTop + labels + (i + 0.5) * cell, bubbles: true }));
                values.push([readout.dataset.cell, readout.dataset.value]);
            }
            return values;
        }""",
        [rows, cols],
    )
    cells = [(i, j) for i in range(rows) for j in range(cols)]
    for (i, j), (cell, _) in zip(cells, shown, strict=True):
        assert cell == f"{i},{j}"
    return {ij: value for ij, (_, value) in zip(cells, shown, strict=True)}


def masked_grey(page) -> np.ndarray:
    """The colour of the legend's swatch for masked cells."""
    legend = page.locator("#legend")
    left, top, size = (int(legend.get_attribute(f"data-masked-{name}")) for name in ("left", "top", "size"))
    return canvas_pixels(page, "#legend")[top + size // 2, left + size // 2, :3].astype(int)


def drawn_grey(page, rows: int, cols: int) -> np.ndarray:
    """[query, key] booleans: the heatmap cells drawn in the legend's masked grey."""
    canvas = page.locator("#heatmap")
    labels, cell = (float(canvas.get_attribute(f"data-{name}")) for name in ("labels", "cell"))
    pixels = canvas_pixels(page, "#heatmap")
    grey = masked_grey(page)
    centres = [
        [pixels[int(labels + (i + 0.5) * cell), int(labels + (j + 0.5) * cell), :3] for j in range(cols)]
        for i in range(rows)
    ]
    return np.asarray([[np.array_equal(colour.astype(int), grey) for colour in row] for row in centres])


def table_values(page, tensor: str) -> np.ndarray:
    """The numbers of the page's table data-tensor=`tensor` (rows: tokens), as shown (4 decimals)."""
    rows = page.evaluate(
        """(tensor) => Array.from(document.querySelectorAll(`table[data-tensor="${tensor}"] tr`)).slice(1)
            .map((row) => Array.from(row.querySelectorAll("td"), (cell) => Number(cell.textContent)))""",
        tensor,
    )
    return np.asarray(rows)


def row_labels(page, tensor: str) -> list[str]:
    labels: list[str] = page.evaluate(
        """(tensor) => Array.from(
            document.querySelectorAll(`table[data-tensor="${tensor}"] tr th:first-child`)
        ).slice(1).map((cell) => cell.textContent)""",
        tensor,
    )
    return labels


def test_the_picker_lists_each_models_family_and_every_decoder_runs_end_to_end(page, families):
    listed = [m for m in families.client.get("/models").json()["models"] if not m["toy"]]
    assert {m["family"] for m in listed} >= set(FAMILY_TYPES)
    options = dict(
        page.evaluate(
            "() => Array.from(document.querySelectorAll('#model option'), (o) => [o.value, o.text])"
        )
    )
    for model in listed:  # what GET /models says of each: family, encoder or decoder, positions
        text = options[model["name"]]
        assert f"{model['family']} {model['kind']}" in text and f"{model['positions']} positions" in text, (
            text
        )
    for family in DECODERS:
        name = f"tiny-{family}"
        page.select_option("#model", name)
        about = page.locator("#model-about").inner_text()
        assert f"{family} decoder" in about and "3 layers" in about, about
        causal = page.locator("#causal")
        assert causal.is_checked() and causal.is_disabled()  # a decoder is causal whatever the box said
        run(page, SENTENCE)
        answer = api(families, name, ["weights", "scaled_scores"], layer=0)
        weights = np.asarray(answer["layers"][0]["weights"], np.float32)[0, 0]
        masked = masked_of(answer["layers"][0]["scaled_scores"][0][0])
        n = len(answer["tokens"][0])
        for (i, j), value in readouts(page, n, n).items():  # every cell of layer 0, head 0
            if masked[i, j]:
                assert value == "", (family, i, j)
            else:
                assert np.float32(value) == weights[i, j], (family, i, j)
        assert masked.sum() >= n * (n - 1) // 2  # causal at least: the keys after each query
    page.select_option("#model", "tiny-roberta")
    assert not page.locator("#causal").is_disabled()  # an encoder: the choice is the person's again


def window_claim(masked: np.ndarray, causal: bool, window: int | None) -> bool:
    """Whether the masked cells are those the caption's sentence describes: a causal query sees itself and the
    window - 1 keys before it (every key before it without a window); a centred window the window // 2 keys
    either side."""
    n = masked.shape[0]
    i, j = np.indices((n, n))
    if causal:
        sees = (j <= i) & ((i - j < window) if window else True)
    else:
        sees = np.abs(i - j) <= window // 2 if window else np.ones((n, n), bool)
    return bool(np.array_equal(~masked, sees))


def caption_of(meta: dict[str, Any], layer: int, index: int) -> str:
    window = meta["sliding_window"][index] if meta["sliding_window"] else None
    if meta["causal"]:
        said = (
            f"causal, sliding window {window}: each query sees itself and the {window - 1} keys before it"
            if window
            else "causal: each query sees itself and every key before it"
        )
    else:
        said = (
            f"sliding window {window}: each query sees itself and the {window // 2} keys either side of it"
            if window
            else "not causal, no window: each query may see every key"
        )
    return f"Layer {layer}: {said}"


@pytest.mark.parametrize("family", ["mistral", "gemma2", "modernbert"])
def test_masked_cells_are_the_legends_grey_where_scaled_scores_is_minus_inf_and_each_layer_says_its_mask(
    page, families, family
):
    name = f"tiny-{family}"
    run_model(page, name)
    answer = api(families, name, ["weights", "scaled_scores"])
    meta = answer["meta"]
    n = len(answer["tokens"][0])
    assert n > WINDOW + 1  # the text is longer than the window
    for index, layer in enumerate(answer["layers"]):
        page.select_option("#view-layer", str(index))
        settled(page)
        for head in (0, 3):
            page.select_option("#view-head", str(head))
            masked = masked_of(layer["scaled_scores"][0][head])
            if masked.any():
                drawn = drawn_grey(page, n, n)
                assert np.array_equal(drawn, masked), (family, index, head)  # grey exactly where -inf
            else:  # nothing masked (ModernBERT's global layers): no grey in the legend either
                assert page.locator("#legend").get_attribute("data-masked-left") == ""
            weights = np.asarray(layer["weights"])[0, head]
            assert (weights[~masked] > 0).all()  # ... and no weight is grey, however small
        settled(page)  # head 3's q, k and v, for the step-through
        page.select_option("#step-query", "5")
        page.select_option("#step-key", "3")
        scaled = float(page.locator("[data-step=scale]").get_attribute("data-scaled"))  # capped where capped
        assert scaled == pytest.approx(layer["scaled_scores"][0][3][5][3], rel=1e-4, abs=1e-5)
        caption = page.locator("#mask-caption").inner_text()
        assert caption.startswith(caption_of(meta, layer["layer"], index)), caption
        window = meta["sliding_window"][index] if meta["sliding_window"] else None
        assert window_claim(masked_of(layer["scaled_scores"][0][0]), meta["causal"], window)  # and it is true
        assert ("soft-capped at 2" in caption) == (meta["softcap"] == 2.0), caption
        if masked.any():
            assert "grey cells are masked" in caption
    windows = meta["sliding_window"]
    if family == "gemma2":  # windowed and global layers alternate
        assert windows[0] == WINDOW and windows[1] is None
    if family == "mistral":
        assert windows == [WINDOW] * 3
        OUTPUT.mkdir(exist_ok=True)
        page.select_option("#view-layer", "0")
        page.screenshot(path=str(OUTPUT / "explorer-mistral.png"), full_page=True)


def test_a_grouped_query_head_names_its_kv_head_and_shows_that_kv_heads_k_and_v(page, families):
    run_model(page, "tiny-llama")
    answer = api(families, "tiny-llama", ["q", "k", "v", "scores"], layer=0)
    meta, layer = answer["meta"], answer["layers"][0]
    kv_head_of = meta["kv_head_of"]
    assert meta["num_kv_heads"] < meta["num_heads"] and np.shape(layer["k"])[1] == meta["num_kv_heads"]
    page.select_option("#view-head", "average")
    groups = "; ".join(
        f"heads {'–'.join(str(h) for h in (sharers[0], sharers[-1]))} read kv head {g}"
        for g in sorted(set(kv_head_of))
        for sharers in [[h for h, kv in enumerate(kv_head_of) if kv == g]]
    )
    assert page.locator("#kv-line").inner_text() == (
        f"{len(kv_head_of)} query heads share {meta['num_kv_heads']} kv heads: {groups}"
    )
    for head in (1, 3):
        page.select_option("#view-head", str(head))
        settled(page)
        group = kv_head_of[head]
        sharers = [h for h, kv in enumerate(kv_head_of) if kv == group]
        assert page.locator("#kv-line").inner_text() == (
            f"head {head} reads kv head {group}, shared with heads {sharers[0]}–{sharers[-1]}"
        )
        same = page.evaluate(
            "() => Array.from(document.querySelectorAll('#grid figure.same-kv'), "
            "(f) => Number(f.dataset.head))"
        )
        assert same == sharers
        q, k, v = (np.asarray(layer[name])[0] for name in ("q", "k", "v"))
        assert np.abs(table_values(page, "Q") - q[head]).max() <= 5.1e-5
        assert np.abs(table_values(page, "K") - k[group]).max() <= 5.1e-5  # the kv head's, not head 0's
        assert np.abs(table_values(page, "V") - v[group]).max() <= 5.1e-5
        assert f"of kv head {group}" in page.locator("table[data-tensor='K'] caption").inner_text()
        page.select_option("#step-query", "6")
        page.select_option("#step-key", "4")
        dot = float(page.locator("[data-step=scores]").get_attribute("data-dot"))
        assert dot == pytest.approx(layer["scores"][0][head][6][4], rel=1e-5, abs=1e-6)  # q·k of the kv head


def test_q_and_k_before_the_rotation_are_fetched_when_asked_and_are_the_apis(page, families):
    run_model(page, "tiny-gpt2")
    assert not page.locator("#pre-rotary").is_visible()  # absolute positions: nothing to ask for
    page.sent.clear()
    run_model(page, "tiny-llama")
    asked = [name for body in page.sent for name in body["include"]]
    assert "q_pre_rotary" not in asked and "k_pre_rotary" not in asked  # not until asked
    head = 3
    page.select_option("#view-head", str(head))
    settled(page)
    page.sent.clear()
    page.check("#pre-rotary")
    settled(page)
    assert [(body["include"], body["heads"], body["layer"]) for body in page.sent] == [
        (["q_pre_rotary", "k_pre_rotary"], [head], 0)
    ]
    answer = api(families, "tiny-llama", ["q", "k", "q_pre_rotary", "k_pre_rotary", "scores"], layer=0)
    layer, group = answer["layers"][0], answer["meta"]["kv_head_of"][head]
    q_pre, k_pre = np.asarray(layer["q_pre_rotary"])[0, head], np.asarray(layer["k_pre_rotary"])[0, group]
    assert np.abs(table_values(page, "Q_pre_rotary") - q_pre).max() <= 5.1e-5
    assert np.abs(table_values(page, "K_pre_rotary") - k_pre).max() <= 5.1e-5
    q = np.asarray(layer["q"])[0, head]
    assert np.abs(table_values(page, "Q") - q).max() <= 5.1e-5  # the rotated q, next to it
    assert np.abs(q[1:] - q_pre[1:]).max() > 1e-3  # rotated: they differ past position 0
    page.select_option("#step-query", "5")
    page.select_option("#step-key", "2")
    assert page.locator("[data-step=pre-rotary]").count() == 1
    dot = float(page.locator("[data-step=scores]").get_attribute("data-dot"))
    assert dot == pytest.approx(layer["scores"][0][head][5][2], rel=1e-5, abs=1e-6)  # scores: after rotation
    OUTPUT.mkdir(exist_ok=True)
    page.screenshot(path=str(OUTPUT / "explorer-llama-rotary.png"), full_page=True)
    page.sent.clear()
    page.uncheck("#pre-rotary")
    page.check("#pre-rotary")
    settled(page)
    assert page.sent == []  # fetched once per head
    assert page.locator("table[data-tensor='Q_pre_rotary']").count() == 1


def _bytes_as_hex(error: UnicodeError) -> tuple[str, int]:
    assert isinstance(error, UnicodeDecodeError)
    return "".join(f"<0x{b:02X}>" for b in error.object[error.start : error.end]), error.end


def readable(token: str) -> str:
    """A byte-level token as the page should show it, by Python's own UTF-8 decoder: the bytes GPT-2's table
    gives for its characters, whitespace as ␣ ↵ ⇥, and each byte outside a whole character as <0xNN>."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    byte_of = {character: byte for byte, character in bytes_to_unicode().items()}
    raw = bytes(byte_of[character] for character in token)
    codecs.register_error("page_hex", _bytes_as_hex)
    text = raw.decode("utf-8", errors="page_hex")
    return text.replace(" ", "␣").replace("\n", "↵").replace("\t", "⇥")


def test_byte_level_tokens_read_as_text_with_a_visible_space(page, families):
    text = "The cat ate café"  # é: two bytes, each a token of this tokenizer
    run_model(page, "tiny-gpt2", text)
    tokens = families.post({"text": text, "model": "tiny-gpt2", "layer": 0, "include": ["weights"]}).json()[
        "tokens"
    ][0]
    assert any(t.startswith("Ġ") for t in tokens) and "Ã" in tokens  # the API's byte-level tokens
    expected = [readable(t) for t in tokens]
    assert "␣ca" in expected and "<0xC3>" in expected
    assert row_labels(page, "Q") == expected
    options = page.evaluate(
        "() => Array.from(document.querySelectorAll('#step-query option'), (o) => o.text)"
    )
    assert options == [f"{i}: {label}" for i, label in enumerate(expected)]
    cat = expected.index("␣ca")
    readouts(page, cat + 1, cat + 1)
    assert (
        page.locator("#hover-value")
        .inner_text()
        .startswith(f'query {cat} "␣ca" (Ġca) → key {cat} "␣ca" (Ġca)')
    )
