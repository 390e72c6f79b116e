"""A small request's CPU in a compute process (issue 26): its answer written by one orjson call, its inputs
range-checked in one pass, the device found once per process; with the same answers, checked against a
float64 reference computed here and against the answer written member by member as before."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import numpy as np
import orjson
import pytest
import torch
from torch.overrides import TorchFunctionMode

import service.compute.device as device
import service.compute.encoding as encoding
import service.compute.meta as meta_module
from devtools.compute import InProcess
from schemas.response import Meta
from service.compute.attention import attend_heads
from service.compute.device import check_range
from service.errors import RequestError
from service.server.openapi_examples import load_golden

CAT = load_golden("seed_cat_eats_fish")
GOLDEN = {"embeddings": CAT["embeddings"], "weights": {f"w_{m}": CAT[f"w_{m}_in_out"] for m in "qkv"}}
RNG = np.random.default_rng(26)


def _numbers(*shape: int) -> Any:
    numbers: Any = RNG.standard_normal(shape).round(6).tolist()
    return numbers


# two heads, every bias, W_o, a padded text of the batch, causal: the explicit path's every step
FULL = {
    "embeddings": _numbers(2, 5, 8),
    "weights": {
        **{f"w_{m}": _numbers(8, 8) for m in "qkv"},
        "w_o": _numbers(8, 6),
        **{f"b_{m}": _numbers(8) for m in "qkv"},
        "b_o": _numbers(6),
    },
    "num_heads": 2,
    "attention_mask": [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]],
    "causal": True,
}


def reference(body: dict[str, Any]) -> dict[str, np.ndarray]:
    """Every internal of the request in float64 numpy, from the formulas of attention.py's docstring."""
    x = np.asarray(body["embeddings"], dtype=np.float64)
    x = x[None] if x.ndim == 2 else x  # [batch, pos, d_model]
    weights = {name: np.asarray(value, dtype=np.float64) for name, value in body["weights"].items()}
    heads = body.get("num_heads", 1)
    batch, seq, _ = x.shape

    def projected(m: str) -> np.ndarray:  # [batch, head, pos, d]
        y: np.ndarray = x @ weights[f"w_{m}"] + weights.get(f"b_{m}", 0.0)
        split: np.ndarray = y.reshape(batch, seq, heads, -1).transpose(0, 2, 1, 3)
        return split

    q, k, v = projected("q"), projected("k"), projected("v")
    scores = q @ k.transpose(0, 1, 3, 2)
    allowed = np.ones((batch, 1, seq, seq), dtype=bool)
    if "attention_mask" in body:
        allowed &= np.asarray(body["attention_mask"], dtype=bool)[:, None, None, :]
    if body.get("causal"):
        allowed &= np.tril(np.ones((seq, seq), dtype=bool))
    scaled = np.where(allowed, scores / np.sqrt(q.shape[-1]), -np.inf)
    exp = np.exp(scaled - scaled.max(-1, keepdims=True))
    attention = exp / exp.sum(-1, keepdims=True)
    context = attention @ v
    output = context.transpose(0, 2, 1, 3).reshape(batch, seq, -1)
    if "w_o" in weights:
        output = output @ weights["w_o"] + weights["b_o"]
    return {
        "q": q,
        "k": k,
        "v": v,
        "scores": scores,
        "scaled_scores": scaled,
        "weights": attention,
        "context": context,
        "output": output,
    }


@pytest.mark.parametrize("dtype,tolerance", [("float64", 1e-12), ("float32", 1e-5)])
@pytest.mark.parametrize("body", [GOLDEN, FULL], ids=["golden", "full"])
def test_a_small_answer_is_the_float64_reference(
    compute: InProcess, body: dict[str, Any], dtype: str, tolerance: float
) -> None:
    reply = compute.post({**body, "dtype": dtype})
    assert reply.status_code == 200, reply.text
    answer = reply.json()
    for name, expected in reference(body).items():
        found = np.array(json.loads(json.dumps(answer[name]).replace("null", "-Infinity")), dtype=np.float64)
        assert found.shape == expected.shape, name
        np.testing.assert_allclose(found, expected, rtol=tolerance, atol=tolerance, err_msg=name)
    if body is GOLDEN:  # the worked example's own figures too
        for name, expected in CAT["expected"].items():
            found = np.asarray(answer[name])[0] if name == "output" else np.asarray(answer[name])[0, 0]
            np.testing.assert_allclose(found, expected, atol=1e-6, err_msg=name)


