"""The Python client against the real service (uvicorn in a subprocess) with a tiny random Llama saved with
its language-model head: `predict`, `interventions` and `generate` by their wire names, and the top-level
sections as arrays with their axes, against transformers' own model (its logits, with a hook on W_o for the
ablation, and its generate())."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from attention_client import Client, InvalidRequest
from devtools.servers import Server
from tests.support.families import SENTENCES
from tests.support.lm_families import lm_class, save_lm_model

TEXT = SENTENCES[0]


@pytest.fixture(scope="module")
def llama_folder() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="attention-client-lm-"))
    yield save_lm_model("llama", folder / "llama")
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def lm_client(llama_folder: Path) -> Iterator[Client]:
    env = {"ATTENTION_MODELS": json.dumps({"llama-lm": str(llama_folder)})}
    with Server(env) as server, Client(server.url) as client:
        yield client


def reference(folder: Path, ablate_heads: list[int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The log-probabilities at the last position, and the last hidden state, of transformers' Llama (with
    layer 1's heads `ablate_heads` zeroed before W_o)."""
    from transformers import AutoTokenizer

    model = lm_class("llama").from_pretrained(folder, attn_implementation="eager").eval()
    hook = None
    if ablate_heads:

        def zero(module: torch.nn.Module, args: tuple[torch.Tensor]) -> tuple[torch.Tensor]:
            x = args[0].clone().view(*args[0].shape[:2], 4, -1)
            x[:, :, ablate_heads] = 0.0
            return (x.flatten(2),)

        hook = model.model.layers[1].self_attn.o_proj.register_forward_pre_hook(zero)
    with torch.no_grad():
        out = model(
            **AutoTokenizer.from_pretrained(folder)(TEXT, return_tensors="pt"), output_hidden_states=True
        )
    if hook:
        hook.remove()
    return torch.log_softmax(out.logits[0, -1].double(), -1), out.hidden_states[-1][0]


def test_predictions_interventions_and_similarity_through_the_client(lm_client, llama_folder):
    result = lm_client.attend(
        text=TEXT,
        model="llama-lm",
        layer=[1, 2],
        include=["weights"],
        predict={"top_k": 3, "targets": ["Ġit"]},
        interventions=[{"ablate": {"layer": 1, "heads": [0, 3], "with": "zero"}}],
    )
    clean, clean_final = reference(llama_folder)
    ablated, ablated_final = reference(llama_folder, [0, 3])
    assert result.predictions is not None and result.predictions_clean is not None
    np.testing.assert_allclose(result.predictions.top_probs[0, 0], ablated.topk(3).values.exp(), atol=1e-5)
    np.testing.assert_allclose(
        result.predictions_clean.top_probs[0, 0], clean.topk(3).values.exp(), atol=1e-5
    )
    assert result.predictions.kl is not None and result.predictions.target_logprobs is not None
    kl = float((clean.exp() * (clean - ablated)).sum())
    np.testing.assert_allclose(result.predictions.kl, [[kl]], atol=1e-5)
    assert result.predictions.top_probs.shape == (1, 1, 3) and result.predictions.target_logprobs.shape == (
        1,
        1,
        1,
    )
    assert len(result.predictions.top_tokens[0][0]) == 3
    assert result.output_similarity is not None
    expected = torch.nn.functional.cosine_similarity(clean_final.double(), ablated_final.double(), dim=-1)
    np.testing.assert_allclose(result.output_similarity[0], expected, atol=1e-5)
    assert list(result.layers) == [1, 2] and list(result) == []  # the sections are not top-level tensors
    assert result.meta["predicted_positions"] == [[result.meta["seq"] - 1]]


def test_generation_through_the_client(lm_client, llama_folder):
    from transformers import AutoTokenizer

    result = lm_client.attend(
        text=TEXT, model="llama-lm", generate={"max_new_tokens": 3}, include=["weights"]
    )
    tokenizer = AutoTokenizer.from_pretrained(llama_folder)
    model = lm_class("llama").from_pretrained(llama_folder, attn_implementation="eager").eval()
    with torch.no_grad():
        sequence = model.generate(**tokenizer(TEXT, return_tensors="pt"), do_sample=False, max_new_tokens=3)
    assert result.tokens == [tokenizer.convert_ids_to_tokens(sequence[0].tolist())]
    assert result.meta["generated"] == [3] and result.layers[0].weights.shape[2] == sequence.shape[1]


def test_a_bad_intervention_is_an_invalid_request(lm_client):
    with pytest.raises(InvalidRequest, match="layers 0 to 2"):
        lm_client.attend(text=TEXT, model="llama-lm", interventions=[{"ablate": {"layer": 7, "heads": [0]}}])


def test_the_open_inference_protocol_returns_the_sections_as_outputs(lm_client, llama_folder):
    """No outputs named: the predictions come as outputs `predictions.top_probs`, ... (tokens as BYTES)."""
    body = {
        "inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [TEXT]}],
        "parameters": {
            "binary_data_output": False,
            "layer": 0,
            "include": [],
            "predict": {"top_k": 2},
            "interventions": [{"ablate": {"layer": 1, "heads": [0, 3]}}],
        },
    }
    response = lm_client._http.post("/v2/models/llama-lm/infer", json=body)
    assert response.status_code == 200, response.text
    outputs = {o["name"]: o for o in response.json()["outputs"]}
    ablated, _ = reference(llama_folder, [0, 3])
    top = outputs["predictions.top_probs"]
    assert top["shape"] == [1, 1, 2] and top["datatype"] == "FP32"
    np.testing.assert_allclose(top["data"], ablated.topk(2).values.exp(), atol=1e-5)
    assert outputs["predictions.top_tokens"]["datatype"] == "BYTES"
    assert outputs["predictions.top_tokens"]["shape"] == [1, 1, 2]
    assert {"predictions.kl", "predictions_clean.top_probs", "output_similarity"} <= set(outputs)
