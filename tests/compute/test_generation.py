"""`generate` against transformers' own generate(do_sample=False, output_attentions=True) on tiny random
GPT-2 and Llama (grouped-query) folders: the same tokens, token for token, and each step's attentions row for
row in the internals over prompt and generated tokens; stopping at the end-of-text token; a stream's
generated-token lines before its layers; and the 422s and 413s."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from devtools.compute import InProcess
from tests.support.families import SENTENCES, save_family_model
from tests.support.lm_families import error, lm_class, post

DECODERS = ["gpt2", "llama"]


def reference_generation(folder: Path, text: str, new_tokens: int) -> tuple[list[str], Any, int]:
    """transformers' greedy generation: the tokens of prompt and generated, each step's attentions (per step
    a tuple of layers [1, head, step queries, keys]), and the prompt's length."""
    from transformers import AutoTokenizer

    model = lm_class("gpt2").from_pretrained(folder, attn_implementation="eager").eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    inputs = tokenizer(text, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(
            **inputs,
            do_sample=False,
            max_new_tokens=new_tokens,
            output_attentions=True,
            return_dict_in_generate=True,
            pad_token_id=tokenizer.eos_token_id,
        )
    tokens = tokenizer.convert_ids_to_tokens(out.sequences[0].tolist())
    return list(tokens), out.attentions, int(inputs["input_ids"].shape[1])


@pytest.mark.parametrize("model_type", DECODERS)
def test_generation_equals_transformers_generate_token_for_token_and_row_for_row(
    lm_compute, lm_folders, model_type
):
    text, new_tokens = SENTENCES[0], 6
    body = post(
        lm_compute,
        {
            "text": text,
            "model": model_type,
            "generate": {"max_new_tokens": new_tokens},
            "include": ["weights"],
        },
    )
    tokens, steps, prompt = reference_generation(lm_folders[model_type], text, new_tokens)
    assert body["tokens"] == [tokens]
    assert body["meta"]["prompt_lengths"] == [prompt] and body["meta"]["generated"] == [new_tokens]
    assert body["meta"]["seq"] == prompt + new_tokens
    for entry in body["layers"]:
        weights = np.asarray(entry["weights"])[0]  # [head, query_pos, key_pos]
        layer = entry["layer"]
        np.testing.assert_allclose(weights[:, :prompt, :prompt], steps[0][layer][0].numpy(), atol=1e-5)
        for step in range(1, len(steps)):  # step s feeds the token at prompt + s - 1
            row, keys = prompt + step - 1, prompt + step
            np.testing.assert_allclose(weights[:, row, :keys], steps[step][layer][0, :, 0].numpy(), atol=1e-5)
            assert (weights[:, row, keys:] == 0).all()


def test_each_text_of_a_batch_generates_as_it_would_alone(lm_compute, lm_folders):
    texts = [SENTENCES[0], "Hi there"]
    body = post(
        lm_compute, {"text": texts, "model": "llama", "generate": {"max_new_tokens": 4}, "include": []}
    )
    for b, text in enumerate(texts):
        tokens, _, prompt = reference_generation(lm_folders["llama"], text, 4)
        assert body["tokens"][b][: len(tokens)] == tokens
        assert body["meta"]["prompt_lengths"][b] == prompt and body["meta"]["lengths"][b] == len(tokens)


@pytest.fixture(scope="module")
def stops_early(
    lm_folders: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> tuple[InProcess, Path]:
    """The GPT-2 folder whose generation config names, as its end-of-text token, the token greedy decoding
    of SENTENCES[0] makes first."""
    folder = tmp_path_factory.mktemp("stops") / "gpt2"
    shutil.copytree(lm_folders["gpt2"], folder)
    tokens, _, _ = reference_generation(folder, SENTENCES[0], 1)
    from transformers import AutoTokenizer

    first = AutoTokenizer.from_pretrained(folder).convert_tokens_to_ids(tokens[-1])
    config_file = folder / "generation_config.json"
    config = json.loads(config_file.read_text()) if config_file.exists() else {}
    config_file.write_text(json.dumps({**config, "eos_token_id": first}))
    env = {"ATTENTION_MODELS": json.dumps({"stops": str(folder)}), "ATTENTION_LOAD_MODELS": "lazy"}
    return InProcess.from_env(env), folder


def test_generation_stops_at_the_end_of_text_token(stops_early):
    compute, folder = stops_early
    body = post(compute, {"text": SENTENCES[0], "model": "stops", "generate": {"max_new_tokens": 5}})
    tokens, _, prompt = reference_generation(folder, SENTENCES[0], 5)
    assert len(tokens) == prompt + 1  # transformers stops there too
    assert body["tokens"] == [tokens] and body["meta"]["generated"] == [1]


def test_a_stream_sends_the_generated_tokens_first(lm_compute, lm_folders):
    stream = lm_compute.stream(
        {
            "text": SENTENCES[0],
            "model": "gpt2",
            "generate": {"max_new_tokens": 3},
            "predict": {},
            "layer": [0, 2],
        }
    )
    first = next(stream)
    assert first[0] == 200 and json.loads(first[1])["generated"]["position"] == 18  # one token, then on
    lines = [json.loads(line) for line in (first[1] + b"".join(f[1] for f in stream)).splitlines()]
    tokens, _, prompt = reference_generation(lm_folders["gpt2"], SENTENCES[0], 3)
    generated = [line["generated"] for line in lines[:3]]
    assert generated == [{"text": 0, "position": prompt + i, "token": tokens[prompt + i]} for i in range(3)]
    assert lines[3]["tokens"] == [tokens] and lines[3]["meta"]["generated"] == [3]
    assert [line["layer"] for line in lines[4:6]] == [0, 2]
    assert set(lines[6]) == {"predictions"}


@pytest.mark.parametrize(
    ("body", "loc", "words"),
    [
        ({"model": "bert"}, ["generate"], "an encoder"),
        ({"model": "gpt2", "generate": {"max_new_tokens": 40}}, ["generate", "max_new_tokens"], "at most 48"),
        (
            {"model": "gpt2", "interventions": [{"ablate": {"layer": 0, "heads": [0]}}]},
            ["interventions"],
            "generate first",
        ),
    ],
)
def test_bad_generation_requests_are_422s(lm_compute, body, loc, words):
    item = error(lm_compute, {"text": SENTENCES[0], "generate": {"max_new_tokens": 2}, **body})
    assert item["loc"] == ["body", *loc] and words in item["msg"]


@pytest.mark.parametrize("new_tokens", [0, 257])
def test_max_new_tokens_is_1_to_256(lm_compute, new_tokens):
    response = lm_compute.post({"text": "Hi", "model": "gpt2", "generate": {"max_new_tokens": new_tokens}})
    assert response.status_code == 422 and "max_new_tokens" in response.text


def test_a_decoder_without_a_head_cannot_generate(tmp_path):
    folder = save_family_model("gpt2", tmp_path / "gpt2")
    compute = InProcess.from_env({"ATTENTION_MODELS": json.dumps({"bare": str(folder)})})
    item = error(compute, {"text": "Hi there", "model": "bare", "generate": {"max_new_tokens": 2}})
    assert item["loc"] == ["body", "generate"] and "no language-model head" in item["msg"]


def test_the_generated_length_counts_toward_the_413_estimate(lm_folders):
    env = {"ATTENTION_MODELS": json.dumps({"gpt2": str(lm_folders["gpt2"])}), "ATTENTION_MAX_SEQ": "20"}
    compute = InProcess.from_env(env)
    assert compute.post({"text": SENTENCES[0], "model": "gpt2"}).status_code == 200  # 18 tokens
    response = compute.post({"text": SENTENCES[0], "model": "gpt2", "generate": {"max_new_tokens": 5}})
    assert response.status_code == 413
    assert response.json()["limit"] == "ATTENTION_MAX_SEQ" and response.json()["estimate"] == 23


def test_a_streamed_generation_checks_its_targets_before_generating(lm_compute):
    """A 422 as the answer, not as the last line of a stream that already sent generated tokens."""
    body = {
        "text": "Hi there",
        "model": "gpt2",
        "generate": {"max_new_tokens": 2},
        "predict": {"targets": ["zz-no"]},
    }
    status, content, last = next(lm_compute.stream(body))
    assert (status, last) == (422, True)
    assert json.loads(content)["detail"][0]["loc"] == ["body", "predict", "targets", 0]
