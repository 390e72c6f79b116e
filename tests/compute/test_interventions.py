"""`interventions` against references written here from transformers' own eager models with forward hooks
(tiny random GPT-2, and Llama with grouped-query attention): ablation and patching replace head slices of
W_o's input, knockout adds -inf (the dtype's minimum) to the model's own mask for the knocked-out pairs of
the chosen heads. Every later layer's weights and output, the predictions, predictions_clean, kl and
output_similarity are compared (1e-5); and the 422s."""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.support.families import SENTENCES
from tests.support.lm_families import error, lm_class, post

TEXT = SENTENCES[0]  # "The cat ate the fish because it was hungry"
SWAPPED = "The fish ate the cat because it was hungry"  # the same tokens, in another order
# where each family keeps its attention module and W_o, written out here (not taken from the service)
LLAMA_LIKE = ("llama", "mistral", "qwen2", "gemma", "gemma2")
ATTENTION = {"gpt2": "transformer.h.{}.attn", **dict.fromkeys(LLAMA_LIKE, "model.layers.{}.self_attn")}
W_O = {
    "gpt2": "transformer.h.{}.attn.c_proj",
    **dict.fromkeys(LLAMA_LIKE, "model.layers.{}.self_attn.o_proj"),
}
DECODERS = ["gpt2", "llama"]


class Run(NamedTuple):
    weights: list[torch.Tensor]  # per layer [batch, head, query_pos, key_pos]
    outputs: list[torch.Tensor]  # per layer: W_o's output [batch, pos, d_model]
    final: torch.Tensor  # the last hidden state, after the final norm
    log_probs: torch.Tensor  # [batch, pos, vocab]


def hooked_run(folder: Path, model_type: str, text: str, edits: list[tuple[Any, ...]] = ()) -> Run:  # type: ignore[assignment]
    """transformers' eager model on `text` with `edits`: ("zero" | "mean", layer, heads),
    ("patch", layer, heads, source_text), ("knockout", layer, heads, queries, keys)."""
    from transformers import AutoTokenizer

    model = lm_class(model_type).from_pretrained(folder, attn_implementation="eager").eval()
    config = model.config
    heads_n = config.num_attention_heads
    tokenizer = AutoTokenizer.from_pretrained(folder)
    hooks = []

    def heads_of(x: torch.Tensor) -> torch.Tensor:  # [batch, pos, heads*d] -> [batch, pos, heads, d]
        return x.view(*x.shape[:2], heads_n, -1)

    sources: dict[tuple[str, int], torch.Tensor] = {}
    for edit in edits:
        if edit[0] == "patch":  # the source's W_o input at that layer, from a clean run
            _, layer, _, source = edit
            record = model.get_submodule(W_O[model_type].format(layer)).register_forward_pre_hook(
                lambda m, args, layer=layer, source=source: sources.__setitem__(
                    (source, layer), args[0].clone()
                )
            )
            with torch.no_grad():
                model(**tokenizer(source, return_tensors="pt"))
            record.remove()
    for edit in edits:
        kind, layer, heads = edit[0], edit[1], edit[2]
        if kind == "knockout":
            queries, keys = edit[3], edit[4]

            def knock(module, args, kwargs, heads=heads, queries=queries, keys=keys):
                mask = kwargs["attention_mask"]
                hidden = kwargs.get("hidden_states", args[0] if args else None)
                b, pos = hidden.shape[:2]
                minimum = torch.finfo(hidden.dtype).min
                if mask is None:
                    mask = torch.zeros(b, 1, pos, pos, dtype=hidden.dtype)
                elif mask.dtype == torch.bool:
                    mask = torch.zeros(mask.shape, dtype=hidden.dtype).masked_fill(~mask, minimum)
                mask = mask.expand(b, heads_n, pos, mask.shape[-1]).clone()
                for h in heads if heads is not None else range(heads_n):
                    for q in queries:
                        mask[:, h, q, keys] = minimum
                kwargs["attention_mask"] = mask
                return args, kwargs

            hooks.append(
                model.get_submodule(ATTENTION[model_type].format(layer)).register_forward_pre_hook(
                    knock, with_kwargs=True
                )
            )
        else:

            def replace(module, args, kind=kind, layer=layer, heads=heads, edit=edit):
                x = heads_of(args[0].clone())
                if kind == "zero":
                    x[:, :, heads] = 0.0
                elif kind == "mean":
                    x[:, :, heads] = x[:, :, heads].mean(dim=1, keepdim=True)
                else:
                    x[:, :, heads] = heads_of(sources[edit[3], layer])[:, :, heads]
                return (x.flatten(2),)

            hooks.append(
                model.get_submodule(W_O[model_type].format(layer)).register_forward_pre_hook(replace)
            )
    outputs: list[torch.Tensor] = []
    for index in range(config.num_hidden_layers):
        hooks.append(
            model.get_submodule(W_O[model_type].format(index)).register_forward_hook(
                lambda m, i, o: outputs.append(o.detach())
            )
        )
    with torch.no_grad():
        result = model(
            **tokenizer(text, return_tensors="pt"), output_attentions=True, output_hidden_states=True
        )
    for hook in hooks:
        hook.remove()
    return Run(
        list(result.attentions),
        outputs,
        result.hidden_states[-1],
        torch.log_softmax(result.logits.double(), dim=-1),
    )


