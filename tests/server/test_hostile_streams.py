"""NDJSON streams against clients that stop reading (issue 21): a stream stalled past its time limit must not
keep its killed compute process from being replaced, and a stream the time limit cuts within a line still ends
with a line that parses. A real server with one compute process and a 3 s time limit, real streams over
loopback."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import orjson
import pytest

from devtools.servers import Server
from tests.support.http import metric

TIME_LIMIT_S = 3.0
NDJSON = "application/x-ndjson"
# a toy stream whose one tensor line is about 40 MB (2000 x 2000 weights), sent in 1 MB pieces: far more than
# loopback's buffers hold, so a client that stops reading holds the stream mid-line
BIG_STREAM = orjson.dumps(
    {"embeddings": [[float(i % 7), float(i % 5)] for i in range(2000)], "include": ["weights"]}
)
SMALL = json.dumps({"embeddings": [[1.0, 0.0], [0.0, 1.0]]}).encode()
REPLACED = 'attention_compute_processes_replaced_total{reason="timeout"}'


@pytest.fixture(scope="module")
def timed() -> Iterator[Server]:
    env = {
        "ATTENTION_MAX_CONCURRENT": "1",
        "ATTENTION_REQUEST_TIMEOUT_S": str(TIME_LIMIT_S),
        "ATTENTION_LOAD_MODELS": "lazy",  # the replacement starts in seconds
    }
    with Server(env, quiet=True) as srv:
        yield srv


def open_stream(server: Server, client: httpx.Client) -> tuple[httpx.Response, Iterator[bytes]]:
    request = client.build_request(
        "POST",
        f"{server.url}/attend",
        content=BIG_STREAM,
        headers={"content-type": "application/json", "accept": NDJSON},
    )
    response = client.send(request, stream=True)
    assert response.status_code == 200, response.read()[:300]
    pieces = response.iter_raw(2**16)
    next(pieces)  # the first 64 KB; then the client stops reading, its socket left open
    return response, pieces


@pytest.mark.slow
def test_a_stream_stalled_past_its_time_limit_does_not_keep_the_killed_process_from_being_replaced(
    timed: Server,
):
    """Issue 21 #1: the time limit kills the process computing a stream whose client stopped reading; with
    that client still connected and still not reading, the process is replaced within seconds, /attend
    meanwhile answers at once (503, not a 504 after the time limit) and then computes again."""
    replaced_before = metric(timed, REPLACED)
    with httpx.Client(timeout=60) as stalled_client:
        response, _ = open_stream(timed, stalled_client)
        try:
            time.sleep(TIME_LIMIT_S + 0.5)  # the stream's deadline passes while nobody reads it
            deadline = time.monotonic() + 45
            while True:
                started = time.monotonic()
                probe = timed.client.post(
                    "/attend", content=SMALL, headers={"content-type": "application/json"}
                )
                took = time.monotonic() - started
                assert probe.status_code in (200, 503), (probe.status_code, probe.text)
                assert took < TIME_LIMIT_S * 0.8, f"{probe.status_code} after {took:.1f} s"
                if probe.status_code == 200:
                    break
                assert timed.client.get("/readyz").status_code in (200, 503)
                assert time.monotonic() < deadline, "the killed process was never replaced"
                time.sleep(0.2)
            assert metric(timed, REPLACED) == replaced_before + 1
            assert metric(timed, "attention_compute_processes_up ") == 1  # the replacement counts
            assert timed.client.get("/readyz").status_code == 200
        finally:
            response.close()


@pytest.mark.slow
def test_a_stream_cut_within_a_line_by_its_time_limit_ends_with_a_line_that_parses(timed: Server):
    """Issue 21 #7: the client pauses past the time limit, so the limit cuts the stream within its 40 MB
    line; read to its end, the stream's last line is the error line, alone on its line (the cut line ended
    first)."""
    with httpx.Client(timeout=60) as client:
        response, pieces = open_stream(timed, client)
        try:
            time.sleep(TIME_LIMIT_S + 1)
            tail = b"".join(pieces)[-4096:]
        finally:
            response.close()
    lines = tail.split(b"\n")
    assert lines[-1] == b"", "the stream does not end with a newline"
    last = orjson.loads(lines[-2])  # raises if the error was written onto the cut line
    assert last["error"]["status"] == 504, last
    assert "ATTENTION_REQUEST_TIMEOUT_S=3" in last["error"]["detail"]
