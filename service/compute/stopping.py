"""A request's frames until the server asks to stop it (service/stops.py): its client left, or its stream's
unread lines outgrew their room. A stream is a frame per line (per megabyte of a long line), each computed
when the one before has been sent, so between two frames the rest of the computation can be dropped: its
generator is closed where it is, and the answer ends with an empty last frame, which the server drops as it
drops every frame of an answer nobody reads. An answer in one piece is one frame: computed whole."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from service.protocol import CANCELLED_STATUS, Frame, Tickets


def until_stopped(frames: Iterable[Frame], tickets: Tickets, number: int) -> Iterator[Frame]:
    """`frames`, the answer to request `number`, ended early when the server asks."""
    for frame in frames:
        yield frame
        if frame[2]:  # its last
            return
        if tickets.stops.stopped(number):
            close = getattr(frames, "close", None)  # a generator's: the computation stops where it is
            if close is not None:
                close()
            yield CANCELLED_STATUS, b"", True
            return
