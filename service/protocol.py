"""The socket between the server process and a compute process: its frames, the start-up report, and the
compute process's entry point (kept here, light, so that the server process never imports torch).

A request is REQUEST (the body's length) then the body; an answer is ANSWER (HTTP status, length) then the
body. The first answer, sent once before any request, is the start-up report: 200 with Started as JSON, or 503
with {"detail": why} when a model cannot be served.
"""

from __future__ import annotations

import socket
import struct
import time
from typing import Any, TypedDict

from service.settings import Settings

# the request's deadline on time.monotonic()'s clock, which all processes of a host share (a process skips a
# request whose deadline has passed before it starts it: the server has answered it 504), and its body length
REQUEST = struct.Struct("!dQ")
EXPIRED = b'{"detail": "the request\'s time limit passed before a compute process could start it"}'
ANSWER = struct.Struct("!HQ")  # HTTP status, body length


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
