"""A model's top-level sections (predictions, predictions_clean, output_similarity) in every format: the
safetensors file names them `{section}.{name}` with the values JSON carries bit for bit and the top tokens in
its __metadata__; an NDJSON stream sends them in one line after the layers."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from service.protocol import ResponseFormat
from tests.support.families import SENTENCES
from tests.support.formats import read_safetensors, without_timing
from tests.support.lm_families import post

BODY: dict[str, Any] = {
    "text": SENTENCES[:2],
    "model": "llama",
    "layer": [0, 2],
    "include": ["weights"],
    "predict": {"top_k": 3, "targets": ["Ġit", "Ġw"], "positions": [1, 2]},
    "interventions": [{"ablate": {"layer": 1, "heads": [2]}}],
}
SECTION_TENSORS = ("top_probs", "target_logprobs", "kl")


def test_safetensors_carries_the_sections_as_json_does(lm_compute):
    expected = post(lm_compute, BODY)
    reply = lm_compute.post(BODY, ResponseFormat.SAFETENSORS)
    assert reply.status_code == 200, reply.text
    tensors, metadata = read_safetensors(reply.content)
    for section in ("predictions", "predictions_clean"):
        for name in SECTION_TENSORS:
            if name in expected[section]:
                found = tensors[f"{section}.{name}"]
                assert found.dtype == np.float32
                np.testing.assert_array_equal(found, np.asarray(expected[section][name], dtype=np.float32))
        assert json.loads(metadata[f"{section}.top_tokens"]) == expected[section]["top_tokens"]
    assert "predictions_clean.kl" not in tensors
    np.testing.assert_array_equal(
        tensors["output_similarity"], np.asarray(expected["output_similarity"], dtype=np.float32)
    )
    meta = json.loads(metadata["meta"])
    assert meta["axes"]["predictions.kl"] == ["batch", "position"]
    assert (
        meta["shapes"]["predictions.target_logprobs"]
        == [2, 2, 2]
        == list(tensors["predictions.target_logprobs"].shape)
    )


def test_a_stream_sends_the_sections_after_the_layers(lm_compute):
    expected = post(lm_compute, BODY)
    frames = list(lm_compute.stream(BODY))
    assert all(status == 200 for status, _, _ in frames)
    lines = [json.loads(line) for line in b"".join(content for _, content, _ in frames).splitlines()]
    first, *layers, sections = lines
    assert set(first) == {"meta", "tokens"} and [line["layer"] for line in layers] == [0, 2]
    assert set(sections) == {"predictions", "predictions_clean", "output_similarity"}
    assert {k: v for k, v in sections.items()} == {k: expected[k] for k in sections}
    assert without_timing(first["meta"])["axes"] == expected["meta"]["axes"]
