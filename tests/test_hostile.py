"""Hostile and random bodies: whatever arrives, the answer is a 200, 413 or 422, never a 5xx."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.request import AttendRequest, WeightSpec

SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**30), 10**30), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8), st.sampled_from(["NaN", "Infinity", "float16", "cuda", "identity", "out_in", "weights"]),
)
JSON_VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                           max_leaves=30)
MATRICES = st.integers(1, 4).flatmap(lambda cols: st.lists(st.lists(st.floats(-3, 3), min_size=cols, max_size=cols),
                                                            min_size=1, max_size=4))
FIELD_VALUES = st.one_of(JSON_VALUES, MATRICES, st.integers(-2, 6), st.lists(MATRICES, min_size=1, max_size=2))
WEIGHTS = st.dictionaries(st.sampled_from(sorted(WeightSpec.model_fields)), FIELD_VALUES, max_size=5)
BODIES = st.dictionaries(st.sampled_from(sorted(AttendRequest.model_fields) + ["junk"]),
                         st.one_of(FIELD_VALUES, WEIGHTS), max_size=6)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.one_of(BODIES, JSON_VALUES))
def test_never_a_server_error(server, body):
    response = server.post(json.dumps(body).encode())
    assert response.status_code in (200, 413, 422), (response.status_code, response.text[:500])
    if response.status_code != 200:
        assert response.json()["detail"]
