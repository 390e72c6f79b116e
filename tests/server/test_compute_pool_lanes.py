"""The light lanes (ATTENTION_LIGHT_PROCESSES, service/server/compute_pool.py) against stub compute processes
(tests/support/stub_compute.py): a lane computes only the requests of clients measured short, so a short
request is computed while the main process computes a long one; a lane that dies or times out is replaced by
a lane, and readiness (`up`) counts the main processes only."""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

import pytest

from service.errors import Overloaded, TimedOut
from service.server.compute_pool import ComputePool
from tests.server.test_compute_pool import running, until

LONG = b"sleep:1.5"


async def pid_for(pool: ComputePool, client: str) -> int:
    held = await pool.run(b"pid", client=client)
    held.release()
    assert held.status == 200
    return int(held.content)


async def slept(pool: ComputePool, body: bytes, client: str) -> None:
    held = await pool.run(body, client=client)
    held.release()
    assert (held.status, held.content) == (200, b"slept")


def test_a_short_request_is_computed_by_the_lane_while_the_main_process_computes_a_long_one():
    async def scenario() -> None:
        async with running(light_processes=1, max_queue=4) as (pool, _):
            (main,) = pool.processes
            (lane,) = pool.lanes
            assert pool.up == 1  # readiness counts the main processes
            # a client not yet measured is not light: its first request goes to the main process
            assert await pid_for(pool, "short") == main.process.pid
            await slept(pool, LONG, "long")  # measured long
            long = asyncio.ensure_future(slept(pool, LONG, "long"))
            await until(lambda: bool(main.sent))
            started = time.perf_counter()
            assert await pid_for(pool, "short") == lane.process.pid
            assert time.perf_counter() - started < 1.0, "the short request waited for the long one"
            assert not long.done()
            # the long client's requests never go to the lane, even while it is idle and they wait
            behind = asyncio.ensure_future(slept(pool, LONG, "long"))
            await asyncio.sleep(0.2)
            assert not lane.sent and len(pool.waiting) == 1
            await asyncio.gather(long, behind)
            assert len(pool.admitted) == 0

    asyncio.run(scenario())


def test_a_lane_that_dies_or_times_out_is_replaced_by_a_lane():
    async def scenario() -> None:
        async with running(light_processes=1, max_queue=4, request_timeout_s=1.0) as (pool, replaced):
            (main,) = pool.processes
            (lane,) = pool.lanes
            await pid_for(pool, "short")  # measured short: from now on the lane is idle first
            assert await pid_for(pool, "short") == lane.process.pid
            lane.process.kill()
            await until(lambda: len(pool.lanes) == 1 and lane not in pool.lanes)
            assert pool.processes == {main} and pool.up == 1 and replaced == ["died"]
            (fresh,) = pool.lanes
            assert await pid_for(pool, "short") == fresh.process.pid
            with pytest.raises(TimedOut):  # a short client's long request, on the lane, past the limit
                await pool.run(b"sleep:60", client="short")
            await until(lambda: len(pool.lanes) == 1 and fresh not in pool.lanes)
            assert replaced == ["died", "timeout"] and pool.processes == {main}
            assert len(pool.admitted) == 0

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("batching", "pass_size"),
    [({}, 1), ({"batch_window_ms": 1, "batch_max_requests": 2}, 2)],
    ids=["one request with batching off", "one pass with batching on"],
)
def test_a_client_has_at_most_one_pass_of_requests_on_the_lanes_at_a_time(
    batching: dict[str, Any], pass_size: int
):
    """A client measured short may next send long requests with small bodies: until the first is measured
    they look light, and without a bound they would fill the lane's pipeline (every short client's request
    would then wait behind them). Its others wait for the main processes as anyone's do. The bound is one
    pass, not one request: with dynamic batching a lane computes a pass at once, and one request at a time
    made a client's concurrent short requests (a page, or the users behind one proxy) wait behind the long
    ones on the main process."""

    async def scenario() -> None:
        async with running(light_processes=1, max_queue=8, **batching) as (pool, _):
            (main,) = pool.processes
            (lane,) = pool.lanes
            await pid_for(pool, "turncoat")  # measured short
            await slept(pool, b"sleep:0.5", "long")  # over ATTENTION_LIGHT_REQUEST_S: never on a lane
            busy = asyncio.ensure_future(slept(pool, b"sleep:1", "long"))
            await until(lambda: bool(main.sent))
            longs = [asyncio.ensure_future(slept(pool, b"sleep:0.5", "turncoat")) for _ in range(3)]
            await until(lambda: len(lane.sent) == pass_size)
            await asyncio.sleep(0.1)  # every dispatch that could follow has happened
            assert [job.client for job in lane.sent] == ["turncoat"] * pass_size
            on_main = [job.client for job in main.sent] + [job.client for job in pool.waiting.turns]
            assert on_main == ["long"] + ["turncoat"] * (3 - pass_size)
            await asyncio.gather(busy, *longs)
            assert len(pool.admitted) == 0

    asyncio.run(scenario())


