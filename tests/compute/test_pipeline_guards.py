"""The pipeline's guards before any JSON parser: a large body with more strings than a request can hold is
refused from its quotes, and otherwise its list of texts is counted from a light parse, so that a batch bomb
is refused without a parser building a Python object of every text (in /attend and in OIP's JSON header)."""

from __future__ import annotations

import json

import orjson
import pytest

from schemas.axes import TENSOR_NAMES
from schemas.request import AttendRequest
from service.compute import oip, pipeline
from service.compute.limits import OTHER_STRINGS
from service.compute.pipeline import LARGE_BODY_BYTES, check_text_batch
from service.errors import LimitExceeded
from service.protocol import OIP_PRELUDE
from service.settings import Settings

SETTINGS = Settings(max_batch=4)


def never(*_: object) -> None:
    raise AssertionError("a JSON parser read a body the guard should have refused")


def test_a_large_list_of_texts_over_the_batch_is_refused_before_any_parser(monkeypatch):
    body = json.dumps({"text": ["a"] * 100_000}).encode()
    assert len(body) > LARGE_BODY_BYTES
    monkeypatch.setattr(AttendRequest, "model_validate_json", never)
    monkeypatch.setattr(orjson, "loads", never)
    with pytest.raises(LimitExceeded) as refused:
        pipeline.attend(body, SETTINGS, models=None)  # type: ignore[arg-type]
    assert refused.value.limit == "ATTENTION_MAX_BATCH"
    assert refused.value.estimate == 100_001  # the texts and the key "text"
    assert "counted as the body's strings" in str(refused.value)


def test_a_bytes_input_of_a_million_texts_is_refused_before_the_oip_header_is_parsed(monkeypatch):
    header = json.dumps(
        {"inputs": [{"name": "text", "shape": [1_000_000], "datatype": "BYTES", "data": ["a"] * 1_000_000}]}
    ).encode()
    model = b"all-MiniLM-L6-v2"
    envelope = OIP_PRELUDE.pack(len(header), len(model)) + model + header
    monkeypatch.setattr(orjson, "loads", never)
    status, body = oip.answer_infer(envelope, SETTINGS, models=None)  # type: ignore[arg-type]
    assert status == 413 and "ATTENTION_MAX_BATCH" in json.loads(body)["error"], body


def test_the_fullest_valid_request_and_escaped_quotes_pass_the_string_count():
    """max_batch texts full of escaped quotes, every tensor named in include, every other string field set:
    the quotes inside strings are not strings, and the request's own strings are far fewer than allowed."""
    body = json.dumps(
        {
            "text": ['say "a" ' * 20_000] * SETTINGS.max_batch,
            "model": "all-MiniLM-L6-v2",
            "include": list(TENSOR_NAMES),
            "layer": "all",
            "dtype": "float32",
            "device": "cpu",
            "wire_dtype": "float32",
        }
    ).encode()
    assert len(body) > LARGE_BODY_BYTES and body.count(b'"') // 2 > SETTINGS.max_batch + OTHER_STRINGS
    check_text_batch(body, SETTINGS)


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
