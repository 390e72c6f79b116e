"""Hostile and random bodies: whatever arrives, the answer is a 200, 413 or 422, never a 5xx."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.request import AttendRequest, WeightSpec

SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**30), 10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.sampled_from(["NaN", "Infinity", "float16", "cuda", "identity", "out_in", "weights"]),
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=30,
)
MATRIX_VALUES = st.integers(1, 4).flatmap(
    lambda cols: st.lists(st.lists(st.floats(-3, 3), min_size=cols, max_size=cols), min_size=1, max_size=4)
)
FIELD_VALUES = st.one_of(
    JSON_VALUES, MATRIX_VALUES, st.integers(-2, 6), st.lists(MATRIX_VALUES, min_size=1, max_size=2)
)
WEIGHTS = st.dictionaries(st.sampled_from(sorted(WeightSpec.model_fields)), FIELD_VALUES, max_size=5)
BODIES = st.dictionaries(
    st.sampled_from(sorted(AttendRequest.model_fields) + ["junk"]),
    st.one_of(FIELD_VALUES, WEIGHTS),
    max_size=6,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.one_of(BODIES, JSON_VALUES))
def test_never_a_server_error(compute, body):
    response = compute.post(json.dumps(body).encode())
    assert response.status_code in (200, 413, 422), (response.status_code, response.text[:500])
    if response.status_code != 200:
        assert response.json()["detail"]


SIZE_FIELDS = ("num_heads", "d_k", "d_v", "d_model", "decimals", "layer")
HUGE = st.one_of(
    st.integers(-(2**70), 2**70),
    st.sampled_from([0, -1, 2**31, 2**63, 10**100]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["NaN", "-Infinity", "1e999"]),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    sizes=st.dictionaries(st.sampled_from(SIZE_FIELDS), HUGE, min_size=1, max_size=3),
    form=st.sampled_from(
        [
            {"embeddings": [[1.0, 2.0], [3.0, 4.0]]},
            {"text": "a b", "model": "toy"},
            {"text": "a b"},
            {"query": [[1.0]], "key": [[1.0]], "value": [[1.0]]},
        ]
    ),
    seed=st.one_of(st.none(), HUGE),
)
def test_giant_dimensions_in_tiny_bodies(compute, sizes, form, seed):
    body = {**form, **sizes}
    if seed is not None and "embeddings" in form:
        body["weights"] = {"seed": seed}
    response = compute.post(json.dumps(body).encode())
    assert response.status_code in (200, 413, 422), (body, response.status_code, response.text[:300])


@pytest.mark.parametrize(
    "raw",
    [
        b"[" * 100_000 + b"]" * 100_000,  # deeper than any parser's recursion
        b'{"embeddings": ' + b"[" * 5000 + b"1.0" + b"]" * 5000 + b"}",
        b'{"embeddings": [[1e999, 2.0]]}',
        b'{"embeddings": [[NaN, 2.0]]}',
        b'{"embeddings": [["NaN", 2.0]]}',
        b'{"embeddings": [[' + b"9" * 5000 + b", 2.0]]}",  # an integer of 5000 digits
        b'{"embeddings": [[1.0]], "num_heads": ' + b"9" * 400 + b"}",
        b"\xff\xfe garbage",
        b"",
        b"null",
        b'"a string"',
        b"{" * 3,
    ],
)
def test_hostile_raw_bodies_are_4xx(compute, raw):
    response = compute.post(raw)
    assert 400 <= response.status_code < 500, (raw[:60], response.status_code, response.text[:300])
    assert response.json()["detail"]
