"""Property tests: the service against torch's own modules and float64 references, over random shapes,
heads, masks, causality and cross-attention (float64 to 1e-10, float32 to 1e-5)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

TOLERANCE = {"float64": 1e-10, "float32": 1e-5}
PROPERTY = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@st.composite
def attention_cases(draw):
    batch = draw(st.integers(1, 3))
    seq = draw(st.integers(1, 6))
    cross = draw(st.booleans())
    seq_kv = draw(st.integers(1, 6)) if cross else seq
    heads = draw(st.integers(1, 3))
    d_k = draw(st.integers(1, 4))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    mask = rng.random((batch, seq_kv)) < 0.75 if draw(st.booleans()) else None
    return {
        "batch": batch,
        "seq": seq,
        "seq_kv": seq_kv,
        "heads": heads,
        "d_k": d_k,
        "cross": cross,
        "x": rng.uniform(-1, 1, (batch, seq, heads * d_k)),
        "context": rng.uniform(-1, 1, (batch, seq_kv, heads * d_k)) if cross else None,
        "mask": mask,
        "causal": draw(st.booleans()),
        "scale": draw(st.one_of(st.none(), st.floats(0.05, 2.0))),
        "dtype": draw(st.sampled_from(["float64", "float32"])),
        "layout": draw(st.sampled_from(["in_out", "out_in"])),
        "seed": draw(st.integers(0, 2**31 - 1)),
        "squeeze": batch == 1 and draw(st.booleans()),  # send [seq, d_model] instead of [1, seq, d_model]
    }


def allowed_matrix(case) -> torch.Tensor:
    """[batch, 1, seq, seq_kv] bool, True = attend: an independent restatement of the mask semantics."""
    allowed = torch.ones(case["batch"], 1, case["seq"], case["seq_kv"], dtype=torch.bool)
    if case["mask"] is not None:
        allowed &= torch.from_numpy(case["mask"])[:, None, None, :]
    if case["causal"]:
        allowed &= torch.ones(case["seq"], case["seq_kv"], dtype=torch.bool).tril()
    return allowed


def request_for(case, weights: dict[str, Any]) -> dict[str, Any]:
    def wire(array):
        array = array[0] if case["squeeze"] else array
        return array.tolist()

    body = {
        "embeddings": wire(case["x"]),
        "weights": weights,
        "num_heads": case["heads"],
        "causal": case["causal"],
        "dtype": case["dtype"],
    }
    if case["cross"]:
        body["context"] = wire(case["context"])
    if case["mask"] is not None:
        body["attention_mask"] = case["mask"].astype(int).tolist()
    if case["scale"] is not None:
        body["scale"] = case["scale"]
    return body


def check_masked_rows(body, allowed: torch.Tensor, atol: float) -> np.ndarray:
    """Rows of weights sum to 1, or are all 0 where every key is masked (context 0 there too, never NaN);
    masked scaled scores are null. Returns the [batch, 1, seq] mask of rows with some key left."""
    weights = np.asarray(body["weights"], dtype=np.float64)
    live = allowed.any(-1).numpy()  # [batch, 1, seq]
    live_rows = np.broadcast_to(live, weights.shape[:3])
    np.testing.assert_allclose(weights.sum(-1)[live_rows], 1.0, atol=atol)
    assert np.all(weights[~live_rows] == 0.0)
    context = np.asarray(body["context"], dtype=np.float64)
    assert np.all(context[~live_rows] == 0.0)
    blocked = np.broadcast_to(~allowed.numpy(), weights.shape)
    scaled = body["scaled_scores"]
    for index in zip(*np.nonzero(blocked), strict=True):
        assert scaled[index[0]][index[1]][index[2]][index[3]] is None
    assert np.all(weights[blocked] == 0.0)
    return live


@PROPERTY
@given(case=attention_cases())
def test_equals_torch_multihead_attention_and_sdpa(compute, case):
    embed = case["heads"] * case["d_k"]
    torch.manual_seed(case["seed"])
    mha = torch.nn.MultiheadAttention(embed, case["heads"], bias=True, batch_first=True, dtype=torch.float64)
    with torch.no_grad():
        for parameter in (mha.in_proj_bias, mha.out_proj.bias):
            parameter.uniform_(-0.5, 0.5)
    w = mha.in_proj_weight.detach().numpy().copy()  # [3*embed, embed], torch layout
    b = mha.in_proj_bias.detach().numpy().copy()
    parts = {"q": slice(0, embed), "k": slice(embed, 2 * embed), "v": slice(2 * embed, 3 * embed)}
    as_wire = (lambda m: m.tolist()) if case["layout"] == "out_in" else (lambda m: m.T.tolist())
    weights = {f"w_{n}": as_wire(w[s]) for n, s in parts.items()} | {
        f"b_{n}": b[s].tolist() for n, s in parts.items()
    }
    weights |= {
        "w_o": as_wire(mha.out_proj.weight.detach().numpy()),
        "b_o": mha.out_proj.bias.detach().tolist(),
        "layout": case["layout"],
    }
    response = compute.post(request_for(case, weights))
    assert response.status_code == 200, response.text
    body = response.json()
    atol = TOLERANCE[case["dtype"]]

    x = torch.from_numpy(case["x"])
    source = torch.from_numpy(case["context"]) if case["cross"] else x
    allowed = allowed_matrix(case)
    scale = case["scale"] if case["scale"] is not None else 1 / np.sqrt(case["d_k"])
    # torch.nn.MultiheadAttention scales q by 1/sqrt(d_k) itself: fold any other scale into its input
    q_in = x * (scale * np.sqrt(case["d_k"]))
    if case["scale"] is not None:
        with torch.no_grad():
            mha.in_proj_bias[parts["q"]] *= scale * np.sqrt(case["d_k"])
    with torch.no_grad():
        ref_output, ref_weights = mha(
            q_in,
            source,
            source,
            attn_mask=~allowed[:, 0].repeat_interleave(case["heads"], 0),
            need_weights=True,
            average_attn_weights=False,
        )
    live = check_masked_rows(body, allowed, atol)
    live_rows = np.broadcast_to(live, ref_weights.shape[:3])
    np.testing.assert_allclose(
        np.asarray(body["weights"])[live_rows], ref_weights.numpy()[live_rows], atol=atol
    )
    np.testing.assert_allclose(
        np.asarray(body["output"])[live[:, 0]], ref_output.numpy()[live[:, 0]], atol=atol
    )

    # per-head context against scaled_dot_product_attention, from float64 projections computed here
    def heads(t):  # [batch, pos, heads*d] -> [batch, head, pos, d]
        return t.view(t.shape[0], t.shape[1], case["heads"], -1).transpose(1, 2)

    wt, bt = torch.from_numpy(w), torch.from_numpy(b)
    q, k, v = (
        heads(F.linear(inp, wt[s], bt[s]))
        for inp, s in ((x, parts["q"]), (source, parts["k"]), (source, parts["v"]))
    )
    for name, ref in (("q", q), ("k", k), ("v", v)):
        np.testing.assert_allclose(np.asarray(body[name]), ref.numpy(), atol=atol, err_msg=name)
    ref_context = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, scale=scale)
    live_context = np.broadcast_to(live, ref_context.shape[:3])
    np.testing.assert_allclose(
        np.asarray(body["context"])[live_context], ref_context.numpy()[live_context], atol=atol
    )
    scores = (q @ k.transpose(-2, -1)).numpy()
    np.testing.assert_allclose(np.asarray(body["scores"]), scores, atol=atol * 10)


@PROPERTY
@given(
    case=attention_cases(),
    d_v=st.integers(1, 5),
    init=st.sampled_from(["xavier_uniform", "normal", "identity"]),
)
def test_generated_weights_per_head_context_equals_sdpa(compute, case, d_v, init):
    """Generated weights with d_v != d_k and no W_o: context equals SDPA over the returned Q, K, V, and the
    output is the heads concatenated."""
    request = request_for(case, {"init": init, "seed": case["seed"], "output_projection": False})
    request |= {"d_k": case["d_k"], "d_v": d_v}
    response = compute.post(request)
    assert response.status_code == 200, response.text
    body = response.json()
    atol = TOLERANCE[case["dtype"]]
    q, k, v = (torch.tensor(body[n], dtype=torch.float64) for n in "qkv")
    assert q.shape == (case["batch"], case["heads"], case["seq"], case["d_k"])
    assert v.shape == (case["batch"], case["heads"], case["seq_kv"], d_v)
    allowed = allowed_matrix(case)
    live = check_masked_rows(body, allowed, atol)
    scale = body["meta"]["scale"]
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, scale=scale).numpy()
    live_rows = np.broadcast_to(live, ref.shape[:3])
    context = np.asarray(body["context"])
    np.testing.assert_allclose(context[live_rows], ref[live_rows], atol=atol)
    concat = context.transpose(0, 2, 1, 3).reshape(case["batch"], case["seq"], -1)
    np.testing.assert_allclose(np.asarray(body["output"]), concat, atol=atol)
    if init == "identity":  # W_q = I[d_model, heads*d_k]: Q is X's first heads*d_k columns
        x = case["x"][..., : case["heads"] * case["d_k"]]
        expected_q = np.zeros((case["batch"], case["seq"], case["heads"] * case["d_k"]))
        expected_q[..., : x.shape[-1]] = x
        np.testing.assert_allclose(q.transpose(1, 2).reshape(expected_q.shape).numpy(), expected_q, atol=atol)
