"""Which waiting request a compute process gets next (service/server/compute_pool.py), by client address: a
client whose requests take long (a heavy stream, an 80 MB answer) must not make every other client's short
requests wait behind all of its own. First come, first served, with one compute process (compose's default),
had a well-behaved client's request wait behind every heavy request sent before it (the hostile bench: ten at
once, several seconds).

Each client address has the time its requests take to compute, measured (an average that follows the latest
ones; a client not yet measured counts as UNKNOWN_COST_S). A waiting request's turn is when it came plus DEFER
times that: a short request goes about first come, first served, and a long one lets the short ones that come
within twice its own time go first, never more (it is not starved). And a request is sent to a process that is
computing another, to wait there (so that the process goes from one to the next at once, or computes several
in one pass: dynamic batching), only when its client's requests take at most `send_ahead_s`
(ATTENTION_SEND_AHEAD_REQUEST_S, 50 ms by default), or when no other client has sent one within RECENT_S (a
client alone is served as before); any other waits here until a process is free, where the short requests that
come meanwhile go before it. So a short request waits for the one long request being computed, not for every
one queued.

A light lane (ATTENTION_LIGHT_PROCESSES, compute_pool.py) is a compute process that takes only the requests of
clients whose requests were measured to take at most `light_s` (ATTENTION_LIGHT_REQUEST_S): with one compute
process, a short request still waited for the long one being computed (a computation is not interrupted), 0.65
to over 1 s for an 80 MB answer, and with a few such requests a second that made the well-behaved clients'
p99. A client not yet measured is not light: its first request may be heavy."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable
from typing import Generic, Protocol, TypeVar

UNKNOWN_COST_S = 0.1
DEFER = 2.0
RECENT_S = 2.0
FOLLOW = 0.5  # the weight of a client's latest request in its average
REMEMBERED = 4096  # client addresses whose cost is kept; the longest unmeasured are forgotten first


class Queued(Protocol):
    @property
    def client(self) -> str: ...


J = TypeVar("J", bound=Queued)


class FairQueue(Generic[J]):
    def __init__(self, light_s: float, send_ahead_s: float, clock: Callable[[], float] = time.monotonic):
        self.light_s = light_s  # a client whose requests take at most this is served by a light lane too
        self.send_ahead_s = send_ahead_s  # and one whose requests take at most this, sent to a busy process
        self.clock = clock
        self.turns: dict[J, tuple[int, float, int]] = {}  # waiting: (0 put back, 1 new), turn, order
        self.costs: dict[str, float] = {}  # seconds a request of this client takes to compute
        self.seen: dict[str, float] = {}  # when each client last sent a request, within RECENT_S
        self.order = itertools.count()

    def cost(self, client: str) -> float:
        return self.costs.get(client, UNKNOWN_COST_S)

    def append(self, job: J) -> None:
        now = self.clock()
        self.turns[job] = (1, now + DEFER * self.cost(job.client), next(self.order))
        self.seen.pop(job.client, None)
        self.seen[job.client] = now  # in the order they were seen: the oldest first
        for client, when in list(self.seen.items()):
            if when >= now - RECENT_S:
                break
            del self.seen[client]

    def alone(self, client: str) -> bool:
        """Whether no other client has sent a request within RECENT_S."""
        now = self.clock()
        return all(other == client or when < now - RECENT_S for other, when in self.seen.items())

    def extendleft(self, jobs: Iterable[J]) -> None:
        """Puts `jobs` back before all others (a process died with them sent to it), the last first, as
        deque.extendleft does: their turn came already."""
        for job in jobs:
            self.turns[job] = (0, 0.0, -next(self.order))

    def remove(self, job: J) -> None:
        del self.turns[job]

    def __contains__(self, job: object) -> bool:
        return job in self.turns

    def __len__(self) -> int:
        return len(self.turns)

    def light(self, client: str) -> bool:
        """Whether `client`'s requests were measured to take at most `light_s` (a light lane's)."""
        known = self.costs.get(client)
        return known is not None and known <= self.light_s

    def take(self, busy: bool, only: Callable[[J], bool] | None = None) -> J | None:
        """The next job for a process, taken out of the queue: the one whose turn comes first, or, for a
        process that computes (`busy`), the first of those whose client's requests are short, or whose client
        is alone, or that were put back; None if none may go. A light lane takes `only` the jobs it may."""
        eligible = [
            (turn, job)
            for job, turn in self.turns.items()
            if (only is None or only(job))
            and (
                not busy
                or turn[0] == 0
                or self.cost(job.client) <= self.send_ahead_s
                or self.alone(job.client)
            )
        ]
        if not eligible:
            return None
        _, job = min(eligible, key=lambda entry: entry[0])
        del self.turns[job]
        return job

    def measured(self, client: str, seconds: float) -> None:
        """A request of `client` took `seconds` to compute."""
        known = self.costs.pop(client, None)
        self.costs[client] = seconds if known is None else known + FOLLOW * (seconds - known)
        if len(self.costs) > REMEMBERED:
            del self.costs[next(iter(self.costs))]
