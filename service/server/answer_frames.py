"""The server's end of a compute process's socket: its answer frames (service/protocol.py ANSWER then the
bytes), read as their bytes come and each handed on from the event loop's read callback itself.

A StreamReader wakes the task that reads it a turn of the event loop after the bytes come (a future's callback
is called on the next turn, and each turn is a select system call and the loop's own work), and a frame took
two awaits (its head, then its body): a small request's hand-off paid that once per answer (issue 26). Here a
frame's handler runs as soon as its last byte is read.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from service.errors import ComputeProcessDied
from service.protocol import ANSWER, Frame

# a frame's status, content (None: dropped, it did not fit the room), whether it is the last, its length
FrameHandler = Callable[[int, bytes | None, bool, int], None]


def died() -> ComputeProcessDied:
    return ComputeProcessDied(
        "the compute process stopped while computing this request; it is being replaced, retry shortly"
    )


class AnswerFrames(asyncio.Protocol):
    """A compute process's frames. The first, its start-up report, resolves `report`; the others go to the
    handler given to `listen` (those that come before it wait for it). A last frame of more than `room()`
    bytes, once its head comes (an answer in one piece that does not fit the room left for answers), is
    dropped as its bytes come, never held whole: its content is None. The end of the socket (the process
    ended or was stopped) is told once, to `listen`'s `on_lost` (or `report` fails, before it came)."""

    def __init__(self) -> None:
        self.report: asyncio.Future[Frame] = asyncio.get_running_loop().create_future()
        self.room: Callable[[], int] | None = None  # set by the handler for the frame after the one it got
        self.buffer = bytearray()
        self.head: tuple[int, bool, int] | None = None  # of the frame whose bytes are coming
        self.keep = True  # whether that frame is kept (else dropped: it does not fit the room)
        self.left = 0  # of its bytes, still to come
        self.on_frame: FrameHandler | None = None
        self.on_lost: Callable[[], None] | None = None
        self.early: list[tuple[int, bytes | None, bool, int]] = []  # frames before `listen`
        self.lost = False

    def listen(self, on_frame: FrameHandler, on_lost: Callable[[], None]) -> None:
        """Hands every frame after the report to `on_frame` from now on, and the socket's end to `on_lost`."""
        self.on_frame, self.on_lost = on_frame, on_lost
        early, self.early = self.early, []
        for frame in early:
            on_frame(*frame)
        if self.lost:
            on_lost()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while self._next_frame():
            pass

    def _next_frame(self) -> bool:
        """Reads the head or the bytes of the frame under way from the buffer; True when it can go on."""
        buffer = self.buffer
        if self.head is None:
            if len(buffer) < ANSWER.size:
                return False
            status, last, length = self.head = ANSWER.unpack_from(buffer)
            del buffer[: ANSWER.size]
            self.keep = not (last and self.room is not None and length > self.room())
            self.left = length
        status, last, length = self.head
        if self.keep:
            if len(buffer) < length:
                return False
            content: bytes | None = bytes(memoryview(buffer)[:length])  # one copy (a slice is another)
            del buffer[:length]
        else:
            dropped = min(self.left, len(buffer))
            del buffer[:dropped]
            self.left -= dropped
            if self.left:
                return False
            content = None
        self.head = None
        self._hand_on(status, content, last, length)
        return True

    def _hand_on(self, status: int, content: bytes | None, last: bool, length: int) -> None:
        if not self.report.done():
            assert content is not None  # no room is set before the report
            self.report.set_result((status, content, last))
        elif self.on_frame is None:
            self.early.append((status, content, last, length))
        else:
            self.on_frame(status, content, last, length)

    def eof_received(self) -> bool:
        return False  # the transport closes: connection_lost

    def connection_lost(self, exc: Exception | None) -> None:
        if self.lost:
            return
        self.lost = True
        if not self.report.done():
            self.report.set_exception(died())
            self.report.exception()  # retrieved: a start given up must not log it as never retrieved
        elif self.on_lost is not None:
            self.on_lost()
