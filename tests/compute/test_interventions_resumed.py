"""Requests that return no layer's internals (`include: []`) run their intervened pass resumed at the first
layer the interventions edit, from the clean pass's hidden states (service/compute/models/resumed.py),
through SDPA. Each is compared with transformers' own eager model with forward hooks, run whole
(tests/compute/test_interventions.py's hooked_run): predictions, predictions_clean, kl and
output_similarity at 1e-5, with interventions at the first and the last layer, in every decoder family
(windows, soft-cap, grouped-query), padded batches, patching, knockout and several at once; and the resumed
pass itself, module by module: the layers before the first edited one are not run again."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from service.compute.models.resumed import clean_pass, resumed
from tests.compute.test_interventions import SWAPPED, TEXT, Run, hooked_run
from tests.support.families import LAYERS
from tests.support.lm_families import DECODER_TYPES, lm_class, post

LAST = LAYERS - 1


def ask(lm_compute: Any, model_type: str, interventions: list[dict[str, Any]], text: Any = TEXT) -> Any:
    return post(
        lm_compute,
        {
            "text": text,
            "model": model_type,
            "include": [],
            "interventions": interventions,
            "predict": {"top_k": 5},
        },
    )


def assert_sections(body: Any, run: Run, clean: Run, text: int = 0, length: int | None = None) -> None:
    """Text `text` of the answer against the hooked runs of that text alone: its prediction at its last
    token, the clean one, kl, and output_similarity over its `length` real positions."""
    last = run.log_probs.shape[1] - 1
    top = run.log_probs[0, last].topk(5)
    np.testing.assert_allclose(body["predictions"]["top_probs"][text][0], top.values.exp().numpy(), atol=1e-5)
    clean_top = clean.log_probs[0, last].topk(5)
    np.testing.assert_allclose(
        body["predictions_clean"]["top_probs"][text][0], clean_top.values.exp().numpy(), atol=1e-5
    )
    p_clean = clean.log_probs[0, last]
    kl = (p_clean.exp() * (p_clean - run.log_probs[0, last])).sum()
    np.testing.assert_allclose(body["predictions"]["kl"][text][0], kl.item(), atol=1e-5)
    similarity = F.cosine_similarity(clean.final[0].double(), run.final[0].double(), dim=-1)
    n = length if length is not None else similarity.shape[0]
    np.testing.assert_allclose(body["output_similarity"][text][:n], similarity.numpy(), atol=1e-5)


@pytest.mark.parametrize("layer", [0, LAST])
@pytest.mark.parametrize("model_type", DECODER_TYPES)
def test_ablation_at_the_first_and_last_layer(lm_compute, lm_folders, model_type, layer):
    folder = lm_folders[model_type]
    clean = hooked_run(folder, model_type, TEXT)
    for how in ("zero", "mean"):
        body = ask(lm_compute, model_type, [{"ablate": {"layer": layer, "heads": [0, 2], "with": how}}])
        run = hooked_run(folder, model_type, TEXT, [(how, layer, [0, 2])])
        assert_sections(body, run, clean)
        assert body["predictions"]["kl"][0][0] > 1e-7  # the ablation moved the prediction


@pytest.mark.parametrize("layer", [0, LAST])
@pytest.mark.parametrize("model_type", ["gpt2", "llama", "gemma2"])
def test_knockout(lm_compute, lm_folders, model_type, layer):
    folder = lm_folders[model_type]
    knockout = {"layer": layer, "heads": [1, 3], "queries": [4, 5, 6, 7], "keys": [1, 2, 3]}
    body = ask(lm_compute, model_type, [{"knockout": knockout}])
    run = hooked_run(folder, model_type, TEXT, [("knockout", layer, [1, 3], [4, 5, 6, 7], [1, 2, 3])])
    assert_sections(body, run, hooked_run(folder, model_type, TEXT))


@pytest.mark.parametrize("layer", [0, LAST])
@pytest.mark.parametrize("model_type", ["gpt2", "llama", "qwen2"])
def test_patch(lm_compute, lm_folders, model_type, layer):
    """The patch's source context comes from a pass over the other text: not the request's clean pass."""
    folder = lm_folders[model_type]
    body = ask(lm_compute, model_type, [{"patch": {"layer": layer, "heads": [0, 3], "text": SWAPPED}}])
    run = hooked_run(folder, model_type, TEXT, [("patch", layer, [0, 3], SWAPPED)])
    assert_sections(body, run, hooked_run(folder, model_type, TEXT))
    assert body["predictions"]["kl"][0][0] > 1e-7


@pytest.mark.parametrize("model_type", ["llama", "mistral", "gemma2"])
def test_several_at_once_start_at_the_first_edited_layer(lm_compute, lm_folders, model_type):
    interventions = [
        {"ablate": {"layer": LAST, "heads": [3], "with": "mean"}},
        {"patch": {"layer": 1, "heads": [0], "text": SWAPPED}},
        {"knockout": {"layer": 1, "heads": [2], "queries": [5, 6], "keys": [0, 1, 2, 3]}},
    ]
    edits = [("mean", LAST, [3]), ("patch", 1, [0], SWAPPED), ("knockout", 1, [2], [5, 6], [0, 1, 2, 3])]
    folder = lm_folders[model_type]
    body = ask(lm_compute, model_type, interventions)
    assert_sections(body, hooked_run(folder, model_type, TEXT, edits), hooked_run(folder, model_type, TEXT))


@pytest.mark.parametrize("model_type", ["gpt2", "llama", "gemma2"])
def test_a_padded_batch_is_each_text_alone(lm_compute, lm_folders, model_type):
    """Texts of several lengths (padded on the right): each text's sections are those of its hooked run
    alone; mean ablation is over each text's own real positions."""
    texts = [TEXT, "Hi there", "Attention is a soft table look-up over keys and values"]
    folder = lm_folders[model_type]
    for layer, how in ((0, "mean"), (LAST, "zero")):
        ablate = {"layer": layer, "heads": [1, 2], "with": how}
        body = ask(lm_compute, model_type, [{"ablate": ablate}], texts)
        for index, text in enumerate(texts):
            run = hooked_run(folder, model_type, text, [(how, layer, [1, 2])])
            clean = hooked_run(folder, model_type, text)
            assert_sections(body, run, clean, index, run.final.shape[1])


