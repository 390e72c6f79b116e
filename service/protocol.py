"""The socket between the server process and a compute process: its frames, the start-up report, the tickets
and the response formats' codes. Both sides import it; it imports neither (a compute process starts in
service/compute/entry.py).

A request is REQUEST (its kind, ATTEND or OIP_INFER, the response format, its company, the body's length) then
the body; an answer is one or more frames, each ANSWER (HTTP status, whether it is the last, length) then its
bytes. A format sent in one piece is one frame; a stream (NDJSON, only for ATTEND) is a frame per line as it
is computed, then an empty last frame (or a last frame holding the line that says why it failed). The status
is the first frame's. OIP_INFER is always answered in one frame. The first answer, sent once before any
request, is the start-up report: one frame, 200 with Started as JSON, or 503 with {"detail": why} when a model
cannot be served. Between two answers a compute process may send a BATCH_NOTE frame, which answers no request.

Each request comes with a ticket (Tickets): the compute process computes a request only if it takes its ticket
first; the server takes it back to cancel a request whose client left. A request that is not computed is
answered in one frame at once (`skipped`): CANCELLED when its ticket was taken back, EXPIRED when its deadline
passed.
"""

from __future__ import annotations

import socket
import struct
import time
from enum import IntEnum
from typing import Any, TypedDict

from service.stops import Stops

# the request's deadline on time.monotonic()'s clock, which all processes of a host share (a process skips a
# request whose deadline has passed before it starts it: the server has answered it 504), its kind, the
# response format (an index of MEDIA_TYPES), whether other requests were waiting or computing in the service
# when it was sent (its company: a request alone does not wait for others to batch with, batching.py) and the
# body's length
REQUEST = struct.Struct("!dBB?Q")
ATTEND = 0  # the body of POST /attend
OIP_INFER = 1  # OIP_PRELUDE, the model name, then the body of POST /v2/models/{name}/infer
OIP_PRELUDE = struct.Struct("!QH")  # the length of the infer body's JSON header, the model name's length
OIP_ANSWER = struct.Struct("!Q")  # before a 200 answer to OIP_INFER: the length of its JSON header
EXPIRED = b'{"detail": "the request\'s time limit passed before a compute process could start it"}'
# the answer to a request whose ticket the server took back (its client left): the server drops it
CANCELLED_STATUS = 499  # nginx's "client closed request"; never sent to a client
CANCELLED = b'{"detail": "the client left before a compute process started its request"}'
TICKET = b"t"
# a frame between two answers that belongs to no request: the number of requests the compute process is about
# to answer from one forward pass, as text (dynamic batching: service/compute/batching.py); not an HTTP status
BATCH_NOTE = 0
ANSWER = struct.Struct("!H?Q")  # HTTP status, last frame of the answer, length
Frame = tuple[int, bytes, bool]  # HTTP status, bytes, last


class ResponseFormat(IntEnum):
    """A response format, by the code REQUEST carries; MEDIA_TYPES[format] is its media type."""

    JSON = 0
    SAFETENSORS = 1
    NDJSON = 2


MEDIA_TYPES = ("application/json", "application/x-safetensors", "application/x-ndjson")


class Started(TypedDict):
    pid: int
    device: str
    torch_version: str
    threads_in_use: int  # torch.get_num_threads() there (the setting torch_threads is what was asked)
    models: list[dict[str, Any]]  # service.compute.models.registry.ModelRegistry.describe()


def expired(deadline: float) -> bool:
    return time.monotonic() > deadline


class Tickets:
    """Who decides whether a request already sent to a compute process is computed once its client has left.

    Each request comes with a ticket, a byte that the server puts in a socket's queue before it sends the
    request; the compute process takes it to start the request, the server takes it back to cancel a request
    whose client left. The kernel hands the byte to one of them only, so a request is either computed (the
    server then counts it as computing) or skipped, never both and never neither, and no lock is held that a
    process killed at any moment could leave taken. The n-th request sent to a process (from 0) has its ticket
    in queue n % len(queues): a process holds at most that many requests, and a request's ticket is taken
    before the request that many later is sent (the process takes it before it answers)."""

    def __init__(self, count: int):
        pairs = [socket.socketpair() for _ in range(count)]
        self.senders = [sender for sender, _ in pairs]  # the server's alone
        self.queues = [queue for _, queue in pairs]  # each ticket waits at this end, for whoever takes it
        self.stops = Stops()  # and a request started, whether it goes on (service/stops.py)

    def __getstate__(self) -> dict[str, Any]:
        """What a compute process gets (its sockets duplicated when it is spawned): queues and stops."""
        return {"senders": [], "queues": self.queues, "stops": self.stops}

    def issue(self, number: int) -> None:
        """Request `number`'s ticket, before the request is sent (its queue is empty: it never blocks)."""
        self.senders[number % len(self.senders)].send(TICKET)

    def take(self, number: int) -> bool:
        """Takes request `number`'s ticket: True if it was still there, False if the other side took it."""
        try:
            return self.queues[number % len(self.queues)].recv(1, socket.MSG_DONTWAIT) == TICKET
        except BlockingIOError:
            return False

    def waiting(self, number: int) -> bool:
        """Whether request `number`'s ticket is still in its queue (nobody took it); it stays there."""
        try:
            return (
                self.queues[number % len(self.queues)].recv(1, socket.MSG_DONTWAIT | socket.MSG_PEEK)
                == TICKET
            )
        except BlockingIOError:
            return False

    def close(self) -> None:
        for end in (*self.senders, *self.queues):
            end.close()


def skipped(tickets: Tickets, number: int, deadline: float) -> Frame | None:
    """The one-frame answer of a compute process to its request `number`, which it must not compute: the
    server took its ticket back, or its deadline passed (the server has answered it 504); None (its ticket
    taken) to compute it."""
    if not tickets.take(number):
        return CANCELLED_STATUS, CANCELLED, True
    if expired(deadline):
        return 504, EXPIRED, True
    return None
