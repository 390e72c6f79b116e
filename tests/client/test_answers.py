"""Answers the service does not give but what sits in front of it might (a proxy's HTML page, another
version's JSON): the client says what it found rather than returning something wrong."""

from __future__ import annotations

import httpx
import pytest

from attention_client import APIError, ResponseError, ServiceUnavailable
from attention_client.decode import decode
from attention_client.errors import error_from

AXES = '"axes": {"weights": ["batch", "head", "query_pos", "key_pos"]}'
GROUPED = '"num_heads": 4, "num_kv_heads": 2, "axes": {"k": ["batch", "kv_head", "key_pos", "d_k"]}'


def answer(body: str, content_type: str = "application/json", status: int = 200) -> httpx.Response:
    return httpx.Response(status, content=body.encode(), headers={"content-type": content_type})


def test_a_proxys_page_becomes_an_api_error_with_its_text_cut_short():
    error = error_from(answer("<html>bad gateway</html>" * 200, "text/html", 502), None)
    assert type(error) is APIError and error.status == 502
    assert str(error).startswith("502 Bad Gateway: <html>bad gateway</html>") and len(error.message) < 1010


def test_a_503_without_retry_after_says_so():
    error = error_from(answer('{"detail": "model \'x\': weights file fails its checksum"}', status=503), None)
    assert isinstance(error, ServiceUnavailable) and error.retry_after is None
    assert error.message == "model 'x': weights file fails its checksum"


@pytest.mark.parametrize(
    ("body", "content_type", "found"),
    [
        ("<html></html>", "text/html", "found a response of text/html; expected application/json"),
        ('{"weights": [[[[1.0]]]]}', "application/json", "without a readable `meta.axes`"),
        (
            '{"weights": [[[[1.0], [1.0, 2.0]]]], "meta": {' + AXES + "}}",
            "application/json",
            "no rectangular",
        ),
        ('{"weights": [[[1.0]]], "meta": {' + AXES + "}}", "application/json", "found shape [1, 1, 1]"),
        (
            '{"weights": [[[[1.0]]]], "meta": {' + AXES + ', "shapes": {"weights": [1, 1, 1, 2]}}}',
            "application/json",
            "expected axes ['batch', 'head', 'query_pos', 'key_pos'] of shape [1, 1, 1, 2]",
        ),
        ('{"layers": [{"weights": []}], "meta": {' + AXES + "}}", "application/json", "without its `layer`"),
        (
            '{"k": [[[[1.0]], [[2.0]]]], "meta": {' + GROUPED + ', "kv_head_of": [0, 0, 1, 2]}}',
            "application/json",
            "found meta.kv_head_of [0, 0, 1, 2]; expected, with a `kv_head` axis, the kv head of each of",
        ),
        (
            '{"k": [[[[1.0]], [[2.0]]]], "meta": {' + GROUPED + "}}",
            "application/json",
            "found meta.kv_head_of None",
        ),
    ],
)
def test_an_answer_off_the_contract_is_a_response_error(body, content_type, found):
    with pytest.raises(ResponseError) as caught:
        decode(answer(body, content_type))
    assert found in str(caught.value)