def test_a_sweep_over_heads_reuses_the_clean_pass(lm_compute, lm_folders):
    """The same text again with another head each time (the clean pass is kept): each answer is its own."""
    folder = lm_folders["llama"]
    clean = hooked_run(folder, "llama", TEXT)
    for layer, head in ((1, 0), (0, 3), (LAST, 1), (1, 0)):
        body = ask(lm_compute, "llama", [{"ablate": {"layer": layer, "heads": [head]}}])
        assert_sections(body, hooked_run(folder, "llama", TEXT, [("zero", layer, [head])]), clean)


class Called:
    """Counts the calls of each layer of a model (a forward pre-hook on each block)."""

    def __init__(self, blocks: list[torch.nn.Module]):
        self.counts = [0] * len(blocks)
        self.hooks = [
            block.register_forward_pre_hook(lambda module, args, index=index: self._count(index))
            for index, block in enumerate(blocks)
        ]

    def _count(self, index: int) -> None:
        self.counts[index] += 1

    def remove(self) -> None:
        for hook in self.hooks:
            hook.remove()


@pytest.mark.parametrize("start", range(LAYERS))
@pytest.mark.parametrize("model_type", ["gpt2", "llama", "gemma2"])
def test_resumed_runs_only_the_layers_from_its_start(lm_compute, lm_folders, model_type, start):
    """resumed() alone: the final hidden states of the hooked model ablated at `start`, with only layers
    start.. called; the clean pass's own final ones are transformers'."""
    from service.compute.interventions import Edits

    model = lm_compute.models.get(model_type)
    forward = model.forward
    ids = model.tokenizer(TEXT, return_tensors="pt")["input_ids"]
    clean = clean_pass(forward, ids, None, with_calls=True)
    folder = lm_folders[model_type]
    np.testing.assert_allclose(clean.final, hooked_run(folder, model_type, TEXT).final, atol=1e-5)
    edits = Edits(None)
    edits.replacements[start].append(([1], "zero", None))
    called = Called([parts.block for parts in forward.parts])
    try:
        final = resumed(forward, clean, start, edits)
    finally:
        called.remove()
    assert called.counts == [0] * start + [1] * (LAYERS - start)
    expected = hooked_run(folder, model_type, TEXT, [("zero", start, [1])]).final
    np.testing.assert_allclose(final, expected, atol=1e-5)
    assert float((final - clean.final).abs().max()) > 1e-4  # the ablation mattered


# each encoder's W_o (the dense after its self-attention), written out here (not taken from the service)
ENCODER_W_O = {
    "bert": "bert.encoder.layer.{}.attention.output.dense",
    "roberta": "roberta.encoder.layer.{}.attention.output.dense",
    "distilbert": "distilbert.transformer.layer.{}.attention.out_lin",
    "modernbert": "model.layers.{}.attn.Wo",
}


@pytest.mark.parametrize("model_type", list(ENCODER_W_O))
def test_output_similarity_of_encoders(lm_compute, lm_folders, model_type):
    """An encoder ablated at its last layer (the pass resumed there; ModernBERT's final norm after it):
    output_similarity against the eager model with a hook zeroing the heads' slice of W_o's input."""
    from transformers import AutoTokenizer

    folder = lm_folders[model_type]
    body = post(
        lm_compute,
        {
            "text": TEXT,
            "model": model_type,
            "include": [],
            "interventions": [{"ablate": {"layer": LAST, "heads": [0, 1]}}],
        },
    )
    model = lm_class(model_type).from_pretrained(folder, attn_implementation="eager").eval()
    inputs = AutoTokenizer.from_pretrained(folder)(TEXT, return_tensors="pt")
    heads = model.config.num_attention_heads
    finals = []
    for ablate in (False, True):
        hook = None
        if ablate:

            def zero(module, args):
                x = args[0].clone().view(*args[0].shape[:2], heads, -1)
                x[:, :, [0, 1]] = 0.0
                return (x.flatten(2),)

            hook = model.get_submodule(ENCODER_W_O[model_type].format(LAST)).register_forward_pre_hook(zero)
        with torch.no_grad():
            finals.append(model.base_model(**inputs).last_hidden_state)
        if hook:
            hook.remove()
    expected = F.cosine_similarity(finals[0].double(), finals[1].double(), dim=-1)
    np.testing.assert_allclose(body["output_similarity"], expected.numpy(), atol=1e-5)
    assert min(body["output_similarity"][0]) < 0.99999  # the ablation moved the last hidden states