def intervened(lm_compute, model_type: str, interventions: list[dict[str, Any]], **extra: Any) -> Any:
    return post(
        lm_compute,
        {
            "text": TEXT,
            "model": model_type,
            "include": ["weights", "output"],
            "interventions": interventions,
            "predict": {"top_k": 5, "targets": extra.pop("targets", [])}
            if extra.pop("predict", True)
            else None,
            **extra,
        },
    )


def assert_matches(body: Any, run: Run, clean: Run) -> None:
    """Every layer's weights and output, predictions, predictions_clean, kl and output_similarity."""
    for entry in body["layers"]:
        index = entry["layer"]
        np.testing.assert_allclose(
            entry["weights"], run.weights[index].numpy(), atol=1e-5, err_msg=f"{index}"
        )
        np.testing.assert_allclose(entry["output"], run.outputs[index].numpy(), atol=1e-5, err_msg=f"{index}")
    last = run.log_probs.shape[1] - 1
    top = run.log_probs[:, [last]].topk(5, dim=-1)
    np.testing.assert_allclose(body["predictions"]["top_probs"], top.values.exp().numpy(), atol=1e-5)
    clean_top = clean.log_probs[:, [last]].topk(5, dim=-1)
    np.testing.assert_allclose(
        body["predictions_clean"]["top_probs"], clean_top.values.exp().numpy(), atol=1e-5
    )
    p_clean = clean.log_probs[:, [last]]
    kl = (p_clean.exp() * (p_clean - run.log_probs[:, [last]])).sum(-1)
    np.testing.assert_allclose(body["predictions"]["kl"], kl.numpy(), atol=1e-5)
    similarity = F.cosine_similarity(clean.final.double(), run.final.double(), dim=-1)
    np.testing.assert_allclose(body["output_similarity"], similarity.numpy(), atol=1e-5)


def changed(body: Any, clean: Run, layer: int) -> None:
    """The intervention mattered: the layers after `layer` differ from the clean run, the ones before not."""
    for entry in body["layers"]:
        index = entry["layer"]
        difference = np.abs(np.asarray(entry["output"]) - clean.outputs[index].numpy()).max()
        assert (difference > 1e-3) if index > layer else (difference < 1e-5 or index == layer), index


@pytest.mark.parametrize("how", ["zero", "mean"])
@pytest.mark.parametrize("model_type", DECODERS)
def test_ablation_matches_the_hooked_model(lm_compute, lm_folders, model_type, how):
    body = intervened(lm_compute, model_type, [{"ablate": {"layer": 1, "heads": [0, 2], "with": how}}])
    folder = lm_folders[model_type]
    run, clean = (
        hooked_run(folder, model_type, TEXT, [(how, 1, [0, 2])]),
        hooked_run(folder, model_type, TEXT),
    )
    assert_matches(body, run, clean)
    changed(body, clean, 1)
    assert body["predictions"]["kl"][0][0] > 1e-6  # the prediction moved (a clean pass gives ~1e-9)


@pytest.mark.parametrize("heads", [[1, 3], None])
@pytest.mark.parametrize("model_type", DECODERS)
def test_knockout_matches_the_hooked_model(lm_compute, lm_folders, model_type, heads):
    knockout = {"layer": 0, "queries": [4, 5, 6, 7], "keys": [1, 2, 3], **({"heads": heads} if heads else {})}
    body = intervened(lm_compute, model_type, [{"knockout": knockout}])
    folder = lm_folders[model_type]
    run = hooked_run(folder, model_type, TEXT, [("knockout", 0, heads, [4, 5, 6, 7], [1, 2, 3])])
    assert_matches(body, run, hooked_run(folder, model_type, TEXT))
    weights = np.asarray(body["layers"][0]["weights"])
    knocked = heads if heads is not None else range(weights.shape[1])
    assert (weights[0][np.ix_(list(knocked), [4, 5, 6, 7], [1, 2, 3])] == 0).all()


@pytest.mark.parametrize("model_type", DECODERS)
def test_patching_matches_the_hooked_model(lm_compute, lm_folders, model_type):
    body = intervened(lm_compute, model_type, [{"patch": {"layer": 1, "heads": [0, 3], "text": SWAPPED}}])
    folder = lm_folders[model_type]
    run = hooked_run(folder, model_type, TEXT, [("patch", 1, [0, 3], SWAPPED)])
    clean = hooked_run(folder, model_type, TEXT)
    assert_matches(body, run, clean)
    changed(body, clean, 1)