def _member_by_member(monkeypatch: pytest.MonkeyPatch, compute: InProcess, body: dict[str, Any]) -> bytes:
    with monkeypatch.context() as patched:
        patched.setattr(encoding, "_small", lambda sections: False)
        return compute.post(body).content


def _timeless(answer: bytes) -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(answer)
    parsed["meta"].pop("elapsed_ms")
    return parsed


@pytest.mark.parametrize(
    "body",
    [
        GOLDEN,
        FULL,
        {**GOLDEN, "decimals": 3, "dtype": "float16"},
        {**FULL, "include": ["weights", "top_keys", "entropy"]},  # integer tensors among the floats
        {"text": ["the cat ate the fish", "a dog"], "model": "toy"},  # tokens
    ],
    ids=["golden", "full", "decimals-float16", "summaries", "toy-tokens"],
)
def test_a_small_answer_has_the_bytes_it_had_when_written_member_by_member(
    monkeypatch: pytest.MonkeyPatch, compute: InProcess, body: dict[str, Any]
) -> None:
    whole = compute.post(body).content
    before = _member_by_member(monkeypatch, compute, body)
    # the same bytes up to meta's elapsed_ms, which is the last but one number of every answer's meta
    assert whole.split(b'"elapsed_ms":')[0] == before.split(b'"elapsed_ms":')[0]
    assert _timeless(whole) == _timeless(before)


def test_a_small_answer_is_written_by_one_orjson_call(
    monkeypatch: pytest.MonkeyPatch, compute: InProcess
) -> None:
    calls: list[type] = []

    def counted(value: Any, option: int | None = None) -> bytes:
        calls.append(type(value))
        return orjson.dumps(value, option=option)

    monkeypatch.setattr(
        encoding, "orjson", SimpleNamespace(dumps=counted, OPT_SERIALIZE_NUMPY=orjson.OPT_SERIALIZE_NUMPY)
    )
    reply = compute.post(GOLDEN)
    assert reply.status_code == 200, reply.text
    assert calls == [dict]  # the tensors' object at once, not each member's name and value apart (17 calls)


class Counted(np.ndarray):
    """An array that counts the reductions made on it (max, min)."""

    reductions: list[str] = []

    def max(self, *args: Any, **kwargs: Any) -> Any:
        Counted.reductions.append("max")
        return super().max(*args, **kwargs)

    def min(self, *args: Any, **kwargs: Any) -> Any:
        Counted.reductions.append("min")
        return super().min(*args, **kwargs)


class CountingNumpy:
    """numpy as device.py sees it, whose arrays (Counted) count the reductions made on them."""

    def __getattr__(self, name: str) -> Any:
        return getattr(np, name)

    @staticmethod
    def asarray(value: Any) -> np.ndarray:
        return np.asanyarray(value)  # a Counted array stays one

    @staticmethod
    def concatenate(arrays: Any, axis: int | None = 0) -> np.ndarray:
        return np.concatenate(arrays, axis=axis).view(Counted)


def test_small_inputs_are_range_checked_in_one_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(device, "np", CountingNumpy())
    arrays = [np.asarray(_numbers(3, 4)).view(Counted) for _ in range(6)]
    Counted.reductions.clear()
    check_range(torch.float32, [(("weights", str(i)), array) for i, array in enumerate(arrays)])
    assert len(Counted.reductions) == 2  # one max and one min over them all, not two per array (12)


