"""The explorer's prediction panel (static/predictions.js), driven in Debian's Chromium with the network
cut to 127.0.0.1, on a tiny random Llama saved with its language-model head and served by a real uvicorn:
the shown next tokens and probabilities are the service's JSON answer and transformers' own softmax; a
click on a head of the small multiples sends a zero-ablation of it and the shown prediction becomes the
ablated answer's (transformers' with a hook zeroing that head before W_o), next to the clean one, with a
later layer's heads under the ablation; "Generate" appends transformers' greedy tokens and shows each
one's attention row as the API gives it (and transformers' eager attention computes it).
Screenshot: test-output/explorer-predictions.png."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from devtools.servers import Server
from tests.server.test_page import OUTPUT, run
from tests.support.browser import needs_chromium, offline_page
from tests.support.lm_families import lm_class, save_lm_model

pytestmark = [pytest.mark.slow, needs_chromium]
MODEL = "tiny-llama-lm"
TEXT = "The cat ate the fish because it was"
HEADS = 4  # the tiny Llama's query heads (tests/support/families.py)


@pytest.fixture(scope="module")
def llama_folder() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="attention-page-lm-"))
    yield save_lm_model("llama", folder / "llama")
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def lm_server(llama_folder: Path) -> Iterator[Server]:
    env = {"ATTENTION_MODELS": json.dumps({MODEL: str(llama_folder)})}
    with Server(env) as server:
        yield server


@pytest.fixture
def watched(browser, lm_server) -> Iterator[Any]:
    """An offline page on the explorer, with the JSON bodies it POSTs to /attend in `page.sent`."""
    watched = offline_page(browser)
    page = watched.page
    page.sent = []
    page.on(
        "request", lambda r: page.sent.append(json.loads(r.post_data)) if r.url.endswith("/attend") else None
    )
    page.goto(lm_server.url + "/")
    page.wait_for_function("() => document.querySelectorAll('#model option').length > 1")
    page.select_option("#model", MODEL)
    run(page, TEXT)
    page.wait_for_function("() => document.getElementById('predictions').dataset.shown === 'clean'")
    yield watched
    assert watched.left == [] and watched.violations() == [] and watched.errors == [] and watched.failed == []
    page.context.close()


def sent_with(page, field: str) -> dict[str, Any]:
    """The last body the page POSTed to /attend with `field` (other fetches of the explorer interleave)."""
    bodies: list[dict[str, Any]] = [body for body in page.sent if field in body]
    assert bodies, f"no request with {field}"
    return bodies[-1]


def answer(server: Server, **fields: Any) -> dict[str, Any]:
    response = server.post({"text": TEXT, "model": MODEL, "include": [], **fields})
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def shown(page, kind: str) -> tuple[list[str], list[float]]:
    """The tokens (as the API writes them) and probabilities of the page's `kind` table (clean or ablated)."""
    rows: list[list[Any]] = page.evaluate(
        """(kind) => Array.from(
            document.querySelectorAll(`table.prediction[data-run="${kind}"] tr[data-rank]`),
            (row) => [row.querySelector(".token").dataset.token,
                      Number(row.querySelector(".prob").dataset.prob)],
        )""",
        kind,
    )
    return [token for token, _ in rows], [prob for _, prob in rows]


def changes(page) -> list[float]:
    """Each head's largest weight change under the ablation, as the page's ablated small multiples say."""
    page.wait_for_function(f"() => document.querySelectorAll('#ablated-grid figure').length === {HEADS}")
    found: list[float] = page.locator("#ablated-grid figure").evaluate_all(
        "(figures) => figures.map((figure) => Number(figure.dataset.change))"
    )
    return found


