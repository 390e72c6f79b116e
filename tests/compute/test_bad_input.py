"""Every bad input is a 422 (or 413 over a limit) whose message names the field, what was found and what was
expected; never a 500. In process: the compute pipeline decides all of these (tests/server/test_http.py has
the request byte limit, which the server decides)."""

from __future__ import annotations

import math

import pytest
import torch

X = [[0.8, 0.2, 0.4, 0.1], [0.1, 0.9, 0.3, 0.7], [0.3, 0.1, 0.9, 0.2]]
W = [[0.5, 0.2], [0.1, 0.3], [0.4, 0.6], [0.2, 0.1]]  # [d_model 4, d_k 2]
QKV = {"query": [[1.0, 0.0]], "key": [[1.0, 2.0], [0.0, 1.0]], "value": [[18.0], [20.0]]}

# (case id, request body, the loc expected, substrings the message must hold)
CASES = [
    ("ragged", {"embeddings": [[1, 2], [3]]}, ["embeddings"], ["ragged", "[1] has 1 item", "[0] has 2 item"]),
    (
        "ragged 3d",
        {"embeddings": [[[1, 2]], [[1, 2], [3, 4]]]},
        ["embeddings"],
        ["ragged", "[1] has 2", "[0] has 1"],
    ),
    ("empty list", {"embeddings": []}, ["embeddings"], ["empty list", "[seq, d_model]"]),
    ("empty row", {"embeddings": [[]]}, ["embeddings"], ["[1, 0]", "empty axis", "at least 1"]),
    ("too flat", {"embeddings": [1, 2, 3]}, ["embeddings"], ["nested 1 deep", "[batch, seq, d_model]"]),
    ("too deep", {"embeddings": [[[[1.0]]]]}, ["embeddings"], ["nested 4 deep", "2 or 3 deep"]),
    ("not a list", {"embeddings": "cat"}, ["embeddings"], ["found 'cat'", "[seq, d_model]"]),
    ("bool element", {"embeddings": [[1, True]]}, ["embeddings"], ["[0][1]", "found true", "finite number"]),
    ("string element", {"embeddings": [[1, "2"]]}, ["embeddings"], ["[0][1]", "found '2'"]),
    ("string NaN", {"embeddings": [[1, "NaN"]]}, ["embeddings"], ["[0][1]", "'NaN'", "finite number"]),
    ("null element", {"embeddings": [[1, None]]}, ["embeddings"], ["[0][1]", "found null"]),
    ("huge integer", {"embeddings": [[1, 10**400]]}, ["embeddings"], ["[0][1]", "integer of 401 digits"]),
    ("object element", {"embeddings": [[1, {"a": 1}]]}, ["embeddings"], ["[0][1]", "found an object"]),
    (
        "NaN in weights",
        {"embeddings": X, "weights": {"w_q": W, "w_k": W, "w_v": [[1, 2], [3, 4], [5, math.nan], [7, 8]]}},
        ["weights", "w_v"],
        ["[2][1]", "found nan", "finite number"],
    ),
    (
        "unknown field",
        {"embeddings": X, "temperature": 2},
        ["temperature"],
        ["found an unknown field `temperature`; expected one of: embeddings,"],
    ),
    (
        "unknown weight field",
        {"embeddings": X, "weights": {"w_vv": W}},
        ["weights", "w_vv"],
        ["did you mean `w_v`?"],
    ),
    (
        "zero heads",
        {"embeddings": X, "num_heads": 0},
        ["num_heads"],
        ["greater than or equal to 1", "found 0"],
    ),
    ("negative d_k", {"embeddings": X, "d_k": -2}, ["d_k"], ["greater than or equal to 1", "found -2"]),
    ("heads as string", {"embeddings": X, "num_heads": "2"}, ["num_heads"], ["valid integer", "found '2'"]),
    (
        "heads do not divide",
        {"embeddings": X, "num_heads": 3},
        ["num_heads"],
        ["num_heads 3 does not divide d_model 4"],
    ),
    (
        "w_q rows",
        {"embeddings": X, "weights": {"w_q": [[1, 2]] * 3, "w_k": W, "w_v": W}},
        ["weights", "w_q"],
        ["found shape [3, 2]", "expected [4, heads*d_k]", 'layout "out_in"'],
    ),
    (
        "w_k cols",
        {"embeddings": X, "weights": {"w_q": W, "w_k": [[1, 2, 3]] * 4, "w_v": W}},
        ["weights", "w_k"],
        ["found shape [4, 3]", "expected [4, 2]"],
    ),
    (
        "w_o rows out_in",
        {
            "embeddings": X,
            "weights": {
                "w_q": list(map(list, zip(*W, strict=True))),
                "w_k": list(map(list, zip(*W, strict=True))),
                "w_v": list(map(list, zip(*W, strict=True))),
                "w_o": [[1.0] * 3],
                "layout": "out_in",
            },
        },
        ["weights", "w_o"],
        ["found shape [1, 3]", "expected [d_out, 2]"],
    ),
    (
        "bias size",
        {"embeddings": X, "weights": {"w_q": W, "w_k": W, "w_v": W, "b_k": [1.0, 2.0, 3.0]}},
        ["weights", "b_k"],
        ["found shape [3]", "expected [2]"],
    ),
    (
        "heads do not divide w_q",
        {
            "embeddings": X,
            "num_heads": 2,
            "weights": {"w_q": [[1, 2, 3]] * 4, "w_k": [[1, 2, 3]] * 4, "w_v": W},
        },
        ["num_heads"],
        ["num_heads 2 does not divide heads*d_k of w_q 3"],
    ),
    (
        "d_k contradicts weights",
        {"embeddings": X, "d_k": 3, "weights": {"w_q": W, "w_k": W, "w_v": W}},
        ["d_k"],
        ["found d_k 3", "d_k 2"],
    ),
    ("partial weights", {"embeddings": X, "weights": {"w_q": W}}, ["weights"], ["w_q without w_k, w_v"]),
    ("w_o alone", {"embeddings": X, "weights": {"w_o": W}}, ["weights"], ["w_o without w_q, w_k, w_v"]),
    (
        "b_o without w_o",
        {"embeddings": X, "weights": {"w_q": W, "w_k": W, "w_v": W, "b_o": [1.0]}},
        ["weights"],
        ["b_o without w_o"],
    ),
    (
        "unknown init",
        {"embeddings": X, "weights": {"init": "kaiming"}},
        ["weights", "init"],
        ["'xavier_uniform', 'normal' or 'identity'", "found 'kaiming'"],
    ),
    (
        "unknown layout",
        {"embeddings": X, "weights": {"w_q": W, "w_k": W, "w_v": W, "layout": "row"}},
        ["weights", "layout"],
        ["'in_out' or 'out_in'", "found 'row'"],
    ),
    (
        "negative seed",
        {"embeddings": X, "weights": {"seed": -1}},
        ["weights", "seed"],
        ["greater than or equal to 0"],
    ),
    (
        "huge seed",
        {"embeddings": X, "weights": {"seed": 2**64}},
        ["weights", "seed"],
        ["less than or equal to 9223372036854775807", "found 18446744073709551616"],
    ),
    (
        "astronomic d_v",
        {"embeddings": X, "d_v": 10**400},
        ["d_v"],
        ["less than or equal to 2147483647", "integer of 401 digits"],
    ),
    # 2.0 is an integer to JSON Schema, and so to the service; 2.5 is not
    ("heads as float", {"embeddings": X, "num_heads": 2.5}, ["num_heads"], ["valid integer", "found 2.5"]),
    ("unknown dtype", {"embeddings": X, "dtype": "float8"}, ["dtype"], ["'float32'", "found 'float8'"]),
    (
        "unknown device",
        {"embeddings": X, "device": "tpu"},
        ["device"],
        ["'auto', 'cpu' or 'cuda'", "found 'tpu'"],
    ),
    (
        "unknown include",
        {"embeddings": X, "include": ["attention"]},
        ["include", 0],
        ["'weights'", "found 'attention'"],
    ),
    ("decimals too large", {"embeddings": X, "decimals": 40}, ["decimals"], ["less than or equal to 15"]),
    ("scale infinite", {"embeddings": X, "scale": math.inf}, ["scale"], ["finite number"]),
    ("no input", {"num_heads": 1}, [], ["found no input", "expected `text`, `embeddings`"]),
    ("two input forms", {"embeddings": X, **QKV}, [], ["embeddings together with query, key, value"]),
    ("query without value", {"query": QKV["query"], "key": QKV["key"]}, [], ["query, key without value"]),
    ("context alone", {"context": X, **QKV}, [], ["context without embeddings"]),
    ("weights with qkv", {**QKV, "weights": {"seed": 1}}, [], ["weights with query/key/value"]),
    ("key/value seq_kv", {**QKV, "value": [[18.0]]}, ["value"], ["found seq_kv 1", "expected seq_kv 2"]),
    ("query/key width", {**QKV, "key": [[1.0, 2.0, 3.0]] * 2}, ["key"], ["found last axis 3", "expected 2"]),
    (
        "key batch",
        {**QKV, "key": [[[1.0, 2.0]], [[1.0, 2.0]]]},
        ["key"],
        ["found batch 2", "expected batch 1"],
    ),
    (
        "qkv heads",
        {**QKV, "num_heads": 2, "value": [[1.0], [2.0]]},
        ["num_heads"],
        ["does not divide the last axis of value 1"],
    ),
    (
        "context batch",
        {"embeddings": X, "context": [X, X]},
        ["context"],
        ["found batch 2", "expected batch 1"],
    ),
    (
        "context d_model",
        {"embeddings": X, "context": [[1.0, 2.0]]},
        ["context"],
        ["found d_model 2", "expected d_model 4"],
    ),
    (
        "mask shape",
        {"embeddings": X, "attention_mask": [[1, 1]]},
        ["attention_mask"],
        ["found shape [1, 2]", "expected [batch, seq_kv] = [1, 3]"],
    ),
    (
        "mask 1d",
        {"embeddings": X, "attention_mask": [1, 1, 0]},
        ["attention_mask"],
        ["[batch, seq_kv]", "nested 1 deep"],
    ),
    (
        "mask value",
        {"embeddings": X, "attention_mask": [[1, 2, 0]]},
        ["attention_mask"],
        ["found the value 2", "only 0 (masked) and 1"],
    ),
    (
        "mask bool",
        {"embeddings": X, "attention_mask": [[True, False, True]]},
        ["attention_mask"],
        ["found true"],
    ),
]


