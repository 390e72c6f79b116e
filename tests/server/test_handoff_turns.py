"""What handing a small request to a compute process and back costs the server's event loop (issue 26),
counted rather than timed: the turns of the loop (each one a select/epoll_wait system call and the loop's own
work) from a request's sending to its `run` returning the answer. One compute process of the real protocol
(service/protocol.py) that answers at once (bench/instant.py answer_at_once), requests one after the other, so
that each waits for its answer once: the turn that wakes on the answer, then one per hop from the answer's
bytes to the awaiting `run`."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from bench.instant import answer_at_once
from service.server.compute_pool import ComputePool
from service.settings import Settings

BODY = json.dumps({"embeddings": [[1.0, 0.0], [0.0, 1.0]]}).encode()
REQUESTS = 50


async def _turns_per_request() -> float:
    settings = Settings(max_concurrent=1, light_processes=0, batch_window_ms=0)
    pool = ComputePool(settings, target=answer_at_once)
    await pool.start()
    selector: Any = asyncio.get_running_loop()._selector  # type: ignore[attr-defined]
    select, turns = selector.select, []

    def counted(timeout: float | None = None) -> Any:
        turns.append(timeout)
        return select(timeout)

    try:
        for _ in range(3):  # the first requests' one-off costs
            (await pool.run(BODY)).release()
        selector.select = counted
        for _ in range(REQUESTS):
            held = await pool.run(BODY)
            assert held.status == 200
            held.release()
    finally:
        selector.select = select
        await pool.shutdown()
    return len(turns) / REQUESTS


def test_an_answer_reaches_its_waiting_run_within_two_turns_of_the_event_loop_after_it_comes():
    """The turn that reads the answer's frame, and the one that resumes `run`: not a third to go from the
    answer's future to what `run` waits on (a done callback is called a turn later)."""
    assert asyncio.run(_turns_per_request()) <= 3.0
