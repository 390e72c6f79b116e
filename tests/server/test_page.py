"""The explorer page at GET /, driven in a real browser (Debian's Chromium through Playwright) against a real
uvicorn: the heatmap's cells hold the API's weights, head and layer switch, errors sit next to their fields
and mark older results stale, colours follow a legend (per view or shared by all heads), CJK labels stand
upright, 128 tokens keep labels and readable links and draw fast, the PNG has a title, nothing is fetched from
outside; at 128 tokens the first draw fetches one safetensors answer of under 2 MB and is on screen within
300 ms, with the JSON API's values; the page's safetensors reader gives the JSON API's float32 and float16
values.
Screenshots go to test-output/ (explorer.png, explorer-128.png, explorer-cjk.png, explorer-download.png)."""

from __future__ import annotations

import base64
import json
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from devtools.paths import ROOT
from tests.support.browser import needs_chromium

pytestmark = [
    pytest.mark.slow,
    needs_chromium,
]
SENTENCE = "The cat ate the fish because it was hungry"
# toy tokens are the words: one and two Han characters, kana, and Latin words among them
CJK_TEXT = "我的猫 喜欢 吃 鱼 和 寿司 ラーメン and English"
OUTPUT = ROOT / "test-output"


@pytest.fixture
def page(browser, server):
    context = browser.new_context(viewport={"width": 1280, "height": 1000}, accept_downloads=True)
    page = context.new_page()
    page.requested = []
    page.on("request", lambda request: page.requested.append(request.url))
    page.goto(server.url + "/")
    page.wait_for_function("() => document.querySelectorAll('#model option').length > 1")
    yield page
    context.close()


def run(page, text: str | None = None) -> None:
    if text is not None:
        page.fill("#text", text)
    page.click("#run")
    page.wait_for_function("() => !document.getElementById('run').disabled")
    settled(page)


def settled(page) -> None:
    """Waits until the page has nothing more to fetch (a layer just picked, the internals of a head)."""
    page.wait_for_function("() => !document.getElementById('results').dataset.busy")


def hovered_values(page, cells) -> dict[tuple[int, int], float]:
    """The value the page shows under the pointer at the centre of each (query, key) cell."""
    settled(page)
    canvas = page.locator("#heatmap")
    labels, cell = (float(canvas.get_attribute(f"data-{name}")) for name in ("labels", "cell"))
    values = {}
    for i, j in cells:
        canvas.hover(position={"x": labels + (j + 0.5) * cell, "y": labels + (i + 0.5) * cell})
        shown = page.locator("#hover-value")
        assert shown.get_attribute("data-cell") == f"{i},{j}"
        values[i, j] = float(shown.get_attribute("data-value"))
    return values


def check_heatmap(page, expected: np.ndarray, every: int = 1) -> None:
    n, m = expected.shape
    canvas = page.locator("#heatmap")
    assert (int(canvas.get_attribute("data-rows")), int(canvas.get_attribute("data-cols"))) == (n, m)
    cells = [(i, j) for i in range(0, n, every) for j in range(0, m, every)]
    for (i, j), value in hovered_values(page, cells).items():
        assert value == pytest.approx(expected[i, j], abs=1e-6), (i, j)


def canvas_pixels(page, selector: str) -> np.ndarray:
    """The canvas's pixels as an array [y, x, rgba] (uint8)."""
    width, height, data = page.evaluate(
        """(selector) => {
            const canvas = document.querySelector(selector);
            const pixels = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
            let text = "";
            for (let at = 0; at < pixels.length; at += 0x8000) {
                text += String.fromCharCode.apply(null, pixels.subarray(at, at + 0x8000));
            }
            return [canvas.width, canvas.height, btoa(text)];
        }""",
        selector,
    )
    return np.frombuffer(base64.b64decode(data), np.uint8).reshape(height, width, 4)


def ink(pixels: np.ndarray) -> np.ndarray:
    """Where text is drawn: dark pixels (the page's ink is near-black, its focus colour dark orange)."""
    return np.asarray(pixels[..., :3].astype(int).sum(axis=-1) < 400)