@pytest.mark.parametrize("body,loc,fragments", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_a_clear_422(compute, body, loc, fragments):
    response = compute.post(body)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert detail[0]["loc"] == ["body", *loc]
    message = detail[0]["msg"]
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    assert "input" not in detail[0]  # tensors are never echoed back


@pytest.mark.parametrize(
    "raw,fragment",
    [
        (b"{not json", "Invalid JSON"),
        (b"", "Invalid JSON"),
        (b"[1, 2, 3]", "Input should be an object"),
        (b'{"embeddings": [[1, NaN]]}', "found nan"),
        (b'{"embeddings": [[1, Infinity]]}', "found inf"),
        (b'{"embeddings": [[1, 1e400]]}', "found inf"),
        (b"\xff\xfe", "Invalid JSON"),
    ],
)
def test_malformed_json_is_a_422(compute, raw, fragment):
    response = compute.post(raw)
    assert response.status_code == 422, response.text
    assert fragment in response.json()["detail"][0]["msg"]


def test_cuda_without_a_gpu_is_a_422(compute):
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device (tests/compute/test_gpu.py covers it)")
    response = compute.post({"embeddings": X, "device": "cuda"})
    assert response.status_code == 422
    assert response.json()["detail"][0] == {
        "loc": ["body", "device"],
        "type": "value_error",
        "msg": "found 'cuda', but this server has no CUDA device; expected 'auto' or 'cpu'",
    }


# each limit reached with a small body; limited_compute's settings are LIMITED_ENV (tests/compute/conftest.py)
LIMIT_CASES = [
    ("batch", {"embeddings": [[[1.0]]] * 5}, "ATTENTION_MAX_BATCH", 4, 5),
    ("seq", {"embeddings": [[1.0]] * 65}, "ATTENTION_MAX_SEQ", 64, 65),
    ("seq_kv", {"embeddings": [[1.0]], "context": [[1.0]] * 70}, "ATTENTION_MAX_SEQ", 64, 70),
    ("heads", {"embeddings": [[1.0] * 9], "num_heads": 9}, "ATTENTION_MAX_HEADS", 8, 9),
    ("giant d_k", {"embeddings": [[1.0]], "d_k": 10**9, "d_v": 1}, "ATTENTION_MAX_DIM", 256, 10**9),
    (
        "response",
        {"embeddings": [[1.0] * 64] * 40},
        "ATTENTION_MAX_RESPONSE_ELEMENTS",
        5000,
        40 * 64 * 5 + 40 * 40 * 3,
    ),
    (
        "compute, output only",
        {
            "embeddings": [[1.0] * 4] * 60,
            "num_heads": 4,
            "context": [[1.0] * 4] * 60,
            "include": ["output"],
            "attention_mask": [[1] * 60],
        },
        "ATTENTION_MAX_COMPUTE_ELEMENTS",
        40000,
        None,
    ),
]


@pytest.mark.parametrize(
    "body,limit,maximum,estimate", [c[1:] for c in LIMIT_CASES], ids=[c[0] for c in LIMIT_CASES]
)
def test_over_a_limit_is_a_413_with_limit_and_estimate(limited_compute, body, limit, maximum, estimate):
    response = limited_compute.post(body)
    assert response.status_code == 413, response.text
    error = response.json()
    assert error["limit"] == limit and error["maximum"] == maximum
    assert error["estimate"] > maximum
    if estimate is not None:
        assert error["estimate"] == estimate
    assert limit in error["detail"] and f"{maximum:,}" in error["detail"]


def test_within_limits_still_computes(limited_compute):
    response = limited_compute.post({"embeddings": [[1.0] * 8] * 8, "num_heads": 2})
    assert response.status_code == 200
