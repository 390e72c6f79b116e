"""A stream nobody will read stops being computed (issue 21): a client that asks for a heavy NDJSON stream and
stops reading gets its stream cut once its unread lines outgrow its share of the room for unread answers; the
compute process then stops computing it between two lines instead of computing the rest for nobody (the
hostile bench's stalled streams computed 250 MB of JSON each for nobody, while every other client waited for
the one compute process). Measured from outside: the compute process's CPU seconds (/proc) for the stalled
stream against the same stream read whole, on a real server with MiniLM and raw sockets from 127.0.0.2 and
127.0.0.3."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from devtools.servers import Server
from tests.server.test_hostile_streams import GOLDEN, NDJSON, read_to_end, stalled_stream

# 510 tokens over MiniLM's 6 layers with their weights: a line of about 40 MB per layer, 250 MB in all
HEAVY = orjson.dumps({"text": " ".join(["word"] * 510), "layer": "all", "include": ["weights"]})


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    env = {
        "ATTENTION_MAX_CONCURRENT": "1",
        "ATTENTION_REQUEST_TIMEOUT_S": "120",
    }
    with Server(env, quiet=True) as srv:
        yield srv


def compute_process(server: Server) -> int:
    """The server's compute process (spawned by multiprocessing; the other child is its resource tracker)."""
    tasks = Path(f"/proc/{server.process.pid}/task").iterdir()  # a child belongs to the thread that made it
    children = [child for task in tasks for child in (task / "children").read_text().split()]
    computing = [
        pid for pid in map(int, children) if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()
    ]
    assert len(computing) == 1, computing
    return computing[0]


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process, all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def connect(server: Server, address: str) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=120, source_address=(address, 0))


def posted(server: Server, address: str, body: bytes) -> bytes:
    """The whole answer, head and body, to `body` POSTed to /attend from `address`, asserted 200."""
    with connect(server, address) as sock:
        sock.sendall(
            b"POST /attend HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nConnection: close\r\n"
            + b"Content-Length: %d\r\n\r\n" % len(body)
            + body
        )
        answer = bytearray()
        while piece := sock.recv(2**20):
            answer += piece
    assert answer.startswith(b"HTTP/1.1 200"), bytes(answer[:300])
    return bytes(answer)


def answered(server: Server, address: str, body: bytes) -> float:
    """Seconds until `body`, sent from `address`, is answered 200 in full."""
    started = time.monotonic()
    posted(server, address, body)
    return time.monotonic() - started


def golden_from(server: Server, address: str) -> None:
    """The worked example from `address`, answered 200: then the process is done with what came before."""
    answered(server, address, GOLDEN)


def read_whole_stream(server: Server, address: str) -> bytes:
    with connect(server, address) as sock:
        sock.sendall(
            b"POST /attend HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nAccept: "
            + NDJSON
            + b"\r\nContent-Length: %d\r\n\r\n" % len(HEAVY)
            + HEAVY
        )
        return read_to_end(sock)


def whole_stream_cpu_seconds(server: Server, pid: int) -> float:
    """The compute process's CPU seconds for HEAVY's stream read whole (and the worked example after it)."""
    golden_from(server, "127.0.0.3")  # warm: the model's first pass
    before = cpu_seconds(pid)
    lines = read_whole_stream(server, "127.0.0.3").splitlines()
    # the first line, then a line for each layer
    assert len(lines) == 1 + 6 and all(b'"error"' not in line for line in lines)
    golden_from(server, "127.0.0.3")
    return cpu_seconds(pid) - before


@pytest.mark.slow
def test_a_stream_cut_for_its_unread_lines_stops_being_computed(server: Server):
    pid = compute_process(server)
    whole = whole_stream_cpu_seconds(server, pid)

    before = cpu_seconds(pid)
    stalled, _ = stalled_stream(server, HEAVY, address="127.0.0.2")
    try:
        started = time.monotonic()
        golden_from(server, "127.0.0.3")  # behind the stalled stream, from another client
        behind = time.monotonic() - started
        cut = cpu_seconds(pid) - before
    finally:
        stalled.close()
    # the stream is cut once its unread lines pass its client's share (64 MiB: within its second layer's
    # line), and stopped there: about a third of what the whole stream costs, as it cost computed to its end
    assert cut < whole / 2, f"the stalled stream cost {cut:.2f} CPU s, the whole stream {whole:.2f}"
    assert server.client.get("/readyz").status_code == 200
    print(f"whole stream {whole:.2f} CPU s; stalled and cut {cut:.2f} CPU s; the next request {behind:.2f} s")


@pytest.mark.slow
def test_a_stream_whose_client_hangs_up_stops_being_computed(server: Server):
    """A client that reads the head of its stream and hangs up: the stream's delivery fails, and its
    computation stops at its next line instead of running to its end."""
    pid = compute_process(server)
    whole = whole_stream_cpu_seconds(server, pid)
    before = cpu_seconds(pid)
    leaving, _ = stalled_stream(server, HEAVY, address="127.0.0.2")
    leaving.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    leaving.close()  # a reset: the server's next send fails
    golden_from(server, "127.0.0.3")
    left = cpu_seconds(pid) - before
    assert left < whole / 2, f"the abandoned stream cost {left:.2f} CPU s, the whole stream {whole:.2f}"
    print(f"whole stream {whole:.2f} CPU s; abandoned after its head {left:.2f} CPU s")
