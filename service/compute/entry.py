"""Where a compute process starts: the function the server process spawns (service/server/compute_pool.py)
and the start of the Ray replica's compute thread. Light on purpose: the server process imports this module to
name the spawned function, and torch, transformers and the models are imported only inside the new process."""

from __future__ import annotations

import os
import socket
from typing import TYPE_CHECKING

from service.protocol import Tickets
from service.settings import Settings

if TYPE_CHECKING:
    from service.compute.models.registry import ModelRegistry
    from service.protocol import Started


def compute_process(channel: socket.socket, tickets: Tickets, settings: Settings) -> None:
    """The compute process's main function (service/compute/process.py serve)."""
    # before torch loads its OpenMP runtime: a torch thread waiting for work sleeps rather than spins, unless
    # the operator chose otherwise. On a host with more threads than free cores a spinning thread takes the
    # core its partner needs (measured, docs/operations.md: summaries of 2k tokens, 2 threads on a loaded
    # 2-core host: 27 CPU-s and 55 s spinning, 4 CPU-s and 7 s passive)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from service.compute.process import serve

    serve(channel, tickets, settings)


def start_in_this_process(settings: Settings) -> tuple[ModelRegistry, Started]:
    """The models and the start-up report of a compute process, computed in this one (the Ray replica's
    compute thread): service/compute/process.py start."""
    from service.compute.process import start

    return start(settings)
