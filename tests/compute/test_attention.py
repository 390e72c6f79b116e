"""service/compute/attention.py in process: the attention module against hand-written numpy, and the mask."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from service.compute.attention import Projections, allowed_positions, attention, attention_on
from service.compute.device import Converter

CPU = torch.device("cpu")
RNG = np.random.default_rng(0)


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    result: np.ndarray = e / e.sum(-1, keepdims=True)
    return result


def tensor(*shape: int) -> torch.Tensor:
    return torch.from_numpy(RNG.uniform(-1, 1, shape))


def test_no_mask_and_not_causal_is_no_mask():
    assert allowed_positions(None, False, 3, 4, CPU) is None


def test_causal_is_top_left_aligned():
    allowed = allowed_positions(None, True, 2, 3, CPU)
    assert allowed is not None and allowed.shape == (1, 1, 2, 3) and allowed.dtype == torch.bool
    assert allowed[0, 0].tolist() == [[True, False, False], [True, True, False]]


def test_padding_mask_applies_to_every_query_of_its_batch_item():
    mask = torch.tensor([[True, False, True], [False, True, True]])
    allowed = allowed_positions(mask, False, 2, 3, CPU)
    assert allowed is not None and allowed.shape == (2, 1, 1, 3)
    assert allowed[:, 0, 0].tolist() == mask.tolist()


def test_padding_mask_and_causality_combine():
    mask = torch.tensor([[True, False, True]])
    allowed = allowed_positions(mask, True, 3, 3, CPU)
    assert allowed is not None and allowed.shape == (1, 1, 3, 3)
    assert allowed[0, 0].tolist() == [[True, False, False], [True, False, False], [True, False, True]]


def test_direct_qkv_single_head_is_softmax_of_scaled_scores_times_v():
    q, k, v = tensor(1, 2, 3), tensor(1, 4, 3), tensor(1, 4, 5)
    got = attention(q, k, v, Projections(), num_heads=1, scale=0.5)
    scores = q[0].numpy() @ k[0].numpy().T
    weights = softmax(scores * 0.5)
    np.testing.assert_allclose(got.scores[0, 0].numpy(), scores, atol=1e-12)
    np.testing.assert_allclose(got.scaled_scores[0, 0].numpy(), scores * 0.5, atol=1e-12)
    np.testing.assert_allclose(got.weights[0, 0].numpy(), weights, atol=1e-12)
    np.testing.assert_allclose(got.context[0, 0].numpy(), weights @ v[0].numpy(), atol=1e-12)
    np.testing.assert_allclose(got.output[0].numpy(), weights @ v[0].numpy(), atol=1e-12)  # no W_o
    assert got.q.shape == (1, 1, 2, 3) and got.v.shape == (1, 1, 4, 5)


def test_heads_take_consecutive_columns_and_the_output_concatenates_them():
    q, k, v = tensor(2, 3, 4), tensor(2, 3, 4), tensor(2, 3, 6)  # 2 heads: d_k 2, d_v 3
    got = attention(q, k, v, Projections(), num_heads=2, scale=1.0)
    assert got.q.shape == (2, 2, 3, 2) and got.v.shape == (2, 2, 3, 3) and got.output.shape == (2, 3, 6)
    for head in range(2):
        qh, kh = q[:, :, 2 * head : 2 * head + 2].numpy(), k[:, :, 2 * head : 2 * head + 2].numpy()
        vh = v[:, :, 3 * head : 3 * head + 3].numpy()
        np.testing.assert_array_equal(got.q[:, head].numpy(), qh)
        weights = softmax(qh @ kh.transpose(0, 2, 1))
        np.testing.assert_allclose(got.weights[:, head].numpy(), weights, atol=1e-12)
        np.testing.assert_allclose(got.output[..., 3 * head : 3 * head + 3].numpy(), weights @ vh, atol=1e-12)


def test_projections_and_biases_in_the_math_layout():
    x, c = tensor(1, 2, 4), tensor(1, 3, 4)
    p = Projections(
        w_q=tensor(4, 2), w_k=tensor(4, 2), w_v=tensor(4, 2), w_o=tensor(2, 5), b_q=tensor(2), b_o=tensor(5)
    )
    assert p.w_q is not None and p.w_k is not None and p.w_v is not None and p.w_o is not None
    assert p.b_q is not None and p.b_o is not None
    got = attention(x, c, c, p, num_heads=1, scale=0.7)
    q = x[0].numpy() @ p.w_q.numpy() + p.b_q.numpy()
    k, v = c[0].numpy() @ p.w_k.numpy(), c[0].numpy() @ p.w_v.numpy()  # no bias given: none added
    np.testing.assert_allclose(got.q[0, 0].numpy(), q, atol=1e-12)
    np.testing.assert_allclose(got.k[0, 0].numpy(), k, atol=1e-12)
    context = softmax(q @ k.T * 0.7) @ v
    np.testing.assert_allclose(got.context[0, 0].numpy(), context, atol=1e-12)
    np.testing.assert_allclose(got.output[0].numpy(), context @ p.w_o.numpy() + p.b_o.numpy(), atol=1e-12)


def test_masked_scores_are_minus_infinity_and_a_row_with_no_key_is_all_zero():
    q, k, v = tensor(1, 2, 2), tensor(1, 2, 2), tensor(1, 2, 2)
    allowed = torch.tensor([[[[False, False], [True, False]]]])
    got = attention(q, k, v, Projections(), num_heads=1, scale=1.0, allowed=allowed)
    assert torch.isinf(got.scaled_scores[0, 0, 0]).all() and (got.scaled_scores[0, 0, 0] < 0).all()
    assert got.weights[0, 0].tolist() == [[0.0, 0.0], [1.0, 0.0]]
    assert got.context[0, 0, 0].tolist() == [0.0, 0.0]
    np.testing.assert_array_equal(got.context[0, 0, 1].numpy(), v[0, 0].numpy())
    assert not torch.isnan(got.output).any()
    np.testing.assert_array_equal(got.scores.numpy(), (q @ k.transpose(-2, -1)).numpy()[:, None])  # unmasked


def test_projections_to_converts_the_matrices_it_has():
    p = Projections(w_q=tensor(2, 2), b_q=tensor(2))
    moved = p.to(Converter(CPU, torch.float32))
    assert moved.w_q is not None and moved.w_q.dtype == torch.float32
    assert moved.b_q is not None and moved.b_q.dtype == torch.float32
    assert moved.w_k is None and moved.w_o is None


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_attention_on_moves_numpy_inputs_and_builds_the_mask(dtype):
    x = RNG.uniform(-1, 1, (2, 3, 4))
    key_mask = np.array([[True, True, False], [True, True, True]])
    got = attention_on(Converter(CPU, dtype), x, x, x, Projections(), 2, 0.5, True, key_mask)
    assert got.weights.dtype == dtype and got.output.dtype == dtype
    expected = allowed_positions(torch.from_numpy(key_mask), True, 3, 3, CPU)
    assert expected is not None
    blocked = ~expected.expand(2, 2, 3, 3)
    assert (got.weights[blocked] == 0).all()
    np.testing.assert_allclose(got.weights.sum(-1).numpy(), 1.0, rtol=1e-6)
    assert not torch.is_inference_mode_enabled()  # the inference mode ends with the call
