"""Pipelined requests paced per client address: a client that sends its next request before it has read the
answer to the one before (HTTP/1.1 pipelining) has those requests started at most ATTENTION_PIPELINED_PER_S a
second (100 by default), after a burst of ATTENTION_PIPELINED_BURST (16), over all its connections. A
pipelining flood of tiny requests (GET /healthz written without end, the answers never read) otherwise had
them answered as fast as the event loop could, a core's worth of the server's one event loop for as long as
the client's socket buffers took the answers (megabytes: tens of thousands of answers), and every other
client's requests waited behind them. A client that reads each answer before it sends the next request (as
HTTP clients do) is never paced.

A generic cell rate algorithm: for each address the time its next request would be due at the rate
(`due`), at most the burst's worth ahead of now; an address whose due time has passed holds nothing and is
forgotten."""

from __future__ import annotations

from functools import lru_cache

FORGET_AFTER = 1024  # addresses remembered before those that are due are forgotten


class Pacing:
    def __init__(self, per_second: float, burst: int):
        self.interval = 1.0 / per_second
        self.ahead = (burst - 1) * self.interval  # how far ahead of now an address's due time may run
        self.due: dict[str, float] = {}

    def wait(self, client: str, now: float) -> float:
        """Seconds before `client`'s next pipelined request may start; 0 when it may start now (counted)."""
        due = max(self.due.get(client, now), now)
        if due - now > self.ahead:
            return due - now - self.ahead
        self.due[client] = due + self.interval
        if len(self.due) > FORGET_AFTER:
            self.due = {address: time for address, time in self.due.items() if time > now}
        return 0.0


@lru_cache
def shared(per_second: float, burst: int) -> Pacing:
    """The pacing of every connection of this process served at this rate (service/server/http_protocol.py:
    one app, one rate)."""
    return Pacing(per_second, burst)
