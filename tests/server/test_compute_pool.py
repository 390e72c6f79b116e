"""The compute pool and its admission gate, driven directly with asyncio against stub compute processes
(tests/support/stub_compute.py: no torch, no HTTP), so that every outcome is reached deterministically:
answered, refused (Overloaded), timed out (the process killed and replaced), died (the job behind it moves
on), left by its client. Every admitted job gives its place back: pool.admitted is empty after each."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

from service.errors import ModelError
from service.server.compute_pool import PIPELINE, ComputePool
from service.server.handlers import ClientGone, ComputeProcessDied, Overloaded, TimedOut
from service.settings import Settings
from tests.support.stub_compute import FAIL_MODEL, serve


def pool_settings(**changes: Any) -> Settings:
    return Settings(**{"max_concurrent": 1, "max_queue": 1, "request_timeout_s": 30.0, **changes})


@asynccontextmanager
async def running(**changes: Any) -> AsyncIterator[tuple[ComputePool, list[str]]]:
    """A started pool of stub processes and the reasons it gave for each replacement; shut down on exit."""
    replaced: list[str] = []
    pool = ComputePool(pool_settings(**changes), on_replace=replaced.append, target=serve)
    await pool.start()
    try:
        yield pool, replaced
    finally:
        await pool.shutdown()


async def pid_of_answer(pool: ComputePool) -> int:
    status, body = await pool.run(b"pid")
    assert status == 200
    return int(body)


async def until(condition: Callable[[], bool], seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


def test_answers_every_request_in_order_and_frees_every_place():
    async def scenario() -> None:
        async with running(max_concurrent=2, max_queue=6) as (pool, replaced):
            assert pool.up == 2 and pool.models == []
            assert pool.started is not None and pool.started["device"] == "stub"
            answers = await asyncio.gather(*(pool.run(f"echo {i}".encode()) for i in range(8)))
            assert answers == [(200, f"echo {i}".encode()) for i in range(8)]
            assert await pool.run(b"something else") == (400, b"unknown")
            assert len(pool.admitted) == 0 and not pool.waiting and replaced == []
            processes = [compute.process for compute in pool.processes]
        assert not any(process.is_alive() for process in processes)  # shutdown ends them
        assert pool.up == 0

    asyncio.run(scenario())


def test_least_loaded_process_gets_the_next_job_and_each_holds_at_most_the_pipeline():
    async def scenario() -> None:
        async with running(max_concurrent=2, max_queue=8) as (pool, _):
            jobs = [asyncio.ensure_future(pool.run(b"sleep:0.2")) for _ in range(6)]
            await asyncio.sleep(0)  # every job admitted and dispatched
            assert sorted(len(compute.sent) for compute in pool.processes) == [PIPELINE, PIPELINE]
            assert len(pool.waiting) == 6 - 2 * PIPELINE and len(pool.admitted) == 6
            assert await asyncio.gather(*jobs) == [(200, b"slept")] * 6
            assert len(pool.admitted) == 0

    asyncio.run(scenario())


def test_with_every_place_taken_a_request_is_refused_at_once_and_admitted_ones_finish():
    async def scenario() -> None:
        async with running(max_concurrent=1, max_queue=1) as (pool, replaced):
            admitted = [asyncio.ensure_future(pool.run(b"sleep:0.5")) for _ in range(2)]
            await asyncio.sleep(0)
            assert len(pool.admitted) == pool.capacity == 2
            started = time.perf_counter()
            with pytest.raises(Overloaded, match="ATTENTION_MAX_CONCURRENT.*ATTENTION_MAX_QUEUE"):
                await pool.run(b"echo refused")
            assert time.perf_counter() - started < 0.1  # refused at once, not after waiting for a place
            assert len(pool.admitted) == 2  # the refusal took no place
            assert await asyncio.gather(*admitted) == [(200, b"slept")] * 2
            assert len(pool.admitted) == 0
            assert await pool.run(b"echo admitted again") == (200, b"echo admitted again")
            assert replaced == []

    asyncio.run(scenario())


def test_past_the_time_limit_timed_out_and_the_process_is_killed_and_replaced():
    async def scenario() -> None:
        async with running(request_timeout_s=0.5) as (pool, replaced):
            before = await pid_of_answer(pool)
            (victim,) = pool.processes
            started = time.perf_counter()
            with pytest.raises(TimedOut, match="ATTENTION_REQUEST_TIMEOUT_S=0.5"):
                await pool.run(b"sleep:60")
            assert 0.5 <= time.perf_counter() - started < 2
            assert len(pool.admitted) == 0
            assert victim.timed_out
            await until(lambda: pool.up == 1 and victim not in pool.processes)
            assert not victim.process.is_alive() and victim.process.exitcode == -9  # SIGKILL
            assert replaced == ["timeout"]
            assert await pid_of_answer(pool) != before
            assert len(pool.admitted) == 0

    asyncio.run(scenario())


def test_a_crash_fails_only_the_job_computing_and_the_one_behind_is_answered_by_the_replacement():
    async def scenario() -> None:
        async with running(max_concurrent=1, max_queue=1) as (pool, replaced):
            before = await pid_of_answer(pool)
            crashing = asyncio.ensure_future(pool.run(b"crash"))
            behind = asyncio.ensure_future(pid_of_answer(pool))
            await asyncio.sleep(0)
            (victim,) = pool.processes
            assert [job.body for job in victim.sent] == [b"crash", b"pid"]  # both sent to the same process
            with pytest.raises(ComputeProcessDied, match="compute process stopped"):
                await crashing
            assert await behind != before  # moved to the replacement
            assert replaced == ["died"] and pool.up == 1 and victim not in pool.processes
            assert len(pool.admitted) == 0

    asyncio.run(scenario())


def test_a_client_that_leaves_frees_its_place_at_once_and_costs_no_process():
    async def scenario() -> None:
        async with running(max_concurrent=1, max_queue=0) as (pool, replaced):
            before = await pid_of_answer(pool)
            left = asyncio.Event()

            async def disconnected() -> None:
                await left.wait()

            leaving = asyncio.ensure_future(pool.run(b"sleep:0.5", disconnected=disconnected))
            await asyncio.sleep(0)
            with pytest.raises(Overloaded):  # its place is taken while it waits
                await pool.run(b"echo")
            started = time.perf_counter()
            left.set()
            with pytest.raises(ClientGone):
                await leaving
            assert time.perf_counter() - started < 0.3  # not after the computation
            assert len(pool.admitted) == 0
            # admitted now, answered once the abandoned computation ends, by the same process
            assert await pid_of_answer(pool) == before
            assert replaced == [] and pool.up == 1
            assert len(pool.admitted) == 0

    asyncio.run(scenario())


def test_a_process_that_cannot_serve_its_model_stops_the_start():
    async def scenario() -> None:
        pool = ComputePool(pool_settings(default_model=FAIL_MODEL), target=serve)
        with pytest.raises(ModelError, match="the stub cannot serve its model"):
            await pool.start()
        assert pool.up == 0 and pool.started is None

    asyncio.run(scenario())
