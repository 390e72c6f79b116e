"""The pipeline's guard before pydantic: a large body's list of texts is counted from a light parse, so that
a batch bomb is refused without pydantic building a Python object of every text."""

from __future__ import annotations

import json

import pytest

from schemas.request import AttendRequest
from service.compute import pipeline
from service.compute.pipeline import LARGE_BODY_BYTES, check_text_batch
from service.errors import LimitExceeded
from service.settings import Settings

SETTINGS = Settings(max_batch=4)


def test_a_large_list_of_texts_over_the_batch_is_refused_before_pydantic(monkeypatch):
    body = json.dumps({"text": ["a"] * 100_000}).encode()
    assert len(body) > LARGE_BODY_BYTES

    def never(*_: object) -> None:
        raise AssertionError("pydantic parsed a body the guard should have refused")

    monkeypatch.setattr(AttendRequest, "model_validate_json", never)
    with pytest.raises(LimitExceeded) as refused:
        pipeline.attend(body, SETTINGS, models=None)  # type: ignore[arg-type]
    assert (refused.value.limit, refused.value.estimate) == ("ATTENTION_MAX_BATCH", 100_000)


@pytest.mark.parametrize(
    "body",
    [
        json.dumps({"text": ["a"] * 3, "pad": " " * LARGE_BODY_BYTES}).encode(),  # within the batch
        b'{"text": ["a", ' + b" " * LARGE_BODY_BYTES,  # malformed: pydantic says where
        json.dumps({"embeddings": [[0.5] * 100] * 1000, "note": "text"}).encode(),  # no list of texts
        json.dumps({"text": ["a"] * 100}).encode(),  # over the batch, but small: pydantic's way is cheap
    ],
)
def test_other_bodies_are_left_to_pydantic(body):
    check_text_batch(body, SETTINGS)
