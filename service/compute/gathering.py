"""The requests the server sends on a compute process's socket (service/protocol.py REQUEST then the body),
read one at a time or gathered within a window: dynamic batching (batching.py) waits a few milliseconds after
a request for others to compute with it. Reading from the socket itself, not a buffered file, is what lets a
wait end when the window does (select sees only what the kernel holds, not a file object's buffer)."""

from __future__ import annotations

import select
import socket
import time
from dataclasses import dataclass

from service.protocol import REQUEST, ResponseFormat

RECEIVE_BYTES = 2**20


@dataclass(frozen=True)
class Sent:
    """A request as the server sent it: its number (its ticket's), deadline, kind, response format, company
    (other requests were waiting or computing in the service when it was sent), body, and when it came
    (time.perf_counter(): meta's elapsed_ms counts from there)."""

    number: int
    deadline: float
    kind: int
    media: ResponseFormat
    company: bool
    body: bytes
    came: float


class Requests:
    """The server's requests in the order it sent them. `next` returns None once the server has closed the
    socket (`closed` is then True) or, with a timeout, when no request came within it."""

    def __init__(self, channel: socket.socket):
        self.channel = channel
        self.buffer = bytearray()
        self.numbered = 0  # requests read so far: the next one's number
        self.closed = False

    def _receive(self, timeout: float | None) -> bool:
        """What the socket holds, waiting at most `timeout` seconds (None: until something comes); False when
        nothing came in time or the server closed the socket."""
        if timeout is not None and not select.select([self.channel], [], [], max(0.0, timeout))[0]:
            return False
        chunk = self.channel.recv(RECEIVE_BYTES)
        if not chunk:
            self.closed = True
            return False
        self.buffer += chunk
        return True

    def next(self, timeout: float | None = None) -> Sent | None:
        """The next request, waiting for its head at most `timeout` seconds (None: as long as it takes); its
        body follows its head at once, so it is read whole however long it takes."""
        until = None if timeout is None else time.monotonic() + timeout
        while len(self.buffer) < REQUEST.size:
            left = None if until is None else max(0.0, until - time.monotonic())  # 0: what is there
            if self.closed or not self._receive(left):
                return None
        deadline, kind, media, company, length = REQUEST.unpack_from(self.buffer)
        end = REQUEST.size + length
        while len(self.buffer) < end:
            if not self._receive(None):
                return None  # the server went away in the middle of a request
        body = bytes(self.buffer[REQUEST.size : end])
        del self.buffer[:end]
        number, self.numbered = self.numbered, self.numbered + 1
        return Sent(number, deadline, kind, ResponseFormat(media), company, body, time.perf_counter())

    def within(self, seconds: float, most: int) -> list[Sent]:
        """Up to `most` requests that come within `seconds` (those already sent first, without waiting)."""
        gathered: list[Sent] = []
        until = time.monotonic() + seconds
        while len(gathered) < most and (sent := self.next(until - time.monotonic())) is not None:
            gathered.append(sent)
        return gathered
