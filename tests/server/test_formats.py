"""The response formats over real HTTP: Accept picks JSON, safetensors or NDJSON (406 for what the service
cannot produce), each carries the JSON answer, a stream arrives line by line, and a 512-token stream of every
layer stays within its memory budget."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from devtools.memory import PeakResident
from devtools.servers import Server
from service.errors import NotAcceptable
from service.protocol import MEDIA_TYPES
from service.server.accept import negotiate
from tests.support.formats import (
    assert_same_arrays,
    json_arrays,
    ndjson_response,
    read_safetensors,
    without_timing,
)

SAFETENSORS, NDJSON = "application/x-safetensors", "application/x-ndjson"
BODY = {"text": ["The cat ate the fish because it was hungry", "Hi"], "layer": [2, 0], "heads": [1, 4]}


@pytest.mark.parametrize(
    ("accept", "chosen"),
    [
        (None, "application/json"),
        ("", "application/json"),
        ("*/*", "application/json"),
        ("application/*", "application/json"),
        ("text/html, */*;q=0.8", "application/json"),
        ("application/x-safetensors", SAFETENSORS),
        ("Application/X-Safetensors; q=0.9", SAFETENSORS),
        ("application/x-safetensors, */*", SAFETENSORS),
        ("application/json;q=0.5, application/x-ndjson", NDJSON),
        ("application/json, application/x-safetensors", "application/json"),
        ("*/*;q=0.1, application/json;q=0", SAFETENSORS),
    ],
)
def test_accept_picks_the_format_the_client_prefers(accept, chosen):
    assert MEDIA_TYPES[negotiate(accept)] == chosen


@pytest.mark.parametrize(
    "accept", ["text/html", "application/xml, image/*", "application/json;q=0", "*/*;q=0"]
)
def test_an_accept_the_service_cannot_produce_is_not_acceptable(accept):
    with pytest.raises(NotAcceptable):
        negotiate(accept)


def test_406_lists_the_formats_the_service_produces(server):
    response = server.post(BODY, headers={"accept": "text/csv"})
    assert response.status_code == 406
    assert response.headers["content-type"] == "application/json"
    detail = response.json()["detail"]
    assert "text/csv" in detail and all(media in detail for media in MEDIA_TYPES)


def test_safetensors_over_http_carries_the_json_answer(server):
    expected = server.post(BODY).json()
    response = server.post(BODY, headers={"accept": SAFETENSORS})
    assert response.status_code == 200
    assert response.headers["content-type"] == SAFETENSORS
    tensors, metadata = read_safetensors(response.content)
    assert_same_arrays(tensors, json_arrays(expected))
    assert without_timing(json.loads(metadata["meta"])) == without_timing(expected["meta"])
    assert json.loads(metadata["tokens"]) == expected["tokens"]


def test_a_json_answer_over_a_frame_comes_in_pieces_and_carries_what_safetensors_does(server):
    """Every layer's weights of a 200-token text, 6 MB of JSON: sent in pieces as the compute process writes
    them (chunked, no Content-Length), its values those of the safetensors answer bit for bit (float32's
    shortest repr read back), with the same meta."""
    body = {"text": " ".join(["the cat sat on the mat"] * 33), "layer": [0, 5], "include": ["weights"]}
    response = server.post(body)
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    assert response.headers.get("transfer-encoding") == "chunked" and "content-length" not in response.headers
    assert len(response.content) > 4 * 2**20
    expected = response.json()
    binary = server.post(body, headers={"accept": SAFETENSORS})
    tensors, metadata = read_safetensors(binary.content)
    assert_same_arrays(tensors, json_arrays(expected))
    assert without_timing(json.loads(metadata["meta"])) == without_timing(expected["meta"])


def test_a_json_answer_in_pieces_that_breaks_off_is_closed_unfinished_never_ended_as_complete():
    """Room for 2 MB of unread answers and a client that reads its 6 MB answer only after 5 s: the pieces that
    outgrow the room end the answer after its 200 went out, and the connection is closed with the chunked body
    unfinished, which the client reads as an error; the service goes on answering."""
    body = {"text": " ".join(["the cat sat on the mat"] * 33), "layer": [0, 5], "include": ["weights"]}
    with Server({"ATTENTION_MAX_ANSWER_BYTES_IN_FLIGHT": "2000000"}) as server:
        content = json.dumps(body).encode()
        headers = {"content-type": "application/json"}
        with server.client.stream("POST", "/attend", content=content, headers=headers) as response:
            assert response.status_code == 200 and response.headers.get("transfer-encoding") == "chunked"
            time.sleep(5)
            with pytest.raises(httpx.RemoteProtocolError, match="incomplete chunked read"):
                for _ in response.iter_bytes():
                    pass
        assert server.post({"text": "the cat"}).status_code == 200


def test_an_error_is_json_whatever_the_accept(server):
    for accept in (SAFETENSORS, NDJSON):
        response = server.post({**BODY, "heads": [12]}, headers={"accept": accept})
        assert response.status_code == 422
        assert response.headers["content-type"] == "application/json"
        assert response.json()["detail"][0]["loc"] == ["body", "heads", 0]


def test_a_stream_over_http_arrives_line_by_line_and_carries_the_json_answer(server):
    expected = server.post(BODY).json()
    content = json.dumps(BODY).encode()
    headers = {"content-type": "application/json", "accept": NDJSON}
    with server.client.stream("POST", "/attend", content=content, headers=headers) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == NDJSON
        assert response.headers.get("transfer-encoding") == "chunked"
        lines = [line.encode() for line in response.iter_lines() if line]
    streamed = ndjson_response(lines)
    expected["layers"].reverse()  # a stream sends the layers as the forward pass reaches them: 0, then 2
    expected["meta"]["layer"] = [0, 2]
    assert without_timing(streamed.pop("meta")) == without_timing(expected.pop("meta"))
    assert streamed == expected


@pytest.mark.slow
def test_a_512_token_text_streams_every_layers_weights_within_300_mb_above_rest():
    body = {"text": " ".join(["word"] * 510), "layer": "all", "include": ["weights"]}
    with Server({"ATTENTION_MAX_CONCURRENT": "1"}) as srv:
        assert srv.post({"embeddings": [[1.0, 0.0], [0.0, 1.0]]}).status_code == 200
        started, arrivals = time.perf_counter(), []
        with PeakResident(srv.process.pid) as memory:
            headers = {"content-type": "application/json", "accept": NDJSON}
            with httpx.stream(
                "POST", f"{srv.url}/attend", content=json.dumps(body), headers=headers, timeout=120
            ) as response:
                assert response.status_code == 200, response.read()[:300]
                # only the first bytes of each line are kept, and each piece is scanned once: joining or
                # parsing 40 MB lines here would slow the reader, and the server would hold its unread lines
                starts: list[bytes] = []
                pending = b""  # the start of the line under way, at most 12 bytes
                for piece in response.iter_raw():
                    *complete, tail = piece.split(b"\n")
                    for part in complete:
                        starts.append((pending + part[:12])[:12])
                        arrivals.append(time.perf_counter() - started)
                        pending = b""
                    pending = (pending + tail[:12])[:12]
        assert pending == b"" and starts[0].startswith(b'{"meta":')
        layers = [int(start.removeprefix(b'{"layer":').split(b",")[0]) for start in starts[1:]]
        assert layers == [0, 1, 2, 3, 4, 5]
        rest, peak = memory.rest, memory.peak
        print(f"rest {rest:.0f} MB, peak {peak:.0f} MB; lines at {[round(t, 2) for t in arrivals]} s")
        assert memory.above_rest <= 300, f"at rest {rest:.0f} MB, peak {peak:.0f} MB"
