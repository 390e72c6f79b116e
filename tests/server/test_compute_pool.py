"""The compute pool and its admission gate, driven directly with asyncio against stub compute processes
(tests/support/stub_compute.py: no torch, no HTTP), so that every outcome is reached deterministically:
answered, refused (Overloaded), timed out (the process killed and replaced), died (the job behind it moves
on), left by its client (skipped if not started). Every admitted job gives its place back: pool.admitted is
empty after each."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

from service.errors import (
    AnswerBroken,
    ClientGone,
    ComputeProcessDied,
    ModelError,
    NoComputeProcess,
    Overloaded,
    TimedOut,
)
from service.protocol import ResponseFormat, Tickets
from service.server.compute_pool import PIPELINE, ComputePool, ComputeProcess, Job
from service.settings import Settings
from tests.support.stub_compute import FAIL_MODEL, serve


def pool_settings(**changes: Any) -> Settings:
    # the stub processes answer one request at a time: no dynamic batching unless a test asks for it
    base = {"max_concurrent": 1, "max_queue": 1, "request_timeout_s": 30.0, "batch_window_ms": 0}
    return Settings(**{**base, **changes})


@asynccontextmanager
async def running(
    on_skip: Callable[[], None] = lambda: None,
    on_batch: Callable[[int], None] = lambda size: None,
    **changes: Any,
) -> AsyncIterator[tuple[ComputePool, list[str]]]:
    """A started pool of stub processes and the reasons it gave for each replacement; shut down on exit."""
    replaced: list[str] = []
    pool = ComputePool(
        pool_settings(**changes), on_replace=replaced.append, target=serve, on_skip=on_skip, on_batch=on_batch
    )
    await pool.start()
    try:
        yield pool, replaced
    finally:
        await pool.shutdown()


async def answered(pool: ComputePool, body: bytes) -> tuple[int, bytes]:
    """The answer to `body`, delivered (its place released)."""
    held = await pool.run(body)
    held.release()
    return held.status, held.content


async def pid_of_answer(pool: ComputePool) -> int:
    status, body = await answered(pool, b"pid")
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
            answers = await asyncio.gather(*(answered(pool, f"echo {i}".encode()) for i in range(8)))
            assert answers == [(200, f"echo {i}".encode()) for i in range(8)]
            assert await answered(pool, b"something else") == (400, b"unknown")
            assert len(pool.admitted) == 0 and not pool.waiting and replaced == []
            processes = [compute.process for compute in pool.processes]
        assert not any(process.is_alive() for process in processes)  # shutdown ends them
        assert pool.up == 0

    asyncio.run(scenario())


def test_least_loaded_process_gets_the_next_job_and_each_holds_at_most_the_pipeline():
    async def scenario() -> None:
        async with running(max_concurrent=2, max_queue=8) as (pool, _):
            jobs = [asyncio.ensure_future(answered(pool, b"sleep:0.2")) for _ in range(6)]
            await asyncio.sleep(0)  # every job admitted and dispatched
            assert sorted(len(compute.sent) for compute in pool.processes) == [PIPELINE, PIPELINE]
            assert len(pool.waiting) == 6 - 2 * PIPELINE and len(pool.admitted) == 6
            assert await asyncio.gather(*jobs) == [(200, b"slept")] * 6
            assert len(pool.admitted) == 0

    asyncio.run(scenario())


def test_with_dynamic_batching_a_process_holds_two_batches_and_notes_between_answers_are_no_answer():
    async def scenario() -> None:
        sizes: list[int] = []
        batching: dict[str, Any] = {"batch_window_ms": 2, "batch_max_requests": 4}
        async with running(on_batch=sizes.append, max_concurrent=2, max_queue=20, **batching) as (pool, _):
            jobs = [asyncio.ensure_future(answered(pool, b"sleep:0.2")) for _ in range(20)]
            await asyncio.sleep(0)
            assert sorted(len(compute.sent) for compute in pool.processes) == [8, 8]
            assert len(pool.waiting) == 4
            assert await asyncio.gather(*jobs) == [(200, b"slept")] * 20
            noted = [asyncio.ensure_future(answered(pool, f"noted:{n}".encode())) for n in (3, 1)]
            assert await asyncio.gather(*noted) == [(200, b"noted")] * 2
            assert sorted(sizes) == [1, 3]

    asyncio.run(scenario())


def test_with_every_place_taken_a_request_is_refused_at_once_and_admitted_ones_finish():
    async def scenario() -> None:
        async with running(max_concurrent=1, max_queue=1) as (pool, replaced):
            admitted = [asyncio.ensure_future(answered(pool, b"sleep:0.5")) for _ in range(2)]
            await asyncio.sleep(0)
            assert len(pool.admitted) == pool.capacity == 2
            started = time.perf_counter()
            with pytest.raises(Overloaded, match="ATTENTION_MAX_CONCURRENT.*ATTENTION_MAX_QUEUE"):
                await pool.run(b"echo refused")
            assert time.perf_counter() - started < 0.1  # refused at once, not after waiting for a place
            assert len(pool.admitted) == 2  # the refusal took no place
            assert await asyncio.gather(*admitted) == [(200, b"slept")] * 2
            assert len(pool.admitted) == 0
            assert await answered(pool, b"echo admitted again") == (200, b"echo admitted again")
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
            crashing = asyncio.ensure_future(answered(pool, b"crash"))
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


def test_a_client_that_leaves_before_its_computation_starts_frees_its_place_at_once():
    async def scenario() -> None:
        async with running(max_concurrent=1, max_queue=1) as (pool, replaced):
            computing = asyncio.ensure_future(answered(pool, b"sleep:0.5"))
            left = asyncio.Event()
            leaving = asyncio.ensure_future(pool.run(b"echo never", disconnected=left.wait))
            await asyncio.sleep(0)
            assert len(pool.admitted) == 2 and len(pool.waiting) == 0  # both sent: the pipeline holds two
            with pytest.raises(Overloaded):
                await pool.run(b"echo")
            left.set()
            with pytest.raises(ClientGone):
                await leaving
            assert len(pool.admitted) == 1  # not started: its place is free (its time limit still holds)
            assert await answered(pool, b"echo in its place") == (200, b"echo in its place")
            assert await computing == (200, b"slept")
            await until(lambda: len(pool.admitted) == 0)
            assert replaced == []

    asyncio.run(scenario())


def test_a_client_that_leaves_mid_computation_costs_no_process_and_its_place_ends_with_it():
    async def scenario() -> None:
        async with running(max_concurrent=1, max_queue=0) as (pool, replaced):
            before = await pid_of_answer(pool)
            left = asyncio.Event()
            leaving = asyncio.ensure_future(pool.run(b"sleep:0.5", disconnected=left.wait))
            await asyncio.sleep(0)
            with pytest.raises(Overloaded):  # its place is taken while it computes
                await pool.run(b"echo")
            started = time.perf_counter()
            left.set()
            with pytest.raises(ClientGone):
                await leaving
            assert time.perf_counter() - started < 0.3  # the client is let go at once
            # its computation still holds the process, and so its place, until it ends: a client that hangs up
            # cannot have more computations running than places
            with pytest.raises(Overloaded):
                await pool.run(b"echo")
            await until(lambda: len(pool.admitted) == 0)
            assert await pid_of_answer(pool) == before  # the same process: none was killed
            assert replaced == [] and pool.up == 1

    asyncio.run(scenario())


def test_a_job_whose_client_left_before_the_process_started_it_is_never_computed():
    async def scenario() -> None:
        skipped: list[None] = []
        async with running(lambda: skipped.append(None), max_concurrent=1, max_queue=2) as (pool, replaced):
            computing = asyncio.ensure_future(answered(pool, b"sleep:0.5"))
            left = asyncio.Event()
            leaving = asyncio.ensure_future(pool.run(b"sleep:10", disconnected=left.wait))
            await asyncio.sleep(0)
            (process,) = pool.processes
            assert [job.body for job in process.sent] == [b"sleep:0.5", b"sleep:10"]  # already in its socket
            started = time.perf_counter()
            left.set()
            with pytest.raises(ClientGone):
                await leaving
            assert len(pool.admitted) == 1 and skipped == [None]  # its place is free at once
            # the next job is sent once the process is past the first: it computed that one only, and answers
            # right after it, not 10 s later
            assert await answered(pool, b"computed") == (200, b"1")
            assert time.perf_counter() - started < 3
            assert await computing == (200, b"slept")
            assert len(pool.admitted) == 0 and replaced == []

    asyncio.run(scenario())


def ticket_taken(process: ComputeProcess, job: Job) -> bool:
    """Whether the compute process has taken `job`'s ticket (started it), seen without taking it."""
    queue = process.tickets.queues[job.ticket % PIPELINE]
    try:
        queue.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except BlockingIOError:
        return True
    return False


