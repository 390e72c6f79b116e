"""The time limit of a batched pass, driven with asyncio against stub compute processes that compute in
passes (tests/support/stub_compute.py serve_passes): when the first request of a pass runs past its time
limit, it alone fails (504) and its process is killed; the other requests of the pass, not answered, are
computed again by the replacement within their own time and answered."""

from __future__ import annotations

import asyncio
import time

import pytest

from service.errors import TimedOut
from service.server.compute_pool import ComputePool
from service.settings import Settings
from tests.support.stub_compute import serve_passes

LIMIT = 3.0  # seconds, every request's time limit


def test_a_request_past_its_limit_in_a_pass_fails_alone_and_the_others_are_answered_within_theirs():
    async def scenario() -> None:
        replaced: list[str] = []
        sizes: list[int] = []
        settings = Settings(
            max_concurrent=1, max_queue=4, request_timeout_s=LIMIT, batch_window_ms=2, batch_max_requests=4
        )
        pool = ComputePool(settings, on_replace=replaced.append, target=serve_passes, on_batch=sizes.append)
        await pool.start()
        try:
            started = time.perf_counter()
            # the first waits 2.5 s for others to join its pass, which then lasts 30 s: far past its limit
            first = asyncio.ensure_future(pool.run(b"pass:30:2.5"))
            await asyncio.sleep(2.0)
            # two more join it 2 s later: their own limits end 2 s after the first's
            later = [asyncio.ensure_future(pool.run(b"pass:0.1:0")) for _ in range(2)]
            await asyncio.sleep(0.8)  # the pass has started: the three computed together, one place
            (process,) = pool.processes
            assert process.computing_beside_first(pool.admitted) == 2
            with pytest.raises(TimedOut):
                await first
            assert LIMIT <= time.perf_counter() - started < LIMIT + 1
            held = await asyncio.gather(*later)
            assert [(answer.status, answer.content) for answer in held] == [(200, b"slept")] * 2
            assert time.perf_counter() - started < 2.0 + LIMIT  # each within its own limit
            for answer in held:
                answer.release()
            assert replaced == ["timeout"]  # the process computing the pass was killed, once
            assert (
                sum(sizes) == 2
            )  # the killed pass noted nothing; the two were computed again, by the new one
            assert len(pool.admitted) == 0
        finally:
            await pool.shutdown()

    asyncio.run(scenario())
