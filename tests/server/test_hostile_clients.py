"""Clients that attack the server's connections rather than its computations (issue 12), over raw sockets to a
real server run with the protocol of service/server/http_protocol.py: an endless header (431, closed at once,
other clients unaffected), a header or body that never finishes (408 within its time limit), more connections
than allowed (503), more bytes of bodies in flight than allowed (503, memory bounded), and a compute process
whose replacement fails to start for a while (retried until the pool is back)."""

from __future__ import annotations

import asyncio
import contextlib
import re
import select
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from devtools.memory import resident_mb
from devtools.servers import Server
from service.server.compute_pool import ComputePool, ComputeProcess
from service.settings import Settings
from tests.support.stub_compute import serve

MAX_HEADER_BYTES = Settings().max_header_bytes

LIGHT = {"ATTENTION_MAX_CONCURRENT": "1", "ATTENTION_LOAD_MODELS": "lazy"}  # quick to start, little memory


def connect(server: Server, timeout: float = 5) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def read_to_end(sock: socket.socket, seconds: float) -> tuple[bytes, float | None]:
    """What the server sends until it closes the connection, and when (time.monotonic()) it did; None if it
    is still open after `seconds`."""
    received, deadline = b"", time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            break
        except ConnectionResetError:
            return received, time.monotonic()
        if not chunk:
            return received, time.monotonic()
        received += chunk
    return received, None


def status_of(answer: bytes) -> int | None:
    match = re.match(rb"HTTP/1\.1 (\d{3}) ", answer)
    return int(match.group(1)) if match else None


def answered(sock: socket.socket) -> bool:
    return bool(select.select([sock], [], [], 0)[0])


def refusals(server: Server, reason: str) -> float:
    """attention_connections_refused_total{reason} from the server's /metrics."""
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    match = re.search(rf'^attention_connections_refused_total{{reason="{reason}"}} (\S+)$', text, re.M)
    assert match, text
    return float(match.group(1))


@pytest.mark.slow
def test_an_endless_header_is_refused_431_and_closed_while_other_clients_are_served(server: Server):
    """Four connections each send a header that never ends (up to 8 MiB); each is answered 431 and closed
    within a second of passing the bound, and /healthz stays quick meanwhile."""
    latencies: list[float] = []
    stop = threading.Event()
    refused_before = refusals(server, "header_too_large")

    def probe() -> None:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            while not stop.is_set():
                start = time.monotonic()
                assert client.get("/healthz").status_code == 200
                latencies.append(time.monotonic() - start)
                time.sleep(0.02)

    outcomes: list[tuple[int | None, int, float | None]] = []

    def attack() -> None:
        sock = connect(server)
        start = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Filler: "
        sock.sendall(start)
        # every byte of the head counts: the server may refuse as soon as it holds MAX_HEADER_BYTES + 1
        sent, past_bound = len(start), None
        chunk = b"a" * 16384
        while sent < 8 * 2**20 and not answered(sock):
            try:
                sock.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError, TimeoutError):  # refused: it stopped reading
                break
            sent += len(chunk)
            if past_bound is None and sent > MAX_HEADER_BYTES:
                past_bound = time.monotonic()
        answer, closed = read_to_end(sock, seconds=5)
        sock.close()
        assert past_bound is not None
        outcomes.append((status_of(answer), sent, None if closed is None else closed - past_bound))

    prober = threading.Thread(target=probe)
    prober.start()
    try:
        time.sleep(0.3)
        attackers = [threading.Thread(target=attack) for _ in range(4)]
        for thread in attackers:
            thread.start()
        for thread in attackers:
            thread.join(timeout=60)
        time.sleep(0.3)
    finally:
        stop.set()
        prober.join(timeout=30)
    assert len(outcomes) == 4, outcomes
    for status, sent, closed_after in outcomes:
        assert status == 431, outcomes
        assert sent < 8 * 2**20, outcomes  # refused before the end (what was sent is mostly socket buffers)
        assert closed_after is not None and closed_after < 1.0, outcomes
    assert latencies and max(latencies) < 1.0, sorted(latencies)[-5:]
    assert refusals(server, "header_too_large") == refused_before + 4  # operators see it in /metrics