def reference_probs(folder: Path, ablate: dict[int, list[int]] | None = None) -> tuple[list[str], np.ndarray]:
    """transformers' top 5 next tokens after TEXT and their probabilities, with the heads `ablate[layer]`
    zeroed before W_o (their context: o_proj's input)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = lm_class("llama").from_pretrained(folder, attn_implementation="eager").eval()
    hooks = []
    for layer, heads in (ablate or {}).items():

        def zero(
            module: torch.nn.Module, args: tuple[torch.Tensor], heads: list[int] = heads
        ) -> tuple[torch.Tensor]:
            context = args[0].clone().view(*args[0].shape[:2], HEADS, -1)  # [batch, query, head, d_v]
            context[:, :, heads] = 0.0
            return (context.flatten(2),)

        hooks.append(model.model.layers[layer].self_attn.o_proj.register_forward_pre_hook(zero))
    with torch.no_grad():
        logits = model(**tokenizer(TEXT, return_tensors="pt")).logits[0, -1].double()
    for hook in hooks:
        hook.remove()
    top = torch.softmax(logits, -1).topk(5)
    return [str(tokenizer.convert_ids_to_tokens(index)) for index in top.indices.tolist()], top.values.numpy()


def test_the_panel_shows_the_services_and_transformers_next_tokens(watched, lm_server, llama_folder):
    page = watched.page
    tokens, probs = shown(page, "clean")
    served = answer(lm_server, predict={"top_k": 5})["predictions"]
    assert tokens == served["top_tokens"][0][0] and probs == served["top_probs"][0][0]
    expected_tokens, expected_probs = reference_probs(llama_folder)
    assert tokens == expected_tokens
    np.testing.assert_allclose(probs, expected_probs, atol=1e-5)
    assert {"predict": {"top_k": 5}, "include": []}.items() <= sent_with(page, "predict").items()
    assert page.locator("table.prediction[data-run=ablated]").count() == 0


def test_clicking_heads_ablates_them_and_shows_the_ablated_prediction_beside_the_clean(
    watched, lm_server, llama_folder
):
    page = watched.page
    clean_tokens, clean_probs = shown(page, "clean")
    page.check("#ablate-on-click")
    for head in (1, 3):
        page.click(f"#grid figure[data-head='{head}']")
    edits = [{"ablate": {"layer": 0, "heads": [1, 3], "with": "zero"}}]
    shown_edits = json.dumps(json.dumps(edits, separators=(",", ":")))  # as JavaScript writes them
    page.wait_for_function(f"() => document.getElementById('predictions').dataset.shown === {shown_edits}")
    assert sent_with(page, "interventions")["interventions"] == edits
    assert page.input_value("#view-head") == "0"  # a click to ablate does not select the head
    assert page.locator("#grid figure.ablated").evaluate_all(
        "(figures) => figures.map((f) => f.dataset.head)"
    ) == ["1", "3"]

    tokens, probs = shown(page, "ablated")
    # the page also asks for the layers' weights (an eager pass); predictions alone resume the edited pass
    # with SDPA (docs/interventions.md): the same numbers up to float32 rounding
    served = answer(lm_server, predict={"top_k": 5}, interventions=edits)
    assert tokens == served["predictions"]["top_tokens"][0][0]
    np.testing.assert_allclose(probs, served["predictions"]["top_probs"][0][0], rtol=1e-5)
    assert shown(page, "clean") == (clean_tokens, clean_probs)  # side by side with the clean run
    expected_tokens, expected_probs = reference_probs(llama_folder, {0: [1, 3]})
    assert tokens == expected_tokens
    np.testing.assert_allclose(probs, expected_probs, atol=1e-5)
    assert not np.allclose(probs, clean_probs, atol=1e-4)  # the ablation changed the prediction
    kl = served["predictions"]["kl"][0][0]
    assert f"KL(clean ‖ ablated) {kl:.4f}" in page.inner_text("table.prediction[data-run=ablated] caption")

    # the ablated layer's own weights do not change (the ablation acts after them); a later layer's do: its
    # heads are drawn next to the clean ones, each with its largest change from the clean run's weights
    # (up to float32 rounding: an intervened pass runs the model's own forward, the clean one the service's)
    np.testing.assert_allclose(changes(page), [0.0] * HEADS, atol=1e-6)
    page.select_option("#view-layer", "1")
    page.wait_for_function(
        "() => document.getElementById('ablated-grid-caption').textContent.startsWith('Layer 1')"
    )
    ablated_request = sent_with(page, "interventions")
    assert ablated_request["layer"] == 1 and "weights" in ablated_request["include"]
    clean_weights = np.asarray(answer(lm_server, layer=1, include=["weights"])["layers"][0]["weights"][0])
    ablated_weights = np.asarray(
        answer(lm_server, layer=1, include=["weights"], interventions=edits)["layers"][0]["weights"][0]
    )
    expected_changes = np.abs(ablated_weights - clean_weights).max(axis=(1, 2))  # [head]
    np.testing.assert_allclose(changes(page), expected_changes, atol=1e-6)
    assert expected_changes.max() > 1e-3
    page.screenshot(path=str(OUTPUT / "explorer-predictions.png"), full_page=True)

    page.click("#clear-ablations")
    page.wait_for_function("() => document.getElementById('predictions').dataset.shown === 'clean'")
    assert page.locator("#grid figure.ablated").count() == 0


def test_generate_appends_the_greedy_tokens_with_their_attention_rows(watched, lm_server, llama_folder):
    from transformers import AutoTokenizer

    page = watched.page
    page.fill("#generate-count", "3")
    page.click("#generate")
    page.wait_for_function(
        "() => document.getElementById('generate-status').textContent.includes('generated')"
    )
    generated = page.locator("#generated-text span.generated").evaluate_all(
        "(s) => s.map((x) => x.dataset.token)"
    )

    tokenizer = AutoTokenizer.from_pretrained(llama_folder)
    model = lm_class("llama").from_pretrained(llama_folder, attn_implementation="eager").eval()
    prompt = tokenizer(TEXT, return_tensors="pt")
    with torch.no_grad():
        ids = model.generate(**prompt, do_sample=False, max_new_tokens=3)[0]
    length = prompt["input_ids"].shape[1]
    assert generated == tokenizer.convert_ids_to_tokens(ids[length:].tolist())
    prompt_shown = page.locator("#generated-text span.prompt").evaluate_all(
        "(s) => s.map((x) => x.dataset.token)"
    )
    assert prompt_shown == tokenizer.convert_ids_to_tokens(ids[:length].tolist())

    # each generated token's row of layer 0, head 0 (the view), as the service answers it
    served = answer(lm_server, layer=0, include=["weights"], generate={"max_new_tokens": 3})
    weights = np.asarray(served["layers"][0]["weights"][0][0])  # [query, key]
    rows: list[list[float]] = page.evaluate(
        """() => Array.from(document.querySelectorAll("#generation-rows tr[data-position]"), (row) =>
            Array.from(row.querySelectorAll("td[data-weight]"), (cell) => Number(cell.dataset.weight)))"""
    )
    with torch.no_grad():  # by causality, row i of the whole text's pass is what token i saw when generated
        attentions = model(ids[None], output_attentions=True).attentions[0][0, 0].numpy()
    assert len(rows) == len(generated)
    for offset, row in enumerate(rows):
        i = length + offset
        np.testing.assert_array_equal(np.asarray(row, np.float32), weights[i, : i + 1].astype(np.float32))
        np.testing.assert_allclose(row, attentions[i, : i + 1], atol=1e-5)


def test_a_refused_generation_names_the_field_next_to_the_button(watched):
    page = watched.page
    page.fill("#generate-count", "300")  # above the API's 256
    page.click("#generate")
    page.wait_for_function("() => document.getElementById('generate-error').textContent !== ''")
    message = page.inner_text("#generate-error")
    assert message.startswith("HTTP 422") and "generate.max_new_tokens" in message, message
    assert len(watched.failed) == 1 and watched.failed[0].startswith("422 ")
    # the one refusal this test asked for (which Chromium also logs on the console as a failed load)
    watched.failed.clear()
    watched.errors[:] = [line for line in watched.errors if "status of 422" not in line]


def test_a_model_without_a_language_model_head_has_no_panel(browser, lm_server):
    watched = offline_page(browser)
    page = watched.page
    sent: list[dict[str, Any]] = []
    page.on("request", lambda r: sent.append(json.loads(r.post_data)) if r.url.endswith("/attend") else None)
    page.goto(lm_server.url + "/")
    page.wait_for_function("() => document.querySelectorAll('#model option').length > 1")
    page.select_option("#model", "all-MiniLM-L6-v2")  # GET /models: lm_head null
    run(page, "The cat sat")
    assert page.locator("#predictions").is_hidden()
    assert sent and not any("predict" in body or "generate" in body for body in sent)
    assert watched.left == [] and watched.errors == [] and watched.failed == []
    page.context.close()
