"""A compute process's frames (service/compute/process.py _send): a small frame leaves in one send, so that
the server's event loop is woken once per small answer (issue 26), and a large one is sent without being
copied to join its head; the server reads both as the protocol says (service/protocol.py ANSWER)."""

from __future__ import annotations

import socket
import threading

import pytest

from service.compute.process import JOINED_FRAME_BYTES, _send
from service.protocol import ANSWER


class Recorder(socket.socket):
    """A socket that remembers what each sendall was given."""

    def __init__(self, fileno: int) -> None:
        super().__init__(fileno=fileno)
        self.sends: list[bytes] = []

    def sendall(self, data: object, flags: int = 0) -> None:
        assert isinstance(data, bytes)
        self.sends.append(data)
        super().sendall(data, flags)


def _read_frame(end: socket.socket) -> tuple[int, bool, bytes]:
    def exactly(size: int) -> bytes:
        chunks, got = [], 0
        while got < size:
            chunk = end.recv(size - got)
            assert chunk, "the socket closed mid-frame"
            chunks.append(chunk)
            got += len(chunk)
        return b"".join(chunks)

    status, last, length = ANSWER.unpack(exactly(ANSWER.size))
    return status, last, exactly(length)


@pytest.mark.parametrize("size", [0, 1_926, JOINED_FRAME_BYTES])
def test_a_small_frame_is_one_send(size: int) -> None:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        sender = Recorder(ours.detach())
        with sender:
            body = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
            _send(sender, 200, body, last=False)
            assert len(sender.sends) == 1
            assert _read_frame(theirs) == (200, False, body)


def test_a_large_frame_is_its_head_then_its_body_uncopied() -> None:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        sender = Recorder(ours.detach())
        with sender:
            body = b"y" * (JOINED_FRAME_BYTES + 1)
            theirs.settimeout(10)
            frames: list[tuple[int, bool, bytes]] = []
            # read meanwhile: a frame over the socket's buffer is sent only as it is read
            reader = threading.Thread(target=lambda: frames.append(_read_frame(theirs)))
            reader.start()
            _send(sender, 503, body)
            reader.join()
            assert [len(sent) for sent in sender.sends] == [ANSWER.size, len(body)]
            assert sender.sends[1] is body
            assert frames == [(503, True, body)]