def test_a_job_behind_whose_client_leaves_once_the_process_started_it_keeps_its_place_until_computed():
    async def scenario() -> None:
        skipped: list[None] = []
        async with running(lambda: skipped.append(None), max_concurrent=1, max_queue=1) as (pool, replaced):
            first = asyncio.ensure_future(answered(pool, b"echo first"))
            await asyncio.sleep(0)  # sent
            (process,) = pool.processes

            async def leaves_once_started() -> None:
                # holds the event loop, so that the answer to the first job is not read yet: the job is still
                # behind it, as far as the pool knows, when its client leaves, though the process started it
                behind = process.sent[1]
                deadline = time.monotonic() + 10
                while not ticket_taken(process, behind):
                    assert time.monotonic() < deadline, "the stub did not start the job"
                    time.sleep(0.01)

            with pytest.raises(ClientGone):
                await pool.run(b"sleep:0.5", disconnected=leaves_once_started)
            assert skipped == []  # it is being computed: not cancelled, and its place stays taken
            assert await first == (200, b"echo first")
            assert len(pool.admitted) == 1  # the place of the computation whose client left
            await until(lambda: len(pool.admitted) == 0, seconds=5)  # freed when its computation ends
            assert await answered(pool, b"computed") == (200, b"2")
            assert replaced == []

    asyncio.run(scenario())