def cell_colour(page, selector: str, i: int, j: int) -> np.ndarray:
    canvas = page.locator(selector)
    labels, cell = (float(canvas.get_attribute(f"data-{name}")) for name in ("labels", "cell"))
    pixels = canvas_pixels(page, selector)
    return pixels[int(labels + (i + 0.5) * cell), int(labels + (j + 0.5) * cell), :3].astype(int)


def legend_colour(page, value: float) -> np.ndarray:
    """The legend bar's colour at `value` on its scale (0 at the left end, data-max at the right)."""
    legend = page.locator("#legend")
    left, top, width, height = (
        int(legend.get_attribute(f"data-bar-{name}")) for name in ("left", "top", "width", "height")
    )
    fraction = value / float(legend.get_attribute("data-max"))
    x = left + min(width - 1, int(fraction * width))
    return canvas_pixels(page, "#legend")[top + height // 2, x, :3].astype(int)


def after_next_paint_ms(page, action: str, argument: object) -> float:
    """Milliseconds from an input event (a head picked, the shared scale switched, the pointer moved over the
    heatmap) to the frame after the page's answer has been painted: the drawing, the layout and the paint, of
    which the page's own data-render-ms counts only the script."""
    return float(
        page.evaluate(
            """async ([action, argument]) => {
                const started = performance.now();
                if (action === "head") {
                    const select = document.getElementById("view-head");
                    select.value = argument;
                    select.dispatchEvent(new Event("change"));
                } else if (action === "hover") {
                    const canvas = document.getElementById("heatmap");
                    const box = canvas.getBoundingClientRect();
                    const [x, y] = argument;
                    const at = { clientX: box.left + x, clientY: box.top + y, bubbles: true };
                    canvas.dispatchEvent(new PointerEvent("pointermove", at));
                } else {
                    const box = document.getElementById("shared-scale");
                    box.checked = argument;
                    box.dispatchEvent(new Event("change"));
                }
                await new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(done)));
                return performance.now() - started;
            }""",
            [action, argument],
        )
    )


def png_text_chunks(png: bytes) -> dict[str, str]:
    """The iTXt and tEXt chunks of a PNG file (keyword: text), each chunk's CRC checked."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    texts, at = {}, 8
    while at < len(png):
        (length,) = struct.unpack(">I", png[at : at + 4])
        kind, data = png[at + 4 : at + 8], png[at + 8 : at + 8 + length]
        assert struct.unpack(">I", png[at + 8 + length : at + 12 + length])[0] == zlib.crc32(kind + data)
        if kind == b"tEXt":
            keyword, text = data.split(b"\0", 1)
            texts[keyword.decode("latin-1")] = text.decode("latin-1")
        elif kind == b"iTXt":
            keyword, rest = data.split(b"\0", 1)
            assert rest[:2] == b"\0\0"  # not compressed
            _language, _translated, text = rest[2:].split(b"\0", 2)
            texts[keyword.decode("latin-1")] = text.decode("utf-8")
        at += 12 + length
    return texts


def decoded_png(page, png: bytes) -> np.ndarray:
    """The PNG decoded by Chromium's own image decoder, as [y, x, rgba]."""
    width, height, data = page.evaluate(
        """async (encoded) => {
            const bytes = Uint8Array.from(atob(encoded), (c) => c.charCodeAt(0));
            const bitmap = await createImageBitmap(new Blob([bytes], { type: "image/png" }));
            const canvas = document.createElement("canvas");
            canvas.width = bitmap.width;
            canvas.height = bitmap.height;
            const context = canvas.getContext("2d");
            context.drawImage(bitmap, 0, 0);
            const pixels = context.getImageData(0, 0, bitmap.width, bitmap.height).data;
            let text = "";
            for (let at = 0; at < pixels.length; at += 0x8000) {
                text += String.fromCharCode.apply(null, pixels.subarray(at, at + 0x8000));
            }
            return [bitmap.width, bitmap.height, btoa(text)];
        }""",
        base64.b64encode(png).decode(),
    )
    return np.frombuffer(base64.b64decode(data), np.uint8).reshape(height, width, 4)


def test_heatmap_shows_the_api_weights_and_switches_head_and_layer(page, server):
    run(page, SENTENCE)
    assert page.locator("#results").is_visible()
    OUTPUT.mkdir(exist_ok=True)
    page.screenshot(path=str(OUTPUT / "explorer.png"), full_page=True)  # the default view
    api = server.post({"text": SENTENCE, "layer": "all", "include": ["weights"]}).json()
    weights = [np.asarray(layer["weights"])[0] for layer in api["layers"]]  # per layer: [head, query, key]
    n = len(api["tokens"][0])
    check_heatmap(page, weights[0][0])  # every one of the n x n cells: layer 0, head 0
    page.select_option("#view-layer", "2")
    page.select_option("#view-head", "3")
    check_heatmap(page, weights[2][3])
    page.select_option("#view-head", "average")
    check_heatmap(page, weights[2].mean(axis=0), every=3)
    assert page.locator("#grid figure").count() == 12
    page.locator("#grid figure[data-head='7']").click()
    assert page.locator("#view-head").input_value() == "7"
    check_heatmap(page, weights[2][7], every=4)
    assert page.locator("table[data-tensor='Q'] tbody tr, table[data-tensor='Q'] tr").count() >= n
    assert "[11, 32]" in page.locator("table[data-tensor='Q'] caption").inner_text()
    assert all(url.startswith(server.url) for url in page.requested), page.requested  # nothing from a CDN


def test_step_through_works_out_one_cell(page, server):
    page.select_option("#model", "toy")
    page.fill("#num_heads", "2")
    run(page, "猫 吃 鱼")
    api = server.post(
        {
            "text": "猫 吃 鱼",
            "model": "toy",
            "d_model": 8,
            "num_heads": 2,
            "weights": {"seed": 0},
            "causal": False,
        }
    ).json()
    steps = page.locator("#steps")
    assert [
        steps.locator(f"[data-step={name}]").count()
        for name in ("project", "scores", "scale", "softmax", "sum")
    ] == [1] * 5
    page.select_option("#step-query", "1")
    page.select_option("#step-key", "2")
    assert float(page.locator("#step-weight").inner_text()) == pytest.approx(
        api["weights"][0][0][1][2], abs=1e-4
    )
    softmax = steps.locator("[data-step=softmax]").inner_text()
    assert f"{api['weights'][0][0][1][2]:.4f}" in softmax  # the page's own arithmetic agrees with the service


def test_api_errors_are_shown_next_to_their_field(page):
    run(page, "   ")
    assert "text" in page.locator(".field-error[data-for=text]").inner_text()
    page.select_option("#model", "toy")
    page.fill("#num_heads", "3")
    run(page, "猫 吃 鱼")
    message = page.locator(".field-error[data-for=num_heads]").inner_text()
    assert "does not divide" in message and "8" in message
    page.check("input[name=mode][value=json]")
    page.fill("#json", "{not json")
    run(page)
    assert "not valid JSON" in page.locator(".field-error[data-for=json]").inner_text()
    page.fill("#json", json.dumps({"embeddings": [[1, 2], [3]]}))
    run(page)
    assert "ragged" in page.locator(".field-error[data-for=json]").inner_text()


def test_a_new_run_clears_the_hover_readout(page):
    run(page, SENTENCE)
    hovered_values(page, [(2, 3)])
    assert page.locator("#hover-value").inner_text().startswith('query 2 "cat"')
    run(page, "A dog slept")
    readout = page.locator("#hover-value")
    assert readout.inner_text() == "Point at a cell"
    assert readout.get_attribute("data-cell") is None and readout.get_attribute("data-value") is None


def test_a_failed_run_marks_the_earlier_results_stale(page):
    run(page, SENTENCE)
    status, results, note = page.locator("#status"), page.locator("#results"), page.locator("#stale-note")
    assert "kB in" in status.inner_text() and not note.is_visible()
    page.fill("#scale", "half")  # refused by the page itself: nothing is sent
    run(page)
    assert "kB in" not in status.inner_text() and "not sent" in status.inner_text()
    assert "expected a number" in page.locator(".field-error[data-for=scale]").inner_text()
    assert "stale" in results.get_attribute("class") and note.is_visible()
    page.fill("#scale", "")
    page.select_option("#model", "toy")
    page.fill("#num_heads", "3")  # refused by the service: 422
    run(page, "猫 吃 鱼")
    assert "422" in status.inner_text() and "kB in" not in status.inner_text()
    assert "does not divide" in page.locator(".field-error[data-for=num_heads]").inner_text()
    assert note.is_visible()
    opacity = page.evaluate(
        "() => getComputedStyle(document.getElementById('heatmap').closest('.panels')).opacity"
    )
    assert float(opacity) < 1  # the old pictures are dimmed
    page.fill("#num_heads", "2")
    run(page)
    assert "kB in" in status.inner_text() and not note.is_visible()
    assert "stale" not in (results.get_attribute("class") or "")
    assert page.locator(".field-error:not(:empty)").count() == 0


def test_colours_follow_a_legend_per_view_or_shared_by_all_heads(page, server):
    run(page, SENTENCE)
    api = server.post({"text": SENTENCE, "layer": 0, "include": ["weights"]}).json()
    heads = np.asarray(api["layers"][0]["weights"])[0]  # [head, query, key]
    legend = page.locator("#legend")
    assert legend.is_visible()
    head = heads[0]
    largest = np.unravel_index(head.argmax(), head.shape)
    cells = [largest, (3, 2), (5, 0), (8, 9)]
    # each view to its own largest weight: the legend ends there, and the largest cell is its darkest colour
    assert float(legend.get_attribute("data-max")) == pytest.approx(head.max(), rel=1e-6)
    for i, j in cells:
        expected = legend_colour(page, float(head[i, j]))
        assert np.abs(cell_colour(page, "#heatmap", i, j) - expected).max() <= 3, (i, j)
    assert "largest weight of this view" in page.locator("#legend-caption").inner_text()
    # one scale from 0 to 1: the same weight has the same colour in every head
    page.check("#shared-scale")
    assert float(legend.get_attribute("data-max")) == 1
    assert "the same scale for every head" in page.locator("#legend-caption").inner_text()
    for i, j in cells:
        expected = legend_colour(page, float(head[i, j]))
        assert np.abs(cell_colour(page, "#heatmap", i, j) - expected).max() <= 3, (i, j)
    darkest = legend_colour(page, 1.0)
    assert np.abs(cell_colour(page, "#heatmap", *largest) - darkest).max() > 20  # its largest is below 1
    for h in (0, 5, 11):
        i, j = np.unravel_index(heads[h].argmax(), heads[h].shape)
        shown = cell_colour(page, f"#grid figure[data-head='{h}'] canvas", i, j)
        assert np.abs(shown - legend_colour(page, float(heads[h][i, j]))).max() <= 3, h
    page.uncheck("#shared-scale")
    assert float(legend.get_attribute("data-max")) == pytest.approx(head.max(), rel=1e-6)


def character_masks(page, text: str, font: str, upright: bool) -> list[np.ndarray]:
    """Each character of `text` alone in `font`, upright or turned a quarter left, as a mask of its ink."""
    masks = []
    for character in text:
        width, height, data = page.evaluate(
            """([character, font, upright]) => {
                const canvas = document.createElement("canvas");
                canvas.width = canvas.height = 64;
                const context = canvas.getContext("2d");
                context.fillStyle = "#fff";
                context.fillRect(0, 0, 64, 64);
                context.fillStyle = "#1d232b";
                context.font = font;
                context.textAlign = "center";
                context.textBaseline = "middle";
                context.translate(32, 32);
                if (!upright) context.rotate(-Math.PI / 2);
                context.fillText(character, 0, 0);
                const pixels = context.getImageData(0, 0, 64, 64).data;
                return [64, 64, Array.from(pixels)];
            }""",
            [character, font, upright],
        )
        masks.append(trimmed(ink(np.asarray(data, np.uint8).reshape(height, width, 4))))
    return masks


def trimmed(mask: np.ndarray) -> np.ndarray:
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return mask[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def likeness(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two ink masks laid over each other, the best of shifts up to 2 px."""
    height, width = max(a.shape[0], b.shape[0]) + 4, max(a.shape[1], b.shape[1]) + 4
    best = 0.0
    for dy in range(-2, 3):
        for dx in range(-2, 3):
            one, other = np.zeros((height, width), bool), np.zeros((height, width), bool)
            one[2 : 2 + a.shape[0], 2 : 2 + a.shape[1]] = a
            other[2 + dy : 2 + dy + b.shape[0], 2 + dx : 2 + dx + b.shape[1]] = b
            best = max(best, (one & other).sum() / (one | other).sum())
    return best


def test_cjk_labels_stand_upright_and_one_head_is_singular(page):
    page.select_option("#model", "toy")
    page.fill("#num_heads", "1")
    run(page, CJK_TEXT)
    meta = page.locator("#meta-line").inner_text()
    assert "1 head of d_k" in meta and "1 heads" not in meta
    canvas = page.locator("#heatmap")
    labels, cell = (int(float(canvas.get_attribute(f"data-{name}"))) for name in ("labels", "cell"))
    font = canvas.get_attribute("data-label-font")
    pixels = canvas_pixels(page, "#heatmap")
    tokens = CJK_TEXT.split()
    for j, token in enumerate(tokens):
        if not token.isascii():  # a column label of Han or kana: each character upright, top to bottom
            label = trimmed(ink(pixels[:labels, labels + j * cell : labels + (j + 1) * cell]))
            upright, turned = (
                character_masks(page, token, font, True),
                character_masks(page, token, font, False),
            )
            step = label.shape[0] / len(token)
            for k, character in enumerate(token):
                part = trimmed(label[round(k * step) : round((k + 1) * step)])
                # as in vertical writing, the long vowel mark turns with the column; the rest stand upright
                right, wrong = (turned, upright) if character == "ー" else (upright, turned)
                assert likeness(part, right[k]) > likeness(part, wrong[k]) + 0.1, (token, k)
                assert likeness(part, right[k]) > 0.5, (token, k)
    english = trimmed(ink(pixels[:labels, labels + 8 * cell : labels + 9 * cell]))
    assert english.shape[0] > 2 * english.shape[1]  # a Latin word still reads upwards, turned on its side
    OUTPUT.mkdir(exist_ok=True)
    page.screenshot(path=str(OUTPUT / "explorer-cjk.png"), full_page=True)


def test_downloads_json_and_a_titled_png(page, tmp_path: Path):
    run(page, SENTENCE)
    with page.expect_download() as download:
        page.click("#download-json")
    saved = tmp_path / "attention.json"
    download.value.save_as(saved)
    assert json.loads(saved.read_text())["meta"]["model"] == "all-MiniLM-L6-v2"
    page.select_option("#view-layer", "2")
    page.select_option("#view-head", "3")
    settled(page)  # layer 2 is fetched when picked: the picture (and its name) follow once it is drawn
    with page.expect_download() as download:
        page.click("#download-png")
    assert download.value.suggested_filename == "attention-all-MiniLM-L6-v2-layer-2-head-3.png"
    png = tmp_path / "heatmap.png"
    download.value.save_as(png)
    data = png.read_bytes()
    texts = png_text_chunks(data)
    assert texts["Title"].startswith("all-MiniLM-L6-v2 · layer 2 · head 3 · colours 0 to ")
    assert texts["Description"] == SENTENCE
    image = decoded_png(page, data)
    heatmap_height = int(page.locator("#heatmap").get_attribute("height"))
    assert image.shape[0] > heatmap_height + 60  # a title above the heatmap, the legend below it
    assert ink(image[:20]).sum() > 100  # the title's text, above the heatmap's column labels
    OUTPUT.mkdir(exist_ok=True)
    (OUTPUT / "explorer-download.png").write_bytes(data)


def test_128_tokens_label_the_focused_row_thin_out_links_and_draw_fast(page, server):
    words = " ".join(f"w{i}" for i in range(128))
    page.select_option("#model", "toy")
    page.fill("#d_model", "64")
    page.fill("#num_heads", "4")
    run(page, words)
    api = server.post(
        {
            "text": words,
            "model": "toy",
            "d_model": 64,
            "num_heads": 4,
            "weights": {"seed": 0},
            "include": ["weights"],
        }
    ).json()
    weights = np.asarray(api["weights"])[0, 0]
    first_ms = float(page.locator("#results").get_attribute("data-render-ms"))  # its script, not the paint
    check_heatmap(page, weights, every=16)
    canvas = page.locator("#heatmap")
    labels, cell = (int(float(canvas.get_attribute(f"data-{name}"))) for name in ("labels", "cell"))
    assert labels > 0  # token labels are kept, thinned out to those that fit
    shown = [int(i) for i in canvas.get_attribute("data-labelled-rows").split(",")]
    assert 20 <= len(shown) < 128 and min(b - a for a, b in zip(shown, shown[1:], strict=False)) * cell >= 10
    # pointing at a cell labels its row and column, in the focus colour (orange, not the thinned labels' ink)
    focus_ink = lambda pixels: pixels[..., 0].astype(int) - pixels[..., 2] > 100  # noqa: E731
    row_band = slice(labels + 77 * cell, labels + 78 * cell)
    assert not focus_ink(canvas_pixels(page, "#heatmap")[row_band, :labels]).any()
    hovered_values(page, [(77, 5)])
    assert 'query 77 "w77" → key 5 "w5"' in page.locator("#hover-value").inner_text()
    assert "77" in canvas.get_attribute("data-labelled-rows").split(",")
    assert "5" in canvas.get_attribute("data-labelled-cols").split(",")
    pixels = canvas_pixels(page, "#heatmap")
    assert focus_ink(pixels[row_band, :labels]).sum() > 5
    assert focus_ink(pixels[:labels, labels + 5 * cell : labels + 6 * cell]).sum() > 5
    OUTPUT.mkdir(exist_ok=True)
    page.screenshot(path=str(OUTPUT / "explorer-128.png"), full_page=True)
    # the links: by default ("auto") only the strongest link of each query above 128 tokens
    page.mouse.move(0, 0)
    links = page.locator("#links")
    assert int(links.get_attribute("data-links")) == int((weights.max(axis=1) >= 0.02).sum())
    page.select_option("#link-count", "3")
    page.fill("#link-min", "0.05")
    expected = sum(min(3, int((row >= 0.05).sum())) for row in weights)
    assert int(links.get_attribute("data-links")) == expected
    page.select_option("#link-count", "all")
    page.fill("#link-min", "0.1")
    assert int(links.get_attribute("data-links")) == int((weights >= 0.1).sum())
    # drawing time, script and paint
    times = {
        "head average": after_next_paint_ms(page, "head", "average"),
        "head 1": after_next_paint_ms(page, "head", "1"),
        "shared scale": after_next_paint_ms(page, "scale", True),
        "own scale": after_next_paint_ms(page, "scale", False),
    }
    times["hover"] = after_next_paint_ms(page, "hover", [labels + 30.5 * cell, labels + 40.5 * cell])
    assert page.locator("#hover-value").get_attribute("data-cell") == "40,30"
    print(f"128 tokens, ms: first render (script) {first_ms:.0f}, to the next paint {times}")
    assert max(times.values()) < 2000 and times["hover"] < 200  # no freezes; the focus follows the pointer


def first_draw(page) -> dict[str, float]:
    """Clicks Run and measures, in the page: milliseconds from the click to the frame after the heatmap is
    drawn (script, layout and paint), and what the run fetched until the page has nothing more to fetch,
    from the browser's resource timing: bytes over the wire (headers included), body bytes, requests."""
    measured = page.evaluate(
        """async () => {
            performance.clearResourceTimings();
            const results = document.getElementById("results");
            const started = performance.now();
            const late = () => new Error("nothing drawn, or still fetching, 30 s after the click");
            const frame = () => new Promise((done, fail) =>
                (performance.now() - started > 30000 ? fail(late()) : requestAnimationFrame(done)));
            document.getElementById("run").click();
            while (!(Number(results.dataset.drawnAt) > started)) await frame();
            await frame();
            const ms = performance.now() - started;
            while (results.dataset.busy) await frame();
            const fetched = performance.getEntriesByType("resource")
                .filter((entry) => entry.startTime >= started);
            return {
                ms,
                transferred: fetched.reduce((sum, entry) => sum + entry.transferSize, 0),
                body: fetched.reduce((sum, entry) => sum + entry.encodedBodySize, 0),
                attend: fetched.filter((entry) => new URL(entry.name).pathname === "/attend").length,
                requests: fetched.length,
            };
        }"""
    )
    return {name: float(value) for name, value in measured.items()}


def test_128_tokens_first_draw_fetches_under_2_mb_in_under_300_ms_with_the_json_apis_values(page, server):
    words = " ".join(f"w{i}" for i in range(128))
    page.select_option("#model", "toy")
    page.fill("#d_model", "64")
    page.fill("#num_heads", "4")
    page.check("#causal")
    page.fill("#text", words)
    page.fill("#seed", "1")
    warm_up = first_draw(page)  # the page's script compiled, the service's toy path warm
    runs = []
    for seed in (2, 3, 0):  # the best of three: the machine running the tests is shared and busy
        page.fill("#seed", str(seed))
        runs.append(first_draw(page))
    print(f"128 tokens, first draw: warm-up run {warm_up}, measured runs {runs}")
    for measured in runs:  # the selected layer's weights, nothing else
        assert measured["attend"] == 1 and measured["requests"] == 1
        assert measured["transferred"] < 2_000_000
    assert min(measured["ms"] for measured in runs) < 300
    api = server.post(
        {
            "text": words,
            "model": "toy",
            "d_model": 64,
            "num_heads": 4,
            "weights": {"seed": 0},
            "causal": True,
            "include": ["weights", "scaled_scores"],
        }
    ).json()
    weights = np.asarray(api["weights"], np.float32)[0]  # [head, query, key]; JSON's float32 values
    masked = np.asarray([[[v is None for v in row] for row in head] for head in api["scaled_scores"][0]])
    cells = [(i, j) for i in range(3, 128, 8) for j in range(0, 128, 8)]
    shown = page.evaluate(
        """(cells) => cells.map(([i, j]) => {
            const canvas = document.getElementById("heatmap");
            const box = canvas.getBoundingClientRect();
            const labels = Number(canvas.dataset.labels), cell = Number(canvas.dataset.cell);
            canvas.dispatchEvent(new PointerEvent("pointermove", {
                clientX: box.left + canvas.clientLeft + labels + (j + 0.5) * cell,
                clientY: box.top + canvas.clientTop + labels + (i + 0.5) * cell, bubbles: true }));
            const readout = document.getElementById("hover-value");
            return [readout.dataset.cell, readout.dataset.value];
        })""",
        cells,
    )
    for (i, j), (cell, value) in zip(cells, shown, strict=True):
        assert cell == f"{i},{j}"
        if masked[0, i, j]:
            assert value == "", (i, j)  # drawn as masked
        else:
            assert np.float32(value) == weights[0, i, j], (i, j)  # the very float32 of the JSON answer
    assert masked[0].sum() == 127 * 128 // 2  # causal: the test saw masked cells above the diagonal
    grid_maxima = [
        float(page.locator(f"#grid figure[data-head='{h}'] canvas").get_attribute("data-max"))
        for h in range(4)
    ]
    assert [np.float32(m) for m in grid_maxima] == list(weights.max(axis=(1, 2)))  # every head's weights


def test_the_safetensors_reader_gives_the_json_apis_values_in_float32_and_float16(page, server):
    request = {
        "embeddings": [[1.5, -2, 0.25, 3], [0, 1, -1, 2], [2, 2, -0.5, 1]],
        "num_heads": 2,
        "causal": True,
        "include": ["weights", "scaled_scores", "q"],
    }
    api = server.post(request).json()
    read = page.evaluate(
        """async (request) => {
            const { readSafetensors } = await import("/static/safetensors.js");
            const answers = {};
            for (const wire of ["float32", "float16"]) {
                const reply = await fetch("/attend", {
                    method: "POST", body: JSON.stringify({ ...request, wire_dtype: wire }),
                    headers: { "content-type": "application/json", accept: "application/x-safetensors" },
                });
                const { metadata, tensors } = readSafetensors(await reply.arrayBuffer());
                const read = Object.entries(tensors).map(([name, t]) => [name, {
                    shape: t.shape, kind: t.data.constructor.name,
                    values: Array.from(t.data, (v) => (v === -Infinity ? "-inf" : v)),
                }]);
                answers[wire] = { meta: JSON.parse(metadata.meta), tensors: Object.fromEntries(read) };
            }
            return answers;
        }""",
        request,
    )
    for wire, numpy_type in (("float32", np.float32), ("float16", np.float16)):
        assert read[wire]["meta"]["wire_dtype"] == wire
        for name in ("weights", "scaled_scores", "q"):
            tensor = read[wire]["tensors"][name]
            expected = np.asarray(
                [np.nan if v is None else v for v in np.asarray(api[name], object).ravel()], np.float64
            )
            assert tensor["kind"] == "Float32Array" and tensor["shape"] == list(np.shape(api[name]))
            got = np.asarray([np.nan if v == "-inf" else v for v in tensor["values"]], np.float64)
            assert np.array_equal(np.isnan(got), np.isnan(expected)), (wire, name)  # -inf exactly where null
            finite = ~np.isnan(expected)
            assert np.array_equal(got[finite], expected[finite].astype(numpy_type).astype(np.float64)), (
                wire,
                name,
            )


def test_each_layer_and_each_heads_internals_are_fetched_once_when_first_shown(page):
    sent: list[tuple[str, dict[str, Any]]] = []
    page.on(
        "request",
        lambda request: (
            sent.append((request.headers.get("accept", ""), json.loads(request.post_data)))
            if request.url.endswith("/attend")
            else None
        ),
    )

    def fetched_since(action) -> list[tuple[Any, ...]]:
        """What the page asked /attend for after `action`: (format, layer, include, heads) per request."""
        del sent[:]
        action()
        settled(page)
        return [
            (accept.split("/")[-1], body.get("layer"), tuple(body["include"]), body.get("heads"))
            for accept, body in sent
        ]

    weights = ("weights", "scaled_scores")
    internals = ("q", "k", "v", "scores", "context", "output")
    # 11 tokens: the step-through and the tables are shown, so head 0's internals follow the weights
    assert fetched_since(lambda: run(page, SENTENCE)) == [
        ("x-safetensors", 0, weights, None),
        ("x-safetensors", 0, internals, [0]),
    ]
    assert fetched_since(lambda: page.select_option("#view-layer", "2")) == [
        ("x-safetensors", 2, weights, None),
        ("x-safetensors", 2, internals, [0]),
    ]
    assert fetched_since(lambda: page.select_option("#view-head", "3")) == [
        ("x-safetensors", 2, internals, [3])
    ]
    assert fetched_since(lambda: page.select_option("#view-layer", "0")) == [
        ("x-safetensors", 0, internals, [3])
    ]
    assert fetched_since(lambda: page.select_option("#view-head", "0")) == []  # all of it fetched before
    assert fetched_since(lambda: page.select_option("#view-layer", "2")) == []
    assert "[11, 32]" in page.locator("table[data-tensor='Q'] caption").inner_text()
    with page.expect_download():
        download = fetched_since(lambda: page.click("#download-json"))
    everything = ("q", "k", "v", "scores", "scaled_scores", "weights", "context", "output")
    assert download == [("json", "all", everything, None)]  # the whole answer, when asked for