def test_which_clients_are_light_is_the_operators_setting():
    """A client whose requests take 0.5 s is not light by default (ATTENTION_LIGHT_REQUEST_S 0.3); with the
    setting at 1 s its requests are computed by the lane while the main process is busy."""

    async def lane_computes_a_half_second_client(light_request_s: float) -> bool:
        async with running(light_processes=1, max_queue=4, light_request_s=light_request_s) as (pool, _):
            (main,) = pool.processes
            (lane,) = pool.lanes
            await slept(pool, b"sleep:0.5", "half")  # measured 0.5 s
            await slept(pool, LONG, "long")
            long = asyncio.ensure_future(slept(pool, LONG, "long"))
            await until(lambda: bool(main.sent))
            half = asyncio.ensure_future(slept(pool, b"sleep:0.5", "half"))
            await asyncio.sleep(0.2)
            on_lane = [job.client for job in lane.sent] == ["half"]
            await asyncio.gather(long, half)
            return on_lane

    assert not asyncio.run(lane_computes_a_half_second_client(0.3))
    assert asyncio.run(lane_computes_a_half_second_client(1.0))


@pytest.mark.parametrize(("send_ahead_request_s", "sent_ahead"), [(0.05, True), (0.0, False)])
def test_which_requests_are_sent_to_a_busy_process_is_the_operators_setting(
    send_ahead_request_s: float, sent_ahead: bool
):
    """A short client's request is sent to the main process busy with another client's (to wait there) while
    its requests take at most ATTENTION_SEND_AHEAD_REQUEST_S; at 0 it waits in the server's queue."""

    async def scenario() -> None:
        async with running(max_queue=4, send_ahead_request_s=send_ahead_request_s) as (pool, _):
            (main,) = pool.processes
            await pid_for(pool, "short")  # measured: milliseconds
            long = asyncio.ensure_future(slept(pool, b"sleep:0.5", "long"))
            await until(lambda: bool(main.sent))
            short = asyncio.ensure_future(pid_for(pool, "short"))
            await asyncio.sleep(0.1)
            assert ([job.client for job in main.sent] == ["long", "short"]) is sent_ahead
            assert (len(pool.waiting) == 1) is not sent_ahead
            await asyncio.gather(long, short)
            assert len(pool.admitted) == 0

    asyncio.run(scenario())


def test_a_refusal_counts_the_lanes_among_the_places_it_names():
    """The lanes are places of the admission gate: the 503's message says so, with the settings that add up
    to its count (1 computing + 1 lane + 1 waiting)."""

    async def scenario() -> None:
        async with running(light_processes=1, max_queue=1) as (pool, _):
            waiting = [asyncio.ensure_future(slept(pool, b"sleep:0.3", "heavy")) for _ in range(3)]
            await until(lambda: len(pool.admitted) == 3)
            computing = "ATTENTION_MAX_CONCURRENT + ATTENTION_LIGHT_PROCESSES computing"
            refusal = f"all 3 places ({computing} + ATTENTION_MAX_QUEUE waiting) are taken"
            with pytest.raises(Overloaded, match="^" + re.escape(refusal)):
                await pool.run(b"pid", client="another")
            await asyncio.gather(*waiting)
            assert len(pool.admitted) == 0

    asyncio.run(scenario())