def test_a_job_cancelled_behind_a_process_that_dies_is_not_computed_by_its_replacement():
    async def scenario() -> None:
        skipped: list[None] = []
        async with running(lambda: skipped.append(None), max_concurrent=1, max_queue=1) as (pool, replaced):
            # the process exits 0.6 s in
            dying = await pool.run(b"stream-crash:2:0.3", media=ResponseFormat.NDJSON)
            left = asyncio.Event()
            leaving = asyncio.ensure_future(pool.run(b"echo never", disconnected=left.wait))
            await asyncio.sleep(0)
            left.set()
            with pytest.raises(ClientGone):
                await leaving
            assert skipped == [None]
            with pytest.raises(ComputeProcessDied):
                await streamed(dying)
            await until(lambda: pool.up == 1)
            assert await answered(pool, b"computed") == (200, b"0")  # the replacement computed nothing before
            assert replaced == ["died"] and len(pool.admitted) == 0

    asyncio.run(scenario())


def test_a_ticket_goes_to_whoever_takes_it_first_and_to_them_only():
    tickets = Tickets(PIPELINE)
    try:
        tickets.issue(0)
        tickets.issue(1)
        assert tickets.take(0)  # the process starts job 0...
        assert not tickets.take(0)  # ...so the server cannot cancel it
        assert tickets.take(1)  # the server cancels job 1...
        assert not tickets.take(1)  # ...so the process skips it
        tickets.issue(2)  # in job 0's queue, settled before job 2 is sent
        assert not tickets.take(3) and tickets.take(2)
    finally:
        tickets.close()


def test_the_time_limit_stops_a_computation_whose_client_left():
    async def scenario() -> None:
        async with running(max_concurrent=1, max_queue=0, request_timeout_s=0.5) as (pool, replaced):
            (victim,) = pool.processes
            left = asyncio.Event()
            leaving = asyncio.ensure_future(pool.run(b"sleep:60", disconnected=left.wait))
            await asyncio.sleep(0)
            left.set()
            with pytest.raises(ClientGone):
                await leaving
            await until(lambda: replaced == ["timeout"], seconds=5)  # killed at its deadline, not after 60 s
            assert victim.timed_out and len(pool.admitted) == 0
            await until(lambda: pool.up == 1)
            assert await answered(pool, b"echo back") == (200, b"echo back")

    asyncio.run(scenario())