def test_out_of_range_still_names_the_field_and_the_place() -> None:
    values: list[tuple[tuple[str, ...], np.ndarray | float | None]] = [
        (("embeddings",), np.zeros((2, 3))),
        (("weights", "w_k"), np.array([[0.0, -1e39]])),
        (("scale",), 1.0),
    ]
    with pytest.raises(
        RequestError, match=r"found -1e\+39 at \[0, 1\], outside the range of float32"
    ) as raised:
        check_range(torch.float32, values)
    assert raised.value.loc == ("weights", "w_k")


def test_the_device_is_found_once_per_process(monkeypatch: pytest.MonkeyPatch, compute: InProcess) -> None:
    looked: list[bool] = []
    available = torch.cuda.is_available

    def counted() -> bool:
        looked.append(True)
        return available()

    monkeypatch.setattr(torch.cuda, "is_available", counted)
    for _ in range(5):
        assert compute.post(GOLDEN).status_code == 200
    assert len(looked) <= 1  # not once per request


META_REQUESTS = [
    GOLDEN,
    {**GOLDEN, "scale": 1, "decimals": 2, "causal": True},  # an int scale: a float in meta
    {**FULL, "heads": [1], "queries": [0, 2], "include": ["weights", "top_keys", "pooled_weights"]},
    {"embeddings": _numbers(1, 6, 8), "weights": {"seed": 3, "init": "normal"}, "include": ["entropy"]},
    {"query": _numbers(1, 4, 6), "key": _numbers(1, 5, 6), "value": _numbers(1, 5, 6), "num_heads": 3},
    {"text": ["the cat ate the fish", "a dog"], "model": "toy", "include": ["weights"]},
]


@pytest.mark.parametrize("body", META_REQUESTS)
def test_meta_is_what_the_schema_writes(compute: InProcess, body: dict[str, Any]) -> None:
    """meta as written (meta.py meta_json) is what pydantic writes for the Meta it validates from it: the
    schema's members, in its order, of its types."""
    meta = compute.post(body).json()["meta"]
    written = orjson.dumps(meta)
    assert Meta.model_validate_json(written).model_dump_json().encode() == written


@pytest.mark.parametrize("family", ["bert", "gpt2", "llama", "gemma2", "modernbert"])
def test_a_models_meta_is_what_the_schema_writes(families: InProcess, family: str) -> None:
    reply = families.post({"text": ["Hi there", "Hi"], "model": family, "layer": "all"})
    assert reply.status_code == 200, reply.text
    written = orjson.dumps(reply.json()["meta"])
    assert Meta.model_validate_json(written).model_dump_json().encode() == written


def test_meta_is_written_without_validating_the_model(
    monkeypatch: pytest.MonkeyPatch, compute: InProcess
) -> None:
    made: list[dict[str, Any]] = []

    def counted(**fields: Any) -> Meta:
        made.append(fields)
        return Meta(**fields)

    monkeypatch.setattr(meta_module, "Meta", counted)
    assert compute.post(GOLDEN).status_code == 200
    assert made == []  # once per request before (8 of a small request's 200 µs)


class TorchCalls(TorchFunctionMode):
    """The torch functions and tensor methods called while it is on, by name."""

    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        self.names.append(getattr(func, "__name__", str(func)))
        return func(*args, **(kwargs or {}))


def test_one_query_head_per_kv_head_is_attended_without_stacking_views() -> None:
    generator = torch.Generator().manual_seed(26)
    q, k, v = (torch.randn(2, 3, 5, 4, generator=generator) for _ in range(3))
    with TorchCalls() as calls:
        heads = attend_heads(q, k, v, 0.5)
    reshaped = [name for name in calls.names if name in ("view", "reshape")]
    assert reshaped == []  # a reshape and three views to the tensors' own shapes before (4)
    expected = torch.softmax(q @ k.transpose(-2, -1) * 0.5, dim=-1)
    assert torch.equal(heads.weights, expected) and torch.equal(heads.context, expected @ v)
