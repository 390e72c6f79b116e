"""Which request, already started by a compute process, the server asks it to stop (service/protocol.py
Tickets carries it): one whose answer nobody will read, because its client left or its stream's unread lines
outgrew their room (service/server/compute_pool.py). A ticket decides whether a request starts; this decides
whether one under way goes on, so that a stream cut after its first lines does not compute the rest for
nobody while other clients wait for the process.

One number in shared memory, written by the server and read by the compute process between two frames of an
answer (service/compute/stopping.py): a process computes one request at a time and numbers them as the server
sends them, so a number that is not the one it computes (an earlier request, stopped after it ended) is never
mistaken for it, and no lock is held that a process killed at any moment could leave taken."""

from __future__ import annotations

import multiprocessing
from typing import Any

NONE = -1


class Stops:
    def __init__(self) -> None:
        # spawn's: a compute process is spawned (service/server/compute_pool.py), and gets this memory then
        self.asked: Any = multiprocessing.get_context("spawn").RawValue("q", NONE)

    def stop(self, number: int) -> None:
        """Asks the process to stop request `number` (the server's side)."""
        self.asked.value = number

    def stopped(self, number: int) -> bool:
        """Whether the server asked to stop request `number` (the compute process's side)."""
        return bool(self.asked.value == number)
