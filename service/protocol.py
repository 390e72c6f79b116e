"""The socket between the server process and a compute process: its frames, the start-up report, and the
compute process's entry point (kept here, light, so that the server process never imports torch).

A request is REQUEST (its deadline, the response format, the body's length) then the body; an answer is one
or more frames, each ANSWER (HTTP status, whether it is the last, length) then its bytes. A format sent in
one piece is one frame; a stream (NDJSON) is a frame per line as it is computed, then an empty last frame (or
a last frame holding the line that says why it failed). The status is the first frame's. The first answer,
sent once before any request, is the start-up report: one frame, 200 with Started as JSON, or 503 with
{"detail": why} when a model cannot be served.
"""

from __future__ import annotations

import socket
import struct
import time
from typing import Any, TypedDict

from service.settings import Settings

# the request's deadline on time.monotonic()'s clock, which all processes of a host share (a process skips a
# request whose deadline has passed before it starts it: the server has answered it 504), the response
# format (an index of MEDIA_TYPES) and the body's length
REQUEST = struct.Struct("!dBQ")
EXPIRED = b'{"detail": "the request\'s time limit passed before a compute process could start it"}'
ANSWER = struct.Struct("!H?Q")  # HTTP status, last frame of the answer, length
Frame = tuple[int, bytes, bool]  # HTTP status, bytes, last

# the response formats, by the code REQUEST carries: their media types
MEDIA_TYPES = ("application/json", "application/x-safetensors", "application/x-ndjson")
JSON, SAFETENSORS, NDJSON = range(len(MEDIA_TYPES))


class Started(TypedDict):
    pid: int
    device: str
    torch_version: str
    torch_threads: int
    models: list[dict[str, Any]]  # service.compute.models.registry.ModelRegistry.describe()


def expired(deadline: float) -> bool:
    return time.monotonic() > deadline


def compute_process(channel: socket.socket, settings: Settings) -> None:
    """The compute process's main function (see service/compute/process.py)."""
    from service.compute.process import serve

    serve(channel, settings)