def test_an_answer_gives_its_place_back_once_computed_and_its_bytes_once_delivered():
    """Issue 21 #3: an answer its client has not read yet is memory, not a computation: its place is free
    for the next request at once, while its bytes count against max_answer_bytes_in_flight until delivered."""

    async def scenario() -> None:
        async with running(max_concurrent=1, max_queue=0) as (pool, _):
            held = await pool.run(b"echo held")
            assert (held.status, held.content) == (200, b"echo held")
            assert len(pool.admitted) == 0 and pool.answer_bytes == len(b"echo held")
            assert await answered(pool, b"echo") == (200, b"echo")  # the place is free
            held.release()
            assert pool.answer_bytes == 0 and not pool.answer_bytes_by_client

    asyncio.run(scenario())


def test_past_the_answer_bytes_a_request_is_refused_before_it_is_computed():
    """Issue 21 #3: undelivered answers at max_answer_bytes_in_flight: the next request is a 503 at once; a
    client holding its share of them once they run short is refused while another client is computed."""

    async def scenario() -> None:
        async with running(max_answer_bytes_in_flight=100, client_share=0.25) as (pool, _):
            slow = [await pool.run(b"echo" + b"." * 26, client="10.0.0.9") for _ in range(3)]  # 90 bytes
            with pytest.raises(Overloaded, match="ATTENTION_CLIENT_SHARE"):
                await pool.run(b"echo", client="10.0.0.9")
            assert await answered(pool, b"echo") == (200, b"echo")  # another client: 4 bytes, computed
            more = await pool.run(b"echo" + b"." * 6, client="10.0.0.8")  # 100 bytes held: full
            with pytest.raises(Overloaded, match="ATTENTION_MAX_ANSWER_BYTES_IN_FLIGHT"):
                await pool.run(b"echo", client="10.0.0.7")
            for held in (*slow, more):
                held.release()
            assert pool.answer_bytes == 0
            assert await answered(pool, b"echo") == (200, b"echo")

    asyncio.run(scenario())


def test_an_answer_that_does_not_fit_the_room_left_is_dropped_with_a_503():
    async def scenario() -> None:
        async with running(max_answer_bytes_in_flight=100) as (pool, _):
            held = await pool.run(b"echo" + b"." * 56)  # 60 bytes held
            with pytest.raises(Overloaded, match="this answer's 50 bytes do not fit"):
                await pool.run(b"echo" + b"." * 46)
            assert pool.answer_bytes == 60 and len(pool.admitted) == 0
            held.release()
            assert await answered(pool, b"echo" + b"." * 46) == (200, b"echo" + b"." * 46)

    asyncio.run(scenario())


def test_with_no_compute_process_up_a_request_is_refused_at_once():
    async def scenario() -> None:
        async with running(max_concurrent=1, max_queue=4) as (pool, replaced):
            with pytest.raises(ComputeProcessDied):
                await pool.run(b"crash")
            assert pool.up == 0  # being replaced
            started = time.perf_counter()
            with pytest.raises(NoComputeProcess, match="retry shortly"):
                await pool.run(b"echo")
            assert time.perf_counter() - started < 0.1
            assert len(pool.admitted) == 0
            await until(lambda: pool.up == 1)
            assert replaced == ["died"]

    asyncio.run(scenario())


def test_a_process_that_cannot_serve_its_model_stops_the_start():
    async def scenario() -> None:
        pool = ComputePool(pool_settings(default_model=FAIL_MODEL), target=serve)
        with pytest.raises(ModelError, match="the stub cannot serve its model"):
            await pool.start()
        assert pool.up == 0 and pool.started is None

    asyncio.run(scenario())


async def streamed(held: Any, delay: float = 0) -> list[bytes]:
    """A stream's frames after its first, each taken `delay` seconds after the one before (a slow reader)."""
    frames: list[bytes] = []

    async def take(frame: bytes) -> None:
        await asyncio.sleep(delay)
        frames.append(frame)

    try:
        await held.stream(take)
    finally:
        held.release()
    return frames


async def streamed_until(held: Any, error: type[Exception], match: str | None = None) -> list[bytes]:
    """A stream's frames after its first, up to the error it ends with: `error`, its message matching
    `match`."""
    frames: list[bytes] = []

    async def take(frame: bytes) -> None:
        frames.append(frame)

    assert held.stream is not None
    with pytest.raises(error, match=match):
        await held.stream(take)
    held.release()
    return frames


