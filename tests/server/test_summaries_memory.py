"""A 16,384-token text through a random Llama with 32,768 positions, all summaries of its last layer, over
real HTTP: answered, with the server's process tree growing far less than one 16k x 16k float32 matrix
(1 GiB) per head would need. The first layer runs the model's own SDPA (not inspected), the second in
blocks of queries."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from devtools.long_models import save_long_llama, text_of_tokens
from devtools.memory import PeakResident
from devtools.servers import Server
from schemas.axes import SUMMARY_NAMES

TOKENS = 16384
HEADS = 4


@pytest.mark.slow
def test_a_16k_token_text_summarizes_in_memory_that_grows_with_n(tmp_path: Path) -> None:
    folder = save_long_llama(tmp_path / "long-llama", heads=HEADS)
    text = text_of_tokens(folder, TOKENS)
    env = {
        "ATTENTION_MODELS": json.dumps({"long-llama": str(folder)}),
        "ATTENTION_MAX_CONCURRENT": "1",
        "ATTENTION_REQUEST_TIMEOUT_S": "600",
    }
    body = {"text": text, "model": "long-llama", "layer": 1, "include": list(SUMMARY_NAMES)}
    with Server(env) as server:
        warm = {"text": "the cat", "model": "long-llama", "include": ["entropy"]}
        assert server.post(warm, timeout=60).status_code == 200
        with PeakResident(server.process.pid) as memory:
            response = server.post(body, timeout=600)
        assert response.status_code == 200, response.text[:500]
    answer = response.json()
    layer = answer["layers"][0]
    assert answer["meta"]["seq"] == TOKENS and answer["meta"]["blocked"] is True
    assert np.asarray(layer["top_keys"]).shape == (1, HEADS, TOKENS, 5)
    assert np.asarray(layer["pooled_weights"]).shape == (1, HEADS, 128, 128)
    np.testing.assert_allclose(np.asarray(layer["received"]).sum(-1), TOKENS, rtol=1e-4)  # rows sum to 1
    one_matrix_per_head_mb = HEADS * TOKENS * TOKENS * 4 / 2**20  # 4,096 MB
    print(f"\n16k tokens: peak {memory.peak:.0f} MB, {memory.above_rest:.0f} MB above rest "
          f"(one n x n float32 matrix per head: {one_matrix_per_head_mb:.0f} MB)")  # fmt: skip
    assert memory.above_rest < one_matrix_per_head_mb / 8
