"""The client's summaries: numpy arrays with their axes (top_keys int64), a grouped-query Llama's equal to
the reductions of transformers' eager weights (tests/compute/test_summaries_math.py's reference)."""

from __future__ import annotations

import numpy as np
import torch

from attention_client import SUMMARY_NAMES
from schemas.axes import TENSOR_AXES
from tests.client.conftest import GROUPED
from tests.client.examples import SENTENCE
from tests.compute.test_summaries_math import reference_summaries


def test_a_grouped_query_decoders_summaries_as_arrays(client, grouped_folder):
    from transformers import AutoModel, AutoTokenizer

    result = client.attend(text=SENTENCE, model=GROUPED, include=list(SUMMARY_NAMES), top_k=2, pool=2)
    model = AutoModel.from_pretrained(grouped_folder, attn_implementation="eager")
    encoded = AutoTokenizer.from_pretrained(grouped_folder)(SENTENCE, return_tensors="pt")
    with torch.no_grad():
        attentions = model(**encoded, output_attentions=True).attentions
    seq = encoded["input_ids"].shape[1]
    real = np.ones((1, seq), dtype=bool)
    for index, layer in result.layers.items():
        assert layer.axes == {name: TENSOR_AXES[name] for name in SUMMARY_NAMES}
        assert layer.top_keys.dtype == np.int64 and layer.top_keys.shape == (1, 4, seq, 2)
        weights = attentions[index].double().numpy()
        expected = reference_summaries(weights, real, real, encoded["input_ids"].numpy(), 2, 2)
        np.testing.assert_array_equal(layer.top_keys, expected["top_keys"])
        for name in SUMMARY_NAMES:
            if name != "top_keys":
                assert layer[name].dtype == np.float64
                np.testing.assert_allclose(layer[name], expected[name], atol=2e-5, err_msg=name)
    assert result.meta["blocked"] is True and result.meta["rank"] == 2