def test_a_stream_is_delivered_frame_by_frame_and_keeps_its_place_while_computed():
    async def scenario() -> None:
        async with running(max_concurrent=1, max_queue=1) as (pool, replaced):
            held = await pool.run(b"stream:3:0.05", media=ResponseFormat.NDJSON)
            assert (held.status, held.content) == (200, b"first") and held.stream is not None
            assert len(pool.admitted) == 1
            behind = asyncio.ensure_future(answered(pool, b"echo behind"))
            assert await streamed(held) == [b"line 0", b"line 1", b"line 2"]
            assert await behind == (200, b"echo behind")  # the same process, after the stream's end
            assert len(pool.admitted) == 0 and replaced == []

    asyncio.run(scenario())


def test_a_stream_nobody_reads_frees_its_process_and_its_frames_count_until_delivered():
    """Issue 21, a stalled stream: its frames are read as the process computes them and held for its reader,
    counted against the answer bytes in flight, so that the process goes on to the next request at once
    instead of waiting for a client that may never read; its place is free once it is computed."""

    async def scenario() -> None:
        async with running(max_concurrent=1, max_queue=1) as (pool, replaced):
            held = await pool.run(b"stream:5", media=ResponseFormat.NDJSON)  # the stub sends all five at once
            # nobody reads the stream yet: the same process answers the next request all the same
            assert await asyncio.wait_for(answered(pool, b"echo next"), 5) == (200, b"echo next")
            lines = [f"line {index}".encode() for index in range(5)]
            assert pool.answer_bytes == sum(map(len, lines)) and len(pool.admitted) == 0
            assert await streamed(held) == lines  # delivered whole and in order, later
            assert pool.answer_bytes == 0 and not pool.answer_bytes_by_client and replaced == []

    asyncio.run(scenario())


def test_a_stream_outgrowing_its_clients_share_ends_with_overloaded_after_the_frames_that_fit():
    """Its unread frames may take only its client's share of the room for unread answers, even while there is
    more (100 bytes, share 0.25: 25 bytes, so four 6-byte frames). The frame that does not fit ends the stream
    with Overloaded after those before it; the frames after it are dropped as they come and the process, not
    killed, answers the next request."""

    async def scenario() -> None:
        async with running(max_answer_bytes_in_flight=100, client_share=0.25) as (pool, replaced):
            before = await pid_of_answer(pool)
            held = await pool.run(b"stream:7", media=ResponseFormat.NDJSON, client="10.0.0.9")
            await until(lambda: len(pool.admitted) == 0)  # computed to its end meanwhile
            assert pool.answer_bytes == 24
            frames = await streamed_until(held, Overloaded, match="ATTENTION_MAX_ANSWER_BYTES_IN_FLIGHT=100")
            assert frames == [f"line {index}".encode() for index in range(4)]
            assert pool.answer_bytes == 0 and not pool.answer_bytes_by_client
            assert await pid_of_answer(pool) == before and replaced == []

    asyncio.run(scenario())


def test_a_json_answer_in_frames_is_bounded_by_the_room_alone_and_its_break_is_an_error_not_an_end():
    """A JSON answer larger than a frame comes as a stream does (service/compute/pipeline.py), but it is one
    answer: its unread frames are bounded by the room for answers, as an answer in one piece is, not by its
    client's share (seven 6-byte frames, 42 bytes, past a share of 25 of 100); and a last frame with a status
    other than 200 (the computation broke off after the first frame) raises AnswerBroken after the frames
    before it, where NDJSON's is one more line (its error line) and a normal end."""

    async def scenario() -> None:
        async with running(max_answer_bytes_in_flight=100, client_share=0.25) as (pool, replaced):
            held = await pool.run(b"stream:7", media=ResponseFormat.JSON, client="10.0.0.9")
            assert (held.status, held.content) == (200, b"first")
            await until(lambda: len(pool.admitted) == 0)  # computed to its end meanwhile
            assert pool.answer_bytes == 5 + 7 * 6  # every frame counted, the first too
            assert await streamed(held) == [f"line {index}".encode() for index in range(7)]
            held = await pool.run(b"stream-broken:2", media=ResponseFormat.JSON)
            frames = await streamed_until(held, AnswerBroken, match="status 422")
            assert frames == [b"line 0", b"line 1"]
            held = await pool.run(b"stream-broken:2", media=ResponseFormat.NDJSON)
            assert await streamed(held) == [b"line 0", b"line 1", b"broke"]
            assert pool.answer_bytes == 0 and len(pool.admitted) == 0 and replaced == []

    asyncio.run(scenario())


