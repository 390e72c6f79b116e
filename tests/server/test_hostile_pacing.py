"""A pipelining flood costs its sender, not everyone (issue 21): a client that sends its requests before it
reads the answers has them started at most ATTENTION_PIPELINED_PER_S a second after a burst of
ATTENTION_PIPELINED_BURST, over all its connections (service/server/pacing.py), while a client that reads each
answer before its next request is not paced. Raw sockets to a real server: the pipelining client from
127.0.0.2, the others from 127.0.0.3 and 127.0.0.4."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from devtools.servers import Server
from service.settings import Settings

PIPELINED_PER_S = Settings.model_fields["pipelined_per_s"].default
PIPELINED_BURST = Settings.model_fields["pipelined_burst"].default
HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
PIPELINED = 200  # requests written at once on each of two connections
# at the paced rate they take this long at least; answered as fast as the server can, about a tenth of it
PACED_S = (2 * PIPELINED - PIPELINED_BURST) / PIPELINED_PER_S


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    with Server({"ATTENTION_MAX_CONCURRENT": "1", "ATTENTION_LOAD_MODELS": "lazy"}, quiet=True) as srv:
        yield srv


def connect(server: Server, address: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=60, source_address=(address, 0))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def read_answers(sock: socket.socket, count: int) -> None:
    """Reads `count` answers to GET /healthz, each 200."""
    received = bytearray()
    while received.count(b"HTTP/1.1 ") < count or not received.endswith(b"}"):
        piece = sock.recv(2**16)
        assert piece, f"closed after {received.count(b'HTTP/1.1 ')} answers"
        received += piece
    assert received.count(b"HTTP/1.1 200 ") == count, bytes(received[:300])


def pipelined(server: Server, address: str) -> None:
    with connect(server, address) as sock:
        sock.sendall(HEALTHZ * PIPELINED)
        read_answers(sock, PIPELINED)


def one_at_a_time(server: Server, address: str, count: int) -> list[float]:
    """`count` requests on one connection, each sent once the answer before it is read; their latencies."""
    latencies = []
    with connect(server, address) as sock:
        for _ in range(count):
            started = time.monotonic()
            sock.sendall(HEALTHZ)
            read_answers(sock, 1)
            latencies.append(time.monotonic() - started)
    return latencies


@pytest.mark.slow
def test_pipelined_requests_are_paced_per_client_and_others_are_not(server: Server):
    latencies: list[float] = []
    prober = threading.Thread(target=lambda: latencies.extend(one_at_a_time(server, "127.0.0.3", 50)))
    started = time.monotonic()
    flooding = [threading.Thread(target=pipelined, args=(server, "127.0.0.2")) for _ in range(2)]
    for thread in [*flooding, prober]:
        thread.start()
    for thread in [*flooding, prober]:
        thread.join()
    took = time.monotonic() - started
    # the two connections of one address share its pace
    assert took > 0.8 * PACED_S, f"{2 * PIPELINED} pipelined requests answered in {took:.2f} s"
    # the client that reads its answers is never paced: 50 requests well within the pipelining client's time
    assert sum(latencies) < PACED_S / 2, f"50 requests one at a time took {sum(latencies):.2f} s"
    # and another address that pipelines has its own pace: its burst is answered at once
    started = time.monotonic()
    with connect(server, "127.0.0.4") as sock:
        sock.sendall(HEALTHZ * PIPELINED_BURST)
        read_answers(sock, PIPELINED_BURST)
    assert time.monotonic() - started < 1.0


@pytest.mark.slow
def test_the_pace_and_burst_are_the_operators_settings():
    """A slower pace than the default's: 40 pipelined requests, which the default answers within its burst and
    0.24 s, take at least (40 - 2) / 20 s at 20 a second after a burst of 2."""
    env = {
        "ATTENTION_MAX_CONCURRENT": "1",
        "ATTENTION_LOAD_MODELS": "lazy",
        "ATTENTION_PIPELINED_PER_S": "20",
        "ATTENTION_PIPELINED_BURST": "2",
    }
    with Server(env, quiet=True) as slow_paced, connect(slow_paced, "127.0.0.2") as sock:
        started = time.monotonic()
        sock.sendall(HEALTHZ * 40)
        read_answers(sock, 40)
        took = time.monotonic() - started
    assert took > 0.9 * (40 - 2) / 20, f"40 pipelined requests answered in {took:.2f} s"