@pytest.fixture(scope="module")
def impatient() -> Iterator[Server]:
    """A server that gives a request line and headers 1 s and lets a body stall 1 s."""
    env = {**LIGHT, "ATTENTION_HEADER_TIMEOUT_S": "1", "ATTENTION_BODY_TIMEOUT_S": "1"}
    with Server(env, quiet=True) as srv:
        yield srv


@pytest.mark.slow
@pytest.mark.parametrize(
    "sent",
    [b"", b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Half: abc"],
    ids=["nothing", "half a header"],
)
def test_a_header_that_never_ends_is_closed_408_after_the_header_timeout(impatient: Server, sent: bytes):
    sock = connect(impatient)
    start = time.monotonic()
    sock.sendall(sent)
    answer, closed = read_to_end(sock, seconds=5)
    sock.close()
    assert closed is not None and closed - start < 3, "the connection was not closed"
    assert status_of(answer) == 408, answer


@pytest.mark.slow
def test_a_header_sent_a_byte_at_a_time_is_closed_after_the_header_timeout(impatient: Server):
    """The time limit counts from the start: each new byte does not buy more time."""
    sock = connect(impatient)
    start = time.monotonic()
    closed = None
    for byte in b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 100:
        try:
            sock.sendall(bytes([byte]))
        except (BrokenPipeError, ConnectionResetError):
            break
        if answered(sock) or time.monotonic() - start > 5:
            break
        time.sleep(0.1)
    answer, closed = read_to_end(sock, seconds=5)
    sock.close()
    assert closed is not None and closed - start < 3, "the connection was not closed"
    assert status_of(answer) == 408, answer


@pytest.mark.slow
def test_a_body_that_stalls_is_closed_408_after_the_body_timeout(impatient: Server):
    sock = connect(impatient)
    sock.sendall(
        b"POST /attend HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: 1000\r\n\r\n" + b'{"q": [[[1, 2'
    )
    stalled = time.monotonic()
    answer, closed = read_to_end(sock, seconds=5)
    sock.close()
    assert closed is not None and closed - stalled < 3, "the connection was not closed"
    assert status_of(answer) == 408, answer


@pytest.mark.slow
def test_a_kept_alive_connection_may_idle_between_requests(impatient: Server):
    """The header time limit starts with a request's first byte, not when the previous answer left."""
    with httpx.Client(base_url=impatient.url, timeout=10) as client:
        assert client.get("/healthz").status_code == 200
        time.sleep(1.5)
        assert client.get("/healthz").status_code == 200


MAX_REQUEST = 4 * 2**20


@pytest.fixture(scope="module")
def bounded() -> Iterator[Server]:
    """A server with at most 8 connections and 8 MiB of bodies in flight, bodies of at most 4 MiB."""
    env = {
        **LIGHT,
        "ATTENTION_MAX_CONNECTIONS": "8",
        "ATTENTION_MAX_REQUEST_BYTES": str(MAX_REQUEST),
        "ATTENTION_MAX_BODY_BYTES_IN_FLIGHT": str(2 * MAX_REQUEST),
    }
    with Server(env, quiet=True) as srv:
        yield srv


def healthz_on_a_fresh_connection(server: Server) -> bytes:
    sock = connect(server)
    try:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        return read_to_end(sock, seconds=5)[0]
    finally:
        sock.close()


@pytest.mark.slow
def test_connections_past_the_limit_are_answered_503_and_closed(bounded: Server):
    refused_before = refusals(bounded, "connections")
    holders = [connect(bounded) for _ in range(8)]
    try:
        for sock in holders:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # and never the end
        time.sleep(0.3)
        answer = healthz_on_a_fresh_connection(bounded)
        assert status_of(answer) == 503, answer
        assert b"\r\nretry-after: 1\r\n" in answer.lower()
        assert b"ATTENTION_MAX_CONNECTIONS" in answer
    finally:
        for sock in holders:
            sock.close()
    deadline = time.monotonic() + 5
    while status_of(answer := healthz_on_a_fresh_connection(bounded)) != 200:
        assert time.monotonic() < deadline, answer
        time.sleep(0.1)
    assert refusals(bounded, "connections") >= refused_before + 1


def upload_head(length: int | None) -> bytes:
    framing = b"Transfer-Encoding: chunked" if length is None else b"Content-Length: %d" % length
    return (
        b"POST /attend HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        + framing
        + b"\r\n\r\n"
    )


@pytest.mark.slow
def test_bodies_in_flight_are_bounded_and_the_next_upload_is_refused_503(bounded: Server):
    """Six clients each start a body of 4 MiB - 1 and send 3 MiB of it: two fit under the 8 MiB in flight,
    the other four are answered 503 (Retry-After) unread, and the server's memory grows by about two bodies,
    not six. A chunked upload is refused too once it does not fit; the room comes back when uploads end."""
    time.sleep(0.5)  # the connections of the tests before have gone
    refused_before = refusals(bounded, "body_bytes_in_flight")
    baseline = resident_mb(bounded.process.pid)
    part = b" " * (3 * 2**20)
    uploads = []
    try:
        for _ in range(6):
            sock = connect(bounded, timeout=10)
            uploads.append(sock)
            sock.sendall(upload_head(MAX_REQUEST - 1))
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                sock.sendall(part)  # a refused one may be closed before all of it is sent
            time.sleep(0.2)
        time.sleep(0.5)
        grown = resident_mb(bounded.process.pid) - baseline
        statuses = []
        for sock in uploads:
            answer = read_to_end(sock, seconds=2)[0] if answered(sock) else b""
            statuses.append(status_of(answer))
            if answer:
                assert b"\r\nretry-after: 1\r\n" in answer.lower(), answer
        assert statuses == [None, None, 503, 503, 503, 503], statuses
        assert grown < 12, f"the server grew by {grown:.1f} MiB"

        chunked = connect(bounded)
        uploads.append(chunked)
        chunked.sendall(upload_head(None) + b"%x\r\n%s\r\n" % (2**20, b" " * 2**20))
        answer, closed = read_to_end(chunked, seconds=5)
        assert status_of(answer) == 503 and closed is not None, answer
        assert refusals(bounded, "body_bytes_in_flight") == refused_before + 5
    finally:
        for sock in uploads:
            sock.close()
    deadline = time.monotonic() + 5
    while True:  # the room is given back: a whole body is read and handed on (not 503)
        sock = connect(bounded)
        try:
            sock.sendall(upload_head(1000) + b" " * 1000)
            answer = read_to_end(sock, seconds=10)[0]
        finally:
            sock.close()
        if status_of(answer) not in (503, None) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert status_of(answer) not in (503, None), answer


def test_a_replacement_that_fails_to_start_is_retried_until_the_pool_is_back(monkeypatch: Any):
    """Starting a replacement fails twice with OSError (no file descriptor left, say): it is retried after a
    backoff and the pool comes back to one compute process."""
    original = ComputeProcess.start
    failures: list[float] = []

    async def flaky_start(settings: Settings, target: Any) -> ComputeProcess:
        if len(failures) < 2:
            failures.append(time.monotonic())
            raise OSError(24, "Too many open files")
        return await original(settings, target)

    async def scenario() -> None:
        settings = Settings(max_concurrent=1, max_queue=1, request_timeout_s=30.0)
        pool = ComputePool(settings, target=serve)
        await pool.start()
        try:
            monkeypatch.setattr(ComputeProcess, "start", staticmethod(flaky_start))
            next(iter(pool.processes)).process.kill()
            deadline = time.monotonic() + 30
            while not (pool.up == 1 and len(failures) == 2):
                assert time.monotonic() < deadline, f"{pool.up} processes after {len(failures)} failures"
                await asyncio.sleep(0.05)
        finally:
            await pool.shutdown()

    asyncio.run(scenario())
    assert failures[1] - failures[0] >= 0.4  # a backoff, not a tight loop


@pytest.mark.slow
def test_after_a_refusal_a_client_that_keeps_sending_is_not_read_on(server: Server):
    """After its 431 a client that keeps writing megabytes is drained for at most LINGER_BYTES, then no longer
    read: its writes block (the kernel's buffers fill) instead of the event loop reading a loopback's worth
    of bytes a second until the linger closes it."""
    sock = connect(server)
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: test\r\nX-Huge: " + b"a" * (MAX_HEADER_BYTES + 1024))
    sock.setblocking(False)
    sent, chunk, deadline = 0, b"a" * 2**20, time.monotonic() + 0.8
    while time.monotonic() < deadline:  # within the linger: the connection is still open
        try:
            sent += sock.send(chunk)
        except BlockingIOError:
            time.sleep(0.01)
        except OSError:
            break
    sock.close()
    assert sent < 32 * 2**20, f"the server read on: {sent / 2**20:.0f} MiB taken after the refusal"
