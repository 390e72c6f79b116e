"""On a CUDA machine: device auto picks the GPU, and its results equal the CPU's (seeded weights included)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from schemas.axes import TENSOR_NAMES

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here"),
]

REQUEST = {
    "embeddings": np.random.default_rng(0).uniform(-1, 1, (2, 12, 16)).tolist(),
    "num_heads": 4,
    "causal": True,
    "attention_mask": [[1] * 12, [1] * 9 + [0] * 3],
    "weights": {"seed": 5},
}


@pytest.mark.parametrize("dtype,atol", [("float64", 1e-10), ("float32", 1e-5)])
def test_cuda_equals_cpu(compute, dtype, atol):
    gpu = compute.post({**REQUEST, "dtype": dtype, "device": "auto"}).json()
    cpu = compute.post({**REQUEST, "dtype": dtype, "device": "cpu"}).json()
    assert gpu["meta"]["device"].startswith("cuda") and cpu["meta"]["device"] == "cpu"
    for name in TENSOR_NAMES:
        np.testing.assert_allclose(
            np.asarray(gpu[name], dtype=float), np.asarray(cpu[name], dtype=float), atol=atol, err_msg=name
        )


def test_cuda_half_precision_runs(compute):
    for dtype in ("float16", "bfloat16"):
        response = compute.post({**REQUEST, "dtype": dtype, "device": "cuda"})
        assert response.status_code == 200 and response.json()["meta"]["dtype"] == dtype