@pytest.mark.parametrize("model_type", DECODERS)
def test_several_interventions_apply_together(lm_compute, lm_folders, model_type):
    interventions = [
        {"knockout": {"layer": 0, "heads": [2], "queries": [5, 6], "keys": [0, 1, 2, 3]}},
        {"ablate": {"layer": 1, "heads": [1]}},
        {"patch": {"layer": 2, "heads": [0], "text": SWAPPED}},
        {"ablate": {"layer": 2, "heads": [3], "with": "mean"}},
    ]
    body = intervened(lm_compute, model_type, interventions)
    edits = [
        ("knockout", 0, [2], [5, 6], [0, 1, 2, 3]),
        ("zero", 1, [1]),
        ("patch", 2, [0], SWAPPED),
        ("mean", 2, [3]),
    ]
    folder = lm_folders[model_type]
    assert_matches(body, hooked_run(folder, model_type, TEXT, edits), hooked_run(folder, model_type, TEXT))


def test_mean_ablation_of_a_padded_batch_is_each_texts_own(lm_compute, lm_folders):
    """The mean is over each text's real query positions: a padded batch equals its texts one by one."""
    texts = [TEXT, "Hi there"]
    body = post(
        lm_compute,
        {
            "text": texts,
            "model": "llama",
            "include": ["output"],
            "interventions": [{"ablate": {"layer": 0, "heads": [1, 2], "with": "mean"}}],
            "predict": {},
        },
    )
    for b, text in enumerate(texts):
        run = hooked_run(lm_folders["llama"], "llama", text, [("mean", 0, [1, 2])])
        n = run.outputs[0].shape[1]
        for entry in body["layers"]:
            np.testing.assert_allclose(
                np.asarray(entry["output"])[b, :n], run.outputs[entry["layer"]][0].numpy(), atol=1e-5
            )
        np.testing.assert_allclose(
            body["predictions"]["top_probs"][b][0],
            run.log_probs[0, -1].topk(5).values.exp().numpy(),
            atol=1e-5,
        )


def test_clean_false_runs_only_the_intervened_pass(lm_compute):
    body = intervened(lm_compute, "gpt2", [{"ablate": {"layer": 0, "heads": [0]}}], clean=False)
    assert "predictions_clean" not in body and "output_similarity" not in body
    assert "kl" not in body["predictions"] and "predictions.kl" not in body["meta"]["axes"]


def test_output_similarity_for_a_model_without_predictions(lm_compute, lm_folders):
    """An encoder (and no predict): the cosine similarity of the last hidden states."""
    from transformers import AutoTokenizer

    body = post(
        lm_compute,
        {
            "text": TEXT,
            "model": "bert",
            "include": [],
            "interventions": [{"ablate": {"layer": 0, "heads": [0, 1]}}],
        },
    )
    model = lm_class("bert").from_pretrained(lm_folders["bert"], attn_implementation="eager").eval()
    inputs = AutoTokenizer.from_pretrained(lm_folders["bert"])(TEXT, return_tensors="pt")
    finals = []
    for ablate in (False, True):
        hook = None
        if ablate:
            dense = model.get_submodule("bert.encoder.layer.0.attention.output.dense")

            def zero(module, args):
                x = args[0].clone().view(*args[0].shape[:2], 4, -1)
                x[:, :, [0, 1]] = 0.0
                return (x.flatten(2),)

            hook = dense.register_forward_pre_hook(zero)
        with torch.no_grad():
            finals.append(model(**inputs, output_hidden_states=True).hidden_states[-1])
        if hook:
            hook.remove()
    expected = F.cosine_similarity(finals[0].double(), finals[1].double(), dim=-1)
    np.testing.assert_allclose(body["output_similarity"], expected.numpy(), atol=1e-5)
    assert body["meta"]["axes"]["output_similarity"] == ["batch", "query_pos"]
    assert min(body["output_similarity"][0]) < 0.99999  # the ablation moved the last hidden states


@pytest.mark.parametrize(
    ("intervention", "loc", "words"),
    [
        ({"ablate": {"layer": 3, "heads": [0]}}, ["ablate", "layer"], "layers 0 to 2"),
        ({"ablate": {"layer": 0, "heads": [1, 4]}}, ["ablate", "heads", 1], "0 to 3"),
        ({"knockout": {"layer": 0, "queries": [2, 18], "keys": [0]}}, ["knockout", "queries", 1], "0 to 17"),
        ({"knockout": {"layer": 0, "queries": [2], "keys": [30]}}, ["knockout", "keys", 0], "0 to 17"),
        ({"patch": {"layer": 0, "heads": [0], "text": "Hi there"}}, ["patch", "text"], "token count"),
    ],
)
def test_bad_interventions_are_422s_naming_the_field(lm_compute, intervention, loc, words):
    item = error(lm_compute, {"text": TEXT, "model": "gpt2", "interventions": [intervention]})
    assert item["loc"] == ["body", "interventions", 0, *loc]
    assert words in item["msg"]


def test_an_intervention_names_exactly_one_kind(lm_compute):
    response = lm_compute.post(
        {
            "text": TEXT,
            "model": "gpt2",
            "interventions": [{"ablate": {"layer": 0, "heads": [0]}, "knockout": None}],
        }
    )
    assert response.status_code == 200
    response = lm_compute.post({"text": TEXT, "model": "gpt2", "interventions": [{}]})
    assert response.status_code == 422 and "exactly one of ablate" in response.text