def test_a_stream_past_its_time_limit_whose_reader_stalls_still_has_its_process_replaced():
    """Issue 21 #1: the time limit kills the process computing a stream whose reader has stopped taking its
    frames; the process is replaced within seconds while that reader still stalls, and computes again."""

    async def scenario() -> None:
        async with running(request_timeout_s=0.5) as (pool, replaced):
            held = await pool.run(b"stream:100:0.1", media=ResponseFormat.NDJSON)
            never = asyncio.Event()

            async def stall(frame: bytes) -> None:
                await never.wait()

            assert held.stream is not None
            reader = asyncio.ensure_future(held.stream(stall))
            await until(lambda: replaced == ["timeout"] and pool.up == 1, seconds=5)
            assert await asyncio.wait_for(answered(pool, b"echo back"), 5) == (200, b"echo back")
            reader.cancel()
            held.release()
            assert pool.answer_bytes == 0 and len(pool.admitted) == 0

    asyncio.run(scenario())


def test_a_stream_past_its_time_limit_ends_with_timed_out_after_its_frames_and_the_process_is_replaced():
    async def scenario() -> None:
        async with running(request_timeout_s=0.5) as (pool, replaced):
            (victim,) = pool.processes
            held = await pool.run(b"stream:100:0.1", media=ResponseFormat.NDJSON)
            started = time.perf_counter()
            frames = await streamed_until(held, TimedOut, match="ATTENTION_REQUEST_TIMEOUT_S=0.5")
            assert time.perf_counter() - started < 2
            assert 1 <= len(frames) < 10 and frames[0] == b"line 0"
            await until(lambda: replaced == ["timeout"] and pool.up == 1 and victim not in pool.processes)
            assert len(pool.admitted) == 0
            assert await answered(pool, b"echo back") == (200, b"echo back")

    asyncio.run(scenario())


def test_a_process_that_dies_mid_stream_ends_it_with_the_error_and_is_replaced():
    async def scenario() -> None:
        async with running() as (pool, replaced):
            held = await pool.run(b"stream-crash:2", media=ResponseFormat.NDJSON)
            frames = await streamed_until(held, ComputeProcessDied)
            assert frames == [b"line 0", b"line 1"]
            await until(lambda: replaced == ["died"] and pool.up == 1)
            assert len(pool.admitted) == 0

    asyncio.run(scenario())


def test_a_stream_nobody_reads_any_more_keeps_its_place_until_it_is_computed():
    async def scenario() -> None:
        async with running(max_concurrent=1, max_queue=0) as (pool, replaced):
            before = await pid_of_answer(pool)
            held = await pool.run(b"stream:4:0.1", media=ResponseFormat.NDJSON)
            held.release()  # the reader gave up (its send timed out) after the first frame
            with pytest.raises(Overloaded):  # the computation goes on and holds its place
                await pool.run(b"echo")
            await until(lambda: len(pool.admitted) == 0, seconds=5)  # freed at the stream's end
            assert await pid_of_answer(pool) == before and replaced == []

    asyncio.run(scenario())


def test_a_request_is_sent_with_company_only_when_others_are_in_the_service():
    # batching (service/compute/batching.py gather) waits its window only for a request with company
    async def scenario() -> None:
        async with running(max_concurrent=1, max_queue=4) as (pool, _):
            assert await answered(pool, b"company") == (200, b"0")  # alone: nothing waits or computes
            busy = asyncio.ensure_future(answered(pool, b"sleep:0.3"))
            await until(lambda: len(pool.admitted) == 1)
            assert await answered(pool, b"company") == (200, b"1")  # sent while the sleep computes
            assert await busy == (200, b"slept")
            assert await answered(pool, b"company") == (200, b"0")
            assert not pool.admitted

    asyncio.run(scenario())
