"""Statuses only the wire shows (issue 12): a body not declared JSON (415), HEAD probes, an empty model name,
a client that leaves mid-upload (a disconnect, not a 500), and a client that never reads its answer (cut off
at the send timeout, its place held until then)."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator

import pytest

from devtools.servers import Server
from tests.support.http import metric, read_body

CAT = {"embeddings": [[0.8, 0.2, 0.4, 0.1], [0.1, 0.9, 0.3, 0.7], [0.3, 0.1, 0.9, 0.2]]}


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/xml",
        None,
    ],
)
def test_a_body_not_declared_json_is_415_and_not_computed(server, content_type):
    headers = {} if content_type is None else {"content-type": content_type}
    before = metric(server, 'attention_requests_total{method="POST",route="/attend",status="200"}')
    response = server.client.post("/attend", content=json.dumps(CAT), headers=headers)
    assert response.status_code == 415, response.text
    detail = response.json()["detail"]
    assert "expected Content-Type: application/json" in detail
    assert (repr(content_type) if content_type else "no Content-Type") in detail
    assert metric(server, 'attention_requests_total{method="POST",route="/attend",status="200"}') == before


def test_json_with_parameters_is_accepted(server):
    response = server.client.post(
        "/attend", content=json.dumps(CAT), headers={"content-type": "Application/JSON; charset=utf-8"}
    )
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
def test_probes_answer_head(server, path):
    response = server.client.head(path)
    assert response.status_code == 200 and response.content == b""


def test_an_empty_model_name_is_a_422_not_the_default_model(server):
    response = server.post({"text": "a cat", "model": ""})
    assert response.status_code == 422, response.text
    (item,) = response.json()["detail"]
    assert item["loc"] == ["body", "model"] and "at least 1 character" in item["msg"]


def test_a_client_that_leaves_mid_upload_is_a_disconnect_not_a_500(server):
    before = metric(server, 'attention_rejected_total{reason="client_disconnected"}')
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(
            b"POST /attend HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100000\r\n\r\n" + b"[" * 1000
        )
        time.sleep(0.2)
    deadline = time.monotonic() + 5
    while metric(server, 'attention_rejected_total{reason="client_disconnected"}') == before:
        assert time.monotonic() < deadline, "the disconnect was not counted"
        time.sleep(0.05)
    assert metric(server, 'attention_requests_total{method="POST",route="/attend",status="500"}') == 0


@pytest.fixture(scope="module")
def one_place() -> Iterator[Server]:
    """One compute process, no queue, and a one-second send timeout."""
    srv = Server(
        {"ATTENTION_MAX_CONCURRENT": "1", "ATTENTION_MAX_QUEUE": "0", "ATTENTION_SEND_TIMEOUT_S": "1"}
    )
    yield srv
    srv.stop()


BIG = {"text": " ".join(f"w{i}" for i in range(128)), "model": "toy", "d_model": 384, "num_heads": 6}


@pytest.mark.slow
def test_a_client_that_does_not_read_leaves_its_place_to_others_until_the_send_timeout_cuts_it_off(one_place):
    """Its answer is memory, counted against ATTENTION_MAX_ANSWER_BYTES_IN_FLIGHT, not a computation: the
    only place is free for the next request once the answer is computed (issue 21 #3)."""
    request = json.dumps(BIG).encode()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a reader that takes nothing in
    sock.connect(("127.0.0.1", one_place.port))
    try:
        sock.sendall(
            b"POST /attend HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(request)}\r\n\r\n".encode()
            + request
        )
        time.sleep(1.0)  # computed (about 0.3 s here), and stuck in delivery
        # its undelivered answer (megabytes) does not hold the only place
        assert one_place.post(CAT).status_code == 200
        deadline = time.monotonic() + 30
        while metric(one_place, 'attention_rejected_total{reason="send_timeout"}') == 0:
            assert time.monotonic() < deadline, "the slow reader was never cut off"
            time.sleep(0.2)
        sock.settimeout(10)
        received = b""
        while chunk := sock.recv(2**20):
            received += chunk
        head, _, rest = received.partition(b"\r\n\r\n")
        assert not read_body(head, rest).whole  # closed before the answer was complete
    finally:
        sock.close()


@pytest.mark.slow
def test_a_reader_that_keeps_up_gets_a_large_answer_whole(one_place):
    response = one_place.post(BIG)
    assert response.status_code == 200
    assert len(response.content) > 4 * 2**20 and response.json()["meta"]["shapes"]["weights"] == [
        1,
        6,
        128,
        128,
    ]
